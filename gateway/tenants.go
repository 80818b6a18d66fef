package gateway

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

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
	for _, tc := range tenants {
		t := &Tenant{Name: tc.Name, DefaultClass: tc.DefaultClass}
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

// authKey is what failures are counted under: one IPv6 client holds a
// whole /64.
func authKey(ip netip.Addr) netip.Addr {
	if ip.Is6() && !ip.Is4In6() {
		p, _ := ip.Prefix(64)
		return p.Addr()
	}
	return ip
}

// failed records a failure and returns how long to pause before replying.
func (a *authThrottle) failed(ip netip.Addr, now time.Time) time.Duration {
	ip = authKey(ip)
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
