package gateway

import "github.com/certgate/certgate/membudget"

// holding is one transaction's share of the server's memory budget (see
// package membudget): its DATA buffer and the copies prepared from it,
// let go at once when the transaction ends. Over the budget, a new
// transaction is told to come back later (452 4.3.1), and a message that
// would push past it mid-DATA is read to its end, dropped and refused the
// same way: the client keeps it, so nothing is lost.
type holding struct {
	b    *membudget.Budget // nil: no budget
	held int64
}

// grow takes n more bytes; false when they do not fit.
func (h *holding) grow(n int64) bool {
	if n <= 0 {
		return true
	}
	if !h.b.TryReserve(n) {
		return false
	}
	h.held += n
	return true
}

func (h *holding) releaseAll() {
	h.b.Release(h.held)
	h.held = 0
}
