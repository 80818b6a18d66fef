package policy

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/certgate/certgate/config"
)

func TestMatchByDomain(t *testing.T) {
	p, _ := newTestPolicy(t, nil, config.DefaultRetry())
	for domain, want := range map[string]string{
		"gmail.com":       "gmail",
		"GMail.COM.":      "gmail",
		" googlemail.com": "gmail",
		"hotmail.com":     "outlook",
		"hotmail.co.uk":   "outlook",
		"live.com":        "outlook",
		"msn.com":         "outlook",
		"outlook.com":     "outlook",
		"yahoo.com":       "yahoo",
		"aol.com":         "yahoo",
		"rocketmail.com":  "yahoo",
		"ymail.com":       "yahoo",
		"icloud.com":      "apple",
		"me.com":          "apple",
		"mac.com":         "apple",
	} {
		if got := p.Match(domain, nil); got.Name() != want || got.Key() != want {
			t.Errorf("Match(%q) = %s (%s), want %s", domain, got.Name(), got.Key(), want)
		}
	}
}

func TestMatchDomainBeatsMX(t *testing.T) {
	p, _ := newTestPolicy(t, nil, config.DefaultRetry())
	if got := p.Match("gmail.com", []string{"x.mail.protection.outlook.com"}).Name(); got != "gmail" {
		t.Fatalf("listed domain matched %s, want gmail", got)
	}
}

func TestMatchByMX(t *testing.T) {
	p, _ := newTestPolicy(t, nil, config.DefaultRetry())
	for _, tc := range []struct {
		domain string
		mx     []string
		want   string
	}{
		{"workspace.example", []string{"ASPMX.L.GOOGLE.COM."}, "gmail"},
		{"workspace.example", []string{"smtp.google.com"}, "gmail"},
		{"corp.example", []string{"corp-example.mail.protection.outlook.com"}, "microsoft365"},
		{"hotmail.example", []string{"hotmail-com.olc.protection.outlook.com"}, "outlook"},
		{"yahoo.example", []string{"mta5.am0.yahoodns.net"}, "yahoo"},
		{"apple.example", []string{"mx01.mail.icloud.com"}, "apple"},
		// The first (most preferred) MX host decides.
		{"mixed.example", []string{"a.mail.protection.outlook.com", "aspmx.l.google.com"}, "microsoft365"},
		{"mixed.example", []string{"aspmx.l.google.com", "a.mail.protection.outlook.com"}, "gmail"},
		// Then any host, in order.
		{"backup.example", []string{"mx.backup.example", "alt1.aspmx.l.google.com"}, "gmail"},
		{"backup2.example", []string{"mx.backup2.example", "", "hotmail-com.olc.protection.outlook.com", "aspmx.l.google.com"}, "outlook"},
		// Suffixes end on a label boundary.
		{"fake.example", []string{"mx.notgoogle.com"}, "default"},
		{"fake2.example", []string{"google.com.evil.example"}, "default"},
		{"none.example", nil, "default"},
	} {
		if got := p.Match(tc.domain, tc.mx).Name(); got != tc.want {
			t.Errorf("Match(%q, %q) = %s, want %s", tc.domain, tc.mx, got, tc.want)
		}
	}
}

func TestMatchSubstringRule(t *testing.T) {
	p, _ := newTestPolicy(t, nil, config.DefaultRetry())
	for _, mx := range []string{
		"mx1.zimbra.com",
		"mta.zimbra.cloud",
		"zimbra.corp.example",
		"mail.myzimbrahost.example",
		"MX.ZIMBRA-HOSTING.EXAMPLE.",
	} {
		if got := p.Match("z.example", []string{mx}).Name(); got != "zimbra" {
			t.Errorf("MX %q matched %s, want zimbra", mx, got)
		}
	}
	if got := p.Match("z2.example", []string{"mx.zimbr.example"}).Name(); got != "default" {
		t.Errorf("near miss matched %s", got)
	}

	if r := compileMXRule("*mimecast*"); !r.substring || r.pattern != "mimecast" {
		t.Fatalf("compileMXRule(*mimecast*) = %+v", r)
	}
	if r := compileMXRule("*zimbra"); !r.match("zimbra.example") || !r.match("xzimbra") {
		t.Fatalf("a leading star alone is a substring rule too: %+v", r)
	}
	if r := compileMXRule("google.com"); !r.match("google.com") || !r.match("a.google.com") || r.match("agoogle.com") {
		t.Error("a suffix without a dot must match on a label boundary")
	}
	if r := compileMXRule(".Google.COM."); !r.match("aspmx.l.google.com") || r.match("google.com.evil.example") {
		t.Errorf("a suffix is compared in lower case without its trailing dot: %+v", r)
	}
}

func TestCatchAllLanePerDomain(t *testing.T) {
	p, clk := newTestPolicy(t, nil, config.DefaultRetry())
	a := p.Match("a.example", []string{"mx.a.example"})
	b := p.Match("b.example", nil)
	if a == b {
		t.Fatal("two catch-all domains share a lane")
	}
	if a.Name() != "default" || a.Key() != "default/a.example" || b.Key() != "default/b.example" {
		t.Fatalf("lanes %s %s / %s %s", a.Name(), a.Key(), b.Name(), b.Key())
	}
	if p.Match("A.Example.", nil) != a {
		t.Fatal("the same domain must reuse its lane")
	}
	if a.ConnectionLimit() != 2 || a.MaxDeliveriesPerConnection() != 20 || !approx(a.Rate(), 2) {
		t.Fatalf("catch-all limits: %d %d %v", a.ConnectionLimit(), a.MaxDeliveriesPerConnection(), a.Rate())
	}

	// A backlog on one domain does not hold up another.
	for range 10 {
		if _, _, err := a.wait(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	clk.mu.Lock()
	clk.t = epoch // rewind: a's slots are all in the future
	clk.mu.Unlock()
	if w, err := b.Wait(t.Context()); err != nil || w != 0 {
		t.Fatalf("b waited %v, %v", w, err)
	}
}

func TestNamedLaneShared(t *testing.T) {
	p, _ := newTestPolicy(t, nil, config.DefaultRetry())
	g := p.Match("gmail.com", nil)
	if p.Match("googlemail.com", nil) != g || p.Match("workspace.example", []string{"aspmx.l.google.com"}) != g {
		t.Fatal("a named provider must have one lane")
	}
	if g.ConnectionLimit() != 5 || g.MaxDeliveriesPerConnection() != 100 || !approx(g.Rate(), 10) {
		t.Fatalf("gmail limits: %d %d %v", g.ConnectionLimit(), g.MaxDeliveriesPerConnection(), g.Rate())
	}
	p.Match("x.example", nil)
	var keys []string
	for _, l := range p.Lanes() {
		keys = append(keys, l.Key())
	}
	if strings.Join(keys, ",") != "default/x.example,gmail" {
		t.Fatalf("Lanes() = %v", keys)
	}
}

func TestPerSecond(t *testing.T) {
	for _, tc := range []struct {
		r    config.Rate
		want float64
	}{
		{perMin(300), 5},
		{config.Rate{Count: 10, Period: time.Second}, 10},
		{config.Rate{Count: 5000, Period: time.Hour}, 5000.0 / 3600},
		{config.Rate{Count: 8640, Period: 24 * time.Hour}, 0.1},
		{config.Rate{}, math.Inf(1)}, // config's zero rate: unlimited
	} {
		if got := perSecond(tc.r); !approx(got, tc.want) && got != tc.want {
			t.Errorf("perSecond(%v) = %v, want %v", tc.r, got, tc.want)
		}
	}
}
