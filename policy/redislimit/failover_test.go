package redislimit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certgate/certgate/internal/testredis"
	"github.com/certgate/certgate/policy"
	"github.com/certgate/certgate/policy/limitertest"
)

// counting is a Limiter that counts the calls that reach it.
type counting struct {
	policy.Limiter
	calls atomic.Int64
}

func (c *counting) Reserve(ctx context.Context, key string, iv time.Duration, now time.Time) (policy.Reservation, error) {
	c.calls.Add(1)
	return c.Limiter.Reserve(ctx, key, iv, now)
}

func (c *counting) Cancel(ctx context.Context, key string, r policy.Reservation) error {
	c.calls.Add(1)
	return c.Limiter.Cancel(ctx, key, r)
}

func (c *counting) Acquire(ctx context.Context, key string, limit int) (bool, error) {
	c.calls.Add(1)
	return c.Limiter.Acquire(ctx, key, limit)
}

func (c *counting) Release(ctx context.Context, key string) error {
	c.calls.Add(1)
	return c.Limiter.Release(ctx, key)
}

func (c *counting) Held(ctx context.Context, key string) (int, error) {
	c.calls.Add(1)
	return c.Limiter.Held(ctx, key)
}

// rig is one node's Failover over a Redis Limiter on a fake clock, with
// what it logged and told OnChange.
type rig struct {
	f       *Failover
	redis   *Limiter
	primary *counting
	clk     *fakeNow
	log     *bytes.Buffer // written only in transitions, which the Failover serializes
	mu      sync.Mutex
	changes []bool
}

func (r *rig) changed() []bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]bool(nil), r.changes...)
}

// newRig makes a node on the Redis at addr with live nodes; its client
// does not retry, so an outage shows at the first call.
func newRig(t *testing.T, addr string, live int) *rig {
	r := &rig{clk: &fakeNow{t: epoch}, log: &bytes.Buffer{}}
	r.redis = node(t, redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1}), Options{Timeout: time.Second, Now: r.clk.now})
	r.primary = &counting{Limiter: r.redis}
	r.f = NewFailover(r.primary, FailoverOptions{
		LiveNodes: func() int { return live },
		Now:       r.clk.now,
		Logger:    slog.New(slog.NewTextHandler(r.log, nil)),
		OnChange: func(d bool) {
			r.mu.Lock()
			r.changes = append(r.changes, d)
			r.mu.Unlock()
		},
	})
	return r
}

// acquired counts the slots Acquire grants in a row, up to 10.
func acquired(t *testing.T, l policy.Limiter, key string, limit int) int {
	t.Helper()
	for n := range 10 {
		ok, err := l.Acquire(context.Background(), key, limit)
		if err != nil {
			t.Fatalf("Acquire(%s, %d): %v", key, limit, err)
		}
		if !ok {
			return n
		}
	}
	return 10
}

// With Redis up, a Failover keeps the Limiter contract, from Redis: its
// fallback (three live nodes) would space reservations three times wider
// and fail the contract.
func TestFailoverConformance(t *testing.T) {
	rdb := client(t, testredis.New(t).Addr)
	var n atomic.Int64
	limitertest.Run(t, func(t *testing.T) policy.Limiter {
		f := NewFailover(node(t, rdb, Options{Prefix: fmt.Sprintf("certgate:fo%d:", n.Add(1))}),
			FailoverOptions{LiveNodes: func() int { return 3 }})
		t.Cleanup(func() {
			if f.Degraded() || f.Fallbacks() != 0 {
				t.Errorf("fell back with Redis up: degraded %v, %d fallbacks", f.Degraded(), f.Fallbacks())
			}
		})
		return f
	})
}

// Two healthy Failovers on one Redis share one rate and one set of slots.
func TestFailoverHealthyShares(t *testing.T) {
	addr := testredis.New(t).Addr
	a, b := newRig(t, addr, 2), newRig(t, addr, 2)
	iv := 100 * time.Millisecond
	for i, l := range []policy.Limiter{a.f, b.f, a.f, b.f} {
		if r := limitertest.Reserve(t, l, "k", iv, epoch); !r.Start.Equal(epoch.Add(time.Duration(i) * iv)) {
			t.Fatalf("reservation %d starts at %v, want %v", i, r.Start.Sub(epoch), time.Duration(i)*iv)
		}
	}
	if n := acquired(t, a.f, "c", 3) + acquired(t, b.f, "c", 3); n != 3 {
		t.Fatalf("%d slots between two nodes under a limit of 3", n)
	}
	if a.f.Degraded() || b.f.Degraded() || a.f.Fallbacks()+b.f.Fallbacks() != 0 {
		t.Fatal("fell back with Redis up")
	}
}

// Redis stops mid-run: the next call falls back to this node's share,
// says so once in the log and to OnChange, and mail keeps its share of
// the rate and slots.
func TestFailoverOutage(t *testing.T) {
	s := testredis.New(t)
	r := newRig(t, s.Addr, 3)
	limitertest.Reserve(t, r.f, "k", 100*time.Millisecond, epoch)
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	now := epoch.Add(time.Minute)
	iv := 100 * time.Millisecond // 10/s
	for i := range 4 {
		got := limitertest.Reserve(t, r.f, "k2", iv, now)
		if want := now.Add(time.Duration(i) * 300 * time.Millisecond); !got.Start.Equal(want) || !got.Next.Equal(want.Add(300*time.Millisecond)) {
			t.Fatalf("reservation %d in fallback: %v..%v, want %v..+300ms", i, got.Start.Sub(now), got.Next.Sub(now), want.Sub(now))
		}
	}
	if !r.f.Degraded() || r.f.Fallbacks() != 1 {
		t.Fatalf("degraded %v, %d fallbacks; want true, 1", r.f.Degraded(), r.f.Fallbacks())
	}
	if n := acquired(t, r.f, "c6", 6); n != 2 {
		t.Fatalf("%d local slots under a limit of 6 on 3 nodes, want 2", n)
	}
	if n := acquired(t, r.f, "c1", 1); n != 1 {
		t.Fatalf("%d local slots under a limit of 1 on 3 nodes, want 1 (mail never stops)", n)
	}
	if n := acquired(t, r.f, "c0", 0); n != 0 {
		t.Fatalf("%d local slots under a limit of 0", n)
	}
	ctx := context.Background()
	if n, err := r.f.Held(ctx, "c6"); n != 2 || err != nil {
		t.Fatalf("Held in fallback: %d %v, want 2", n, err)
	}
	if err := r.f.Release(ctx, "c6"); err != nil {
		t.Fatal(err)
	}
	if n := acquired(t, r.f, "c6", 6); n != 1 {
		t.Fatalf("a released local slot: %d granted again, want 1", n)
	}
	if got := r.changed(); len(got) != 1 || !got[0] {
		t.Fatalf("OnChange heard %v, want [true]", got)
	}
	log := r.log.String()
	if strings.Count(log, "level=WARN") != 1 || !strings.Contains(log, "live_nodes=3") || !strings.Contains(log, "share=1/3") {
		t.Fatalf("want one warning with the share, logged:\n%s", log)
	}
}

// A slot Redis granted before the outage is released without error in
// it; the Redis Limiter forgets the lease (else its refresh would bring
// it back once Redis returns), and the local count is not touched.
func TestFailoverReleasesRedisSlotInOutage(t *testing.T) {
	ctx := context.Background()
	s := testredis.New(t)
	r := newRig(t, s.Addr, 3)
	if n := acquired(t, r.f, "c", 6); n != 6 {
		t.Fatalf("%d slots from Redis under a limit of 6", n)
	}
	for range 5 {
		if err := r.f.Release(ctx, "c"); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	// One Redis slot still held: the node's share of 2 leaves one local.
	if n := acquired(t, r.f, "c", 6); n != 1 {
		t.Fatalf("%d local slots beside a Redis one, share 2: want 1", n)
	}
	calls := r.primary.calls.Load()
	if err := r.f.Release(ctx, "c"); err != nil { // the local one
		t.Fatal(err)
	}
	if r.primary.calls.Load() != calls {
		t.Fatal("the first release went to Redis: local slots, which Redis never counted, go first")
	}
	if err := r.f.Release(ctx, "c"); err != nil { // Redis's, which Redis cannot hear
		t.Fatalf("releasing Redis's slot in the outage: %v", err)
	}
	if n, err := r.f.Held(ctx, "c"); n != 0 || err != nil {
		t.Fatalf("held %d %v after releasing both", n, err)
	}
	if n := acquired(t, r.f, "c", 6); n != 2 {
		t.Fatalf("%d local slots once Redis's was released, want the whole share of 2", n)
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := r.redis.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := r.redis.Held(ctx, "c"); n != 0 || err != nil {
		t.Fatalf("Redis holds %d leases (%v) after the refresh: a released slot came back", n, err)
	}
}

// Redis comes back on the same address: once Retry has passed, the next
// call uses Redis again, and its first reservation starts after this
// node's pending local ones.
func TestFailoverRecovery(t *testing.T) {
	s := testredis.New(t)
	r := newRig(t, s.Addr, 3)
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	iv := 100 * time.Millisecond
	limitertest.Reserve(t, r.f, "k", iv, epoch)
	last := limitertest.Reserve(t, r.f, "k", iv, epoch)
	if !r.f.Degraded() {
		t.Fatal("not degraded without Redis")
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	r.clk.set(epoch.Add(DefaultRetry - time.Millisecond))
	calls := r.primary.calls.Load()
	if got := limitertest.Reserve(t, r.f, "k", iv, epoch); !got.Start.Equal(last.Next) || r.primary.calls.Load() != calls || !r.f.Degraded() {
		t.Fatalf("before Retry: start %v, %d calls to Redis; want local at %v, none", got.Start.Sub(epoch), r.primary.calls.Load()-calls, last.Next.Sub(epoch))
	}
	last = limitertest.Reserve(t, r.f, "k", iv, epoch)
	r.clk.set(epoch.Add(DefaultRetry))
	got := limitertest.Reserve(t, r.f, "k", iv, epoch)
	if r.f.Degraded() || r.primary.calls.Load() != calls+1 {
		t.Fatalf("after Retry with Redis back: degraded %v, %d calls to Redis", r.f.Degraded(), r.primary.calls.Load()-calls)
	}
	if !got.Start.Equal(last.Next) || !got.Next.Equal(last.Next.Add(iv)) {
		t.Fatalf("first Redis reservation %v..%v, want %v..+100ms: after the local ones, at the cluster's rate",
			got.Start.Sub(epoch), got.Next.Sub(epoch), last.Next.Sub(epoch))
	}
	if n, err := client(t, s.Addr).Exists(context.Background(), DefaultPrefix+"k:tat").Result(); n != 1 || err != nil {
		t.Fatalf("the reservation is not in Redis: %d %v", n, err)
	}
	if c := r.changed(); len(c) != 2 || !c[0] || c[1] {
		t.Fatalf("OnChange heard %v, want [true false]", c)
	}
	if !strings.Contains(r.log.String(), "level=INFO") {
		t.Fatalf("no recovery in the log:\n%s", r.log.String())
	}
	if r.f.Fallbacks() != 1 {
		t.Fatalf("%d fallbacks, want 1", r.f.Fallbacks())
	}
}

// While Redis is down, calls within one Retry make no attempt on it
// beyond the one that found it down; once Retry has passed, concurrent
// calls make one probe between them.
func TestFailoverProbeBounded(t *testing.T) {
	s := testredis.New(t)
	r := newRig(t, s.Addr, 2)
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	limitertest.Reserve(t, r.f, "k", time.Millisecond, epoch)
	if n := r.primary.calls.Load(); n != 1 {
		t.Fatalf("%d calls to find Redis down, want 1", n)
	}
	for i := range 100 {
		r.clk.set(epoch.Add(time.Duration(i) * (DefaultRetry - time.Millisecond) / 100))
		limitertest.Reserve(t, r.f, "k", time.Millisecond, epoch)
		r.f.Acquire(ctx, "c", 4)
		r.f.Held(ctx, "c")
	}
	if n := r.primary.calls.Load(); n != 1 {
		t.Fatalf("%d calls to Redis within one Retry, want 1", n)
	}
	r.clk.set(epoch.Add(DefaultRetry))
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := r.f.Reserve(ctx, "k", time.Millisecond, epoch); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := r.primary.calls.Load(); n != 2 {
		t.Fatalf("%d calls to Redis once Retry passed, want 2: one probe", n)
	}
	if !r.f.Degraded() || r.f.Fallbacks() != 1 {
		t.Fatalf("a failed probe: degraded %v, %d fallbacks; want true, 1", r.f.Degraded(), r.f.Fallbacks())
	}
}

// The end of the caller's own context is its error, not an outage.
func TestFailoverCallerCancel(t *testing.T) {
	r := newRig(t, testredis.New(t).Addr, 3)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.f.Reserve(ctx, "k", time.Second, epoch); !errors.Is(err, context.Canceled) {
		t.Fatalf("Reserve with a cancelled context: %v", err)
	}
	if r.f.Degraded() || r.f.Fallbacks() != 0 {
		t.Fatal("a cancelled caller was taken for an outage")
	}
}

// down is a primary that is never reachable.
type down struct{}

var errDown = &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}

func (down) Reserve(context.Context, string, time.Duration, time.Time) (policy.Reservation, error) {
	return policy.Reservation{}, errDown
}
func (down) Cancel(context.Context, string, policy.Reservation) error { return errDown }
func (down) Acquire(context.Context, string, int) (bool, error)       { return false, errDown }
func (down) Release(context.Context, string) error                    { return errDown }
func (down) Held(context.Context, string) (int, error)                { return 0, errDown }

// The share: limit / live nodes, at least one slot, and a live count
// below one taken as one.
func TestFailoverShare(t *testing.T) {
	for _, tc := range []struct{ live, limit, slots int }{
		{3, 6, 2}, {3, 7, 2}, {3, 2, 1}, {3, 1, 1}, {0, 4, 4}, {-2, 4, 4}, {1, 5, 5}, {4, 0, 0},
	} {
		f := NewFailover(down{}, FailoverOptions{LiveNodes: func() int { return tc.live }, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if n := acquired(t, f, "k", tc.limit); n != tc.slots {
			t.Errorf("live %d, limit %d: %d slots, want %d", tc.live, tc.limit, n, tc.slots)
		}
		r1 := limitertest.Reserve(t, f, "r", time.Second, epoch)
		r2 := limitertest.Reserve(t, f, "r", time.Second, epoch)
		if want := time.Duration(max(tc.live, 1)) * time.Second; r2.Start.Sub(r1.Start) != want {
			t.Errorf("live %d: reservations %v apart, want %v", tc.live, r2.Start.Sub(r1.Start), want)
		}
	}
	if iv := shareInterval(maxShareInterval, 5); iv != maxShareInterval {
		t.Errorf("the longest interval on 5 nodes: %v", iv)
	}
}

// A local reservation is cancelled locally, and the one before it may
// then be too; a Redis one cancelled in the outage stays used.
func TestFailoverCancelLocal(t *testing.T) {
	ctx := context.Background()
	f := NewFailover(down{}, FailoverOptions{LiveNodes: func() int { return 2 }, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	r1 := limitertest.Reserve(t, f, "k", time.Second, epoch)
	r2 := limitertest.Reserve(t, f, "k", time.Second, epoch)
	for _, r := range []policy.Reservation{r2, r1} {
		if err := f.Cancel(ctx, "k", r); err != nil {
			t.Fatal(err)
		}
	}
	if got := limitertest.Reserve(t, f, "k", time.Second, epoch); !got.Start.Equal(r1.Start) {
		t.Fatalf("after cancelling both local reservations the next starts at %v, want %v", got.Start.Sub(epoch), r1.Start.Sub(epoch))
	}
	redisOne := policy.Reservation{Start: epoch.Add(time.Hour), Next: epoch.Add(time.Hour + time.Second)}
	if err := f.Cancel(ctx, "k", redisOne); err != nil {
		t.Fatalf("cancelling a Redis reservation in the outage: %v", err)
	}
}

// What counts as Redis being unreachable.
func TestUnreachableErrors(t *testing.T) {
	live := context.Background()
	gone, cancel := context.WithCancel(live)
	cancel()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		err  error
		want bool
	}{
		{"refused", live, fmt.Errorf("redislimit: reserve k: %w", errDown), true},
		{"errno", live, syscall.ECONNRESET, true},
		{"own timeout", live, fmt.Errorf("x: %w", context.DeadlineExceeded), true},
		{"eof", live, io.EOF, true},
		{"closed pool", live, redis.ErrClosed, true},
		{"pool timeout", live, redis.ErrPoolTimeout, true},
		{"loading", live, fmt.Errorf("x: %w", redisErr("LOADING Redis is loading the dataset in memory")), true},
		{"replica", live, redisErr("READONLY You can't write against a read only replica."), true},
		{"out of memory", live, redisErr("OOM command not allowed when used memory > 'maxmemory'."), true},
		{"password changed", live, redisErr("WRONGPASS invalid username-password pair or user is disabled."), true},
		{"caller cancelled", gone, fmt.Errorf("x: %w", context.Canceled), false},
		{"caller gone, network error", gone, errDown, false},
		{"script error", live, redisErr("ERR Error running script"), false},
		{"nil reply", live, redis.Nil, false},
		{"other", live, errors.New("redislimit: reserve k: 3 values from the script"), false},
	} {
		if got := unreachable(tc.ctx, tc.err); got != tc.want {
			t.Errorf("%s: unreachable %v, want %v", tc.name, got, tc.want)
		}
	}
}

type redisErr string

func (e redisErr) Error() string { return string(e) }
func (redisErr) RedisError()     {}
