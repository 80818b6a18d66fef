package delivery

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/certgate/certgate/clock"
	"github.com/certgate/certgate/config"
)

// Resolver is the DNS the delivery engine needs. net.Resolver satisfies it
// in production; tests and the demo inject a static table.
type Resolver interface {
	LookupMX(ctx context.Context, domain string) ([]*net.MX, error)
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// Destination is where mail for one domain goes.
type Destination struct {
	Key     string   // equal keys may share a connection
	Hosts   []string // MX hosts in preference order, or the one static host
	Port    int
	MX      bool // Hosts came from MX records (used for provider matching)
	TLS     config.TLSMode
	RootCAs *x509.CertPool // verifies config.TLSRequired; nil means the system's
	User    string         // smarthost AUTH, "" for none
	Pass    string
}

// permanentError marks a routing failure that no retry can fix.
type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

// Route says how mail for some recipient domains leaves: the first route
// whose domains match wins ("*" matches every domain, ".example" a
// suffix). The binary builds routes from the validated configuration.
type Route struct {
	Domains []string // lower case, no trailing dot
	MX      bool     // look up the domain's MX hosts; else Host:Port
	Host    string
	Port    int
	TLS     config.TLSMode
	RootCAs *x509.CertPool // verifies config.TLSRequired; nil means the system's
	User    string         // smarthost AUTH, "" for none
	Pass    string
}

// Router maps recipient domains to destinations: the first route whose
// domains match wins, and an MX route asks the resolver. Answers are
// cached for a few minutes.
type Router struct {
	routes   []Route
	resolver Resolver
	mxPort   int
	clock    clock.Clock

	mu       sync.Mutex
	cache    map[string]cachedDest
	inflight map[string]*resolveCall // one lookup per domain at a time
	ttl      time.Duration
}

type resolveCall struct {
	done chan struct{}
	dest *Destination
	err  error
}

type cachedDest struct {
	dest    *Destination
	err     error
	expires time.Time
}

// NewRouter builds a router over routes, delivering MX routes to mxPort
// (25 but in tests); clk times its cache (nil: the wall clock).
func NewRouter(routes []Route, mxPort int, resolver Resolver, clk clock.Clock) *Router {
	if clk == nil {
		clk = clock.Real
	}
	return &Router{routes: routes, resolver: resolver, mxPort: mxPort, clock: clk,
		cache: map[string]cachedDest{}, inflight: map[string]*resolveCall{}, ttl: 5 * time.Minute}
}

func (r *Router) match(domain string) (int, *Route) {
	for i := range r.routes {
		for _, d := range r.routes[i].Domains {
			if d == "*" || d == domain || (strings.HasPrefix(d, ".") && strings.HasSuffix(domain, d)) {
				return i, &r.routes[i]
			}
		}
	}
	return -1, nil
}

// Resolve returns the destination for a recipient domain. A permanentError
// means the domain cannot receive mail at all. A wave of recipients at one
// domain shares one lookup.
func (r *Router) Resolve(ctx context.Context, domain string) (*Destination, error) {
	now := r.clock.Now()
	r.mu.Lock()
	if c, ok := r.cache[domain]; ok && now.Before(c.expires) {
		r.mu.Unlock()
		return c.dest, c.err
	}
	if call, ok := r.inflight[domain]; ok {
		r.mu.Unlock()
		select {
		case <-call.done:
			return call.dest, call.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	call := &resolveCall{done: make(chan struct{})}
	r.inflight[domain] = call
	r.mu.Unlock()

	call.dest, call.err = r.resolve(ctx, domain)
	ttl := r.ttl
	if call.err != nil {
		ttl = 30 * time.Second // retry lookups soon after a failure
	}
	r.mu.Lock()
	delete(r.inflight, domain)
	if ctx.Err() == nil { // a lookup cut short by shutdown says nothing
		r.cache[domain] = cachedDest{call.dest, call.err, now.Add(ttl)}
	}
	r.mu.Unlock()
	close(call.done)
	return call.dest, call.err
}

func (r *Router) resolve(ctx context.Context, domain string) (*Destination, error) {
	index, rt := r.match(domain)
	if rt == nil {
		return nil, permanentError{fmt.Errorf("no delivery route matches %s", domain)}
	}
	d := &Destination{TLS: rt.TLS, RootCAs: rt.RootCAs, User: rt.User, Pass: rt.Pass}
	// Connections are shared by key; the route is part of it so that a
	// connection made under one route's TLS and login never carries mail
	// another route would send differently.
	prefix := "route" + strconv.Itoa(index) + "/"
	if !rt.MX {
		d.Hosts, d.Port = []string{rt.Host}, rt.Port
		d.Key = prefix + "host:" + net.JoinHostPort(rt.Host, strconv.Itoa(rt.Port))
		return d, nil
	}
	d.MX, d.Port = true, r.mxPort
	mxs, err := r.resolver.LookupMX(ctx, domain)
	var dnsErr *net.DNSError
	switch {
	case err != nil && errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		// Go reports a domain without MX records like one that does not
		// exist; an address record tells them apart (implicit MX below).
		addrs, herr := r.resolver.LookupHost(ctx, domain)
		var hostErr *net.DNSError
		if herr != nil && !(errors.As(herr, &hostErr) && hostErr.IsNotFound) {
			return nil, fmt.Errorf("address lookup for %s: %w", domain, herr) // temporary
		}
		if len(addrs) == 0 {
			return nil, permanentError{fmt.Errorf("domain %s has no MX and no address records", domain)}
		}
		mxs = nil
	case err != nil:
		return nil, fmt.Errorf("MX lookup for %s: %w", domain, err)
	}
	if len(mxs) == 1 && (mxs[0].Host == "." || mxs[0].Host == "") {
		return nil, permanentError{fmt.Errorf("domain %s accepts no mail (null MX, RFC 7505)", domain)}
	}
	if len(mxs) == 0 {
		// RFC 5321 5.1: no MX records, the domain itself is the implicit MX.
		d.Hosts = []string{domain}
	} else {
		// RFC 5321 5.1: lowest preference first, equal preferences shuffled.
		rand.Shuffle(len(mxs), func(i, j int) { mxs[i], mxs[j] = mxs[j], mxs[i] })
		sort.SliceStable(mxs, func(i, j int) bool { return mxs[i].Pref < mxs[j].Pref })
		for _, mx := range mxs {
			d.Hosts = append(d.Hosts, strings.ToLower(strings.TrimSuffix(mx.Host, ".")))
		}
	}
	key := append([]string(nil), d.Hosts...)
	sort.Strings(key)
	d.Key = prefix + "mx:" + strings.Join(key, ",")
	return d, nil
}

// StaticResolver answers from fixed tables, for tests, staging and the demo.
type StaticResolver struct {
	MX    map[string][]string // domain -> hosts in preference order
	Hosts map[string][]string // host -> addresses
}

func (s StaticResolver) LookupMX(_ context.Context, domain string) ([]*net.MX, error) {
	hosts, ok := s.MX[strings.ToLower(strings.TrimSuffix(domain, "."))]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: domain, IsNotFound: true}
	}
	var out []*net.MX
	for i, h := range hosts {
		out = append(out, &net.MX{Host: h, Pref: uint16(10 * (i + 1))})
	}
	return out, nil
}

func (s StaticResolver) LookupHost(_ context.Context, host string) ([]string, error) {
	if ip := net.ParseIP(host); ip != nil {
		return []string{host}, nil
	}
	addrs, ok := s.Hosts[strings.ToLower(strings.TrimSuffix(host, "."))]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return addrs, nil
}
