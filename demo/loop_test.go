package demo

import (
	"context"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/certgate/certgate/clock"
	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/policy"
	"github.com/certgate/certgate/sim"
)

// loadDemoConfig writes the demo's configuration and loads it.
func loadDemoConfig(t *testing.T) *config.Config {
	t.Helper()
	dir := t.TempDir()
	keys, err := makeKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	path, _, err := writeConfig(dir, 2525, keys.config, "http://127.0.0.1:1/download/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// The lanes to the simulated Microsoft, configured as the demo writes
// them, react to its refusal as the story needs, in seconds: outlook by
// its built-in rule and microsoft365 by the generic one, each halved for
// loopSlowFor, then a quarter of the rate back every loopRecoveryInterval.
// The other lanes keep certgate's defaults.
func TestClosedLoopConfig(t *testing.T) {
	cfg := loadDemoConfig(t)
	fake := clock.NewFake(t0)
	pol := policy.New(config.ResolveProviders(cfg.Providers), cfg.Delivery.Retry, policy.Options{Clock: fake, Rules: cfg.Rules})
	reply := "The mail server [127.0.0.1] has been temporarily rate limited due to IP reputation. For e-mail delivery information, see https://aka.ms/postmaster (S775)"
	for lane, rule := range map[string]string{"outlook": "outlook-ip-reputation", "microsoft365": "throttled"} {
		l, ok := pol.ProviderLane(lane)
		if !ok {
			t.Fatalf("no lane %s", lane)
		}
		full := perSecond(lane)
		re := l.React(451, "4.7.650", reply, "issuer")
		if re.Rule != rule || !re.Acted || l.Rate() != full/2 {
			t.Errorf("%s: reaction %+v, rate %g; want rule %s acting, %g/s", lane, re, l.Rate(), rule, full/2)
		}
		if st := l.State(); st.Name != "slowed" || !st.Until.Equal(t0.Add(loopSlowFor)) || !strings.HasPrefix(st.Reason, rule+": ") {
			t.Errorf("%s: state %+v; want slowed until +%s by %s", lane, st, loopSlowFor, rule)
		}
	}
	fake.Advance(loopSlowFor + loopRecoveryInterval)
	for _, lane := range []string{"outlook", "microsoft365"} {
		l, _ := pol.ProviderLane(lane)
		if want := perSecond(lane) * 0.75; l.Rate() != want {
			t.Errorf("%s: %g/s one step after the slowdown; want %g/s", lane, l.Rate(), want)
		}
	}
	fake.Advance(loopRecoveryInterval)
	for _, lane := range []string{"outlook", "microsoft365"} {
		if l, _ := pol.ProviderLane(lane); l.Rate() != perSecond(lane) || l.State().Name != "normal" {
			t.Errorf("%s: %g/s, %s two steps after the slowdown; want %g/s, normal", lane, l.Rate(), l.State().Name, perSecond(lane))
		}
	}
	for _, p := range cfg.Providers {
		switch p.Name {
		case "outlook":
			if p.Placement == nil || p.Placement.Window != loopPlacementWindow || p.Placement.For.D() != loopSlowFor {
				t.Errorf("outlook placement %+v; want a window of %d, %s", p.Placement, loopPlacementWindow, loopSlowFor)
			}
		case "gmail", "yahoo":
			if len(p.Rules) != 0 || p.Recovery != nil || p.Placement != nil {
				t.Errorf("%s: rules %v, recovery %v, placement %v; want certgate's defaults", p.Name, p.Rules, p.Recovery, p.Placement)
			}
		}
	}
}

// The setup says what the configuration makes the lanes do.
func TestPrintLoopSetup(t *testing.T) {
	var l lines
	printLoopSetup(l.out, loadDemoConfig(t))
	want := `  the lanes to Microsoft steer themselves, scaled to seconds for the demo:
    451 4.7.650 slows microsoft365 ×0.5 for 10s (rule throttled) and outlook ×0.5 for 10s (rule outlook-ip-reputation); after that a lane climbs back by 25% of its configured rate every 4s
    fewer than 50% of the last 5 outlook seed copies in the inbox (once 3 are known) slows it ×0.5 for 10s (rule placement)
`
	if l.String() != want {
		t.Errorf("printed:\n%s\nwant:\n%s", l.String(), want)
	}
}

// The watch samples the lanes API with the demo's token and the simulated
// Microsoft, keeps the loop lane's seed copies as the placement report
// lists them, and stops when asked; the wait returns at once when the loop
// has nothing to settle.
func TestWatchLoop(t *testing.T) {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, `{"error": "no"}`, http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/api/v1/lanes":
			w.Write([]byte(`{"lanes": [{"name": "outlook", "provider": "outlook", "state": "normal", "rate_per_second": 15, "configured_per_second": 15},
				{"name": "microsoft365", "provider": "microsoft365", "state": "normal", "rate_per_second": 20, "configured_per_second": 20}]}`))
		case "/api/v1/placement":
			w.Write([]byte(`{"providers": [], "recent": [{"seed": "outlook-1", "provider": "outlook", "folder": "inbox", "message_id": "M1"},
				{"seed": "gmail-1", "provider": "gmail", "folder": "inbox", "message_id": "M1"}]}`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer api.Close()
	ms, err := sim.Start(sim.Options{Name: "microsoft", Domains: []string{"outlook.com"}, Distrust: &sim.Distrust{ThrottleAbove: 1, Calm: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	defer ms.Close()
	c, err := smtp.Dial(ms.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Mail("a@ca.example", nil)
	c.Rcpt("x@outlook.com", nil)
	if err := c.Rcpt("y@outlook.com", nil); err == nil || !strings.Contains(err.Error(), "451") {
		t.Fatalf("the second recipient in a second: %v; want 451 4.7.650", err)
	}

	w := watchLoop(context.Background(), api.URL, "tok", ms)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if s, ok := w.last(); ok && s.lanes != nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Past its deadline the wait returns at once, saying nothing.
	var l lines
	waitLoop(context.Background(), l.out, time.Now().Add(-loopWait), w)
	if l.String() != "" {
		t.Errorf("the wait past its deadline printed:\n%s", l.String())
	}
	// Microsoft stays pushed for an hour: the wait says where things
	// stand, once while they stay so, until its context ends.
	ctx, cancel := context.WithTimeout(context.Background(), 3*loopEvery)
	defer cancel()
	waitLoop(ctx, l.out, time.Now(), w)
	got := w.stop()
	if len(got.samples) < 2 {
		t.Fatalf("%d samples; want one every %s", len(got.samples), loopEvery)
	}
	s := got.samples[len(got.samples)-1]
	if !s.pushed || s.throttled != 1 || s.lanes["outlook"].rate() != 15 || s.lanes["microsoft365"].configured() != 20 {
		t.Errorf("sample %+v; want Microsoft pushed after 1 refusal, the lanes at 15/s and 20/s", s)
	}
	if len(got.seeds) != 1 || got.seeds["M1 outlook-1"].Folder != "inbox" {
		t.Errorf("seed copies %+v; want outlook-1's copy of M1", got.seeds)
	}
	printed := strings.Split(strings.TrimSuffix(l.String(), "\n"), "\n")
	if len(printed) != 2 || printed[0] != "every copy has landed; the demo watches the lanes to Microsoft climb back to their rates..." ||
		!regexp.MustCompile(`^  \[ *-?\d+\.\ds\] outlook lane 15/s, microsoft365 lane 20/s; Microsoft pushed since -\d+\.\ds$`).MatchString(printed[1]) {
		t.Errorf("the wait printed:\n%s", l.String())
	}
}
