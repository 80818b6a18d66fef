package postgres

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/certgate/certgate/internal/testpg"
	"github.com/certgate/certgate/store"
)

// benchMessage is a one-recipient message like the gateway's.
func benchMessage(id string, rcpt store.NewRecipient) (store.Message, [][]byte, []store.NewRecipient) {
	return store.Message{ID: id, Tenant: "acme", MailFrom: "ca@acme.example", HeaderFrom: "ca@acme.example",
			MessageID: id + "@acme.example", Class: "bulk", Size: 4645, ReceivedAt: clusterT0},
		[][]byte{make([]byte, 4645)}, []store.NewRecipient{rcpt}
}

// TestBatchRollsBack: a batch that fails on a later statement leaves
// nothing of its earlier ones (the implicit transaction), and a failed
// guard writes nothing.
func TestBatchRollsBack(t *testing.T) {
	ctx := context.Background()
	s := openNode(t, testpg.Start(t).NewDB(t), "")
	m, c, r := benchMessage("m1", store.NewRecipient{Address: "a@gmail.com", TrackingID: "T1", State: store.StateQueued, NextAttempt: clusterT0})
	ids, err := s.Enqueue(ctx, m, c, r)
	if err != nil {
		t.Fatal(err)
	}
	// The same tracking id again: the recipient's insert fails after the
	// message's and the content's.
	m, c, r = benchMessage("m2", store.NewRecipient{Address: "b@gmail.com", TrackingID: "T1", State: store.StateQueued, NextAttempt: clusterT0})
	if _, err := s.Enqueue(ctx, m, c, r); err == nil {
		t.Fatal("enqueue with a taken tracking id: no error")
	}
	if _, err := s.Message(ctx, "m2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("m2 after its failed enqueue: %v, want ErrNotFound", err)
	}
	var contents int
	if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM contents WHERE message_id = 'm2'").Scan(&contents); err != nil || contents != 0 {
		t.Fatalf("m2's contents: %d, %v", contents, err)
	}
	// A guard that fails: of another message; nothing written.
	err = s.RecordAttempt(ctx, store.Attempt{RecipientID: ids[0], MessageID: "m2", State: store.StateDelivered, Provider: "p"})
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("attempt on another message's recipient: %v, want ErrNotFound", err)
	}
	evs, err := s.EventsAfter(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].Kind != "accepted" {
		t.Fatalf("events: %+v, want m1's accepted only", evs)
	}
	if _, err := s.Data(ctx, ids[0]); err != nil {
		t.Fatalf("m1's data after the refused attempt: %v", err)
	}
}

// The benchmarks run against testpg, which has fsync off: they measure
// the CPU and round trips of the calls, not the commits' flushes.

func BenchmarkEnqueue(b *testing.B) {
	ctx := context.Background()
	s := benchStore(b)
	b.ResetTimer()
	for i := range b.N {
		m, c, r := benchMessage(fmt.Sprintf("m%08d", i), store.NewRecipient{Address: "a@gmail.com", State: store.StateQueued, NextAttempt: clusterT0})
		if _, err := s.Enqueue(ctx, m, c, r); err != nil {
			b.Fatal(err)
		}
	}
}

func benchStore(b *testing.B) *Store {
	s, err := Open(context.Background(), testpg.Start(b).NewDB(b), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

func BenchmarkRecordAttempt(b *testing.B) {
	ctx := context.Background()
	s := benchStore(b)
	ids := make([]int64, b.N)
	for i := range b.N {
		m, c, r := benchMessage(fmt.Sprintf("m%08d", i), store.NewRecipient{Address: "a@gmail.com", State: store.StateQueued, NextAttempt: clusterT0})
		got, err := s.Enqueue(ctx, m, c, r)
		if err != nil {
			b.Fatal(err)
		}
		ids[i] = got[0]
	}
	b.ResetTimer()
	for i := range b.N {
		if err := s.RecordAttempt(ctx, store.Attempt{RecipientID: ids[i], State: store.StateDelivered, Provider: "p",
			Code: 250, Reply: "2.0.0 ok", Time: time.Now(), EnableLinks: true}); err != nil {
			b.Fatal(err)
		}
	}
}

// TestEventsAfterWaitsForWriters: a transaction that holds event ids
// (the events lock, shared) holds EventsAfter back until it ends.
func TestEventsAfterWaitsForWriters(t *testing.T) {
	ctx := context.Background()
	s := openNode(t, testpg.Start(t).NewDB(t), "")
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock_shared($1)", eventsLock); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := s.EventsAfter(short, 0, 10); err == nil {
		t.Fatal("EventsAfter while a writer holds the events lock: no wait")
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.EventsAfter(ctx, 0, 10); err != nil {
		t.Fatalf("EventsAfter once the writer committed: %v", err)
	}
}
