package delivery

import (
	"context"
	"testing"
	"time"

	"github.com/certgate/certgate/store"
)

// A node of a cluster whose heartbeat lapsed keeps only the copies the
// store still leases to it: the others leave unattempted; a copy that came
// in while the store was read stays.
func TestReconcileDropsWhatOthersClaimed(t *testing.T) {
	e := newQEnv(t, qopts{fakeClock: true})
	ctx := context.Background()
	later := e.now().Add(time.Hour)
	// Four copies waiting for a retry an hour away, spooled as the relay
	// would, and handed to the queue.
	var ps []store.Pending
	for _, rcpt := range []string{"a@empresa.example", "b@empresa.example", "c@empresa.example", "d@empresa.example"} {
		m := store.Message{ID: store.NewMessageID(e.now()), Tenant: "issuer", MailFrom: "ca@ca.example", HeaderFrom: "ca@ca.example",
			MessageID: "r@ca.example", Class: "bulk", Size: 4, ReceivedAt: e.now()}
		ids, err := e.store.Enqueue(ctx, m, [][]byte{[]byte("body")}, []store.NewRecipient{store.NewCopy(rcpt, store.StateQueued, later)})
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, store.Pending{RecipientID: ids[0], MessageID: m.ID, Tenant: "issuer", MailFrom: m.MailFrom,
			Address: rcpt, Domain: "empresa.example", Class: "bulk", Size: 4, NextAttempt: later, ReceivedAt: e.now()})
	}
	e.queue.Add(ps[:3]...)
	if e.queue.Len() != 3 {
		t.Fatalf("Len = %d, want 3", e.queue.Len())
	}
	err := e.queue.Reconcile(func() ([]store.Pending, error) {
		e.queue.Add(ps[3]) // accepted while the store was read: this node's
		return ps[:1], nil // of those held before, the store leaves a only
	})
	if err != nil {
		t.Fatal(err)
	}
	if e.queue.Len() != 2 {
		t.Fatalf("Len = %d after reconciling, want 2 (a, and d that came in meanwhile)", e.queue.Len())
	}
	e.advance(time.Hour, 1)
	got := map[int64]bool{}
	for _, a := range e.waitAttempts(2) {
		got[a.RecipientID] = true
	}
	if !got[ps[0].RecipientID] || !got[ps[3].RecipientID] {
		t.Fatalf("attempts for %v, want for a (%d) and d (%d), not for the copies another node holds", got, ps[0].RecipientID, ps[3].RecipientID)
	}
	e.waitLen(0)
}
