package policy

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/certgate/certgate/config"
)

// Reaction is what a lane made of a receiver's reply: the rule that took
// it, if any, and what the queue must do about the message.
type Reaction struct {
	Rule   string            // "" when no rule matched
	Action config.RuleAction // the rule's action
	Acted  bool              // its threshold was reached and the lane changed (or alerted)
	// Defer is set when the reply is a 5xx the rule says means "not
	// now": the message is retried instead of bounced.
	Defer  bool
	Alert  bool   // the match is to be reported as an alert
	Reason string // the rule's reason
}

// compiledRule is a reply rule with the lane's memory of its matches.
type compiledRule struct {
	config.ReplyRule
	floor float64 // messages per second
	// hits are the latest matches, at most Threshold.Count, by tenant for
	// a per-tenant rule (one tenant's failures are not another's) and
	// under "" otherwise. Tenants come from the configuration: few.
	hits map[string][]time.Time
}

func compileRules(rules []config.ReplyRule) []*compiledRule {
	out := make([]*compiledRule, 0, len(rules))
	for _, r := range rules {
		r.Regexp()   // compiled once, here
		floor := 0.0 // none given: MinRate is the floor
		if r.Floor.Count > 0 {
			floor = perSecond(r.Floor)
		}
		out = append(out, &compiledRule{ReplyRule: r, floor: floor})
	}
	return out
}

// reached notes a match at now (of tenant's mail) and reports whether
// the threshold is reached: Count matches within Window (every match when
// Count is 1).
func (r *compiledRule) reached(now time.Time, tenant string) bool {
	n := max(r.Threshold.Count, 1)
	if n == 1 {
		return true
	}
	if !r.PerTenant {
		tenant = ""
	}
	if r.hits == nil {
		r.hits = map[string][]time.Time{}
	}
	hits := append(r.hits[tenant], now)
	if len(hits) > n {
		hits = hits[len(hits)-n:]
	}
	r.hits[tenant] = hits
	if len(hits) < n || r.Threshold.Window > 0 && now.Sub(hits[0]) > r.Threshold.Window {
		return false
	}
	delete(r.hits, tenant) // the next action needs a fresh count
	return true
}

// maxReplyLine bounds what rules read of a reply: a hostile receiver's
// reply may be megabytes long, and the rules' verdict is in its start.
const maxReplyLine = 4096

// replyLine is what rules match: "CODE ENHANCED text", or "CODE text"
// without an enhanced code, on one line (a multi-line reply's lines
// joined by spaces, so that ".*" spans them), at most maxReplyLine
// octets.
func replyLine(code int, enhanced, text string) string {
	s := strconv.Itoa(code) + " "
	if enhanced != "" {
		s += enhanced + " "
	}
	if len(text) > maxReplyLine {
		text = text[:maxReplyLine]
	}
	return strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(s + text)
}

// React feeds a receiver's reply to the lane's rules, in order: the
// provider's configured rules, the configuration's rules for every
// provider, the provider's built-in rules, the generic ones. The first
// that matches takes the reply; it acts once its threshold is reached.
// tenant is the replying message's, for rules that act per tenant.
// Replies without a code (network errors) and 2xx replies match nothing.
func (l *Lane) React(code int, enhanced, text, tenant string) Reaction {
	if code < 400 || code > 599 {
		return Reaction{}
	}
	line := replyLine(code, enhanced, text)
	// The expressions never change: match before taking the lock, which
	// the queue waits for.
	var r *compiledRule
	for _, c := range l.rules {
		if c.Regexp().MatchString(line) {
			r = c
			break
		}
	}
	if r == nil {
		return Reaction{}
	}
	now := l.clk.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	{
		re := Reaction{Rule: r.Name, Action: r.Action, Reason: r.Reason,
			Defer: code >= 500 && (r.Defer || r.Action == config.ActionDefer)}
		if r.Action == config.ActionIgnore || !r.reached(now, tenant) {
			return re
		}
		re.Acted = true
		re.Alert = r.Alert || r.Action == config.ActionAlert
		l.act(r, now, tenant)
		return re
	}
}

// act applies a rule whose threshold is reached. Called with l.mu held.
func (l *Lane) act(r *compiledRule, now time.Time, tenant string) {
	l.refresh(now)
	until := now.Add(r.For.D())
	switch r.Action {
	case config.ActionSlow:
		if isUnlimited(l.base) {
			return // no rate to cut
		}
		// One burst of refusals arrives on every open connection at
		// once: it cuts the rate once, and only extends the slowdown.
		if l.factor == 1 || now.Sub(l.lastCut) >= backoffStep {
			// Not below what the floor leaves: a factor halved for ever
			// would underflow, and climbing back would take for ever.
			l.factor = min(1, max(l.factor*r.Factor, max(r.floor, MinRate)/l.base))
			l.lastCut = now
		}
		l.floor = max(l.floor, r.floor)
		l.slowUntil = later(l.slowUntil, until)
		l.lastStep = l.slowUntil
	case config.ActionSuspend:
		switch {
		case r.PerTenant:
			if l.tenantSuspended == nil {
				l.tenantSuspended = map[string]time.Time{}
			}
			l.tenantSuspended[tenant] = later(l.tenantSuspended[tenant], until)
		case r.All:
			l.suspendAll = later(l.suspendAll, until)
		default:
			l.suspendBulk = later(l.suspendBulk, until)
		}
	case config.ActionSet:
		l.setConns, l.setPerConn, l.setUntil = r.Connections, r.PerConnection, until
	default:
		return // defer and alert change nothing of the lane
	}
	l.reason, l.since = fmt.Sprintf("%s: %s", r.Name, r.Reason), now
	l.version++
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// refresh ends what is over at now and climbs the rate back: after a
// slowdown ends, Step of the configured rate every Interval (additive
// increase) until it is whole again. Called with l.mu held.
func (l *Lane) refresh(now time.Time) {
	if l.factor < 1 && !now.Before(l.slowUntil) && l.recovery.interval > 0 {
		steps := int(now.Sub(l.lastStep) / l.recovery.interval)
		if steps > 0 {
			l.factor = min(1, l.factor+float64(steps)*l.recovery.step)
			l.lastStep = l.lastStep.Add(time.Duration(steps) * l.recovery.interval)
			l.version++
		}
		if l.factor >= 1 {
			l.factor, l.floor, l.slowUntil = 1, 0, time.Time{}
		}
	}
	if l.override > 0 && !now.Before(l.overrideUntil) {
		l.override, l.overrideUntil = 0, time.Time{}
	}
	if !l.setUntil.IsZero() && !now.Before(l.setUntil) {
		l.setConns, l.setPerConn, l.setUntil = 0, 0, time.Time{}
	}
	for t, until := range l.tenantSuspended {
		if !now.Before(until) {
			delete(l.tenantSuspended, t)
		}
	}
}

// Suspended reports whether the lane sends no mail of this class for
// tenant now, and until when (zero: until an operator resumes it).
func (l *Lane) Suspended(transactional bool, tenant string) (bool, time.Time) {
	h, held := l.Holds(transactional, tenant)
	return held, h.Until
}

// Hold is what keeps a lane's mail of one class and tenant from leaving.
type Hold struct {
	By     string    // paused, suspended, warmup (the lane's), tenant_warmup (the tenant's own)
	Until  time.Time // when it ends; zero: when an operator resumes the lane
	Reason string    // why, as operators read it (it may name another tenant's trouble)
}

// Holds reports what holds the lane's mail of this class for tenant now:
// a pause, a suspension of the lane's bulk, of all its mail or of the
// tenant's bulk on it, or a warm-up day's cap, the lane's or the tenant's.
func (l *Lane) Holds(transactional bool, tenant string) (Hold, bool) {
	now := l.clk.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.paused {
		return Hold{By: "paused", Reason: l.reason}, true
	}
	if now.Before(l.suspendAll) {
		return Hold{By: "suspended", Until: l.suspendAll, Reason: l.reason}, true
	}
	if transactional {
		return Hold{}, false
	}
	if now.Before(l.suspendBulk) {
		return Hold{By: "suspended", Until: l.suspendBulk, Reason: l.reason}, true
	}
	if until := l.tenantSuspended[tenant]; now.Before(until) {
		return Hold{By: "suspended", Until: until, Reason: l.reason}, true
	}
	// Warm-up: today's bulk is spent; the rest waits for tomorrow.
	if left, dayEnd, ok := l.warmCap(now); ok && left == 0 {
		return Hold{By: "warmup", Until: dayEnd, Reason: fmt.Sprintf("warm-up day %d: its %d bulk messages are sent",
			l.warm.Day+1, l.warmup.schedule[l.warm.Day])}, true
	}
	if left, dayEnd, ok := l.tenantCap(tenant, now); ok && left == 0 {
		c := l.tenantWarm[tenant]
		return Hold{By: "tenant_warmup", Until: dayEnd, Reason: fmt.Sprintf("%s's warm-up day %d: its %d bulk messages here are sent",
			tenant, c.Day+1, l.tenantWarmups[tenant].schedule[c.Day])}, true
	}
	return Hold{}, false
}

// State is a lane's state as operators see it.
type State struct {
	Name       string    // normal, slowed, suspended, paused, warming
	Rate       float64   // in force now, messages per second (+Inf unlimited)
	Configured float64   // the configured (or SetRate) rate
	Reason     string    // the last rule that changed the lane, with its reason
	Since      time.Time // when that rule acted
	Until      time.Time // when the slowdown or suspension in force ends (warming: when today's spent cap renews)
	WarmupLeft int       // warming: bulk messages the lane may still send today
}

// State tells where the lane stands now.
func (l *Lane) State() State {
	now := l.clk.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refresh(now)
	s := State{Name: "normal", Rate: l.effective(), Configured: l.base, Reason: l.reason, Since: l.since}
	switch {
	case l.paused:
		s.Name = "paused"
	case now.Before(l.suspendAll) || now.Before(l.suspendBulk):
		s.Name, s.Until = "suspended", later(l.suspendAll, l.suspendBulk)
	case l.factor < 1:
		s.Name, s.Until = "slowed", l.slowUntil
	default:
		if left, dayEnd, ok := l.warmCap(now); ok {
			s.Name = "warming"
			s.WarmupLeft = left
			if left == 0 {
				s.Until = dayEnd
			}
		}
	}
	return s
}

// ObservePlacement feeds where one of the lane's seed copies landed
// (a folder class: inbox, tab:<name>, junk, other:<folder>, missing) to
// its placement rule. When the inbox's share of the latest copies (a
// Gmail tab counts as inbox) falls below the rule's threshold, once
// enough are known, the lane's bulk is slowed or suspended for the
// rule's time and the reaction says to alert; the count then starts
// afresh, so one bad stretch acts once.
func (l *Lane) ObservePlacement(folder string) Reaction {
	pr := l.placement
	if pr.Window <= 0 {
		return Reaction{}
	}
	inbox := folder == "inbox" || strings.HasPrefix(folder, "tab:")
	now := l.clk.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.placed = append(l.placed, inbox)
	if len(l.placed) > pr.Window {
		l.placed = l.placed[len(l.placed)-pr.Window:]
	}
	if len(l.placed) < pr.MinSample {
		return Reaction{}
	}
	good := 0
	for _, ok := range l.placed {
		if ok {
			good++
		}
	}
	share := float64(good) / float64(len(l.placed))
	if share >= pr.Below {
		return Reaction{}
	}
	r := &compiledRule{ReplyRule: config.ReplyRule{Name: "placement", Action: pr.Action, Factor: pr.Factor, For: pr.For,
		Reason: fmt.Sprintf("seed copies: %.0f%% of the last %d in the inbox, under %.0f%%", share*100, len(l.placed), pr.Below*100)}}
	l.act(r, now, "")
	l.placed = l.placed[:0]
	return Reaction{Rule: r.Name, Action: r.Action, Acted: true, Alert: true, Reason: r.Reason}
}

// Pause stops the lane: nothing leaves, and its mail stays queued, until
// Resume. why is kept as the lane's reason.
func (l *Lane) Pause(why string) {
	now := l.clk.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.paused, l.reason, l.since = true, "paused: "+why, now
	l.version++
}

// Resume ends a pause and whatever the lane's rules hold it with:
// suspensions, a slowdown, set limits. A warm-up stays.
func (l *Lane) Resume(why string) {
	now := l.clk.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	// Resuming is the operator's lever on everything that holds the lane:
	// a pause, and what its rules decided (a suspension that misfired, a
	// slowdown a fixed DNS no longer calls for).
	l.paused = false
	l.suspendBulk, l.suspendAll, l.tenantSuspended = time.Time{}, time.Time{}, nil
	l.factor, l.floor, l.slowUntil = 1, 0, time.Time{}
	l.setConns, l.setPerConn, l.setUntil = 0, 0, time.Time{}
	l.reason, l.since = "resumed: "+why, now
	l.version++
}

// Override sets the lane's rate to perSecond until until, whatever the
// configuration and the rules say (a slowdown in force still applies to
// it as a share). A rate that is not positive ends an override.
func (l *Lane) Override(perSecond float64, until time.Time, why string) {
	now := l.clk.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.version++
	if !(perSecond > 0) {
		l.override, l.overrideUntil = 0, time.Time{}
		return
	}
	l.override, l.overrideUntil = perSecond, until
	l.reason, l.since = fmt.Sprintf("rate set to %.4g/s until %s: %s", perSecond, until.UTC().Format(time.RFC3339), why), now
}
