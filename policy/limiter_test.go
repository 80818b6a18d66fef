package policy

import (
	"context"
	"testing"
	"time"
)

func TestLocalLimiterReserve(t *testing.T) {
	ctx := context.Background()
	l := NewLocalLimiter()
	iv := 100 * time.Millisecond
	r1, _ := l.Reserve(ctx, "a", iv, epoch)
	r2, _ := l.Reserve(ctx, "a", iv, epoch)
	r3, _ := l.Reserve(ctx, "a", iv, epoch.Add(150*time.Millisecond))
	for i, tc := range []struct {
		r           Reservation
		start, next time.Duration
	}{{r1, 0, 100}, {r2, 100, 200}, {r3, 200, 300}} {
		if !tc.r.Start.Equal(epoch.Add(tc.start*time.Millisecond)) || !tc.r.Next.Equal(epoch.Add(tc.next*time.Millisecond)) {
			t.Errorf("reservation %d: %v..%v, want %dms..%dms", i+1, tc.r.Start.Sub(epoch), tc.r.Next.Sub(epoch), tc.start, tc.next)
		}
	}
	// Keys are independent; idle time builds no burst.
	if r, _ := l.Reserve(ctx, "b", iv, epoch); !r.Start.Equal(epoch) {
		t.Errorf("key b waits for key a: %v", r.Start.Sub(epoch))
	}
	if r, _ := l.Reserve(ctx, "a", iv, epoch.Add(time.Hour)); !r.Start.Equal(epoch.Add(time.Hour)) {
		t.Errorf("after an hour idle: %v", r.Start.Sub(epoch))
	}
}

func TestLocalLimiterCancel(t *testing.T) {
	ctx := context.Background()
	l := NewLocalLimiter()
	iv := time.Second
	l.Reserve(ctx, "a", iv, epoch)
	r2, _ := l.Reserve(ctx, "a", iv, epoch)
	r3, _ := l.Reserve(ctx, "a", iv, epoch)
	l.Cancel(ctx, "a", r2) // a later reservation relies on it: stays used
	if r, _ := l.Reserve(ctx, "a", iv, epoch); !r.Start.Equal(epoch.Add(3 * time.Second)) {
		t.Fatalf("cancelling a reservation that is not the last freed it: next at %v", r.Start.Sub(epoch))
	}
	l = NewLocalLimiter()
	l.Reserve(ctx, "a", iv, epoch)
	r2, _ = l.Reserve(ctx, "a", iv, epoch)
	l.Cancel(ctx, "a", r2) // the last: given back
	if r, _ := l.Reserve(ctx, "a", iv, epoch); !r.Start.Equal(r2.Start) {
		t.Fatalf("the last reservation was not given back: next at %v", r.Start.Sub(epoch))
	}
	_ = r3
}

func TestLocalLimiterSlots(t *testing.T) {
	ctx := context.Background()
	l := NewLocalLimiter()
	for i := range 2 {
		if ok, err := l.Acquire(ctx, "a", 2); !ok || err != nil {
			t.Fatalf("slot %d: %v %v", i, ok, err)
		}
	}
	if ok, _ := l.Acquire(ctx, "a", 2); ok {
		t.Fatal("a third slot under a limit of 2")
	}
	if ok, _ := l.Acquire(ctx, "a", 3); !ok {
		t.Fatal("a third slot under a limit of 3")
	}
	if ok, _ := l.Acquire(ctx, "b", 1); !ok {
		t.Fatal("key b counts key a's slots")
	}
	if n, _ := l.Held(ctx, "a"); n != 3 {
		t.Fatalf("held %d", n)
	}
	for range 5 {
		l.Release(ctx, "a")
	}
	if n, _ := l.Held(ctx, "a"); n != 0 {
		t.Fatalf("held %d after releasing more than taken", n)
	}
	if ok, _ := l.Acquire(ctx, "a", 1); !ok {
		t.Fatal("over-releasing left the count unusable")
	}
	if ok, _ := l.Acquire(ctx, "c", 0); ok {
		t.Fatal("a slot under a limit of 0")
	}
}
