package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/certgate/certgate/policy"
)

// laneCollector exports every lane's state and rate at each scrape, read
// from the lanes themselves. The catch-all has a lane per recipient
// domain: its lanes are summed under provider "default", so that the
// label set stays small (state counts lanes; rates add up).
type laneCollector struct{ p *policy.Policy }

var (
	laneStateDesc = prometheus.NewDesc("certgate_lane_state",
		"Lanes of a provider in each state (normal, slowed, suspended): 1 or 0 for a provider's lane, a count for the catch-all's per-domain lanes.",
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
var laneStates = []string{"normal", "slowed", "suspended"}

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
