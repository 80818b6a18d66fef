package config

import (
	"strings"
	"testing"
	"time"
)

// TestDNSCheck: the periodic DNS self-check's defaults, 0 turning it
// off, and what is refused, with the line.
func TestDNSCheck(t *testing.T) {
	f := newFixture(t)
	if got := mustParse(t, f, minimalYAML).DNSCheck; got != (DNSCheck{Interval: Duration(6 * time.Hour), Timeout: Duration(5 * time.Second)}) {
		t.Errorf("dns_check left out = %+v, want every 6h, 5s a query, the system's resolver", got)
	}
	if got := mustParse(t, f, minimalYAML+"dns_check: {interval: 0}\n").DNSCheck; got.Interval != 0 {
		t.Errorf("interval: 0 = %+v, want off", got)
	}
	for _, c := range []struct{ yaml, want string }{
		{"{interval: 1m}", "certgate.yaml:1: dns_check.interval"},
		{"{interval: 1m}", "dns_check.interval: must be from 10m to 168h, or 0 to turn the check off, not 1m0s"},
		{"{interval: 400h}", "dns_check.interval: must be from 10m to 168h"},
		{"{timeout: 100ms}", "dns_check.timeout: must be from 1s to 1m, not 100ms"},
		{"{resolver: 9.9.9.9}", `dns_check.resolver: "9.9.9.9" is not host:port`},
		{"{resolver: \":53\"}", `dns_check.resolver: ":53" has no host`},
		{"{resolvers: 9.9.9.9:53}", `unknown key "resolvers"; did you mean "resolver"?`},
	} {
		_, err := Parse(f.path(), []byte(f.expand("dns_check: "+c.yaml+"\n"+minimalYAML)))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("dns_check: %s: %v, want %q", c.yaml, err, c.want)
		}
	}
}
