package quarantine

import (
	"net/netip"
	"sync"
	"time"
)

// RateLimit lets Burst presses through at once, then one per Every.
type RateLimit struct {
	Burst int
	Every time.Duration
}

// The gate's limits on presses of its button when GateOptions leaves
// them out. A person presses once or twice, a scanner a few times; a
// flood from one address or on one link is slowed to a write every few
// seconds, whatever its rate.
var (
	DefaultPerLink   = RateLimit{Burst: 10, Every: 6 * time.Second}
	DefaultPerClient = RateLimit{Burst: 30, Every: 2 * time.Second}
)

// DefaultLimiterKeys bounds how many links, and how many client
// addresses, each generation of the gate's limits remembers: about 8 MB
// at most in all, and far more than are pressed within a refill time.
const DefaultLimiterKeys = 1 << 14

// keyLimiter is a GCRA per key: each key keeps the time at which its next
// press is on schedule (tat), and a press goes through while that lies at
// most (Burst-1)*Every ahead. Its memory is two generations of at most max
// keys: the older is dropped when the newer is full or a refill time
// (Burst*Every) after the last turn, when every key in it is back to a
// full burst. A flood of distinct keys can only make keys start afresh
// early, never grow the maps. Not safe for concurrent use.
type keyLimiter[K comparable] struct {
	lim      RateLimit
	max      int
	cur, old map[K]time.Time
	turned   time.Time
}

func newKeyLimiter[K comparable](lim RateLimit, max int) *keyLimiter[K] {
	return &keyLimiter[K]{lim: lim, max: max, cur: map[K]time.Time{}, old: map[K]time.Time{}}
}

// check says when k's press at now would put its schedule, or how long it
// must wait when that is too far ahead. It changes nothing.
func (l *keyLimiter[K]) check(k K, now time.Time) (tat time.Time, wait time.Duration) {
	tat, ok := l.cur[k]
	if !ok {
		tat = l.old[k]
	}
	if tat.Before(now) {
		tat = now
	}
	if ahead := tat.Sub(now) - time.Duration(l.lim.Burst-1)*l.lim.Every; ahead > 0 {
		return time.Time{}, ahead
	}
	return tat.Add(l.lim.Every), 0
}

// spend records a press that check let through.
func (l *keyLimiter[K]) spend(k K, tat, now time.Time) {
	if len(l.cur) >= l.max || now.Sub(l.turned) >= time.Duration(l.lim.Burst)*l.lim.Every {
		l.old, l.cur, l.turned = l.cur, make(map[K]time.Time, min(len(l.cur), l.max)), now
	}
	delete(l.old, k)
	l.cur[k] = tat
}

// postLimits are the gate's two limits on POSTs.
type postLimits struct {
	mu     sync.Mutex
	link   *keyLimiter[[32]byte]
	client *keyLimiter[netip.Prefix]
}

// allow lets a press through both limits and spends its place in each, or
// says how long the slower one wants it to wait. A request without a
// well-formed token (hasLink false) meets only the client's limit.
func (p *postLimits) allow(link [32]byte, hasLink bool, client netip.Prefix, now time.Time) (time.Duration, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ctat, cwait := p.client.check(client, now)
	var ltat time.Time
	var lwait time.Duration
	if hasLink {
		ltat, lwait = p.link.check(link, now)
	}
	if wait := max(cwait, lwait); wait > 0 {
		return wait, false
	}
	p.client.spend(client, ctat, now)
	if hasLink {
		p.link.spend(link, ltat, now)
	}
	return 0, true
}

// clientKey is what the client limit counts by: the address, or an IPv6
// address's /64, which one subscriber usually holds whole. Requests whose
// address cannot be read share the zero key.
func clientKey(remoteAddr string) netip.Prefix {
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return netip.Prefix{}
	}
	a := ap.Addr().Unmap()
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits)
	return p
}

// ClientLimiter limits what one client address (an IPv6 client by its
// /64) may try, with the gate's GCRA and its bounded memory: for forms
// other than the gate's, such as the console's sign-in. Safe for
// concurrent use.
type ClientLimiter struct {
	mu sync.Mutex
	l  *keyLimiter[netip.Prefix]
}

// NewClientLimiter lets each client lim.Burst tries at once, then one per
// lim.Every, remembering at most keys clients per generation.
func NewClientLimiter(lim RateLimit, keys int) *ClientLimiter {
	return &ClientLimiter{l: newKeyLimiter[netip.Prefix](lim, keys)}
}

// Wait is how long the client at remoteAddr must wait before its next
// try counts; 0 when it may try now. It spends nothing.
func (c *ClientLimiter) Wait(remoteAddr string, now time.Time) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, wait := c.l.check(clientKey(remoteAddr), now)
	return wait
}

// Spend counts one try of the client at remoteAddr (a failed one, for a
// limit on failures), unless it is over its limit already.
func (c *ClientLimiter) Spend(remoteAddr string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := clientKey(remoteAddr)
	if tat, wait := c.l.check(k, now); wait == 0 {
		c.l.spend(k, tat, now)
	}
}
