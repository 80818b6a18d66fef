package policy

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"
)

// MinRate is the floor of throttling backoff: a lane is never slowed below
// one message per minute by Observe, so a receiver's throttling can delay
// mail but never stall a lane completely.
const MinRate = 1.0 / 60

const (
	// backoffCooldown is how long a lane stays slowed after the receiver's
	// last throttling reply; then it returns to its full rate at once.
	// Five minutes is longer than the throttling windows receivers hint at
	// in their replies ("try again later", typically minutes) and short
	// enough that a transient spike does not cost a whole wave.
	backoffCooldown = 5 * time.Minute
	// backoffStep is the least time between two halvings. One burst of
	// throttling replies arrives on every open connection at once; it must
	// count as one signal, not as one halving per connection.
	backoffStep = time.Minute
)

// concurrencyCapTime is how long ConnRefused's cap holds: long enough for
// the receiver's count of our connections to drop, short enough that a
// receiver that only had a bad moment gets its full concurrency back soon.
const concurrencyCapTime = time.Minute

// Lane is the queue of one provider (or, for the catch-all, of one
// recipient domain): its rate, its connection limits and its reaction to
// throttling and refused connections. The state lanes of the same key
// share (rate reservations, connection slots) is in the Limiter; the
// reactions are this process's own. A Lane is safe for concurrent use.
type Lane struct {
	name, key          string
	connLimit, maxDels int
	clk                timeSource
	lim                Limiter

	mu        sync.Mutex
	base      float64   // configured or SetRate rate, messages per second
	level     int       // number of halvings in force
	lastHalve time.Time // when level was last raised
	until     time.Time // end of the cool-down; zero when not slowed
	capped    int       // most connection slots until capUntil
	capUntil  time.Time
}

func newLane(name, key string, lim limits, clk timeSource, shared Limiter) *Lane {
	return &Lane{
		name:      name,
		key:       key,
		connLimit: lim.connLimit,
		maxDels:   lim.maxDels,
		clk:       clk,
		lim:       shared,
		base:      lim.rate,
	}
}

// Name is the provider's name, for metric labels ("default" for every
// catch-all lane, so per-domain lanes do not explode label cardinality).
func (l *Lane) Name() string { return l.name }

// Key identifies the lane: the provider name, or "default/<domain>" for a
// catch-all lane.
func (l *Lane) Key() string { return l.key }

// ConnectionLimit is the most SMTP connections the lane may have open at
// once.
func (l *Lane) ConnectionLimit() int { return l.connLimit }

// MaxDeliveriesPerConnection is the most messages the queue may send over
// one connection before closing it and opening a new one (ConnectionSpent
// says when).
func (l *Lane) MaxDeliveriesPerConnection() int { return l.maxDels }

// ConnectionSpent reports whether a connection that has made sent
// deliveries has made its share and must be closed before the next one.
func (l *Lane) ConnectionSpent(sent int) bool { return sent >= l.maxDels }

// AcquireConn takes one of the lane's connection slots, when fewer than
// ConnectionLimit are held and no cap from ConnRefused forbids it, and
// reports whether it did. The queue holds one slot per worker for the
// worker's life and gives it back with ReleaseConn. When the Limiter
// fails, no slot is granted: the mail waits rather than overruns a limit.
func (l *Lane) AcquireConn() bool {
	limit := l.connLimit
	l.mu.Lock()
	if l.clk.now().Before(l.capUntil) {
		limit = min(limit, l.capped)
	}
	l.mu.Unlock()
	if limit <= 0 {
		return false
	}
	ok, err := l.lim.Acquire(context.Background(), l.key, limit)
	return ok && err == nil
}

// ReleaseConn gives back a slot taken by AcquireConn. A networked Limiter
// that fails to hear it gets the slot back when its lease expires.
func (l *Lane) ReleaseConn() { _ = l.lim.Release(context.Background(), l.key) }

// ConnRefused tells the lane that a receiver refused one more connection
// while other connections to it worked. For concurrencyCapTime on the
// lane's clock it grants no more slots than are held now minus one (the
// refused worker's, which it releases next): Postfix's negative
// concurrency feedback, one refusal lowering the concurrency once rather
// than every new worker trying again.
func (l *Lane) ConnRefused() {
	held, err := l.lim.Held(context.Background(), l.key)
	if err != nil {
		return // no count to cap at; the connection limit still holds
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.capped, l.capUntil = held-1, l.clk.now().Add(concurrencyCapTime)
}

// Wait blocks until the lane's rate lets one more message start, and returns
// how long it waited (for the shaping-wait metric). An unlimited lane never
// waits. When ctx ends first, or when its deadline falls before the slot,
// Wait returns the context's error and gives the slot back if it can.
func (l *Lane) Wait(ctx context.Context) (time.Duration, error) {
	_, waited, err := l.wait(ctx)
	return waited, err
}

// wait is Wait, also returning the start time of the reserved slot.
func (l *Lane) wait(ctx context.Context) (time.Time, time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return time.Time{}, 0, err
	}
	now := l.clk.now()
	iv := intervalFor(l.rateAt(now))
	if iv == 0 {
		return now, 0, nil
	}
	r, err := l.lim.Reserve(ctx, l.key, iv, now)
	if err != nil {
		return time.Time{}, 0, fmt.Errorf("policy: lane %s: %w", l.key, err)
	}
	d := r.Start.Sub(now)
	if d <= 0 {
		return r.Start, 0, nil
	}
	// The deadline is wall-clock time, as context deadlines are.
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		l.giveBack(ctx, r)
		return time.Time{}, 0, fmt.Errorf("policy: lane %s: next slot in %v is past the deadline: %w",
			l.key, d, context.DeadlineExceeded)
	}
	if err := l.clk.sleepUntil(ctx, r.Start); err != nil {
		l.giveBack(ctx, r)
		return time.Time{}, l.clk.now().Sub(now), err
	}
	return r.Start, d, nil
}

// giveBack cancels a reservation whose waiter gives up; ctx is ending, so
// the Limiter gets one that is not.
func (l *Lane) giveBack(ctx context.Context, r Reservation) {
	_ = l.lim.Cancel(context.WithoutCancel(ctx), l.key, r)
}

// SetRate changes the lane's base rate in messages per second, for
// feedback such as warm-up and placement; +Inf removes the limit. Rates that
// are not positive (and NaN) are raised to MinRate: pausing a lane is not a
// rate. A throttling backoff in force keeps applying on top of the new rate
// until its cool-down ends. Slots already reserved keep their times.
func (l *Lane) SetRate(perSecond float64) {
	if !(perSecond > 0) {
		perSecond = MinRate
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.base = perSecond
}

// Rate returns the rate in force now, in messages per second, including any
// throttling backoff; +Inf when unlimited.
func (l *Lane) Rate() float64 { return l.rateAt(l.clk.now()) }

// rateAt is the rate in force at now.
func (l *Lane) rateAt(now time.Time) float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refresh(now)
	return l.effective()
}

// Observe feeds a receiver's reply to the lane. It is the hook for response
// rules; today it knows one: a 421 or 451 reply with an enhanced status
// code of class 4.7 (security or policy: Gmail "421 4.7.28" rate limiting,
// Outlook "451 4.7.650", Yahoo "421 4.7.0") means the receiver throttles us,
// so the lane halves its rate for a cool-down of five minutes from the last
// such reply and then returns to its full rate. Replies in one burst (within
// a minute of the last halving) extend the cool-down without halving again.
// The rate never drops below MinRate by backoff, nor below a configured rate
// that is already lower. An unlimited lane has no rate to halve and is not
// slowed. enhanced is the RFC 3463 code without text, e.g. "4.7.28".
//
// Greylisting (RFC 6647) often answers "451 4.7.1" too, but asks for a later
// retry of that one message, not a slower sender: a reply whose text says
// grey- or graylisted is not throttling.
func (l *Lane) Observe(code int, enhanced, text string) {
	if code != 421 && code != 451 {
		return
	}
	if !strings.HasPrefix(strings.TrimSpace(enhanced), "4.7.") || greylisting(text) {
		return
	}
	now := l.clk.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refresh(now)
	if isUnlimited(l.base) {
		return
	}
	if l.level == 0 || now.Sub(l.lastHalve) >= backoffStep {
		if l.effective() > MinRate {
			l.level++
		}
		l.lastHalve = now
	}
	l.until = now.Add(backoffCooldown)
}

func greylisting(text string) bool {
	t := strings.ToLower(text)
	return strings.Contains(t, "greylist") || strings.Contains(t, "graylist") ||
		strings.Contains(t, "grey-list") || strings.Contains(t, "gray-list")
}

// refresh ends a cool-down that is over. Called with l.mu held.
func (l *Lane) refresh(now time.Time) {
	if l.level > 0 && !now.Before(l.until) {
		l.level = 0
		l.until = time.Time{}
	}
}

// effective is the base rate halved level times, floored at MinRate (or at
// the base rate when that is lower). Called with l.mu held.
func (l *Lane) effective() float64 {
	r := l.base
	if l.level == 0 || isUnlimited(r) {
		return r
	}
	floor := min(r, MinRate)
	for i := 0; i < l.level && r > floor; i++ {
		r /= 2
	}
	return max(r, floor)
}
