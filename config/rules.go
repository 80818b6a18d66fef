package config

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// RuleAction is what a reply rule does to its lane.
type RuleAction string

const (
	// ActionSlow multiplies the lane's rate by the rule's factor, not
	// below its floor, for the rule's time; then the rate climbs back.
	ActionSlow RuleAction = "slow"
	// ActionSuspend sends no bulk (with all: no mail) for the rule's
	// time: to the lane, or with per_tenant to the replying message's
	// tenant on the lane. Mail stays queued.
	ActionSuspend RuleAction = "suspend"
	// ActionSet sets the lane's connection limit and deliveries per
	// connection for the rule's time.
	ActionSet RuleAction = "set"
	// ActionDefer retries a 5xx reply that means "not now" instead of
	// bouncing it.
	ActionDefer RuleAction = "defer"
	// ActionAlert only reports: an event and a metric.
	ActionAlert RuleAction = "alert"
	// ActionIgnore matches a reply so that no later rule takes it: a
	// greylisting 451 or Gmail's per-user 450 must not slow a lane.
	ActionIgnore RuleAction = "ignore"
)

// ReplyRule is one rule on receivers' replies: when its expression matches
// the reply ("CODE ENHANCED text", such as "421 4.7.28 Our system has
// detected...") Threshold times within its window, it acts on the lane.
type ReplyRule struct {
	Name      string     `yaml:"name"`
	Match     string     `yaml:"match"`     // a Go regular expression (RE2)
	Threshold Threshold  `yaml:"threshold"` // "3/5m"; default: every match
	Action    RuleAction `yaml:"action"`
	Factor    float64    `yaml:"factor"` // slow: the rate is multiplied by it (0 < factor < 1)
	Floor     Rate       `yaml:"floor"`  // slow: never below this rate
	For       Duration   `yaml:"for"`    // how long the action holds
	// All, with suspend, holds transactional mail too.
	All bool `yaml:"all"`
	// PerTenant, with suspend, holds only the replying message's tenant:
	// an authentication failure is that tenant's DNS, not the lane's.
	PerTenant     bool `yaml:"per_tenant"`
	Connections   int  `yaml:"connections"`    // set: the connection limit
	PerConnection int  `yaml:"per_connection"` // set: deliveries per connection
	// Defer retries a 5xx reply this rule matches instead of bouncing it
	// (the defer action is exactly that; any other action may add it).
	Defer bool `yaml:"defer"`
	// Alert reports the match as an alert besides acting (the alert
	// action is exactly that).
	Alert  bool   `yaml:"alert"`
	Reason string `yaml:"reason"` // why, in the events and the lane's state

	re *regexp.Regexp
}

// Regexp is the rule's compiled expression (after validation).
func (r *ReplyRule) Regexp() *regexp.Regexp {
	if r.re == nil {
		r.re = regexp.MustCompile(r.Match)
	}
	return r.re
}

// Threshold is a count of matches within a window: "3/5m". The zero value
// (and "1") is every match.
type Threshold struct {
	Count  int
	Window time.Duration
}

// ParseThreshold parses "N" or "N/DURATION" (3/5m, 10/1h).
func ParseThreshold(s string) (Threshold, error) {
	s = strings.TrimSpace(s)
	num, win, hasWin := strings.Cut(s, "/")
	n, err := strconv.Atoi(strings.TrimSpace(num))
	if err != nil || n < 1 {
		return Threshold{}, fmt.Errorf("%q is not a threshold; write a count and a window such as 3/5m", s)
	}
	t := Threshold{Count: n}
	if hasWin {
		d, err := time.ParseDuration(strings.TrimSpace(win))
		if err != nil || d <= 0 {
			return Threshold{}, fmt.Errorf("%q: the window must be a duration such as 5m", s)
		}
		t.Window = d
	} else if n > 1 {
		return Threshold{}, fmt.Errorf("%q: %d matches within what time? write a window such as %d/5m", s, n, n)
	}
	return t, nil
}

func (t Threshold) String() string {
	if t.Window == 0 {
		return strconv.Itoa(max(t.Count, 1))
	}
	return fmt.Sprintf("%d/%s", t.Count, t.Window)
}

// UnmarshalYAML reads a threshold written as in ParseThreshold.
func (t *Threshold) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return nodeError(n, "expected a threshold such as 3/5m, got %s", kindName(n))
	}
	v, err := ParseThreshold(n.Value)
	if err != nil {
		return nodeError(n, "%v", err)
	}
	*t = v
	return nil
}

// MarshalYAML writes it back as it is read.
func (t Threshold) MarshalYAML() (any, error) { return t.String(), nil }

// Recovery is how a lane climbs back to its configured rate once a
// slowdown is over: Step of the configured rate every Interval while the
// lane stays clean (additive increase; a fresh bad signal cuts the rate
// again: multiplicative decrease).
type Recovery struct {
	Step     float64  `yaml:"step"` // a share of the configured rate, 0 < step <= 1
	Interval Duration `yaml:"interval"`
}

// Defaults of the rules and of recovery.
const (
	DefaultRuleFactor       = 0.5
	DefaultRuleFor          = Duration(5 * time.Minute)
	DefaultRecoveryStep     = 0.25
	DefaultRecoveryInterval = Duration(5 * time.Minute)
	maxRules                = 200
	maxRuleExprLength       = 1024
)

// DefaultRuleFloor is the least rate a slow rule leaves: one a minute.
var DefaultRuleFloor = Rate{Count: 1, Period: time.Minute}

func (r *ReplyRule) applyDefaults(f filler, at string) {
	if r.Action == ActionSlow {
		fill(f, at+".factor", &r.Factor, DefaultRuleFactor)
		if r.Floor.Count == 0 {
			r.Floor = DefaultRuleFloor
		}
	}
	switch r.Action {
	case ActionSlow, ActionSuspend, ActionSet:
		fill(f, at+".for", &r.For, DefaultRuleFor)
	}
	if r.Threshold.Count == 0 {
		r.Threshold.Count = 1
	}
}

func applyRuleDefaults(f filler, at string, rules []ReplyRule) {
	for i := range rules {
		rules[i].applyDefaults(f, indexPath(at, i))
	}
}

// ruleName is the form of a rule's name: it labels a metric.
var ruleName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// rules checks a list of reply rules at path at.
func (v *validator) rules(at string, rules []ReplyRule) {
	if len(rules) > maxRules {
		v.add(at, "at most %d rules, not %d", maxRules, len(rules))
		return
	}
	names := map[string]int{}
	for i := range rules {
		r := &rules[i]
		rp := indexPath(at, i)
		switch k, dup := names[r.Name]; {
		case !ruleName.MatchString(r.Name):
			v.add(rp+".name", "%q: use lower-case letters, digits, _ and -", r.Name)
		case dup:
			v.add(rp+".name", "%q is already the name of %s", r.Name, indexPath(at, k))
		default:
			names[r.Name] = i
		}
		switch re, err := regexp.Compile(r.Match); {
		case r.Match == "":
			v.add(rp+".match", "required: a regular expression on the reply, such as '^421 4\\.7\\.28 '")
		case len(r.Match) > maxRuleExprLength:
			v.add(rp+".match", "at most %d characters", maxRuleExprLength)
		case err != nil:
			v.add(rp+".match", "not a regular expression: %v", err)
		default:
			r.re = re
		}
		v.ruleAction(rp, r)
	}
}

func (v *validator) ruleAction(rp string, r *ReplyRule) {
	switch r.Action {
	case ActionSlow:
		if !(r.Factor > 0 && r.Factor < 1) {
			v.add(rp+".factor", "must be between 0 and 1 (0.5 halves the rate), not %v", r.Factor)
		}
	case ActionSuspend:
		if r.All && r.PerTenant {
			v.addAbout(rp, []string{"all", "per_tenant"}, "a tenant's suspension holds its bulk only; all is for the lane")
		}
	case ActionSet:
		if r.Connections <= 0 && r.PerConnection <= 0 {
			v.addAbout(rp, []string{"connections", "per_connection"}, "set needs connections or per_connection")
		}
		if r.Connections < 0 || r.PerConnection < 0 {
			v.addAbout(rp, []string{"connections", "per_connection"}, "must not be negative")
		}
	case ActionDefer, ActionAlert, ActionIgnore:
	case "":
		v.add(rp+".action", "required: slow, suspend, set, defer, alert or ignore")
	default:
		v.add(rp+".action", "%q is not an action: slow, suspend, set, defer, alert or ignore", r.Action)
	}
	switch r.Action {
	case ActionSlow, ActionSuspend, ActionSet:
		if r.For.D() < time.Second || r.For.D() > 7*24*time.Hour {
			v.add(rp+".for", "must be from 1s to 168h, not %s", r.For)
		}
	}
	if r.Threshold.Count > 1000 || r.Threshold.Window > 24*time.Hour {
		v.add(rp+".threshold", "at most 1000 matches within at most 24h")
	}
}

// checkRecovery checks a provider's recovery at path at.
func (v *validator) checkRecovery(at string, r *Recovery) {
	if r == nil {
		return
	}
	if !(r.Step > 0 && r.Step <= 1) {
		v.add(at+".step", "must be a share of the configured rate above 0 and at most 1, not %v", r.Step)
	}
	if r.Interval.D() < time.Second || r.Interval.D() > 24*time.Hour {
		v.add(at+".interval", "must be from 1s to 24h, not %s", r.Interval)
	}
}

// PlacementRule is a provider's rule on where its seed copies land: when
// the inbox's share of the last Window copies (once MinSample are known)
// falls below Below, the lane's bulk is slowed or suspended and an alert
// raised. A Gmail tab counts as inbox; junk, other folders and missing
// copies do not.
type PlacementRule struct {
	Window    int        `yaml:"window"`
	MinSample int        `yaml:"min_sample"`
	Below     float64    `yaml:"below"`  // an inbox share, 0 to 1
	Action    RuleAction `yaml:"action"` // slow or suspend
	Factor    float64    `yaml:"factor"` // slow: the rate is multiplied by it
	For       Duration   `yaml:"for"`
}

// Defaults of placement rules: on for every provider with seed copies.
const (
	DefaultPlacementWindow    = 20
	DefaultPlacementMinSample = 5
	DefaultPlacementBelow     = 0.5
	DefaultPlacementAction    = ActionSlow
	DefaultPlacementFor       = Duration(30 * time.Minute)
)

// DefaultPlacementRule is the placement rule of a provider that sets none.
func DefaultPlacementRule() PlacementRule {
	return PlacementRule{Window: DefaultPlacementWindow, MinSample: DefaultPlacementMinSample, Below: DefaultPlacementBelow,
		Action: DefaultPlacementAction, Factor: DefaultRuleFactor, For: DefaultPlacementFor}
}

func (r *PlacementRule) applyDefaults(f filler, at string) {
	fill(f, at+".window", &r.Window, DefaultPlacementWindow)
	fill(f, at+".min_sample", &r.MinSample, DefaultPlacementMinSample)
	fill(f, at+".below", &r.Below, DefaultPlacementBelow)
	fill(f, at+".action", &r.Action, DefaultPlacementAction)
	fill(f, at+".factor", &r.Factor, DefaultRuleFactor)
	fill(f, at+".for", &r.For, DefaultPlacementFor)
}

func (v *validator) placementRule(at string, r *PlacementRule) {
	if r == nil {
		return
	}
	if r.Window < 1 || r.Window > 1000 {
		v.add(at+".window", "must be from 1 to 1000 copies, not %d", r.Window)
	}
	if r.MinSample < 1 || r.MinSample > r.Window {
		v.add(at+".min_sample", "must be from 1 to the window (%d), not %d", r.Window, r.MinSample)
	}
	if !(r.Below > 0 && r.Below <= 1) {
		v.add(at+".below", "must be an inbox share above 0 and at most 1, not %v", r.Below)
	}
	switch r.Action {
	case ActionSlow:
		if !(r.Factor > 0 && r.Factor < 1) {
			v.add(at+".factor", "must be between 0 and 1, not %v", r.Factor)
		}
	case ActionSuspend:
	default:
		v.add(at+".action", "must be slow or suspend, not %q", r.Action)
	}
	if r.For.D() < time.Second || r.For.D() > 7*24*time.Hour {
		v.add(at+".for", "must be from 1s to 168h, not %s", r.For)
	}
}

// Warmup is a provider's warm-up schedule: a new sending IP or domain
// earns its reputation by volume growing day by day. Each day (from
// Start, in Timezone) the lane sends at most that day's count of bulk
// mail; the rest stays queued for the next day. Transactional mail is
// never held by it. After the last day, the lane's rate alone applies.
//
// A tenant's warm-up (tenants[].warmup: a new From domain earns its own
// reputation) caps that tenant's bulk on each provider's lane, counted
// per provider, on top of the lane's own.
type Warmup struct {
	Start    string `yaml:"start"`    // a date, 2026-12-01
	Timezone string `yaml:"timezone"` // an IANA zone; default UTC
	Schedule []int  `yaml:"schedule"` // bulk messages per day: 50, 100, 250, ...
	// Providers limits a tenant's warm-up to these named providers;
	// empty: every named provider. Not for a provider's own warm-up.
	Providers []string `yaml:"providers"`
}

// Covers reports whether a tenant's warm-up holds mail to provider.
func (w *Warmup) Covers(provider string) bool {
	return provider != CatchAllProvider && (len(w.Providers) == 0 || slices.Contains(w.Providers, provider))
}

// DefaultWarmupTimezone is the zone warm-up days run in by default.
const DefaultWarmupTimezone = "UTC"

// Begins is the first day's midnight in the schedule's zone (after
// validation).
func (w *Warmup) Begins() (time.Time, *time.Location) {
	loc, err := time.LoadLocation(w.Timezone)
	if err != nil {
		loc = time.UTC
	}
	day, err := time.ParseInLocation("2006-01-02", w.Start, loc)
	if err != nil {
		return time.Time{}, loc
	}
	return day, loc
}

// tenantWarmups checks every tenants[].warmup against the providers.
func (v *validator) tenantWarmups(c *Config) {
	providers := map[string]bool{}
	for _, p := range ResolveProviders(c.Providers) {
		providers[p.Name] = true
	}
	for i, t := range c.Tenants {
		v.warmup(indexPath("tenants", i)+".warmup", t.Warmup, providers)
	}
}

// warmup checks a warm-up schedule; providers are the names a tenant's
// warm-up may list (nil for a provider's own, which lists none).
func (v *validator) warmup(at string, w *Warmup, providers map[string]bool) {
	if w == nil {
		return
	}
	if providers == nil && len(w.Providers) > 0 {
		v.add(at+".providers", "only a tenant's warm-up names providers; this one is the provider's own")
	}
	for i, name := range w.Providers {
		if name == CatchAllProvider || !providers[name] {
			v.add(indexPath(at+".providers", i), "%q is not a named provider (built in or under providers; not the catch-all, whose lanes are per domain)", name)
		}
	}
	loc, err := time.LoadLocation(w.Timezone)
	if err != nil {
		v.add(at+".timezone", "%q is not a time zone such as UTC or America/Argentina/Buenos_Aires", w.Timezone)
		loc = time.UTC
	}
	if _, err := time.ParseInLocation("2006-01-02", w.Start, loc); err != nil {
		v.add(at+".start", "must be a date such as 2026-12-01, not %q", w.Start)
	}
	switch {
	case len(w.Schedule) == 0:
		v.add(at+".schedule", "required: bulk messages per day, such as [50, 100, 250, 500, 1000]")
	case len(w.Schedule) > 366:
		v.add(at+".schedule", "at most 366 days, not %d", len(w.Schedule))
	}
	for i, n := range w.Schedule {
		if n < 1 {
			v.add(indexPath(at+".schedule", i), "must be a positive count of messages, not %d", n)
		}
	}
}
