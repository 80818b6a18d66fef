package policy

import (
	"context"
	"math"
	"sync"
	"time"
)

// clock is the time source of lanes, replaced in tests by a fake clock so
// rate tests are deterministic and never depend on wall-clock speed.
type clock interface {
	now() time.Time
	// sleepUntil blocks until t or until ctx is done.
	sleepUntil(ctx context.Context, t time.Time) error
}

type realClock struct{}

func (realClock) now() time.Time { return time.Now() }

func (realClock) sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// limiter is a GCRA (generic cell rate algorithm, "virtual scheduling"
// form) with a burst of one: messages start exactly one interval apart, so
// 600/min means one message every 100 ms, never ten at once. A bursty token
// bucket would let a lane that idled send its whole bucket at once, which is
// what a receiver's burst detection punishes, and would make the rate over
// a short window inaccurate.
//
// tat is the theoretical arrival time: the earliest moment the next message
// may start. A caller reserves the slot max(now, tat) and moves tat one
// interval on. Reservations are handed out in order under the mutex, so any
// number of concurrent waiters are spaced exactly one interval apart, and
// after an idle period nothing accumulates (tat is simply in the past).
type limiter struct {
	mu       sync.Mutex
	interval time.Duration // 0 means unlimited
	tat      time.Time
}

// maxInterval bounds the spacing so absurdly small rates cannot overflow
// time.Duration (about ten years between messages).
const maxInterval = 10 * 365 * 24 * time.Hour

// intervalFor converts a rate in messages per second to the spacing between
// message starts; 0 means unlimited.
func intervalFor(perSecond float64) time.Duration {
	if isUnlimited(perSecond) {
		return 0
	}
	iv := float64(time.Second) / perSecond
	if iv >= float64(maxInterval) || math.IsNaN(iv) {
		return maxInterval
	}
	if iv < 1 {
		return 1 // faster than 1e9/s: one nanosecond, still finite
	}
	return time.Duration(math.Round(iv))
}

// reservation is one reserved slot; end is tat after it was reserved, so a
// cancelled reservation can be returned if nobody reserved after it.
type reservation struct {
	start, end time.Time
}

func (l *limiter) setInterval(iv time.Duration) {
	l.mu.Lock()
	l.interval = iv
	l.mu.Unlock()
}

func (l *limiter) reserve(now time.Time) reservation {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.interval == 0 {
		return reservation{start: now, end: now}
	}
	start := now
	if l.tat.After(now) {
		start = l.tat
	}
	l.tat = start.Add(l.interval)
	return reservation{start: start, end: l.tat}
}

// cancel gives a slot back when it was the last one handed out; otherwise
// the slot stays used (a later waiter already relies on tat), which costs at
// most one interval of capacity.
func (l *limiter) cancel(r reservation) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !r.end.Equal(r.start) && l.tat.Equal(r.end) {
		l.tat = r.start
	}
}
