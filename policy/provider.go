package policy

import (
	"math"
	"strings"
	"time"

	"github.com/certgate/certgate/config"
)

// provider is a configured provider compiled for matching: its MX rules,
// and its limits as lanes use them.
type provider struct {
	name   string
	rules  []mxRule
	limits limits
}

// limits are a lane's configured limits and reactions.
type limits struct {
	rate      float64 // messages per second; +Inf means unlimited
	connLimit int
	maxDels   int
	rules     []config.ReplyRule // in the order they are tried
	recovery  recovery
	placement config.PlacementRule
	warmup    *warmup // nil: none
	// tenantWarmups are the tenants' own warm-ups that hold this lane.
	tenantWarmups map[string]*warmup
}

// warmup is config.Warmup in the lane's terms.
type warmup struct {
	start    time.Time // the first day's midnight
	loc      *time.Location
	schedule []int
}

// compileProvider compiles a provider; every is the configuration's rules
// for every provider, tried after the provider's own and before the
// built-in ones.
func compileProvider(c config.Provider, every []config.ReplyRule) *provider {
	var rules []config.ReplyRule
	rules = append(rules, c.Rules...)
	rules = append(rules, every...)
	rules = append(rules, config.BuiltinRules(c.Name)...)
	rc := recovery{step: config.DefaultRecoveryStep, interval: config.DefaultRecoveryInterval.D()}
	if c.Recovery != nil {
		rc = recovery{step: c.Recovery.Step, interval: c.Recovery.Interval.D()}
	}
	pl := config.DefaultPlacementRule()
	if c.Placement != nil {
		pl = *c.Placement
	}
	p := &provider{name: c.Name, limits: limits{
		rate:      perSecond(c.MaxMessageRate),
		connLimit: c.ConnectionLimit,
		maxDels:   c.MaxDeliveriesPerConnection,
		rules:     rules,
		recovery:  rc,
		placement: pl,
		warmup:    compileWarmup(c.Warmup),
	}}
	for _, s := range c.MXSuffixes {
		p.rules = append(p.rules, compileMXRule(s))
	}
	return p
}

// compileWarmup is w in the lane's terms; nil for nil.
func compileWarmup(w *config.Warmup) *warmup {
	if w == nil {
		return nil
	}
	start, loc := w.Begins()
	return &warmup{start: start, loc: loc, schedule: w.Schedule}
}

// perSecond is r in messages per second; a zero Count is unlimited (+Inf).
func perSecond(r config.Rate) float64 {
	if r.Count == 0 {
		return inf
	}
	return float64(r.Count) / r.Period.Seconds()
}

func (p *provider) matchMX(host string) bool {
	for _, r := range p.rules {
		if r.match(host) {
			return true
		}
	}
	return false
}

// normName normalises a domain or host name for matching: lower case, no
// surrounding space, no trailing dot.
func normName(s string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), ".")
}

// mxRule is one compiled entry of config.Provider.MXSuffixes: a suffix
// matched on a label boundary, or a substring ("*zimbra*").
type mxRule struct {
	pattern   string
	substring bool
}

func compileMXRule(s string) mxRule {
	s = strings.ToLower(strings.TrimSpace(s))
	if strings.HasPrefix(s, "*") {
		return mxRule{pattern: strings.Trim(s, "*"), substring: true}
	}
	return mxRule{pattern: strings.TrimSuffix(s, ".")}
}

// match reports whether the normalised host name matches the rule.
func (r mxRule) match(host string) bool {
	if host == "" {
		return false
	}
	if r.substring {
		return strings.Contains(host, r.pattern)
	}
	bare := strings.TrimPrefix(r.pattern, ".")
	return host == bare || strings.HasSuffix(host, "."+bare)
}

var inf = math.Inf(1)

func isUnlimited(rate float64) bool { return math.IsInf(rate, 1) }
