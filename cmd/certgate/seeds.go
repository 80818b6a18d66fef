package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/certgate/certgate/api"
	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/gateway"
	"github.com/certgate/certgate/metrics"
	"github.com/certgate/certgate/placement"
	"github.com/certgate/certgate/policy"
	"github.com/certgate/certgate/store"
)

// buildSeeds wires the seed side: the preparer's seed copies, the
// watcher, the API's placement routes and the placement metrics. Without
// seed mailboxes nothing is added.
func (d *daemon) buildSeeds() error {
	cfg := d.cfg
	d.prep.SetSeeds(gateway.NewSeeds(cfg.Seeds.Mailboxes))
	if len(cfg.Seeds.Mailboxes) == 0 {
		return nil
	}
	book, ok := d.store.(store.Placements)
	if !ok {
		return fmt.Errorf("the %s store does not keep placements", cfg.Storage.Driver)
	}
	d.placements = book
	logins := newSeedLogins(cfg.Seeds)
	d.watcher = placement.NewWatcher(placement.Options{Seeds: cfg.Seeds, Book: book, Connect: logins.connect,
		Log: d.log, Observer: placementMetrics{m: d.metrics, lanes: d.policy, log: d.log}, Categories: logins.category})
	d.metrics.Registry.MustRegister(&inboxShare{book: book, providers: seedProviders(cfg.Seeds)})
	return nil
}

// seedLogins holds each seed mailbox's credentials (a refreshed OAuth2
// token is kept until near its expiry) and Gmail category finder.
type seedLogins struct {
	creds map[string]*placement.Credentials
	gmail map[string]*placement.GmailCategories
}

func newSeedLogins(s config.Seeds) *seedLogins {
	l := &seedLogins{creds: map[string]*placement.Credentials{}, gmail: map[string]*placement.GmailCategories{}}
	for _, m := range s.Mailboxes {
		l.creds[m.Name] = placement.NewCredentials(m, nil)
		l.gmail[m.Name] = placement.NewGmailCategories(m, l.creds[m.Name])
	}
	return l
}

// connect dials and logs in to a seed mailbox, as configured.
func (l *seedLogins) connect(ctx context.Context, m config.SeedMailbox, h *imapclient.UnilateralDataHandler) (*imapclient.Client, error) {
	c, err := placement.Dial(ctx, m, &imapclient.Options{UnilateralDataHandler: h})
	if err != nil {
		return nil, err
	}
	if err := placement.Login(ctx, c, m, l.creds[m.Name]); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// category is copies' Gmail tabs.
func (l *seedLogins) category(ctx context.Context, m config.SeedMailbox, mailbox string, uids []uint32) (map[uint32]string, error) {
	return l.gmail[m.Name].Categories(ctx, mailbox, uids)
}

// placementTester is the API's placement test: the relay sends the
// message to every seed mailbox as the tenant's mail.
func (d *daemon) placementTester() api.PlacementTester {
	return func(ctx context.Context, tenant string, eml []byte, actor string) (string, error) {
		t := d.dir.Tenant(tenant)
		if t == nil {
			return "", &api.Refusal{Reason: "not_found", Message: "no tenant " + tenant}
		}
		id, err := d.relay.PlacementTest(ctx, t, eml, actor)
		if code, reason, text, ok := gateway.RefusalOf(err); ok {
			return "", &api.Refusal{Temporary: code < 500, Reason: reason, Message: text}
		}
		return id, err
	}
}

// startWatcher runs the watcher until shutdown stops it.
func (d *daemon) startWatcher() {
	if d.watcher == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.stopWatcher = cancel
	d.wg.Go(func() { d.watcher.Run(ctx) })
}

func seedProviders(s config.Seeds) []string {
	seen := map[string]bool{}
	var out []string
	for _, m := range s.Mailboxes {
		if !seen[m.Provider] {
			seen[m.Provider] = true
			out = append(out, m.Provider)
		}
	}
	return out
}

// placementMetrics turns what the watcher finds into metrics, and feeds
// each copy's fate to its provider's lane, whose placement rule may slow
// it: the loop from where mail lands back to how fast it is sent.
type placementMetrics struct {
	m     *metrics.Metrics
	lanes *policy.Policy // nil: placement steers nothing
	log   *slog.Logger
}

func (p placementMetrics) Placed(pl store.Placement, from string) {
	provider := pl.Provider
	if from != "" {
		p.m.PlacementMoves.WithLabelValues(provider, from, pl.Folder).Inc()
		return
	}
	p.m.Placements.WithLabelValues(provider, pl.Tenant, pl.Folder).Inc()
	p.steer(pl)
	if pl.Folder == store.FolderMissing {
		return
	}
	// Authentication that fails at the receiver is broken DNS or signing,
	// whatever the folder. A receiver that says nothing (no
	// Authentication-Results) is not counted.
	var v placement.Verdicts
	if json.Unmarshal(pl.Verdicts, &v) == nil && v.AuthServ+v.DKIM+v.DMARC+v.SPF != "" {
		for method, result := range map[string]string{"dkim": v.DKIM, "dmarc": v.DMARC} {
			if result != "pass" {
				p.m.SeedAuthFailures.WithLabelValues(provider, method).Inc()
				if p.log != nil {
					p.log.Warn("seed copy failed authentication at the receiver: DNS or signing is broken", "seed", pl.Seed,
						"provider", provider, "tenant", pl.Tenant, "method", method, "result", result, "message", pl.MessageID)
				}
			}
		}
	}
	p.m.PlacementDetection.WithLabelValues(provider).Observe(max(pl.DetectedAt.Sub(pl.ArrivedAt), 0).Seconds())
	if !pl.DeliveredAt.IsZero() {
		p.m.PlacementArrival.WithLabelValues(provider).Observe(max(pl.ArrivedAt.Sub(pl.DeliveredAt), 0).Seconds())
	}
}

func (p placementMetrics) MailboxState(seed, folder string, up bool, _ error) {
	v := 0.0
	if up {
		v = 1
	}
	p.m.SeedMailboxUp.WithLabelValues(seed, folder).Set(v)
}

// inboxShare exports the inbox's share of each provider's seed copies of
// the last hour whose fate is known, read from the store at each scrape
// so that it is right after a restart too.
type inboxShare struct {
	book      store.Placements
	providers []string
}

var inboxShareDesc = prometheus.NewDesc("certgate_placement_inbox_ratio",
	"Share of the seed copies delivered in the last hour, found or missing, that landed in the inbox, by provider.",
	[]string{"provider"}, nil)

func (s *inboxShare) Describe(ch chan<- *prometheus.Desc) { ch <- inboxShareDesc }

func (s *inboxShare) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	counts, err := s.book.PlacementCounts(ctx, store.PlacementQuery{Since: time.Now().Add(-time.Hour)})
	if err != nil {
		ch <- prometheus.NewInvalidMetric(inboxShareDesc, err)
		return
	}
	inbox, known := map[string]float64{}, map[string]float64{}
	for _, c := range counts {
		if c.Folder == store.FolderPending {
			continue
		}
		known[c.Provider] += float64(c.Count)
		if c.Folder == store.FolderInbox {
			inbox[c.Provider] += float64(c.Count)
		}
	}
	for _, p := range s.providers {
		if known[p] > 0 {
			ch <- prometheus.MustNewConstMetric(inboxShareDesc, prometheus.GaugeValue, inbox[p]/known[p], p)
		}
	}
}

// steer feeds a seed copy's first placement (or its absence) to the
// lane of its provider.
func (p placementMetrics) steer(pl store.Placement) {
	if p.lanes == nil {
		return
	}
	lane, ok := p.lanes.ProviderLane(pl.Provider)
	if !ok {
		return // the catch-all's lanes are per domain: no one lane to steer
	}
	re := lane.ObservePlacement(pl.Folder)
	if !re.Acted {
		return
	}
	p.m.PlacementActions.WithLabelValues(pl.Provider, string(re.Action)).Inc()
	if p.log == nil {
		return
	}
	st := lane.State()
	p.log.Warn("lane rule", "lane", lane.Key(), "rule", re.Rule, "action", re.Action, "alert", true, "reason", re.Reason,
		"state", st.Name, "rate", st.Rate, "until", st.Until)
}
