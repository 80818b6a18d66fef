package cluster

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certgate/certgate/clock"
	"github.com/certgate/certgate/internal/testpg"
	"github.com/certgate/certgate/store"
	"github.com/certgate/certgate/store/postgres"
)

var t0 = time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)

const lease = 30 * time.Second

// queue is a node's queue as the member sees it: what it was given.
type queue struct {
	mu         sync.Mutex
	ids        map[int64]bool
	reconciled chan []store.Pending
	changed    chan struct{}
}

func newQueue() *queue {
	return &queue{ids: map[int64]bool{}, reconciled: make(chan []store.Pending, 4), changed: make(chan struct{}, 1)}
}

func (q *queue) Add(ps ...store.Pending) {
	q.mu.Lock()
	for _, p := range ps {
		q.ids[p.RecipientID] = true
	}
	q.mu.Unlock()
	select {
	case q.changed <- struct{}{}:
	default:
	}
}

func (q *queue) Reconcile(load func() ([]store.Pending, error)) error {
	held, err := load()
	if err != nil {
		return err
	}
	q.reconciled <- held
	return nil
}

func (q *queue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.ids)
}

func open(t *testing.T, dsn, node string) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(context.Background(), dsn, postgres.Options{Node: node})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func enqueue(t *testing.T, s store.Store, n int) {
	t.Helper()
	for i := range n {
		id := fmt.Sprintf("m-%04d", i)
		if _, err := s.Enqueue(context.Background(), store.Message{ID: id, Tenant: "acme", MailFrom: "ca@acme.example",
			HeaderFrom: "ca@acme.example", MessageID: id + "@x", Class: "bulk", Size: 4, ReceivedAt: t0},
			[][]byte{[]byte("body")}, []store.NewRecipient{{Address: fmt.Sprintf("u%d@gmail.com", i), State: store.StateQueued, NextAttempt: t0}}); err != nil {
			t.Fatal(err)
		}
	}
}

func member(t *testing.T, s Store, q Queue, clk clock.Clock) *Member {
	t.Helper()
	m := New(Options{Store: s, Queue: q, Lease: lease, Batch: 4, Clock: clk, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := m.Join(context.Background()); err != nil {
		t.Fatal(err)
	}
	return m
}

// advanceUntil moves clk a poll at a time, each once the member's loops
// wait on it, until cond holds (at most n steps).
func advanceUntil(t *testing.T, clk *clock.Fake, timers, n int, step time.Duration, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for range n {
		if cond() {
			return
		}
		if err := clk.WaitTimers(ctx, timers); err != nil {
			t.Fatal(err)
		}
		clk.Advance(step)
	}
	if !cond() {
		t.Fatalf("not so after %d steps of %v", n, step)
	}
}

// A node that falls silent has its copies claimed by a live one, a
// batch at a time, once its lease has run out; not before.
func TestMemberClaimsASilentNodesWork(t *testing.T) {
	dsn := testpg.Start(t).NewDB(t)
	dead := open(t, dsn, "dead")
	if _, _, err := dead.Heartbeat(context.Background(), t0, t0.Add(lease)); err != nil {
		t.Fatal(err)
	}
	enqueue(t, dead, 10)

	clk := clock.NewFake(t0)
	q := newQueue()
	var claims atomic.Int64
	m := New(Options{Store: open(t, dsn, "live"), Queue: q, Lease: lease, Batch: 4, Clock: clk,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), OnClaim: func(n int) { claims.Add(1) }})
	if err := m.Join(context.Background()); err != nil {
		t.Fatal(err)
	}
	if m.LiveNodes() != 2 {
		t.Fatalf("LiveNodes = %d, want 2", m.LiveNodes())
	}
	m.Start(context.Background())
	m.StartClaims()
	defer m.Stop()
	// Up to the lease, nothing is claimed.
	advanceUntil(t, clk, 2, 5, m.poll(), func() bool { return clk.Now().Sub(t0) >= 20*time.Second })
	if q.len() != 0 {
		t.Fatalf("claimed %d copies while the other node's lease lived", q.len())
	}
	advanceUntil(t, clk, 2, 10, m.poll(), func() bool { return q.len() == 10 })
	if got := clk.Now().Sub(t0); got > lease+2*m.poll() {
		t.Fatalf("the work was claimed %v after the node fell silent, want within the lease and a poll", got)
	}
	advanceUntil(t, clk, 2, 10, m.beat(), func() bool { return m.LiveNodes() == 1 })
}

// A node whose heartbeat lapsed and whose work was claimed meanwhile
// keeps only what the store still says is its own.
func TestLapsedMemberReconciles(t *testing.T) {
	dsn := testpg.Start(t).NewDB(t)
	aClk := clock.NewFake(t0)
	aStore := open(t, dsn, "a")
	aq := newQueue()
	a := member(t, aStore, aq, aClk)
	enqueue(t, aStore, 3)
	a.Start(context.Background())
	defer a.Stop()

	// b's clock runs past a's lease while a's stands still (a paused).
	bStore := open(t, dsn, "b")
	later := t0.Add(lease + time.Second)
	if _, _, err := bStore.Heartbeat(context.Background(), later, later.Add(lease)); err != nil {
		t.Fatal(err)
	}
	got, err := bStore.Claim(context.Background(), later, later, 2)
	if err != nil || len(got) != 2 {
		t.Fatalf("b claimed %d (%v), want 2", len(got), err)
	}
	if err := aClk.WaitTimers(context.Background(), 1); err != nil { // the heartbeat's
		t.Fatal(err)
	}
	aClk.Advance(lease + 2*time.Second)
	select {
	case held := <-aq.reconciled:
		if len(held) != 1 {
			t.Fatalf("a kept %d copies after its lapse, want the 1 b did not claim", len(held))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a never reconciled its queue after its heartbeat lapsed")
	}
}

// A job under a named lease runs on one node at a time, and moves to
// another when its node stops beating.
func TestExclusiveRunsOnOneNodeAtATime(t *testing.T) {
	dsn := testpg.Start(t).NewDB(t)
	clk := clock.NewFake(t0)
	var running, most atomic.Int64
	ran := map[string]chan struct{}{"a": make(chan struct{}, 8), "b": make(chan struct{}, 8)}
	job := func(node string) func(ctx context.Context) {
		return func(ctx context.Context) {
			n := running.Add(1)
			for {
				m := most.Load()
				if n <= m || most.CompareAndSwap(m, n) {
					break
				}
			}
			ran[node] <- struct{}{}
			<-ctx.Done()
			running.Add(-1)
		}
	}
	a := member(t, open(t, dsn, "a"), newQueue(), clk)
	a.Start(context.Background())
	a.Exclusive("webhooks", job("a"))
	<-ran["a"]
	b := member(t, open(t, dsn, "b"), newQueue(), clk)
	b.Start(context.Background())
	defer b.Stop()
	b.Exclusive("webhooks", job("b"))
	// Both try for a few rounds: b never gets it while a renews.
	for range 6 {
		if err := clk.WaitTimers(context.Background(), 4); err != nil { // each node's heartbeat and job loop
			t.Fatal(err)
		}
		clk.Advance(a.beat())
	}
	select {
	case <-ran["b"]:
		t.Fatal("b ran the job while a held its lease")
	default:
	}
	a.Stop() // a dies without leaving: b waits out the lease
	advanceUntil(t, clk, 2, 10, b.beat(), func() bool { return len(ran["b"]) == 1 })
	if most.Load() != 1 {
		t.Fatalf("the job ran on %d nodes at once", most.Load())
	}
}
