package config

import (
	"errors"
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

// TestValidateProviders holds every rule policy.New used to check itself,
// now checked here once: check-config reports what serve would refuse.
func TestValidateProviders(t *testing.T) {
	f := newFixture(t)
	cfg := mustParse(t, f, minimalYAML)
	cfg.Providers = []Provider{
		{Name: ""},
		{Name: "Bad Name"},
		{Name: "default/x"},
		{Name: "gmail", ConnectionLimit: -1},
		{Name: "gmail"},
		{Name: "outlook", MaxMessageRate: Rate{Count: 5}},
		{Name: "yahoo", MaxMessageRate: Rate{Count: -1, Period: time.Minute}},
		{Name: "apple", MaxDeliveriesPerConnection: -2},
		{Name: "zimbra", MXSuffixes: []string{"*"}},
		{Name: "lonely", ConnectionLimit: 1},
		{Name: "empty-domain", Domains: []string{" . "}},
		{Name: CatchAllProvider, Domains: []string{"x.example"}, MXSuffixes: []string{".x.example"}},
		{Name: ".dotted", Domains: []string{"d.example"}},
		{Name: "-dash", Domains: []string{"d.example"}},
		{Name: "fine_name-2", MXSuffixes: []string{"*relay*"}},
	}
	cfg.Delivery.Retry = Retry{
		Schedule: []Duration{Duration(time.Minute), 0},
		MaxAge:   Duration(-time.Hour),
		Jitter:   1.5,
	}
	err := cfg.Validate()
	var errs *Errors
	if !errors.As(err, &errs) {
		t.Fatalf("Validate: want *Errors, got %v", err)
	}
	want := []struct{ path, msg string }{
		{"providers[0].name", "required"},
		{"providers[1].name", "lower-case letters"},
		{"providers[2].name", "lower-case letters"},
		{"providers[3].connection_limit", "must not be negative"},
		{"providers[4].name", "already the name of providers[3]"},
		{"providers[5].max_message_rate", "period must be positive"},
		{"providers[6].max_message_rate", "count must not be negative"},
		{"providers[7].max_deliveries_per_connection", "must not be negative"},
		{"providers[8].mx_suffixes[0]", "matches every host"},
		{"providers[9]", "a new provider needs domains or mx_suffixes"},
		{"providers[10].domains[0]", "empty domain"},
		{"providers[11].domains", "takes limits only"},
		{"providers[11].mx_suffixes", "takes limits only"},
		{"providers[12].name", "starting with a letter or digit"},
		{"providers[13].name", "starting with a letter or digit"},
		{"delivery.retry.schedule[1]", "positive duration"},
		{"delivery.retry.max_age", "positive duration"},
		{"delivery.retry.jitter", "at least 0 and below 1"},
	}
	matched := make([]bool, len(errs.Problems))
	for _, w := range want {
		found := false
		for i, p := range errs.Problems {
			if !matched[i] && p.Path == w.path && strings.Contains(p.Msg, w.msg) {
				matched[i], found = true, true
				break
			}
		}
		if !found {
			t.Errorf("missing problem %s: %q", w.path, w.msg)
		}
	}
	for i, p := range errs.Problems {
		if !matched[i] {
			t.Errorf("unexpected problem: %s", p)
		}
	}
}
