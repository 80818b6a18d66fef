package policy

import (
	"math"
	"testing"
	"time"

	"github.com/certgate/certgate/config"
)

func TestConfigOverridesBuiltinFieldByField(t *testing.T) {
	p, _ := newTestPolicy(t, []config.Provider{
		{Name: "GMail", MaxMessageRate: perMin(300)},
		{Name: "yahoo", MXSuffixes: []string{".yahoo-test.example"}, ConnectionLimit: 1},
		{Name: config.CatchAllProvider, MaxMessageRate: perMin(60), MaxDeliveriesPerConnection: 5},
	}, config.DefaultRetry())

	g := p.Match("gmail.com", nil)
	if g.Name() != "gmail" || !approx(g.Rate(), 5) || g.ConnectionLimit() != 5 || g.MaxDeliveriesPerConnection() != 100 {
		t.Fatalf("gmail: rate %v conns %d dels %d", g.Rate(), g.ConnectionLimit(), g.MaxDeliveriesPerConnection())
	}
	if p.Match("ws.example", []string{"aspmx.l.google.com"}) != g {
		t.Fatal("gmail kept its built-in mx suffixes")
	}

	y := p.Match("yahoo.com", nil) // domains kept
	if y.Name() != "yahoo" || y.ConnectionLimit() != 1 || !approx(y.Rate(), 5) {
		t.Fatalf("yahoo: %s %d %v", y.Name(), y.ConnectionLimit(), y.Rate())
	}
	if got := p.Match("y.example", []string{"mx.yahoo-test.example"}).Name(); got != "yahoo" {
		t.Fatalf("configured mx suffix: %s", got)
	}
	if got := p.Match("y2.example", []string{"mta5.am0.yahoodns.net"}).Name(); got != "default" {
		t.Fatalf("a configured list replaces the built-in list, got %s", got)
	}

	d := p.Match("corp.example", nil)
	if !approx(d.Rate(), 1) || d.ConnectionLimit() != 2 || d.MaxDeliveriesPerConnection() != 5 {
		t.Fatalf("default: %v %d %d", d.Rate(), d.ConnectionLimit(), d.MaxDeliveriesPerConnection())
	}
}

func TestConfiguredProvidersMatchFirst(t *testing.T) {
	p, _ := newTestPolicy(t, []config.Provider{
		// A new provider claiming a built-in's domain and MX.
		{Name: "google-vip", Domains: []string{"GMAIL.com."}, MXSuffixes: []string{"aspmx.l.google.com"}, MaxMessageRate: perMin(1200)},
		// A new provider with defaults: unlimited rate, catch-all connections.
		{Name: "partner", Domains: []string{"partner.example"}},
		// A configured substring rule ahead of the built-in gmail suffix.
		{Name: "relay", MXSuffixes: []string{"*relay*"}, MaxMessageRate: config.Rate{Count: 10, Period: time.Second}, ConnectionLimit: 8},
	}, config.DefaultRetry())

	if got := p.Match("gmail.com", nil).Name(); got != "google-vip" {
		t.Errorf("gmail.com -> %s", got)
	}
	if got := p.Match("ws.example", []string{"aspmx.l.google.com"}).Name(); got != "google-vip" {
		t.Errorf("mx aspmx -> %s", got)
	}
	if got := p.Match("ws.example2", []string{"alt1.aspmx.l.google.com"}).Name(); got != "google-vip" {
		t.Errorf("mx alt1.aspmx -> %s", got)
	}
	if got := p.Match("googlemail.com", nil).Name(); got != "gmail" {
		t.Errorf("googlemail.com -> %s (built-in still there)", got)
	}
	if got := p.Match("x.example", []string{"relay.google.com"}).Name(); got != "relay" {
		t.Errorf("relay.google.com -> %s", got)
	}

	pt := p.Match("partner.example", nil)
	if !math.IsInf(pt.Rate(), 1) || pt.ConnectionLimit() != 2 || pt.MaxDeliveriesPerConnection() != 20 {
		t.Errorf("partner: %v %d %d", pt.Rate(), pt.ConnectionLimit(), pt.MaxDeliveriesPerConnection())
	}
	r := p.Match("r.example", []string{"mx.relay.example"})
	if !approx(r.Rate(), 10) || r.ConnectionLimit() != 8 {
		t.Errorf("relay: %v %d", r.Rate(), r.ConnectionLimit())
	}
}

func TestOverriddenBuiltinMovesToConfiguredOrder(t *testing.T) {
	// zimbra's "*zimbra*" would otherwise lose to gmail for a host that
	// carries both names; configured, it is matched first.
	host := "zimbra-gw.google.com"
	p, _ := newTestPolicy(t, nil, config.DefaultRetry())
	if got := p.Match("a.example", []string{host}).Name(); got != "gmail" {
		t.Fatalf("built-in order: %s", got)
	}
	p, _ = newTestPolicy(t, []config.Provider{{Name: "zimbra", ConnectionLimit: 3}}, config.DefaultRetry())
	if got := p.Match("a.example", []string{host}).Name(); got != "zimbra" {
		t.Fatalf("configured order: %s", got)
	}
}

func TestNewNeedsTheCatchAll(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("New without the catch-all did not panic")
		}
	}()
	New(nil, config.DefaultRetry(), Options{})
}
