package policy

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/certgate/certgate/config"
)

// fakeClock is a virtual clock. sleepUntil does not block: it moves the
// clock forward to the wake-up time (never back), as if the sleeper had
// slept that long. Concurrent sleepers therefore advance it to the latest
// slot any of them reached, which is all the limiter needs.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

var epoch = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newFakeClock() *fakeClock { return &fakeClock{t: epoch} }

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) sleepUntil(ctx context.Context, t time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.After(c.t) {
		c.t = t
	}
	return nil
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// newTestPolicy builds a policy on a fake clock.
func newTestPolicy(t *testing.T, cfg []config.Provider, retry config.Retry) (*Policy, *fakeClock) {
	t.Helper()
	p, err := New(cfg, retry)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	clk := newFakeClock()
	p.clk = clk
	return p, clk
}

// testLane is a lane of the given rate on a fake clock.
func testLane(perSecond float64) (*Lane, *fakeClock) {
	clk := newFakeClock()
	l := newLane("test", "test", Provider{Rate: perSecond, ConnectionLimit: 1, MaxDeliveriesPerConnection: 1}, clk)
	return l, clk
}

func perMin(n int) config.Rate { return config.Rate{Count: n, Period: time.Minute} }

func approx(a, b float64) bool {
	d := a - b
	if d < 0 {
		d = -d
	}
	return d <= 1e-9*max(1, b)
}
