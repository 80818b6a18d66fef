package webhook

import (
	"context"
	"crypto/sha256"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certgate/certgate/clock"
	"github.com/certgate/certgate/store"
)

// TestWebhooksDeliveredNotHeldBehindRefusals: 3,000 link_refused events
// ahead of a delivered one in the log, at a receiver that turns refusal
// notices away, do not hold the delivered notice up: it arrives before the
// fake clock moves a poll. (It waited for every refusal notice before: 68
// s behind 3,000 of them, and for ever behind one the receiver refuses.)
func TestWebhooksDeliveredNotHeldBehindRefusals(t *testing.T) {
	ctx := context.Background()
	st := whStore(t, "")
	msg := "068w3qk2v0yzj7a5c1m9rt4xh8"
	rids := whEnqueue(t, st, msg, "ca", store.StateQueued, []string{"juan@empresa.example"})
	// As many as one link's refusals made before they were counted, or
	// as a wave's scanners make over many links. Concurrent writers share
	// commits.
	var wg sync.WaitGroup
	for w := range 30 {
		wg.Go(func() {
			for i := range 100 {
				if err := st.AddEvent(ctx, store.Event{MessageID: msg, RecipientID: rids[0], Time: epoch.Add(time.Duration(w*100+i) * time.Millisecond),
					Kind: "link_refused", Actor: "browser:192.0.2.66", Detail: "no_form"}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	whAttempt(t, st, msg, rids[0], store.StateDelivered, 250, "2.0.0 ok")
	clk := clock.NewFake(epoch)
	rcv := newWHReceiver(t, clk, func(n whNotice, _ int) int {
		if n.Kind == "link_refused" {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	run := startWH(t, st, clk, []Endpoint{{Name: "crm", URL: rcv.srv.URL + "/hook", Secret: []byte(secretAll),
		Events: []string{"delivered", "link_refused"}}}, Options{BackoffBase: time.Hour, BackoffMax: time.Hour}, nil)
	delivered := func() bool {
		for _, n := range rcv.notices("") {
			if n.Kind == "delivered" {
				return true
			}
		}
		return false
	}
	run.runUntil("the delivered notice", delivered)
	if waited := clk.Now().Sub(epoch); waited > run.poll {
		t.Errorf("the delivered notice waited %s behind refusals", waited)
	}
}

// TestWebhooksRefusalsCoalesced: a flood of refused presses on one link,
// counted by the store, makes one link_refused notice per link and hour,
// each carrying the refusals since the one before.
func TestWebhooksRefusalsCoalesced(t *testing.T) {
	ctx := context.Background()
	st := whStore(t, "")
	hash := sha256.Sum256([]byte("a flooded link"))
	msg := "068w3qk2v0yzj7a5c1m9rt4xj9"
	whEnqueue(t, st, msg, "ca", store.StateQueued, []string{"juan@empresa.example"},
		store.NewLink{TokenHash: hash, URL: "https://descargas.ca.example/c?k=1", State: store.LinkPending, MaxUses: 3})
	link, err := st.LinkByToken(ctx, hash)
	if err != nil {
		t.Fatal(err)
	}
	refuse := func(n int, from time.Time) {
		for i := range n {
			if _, err := st.RefuseLink(ctx, link.ID, store.LinkRefusal{Time: from.Add(time.Duration(i) * time.Second), Reason: "pending",
				Client: "192.0.2.66"}, "browser:192.0.2.66"); err != nil {
				t.Fatal(err)
			}
		}
	}
	refuse(500, epoch)                   // the first is noticed, the rest counted
	refuse(300, epoch.Add(time.Hour))    // the first of these is noticed with the 499 before it
	refuse(5, epoch.Add(90*time.Minute)) // counted, for the next notice
	clk := clock.NewFake(epoch)
	rcv := newWHReceiver(t, clk, nil)
	run := startWH(t, st, clk, []Endpoint{{Name: "siem", URL: rcv.srv.URL + "/hook", Secret: []byte(secretAll),
		Events: []string{"link_refused", "delivered"}}}, Options{}, nil)
	run.runUntil("two notices", func() bool { return len(rcv.notices("")) >= 2 })
	run.quiet()
	got := rcv.notices("")
	if len(got) != 2 {
		t.Fatalf("%d notices for 805 refusals, want 2: %+v", len(got), got)
	}
	for i, want := range []int64{1, 500} {
		n := got[i]
		verifyNotice(t, secretAll, n)
		if n.Kind != "link_refused" || n.Count != want || !strings.HasPrefix(n.Detail, "pending") || n.Recipient != "juan@empresa.example" {
			t.Errorf("notice %d = %+v, want link_refused with count %d", i, n, want)
		}
	}
}

// TestWebhooksRefusalLaneStartsWhereTheEndpointIs: an endpoint that asked
// for link_refused and other kinds before refusals had a lane of their
// own sends no old notice again after the upgrade, and sends the new ones.
func TestWebhooksRefusalLaneStartsWhereTheEndpointIs(t *testing.T) {
	ctx := context.Background()
	st := whStore(t, "")
	msg := "068w3qk2v0yzj7a5c1m9rt4xk1"
	rids := whEnqueue(t, st, msg, "ca", store.StateQueued, []string{"a@empresa.example"})
	add := func(kind string) int64 {
		t.Helper()
		if err := st.AddEvent(ctx, store.Event{MessageID: msg, RecipientID: rids[0], Kind: kind, Actor: "browser:192.0.2.1", Detail: "x"}); err != nil {
			t.Fatal(err)
		}
		evs, err := st.EventsAfter(ctx, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		return evs[len(evs)-1].ID
	}
	add("link_refused")
	sent := add("link_used")
	if err := st.SetCursor(ctx, "webhook:crm", sent); err != nil { // where the old release left it
		t.Fatal(err)
	}
	newRefusal := add("link_refused")
	clk := clock.NewFake(epoch)
	rcv := newWHReceiver(t, clk, nil)
	ep := Endpoint{Name: "crm", URL: rcv.srv.URL + "/hook", Secret: []byte(secretAll), Events: []string{"link_used", "link_refused"}}
	run := startWH(t, st, clk, []Endpoint{ep}, Options{}, nil)
	run.runUntil("a notice", func() bool { return len(rcv.notices("")) >= 1 })
	run.quiet()
	if got := ids(rcv.notices("")); !slices.Equal(got, []int64{newRefusal}) {
		t.Fatalf("after the upgrade the endpoint got %v, want only the new refusal %d", got, newRefusal)
	}
	// A restart keeps the lane's own position.
	run.d.Stop(ctx)
	later := add("link_refused")
	run = startWH(t, st, clk, []Endpoint{ep}, Options{}, nil)
	run.runUntil("a second notice", func() bool { return len(rcv.notices("")) >= 2 })
	run.quiet()
	if got := ids(rcv.notices("")); !slices.Equal(got, []int64{newRefusal, later}) {
		t.Fatalf("after a restart the endpoint got %v, want %v", got, []int64{newRefusal, later})
	}
}
