package gateway

import "sync"

// memoryBudget bounds the bytes that submissions hold at once: the DATA
// buffers sessions read messages into and the copies prepared from them
// (smtp.memory_budget). Without it, six concurrent 20 MB submissions with
// gated links to five recipients took 1.5 GB. Over it, a new transaction
// is told to come back later (452 4.3.1), and a message that would push
// past it mid-DATA is read to its end, dropped and refused the same way:
// the client keeps it, so nothing is lost.
type memoryBudget struct {
	limit int64 // 0: no limit

	mu      sync.Mutex
	used    int64
	changed chan struct{} // closed and replaced when used changes
}

func newMemoryBudget(limit int64) *memoryBudget {
	return &memoryBudget{limit: limit, changed: make(chan struct{})}
}

// reserve takes n bytes of the budget, if they fit.
func (b *memoryBudget) reserve(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.limit > 0 && b.used+n > b.limit {
		return false
	}
	b.set(b.used + n)
	return true
}

func (b *memoryBudget) release(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.set(b.used - n)
}

// full reports whether nothing is left for a new transaction.
func (b *memoryBudget) full() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.limit > 0 && b.used >= b.limit
}

func (b *memoryBudget) set(n int64) {
	b.used = n
	close(b.changed)
	b.changed = make(chan struct{})
}

// inUse returns the bytes held and a channel closed when that changes.
func (b *memoryBudget) inUse() (int64, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used, b.changed
}

// holding is one session's share of the budget, let go at once when the
// transaction ends.
type holding struct {
	b    *memoryBudget
	held int64
}

// grow takes n more bytes; false when they do not fit.
func (h *holding) grow(n int64) bool {
	if n <= 0 {
		return true
	}
	if !h.b.reserve(n) {
		return false
	}
	h.held += n
	return true
}

func (h *holding) releaseAll() {
	h.b.release(h.held)
	h.held = 0
}
