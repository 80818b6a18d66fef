package gateway

import (
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

	owners config.DomainOwners // every tenant's claims; nil: FromDomains alone
	rate   *rate.Limiter       // transactions it may start; nil: unlimited
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
	dummy, err := bcrypt.GenerateFromPassword([]byte("certgate-dummy"), bcrypt.DefaultCost)
	if err != nil {
		return nil, err
	}
	d.dummy = dummy
	owners := config.NewDomainOwners(tenants)
	for _, tc := range tenants {
		t := &Tenant{Name: tc.Name, DefaultClass: tc.DefaultClass, Classes: tc.Classes, MaxQueued: tc.MaxQueued,
			owners: owners, rate: newRateLimiter(tc.MaxMessageRate)}
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

// Authenticate checks a username and password and returns the user's tenant.
func (d *Directory) Authenticate(username, password string) (*Tenant, bool) {
	u, ok := d.users[username]
	if !ok {
		bcrypt.CompareHashAndPassword(d.dummy, []byte(password))
		return nil, false
	}
	mac := hmac.New(sha256.New, d.cacheKey)
	mac.Write([]byte(username))
	mac.Write([]byte{0})
	mac.Write([]byte(password))
	sum := mac.Sum(nil)
	d.mu.Lock()
	cached, hit := d.verified[username]
	d.mu.Unlock()
	if hit && hmac.Equal(cached, sum) {
		return u.tenant, true
	}
	if bcrypt.CompareHashAndPassword(u.hash, []byte(password)) != nil {
		return nil, false
	}
	d.mu.Lock()
	d.verified[username] = sum
	d.mu.Unlock()
	return u.tenant, true
}

// authThrottle slows down clients that fail AUTH: each failure from an
// address adds one step of delay (capped at 8), and the count decays after a
// quiet quarter of an hour.
type authThrottle struct {
	step time.Duration
	mu   sync.Mutex
	ips  map[netip.Addr]*authFailures
}

type authFailures struct {
	count int
	last  time.Time
}

const authFailureMemory = 15 * time.Minute

func newAuthThrottle(step time.Duration) *authThrottle {
	return &authThrottle{step: step, ips: map[netip.Addr]*authFailures{}}
}

// failed records a failure and returns how long to pause before replying.
func (a *authThrottle) failed(ip netip.Addr, now time.Time) time.Duration {
	if ip.Is6() && !ip.Is4In6() {
		// One IPv6 client holds a whole /64: count failures per network.
		p, _ := ip.Prefix(64)
		ip = p.Addr()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.ips) > 10000 { // bound memory under a spray of addresses
		for k, f := range a.ips {
			if now.Sub(f.last) > authFailureMemory {
				delete(a.ips, k)
			}
		}
	}
	f := a.ips[ip]
	if f == nil || now.Sub(f.last) > authFailureMemory {
		f = &authFailures{}
		a.ips[ip] = f
	}
	f.count++
	f.last = now
	return a.step * time.Duration(min(f.count, 8))
}
