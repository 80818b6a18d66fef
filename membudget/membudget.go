// Package membudget bounds the bytes of mail certgate holds in memory at
// once (smtp.memory_budget): the messages submissions are reading, the
// copies prepared from them, and the copies read back from the store to
// be delivered. Without a bound, six concurrent 20 MB submissions with
// gated links to five recipients took 1.5 GB.
//
// Submissions ask without waiting (TryReserve) and are told to come back
// later when the budget is spent (452 4.3.1: the client keeps the
// message). Deliveries wait for room (Reserve), and come first: while one
// waits, no new submission starts (Full), so that mail already accepted
// goes out before more comes in; those under way finish.
package membudget

import (
	"context"
	"sync"
)

// Budget is a count of bytes held against a limit.
type Budget struct {
	limit int64 // <= 0: no limit

	mu      sync.Mutex
	used    int64
	waiting int           // Reserve calls waiting for room
	changed chan struct{} // closed and replaced when used or waiting changes
}

// New returns a budget of limit bytes; limit <= 0 bounds nothing.
func New(limit int64) *Budget {
	return &Budget{limit: limit, changed: make(chan struct{})}
}

// Limit is the budget's size in bytes, 0 or less when unbounded.
func (b *Budget) Limit() int64 {
	if b == nil {
		return 0
	}
	return b.limit
}

// TryReserve takes n bytes if they fit. A nil budget bounds nothing, so
// that the methods may be called whether or not there is one.
func (b *Budget) TryReserve(n int64) bool {
	if b == nil {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.limit > 0 && b.used+n > b.limit {
		return false
	}
	b.set(b.used + n)
	return true
}

// Reserve waits until n bytes fit, then takes them, or returns ctx's
// error. A request larger than the whole budget is granted once nothing
// else is held, so that it cannot wait for ever.
func (b *Budget) Reserve(ctx context.Context, n int64) error {
	if b == nil {
		return ctx.Err()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fits(n) {
		b.set(b.used + n)
		return nil
	}
	b.waiting++
	b.notify()
	defer func() { b.waiting--; b.notify() }()
	for !b.fits(n) {
		changed := b.changed
		b.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			b.mu.Lock()
			return ctx.Err()
		}
		b.mu.Lock()
	}
	b.set(b.used + n)
	return nil
}

// Release gives back n bytes taken before.
func (b *Budget) Release(n int64) {
	if b == nil || n == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.set(b.used - n)
}

// Full reports whether a new submission should be turned away: nothing
// is left, or a delivery is waiting for room.
func (b *Budget) Full() bool {
	if b == nil {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.limit > 0 && (b.used >= b.limit || b.waiting > 0)
}

// InUse returns the bytes held and a channel closed when that, or the
// number of deliveries waiting, changes.
func (b *Budget) InUse() (int64, <-chan struct{}) {
	if b == nil {
		return 0, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used, b.changed
}

// Waiting is how many Reserve calls wait for room.
func (b *Budget) Waiting() int {
	if b == nil {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.waiting
}

func (b *Budget) fits(n int64) bool {
	return b.limit <= 0 || b.used+n <= b.limit || b.used == 0
}

func (b *Budget) set(n int64) {
	b.used = n
	b.notify()
}

// notify wakes whoever watches the budget: bytes or waiters changed.
func (b *Budget) notify() {
	close(b.changed)
	b.changed = make(chan struct{})
}
