package policy

// TEMPORARY (issue 8 merge): the connection-slot API delivery calls, kept
// beside the lane until the Limiter lands; deleted by that merge.

import (
	"sync"
	"time"
)

type connState struct {
	held     int
	capped   int
	capUntil time.Time
}

var (
	connMu    sync.Mutex
	connSlots = map[*Lane]*connState{}
)

func (l *Lane) conns() *connState {
	s := connSlots[l]
	if s == nil {
		s = &connState{}
		connSlots[l] = s
	}
	return s
}

func (l *Lane) AcquireConn() bool {
	connMu.Lock()
	defer connMu.Unlock()
	s := l.conns()
	if s.held >= l.connLimit || (s.held >= s.capped && l.clk.now().Before(s.capUntil)) {
		return false
	}
	s.held++
	return true
}

func (l *Lane) ReleaseConn() {
	connMu.Lock()
	defer connMu.Unlock()
	l.conns().held--
}

func (l *Lane) ConnRefused() {
	connMu.Lock()
	defer connMu.Unlock()
	s := l.conns()
	s.capped, s.capUntil = s.held-1, l.clk.now().Add(time.Minute)
}

func (l *Lane) ConnectionSpent(sent int) bool { return sent >= l.maxDels }
