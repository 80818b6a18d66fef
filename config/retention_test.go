package config

import (
	"strings"
	"testing"
	"time"
)

// TestRetention: the retention section's defaults, a file's values (0
// keeps for ever), and what is refused.
func TestRetention(t *testing.T) {
	f := newFixture(t)
	if got := mustParse(t, f, minimalYAML).Retention; got != DefaultRetention() ||
		got.Events != Duration(2160*time.Hour) || got.SweepInterval != Duration(10*time.Minute) {
		t.Errorf("retention left out = %+v, want 90 days for both and a sweep every 10m", got)
	}
	got := mustParse(t, f, minimalYAML+"retention: {events: 720h, delivered_messages: 0, sweep_interval: 1h}\n").Retention
	if got != (Retention{Events: Duration(720 * time.Hour), SweepInterval: Duration(time.Hour)}) {
		t.Errorf("retention set = %+v", got)
	}
	code := &Config{}
	code.SetDefaults()
	if code.Retention != DefaultRetention() {
		t.Errorf("SetDefaults: retention %+v", code.Retention)
	}

	for _, c := range []struct{ yaml, want string }{
		{"{events: 1h}", "retention.events: 1h0m0s is too short: keep at least 24h0m0s"},
		{"{delivered_messages: -24h}", "retention.delivered_messages: must not be negative"},
		{"{sweep_interval: 10s}", "retention.sweep_interval: must be from 1m to 24h, not 10s"},
		{"{sweep_interval: 48h}", "retention.sweep_interval: must be from 1m to 24h"},
		{"{sweep_interval: 0}", "retention.sweep_interval: must be from 1m to 24h"},
		{"{events: 30}", `"30" has no unit`},
		{"{event: 24h}", `unknown key "event"; did you mean "events"?`},
	} {
		_, err := Parse(f.path(), []byte(f.expand(minimalYAML+"retention: "+c.yaml+"\n")))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("retention: %s: %v, want %q", c.yaml, err, c.want)
		}
	}
}
