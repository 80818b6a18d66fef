package gateway

import (
	"cmp"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/time/rate"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/quarantine"
)

// Tenant is one issuer as the submission server sees it.
type Tenant struct {
	Name         string
	FromDomains  []string
	DefaultClass config.Class
	Networks     []netip.Prefix
	Links        *quarantine.LinkPolicy // nil: no gated links
	Hold         bool                   // every message waits for release
	Classes      []config.Class         // the classes it may use; nil: both
	MaxQueued    int                    // recipients it may have queued; 0: no cap

	owners  config.DomainOwners // every tenant's claims; nil: FromDomains alone
	rate    *rate.Limiter       // transactions it may start; nil: unlimited
	seeding *seedClock          // tenants[].seeding; nil: none
}

// mayUse reports whether the tenant may mark its mail with class.
func (t *Tenant) mayUse(class config.Class) bool {
	return t.Classes == nil || slices.Contains(t.Classes, class)
}

// startTransaction takes one of the tenant's transaction slots
// (max_message_rate); false when it has none left for now.
func (t *Tenant) startTransaction() bool { return t.rate == nil || t.rate.Allow() }

// newRateLimiter is max_message_rate as a token bucket holding one
// period's count: "3/h" lets three transactions start at once, then one
// every 20 minutes, as an operator reading the rate expects; nil when
// unlimited.
func newRateLimiter(r config.Rate) *rate.Limiter {
	if r.Count <= 0 || r.Period <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(float64(r.Count)/r.Period.Seconds()), r.Count)
}

// Owns reports whether domain is this tenant's: the most specific claim
// among all tenants' from_domains is its own (config.DomainOwners). A key
// whose domain the tenant owns is the tenant's key.
func (t *Tenant) Owns(domain string) bool {
	if t.owners == nil {
		return config.NewDomainOwners([]config.Tenant{{Name: t.Name, FromDomains: t.FromDomains}}).Owner(domain) == t.Name
	}
	return t.owners.Owner(domain) == t.Name
}

// Directory knows the tenants, their users and their trusted networks.
type Directory struct {
	tenants []*Tenant
	byName  map[string]*Tenant
	users   map[string]user

	// verified caches credentials that bcrypt has accepted, keyed by an HMAC
	// under a per-process key, so a client that authenticates on every
	// connection costs one bcrypt, not one per connection.
	cacheKey []byte
	mu       sync.Mutex
	verified map[string][]byte

	// dummy is compared against for unknown users so that timing does not
	// tell which usernames exist.
	dummy []byte
	// flights are the bcrypt comparisons under way for known users, by
	// credential HMAC: concurrent logins with one credential (an MTA opening
	// several connections at once) share one.
	flights map[string]*flight

	// compare is bcrypt.CompareHashAndPassword, and joined nil, but in
	// tests (joined is called when a login shares a flight).
	compare func(hash, password []byte) error
	joined  func()
}

type flight struct {
	done chan struct{}
	err  error // once done is closed
}

type user struct {
	tenant *Tenant
	hash   []byte
}

// NewDirectory builds the directory from validated configuration, reading
// password hashes kept in files. Gated links point under publicURL.
func NewDirectory(tenants []config.Tenant, publicURL string) (*Directory, error) {
	d := &Directory{byName: map[string]*Tenant{}, users: map[string]user{}, verified: map[string][]byte{}, cacheKey: make([]byte, 32)}
	if _, err := rand.Read(d.cacheKey); err != nil {
		return nil, err
	}
	owners := config.NewDomainOwners(tenants)
	for _, tc := range tenants {
		t := &Tenant{Name: tc.Name, DefaultClass: tc.DefaultClass, Classes: tc.Classes, MaxQueued: tc.MaxQueued,
			owners: owners, rate: newRateLimiter(tc.MaxMessageRate), seeding: newSeedClock(tc.Seeding)}
		for _, fd := range tc.FromDomains {
			t.FromDomains = append(t.FromDomains, strings.ToLower(strings.TrimSuffix(fd, ".")))
		}
		t.Networks = tc.Networks()
		t.Hold = tc.Hold
		t.Links = quarantine.NewLinkPolicy(tc.Links, publicURL)
		for _, u := range tc.Users {
			h, err := u.ReadPasswordHash()
			if err != nil {
				return nil, fmt.Errorf("tenant %s: %w", tc.Name, err)
			}
			if _, dup := d.users[u.Username]; dup {
				return nil, fmt.Errorf("user %s is defined twice", u.Username)
			}
			d.users[u.Username] = user{tenant: t, hash: []byte(h)}
		}
		d.tenants = append(d.tenants, t)
		d.byName[t.Name] = t
	}
	dummy, err := dummyHash(d.users)
	if err != nil {
		return nil, err
	}
	d.dummy = dummy
	return d, nil
}

// Tenant returns the tenant of that name, or nil.
func (d *Directory) Tenant(name string) *Tenant { return d.byName[name] }

// Trusted returns the tenant whose trusted networks hold ip, or nil.
func (d *Directory) Trusted(ip netip.Addr) *Tenant {
	ip = ip.Unmap()
	for _, t := range d.tenants {
		for _, p := range t.Networks {
			if p.Contains(ip) {
				return t
			}
		}
	}
	return nil
}

// dummyHash is what unknown users' passwords are compared against: a hash
// of the highest cost among the users', so that an unknown name costs what
// a known one does.
func dummyHash(users map[string]user) ([]byte, error) {
	cost := bcrypt.DefaultCost
	if len(users) > 0 {
		cost = bcrypt.MinCost
		for _, u := range users {
			if c, err := bcrypt.Cost(u.hash); err == nil {
				cost = max(cost, c)
			}
		}
	}
	return bcrypt.GenerateFromPassword([]byte("certgate-dummy"), cost)
}

// Authenticate checks a username and password and returns the user's
// tenant, or errAuthFailed. A credential bcrypt has accepted before is
// known by its HMAC alone, and logins with the credential of one under way
// wait for its result. Otherwise bcrypt runs, for an unknown user too
// (against the dummy hash), once slot has granted it a slot: without one
// (slot returns false) the answer is errAuthBusy.
func (d *Directory) Authenticate(username, password string, slot func() (release func(), ok bool)) (*Tenant, error) {
	u, known := d.users[username]
	if !known {
		release, ok := slot()
		if !ok {
			return nil, errAuthBusy
		}
		defer release()
		d.compareHash(d.dummy, password)
		return nil, errAuthFailed
	}
	mac := hmac.New(sha256.New, d.cacheKey)
	mac.Write([]byte(username))
	mac.Write([]byte{0})
	mac.Write([]byte(password))
	sum := mac.Sum(nil)
	d.mu.Lock()
	if cached, hit := d.verified[username]; hit && hmac.Equal(cached, sum) {
		d.mu.Unlock()
		return u.tenant, nil
	}
	if f := d.flights[string(sum)]; f != nil {
		d.mu.Unlock()
		if d.joined != nil {
			d.joined()
		}
		<-f.done
		if f.err != nil {
			return nil, f.err
		}
		return u.tenant, nil
	}
	f := &flight{done: make(chan struct{})}
	if d.flights == nil {
		d.flights = map[string]*flight{}
	}
	d.flights[string(sum)] = f
	d.mu.Unlock()

	f.err = errAuthBusy
	if release, ok := slot(); ok {
		f.err = d.compareHash(u.hash, password)
		release()
	}
	d.mu.Lock()
	if f.err == nil {
		d.verified[username] = sum
	}
	delete(d.flights, string(sum))
	d.mu.Unlock()
	close(f.done)
	if f.err != nil {
		return nil, f.err
	}
	return u.tenant, nil
}

// compareHash runs bcrypt: nil or errAuthFailed.
func (d *Directory) compareHash(hash []byte, password string) error {
	compare := bcrypt.CompareHashAndPassword
	if d.compare != nil {
		compare = d.compare
	}
	if compare(hash, []byte(password)) != nil {
		return errAuthFailed
	}
	return nil
}

// logName is how a username given to AUTH is logged: as is when it is a
// user's, else as a short keyed hash, since it may be a password typed
// into the wrong field. The same name hashes alike until a restart, so
// that repeated attempts can be told apart.
func (d *Directory) logName(username string) string {
	if _, known := d.users[username]; known {
		return username
	}
	mac := hmac.New(sha256.New, d.cacheKey)
	mac.Write([]byte("log\x00"))
	mac.Write([]byte(username))
	return fmt.Sprintf("unknown:%x", mac.Sum(nil)[:4])
}

// hashSlots bounds the bcrypt comparisons that run at once. bcrypt is made
// to cost CPU: unbounded, AUTH from a hundred addresses took every core
// and a good login 10 s. An AUTH that finds no slot free waits its turn,
// behind at most hashQueue others of its kind per slot and for hashWait at
// most; past either it is refused with 454 4.7.0. Suspect clients (whose
// address has failed recently, or keeps trying while no slot is free) may
// take all slots but one, and wait behind the others.
type hashSlots struct {
	mu      sync.Mutex
	n       int
	running int
	queue   [2][]chan struct{} // waiting: clean clients, suspects
}

const (
	hashQueue = 4
	hashWait  = 10 * time.Second
)

func newHashSlots(n int) *hashSlots { return &hashSlots{n: max(n, 1)} }

// free says whether a slot is free to a client of that kind; called with
// h.mu held.
func (h *hashSlots) free(suspect bool) bool {
	if suspect && h.n > 1 {
		return h.running < h.n-1
	}
	return h.running < h.n
}

// acquire takes a slot, waiting for one if its turn comes soon enough.
func (h *hashSlots) acquire(suspect bool) (release func(), ok bool) {
	kind := 0
	if suspect {
		kind = 1
	}
	h.mu.Lock()
	if len(h.queue[kind]) == 0 && h.free(suspect) {
		h.running++
		h.mu.Unlock()
		return h.release, true
	}
	if len(h.queue[kind]) >= hashQueue*h.n {
		h.mu.Unlock()
		return nil, false
	}
	turn := make(chan struct{})
	h.queue[kind] = append(h.queue[kind], turn)
	h.mu.Unlock()
	t := time.NewTimer(hashWait)
	defer t.Stop()
	select {
	case <-turn:
		return h.release, true
	case <-t.C:
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if i := slices.Index(h.queue[kind], turn); i >= 0 {
		h.queue[kind] = slices.Delete(h.queue[kind], i, i+1)
		return nil, false
	}
	return h.release, true // its turn came meanwhile
}

// release frees a slot and hands free ones to those waiting, clean clients
// first.
func (h *hashSlots) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.running--
	for kind := range h.queue {
		for len(h.queue[kind]) > 0 && h.free(kind == 1) {
			close(h.queue[kind][0])
			h.queue[kind] = h.queue[kind][1:]
			h.running++
		}
	}
}

// authThrottle counts failed AUTH per client address (per /64 for IPv6):
// past limit failures, each within window of the last, the address is
// refused before bcrypt runs, until window passes without a failure.
// Within the limit, each failure pauses step times the recent failures
// (up to 8). It also notes the AUTH refused for want of a bcrypt slot: an
// address refused so busySuspect times within busyMemory is hammering, and
// is suspect (see hashSlots) as one that has failed is.
type authThrottle struct {
	step      time.Duration
	limit     int // 0: none
	window    time.Duration
	mu        sync.Mutex
	ips       map[netip.Addr]*authFailures
	nextPrune int // map size at which stale entries are dropped
}

type authFailures struct {
	count     int       // failures
	last      time.Time // of the last failure
	busy      int       // AUTH refused for want of a slot, since busySince
	busySince time.Time
}

const (
	// defaultAuthFailureWindow is the window when none is configured.
	defaultAuthFailureWindow = 15 * time.Minute
	busyMemory               = 10 * time.Second
	busySuspect              = 3
)

func newAuthThrottle(step time.Duration, limit int, window time.Duration) *authThrottle {
	return &authThrottle{step: step, limit: limit, window: cmp.Or(window, defaultAuthFailureWindow),
		ips: map[netip.Addr]*authFailures{}, nextPrune: 10000}
}

// authKey is what failures are counted under: one IPv6 client holds a
// whole /64.
func authKey(ip netip.Addr) netip.Addr {
	if ip.Is6() && !ip.Is4In6() {
		p, _ := ip.Prefix(64)
		return p.Addr()
	}
	return ip
}

// entry returns ip's counts with what is past forgotten, nil when there
// are none unless create; called with a.mu held.
func (a *authThrottle) entry(ip netip.Addr, now time.Time, create bool) *authFailures {
	k := authKey(ip)
	f := a.ips[k]
	if f == nil {
		if !create {
			return nil
		}
		if len(a.ips) >= a.nextPrune { // bound memory under a spray of addresses
			for k, f := range a.ips {
				if now.Sub(f.last) > a.window && now.Sub(f.busySince) > busyMemory {
					delete(a.ips, k)
				}
			}
			a.nextPrune = max(10000, 2*len(a.ips))
		}
		f = &authFailures{}
		a.ips[k] = f
	}
	if now.Sub(f.last) > a.window {
		f.count = 0
	}
	if now.Sub(f.busySince) > busyMemory {
		f.busy = 0
	}
	return f
}

// allowed says whether ip may try AUTH now, and whether it is suspect: it
// has failed recently, or keeps trying while no slot is free.
func (a *authThrottle) allowed(ip netip.Addr, now time.Time) (suspect, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f := a.entry(ip, now, false)
	if f == nil {
		return false, true
	}
	return f.count > 0 || f.busy >= busySuspect, a.limit <= 0 || f.count < a.limit
}

// failed records a failure and returns how long to pause before replying.
func (a *authThrottle) failed(ip netip.Addr, now time.Time) time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	f := a.entry(ip, now, true)
	f.count++
	f.last = now
	return a.step * time.Duration(min(f.count, 8))
}

// busy records an AUTH refused for want of a bcrypt slot.
func (a *authThrottle) busy(ip netip.Addr, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f := a.entry(ip, now, true)
	if f.busy == 0 {
		f.busySince = now
	}
	f.busy++
}
