package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certgate/certgate/clock"
	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/policy"
	"github.com/certgate/certgate/store/sqlite"
)

// What the rules make of a lane is saved and written as a lane_changed
// event by "policy", once per change; an unchanged lane writes nothing.
func TestLaneKeeperSavesAndNotes(t *testing.T) {
	st, p, k := newTestLaneKeeper(t)
	gmail := p.Match("gmail.com", nil)
	p.Match("yahoo.com", nil) // never changed: nothing to save or say
	gmail.React(421, "4.7.28", "slow down", "issuer")
	for range 2 {
		if err := k.save(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	states, err := st.LaneStates(context.Background())
	if err != nil || len(states) != 1 || !strings.Contains(string(states["gmail"]), `"factor":0.5`) {
		t.Fatalf("saved states %q, %v; want gmail's alone, halved", states, err)
	}
	evs, err := st.EventsAfter(context.Background(), 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].Kind != "lane_changed" || evs[0].Actor != "policy" || evs[0].Lane != "gmail" ||
		!strings.Contains(evs[0].Detail, "gmail: slowed, 300/min (configured 600/min)") || !strings.Contains(evs[0].Detail, "gmail-rate-limit") {
		t.Fatalf("events %+v, want one lane_changed for gmail's slowdown", evs)
	}
}

// A catch-all lane is one recipient domain's: its stored state goes once
// nothing holds it, so that the table does not keep a row for every
// domain ever written to; a named provider's stays.
func TestLaneKeeperForgetsRestingDomainLanes(t *testing.T) {
	st, p, k := newTestLaneKeeper(t)
	corp := p.Match("empresa.example", nil)
	gmail := p.Match("gmail.com", nil)
	for _, l := range []*policy.Lane{corp, gmail} {
		l.Pause("moving MX")
	}
	stored := func() []string {
		t.Helper()
		if err := k.save(context.Background()); err != nil {
			t.Fatal(err)
		}
		states, err := st.LaneStates(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return slices.Sorted(maps.Keys(states))
	}
	if got := stored(); !slices.Equal(got, []string{"default/empresa.example", "gmail"}) {
		t.Fatalf("paused lanes stored: %v", got)
	}
	for _, l := range []*policy.Lane{corp, gmail} {
		l.Resume("done")
	}
	if got := stored(); !slices.Equal(got, []string{"gmail"}) {
		t.Fatalf("after the resume: %v; want the domain lane's row gone, gmail's kept", got)
	}
}

// newTestLaneKeeper is a lane keeper over a new store and the built-in
// providers.
func newTestLaneKeeper(t *testing.T) (*sqlite.Store, *policy.Policy, *laneKeeper) {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	p := policy.New(config.ResolveProviders(nil), config.DefaultRetry(), policy.Options{})
	return st, p, newLaneKeeper(p, st, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// Two nodes of a cluster share a lane through the store: a pause made on
// one holds on the other even while the other keeps counting its own
// warm-up sends, and the day's count is the sum of both nodes' sends,
// not the last writer's.
func TestLaneKeepersOfTwoNodesAddUp(t *testing.T) {
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	start := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	clk := clock.NewFake(start.Add(9 * time.Hour))
	node := func() (*policy.Lane, *laneKeeper) {
		p := policy.New(config.ResolveProviders([]config.Provider{{Name: "gmail", Warmup: &config.Warmup{
			Start: "2026-12-01", Timezone: "UTC", Schedule: []int{100}}}}), config.DefaultRetry(), policy.Options{Clock: clk})
		k := newLaneKeeper(p, st, slog.New(slog.NewTextHandler(io.Discard, nil)))
		k.followCluster(nil)
		l, _ := p.ProviderLane("gmail")
		return l, k
	}
	la, ka := node()
	lb, kb := node()
	tick := func(k *laneKeeper) {
		t.Helper()
		if err := k.refresh(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := k.save(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	stored := func() policy.Snapshot {
		t.Helper()
		states, err := st.LaneStates(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var s policy.Snapshot
		if err := json.Unmarshal(states["gmail"], &s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	for round := range 4 {
		for range 3 {
			la.TakeBulk("issuer")
		}
		for range 2 {
			lb.TakeBulk("issuer")
		}
		if round == 1 {
			la.Pause("MX moving")
		}
		tick(ka)
		tick(kb)
	}
	tick(ka)
	if got := stored().WarmSent; got != 4*(3+2) {
		t.Errorf("the store counts %d warm-up sends, want the %d both nodes made", got, 4*(3+2))
	}
	if !stored().Paused || lb.State().Name != "paused" {
		t.Errorf("node b's lane is %q (stored paused: %v) after node a paused it, while b kept sending", lb.State().Name, stored().Paused)
	}
	tick(kb)
	sa, _ := la.Snapshot()
	sb, _ := lb.Snapshot()
	if sa.WarmSent != 20 || sb.WarmSent != 20 {
		t.Errorf("the nodes count %d and %d sends today, want both 20", sa.WarmSent, sb.WarmSent)
	}
}
