// Package limitertest holds every policy.Limiter to one contract: the
// behaviours of policy.LocalLimiter, which lanes rely on, checked the same
// way against each implementation (the local one, Redis). It is for tests
// only.
package limitertest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/certgate/certgate/policy"
)

// Epoch is the clock reading the tests start from.
var Epoch = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// Run runs the contract's tests against limiters made by newLimiter, one
// fresh limiter (with no state of any earlier one) per call.
func Run(t *testing.T, newLimiter func(t *testing.T) policy.Limiter) {
	t.Run("Reserve", func(t *testing.T) { testReserve(t, newLimiter(t)) })
	t.Run("ReserveExact", func(t *testing.T) { testReserveExact(t, newLimiter(t)) })
	t.Run("Cancel", func(t *testing.T) { testCancel(t, newLimiter) })
	t.Run("Slots", func(t *testing.T) { testSlots(t, newLimiter(t)) })
	t.Run("ConcurrentReserve", func(t *testing.T) { testConcurrentReserve(t, newLimiter(t)) })
	t.Run("ConcurrentSlots", func(t *testing.T) { testConcurrentSlots(t, newLimiter(t)) })
}

// Reserve is l.Reserve for a test, which it fails on an error.
func Reserve(t *testing.T, l policy.Limiter, key string, iv time.Duration, now time.Time) policy.Reservation {
	t.Helper()
	r, err := l.Reserve(context.Background(), key, iv, now)
	if err != nil {
		t.Fatalf("Reserve(%s): %v", key, err)
	}
	return r
}

func acquire(t *testing.T, l policy.Limiter, key string, limit int) bool {
	t.Helper()
	ok, err := l.Acquire(context.Background(), key, limit)
	if err != nil {
		t.Fatalf("Acquire(%s, %d): %v", key, limit, err)
	}
	return ok
}

func held(t *testing.T, l policy.Limiter, key string) int {
	t.Helper()
	n, err := l.Held(context.Background(), key)
	if err != nil {
		t.Fatalf("Held(%s): %v", key, err)
	}
	return n
}

// Reservations start one interval apart, from now when the key is idle;
// keys are independent and idle time builds no burst.
func testReserve(t *testing.T, l policy.Limiter) {
	iv := 100 * time.Millisecond
	r1 := Reserve(t, l, "a", iv, Epoch)
	r2 := Reserve(t, l, "a", iv, Epoch)
	r3 := Reserve(t, l, "a", iv, Epoch.Add(150*time.Millisecond))
	for i, tc := range []struct {
		r           policy.Reservation
		start, next time.Duration
	}{{r1, 0, 100}, {r2, 100, 200}, {r3, 200, 300}} {
		if !tc.r.Start.Equal(Epoch.Add(tc.start*time.Millisecond)) || !tc.r.Next.Equal(Epoch.Add(tc.next*time.Millisecond)) {
			t.Errorf("reservation %d: %v..%v, want %dms..%dms", i+1, tc.r.Start.Sub(Epoch), tc.r.Next.Sub(Epoch), tc.start, tc.next)
		}
	}
	if r := Reserve(t, l, "b", iv, Epoch); !r.Start.Equal(Epoch) {
		t.Errorf("key b waits for key a: %v", r.Start.Sub(Epoch))
	}
	if r := Reserve(t, l, "a", iv, Epoch.Add(time.Hour)); !r.Start.Equal(Epoch.Add(time.Hour)) {
		t.Errorf("after an hour idle: %v", r.Start.Sub(Epoch))
	}
	// A slower rate on the same key spaces from the last slot taken.
	if r := Reserve(t, l, "a", 10*time.Second, Epoch.Add(time.Hour)); !r.Start.Equal(Epoch.Add(time.Hour+iv)) || !r.Next.Equal(r.Start.Add(10*time.Second)) {
		t.Errorf("after a change of rate: %v..%v", r.Start.Sub(Epoch), r.Next.Sub(Epoch))
	}
}

// Times keep every nanosecond: a clock reading between milliseconds, an
// interval of odd nanoseconds and the longest interval lanes use (about
// ten years) come back exactly.
func testReserveExact(t *testing.T, l policy.Limiter) {
	now := Epoch.Add(123456789 * time.Nanosecond)
	iv := 1666667 * time.Nanosecond // 600/s
	r1 := Reserve(t, l, "x", iv, now)
	r2 := Reserve(t, l, "x", iv, now)
	if !r1.Start.Equal(now) || !r1.Next.Equal(now.Add(iv)) || !r2.Start.Equal(now.Add(iv)) || !r2.Next.Equal(now.Add(2*iv)) {
		t.Errorf("odd times: %v..%v, %v..%v", r1.Start.Sub(Epoch), r1.Next.Sub(Epoch), r2.Start.Sub(Epoch), r2.Next.Sub(Epoch))
	}
	long := 10 * 365 * 24 * time.Hour
	r3 := Reserve(t, l, "y", long, now)
	r4 := Reserve(t, l, "y", long, now)
	if !r3.Next.Equal(now.Add(long)) || !r4.Start.Equal(now.Add(long)) || !r4.Next.Equal(now.Add(2*long)) {
		t.Errorf("ten-year interval: %v, %v..%v", r3.Next.Sub(now), r4.Start.Sub(now), r4.Next.Sub(now))
	}
	// Times before the previous slot (a node whose clock is behind) start
	// at the slot, not at now.
	if r := Reserve(t, l, "x", iv, Epoch); !r.Start.Equal(now.Add(2 * iv)) {
		t.Errorf("a clock behind the key: start %v", r.Start.Sub(Epoch))
	}
}

// Cancel gives a slot back only while no later reservation relies on it.
func testCancel(t *testing.T, newLimiter func(t *testing.T) policy.Limiter) {
	ctx := context.Background()
	l := newLimiter(t)
	iv := time.Second
	Reserve(t, l, "a", iv, Epoch)
	r2 := Reserve(t, l, "a", iv, Epoch)
	Reserve(t, l, "a", iv, Epoch)
	if err := l.Cancel(ctx, "a", r2); err != nil { // a later reservation relies on it: stays used
		t.Fatal(err)
	}
	if r := Reserve(t, l, "a", iv, Epoch); !r.Start.Equal(Epoch.Add(3 * time.Second)) {
		t.Fatalf("cancelling a reservation that is not the last freed it: next at %v", r.Start.Sub(Epoch))
	}
	l = newLimiter(t)
	Reserve(t, l, "a", iv, Epoch)
	r2 = Reserve(t, l, "a", iv, Epoch)
	if err := l.Cancel(ctx, "a", r2); err != nil { // the last: given back
		t.Fatal(err)
	}
	if r := Reserve(t, l, "a", iv, Epoch); !r.Start.Equal(r2.Start) {
		t.Fatalf("the last reservation was not given back: next at %v", r.Start.Sub(Epoch))
	}
	// Cancelling twice gives back one slot, and a zero reservation none.
	r := Reserve(t, l, "a", iv, Epoch)
	l.Cancel(ctx, "a", r)
	l.Cancel(ctx, "a", r)
	l.Cancel(ctx, "a", policy.Reservation{})
	if got := Reserve(t, l, "a", iv, Epoch); !got.Start.Equal(r.Start) {
		t.Fatalf("after cancelling twice: next at %v, want %v", got.Start.Sub(Epoch), r.Start.Sub(Epoch))
	}
	// A cancel on another key changes nothing here.
	r = Reserve(t, l, "b", iv, Epoch)
	l.Cancel(ctx, "c", r)
	if got := Reserve(t, l, "b", iv, Epoch); !got.Start.Equal(r.Next) {
		t.Fatalf("cancel on key c freed key b's slot: next at %v", got.Start.Sub(Epoch))
	}
}

// Connection slots: at most limit held per key, keys independent,
// releasing more than was taken leaves zero, a limit of 0 grants none.
func testSlots(t *testing.T, l policy.Limiter) {
	ctx := context.Background()
	for i := range 2 {
		if !acquire(t, l, "a", 2) {
			t.Fatalf("slot %d refused under a limit of 2", i)
		}
	}
	if acquire(t, l, "a", 2) {
		t.Fatal("a third slot under a limit of 2")
	}
	if !acquire(t, l, "a", 3) {
		t.Fatal("a third slot refused under a limit of 3")
	}
	if !acquire(t, l, "b", 1) {
		t.Fatal("key b counts key a's slots")
	}
	if n := held(t, l, "a"); n != 3 {
		t.Fatalf("held %d, want 3", n)
	}
	if err := l.Release(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if n := held(t, l, "a"); n != 2 {
		t.Fatalf("held %d after one release, want 2", n)
	}
	for range 5 {
		if err := l.Release(ctx, "a"); err != nil {
			t.Fatal(err)
		}
	}
	if n := held(t, l, "a"); n != 0 {
		t.Fatalf("held %d after releasing more than taken", n)
	}
	if n := held(t, l, "b"); n != 1 {
		t.Fatalf("key b holds %d after key a's releases, want 1", n)
	}
	if !acquire(t, l, "a", 1) {
		t.Fatal("over-releasing left the count unusable")
	}
	if acquire(t, l, "c", 0) {
		t.Fatal("a slot under a limit of 0")
	}
	if n := held(t, l, "never"); n != 0 {
		t.Fatalf("a key never used holds %d", n)
	}
}

// Reservers in many goroutines at one clock reading get distinct starts,
// exactly one interval apart.
func testConcurrentReserve(t *testing.T, l policy.Limiter) {
	const workers, each = 8, 25
	iv := 10 * time.Millisecond
	starts := make(chan time.Time, workers*each)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				r, err := l.Reserve(context.Background(), "k", iv, Epoch)
				if err != nil {
					errs <- err
					return
				}
				starts <- r.Start
			}
		}()
	}
	wg.Wait()
	close(starts)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	seen := map[time.Duration]bool{}
	for s := range starts {
		d := s.Sub(Epoch)
		if seen[d] {
			t.Fatalf("two reservations start at %v", d)
		}
		if d%iv != 0 {
			t.Fatalf("a start at %v, off the interval's grid", d)
		}
		seen[d] = true
	}
	for i := range workers * each {
		if !seen[time.Duration(i)*iv] {
			t.Fatalf("no reservation starts at %v: %s", time.Duration(i)*iv, gaps(seen, iv, workers*each))
		}
	}
}

func gaps(seen map[time.Duration]bool, iv time.Duration, n int) string {
	var missing []time.Duration
	for i := range n {
		if !seen[time.Duration(i)*iv] {
			missing = append(missing, time.Duration(i)*iv)
		}
	}
	return fmt.Sprint("missing ", missing)
}

// Acquirers in many goroutines never hold more than the limit between
// them.
func testConcurrentSlots(t *testing.T, l policy.Limiter) {
	const workers, limit = 16, 5
	var wg sync.WaitGroup
	got := make(chan bool, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := l.Acquire(context.Background(), "k", limit)
			got <- ok && err == nil
		}()
	}
	wg.Wait()
	close(got)
	n := 0
	for ok := range got {
		if ok {
			n++
		}
	}
	if n != limit {
		t.Fatalf("%d goroutines got a slot under a limit of %d", n, limit)
	}
	if h := held(t, l, "k"); h != limit {
		t.Fatalf("held %d, want %d", h, limit)
	}
}
