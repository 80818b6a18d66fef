package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestBuiltinProviders(t *testing.T) {
	bs := BuiltinProviders()
	seen := map[string]bool{}
	for i, b := range bs {
		if seen[b.Name] {
			t.Errorf("built-in %s twice", b.Name)
		}
		seen[b.Name] = true
		if b.MaxMessageRate.Count <= 0 || b.ConnectionLimit <= 0 || b.MaxDeliveriesPerConnection <= 0 {
			t.Errorf("built-in %s has an unset limit: %+v", b.Name, b)
		}
		if b.Name == CatchAllProvider && i != len(bs)-1 {
			t.Error("the catch-all must come last")
		}
	}
	for _, n := range []string{"gmail", "outlook", "microsoft365", "yahoo", "apple", "zimbra", CatchAllProvider} {
		if !seen[n] {
			t.Errorf("built-in %s missing", n)
		}
	}
	// Fresh copies: a caller's change does not reach the next caller.
	bs[0].Domains[0] = "changed.example"
	if BuiltinProviders()[0].Domains[0] == "changed.example" {
		t.Error("BuiltinProviders shares its slices")
	}
}

// TestBuiltinsPassValidation holds the built-in table to the rules of a
// configured provider: one name rule, valid domains and MX suffixes.
func TestBuiltinsPassValidation(t *testing.T) {
	v := &validator{}
	v.providers(BuiltinProviders())
	for _, p := range v.problems {
		t.Errorf("built-in fails validation: %s", p)
	}
}

func names(ps []Provider) string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return strings.Join(out, ",")
}

func TestResolveProvidersBuiltinsOnly(t *testing.T) {
	got := ResolveProviders(nil)
	if !reflect.DeepEqual(got, BuiltinProviders()) {
		t.Fatalf("ResolveProviders(nil) = %+v, want the built-ins", got)
	}
}

func TestResolveProvidersOverridesFieldByField(t *testing.T) {
	got := ResolveProviders([]Provider{
		{Name: "GMail", MaxMessageRate: perMinute(300)},
		{Name: "yahoo", MXSuffixes: []string{".yahoo-test.example"}, ConnectionLimit: 1},
		{Name: CatchAllProvider, MaxMessageRate: perMinute(60), MaxDeliveriesPerConnection: 5},
	})
	if n := names(got); n != "gmail,yahoo,outlook,microsoft365,apple,zimbra,default" {
		t.Fatalf("order: %s", n)
	}
	builtin := map[string]Provider{}
	for _, b := range BuiltinProviders() {
		builtin[b.Name] = b
	}

	g := builtin["gmail"]
	g.MaxMessageRate = perMinute(300) // the rest kept
	if !reflect.DeepEqual(got[0], g) {
		t.Errorf("gmail: %+v\nwant %+v", got[0], g)
	}
	y := builtin["yahoo"]
	y.MXSuffixes, y.ConnectionLimit = []string{".yahoo-test.example"}, 1 // a list replaces, domains kept
	if !reflect.DeepEqual(got[1], y) {
		t.Errorf("yahoo: %+v\nwant %+v", got[1], y)
	}
	d := builtin[CatchAllProvider]
	d.MaxMessageRate, d.MaxDeliveriesPerConnection = perMinute(60), 5
	if !reflect.DeepEqual(got[len(got)-1], d) {
		t.Errorf("default: %+v\nwant %+v", got[len(got)-1], d)
	}
}

func TestResolveProvidersNewProviders(t *testing.T) {
	got := ResolveProviders([]Provider{
		{Name: "google-vip", Domains: []string{"gmail.com"}, MaxMessageRate: perMinute(1200)},
		{Name: "partner", Domains: []string{"partner.example"}},
		{Name: "zimbra", ConnectionLimit: 3},
		{Name: "relay", MXSuffixes: []string{"*relay*"}, ConnectionLimit: 8},
		{Name: CatchAllProvider, ConnectionLimit: 1},
	})
	if n := names(got); n != "google-vip,partner,zimbra,relay,gmail,outlook,microsoft365,yahoo,apple,default" {
		t.Fatalf("order: %s", n)
	}
	// A new provider's zero rate is unlimited, its zero connection limits
	// the catch-all's as configured, even when the catch-all comes later.
	want := Provider{Name: "partner", Domains: []string{"partner.example"}, ConnectionLimit: 1, MaxDeliveriesPerConnection: 20}
	if !reflect.DeepEqual(got[1], want) {
		t.Errorf("partner: %+v\nwant %+v", got[1], want)
	}
	if got[3].ConnectionLimit != 8 || got[3].MaxDeliveriesPerConnection != 20 || got[3].MaxMessageRate != (Rate{}) {
		t.Errorf("relay: %+v", got[3])
	}
	if z := got[2]; z.ConnectionLimit != 3 || z.MaxMessageRate != perMinute(120) || len(z.MXSuffixes) != 3 {
		t.Errorf("zimbra override: %+v", z)
	}
}

func TestResolveProvidersDoesNotAlias(t *testing.T) {
	in := []Provider{{Name: "partner", Domains: []string{"partner.example"}}}
	got := ResolveProviders(in)
	got[0].Domains[0] = "changed.example"
	if in[0].Domains[0] != "partner.example" {
		t.Error("ResolveProviders shares the configured slices")
	}
}

func TestDefaultRetryIsTheFileDefault(t *testing.T) {
	c := &Config{}
	c.SetDefaults()
	if !reflect.DeepEqual(c.Delivery.Retry, DefaultRetry()) {
		t.Fatalf("SetDefaults retry %+v, DefaultRetry %+v", c.Delivery.Retry, DefaultRetry())
	}
	if r := DefaultRetry(); r.MaxAge != Duration(72*time.Hour) || len(r.Schedule) != 7 || r.Jitter != 0.1 {
		t.Fatalf("DefaultRetry = %+v", r)
	}
}
