package main

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/certgate/certgate/clock"
	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/policy"
)

// The lanes' state and rate are exported as they stand at the scrape:
// Gmail slowed by its rate-limit reply, the catch-all's per-domain lanes
// summed under "default".
func TestLaneMetrics(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC))
	p := policy.New(config.ResolveProviders(nil), config.DefaultRetry(), policy.Options{Clock: clk})
	gmail := p.Match("gmail.com", nil)
	gmail.React(421, "4.7.28", "slow down", "issuer")
	p.Match("a.example", nil)
	p.Match("b.example", nil)
	reg := prometheus.NewRegistry()
	reg.MustRegister(laneCollector{p})
	want := `
# HELP certgate_lane_state Lanes of a provider in each state (normal, slowed, suspended, paused, warming): 1 or 0 for a provider's lane, a count for the catch-all's per-domain lanes.
# TYPE certgate_lane_state gauge
certgate_lane_state{provider="default",state="normal"} 2
certgate_lane_state{provider="default",state="paused"} 0
certgate_lane_state{provider="default",state="slowed"} 0
certgate_lane_state{provider="default",state="suspended"} 0
certgate_lane_state{provider="default",state="warming"} 0
certgate_lane_state{provider="gmail",state="normal"} 0
certgate_lane_state{provider="gmail",state="paused"} 0
certgate_lane_state{provider="gmail",state="slowed"} 1
certgate_lane_state{provider="gmail",state="suspended"} 0
certgate_lane_state{provider="gmail",state="warming"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "certgate_lane_state"); err != nil {
		t.Error(err)
	}
	rates := `
# HELP certgate_lane_rate The rate a provider's lanes send at now, after reply rules, in messages per second (+Inf: unlimited).
# TYPE certgate_lane_rate gauge
certgate_lane_rate{provider="default"} 4
certgate_lane_rate{provider="gmail"} 5
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(rates), "certgate_lane_rate"); err != nil {
		t.Error(err) // two catch-all lanes of 2/s; gmail's 10/s halved by its rate-limit reply
	}
}
