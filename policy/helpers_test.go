package policy

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/certgate/certgate/clock"
	"github.com/certgate/certgate/config"
)

// autoClock is a virtual clock for the rate tests. sleepUntil does not
// block: it moves the clock forward to the wake-up time (never back), as
// if the sleeper had slept that long. Concurrent sleepers therefore
// advance it to the latest slot any of them reached, which is all the
// limiter needs, and a test of five minutes of traffic runs at once.
// Tests of sleeping itself use clock.Fake through Options.
type autoClock struct {
	mu sync.Mutex
	t  time.Time
}

var epoch = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newAutoClock() *autoClock { return &autoClock{t: epoch} }

func (c *autoClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *autoClock) sleepUntil(ctx context.Context, t time.Time) error {
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

func (c *autoClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// newTestPolicy builds a policy of the configured providers (merged into
// the built-ins) on an auto-advancing clock.
func newTestPolicy(t *testing.T, cfg []config.Provider, retry config.Retry) (*Policy, *autoClock) {
	t.Helper()
	p := New(config.ResolveProviders(cfg), retry, Options{})
	clk := newAutoClock()
	p.clk = clk
	return p, clk
}

// testLane is a lane of the given rate on an auto-advancing clock.
func testLane(perSecond float64) (*Lane, *autoClock) {
	clk := newAutoClock()
	l := newLane("test", "test", limits{rate: perSecond, connLimit: 1, maxDels: 1, rules: config.BuiltinRules("test")}, clk, NewLocalLimiter())
	return l, clk
}

// waitTimers waits until n timers of clk are pending: the code under test
// sleeps. A bound of real time turns a sleeper that never comes into a
// failure instead of a hung test.
func waitTimers(t *testing.T, clk *clock.Fake, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := clk.WaitTimers(ctx, n); err != nil {
		t.Fatalf("waiting for %d sleepers: %v", n, err)
	}
}

// tatOf is the theoretical arrival time the lane's LocalLimiter keeps.
func tatOf(t *testing.T, l *Lane) time.Time {
	t.Helper()
	lim, ok := l.lim.(*LocalLimiter)
	if !ok {
		t.Fatalf("lane %s has a %T, not a *LocalLimiter", l.key, l.lim)
	}
	lim.mu.Lock()
	defer lim.mu.Unlock()
	return lim.key(l.key).tat
}

func perMin(n int) config.Rate { return config.Rate{Count: n, Period: time.Minute} }

func approx(a, b float64) bool {
	d := a - b
	if d < 0 {
		d = -d
	}
	return d <= 1e-9*max(1, b)
}
