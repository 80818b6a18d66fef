package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/metrics"
	"github.com/certgate/certgate/policy"
	"github.com/certgate/certgate/store"
)

// A seed copy whose receiver did not see dkim=pass or dmarc=pass counts
// as an authentication failure at that provider; one whose receiver said
// nothing does not.
func TestSeedAuthFailuresCounted(t *testing.T) {
	m := metrics.New()
	obs := placementMetrics{m: m}
	placed := func(folder, verdicts string) {
		obs.Placed(store.Placement{Provider: "gmail", Tenant: "issuer", Folder: folder, Verdicts: json.RawMessage(verdicts)}, "")
	}
	placed(store.FolderJunk, `{"authserv_id":"mx.google.com","spf":"pass","dkim":"fail","dmarc":"pass","scl":-1,"bcl":-1}`)
	placed(store.FolderInbox, `{"authserv_id":"mx.google.com","spf":"pass","dkim":"pass","dmarc":"pass","scl":-1,"bcl":-1}`)
	placed(store.FolderInbox, `{"scl":-1,"bcl":-1}`) // no Authentication-Results at all
	placed(store.FolderMissing, ``)
	if got := testutil.ToFloat64(m.SeedAuthFailures.WithLabelValues("gmail", "dkim")); got != 1 {
		t.Errorf("dkim failures %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.SeedAuthFailures.WithLabelValues("gmail", "dmarc")); got != 0 {
		t.Errorf("dmarc failures %v, want 0", got)
	}
	if got := testutil.ToFloat64(m.Placements.WithLabelValues("gmail", "issuer", store.FolderInbox)); got != 2 {
		t.Errorf("inbox placements %v, want 2", got)
	}
}

// Seed copies going to junk at a provider slow its lane, once, and the
// action is counted and logged.
func TestPlacementSteersTheLane(t *testing.T) {
	m := metrics.New()
	p := policy.New(config.ResolveProviders(nil), config.DefaultRetry(), policy.Options{})
	var logs bytes.Buffer
	obs := placementMetrics{m: m, lanes: p, log: slog.New(slog.NewTextHandler(&logs, nil))}
	for range config.DefaultPlacementMinSample {
		obs.Placed(store.Placement{Provider: "yahoo", Tenant: "issuer", Folder: store.FolderJunk}, "")
	}
	if got := testutil.ToFloat64(m.PlacementActions.WithLabelValues("yahoo", "slow")); got != 1 {
		t.Errorf("placement actions %v, want 1", got)
	}
	lane, _ := p.ProviderLane("yahoo")
	if st := lane.State(); st.Name != "slowed" {
		t.Errorf("yahoo's lane %+v, want slowed", st)
	}
	if !strings.Contains(logs.String(), "rule=placement") {
		t.Errorf("no log line for the action:\n%s", logs.String())
	}
	// The catch-all has no one lane: nothing to steer, nothing breaks.
	obs.Placed(store.Placement{Provider: "default", Folder: store.FolderJunk}, "")
}
