package policy

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/certgate/certgate/config"
)

// MinRate is the floor of every slowdown: a lane is never slowed below one
// message per minute by its rules, so a receiver's throttling can delay
// mail but never stall a lane completely (a suspension is another matter,
// and says so).
const MinRate = 1.0 / 60

// backoffStep is the least time between two cuts of a lane's rate. One
// burst of throttling replies arrives on every open connection at once; it
// must count as one signal, not as one cut per connection.
const backoffStep = time.Minute

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

	rules     []*compiledRule // reply rules, in the order React tries them
	recovery  recovery
	placement config.PlacementRule

	mu        sync.Mutex
	base      float64   // configured or SetRate rate, messages per second
	factor    float64   // share of base in force: 1, or less while slowed or recovering
	floor     float64   // the slowing rules' floor, messages per second
	lastCut   time.Time // when factor was last cut
	slowUntil time.Time // end of the slowdown; the climb back starts then
	lastStep  time.Time // when the climb last took a step
	capped    int       // most connection slots until capUntil
	capUntil  time.Time

	suspendBulk, suspendAll time.Time            // no bulk (no mail) until then
	tenantSuspended         map[string]time.Time // no bulk of these tenants until then
	setConns, setPerConn    int                  // a set rule's limits until setUntil; 0: configured
	setUntil                time.Time
	reason                  string    // the last rule that changed the lane, and why
	since                   time.Time // when it did
	placed                  []bool    // the latest seed copies' fates (inbox or not), at most placement.Window
	warmup                  *warmup   // nil: no warm-up
	warm                    warmCount // the lane's bulk on its warm-up day
	tenantWarmups           map[string]*warmup
	tenantWarm              map[string]*warmCount // each warming tenant's bulk on its own warm-up day
	version                 uint64                // counts changes of the state above, for saving it
	paused                  bool                  // an operator paused the lane: nothing leaves until resumed
	override                float64               // an operator's rate, messages per second, until overrideUntil; 0: none
	overrideUntil           time.Time
}

// recovery is config.Recovery in the lane's units.
type recovery struct {
	step     float64
	interval time.Duration
}

func newLane(name, key string, lim limits, clk timeSource, shared Limiter) *Lane {
	if lim.recovery.interval <= 0 {
		lim.recovery = recovery{step: config.DefaultRecoveryStep, interval: config.DefaultRecoveryInterval.D()}
	}
	return &Lane{
		name:      name,
		key:       key,
		connLimit: lim.connLimit,
		maxDels:   lim.maxDels,
		clk:       clk,
		lim:       shared,
		base:      lim.rate,
		factor:    1,
		rules:     compileRules(lim.rules),
		recovery:  lim.recovery,
		placement: lim.placement,
		warmup:    lim.warmup,

		tenantWarmups: lim.tenantWarmups,
		tenantWarm:    map[string]*warmCount{},
	}
}

// Name is the provider's name, for metric labels ("default" for every
// catch-all lane, so per-domain lanes do not explode label cardinality).
func (l *Lane) Name() string { return l.name }

// Key identifies the lane: the provider name, or "default/<domain>" for a
// catch-all lane.
func (l *Lane) Key() string { return l.key }

// ConnectionLimit is the most SMTP connections the lane may have open at
// once: the configured limit, or a set rule's while it holds.
func (l *Lane) ConnectionLimit() int {
	c, _ := l.limitsNow()
	return c
}

// MaxDeliveriesPerConnection is the most messages the queue may send over
// one connection before closing it and opening a new one (ConnectionSpent
// says when): the configured number, or a set rule's while it holds.
func (l *Lane) MaxDeliveriesPerConnection() int {
	_, d := l.limitsNow()
	return d
}

// ConnectionSpent reports whether a connection that has made sent
// deliveries has made its share and must be closed before the next one.
func (l *Lane) ConnectionSpent(sent int) bool { return sent >= l.MaxDeliveriesPerConnection() }

// limitsNow is the connection limit and deliveries per connection in force.
func (l *Lane) limitsNow() (conns, perConn int) {
	now := l.clk.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refresh(now)
	conns, perConn = l.connLimit, l.maxDels
	if l.setConns > 0 {
		conns = l.setConns
	}
	if l.setPerConn > 0 {
		perConn = l.setPerConn
	}
	return conns, perConn
}

// AcquireConn takes one of the lane's connection slots, when fewer than
// ConnectionLimit are held and no cap from ConnRefused forbids it, and
// reports whether it did. The queue holds one slot per worker for the
// worker's life and gives it back with ReleaseConn. When the Limiter
// fails, no slot is granted: the mail waits rather than overruns a limit.
func (l *Lane) AcquireConn() bool {
	limit := l.ConnectionLimit()
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
	_, waited, err := l.WaitSlot(ctx)
	return waited, err
}

// Slot is a start slot WaitSlot reserved.
type Slot struct {
	l *Lane
	r Reservation
}

// Unused gives the slot back when no message used it (the item the
// worker waited for went to another worker, or was held): an unused slot
// would otherwise cost the lane one interval of its rate.
func (s Slot) Unused() {
	if s.l != nil {
		s.l.giveBack(context.Background(), s.r)
	}
}

// WaitSlot is Wait, also returning the slot it reserved.
func (l *Lane) WaitSlot(ctx context.Context) (Slot, time.Duration, error) {
	r, waited, err := l.reserve(ctx)
	if err != nil || r.Next.IsZero() {
		return Slot{}, waited, err
	}
	return Slot{l: l, r: r}, waited, nil
}

// wait is Wait, also returning the start time of the reserved slot.
func (l *Lane) wait(ctx context.Context) (time.Time, time.Duration, error) {
	r, waited, err := l.reserve(ctx)
	return r.Start, waited, err
}

// reserve reserves the next start slot and sleeps until it; an unlimited
// lane reserves none (a zero Next).
func (l *Lane) reserve(ctx context.Context) (Reservation, time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return Reservation{}, 0, err
	}
	now := l.clk.now()
	iv := intervalFor(l.rateAt(now))
	if iv == 0 {
		return Reservation{Start: now}, 0, nil
	}
	r, err := l.lim.Reserve(ctx, l.key, iv, now)
	if err != nil {
		return Reservation{}, 0, fmt.Errorf("policy: lane %s: %w", l.key, err)
	}
	d := r.Start.Sub(now)
	if d <= 0 {
		return r, 0, nil
	}
	// The deadline is wall-clock time, as context deadlines are.
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		l.giveBack(ctx, r)
		return Reservation{}, 0, fmt.Errorf("policy: lane %s: next slot in %v is past the deadline: %w",
			l.key, d, context.DeadlineExceeded)
	}
	if err := l.clk.sleepUntil(ctx, r.Start); err != nil {
		l.giveBack(ctx, r)
		return Reservation{}, l.clk.now().Sub(now), err
	}
	return r, d, nil
}

// giveBack cancels a reservation whose waiter gives up; ctx is ending, so
// the Limiter gets one that is not.
func (l *Lane) giveBack(ctx context.Context, r Reservation) {
	_ = l.lim.Cancel(context.WithoutCancel(ctx), l.key, r)
}

// SetRate changes the lane's base rate in messages per second, for
// feedback such as warm-up and placement; +Inf removes the limit. Rates that
// are not positive (and NaN) are raised to MinRate: pausing a lane is not a
// rate. A slowdown in force keeps applying on top of the new rate, as a
// share of it. Slots already reserved keep their times.
func (l *Lane) SetRate(perSecond float64) {
	if !(perSecond > 0) {
		perSecond = MinRate
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.base = perSecond
}

// Rate returns the rate in force now, in messages per second, including any
// slowdown; +Inf when unlimited.
func (l *Lane) Rate() float64 { return l.rateAt(l.clk.now()) }

// rateAt is the rate in force at now.
func (l *Lane) rateAt(now time.Time) float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refresh(now)
	return l.effective()
}

// effective is the base rate times the share in force, not below the
// slowing rules' floor nor MinRate (nor above the base rate). Called with
// l.mu held.
func (l *Lane) effective() float64 {
	r := l.base
	if l.override > 0 {
		r = l.override
	}
	if l.factor >= 1 || isUnlimited(r) {
		return r
	}
	floor := min(r, max(l.floor, MinRate))
	return max(r*l.factor, floor)
}
