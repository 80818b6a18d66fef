package gateway

import "github.com/certgate/certgate/membudget"

// holding is one transaction's share of the server's memory budget (see
// package membudget): its DATA buffer and the copies prepared from it,
// let go at once when the transaction ends. Over the budget, a new
// transaction is told to come back later (452 4.3.1), and a message that
// would push past it mid-DATA is read to its end, dropped and refused the
// same way: the client keeps it, so nothing is lost. One that needs more
// than the whole budget is refused for good (552 5.3.4).
type holding struct {
	b    *membudget.Budget // nil: no budget
	held int64
}

// grow takes n more bytes: errMemoryBudget when they do not fit now,
// errOverBudget when they never will.
func (h *holding) grow(n int64) error {
	if n <= 0 {
		return nil
	}
	if limit := h.b.Limit(); limit > 0 && h.held+n > limit {
		return errOverBudget
	}
	if !h.b.TryReserve(n) {
		return errMemoryBudget
	}
	h.held += n
	return nil
}

// shrink gives back n of the bytes held, when what they counted is no
// longer needed.
func (h *holding) shrink(n int64) {
	n = min(n, h.held)
	h.b.Release(n)
	h.held -= n
}

func (h *holding) releaseAll() {
	h.b.Release(h.held)
	h.held = 0
}
