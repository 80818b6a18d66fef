package policy

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certgate/certgate/clock"
	"github.com/certgate/certgate/config"
)

// connPolicy is a policy with one provider, "partner", of the given
// connection limit, on a fake clock.
func connPolicy(t *testing.T, limit int, lim Limiter) (*Lane, *clock.Fake) {
	t.Helper()
	clk := clock.NewFake(epoch)
	p := New(config.ResolveProviders([]config.Provider{{Name: "partner", Domains: []string{"partner.example"},
		ConnectionLimit: limit, MaxDeliveriesPerConnection: 3}}), config.DefaultRetry(), Options{Clock: clk, Limiter: lim})
	return p.Match("partner.example", nil), clk
}

// acquire takes slots until the lane refuses one and returns how many it got.
func acquire(l *Lane) int {
	n := 0
	for l.AcquireConn() {
		n++
	}
	return n
}

func TestAcquireConnUpToTheLimit(t *testing.T) {
	l, _ := connPolicy(t, 3, nil)
	if n := acquire(l); n != 3 {
		t.Fatalf("took %d slots, want the connection limit of 3", n)
	}
	l.ReleaseConn()
	if !l.AcquireConn() {
		t.Fatal("a released slot cannot be taken again")
	}
	if l.AcquireConn() {
		t.Fatal("a fourth slot")
	}
}

// TestConnRefusedCapsForAMinute follows the queue: four workers hold
// slots, one's dial is refused while the others' connections work, it
// reports that and gives its slot back.
func TestConnRefusedCapsForAMinute(t *testing.T) {
	l, clk := connPolicy(t, 5, nil)
	for range 4 {
		if !l.AcquireConn() {
			t.Fatal("slot refused below the limit")
		}
	}
	l.ConnRefused()
	l.ReleaseConn()
	if l.AcquireConn() {
		t.Fatal("a slot back up to where the receiver refused")
	}
	clk.Advance(concurrencyCapTime - time.Second)
	if l.AcquireConn() {
		t.Fatal("the cap ended early")
	}
	// Below the cap, slots come back as workers leave.
	l.ReleaseConn()
	if !l.AcquireConn() || l.AcquireConn() {
		t.Fatal("the cap is not held at three")
	}
	clk.Advance(time.Second)
	if n := acquire(l); n != 2 {
		t.Fatalf("after the cap %d more slots, want 2 up to the limit of 5", n)
	}
}

// A second refusal replaces the cap, and its minute starts again.
func TestConnRefusedAgain(t *testing.T) {
	l, clk := connPolicy(t, 5, nil)
	for range 4 {
		l.AcquireConn()
	}
	l.ConnRefused() // 4 held: cap at 3
	l.ReleaseConn()
	clk.Advance(30 * time.Second)
	l.ConnRefused() // 3 held: cap at 2
	l.ReleaseConn()
	if l.AcquireConn() {
		t.Fatal("a slot over the second cap")
	}
	clk.Advance(40 * time.Second) // the first cap's minute is over
	if l.AcquireConn() {
		t.Fatal("the second cap ended with the first")
	}
	clk.Advance(20 * time.Second)
	if n := acquire(l); n != 3 {
		t.Fatalf("after the second cap %d more slots, want 3 up to the limit of 5", n)
	}

	// With only the refused worker's slot held, no new connection at all.
	l, clk = connPolicy(t, 5, nil)
	l.AcquireConn()
	l.ConnRefused()
	l.ReleaseConn()
	if l.AcquireConn() {
		t.Fatal("a slot under a cap of zero")
	}
	clk.Advance(concurrencyCapTime)
	if !l.AcquireConn() {
		t.Fatal("no slot after the cap")
	}
}

// TestAcquireConnConcurrent: the limit holds whatever the interleaving;
// run with -race.
func TestAcquireConnConcurrent(t *testing.T) {
	const limit = 4
	l, _ := connPolicy(t, limit, nil)
	var inUse, most atomic.Int32
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for range 300 {
				if !l.AcquireConn() {
					runtime.Gosched()
					continue
				}
				n := inUse.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				runtime.Gosched()
				inUse.Add(-1)
				l.ReleaseConn()
			}
		})
	}
	wg.Wait()
	if m := most.Load(); m > limit || m < 1 {
		t.Fatalf("%d slots held at once, limit %d", m, limit)
	}
	if held, _ := l.lim.Held(context.Background(), l.Key()); held != 0 {
		t.Fatalf("%d slots held after every worker left", held)
	}
}

func TestConnectionSpent(t *testing.T) {
	l, _ := connPolicy(t, 1, nil)
	for sent, want := range map[int]bool{0: false, 2: false, 3: true, 4: true} {
		if got := l.ConnectionSpent(sent); got != want {
			t.Errorf("ConnectionSpent(%d) = %v with 3 deliveries per connection", sent, got)
		}
	}
	p, _ := newTestPolicy(t, nil, config.DefaultRetry())
	if g := p.Match("gmail.com", nil); g.ConnectionSpent(99) || !g.ConnectionSpent(100) {
		t.Error("gmail's connections are spent at 100 deliveries")
	}
}

// Two processes' lanes of one key, sharing a Limiter, share its limits.
func TestLanesShareTheLimiter(t *testing.T) {
	shared := NewLocalLimiter()
	a, _ := connPolicy(t, 3, shared)
	b, clkB := connPolicy(t, 3, shared)
	if n := acquire(a) + acquire(b); n != 3 {
		t.Fatalf("two nodes took %d slots, want 3 between them", n)
	}
	a.SetRate(1)
	b.SetRate(1)
	if w, _ := a.Wait(context.Background()); w != 0 {
		t.Fatalf("first wait %v", w)
	}
	done := make(chan time.Duration)
	go func() {
		w, _ := b.Wait(context.Background())
		done <- w
	}()
	waitTimers(t, clkB, 1)
	if next, _ := clkB.Next(); !next.Equal(epoch.Add(time.Second)) {
		t.Fatalf("the second node sleeps until %v, want a second after the first node's message", next.Sub(epoch))
	}
	clkB.Advance(time.Second)
	if w := <-done; w != time.Second {
		t.Fatalf("the second node's message waited %v, want a second after the first node's", w)
	}
}

// failingLimiter is a Limiter that cannot be reached.
type failingLimiter struct{}

var errUnreachable = errors.New("limiter unreachable")

func (failingLimiter) Reserve(context.Context, string, time.Duration, time.Time) (Reservation, error) {
	return Reservation{}, errUnreachable
}
func (failingLimiter) Cancel(context.Context, string, Reservation) error { return errUnreachable }
func (failingLimiter) Acquire(context.Context, string, int) (bool, error) {
	return true, errUnreachable
}
func (failingLimiter) Release(context.Context, string) error     { return errUnreachable }
func (failingLimiter) Held(context.Context, string) (int, error) { return 0, errUnreachable }

// A limiter that fails grants nothing: mail waits rather than overrun a
// limit nobody can count.
func TestLimiterFailure(t *testing.T) {
	l, _ := connPolicy(t, 3, failingLimiter{})
	if l.AcquireConn() {
		t.Error("a slot from a failing limiter")
	}
	l.ReleaseConn() // no panic
	l.ConnRefused() // no cap from a count it could not read
	if l.capUntil != (time.Time{}) {
		t.Error("capped on an unknown count")
	}
	l.SetRate(10)
	if _, err := l.Wait(context.Background()); !errors.Is(err, errUnreachable) {
		t.Errorf("Wait: %v", err)
	}
}
