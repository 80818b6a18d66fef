package policy

import (
	"context"
	"math"
	"sync"
	"time"
)

// Limiter holds the limit state that every lane of the same key must
// share, across processes once there are several: the rate's next free
// slot and the connection slots taken. Lanes keep what is their process's
// own view (the throttling backoff, the concurrency cap) and ask the
// Limiter for the rest. LocalLimiter serves one process; a networked
// implementation (Redis: the GCRA in one Lua script per call, connection
// slots as leases that expire, so a dead node's slots come back) serves a
// cluster. Methods take a context and return an error for that one.
type Limiter interface {
	// Reserve takes key's next start slot for one message at one per
	// interval (a GCRA with a burst of one): the later of now and the
	// key's theoretical arrival time, which then moves one interval past
	// the slot. interval is positive; now is the caller's clock reading,
	// so that lanes on a fake clock stay on it.
	Reserve(ctx context.Context, key string, interval time.Duration, now time.Time) (Reservation, error)
	// Cancel gives r back when no later reservation of key was made;
	// otherwise the slot stays used, which costs at most one interval.
	Cancel(ctx context.Context, key string, r Reservation) error
	// Acquire takes one of key's connection slots when fewer than limit
	// are held, and reports whether it did.
	Acquire(ctx context.Context, key string, limit int) (bool, error)
	// Release gives back one of key's slots that this process holds.
	Release(ctx context.Context, key string) error
	// Held is the number of key's slots held.
	Held(ctx context.Context, key string) (int, error)
}

// Reservation is one reserved start slot.
type Reservation struct {
	// Start is when the message may start.
	Start time.Time
	// Next is the key's theoretical arrival time this reservation left;
	// Cancel gives the slot back only while it is still that.
	Next time.Time
}

// LocalLimiter is the Limiter of a single process.
//
// Its rate is a GCRA (generic cell rate algorithm, "virtual scheduling"
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
type LocalLimiter struct {
	mu   sync.Mutex
	keys map[string]*localKey
}

type localKey struct {
	tat  time.Time
	held int
}

var _ Limiter = (*LocalLimiter)(nil)

// NewLocalLimiter returns a limiter for the lanes of one process.
func NewLocalLimiter() *LocalLimiter { return &LocalLimiter{keys: map[string]*localKey{}} }

// key returns key's state. Called with mu held.
func (l *LocalLimiter) key(key string) *localKey {
	k := l.keys[key]
	if k == nil {
		k = &localKey{}
		l.keys[key] = k
	}
	return k
}

// Reserve implements Limiter. It never fails.
func (l *LocalLimiter) Reserve(_ context.Context, key string, interval time.Duration, now time.Time) (Reservation, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := l.key(key)
	start := now
	if k.tat.After(now) {
		start = k.tat
	}
	k.tat = start.Add(interval)
	return Reservation{Start: start, Next: k.tat}, nil
}

// Cancel implements Limiter. It never fails.
func (l *LocalLimiter) Cancel(_ context.Context, key string, r Reservation) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if k := l.key(key); r.Next.After(r.Start) && k.tat.Equal(r.Next) {
		k.tat = r.Start
	}
	return nil
}

// Acquire implements Limiter. It never fails.
func (l *LocalLimiter) Acquire(_ context.Context, key string, limit int) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := l.key(key)
	if k.held >= limit {
		return false, nil
	}
	k.held++
	return true, nil
}

// Release implements Limiter. Releasing a slot that is not held is a
// caller's bug; it leaves the count at zero rather than below.
func (l *LocalLimiter) Release(_ context.Context, key string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if k := l.key(key); k.held > 0 {
		k.held--
	}
	return nil
}

// Held implements Limiter. It never fails.
func (l *LocalLimiter) Held(_ context.Context, key string) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.key(key).held, nil
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
