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
