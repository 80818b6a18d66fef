package demo

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/sim"
)

// The closed loop the demo watches: the simulated Microsoft distrusts a
// sender who pushes it (providers.go), certgate's outlook lane (and the
// microsoft365 lane, to the same servers) reacts by its rules
// (config.go's closedLoop). While the wave runs the demo looks at both
// every loopEvery, and the summary tells what it saw.
const (
	loopProvider = "microsoft" // the distrustful receiver
	loopLane     = "outlook"   // the lane whose story the summary tells
	loopEvery    = 500 * time.Millisecond
	// loopWait bounds how long after the wave's start the demo waits for
	// the lanes to climb back and Microsoft to calm down.
	loopWait = time.Minute
)

// laneView is one lane as GET /api/v1/lanes shows it, as far as the demo
// reads it.
type laneView struct {
	Name       string     `json:"name"`
	State      string     `json:"state"`
	Rate       *float64   `json:"rate_per_second"` // null: unlimited
	Configured *float64   `json:"configured_per_second"`
	Reason     string     `json:"reason"`
	Since      *time.Time `json:"since"`
	Until      *time.Time `json:"until"`
}

// rate is the lane's rate now, 0 when unlimited or unknown.
func (l laneView) rate() float64 { return deref(l.Rate) }

// configured is the lane's configured rate, 0 when unlimited or unknown.
func (l laneView) configured() float64 { return deref(l.Configured) }

// whole says whether the lane runs at its configured rate, unslowed.
func (l laneView) whole() bool {
	return l.State == "normal" && l.rate() == l.configured()
}

func deref(f *float64) float64 {
	if f == nil {
		return 0
	}
	return *f
}

// loopSample is one look at the loop: the lanes through certgate's API,
// and the simulated Microsoft as it says of itself.
type loopSample struct {
	at    time.Time
	lanes map[string]laneView // by name; nil when the API did not answer
	// pushed and since are Provider.Distrusted: whether Microsoft is
	// pushed, since its first refusal; when not, since is when the last
	// push ended (zero if none has).
	pushed    bool
	since     time.Time
	throttled int // 451 4.7.650 refusals so far
}

// lane is the sample's view of lane, and whether it has one.
func (s loopSample) lane(name string) (laneView, bool) {
	l, ok := s.lanes[name]
	return l, ok
}

// getLanes asks the API for the lanes' state.
func getLanes(client *http.Client, base, token string) (map[string]laneView, error) {
	var body struct {
		Lanes []laneView `json:"lanes"`
	}
	if err := getAPI(client, base, "/api/v1/lanes", token, &body); err != nil {
		return nil, err
	}
	out := map[string]laneView{}
	for _, l := range body.Lanes {
		out[l.Name] = l
	}
	return out, nil
}

// loopWatch samples the loop every loopEvery from its start until stop.
type loopWatch struct {
	mu      sync.Mutex
	watched loopWatched
	cancel  context.CancelFunc
	done    chan struct{}
}

// loopWatched is what a loopWatch saw: its samples, and the loop lane's
// seed copies by message and seed (the placement report lists only the
// newest, so the watch keeps them as they come).
type loopWatched struct {
	samples []loopSample
	seeds   map[string]seedCopy
}

// addSeeds adds the loop lane's seed copies of rep to seeds.
func addSeeds(seeds map[string]seedCopy, rep placementReport) {
	for _, c := range rep.Recent {
		if c.Provider == loopLane {
			seeds[c.MessageID+" "+c.Seed] = c
		}
	}
}

// watchLoop starts sampling the lanes through the API at base and the
// simulated provider p.
func watchLoop(ctx context.Context, base, token string, p *sim.Provider) *loopWatch {
	ctx, cancel := context.WithCancel(ctx)
	w := &loopWatch{cancel: cancel, done: make(chan struct{}), watched: loopWatched{seeds: map[string]seedCopy{}}}
	client := &http.Client{Timeout: 2 * time.Second}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(loopEvery)
		defer tick.Stop()
		for {
			s := loopSample{at: time.Now()}
			if lanes, err := getLanes(client, base, token); err == nil {
				s.lanes = lanes
			}
			// Refusals first: one between the two calls then counts
			// in the next sample, never before its push.
			s.throttled = p.Stats().Throttled
			s.pushed, s.since = p.Distrusted()
			rep, repErr := getPlacement(base, token)
			w.mu.Lock()
			w.watched.samples = append(w.watched.samples, s)
			if repErr == nil {
				addSeeds(w.watched.seeds, rep)
			}
			w.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

// last is the newest sample, if there is one.
func (w *loopWatch) last() (loopSample, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.watched.samples) == 0 {
		return loopSample{}, false
	}
	return w.watched.samples[len(w.watched.samples)-1], true
}

// stop ends the watch and returns what it saw.
func (w *loopWatch) stop() loopWatched {
	w.cancel()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.watched
}

// settled says whether the loop has come to rest in s: Microsoft is not
// pushed and the lanes to it run at their configured rates.
func settled(s loopSample) bool {
	if s.pushed || s.lanes == nil {
		return false
	}
	for _, name := range providerCalled(loopProvider).lanes {
		if l, ok := s.lane(name); ok && !l.whole() {
			return false
		}
	}
	return true
}

// waitLoop waits until the loop has settled (at once when it has), for
// loopWait after started at most or until ctx ends, and prints where it
// stands whenever that changes, and where it came to rest.
func waitLoop(ctx context.Context, out printer, started time.Time, w *loopWatch) {
	deadline := started.Add(loopWait)
	said, last := false, ""
	for {
		s, ok := w.last()
		done := ok && settled(s) || time.Now().After(deadline) || ctx.Err() != nil
		if done && !said {
			return
		}
		if !said {
			out("every copy has landed; the demo watches the lanes to Microsoft climb back to their rates...")
			said = true
		}
		if status := loopStatus(s, started); ok && status != last {
			out("  [%5.1fs] %s", s.at.Sub(started).Seconds(), status)
			last = status
		}
		if done {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(loopEvery):
		}
	}
}

// loopStatus says where the lanes to Microsoft and Microsoft stand in s,
// times relative to started: "outlook lane slowed 7.5/s of 15/s until
// +13.5s, microsoft365 lane 20/s; Microsoft calm".
func loopStatus(s loopSample, started time.Time) string {
	var b []byte
	for i, name := range providerCalled(loopProvider).lanes {
		l, ok := s.lane(name)
		if !ok {
			continue
		}
		if i > 0 {
			b = append(b, ", "...)
		}
		b = fmt.Appendf(b, "%s lane %s", name, laneNow(l, s.at, started))
	}
	if s.pushed {
		b = fmt.Appendf(b, "; Microsoft pushed since %s", rel(s.since, started))
	} else {
		b = append(b, "; Microsoft calm"...)
	}
	return string(b)
}

// laneNow is "15/s", or "slowed 7.5/s of 15/s until +13.5s" at now,
// times relative to started; an until already past is left out (the rate
// is climbing back).
func laneNow(l laneView, now, started time.Time) string {
	if l.whole() {
		return perSec(l.rate())
	}
	s := fmt.Sprintf("%s %s of %s", l.State, perSec(l.rate()), perSec(l.configured()))
	if l.Until != nil && l.Until.After(now) {
		s += " until " + rel(*l.Until, started)
	}
	return s
}

// perSec is a rate as the summary writes it: "15/s", "7.5/s", "11.25/s".
func perSec(r float64) string {
	return fmt.Sprintf("%.4g/s", r)
}

// rel is t relative to started: "+3.2s".
func rel(t, started time.Time) string {
	return fmt.Sprintf("%+.1fs", t.Sub(started).Seconds())
}

// printLoopSetup says how the lanes to Microsoft react, as the loaded
// configuration has it: which rule takes Microsoft's 451 4.7.650 on each
// lane, how the rate climbs back, and the loop lane's placement rule.
func printLoopSetup(out printer, cfg *config.Config) {
	const reply = "451 4.7.650 The mail server [127.0.0.1] has been temporarily rate limited due to IP reputation. (S775)"
	var slows []string
	var recovery string
	var placement *config.PlacementRule
	for _, p := range cfg.Providers {
		if !slices.Contains(providerCalled(loopProvider).lanes, p.Name) {
			continue
		}
		rules := append(slices.Clone(p.Rules), append(slices.Clone(cfg.Rules), config.BuiltinRules(p.Name)...)...)
		for _, r := range rules {
			if r.Regexp().MatchString(reply) {
				if r.Action == config.ActionSlow {
					slows = append(slows, fmt.Sprintf("%s ×%g for %s (rule %s)", p.Name, r.Factor, r.For, r.Name))
				}
				break
			}
		}
		if r := p.Recovery; r != nil && recovery == "" {
			recovery = fmt.Sprintf("after that a lane climbs back by %g%% of its configured rate every %s", r.Step*100, r.Interval)
		}
		if p.Name == loopLane && p.Placement != nil {
			placement = p.Placement
		}
	}
	if len(slows) == 0 {
		return
	}
	out("  the lanes to Microsoft steer themselves, scaled to seconds for the demo:")
	out("    451 4.7.650 slows %s; %s", strings.Join(slows, " and "), recovery)
	if pr := placement; pr != nil && pr.Action == config.ActionSlow {
		out("    fewer than %g%% of the last %d %s seed copies in the inbox (once %d are known) slows it ×%g for %s (rule placement)",
			pr.Below*100, pr.Window, loopLane, pr.MinSample, pr.Factor, pr.For)
	}
}
