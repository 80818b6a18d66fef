package store_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/certgate/certgate/clock"
	"github.com/certgate/certgate/store"
	"github.com/certgate/certgate/store/sqlite"
)

// TestSweeperOnTheClock runs a sweeper on a fake clock over a real store:
// it sweeps at start, then every Every, in batches; old events and old
// finished messages go, the rest stays, and ids never go back.
func TestSweeperOnTheClock(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	clk := clock.NewFake(start)
	const day = 24 * time.Hour

	enqueue := func(id string, received time.Time, final bool) int64 {
		t.Helper()
		rids, err := st.Enqueue(ctx, store.Message{ID: id, Tenant: "ca", Class: "bulk", ReceivedAt: received}, [][]byte{[]byte("x")},
			[]store.NewRecipient{{Address: "a@example.com", TrackingID: id, State: store.StateQueued, NextAttempt: received}})
		if err != nil {
			t.Fatal(err)
		}
		if final {
			if err := st.RecordAttempt(ctx, store.Attempt{RecipientID: rids[0], MessageID: id, Time: received, State: store.StateDelivered,
				Code: 250, Reply: "2.0.0 ok"}); err != nil {
				t.Fatal(err)
			}
		}
		return rids[0]
	}
	// A live message with 25 events 100 days old and 5 of today; an old
	// delivered message; an old one still queued; a recent delivered one.
	enqueue("live", start.Add(-100*day), false)
	for i := range 30 {
		at := start.Add(-100 * day).Add(time.Duration(i) * time.Minute)
		if i >= 25 {
			at = start.Add(-time.Duration(i) * time.Minute)
		}
		if err := st.AddEvent(ctx, store.Event{MessageID: "live", Time: at, Kind: "note", Actor: "test", Detail: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	enqueue("old-done", start.Add(-95*day), true)
	enqueue("old-queued", start.Add(-95*day), false)
	enqueue("new-done", start.Add(-10*day), true)
	top, err := st.EventsAfter(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	topID := top[len(top)-1].ID

	sw := store.NewSweeper(st, store.Retention{Events: 90 * day, Messages: 90 * day}, store.SweepOptions{
		Every: time.Hour, Batch: 4, Now: clk.Now,
		Sleep: func(d time.Duration, stop <-chan struct{}) bool { return clock.Sleep(clk, d, stop) },
		Log:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	sw.Start()
	defer sw.Stop()
	wait := func() {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := clk.WaitTimers(wctx, 1); err != nil {
			t.Fatalf("the sweeper never waited for its next sweep: %v", err)
		}
	}
	wait() // the first sweep is done

	v, err := st.Message(ctx, "live")
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Events) != 5 {
		t.Errorf("the live message has %d events after the sweep, want its 5 recent ones", len(v.Events))
	}
	for _, gone := range []string{"old-done"} {
		if _, err := st.Message(ctx, gone); err == nil {
			t.Errorf("%s is still there", gone)
		}
	}
	for _, kept := range []string{"live", "old-queued", "new-done"} {
		if _, err := st.Message(ctx, kept); err != nil {
			t.Errorf("%s was deleted: %v", kept, err)
		}
	}

	// 91 days on, the next sweep takes what aged meanwhile.
	clk.Advance(91 * day)
	wait()
	if _, err := st.Message(ctx, "new-done"); err == nil {
		t.Error("new-done is still there 101 days after it was received")
	}
	v, err = st.Message(ctx, "live")
	if err != nil || len(v.Events) != 0 {
		t.Errorf("the live message 91 days on: %d events, %v; want none", len(v.Events), err)
	}
	if err := st.AddEvent(ctx, store.Event{MessageID: "live", Kind: "note", Actor: "test"}); err != nil {
		t.Fatal(err)
	}
	evs, err := st.EventsAfter(ctx, 0, 1000)
	if err != nil || len(evs) == 0 || evs[0].ID <= topID {
		t.Errorf("after the sweeps the log is %+v, %v; want only events above %d", evs, err, topID)
	}
}

// TestSweeperOff: with no retention, nothing runs and Stop returns.
func TestSweeperOff(t *testing.T) {
	clk := clock.NewFake(time.Now())
	sw := store.NewSweeper(nil, store.Retention{}, store.SweepOptions{Now: clk.Now,
		Sleep: func(d time.Duration, stop <-chan struct{}) bool { return clock.Sleep(clk, d, stop) }})
	sw.Start()
	sw.Stop()
	if clk.Timers() != 0 {
		t.Error("a sweeper without retention waits on the clock")
	}
	store.NewSweeper(nil, store.Retention{Events: time.Hour}, store.SweepOptions{}).Stop() // never started
}
