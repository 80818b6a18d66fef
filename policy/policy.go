package policy

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/certgate/certgate/config"
)

// Policy holds the providers, the lanes and the retry schedule of one
// certgate process. It is safe for concurrent use.
type Policy struct {
	providers []*provider          // match order: configured, then built-in; catch-all excluded
	byDomain  map[string]*provider // first provider listing each domain
	catchAll  *provider

	schedule []time.Duration
	maxAge   time.Duration
	jitter   float64
	rnd      func() float64 // uniform in [0, 1); replaced in tests

	clk   clock
	mu    sync.RWMutex
	lanes map[string]*Lane
}

// provider is a Provider with its MX rules compiled.
type provider struct {
	Provider
	rules []mxRule
}

func (p *provider) matchMX(host string) bool {
	for _, r := range p.rules {
		if r.match(host) {
			return true
		}
	}
	return false
}

// Default retry settings, used when the configuration leaves them empty
// (the configuration shape's example). RFC 5321 section 4.5.4.1 suggests
// retrying at least 30 minutes apart and giving up after 4-5 days; mail that
// unlocks a customer's purchase is worth retrying sooner, and an issuer
// wants to know within three days that a certificate did not arrive.
var (
	DefaultRetrySchedule = []time.Duration{
		time.Minute, 5 * time.Minute, 15 * time.Minute, 30 * time.Minute,
		time.Hour, 2 * time.Hour, 4 * time.Hour,
	}
	DefaultRetryMaxAge = 72 * time.Hour
)

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]*$`)

// New builds a policy from the configured providers and retry settings.
// config.ResolveProviders merges the providers into the built-ins.
//
// Empty retry settings take DefaultRetrySchedule and DefaultRetryMaxAge.
// All errors are reported together.
func New(cfg []config.Provider, retry config.Retry) (*Policy, error) {
	var errs []error
	overridden := map[string]bool{}
	for i, c := range cfg {
		name := strings.ToLower(strings.TrimSpace(c.Name))
		where := fmt.Sprintf("providers[%d] (%s)", i, c.Name)
		if !nameRE.MatchString(name) {
			errs = append(errs, fmt.Errorf("%s: name must be lower-case letters, digits, '.', '_' or '-'", where))
			continue
		}
		if overridden[name] {
			errs = append(errs, fmt.Errorf("%s: provider configured twice", where))
			continue
		}
		overridden[name] = true
		if _, err := rateOf(c.MaxMessageRate); err != nil {
			errs = append(errs, fmt.Errorf("%s: max_message_rate: %w", where, err))
		}
		if c.ConnectionLimit < 0 {
			errs = append(errs, fmt.Errorf("%s: connection_limit must not be negative", where))
		}
		if c.MaxDeliveriesPerConnection < 0 {
			errs = append(errs, fmt.Errorf("%s: max_deliveries_per_connection must not be negative", where))
		}
		for _, s := range c.MXSuffixes {
			if _, ok := compileMXRule(s); !ok {
				errs = append(errs, fmt.Errorf("%s: mx_suffixes: %q matches nothing useful", where, s))
			}
		}
		for _, d := range c.Domains {
			if normName(d) == "" {
				errs = append(errs, fmt.Errorf("%s: domains: empty domain", where))
			}
		}
		isBuiltin := slices.ContainsFunc(config.BuiltinProviders(), func(b config.Provider) bool { return b.Name == name })
		if name == CatchAll && (len(c.Domains) > 0 || len(c.MXSuffixes) > 0) {
			errs = append(errs, fmt.Errorf("%s: the catch-all matches every other domain; it takes limits only", where))
		}
		if !isBuiltin && len(c.Domains) == 0 && len(c.MXSuffixes) == 0 {
			errs = append(errs, fmt.Errorf("%s: a new provider needs domains or mx_suffixes to match anything", where))
		}
	}

	schedule, maxAge, jitter, rerrs := retrySettings(retry)
	errs = append(errs, rerrs...)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	pol := &Policy{
		byDomain: map[string]*provider{},
		schedule: schedule,
		maxAge:   maxAge,
		jitter:   jitter,
		rnd:      rand.Float64,
		clk:      realClock{},
		lanes:    map[string]*Lane{},
	}
	for _, c := range config.ResolveProviders(cfg) {
		rate, _ := rateOf(c.MaxMessageRate)
		cp := &provider{Provider: Provider{
			Name:                       c.Name,
			Domains:                    c.Domains,
			MXSuffixes:                 c.MXSuffixes,
			Rate:                       rate,
			ConnectionLimit:            c.ConnectionLimit,
			MaxDeliveriesPerConnection: c.MaxDeliveriesPerConnection,
		}}
		if c.Name == CatchAll {
			pol.catchAll = cp
			continue
		}
		for _, s := range c.MXSuffixes {
			r, _ := compileMXRule(s)
			cp.rules = append(cp.rules, r)
		}
		for _, d := range c.Domains {
			d = normName(d)
			if _, taken := pol.byDomain[d]; !taken {
				pol.byDomain[d] = cp
			}
		}
		pol.providers = append(pol.providers, cp)
	}
	return pol, nil
}

// rateOf converts a configured rate to messages per second; Count 0 is
// unlimited.
func rateOf(r config.Rate) (float64, error) {
	switch {
	case r.Count < 0:
		return 0, errors.New("count must not be negative")
	case r.Count == 0:
		return inf, nil
	case r.Period <= 0:
		return 0, errors.New("period must be positive")
	}
	return float64(r.Count) / r.Period.Seconds(), nil
}

// Providers returns the providers in match order, the catch-all last.
func (p *Policy) Providers() []Provider {
	out := make([]Provider, 0, len(p.providers)+1)
	for _, pr := range p.providers {
		out = append(out, clone(pr.Provider))
	}
	return append(out, clone(p.catchAll.Provider))
}

func clone(p Provider) Provider {
	p.Domains = slices.Clone(p.Domains)
	p.MXSuffixes = slices.Clone(p.MXSuffixes)
	return p
}

// Match returns the lane for a recipient domain whose MX hosts are mxHosts
// (most preferred first; nil when not looked up). The first rule that
// applies wins:
//
//  1. a provider listing the domain (exact, case-insensitive, trailing dot
//     ignored);
//  2. the first provider with an MX rule matching the first MX host;
//  3. the first provider with an MX rule matching any other MX host, in
//     host order;
//  4. the catch-all, with one lane per recipient domain ("default/<domain>")
//     so that one slow server cannot hold up mail to another.
//
// Named providers have one lane each. Lanes are created on first use and
// reused afterwards.
func (p *Policy) Match(domain string, mxHosts []string) *Lane {
	domain = normName(domain)
	if pr := p.matchProvider(domain, mxHosts); pr != nil {
		return p.lane(pr.Name, pr.Name, pr.Provider)
	}
	return p.lane(CatchAll, CatchAll+"/"+domain, p.catchAll.Provider)
}

func (p *Policy) matchProvider(domain string, mxHosts []string) *provider {
	if pr, ok := p.byDomain[domain]; ok {
		return pr
	}
	// Hosts in preference order, each against every provider in match
	// order: this is rules 2 and 3 in one loop.
	for _, h := range mxHosts {
		h = normName(h)
		for _, pr := range p.providers {
			if pr.matchMX(h) {
				return pr
			}
		}
	}
	return nil
}

func (p *Policy) lane(name, key string, pr Provider) *Lane {
	p.mu.RLock()
	l, ok := p.lanes[key]
	p.mu.RUnlock()
	if ok {
		return l
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if l, ok := p.lanes[key]; ok {
		return l
	}
	l = newLane(name, key, pr, p.clk)
	p.lanes[key] = l
	return l
}

// Lanes returns the lanes created so far, sorted by key.
func (p *Policy) Lanes() []*Lane {
	p.mu.RLock()
	out := make([]*Lane, 0, len(p.lanes))
	for _, l := range p.lanes {
		out = append(out, l)
	}
	p.mu.RUnlock()
	slices.SortFunc(out, func(a, b *Lane) int { return strings.Compare(a.key, b.key) })
	return out
}
