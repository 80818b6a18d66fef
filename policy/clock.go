package policy

import (
	"context"
	"time"

	"github.com/certgate/certgate/clock"
)

// timeSource is what lanes need of a clock. sleepUntil takes an absolute
// time because a rate slot is one: the rate tests' fake clock jumps
// straight to it, so concurrent sleepers never overshoot each other's
// slots.
type timeSource interface {
	now() time.Time
	// sleepUntil blocks until t or until ctx is done.
	sleepUntil(ctx context.Context, t time.Time) error
}

// clockSource adapts a clock.Clock.
type clockSource struct{ c clock.Clock }

func (s clockSource) now() time.Time { return s.c.Now() }

// sleepUntil measures the sleep from the clock's time when it starts, not
// from when the slot was reserved.
func (s clockSource) sleepUntil(ctx context.Context, t time.Time) error {
	d := t.Sub(s.c.Now())
	if d <= 0 {
		return ctx.Err()
	}
	tm := s.c.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
