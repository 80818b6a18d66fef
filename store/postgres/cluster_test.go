package postgres

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/certgate/certgate/internal/testpg"
	"github.com/certgate/certgate/store"
)

// openNode opens a store on dsn as the named node ("" for none).
func openNode(t *testing.T, dsn, node string) *Store {
	t.Helper()
	s, err := Open(context.Background(), dsn, Options{Node: node})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

var clusterT0 = time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)

// enqueueN stores n one-recipient messages, due at clusterT0, and
// returns their recipients' ids.
func enqueueN(t *testing.T, s *Store, prefix string, n int) []int64 {
	t.Helper()
	var ids []int64
	for i := range n {
		id := fmt.Sprintf("%s-%04d", prefix, i)
		got, err := s.Enqueue(context.Background(), store.Message{ID: id, Tenant: "acme", MailFrom: "ca@acme.example",
			HeaderFrom: "ca@acme.example", MessageID: id + "@acme.example", Class: "bulk", Size: 10, ReceivedAt: clusterT0},
			[][]byte{[]byte("body")}, []store.NewRecipient{{Address: fmt.Sprintf("u%d@gmail.com", i), State: store.StateQueued, NextAttempt: clusterT0}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, got...)
	}
	return ids
}

func heartbeat(t *testing.T, s *Store, now time.Time) (int, bool) {
	t.Helper()
	live, lapsed, err := s.Heartbeat(context.Background(), now, now.Add(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return live, lapsed
}

func pendingIDs(t *testing.T, s *Store) []int64 {
	t.Helper()
	var ids []int64
	if err := s.Pending(context.Background(), func(p store.Pending) error { ids = append(ids, p.RecipientID); return nil }); err != nil {
		t.Fatal(err)
	}
	return ids
}

func attempt(id int64, now time.Time) store.Attempt {
	return store.Attempt{RecipientID: id, Time: now, State: store.StateDelivered, Provider: "gmail", Code: 250, Reply: "2.0.0 ok"}
}

// A node delivers what it accepted; once its heartbeat lapses, another
// node claims its work, and the first can no longer record attempts.
func TestClusterLapsedNodesWorkIsClaimed(t *testing.T) {
	dsn := testpg.Start(t).NewDB(t)
	ctx := context.Background()
	a, b := openNode(t, dsn, "a"), openNode(t, dsn, "b")
	heartbeat(t, a, clusterT0)
	if live, _ := heartbeat(t, b, clusterT0); live != 2 {
		t.Fatalf("live nodes = %d, want 2", live)
	}
	ids := enqueueN(t, a, "m", 3)
	if got := pendingIDs(t, a); len(got) != 3 {
		t.Fatalf("a's Pending = %v, want its 3 copies", got)
	}
	if got := pendingIDs(t, b); len(got) != 0 {
		t.Fatalf("b's Pending = %v, want none: a holds them", got)
	}
	now := clusterT0.Add(10 * time.Second)
	if got, err := b.Claim(ctx, now, now, 10); err != nil || len(got) != 0 {
		t.Fatalf("b claimed %v, %v while a is alive", got, err)
	}
	if err := a.RecordAttempt(ctx, attempt(ids[0], now)); err != nil {
		t.Fatalf("a records its own copy: %v", err)
	}

	// a falls silent; b keeps beating, and after a's lease takes the rest.
	now = clusterT0.Add(31 * time.Second)
	if live, _ := heartbeat(t, b, now); live != 1 {
		t.Fatalf("live nodes = %d after a lapsed, want 1", live)
	}
	got, err := b.Claim(ctx, now, now, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].RecipientID != ids[1] || got[1].RecipientID != ids[2] || got[0].Tenant != "acme" {
		t.Fatalf("b claimed %+v, want the two copies a left", got)
	}
	if err := a.RecordAttempt(ctx, attempt(ids[1], now)); !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("a recording a claimed copy: %v, want ErrLeaseLost", err)
	}
	if err := a.RecordAttempt(ctx, attempt(999999, now)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a recording an unknown copy: %v, want ErrNotFound", err)
	}
	if err := b.RecordAttempt(ctx, attempt(ids[1], now)); err != nil {
		t.Fatalf("b records what it claimed: %v", err)
	}
	wrong := attempt(ids[2], now)
	wrong.MessageID = "not-its-message"
	if err := a.RecordAttempt(ctx, wrong); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("recording a recipient under another message's id: %v, want ErrNotFound", err)
	}
	if _, lapsed := heartbeat(t, a, now); !lapsed {
		t.Fatal("a's heartbeat after its lease did not say it lapsed")
	}
	if _, lapsed := heartbeat(t, a, now); lapsed {
		t.Fatal("a's next heartbeat said lapsed again")
	}
	if got := pendingIDs(t, a); len(got) != 0 {
		t.Fatalf("a's Pending after the lapse = %v, want none", got)
	}
	nodes, err := a.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 2 || nodes[0].Name != "a" || nodes[0].Queued != 0 || nodes[1].Name != "b" || nodes[1].Queued != 1 {
		t.Fatalf("Nodes = %+v, want a with 0 queued and b with 1", nodes)
	}
}

// Nodes claiming together split the free copies: each goes to exactly one.
func TestClusterConcurrentClaimsNeverShare(t *testing.T) {
	dsn := testpg.Start(t).NewDB(t)
	ctx := context.Background()
	ids := enqueueN(t, openNode(t, dsn, ""), "free", 300) // no node: free to claim
	var mu sync.Mutex
	claimed := map[int64]string{}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := range 4 {
		s := openNode(t, dsn, fmt.Sprintf("n%d", i))
		heartbeat(t, s, clusterT0)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 { // bounded: 300 copies in batches of 7
				got, err := s.Claim(ctx, clusterT0, clusterT0, 7)
				if err != nil {
					errs <- err
					return
				}
				if len(got) == 0 {
					return
				}
				mu.Lock()
				for _, p := range got {
					if prev, dup := claimed[p.RecipientID]; dup {
						errs <- fmt.Errorf("recipient %d claimed by %s and %s", p.RecipientID, prev, s.node)
					}
					claimed[p.RecipientID] = s.node
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(claimed) != len(ids) {
		t.Fatalf("%d of %d copies claimed", len(claimed), len(ids))
	}
}

// Only due copies are claimed, soonest first.
func TestClusterClaimTakesDueCopiesOnly(t *testing.T) {
	dsn := testpg.Start(t).NewDB(t)
	ctx := context.Background()
	free := openNode(t, dsn, "")
	ids := enqueueN(t, free, "due", 3)
	for i, id := range ids { // due at T0+2m, T0+1m, T0+3m
		next := clusterT0.Add(time.Duration([]int{2, 1, 3}[i]) * time.Minute)
		if err := free.RecordAttempt(ctx, store.Attempt{RecipientID: id, Time: clusterT0, State: store.StateQueued, NextAttempt: next, Code: 451, Reply: "4.7.0 later"}); err != nil {
			t.Fatal(err)
		}
	}
	n := openNode(t, dsn, "n")
	heartbeat(t, n, clusterT0)
	got, err := n.Claim(ctx, clusterT0, clusterT0.Add(2*time.Minute), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].RecipientID != ids[1] || got[1].RecipientID != ids[0] {
		t.Fatalf("claimed %+v, want recipients %d then %d", got, ids[1], ids[0])
	}
}

// A node that leaves gives its work back at once.
func TestClusterLeaveHandsWorkOver(t *testing.T) {
	dsn := testpg.Start(t).NewDB(t)
	ctx := context.Background()
	a, b := openNode(t, dsn, "a"), openNode(t, dsn, "b")
	heartbeat(t, a, clusterT0)
	heartbeat(t, b, clusterT0)
	enqueueN(t, a, "m", 2)
	if ok, err := a.TryLease(ctx, "webhooks", clusterT0, clusterT0.Add(30*time.Second)); err != nil || !ok {
		t.Fatalf("a's lease: %v, %v", ok, err)
	}
	if err := a.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := b.Claim(ctx, clusterT0, clusterT0, 10)
	if err != nil || len(got) != 2 {
		t.Fatalf("b claimed %d (%v) right after a left, want 2", len(got), err)
	}
	if ok, err := b.TryLease(ctx, "webhooks", clusterT0, clusterT0.Add(30*time.Second)); err != nil || !ok {
		t.Fatalf("b's lease after a left: %v, %v", ok, err)
	}
	if live, _ := heartbeat(t, b, clusterT0); live != 1 {
		t.Fatalf("live = %d after a left, want 1", live)
	}
}

// Two processes under one name: the second waits for the first's lease.
func TestClusterNodeNameInUse(t *testing.T) {
	dsn := testpg.Start(t).NewDB(t)
	ctx := context.Background()
	first, second := openNode(t, dsn, "same"), openNode(t, dsn, "same")
	heartbeat(t, first, clusterT0)
	if _, _, err := second.Heartbeat(ctx, clusterT0, clusterT0.Add(30*time.Second)); !errors.Is(err, store.ErrNodeInUse) {
		t.Fatalf("second process's heartbeat: %v, want ErrNodeInUse", err)
	}
	later := clusterT0.Add(31 * time.Second)
	if _, lapsed := heartbeat(t, second, later); lapsed {
		t.Fatal("a new process taking over a lapsed name reported its own lapse")
	}
	if _, _, err := first.Heartbeat(ctx, later, later.Add(30*time.Second)); !errors.Is(err, store.ErrNodeInUse) {
		t.Fatalf("first process after the takeover: %v, want ErrNodeInUse", err)
	}
}

// A named lease is one node's at a time, until it lapses or is dropped.
func TestClusterNamedLeases(t *testing.T) {
	dsn := testpg.Start(t).NewDB(t)
	ctx := context.Background()
	a, b := openNode(t, dsn, "a"), openNode(t, dsn, "b")
	try := func(s *Store, now time.Time) bool {
		t.Helper()
		ok, err := s.TryLease(ctx, "seed:gmail", now, now.Add(30*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !try(a, clusterT0) || try(b, clusterT0) {
		t.Fatal("want a to take the lease and b to be refused")
	}
	if !try(a, clusterT0.Add(20*time.Second)) {
		t.Fatal("a could not extend its own lease")
	}
	if try(b, clusterT0.Add(40*time.Second)) {
		t.Fatal("b took the lease a extended to T0+50s")
	}
	if !try(b, clusterT0.Add(51*time.Second)) || try(a, clusterT0.Add(52*time.Second)) {
		t.Fatal("want b to take the lapsed lease and a to be refused")
	}
	if ls, err := a.Leases(ctx); err != nil || len(ls) != 1 || ls[0].Name != "seed:gmail" || ls[0].Node != "b" || !ls[0].Until.Equal(clusterT0.Add(81*time.Second)) {
		t.Fatalf("Leases = %+v, %v; want seed:gmail held by b until T0+81s", ls, err)
	}
	if err := b.DropLease(ctx, "seed:gmail"); err != nil {
		t.Fatal(err)
	}
	if !try(a, clusterT0.Add(53*time.Second)) {
		t.Fatal("a could not take a dropped lease")
	}
	if _, err := openNode(t, dsn, "").TryLease(ctx, "x", clusterT0, clusterT0); err == nil {
		t.Fatal("a store without a node name took a lease")
	}
	names := []string{}
	nodes, _ := a.Nodes(ctx)
	for _, n := range nodes {
		names = append(names, n.Name)
	}
	sort.Strings(names)
	if len(names) != 0 {
		t.Fatalf("Nodes = %v: leases alone made nodes", names)
	}
}
