package policy

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/certgate/certgate/clock"
	"github.com/certgate/certgate/config"
)

// Policy holds the providers, the lanes and the retry schedule of one
// certgate process. It is safe for concurrent use.
type Policy struct {
	providers []*provider          // match order; the catch-all excluded
	byDomain  map[string]*provider // first provider listing each domain
	catchAll  *provider

	schedule []time.Duration
	maxAge   time.Duration
	jitter   float64
	rnd      func() float64 // uniform in [0, 1); replaced in tests

	clk   timeSource
	lim   Limiter
	mu    sync.RWMutex
	lanes map[string]*Lane
}

// Options are what a policy takes besides configuration.
type Options struct {
	// Clock times the lanes: their rate, the concurrency cap's minute and
	// the throttling backoff's cool-down. nil means clock.Real.
	Clock clock.Clock
	// Limiter holds the limit state lanes share: rate reservations and
	// connection slots. nil means a new LocalLimiter (one process).
	Limiter Limiter
	// Rules are the configuration's reply rules for every provider
	// (config's top-level rules).
	Rules []config.ReplyRule
	// TenantWarmups are the tenants' own warm-ups (tenants[].warmup), by
	// tenant name.
	TenantWarmups map[string]*config.Warmup
}

// New builds a policy. providers are config.ResolveProviders's result
// (match order, the catch-all last) and retry is config's delivery.retry:
// both already valid, as config.Load leaves them, so New checks nothing.
// For tests:
//
//	policy.New(config.ResolveProviders(nil), config.DefaultRetry(), policy.Options{})
//
// New panics when providers lack the catch-all, which only a caller that
// skipped ResolveProviders can cause.
func New(providers []config.Provider, retry config.Retry, opts Options) *Policy {
	clk := opts.Clock
	if clk == nil {
		clk = clock.Real
	}
	lim := opts.Limiter
	if lim == nil {
		lim = NewLocalLimiter()
	}
	p := &Policy{
		byDomain: map[string]*provider{},
		maxAge:   retry.MaxAge.D(),
		jitter:   retry.Jitter,
		rnd:      rand.Float64,
		clk:      clockSource{clk},
		lim:      lim,
		lanes:    map[string]*Lane{},
	}
	for _, d := range retry.Schedule {
		p.schedule = append(p.schedule, d.D())
	}
	for _, c := range providers {
		pr := compileProvider(c, opts.Rules)
		for tenant, w := range opts.TenantWarmups {
			if w != nil && w.Covers(c.Name) {
				if pr.limits.tenantWarmups == nil {
					pr.limits.tenantWarmups = map[string]*warmup{}
				}
				pr.limits.tenantWarmups[tenant] = compileWarmup(w)
			}
		}
		if c.Name == config.CatchAllProvider {
			p.catchAll = pr
			continue
		}
		for _, d := range c.Domains {
			d = normName(d)
			if _, taken := p.byDomain[d]; !taken {
				p.byDomain[d] = pr
			}
		}
		p.providers = append(p.providers, pr)
	}
	if p.catchAll == nil {
		panic(fmt.Sprintf("policy.New: no %q provider; pass config.ResolveProviders's result", config.CatchAllProvider))
	}
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
		return p.lane(pr.name, pr.name, pr.limits)
	}
	return p.lane(p.catchAll.name, p.catchAll.name+"/"+domain, p.catchAll.limits)
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

func (p *Policy) lane(name, key string, lim limits) *Lane {
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
	l = newLane(name, key, lim, p.clk, p.lim)
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

// ProviderLane is the lane of a named provider (not the catch-all, whose
// lanes are per recipient domain), made if it was not yet; false for a
// name no provider has.
func (p *Policy) ProviderLane(name string) (*Lane, bool) {
	for _, pr := range p.providers {
		if pr.name == name {
			return p.lane(pr.name, pr.name, pr.limits), true
		}
	}
	return nil, false
}
