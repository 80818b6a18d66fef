package demo

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/certgate/certgate/sim"
)

// loopStory is what the summary's closed-loop section is told from:
// what the demo saw of the lanes and of Microsoft while the wave ran,
// where the loop lane's seed copies landed, and the urgent mail
// Microsoft took meanwhile. Every time is told from started.
type loopStory struct {
	started  time.Time
	samples  []loopSample  // in time order, loopEvery apart
	calm     time.Duration // how long Microsoft waits, refusing nothing, to trust again
	limit    float64       // the rate above which Microsoft refuses, per second
	seeds    []seedCopy    // the loop lane's seed copies, as certgate's watcher placed them
	urgent   []urgentCopy  // the urgent mail Microsoft stored
	urgents  int           // the urgent mail addressed to Microsoft's domains
	lastCopy time.Time     // when Microsoft stored the wave's last copy; zero if none
}

// urgentCopy is an urgent mail as Microsoft stored it.
type urgentCopy struct {
	accepted time.Time // certgate's 250 to the issuer
	received time.Time // Microsoft's 250 to certgate
	inbox    bool
}

// newLoopStory gathers the story once the loop has settled: the samples,
// the loop lane's seed copies the watch saw and the placement report
// has (newest first: it knows the latest folder), and what Microsoft
// stored.
func newLoopStory(started time.Time, watched loopWatched, rep placementReport, ms *sim.Provider, w wave, acceptedAt func(string) (time.Time, bool)) loopStory {
	st := loopStory{started: started, samples: watched.samples}
	if d := providerCalled(loopProvider).distrust; d != nil {
		st.calm, st.limit = d.Calm, d.ThrottleAbove
	}
	seeds := maps.Clone(watched.seeds)
	if seeds == nil {
		seeds = map[string]seedCopy{}
	}
	addSeeds(seeds, rep)
	for _, k := range slices.Sorted(maps.Keys(seeds)) {
		st.seeds = append(st.seeds, seeds[k])
	}
	for _, m := range w.urgent {
		for _, r := range m.rcpts {
			if providerOf(r) == loopProvider {
				st.urgents++
			}
		}
	}
	for _, m := range ms.Messages() {
		st.lastCopy = later(st.lastCopy, m.Received)
		if !isUrgent(m.To) {
			continue
		}
		if at, ok := acceptedAt(m.To); ok {
			st.urgent = append(st.urgent, urgentCopy{accepted: at, received: m.Received, inbox: m.Folder == "INBOX"})
		}
	}
	return st
}

// isUrgent says whether rcpt is one of the wave's urgent token mails'.
func isUrgent(rcpt string) bool { return strings.HasPrefix(rcpt, "token") }

// providerCalled is the demo's provider called name.
func providerCalled(name string) provider {
	for _, p := range providers {
		if p.name == name {
			return p
		}
	}
	panic("demo: no provider " + name)
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// event is one line of the story: what happened when.
type event struct {
	at   time.Time
	text string
}

// push is one stretch in which Microsoft distrusted certgate.
type push struct {
	start, end time.Time // end is zero while it lasts
	refused    int       // the refusals it took
}

// pushes finds Microsoft's pushes in the samples: each starts with its
// first refusal and ends calm after its last, as Microsoft says of itself.
// (A push that ends and starts again between two samples counts as one.)
func pushes(samples []loopSample) []push {
	var out []push
	var cur *push
	base := 0 // refusals before the current push
	for _, s := range samples {
		switch {
		case s.pushed:
			if cur == nil {
				cur = &push{start: s.since}
			}
			cur.refused = s.throttled - base
		case cur != nil:
			cur.end, cur.refused = s.since, s.throttled-base
			out = append(out, *cur)
			cur = nil
			fallthrough
		default:
			base = s.throttled
		}
	}
	if cur != nil {
		out = append(out, *cur)
	}
	return out
}

// laneChange is what the samples show of one lane: its cuts and holds
// (at the rule's own time), and the steps of its climb back (when the
// demo saw them).
type laneChange struct {
	events []event
	// firstCut is the first event that slowed the lane; slowed is its
	// time, whole when the demo first saw the lane at its configured rate
	// after it (zero: never).
	firstCut      event
	slowed, whole time.Time
}

// laneChanges tells what happened to lane name in the samples.
func laneChanges(samples []loopSample, name string, started time.Time) laneChange {
	var lc laneChange
	var prev *laneView
	var lastRule string
	var climb []string  // "11.25/s at +17.5s"
	var until time.Time // the slowdown's end, as the lane last said it
	flush := func() {
		if len(climb) > 0 && !until.IsZero() {
			lc.events = append(lc.events, event{until, "slowdown over; the rate climbs back: " + strings.Join(climb, ", then ")})
		}
		climb = nil
	}
	for _, s := range samples {
		v, ok := s.lane(name)
		if !ok {
			continue
		}
		if prev == nil {
			prev = &v
			if !v.whole() {
				lc.events = append(lc.events, event{s.at, fmt.Sprintf("the %s lane is %s at %s of %s (%s)",
					name, v.State, perSec(v.rate()), perSec(v.configured()), v.Reason)})
			}
			continue
		}
		rule, why, _ := strings.Cut(v.Reason, ": ")
		acted := v.Since != nil && (prev.Since == nil || !v.Since.Equal(*prev.Since))
		switch {
		case acted && v.rate() < prev.rate():
			flush()
			lc.events = append(lc.events, event{*v.Since, fmt.Sprintf("certgate slowed the %s lane %s -> %s (rule %s)",
				name, perSec(prev.rate()), perSec(v.rate()), rule)})
			if lc.slowed.IsZero() {
				lc.firstCut, lc.slowed = lc.events[len(lc.events)-1], *v.Since
			}
			lastRule = rule
		case acted && rule != lastRule && v.State != "normal":
			held := fmt.Sprintf("%s: certgate keeps the %s lane at %s", why, name, perSec(v.rate()))
			if v.Until != nil {
				held += " until " + rel(*v.Until, started)
			}
			lc.events = append(lc.events, event{*v.Since, held + " (rule " + rule + ")"})
			lastRule = rule
		case v.rate() > prev.rate():
			climb = append(climb, fmt.Sprintf("%s at %s", perSec(v.rate()), rel(s.at, started)))
		}
		if v.whole() && !lc.slowed.IsZero() && lc.whole.IsZero() {
			lc.whole = s.at
		}
		if v.State != "normal" && v.Until != nil {
			until = *v.Until
		}
		prev = &v
	}
	flush()
	if prev != nil && !prev.whole() {
		lc.events = append(lc.events, event{samples[len(samples)-1].at, fmt.Sprintf("the %s lane still %s at %s of %s when the demo stopped looking",
			name, prev.State, perSec(prev.rate()), perSec(prev.configured()))})
	}
	return lc
}

// seedEvents tells where the loop lane's seed copies landed before, while
// and after Microsoft was pushed, by when certgate delivered them.
func seedEvents(seeds []seedCopy, ps []push) []event {
	type group struct {
		first          time.Time
		n, inbox, junk int
	}
	groups := map[int]*group{} // -1: before the first push; 2k: during push k; 2k+1: after it
	for _, c := range seeds {
		if c.DeliveredAt == nil {
			continue
		}
		t := *c.DeliveredAt
		key := -1
		for k, p := range ps {
			if t.Before(p.start) {
				break
			}
			key = 2 * k
			if !p.end.IsZero() && !t.Before(p.end) {
				key = 2*k + 1
			}
		}
		g := groups[key]
		if g == nil {
			g = &group{first: t}
			groups[key] = g
		}
		if t.Before(g.first) {
			g.first = t
		}
		g.n++
		switch {
		case c.Folder == "inbox" || strings.HasPrefix(c.Folder, "tab:"):
			g.inbox++
		case c.Folder == "junk":
			g.junk++
		}
	}
	var out []event
	for _, key := range slices.Sorted(maps.Keys(groups)) {
		g := groups[key]
		var text string
		switch {
		case key == -1 && len(ps) == 0:
			text = fmt.Sprintf("seed copies in the inbox: %d of %d", g.inbox, g.n)
		case key == -1:
			text = fmt.Sprintf("seed copies in the inbox before Microsoft was pushed: %d of %d", g.inbox, g.n)
		case key%2 == 0:
			text = fmt.Sprintf("seed copies filed in Junk while Microsoft was pushed: %d of %d", g.junk, g.n)
		case g.inbox == g.n:
			text = fmt.Sprintf("seed copies back in the inbox: %d of %d delivered after it calmed", g.inbox, g.n)
		default:
			text = fmt.Sprintf("seed copies delivered after it calmed: %d of %d in the inbox", g.inbox, g.n)
		}
		if unknown := g.n - g.inbox - g.junk; unknown > 0 {
			text += fmt.Sprintf(" (%d neither in the inbox nor in junk yet)", unknown)
		}
		out = append(out, event{g.first, text})
	}
	return out
}

// printLoop tells the closed loop's story: Microsoft's refusals and
// distrust, what certgate's rules did to the lanes, where the seed copies
// landed meanwhile, the climb back, and the urgent mail through it all.
func printLoop(out printer, st loopStory) {
	out("\nclosed loop at Microsoft (%s lane; times from the wave's start, the lanes API and Microsoft looked at every %s)", loopLane, loopEvery)
	ps := pushes(st.samples)
	var evs []event
	for _, p := range ps {
		text := fmt.Sprintf("Microsoft answered 451 4.7.650 (rate limited for IP reputation): %d times", p.refused)
		if p.end.IsZero() {
			evs = append(evs, event{p.start, text + "; pushed, it files bulk in junk"})
			evs = append(evs, event{st.samples[len(st.samples)-1].at, "Microsoft still pushed when the demo stopped looking"})
			continue
		}
		if st.calm > 0 {
			text += ", the last at " + rel(p.end.Add(-st.calm), st.started)
		}
		evs = append(evs, event{p.start, text + "; pushed, it files bulk in junk"})
		evs = append(evs, event{p.end, fmt.Sprintf("Microsoft calm again: no refusal for %s", st.calm)})
	}
	lane := laneChanges(st.samples, loopLane, st.started)
	evs = append(evs, lane.events...)
	slowed := []laneChange{lane}
	for _, name := range providerCalled(loopProvider).lanes {
		if name == loopLane {
			continue
		}
		oc := laneChanges(st.samples, name, st.started)
		if oc.slowed.IsZero() {
			continue
		}
		e := oc.firstCut
		e.text = strings.Replace(e.text, name+" lane", name+" lane too (the same Microsoft servers)", 1)
		if l, ok := lastLane(st.samples, name); ok && !oc.whole.IsZero() {
			e.text += fmt.Sprintf("; back to %s at %s", perSec(l.configured()), rel(oc.whole, st.started))
		}
		evs = append(evs, e)
		slowed = append(slowed, oc)
	}
	evs = append(evs, seedEvents(st.seeds, ps)...)
	if len(ps) > 0 && !st.lastCopy.IsZero() {
		evs = append(evs, event{st.lastCopy, "the wave's last copy reached Microsoft"})
	}
	slices.SortStableFunc(evs, func(a, b event) int { return a.at.Compare(b.at) })
	if len(ps) == 0 {
		out("  Microsoft refused nothing: the wave never came to more than %g recipients a second there", st.limit)
	}
	if len(lane.events) == 0 {
		if l, ok := lastLane(st.samples, loopLane); ok {
			out("  the %s lane kept its %s", loopLane, perSec(l.configured()))
		}
	}
	for _, e := range evs {
		out("  %-7s %s", rel(e.at, st.started), e.text)
	}
	if st.urgents > 0 {
		out("  %s", urgentLine(st, slowed))
	}
}

// lastLane is lane name in the newest sample that has it.
func lastLane(samples []loopSample, name string) (laneView, bool) {
	for i := len(samples) - 1; i >= 0; i-- {
		if l, ok := samples[i].lane(name); ok {
			return l, true
		}
	}
	return laneView{}, false
}

// urgentLine says how the urgent mail to Microsoft fared: "urgent tokens
// to Microsoft meanwhile: 2 of 2 delivered, in the inbox, 30ms and 25ms
// after their 250, both while certgate's lanes to Microsoft were slowed".
func urgentLine(st loopStory, lanes []laneChange) string {
	// From the first cut of a lane to Microsoft to the last of them back
	// at its rate.
	var from, to time.Time
	for _, l := range lanes {
		if l.slowed.IsZero() {
			continue
		}
		if from.IsZero() || l.slowed.Before(from) {
			from = l.slowed
		}
		if l.whole.IsZero() {
			to = time.Time{}
			break
		}
		to = later(to, l.whole)
	}
	n, inbox, slowed := len(st.urgent), 0, 0
	var waits []time.Duration
	for _, u := range st.urgent {
		if u.inbox {
			inbox++
		}
		if !from.IsZero() && !u.received.Before(from) && (to.IsZero() || u.received.Before(to)) {
			slowed++
		}
		waits = append(waits, u.received.Sub(u.accepted))
	}
	s := fmt.Sprintf("urgent tokens to Microsoft meanwhile: %d of %d delivered", n, st.urgents)
	if n == 0 {
		return s
	}
	if inbox == n {
		s += ", in the inbox"
	} else {
		s += fmt.Sprintf(", %d in the inbox", inbox)
	}
	if n <= 3 {
		var ws []string
		for _, w := range waits {
			ws = append(ws, w.Round(time.Millisecond).String())
		}
		s += ", " + strings.Join(ws, " and ") + " after their 250"
	} else {
		s += fmt.Sprintf(", p50 %s, max %s after their 250", pct(waits, 50), pct(waits, 100))
	}
	switch {
	case slowed == 0:
	case slowed == n && n == 2:
		s += ", both while certgate's lanes to Microsoft were slowed"
	case slowed == n && n == 1:
		s += ", while certgate's lanes to Microsoft were slowed"
	default:
		s += fmt.Sprintf(", %d of them while certgate's lanes to Microsoft were slowed", slowed)
	}
	return s
}
