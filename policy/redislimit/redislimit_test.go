package redislimit

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certgate/certgate/internal/testredis"
	"github.com/certgate/certgate/policy"
	"github.com/certgate/certgate/policy/limitertest"
)

var epoch = limitertest.Epoch

// client is a client of a private Redis for t.
func client(t testing.TB, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { c.Close() })
	return c
}

// node is one certgate node's Limiter on rdb, closed when t ends.
func node(t testing.TB, rdb redis.UniversalClient, o Options) *Limiter {
	if o.Refresh == 0 {
		o.Refresh = -1 // tests refresh explicitly, at explicit times
	}
	l := New(rdb, o)
	t.Cleanup(func() { l.Close(context.Background()) })
	return l
}

// fakeNow is a lease clock the test sets.
type fakeNow struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeNow) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeNow) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// The Redis limiter keeps the contract LocalLimiter keeps.
func TestConformance(t *testing.T) {
	rdb := client(t, testredis.New(t).Addr)
	var n atomic.Int64
	limitertest.Run(t, func(t *testing.T) policy.Limiter {
		return node(t, rdb, Options{Prefix: fmt.Sprintf("certgate:test%d:", n.Add(1))})
	})
}

// Two nodes reserving one key concurrently, on clocks a few milliseconds
// apart, get starts never closer than the interval: one rate between them.
func TestTwoNodesShareTheRate(t *testing.T) {
	addr := testredis.New(t).Addr
	nodes := []*Limiter{node(t, client(t, addr), Options{}), node(t, client(t, addr), Options{})}
	iv := 5 * time.Millisecond
	const each = 100
	var mu sync.Mutex
	var starts []time.Time
	var wg sync.WaitGroup
	for i, l := range nodes {
		for range 2 { // two lanes' workers per node
			wg.Add(1)
			go func() {
				defer wg.Done()
				skew := time.Duration(i) * 3 * time.Millisecond
				for j := range each {
					r, err := l.Reserve(context.Background(), "gmail", iv, epoch.Add(skew+time.Duration(j)*time.Millisecond))
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					starts = append(starts, r.Start)
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if len(starts) != 4*each {
		t.Fatalf("%d reservations, want %d", len(starts), 4*each)
	}
	slices.SortFunc(starts, func(a, b time.Time) int { return a.Compare(b) })
	for i := 1; i < len(starts); i++ {
		if gap := starts[i].Sub(starts[i-1]); gap < iv {
			t.Fatalf("starts %d and %d are %v apart, want at least %v", i-1, i, gap, iv)
		}
	}
}

// The connection limit is one between nodes; a node releases only its
// own slots.
func TestTwoNodesShareSlots(t *testing.T) {
	ctx := context.Background()
	addr := testredis.New(t).Addr
	a, b := node(t, client(t, addr), Options{}), node(t, client(t, addr), Options{})
	for i, l := range []*Limiter{a, a, b} {
		if ok, err := l.Acquire(ctx, "k", 3); !ok || err != nil {
			t.Fatalf("slot %d: %v %v", i, ok, err)
		}
	}
	for _, l := range []*Limiter{a, b} {
		if ok, _ := l.Acquire(ctx, "k", 3); ok {
			t.Fatal("a fourth slot under a limit of 3 across two nodes")
		}
		if n, _ := l.Held(ctx, "k"); n != 3 {
			t.Fatalf("held %d, want 3", n)
		}
	}
	b.Release(ctx, "k")
	b.Release(ctx, "k") // b holds none now: a's stay
	if n, _ := a.Held(ctx, "k"); n != 2 {
		t.Fatalf("held %d after b released more than its own, want a's 2", n)
	}
	if ok, _ := b.Acquire(ctx, "k", 3); !ok {
		t.Fatal("b's released slot did not come back")
	}
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := b.Held(ctx, "k"); n != 1 {
		t.Fatalf("held %d after a closed, want b's 1", n)
	}
}

// A node that stops refreshing (it died) loses its slots one lease after
// its last refresh; a live node's refresh keeps them.
func TestDeadNodesLeasesExpire(t *testing.T) {
	ctx := context.Background()
	addr := testredis.New(t).Addr
	clk := &fakeNow{t: epoch}
	lease := 30 * time.Second
	a := node(t, client(t, addr), Options{Lease: lease, Now: clk.now})
	b := node(t, client(t, addr), Options{Lease: lease, Now: clk.now})
	for range 2 {
		if ok, err := a.Acquire(ctx, "k", 2); !ok || err != nil {
			t.Fatalf("a: %v %v", ok, err)
		}
	}
	clk.set(epoch.Add(lease - time.Millisecond))
	if ok, _ := b.Acquire(ctx, "k", 2); ok {
		t.Fatal("b took a slot of a's before a's lease ended")
	}
	clk.set(epoch.Add(20 * time.Second))
	if err := a.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	clk.set(epoch.Add(lease + time.Second))
	if ok, _ := b.Acquire(ctx, "k", 2); ok {
		t.Fatal("b took a slot of a's that a refreshed")
	}
	if n, _ := b.Held(ctx, "k"); n != 2 {
		t.Fatalf("held %d with a's two refreshed leases", n)
	}
	// a dies: no more refreshes. Its leases end 30s after the last one.
	clk.set(epoch.Add(20*time.Second + lease))
	if n, _ := b.Held(ctx, "k"); n != 0 {
		t.Fatalf("held %d once a's leases ended", n)
	}
	for range 2 {
		if ok, err := b.Acquire(ctx, "k", 2); !ok || err != nil {
			t.Fatalf("b could not take a dead node's slot: %v %v", ok, err)
		}
	}
	if ok, _ := b.Acquire(ctx, "k", 2); ok {
		t.Fatal("a third slot under a limit of 2")
	}
}

// A lease that expired while its holder still had the connection comes
// back at the holder's next refresh: the count does not forget a
// connection that exists.
func TestRefreshRestoresAnExpiredLease(t *testing.T) {
	ctx := context.Background()
	clk := &fakeNow{t: epoch}
	addr := testredis.New(t).Addr
	l := node(t, client(t, addr), Options{Lease: time.Second, Now: clk.now})
	other := node(t, client(t, addr), Options{Lease: time.Second, Now: clk.now})
	if ok, _ := l.Acquire(ctx, "k", 1); !ok {
		t.Fatal("no slot")
	}
	clk.set(epoch.Add(time.Hour))
	// Another node takes the slot, dropping the expired lease.
	if ok, _ := other.Acquire(ctx, "k", 1); !ok {
		t.Fatal("an expired lease still counted")
	}
	if err := l.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := l.Held(ctx, "k"); n != 2 {
		t.Fatalf("held %d after the refresh, want 2: the other node's and the restored one", n)
	}
	other.Release(ctx, "k")
	l.Release(ctx, "k")
	if err := l.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := l.Held(ctx, "k"); n != 0 {
		t.Fatalf("a released lease came back at the refresh: held %d", n)
	}
}

// The background refresh runs on its own: a short real lease stays held
// across several lease times.
func TestBackgroundRefresh(t *testing.T) {
	ctx := context.Background()
	rdb := client(t, testredis.New(t).Addr)
	lease := 300 * time.Millisecond
	l := New(rdb, Options{Lease: lease, Refresh: 20 * time.Millisecond})
	defer l.Close(ctx)
	if ok, _ := l.Acquire(ctx, "k", 1); !ok {
		t.Fatal("no slot")
	}
	first, err := rdb.ZRange(ctx, "certgate:lim:k:conn", 0, -1).Result()
	if err != nil || len(first) != 1 {
		t.Fatalf("lease set: %v %v", first, err)
	}
	score0, _ := rdb.ZScore(ctx, "certgate:lim:k:conn", first[0]).Result()
	// Poll until a refresh moved the expiry on, bounded.
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err := rdb.ZScore(ctx, "certgate:lim:k:conn", first[0]).Result()
		if err != nil {
			t.Fatal(err)
		}
		if s > score0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the background refresh never extended the lease")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := rdb.ZCard(ctx, "certgate:lim:k:conn").Result(); n != 0 {
		t.Fatalf("%d leases after Close", n)
	}
}

// Keys are namespaced and bounded, and expire when idle.
func TestKeys(t *testing.T) {
	ctx := context.Background()
	rdb := client(t, testredis.New(t).Addr)
	l := node(t, rdb, Options{})
	long := strings.Repeat("x", 1000)
	if _, err := l.Reserve(ctx, long, time.Second, time.Now()); err != nil {
		t.Fatal(err)
	}
	if ok, err := l.Acquire(ctx, long, 1); !ok || err != nil {
		t.Fatal(ok, err)
	}
	keys, err := rdb.Keys(ctx, "*").Result() // a test's private server: a scan is fine here
	if err != nil || len(keys) != 2 {
		t.Fatalf("keys %v %v", keys, err)
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, DefaultPrefix) || len(k) > len(DefaultPrefix)+MaxKey+8 {
			t.Errorf("key %q: not under the prefix, or unbounded", k)
		}
		if ttl, _ := rdb.PTTL(ctx, k).Result(); ttl <= 0 || ttl > TATGrace+2*DefaultLease {
			t.Errorf("key %q expires in %v", k, ttl)
		}
	}
	// A TAT key lives until its TAT is past by TATGrace.
	if _, err := l.Reserve(ctx, "slow", time.Hour, time.Now()); err != nil {
		t.Fatal(err)
	}
	if ttl, _ := rdb.PTTL(ctx, DefaultPrefix+"slow:tat").Result(); ttl < time.Hour || ttl > time.Hour+TATGrace+time.Second {
		t.Errorf("TAT key an hour ahead expires in %v", ttl)
	}
}

// A server that lost its scripts (restart, SCRIPT FLUSH) gets them again.
func TestScriptsReloaded(t *testing.T) {
	ctx := context.Background()
	rdb := client(t, testredis.New(t).Addr)
	l := node(t, rdb, Options{})
	r1, err := l.Reserve(ctx, "k", time.Second, epoch)
	if err != nil {
		t.Fatal(err)
	}
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	r2, err := l.Reserve(ctx, "k", time.Second, epoch)
	if err != nil || !r2.Start.Equal(r1.Next) {
		t.Fatalf("after SCRIPT FLUSH: %v, %v", r2.Start.Sub(epoch), err)
	}
}

// An unreachable Redis is an error, within the call's timeout.
func TestUnreachable(t *testing.T) {
	s := testredis.New(t)
	addr := s.Addr
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	l := node(t, redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1}), Options{Timeout: 500 * time.Millisecond})
	ctx := context.Background()
	if _, err := l.Reserve(ctx, "k", time.Second, epoch); err == nil {
		t.Error("Reserve without Redis did not fail")
	}
	if ok, err := l.Acquire(ctx, "k", 1); ok || err == nil {
		t.Errorf("Acquire without Redis: %v %v", ok, err)
	}
	if _, err := l.Held(ctx, "k"); err == nil {
		t.Error("Held without Redis did not fail")
	}
}

// BenchmarkReserve: reservations through one Redis from one process.
func BenchmarkReserve(b *testing.B) {
	rdb := client(b, testredis.New(b).Addr)
	l := node(b, rdb, Options{})
	now := time.Now()
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			if _, err := l.Reserve(context.Background(), "serial", time.Microsecond, now); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := l.Reserve(context.Background(), "parallel", time.Microsecond, now); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}
