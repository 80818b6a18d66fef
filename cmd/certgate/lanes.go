package main

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/certgate/certgate/api"
	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/delivery"
	"github.com/certgate/certgate/policy"
)

// laneCollector exports every lane's state and rate at each scrape, read
// from the lanes themselves. The catch-all has a lane per recipient
// domain: its lanes are summed under provider "default", so that the
// label set stays small (state counts lanes; rates add up).
type laneCollector struct{ p *policy.Policy }

var (
	laneStateDesc = prometheus.NewDesc("certgate_lane_state",
		"Lanes of a provider in each state (normal, slowed, suspended, paused, warming): 1 or 0 for a provider's lane, a count for the catch-all's per-domain lanes.",
		[]string{"provider", "state"}, nil)
	laneRateDesc = prometheus.NewDesc("certgate_lane_rate",
		"The rate a provider's lanes send at now, after reply rules, in messages per second (+Inf: unlimited).",
		[]string{"provider"}, nil)
	laneConfiguredDesc = prometheus.NewDesc("certgate_lane_rate_configured",
		"The configured rate of a provider's lanes, in messages per second (+Inf: unlimited).",
		[]string{"provider"}, nil)
)

// laneStates are the states certgate_lane_state always reports, so that a
// state's series exists at 0 before a lane first enters it.
var laneStates = []string{"normal", "slowed", "suspended", "paused", "warming"}

func (laneCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- laneStateDesc
	ch <- laneRateDesc
	ch <- laneConfiguredDesc
}

func (c laneCollector) Collect(ch chan<- prometheus.Metric) {
	type sums struct {
		states           map[string]float64
		rate, configured float64
	}
	by := map[string]*sums{}
	var order []string
	for _, l := range c.p.Lanes() {
		s := by[l.Name()]
		if s == nil {
			s = &sums{states: map[string]float64{}}
			by[l.Name()] = s
			order = append(order, l.Name())
		}
		st := l.State()
		s.states[st.Name]++
		s.rate += st.Rate
		s.configured += st.Configured
	}
	for _, name := range order {
		s := by[name]
		for _, state := range laneStates {
			ch <- prometheus.MustNewConstMetric(laneStateDesc, prometheus.GaugeValue, s.states[state], name, state)
		}
		ch <- prometheus.MustNewConstMetric(laneRateDesc, prometheus.GaugeValue, s.rate, name)
		ch <- prometheus.MustNewConstMetric(laneConfiguredDesc, prometheus.GaugeValue, s.configured, name)
	}
}

// laneControl is the lanes API over the daemon's policy and queue.
type laneControl struct {
	p         *policy.Policy
	q         *delivery.Queue
	providers []string // named providers, shown before their lane's first mail
	log       *slog.Logger
	news      *laneJournal // nil: no store of lane events
}

// laneName is a lane's key as the API names it: "default/<domain>"
// becomes "default:<domain>", so that no name holds a "/".
func laneName(key string) string { return strings.Replace(key, "/", ":", 1) }

func (c laneControl) find(name string) (*policy.Lane, error) {
	if l, ok := c.p.ProviderLane(name); ok {
		return l, nil
	}
	for _, l := range c.p.Lanes() {
		if laneName(l.Key()) == name {
			return l, nil
		}
	}
	return nil, api.ErrNoLane
}

func (c laneControl) Lanes() []api.Lane {
	for _, name := range c.providers {
		c.p.ProviderLane(name)
	}
	var out []api.Lane
	for _, l := range c.p.Lanes() {
		st := l.State()
		out = append(out, api.Lane{Name: laneName(l.Key()), Provider: l.Name(), State: st.Name, Rate: st.Rate,
			Configured: st.Configured, Ready: c.q.Ready(l.Key()), Reason: st.Reason, Since: st.Since, Until: st.Until,
			WarmupLeft: st.WarmupLeft, TenantWarmups: tenantWarmupsOf(l)})
	}
	return out
}

func tenantWarmupsOf(l *policy.Lane) map[string]api.TenantWarmup {
	var out map[string]api.TenantWarmup
	for tenant, w := range l.TenantWarmups() {
		if out == nil {
			out = map[string]api.TenantWarmup{}
		}
		out[tenant] = api.TenantWarmup{Day: w.Day + 1, Left: w.Left, Until: w.Until}
	}
	return out
}

func (c laneControl) Hold(recipientID int64) (api.Hold, bool) {
	key, h, held := c.q.Hold(recipientID)
	if !held {
		return api.Hold{}, false
	}
	return api.Hold{Lane: laneName(key), By: h.By, Until: h.Until, Reason: h.Reason}, true
}

// changed logs an operator's change of a lane: the audit line of lanes.
func (c laneControl) changed(l *policy.Lane, what, reason, actor string) {
	st := l.State()
	c.log.Warn("lane changed", "lane", l.Key(), "change", what, "actor", actor, "reason", reason, "state", st.Name, "rate", st.Rate)
	c.news.note(context.Background(), l, actor)
}

func (c laneControl) Pause(name, reason, actor string) error {
	l, err := c.find(name)
	if err != nil {
		return err
	}
	l.Pause(reason)
	c.changed(l, "pause", reason, actor)
	return nil
}

func (c laneControl) Resume(name, reason, actor string) error {
	l, err := c.find(name)
	if err != nil {
		return err
	}
	l.Resume(reason)
	c.q.Wake(l.Key())
	c.changed(l, "resume", reason, actor)
	return nil
}

func (c laneControl) SetRate(name string, perSecond float64, until time.Time, reason, actor string) error {
	l, err := c.find(name)
	if err != nil {
		return err
	}
	l.Override(perSecond, until, reason)
	c.q.Wake(l.Key())
	c.changed(l, "rate", reason, actor)
	return nil
}

// namedProviders are the providers with a lane of their own (all but the
// catch-all).
func namedProviders(cfg *config.Config) []string {
	var out []string
	for _, p := range config.ResolveProviders(cfg.Providers) {
		if p.Name != config.CatchAllProvider {
			out = append(out, p.Name)
		}
	}
	return out
}

// tenantWarmups are the tenants' own warm-ups, by tenant.
func tenantWarmups(cfg *config.Config) map[string]*config.Warmup {
	out := map[string]*config.Warmup{}
	for _, t := range cfg.Tenants {
		if t.Warmup != nil {
			out[t.Name] = t.Warmup
		}
	}
	return out
}

// queueAge exports how long the oldest recipient of each provider and
// class has waited since it was accepted, read from the queue at each
// scrape: mail that sits while everything else flows is what a count of
// queued mail hides.
type queueAge struct{ q *delivery.Queue }

var queueAgeDesc = prometheus.NewDesc("certgate_queue_oldest_seconds",
	"Time since the oldest recipient still queued (waiting for its next attempt or due now) was accepted, by provider and class.",
	[]string{"provider", "class"}, nil)

func (queueAge) Describe(ch chan<- *prometheus.Desc) { ch <- queueAgeDesc }

func (a queueAge) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	for k, t := range a.q.Oldest() {
		ch <- prometheus.MustNewConstMetric(queueAgeDesc, prometheus.GaugeValue, max(now.Sub(t), 0).Seconds(), k[0], k[1])
	}
}
