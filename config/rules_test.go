package config

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

// Every built-in rule compiles, names itself uniquely, says why, and
// matches the reply it is written for.
func TestBuiltinRules(t *testing.T) {
	replies := map[string]string{
		"gmail-rate-limit":       "421 4.7.28 [192.0.2.1] Our system has detected an unusual rate of unsolicited mail originating from your IP address.",
		"gmail-unsolicited":      "550 5.7.1 Our system has detected that this message is likely unsolicited mail.",
		"gmail-authentication":   "550 5.7.26 This mail has been blocked because the sender is unauthenticated.",
		"gmail-per-user":         "450 4.2.1 The user you are trying to contact is receiving mail at a rate that prevents additional messages.",
		"outlook-ip-reputation":  "451 4.7.650 The mail server [192.0.2.1] has been temporarily rate limited due to IP reputation.",
		"outlook-blocklist":      "550 5.7.1 Unfortunately, messages from [192.0.2.1] weren't sent. (S3150)",
		"outlook-authentication": "550 5.7.515 Access denied, sending domain ca.example does not meet the required authentication level.",
		"exchange-throttled":     "451 4.7.500 Server busy. Please try again later from [192.0.2.1]. (AS761)",
		"yahoo-throttled":        "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints",
		"yahoo-blocked":          "553 5.7.2 [TSS09] All messages from 192.0.2.1 will be permanently deferred",
		"yahoo-authentication":   "550 5.7.9 This mail has been blocked because the sender is unauthenticated.",
		"greylisting":            "451 4.7.1 Greylisted, please try again later",
		"throttled":              "421 4.7.0 Too many connections, slow down",
	}
	for _, provider := range []string{"gmail", "outlook", "microsoft365", "yahoo", "zimbra"} {
		rules := BuiltinRules(provider)
		var v validator
		v.rules("builtin", rules)
		if len(v.problems) > 0 {
			t.Errorf("%s: %+v", provider, v.problems)
		}
		for _, r := range rules {
			if r.Reason == "" {
				t.Errorf("%s: rule %s gives no reason", provider, r.Name)
			}
			reply, ok := replies[r.Name]
			if !ok {
				t.Errorf("%s: no sample reply for rule %s", provider, r.Name)
				continue
			}
			// The first rule to match is the one that acts.
			for _, first := range rules {
				if first.Regexp().MatchString(reply) {
					if first.Name != r.Name {
						t.Errorf("%s: %q is taken by %s before %s", provider, reply, first.Name, r.Name)
					}
					break
				}
			}
		}
	}
}

func TestReplyRulesValidated(t *testing.T) {
	f := newFixture(t)
	_, err := Parse(f.path(), []byte(f.expand(minimalYAML+`rules:
  - {name: Bad Name, match: "(", action: slow, factor: 2}
  - {name: ok, match: "^421 ", action: explode}
  - {name: ok, match: "^421 ", action: set, for: 1ms}
  - {name: t, match: "^4", action: alert, threshold: 3}
providers:
  - name: gmail
    rules: [{name: a, match: "^5", action: suspend, all: true, per_tenant: true}]
    recovery: {step: 2, interval: 0s}
`)))
	var errs *Errors
	if !errors.As(err, &errs) {
		t.Fatalf("Parse: %v", err)
	}
	for _, want := range []string{"rules[0].name", "rules[0].match", "rules[0].factor", "rules[1].action", "rules[2].name",
		"rules[2].for", "rules[2]", "rules[3].threshold", "providers[0].rules[0]", "providers[0].recovery.step", "providers[0].recovery.interval"} {
		if !strings.Contains(err.Error(), want+":") && !strings.Contains(err.Error(), want+" ") {
			t.Errorf("no problem reported at %s in:\n%v", want, err)
		}
	}
	c, err := Parse(f.path(), []byte(f.expand(minimalYAML+`rules:
  - {name: slowly, match: "^421 4\\.7\\.0 ", action: slow, threshold: 3/5m}
providers:
  - {name: gmail, recovery: {interval: 1m}}
`)))
	if err != nil {
		t.Fatal(err)
	}
	r := c.Rules[0]
	if r.Factor != DefaultRuleFactor || r.For != DefaultRuleFor || r.Floor != DefaultRuleFloor ||
		r.Threshold != (Threshold{Count: 3, Window: 5 * time.Minute}) || !r.Regexp().MatchString("421 4.7.0 busy") {
		t.Errorf("defaults of a slow rule: %+v", r)
	}
	if rc := c.Providers[0].Recovery; rc == nil || rc.Step != DefaultRecoveryStep || rc.Interval.D() != time.Minute {
		t.Errorf("recovery with defaults: %+v", rc)
	}
}

// docs/providers.md lists every built-in rule.
func TestBuiltinRulesDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/providers.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"gmail", "outlook", "microsoft365", "yahoo"} {
		for _, r := range BuiltinRules(p) {
			if !strings.Contains(string(doc), "`"+r.Name+"`") {
				t.Errorf("docs/providers.md does not list the built-in rule %s", r.Name)
			}
		}
	}
}

func TestWarmupValidated(t *testing.T) {
	f := newFixture(t)
	_, err := Parse(f.path(), []byte(f.expand(minimalYAML+`providers:
  - {name: gmail, warmup: {start: "Dec 1", timezone: Mars/Olympus, schedule: [50, 0]}}
  - {name: yahoo, warmup: {start: 2026-12-01}}
  - {name: default, warmup: {start: 2026-12-01, schedule: [1]}, placement: {window: 5}}
`)))
	for _, want := range []string{"providers[0].warmup.start", "providers[0].warmup.timezone", "providers[0].warmup.schedule[1]",
		"providers[1].warmup.schedule", "providers[2].warmup", "providers[2].placement"} {
		if err == nil || !strings.Contains(err.Error(), want+":") {
			t.Errorf("no problem reported at %s in:\n%v", want, err)
		}
	}
	c, err := Parse(f.path(), []byte(f.expand(minimalYAML+`providers:
  - {name: gmail, warmup: {start: 2026-12-01, schedule: [50, 100]}}
`)))
	if err != nil {
		t.Fatal(err)
	}
	if w := ResolveProviders(c.Providers)[0].Warmup; w == nil || w.Timezone != "UTC" || len(w.Schedule) != 2 {
		t.Errorf("warm-up after defaults and the merge: %+v", w)
	}
}

func TestTenantWarmupValidated(t *testing.T) {
	f := newFixture(t)
	tenant := strings.Replace(minimalYAML, "    from_domains: [issuer.example]\n",
		"    from_domains: [issuer.example]\n    warmup: %s\n", 1)
	_, err := Parse(f.path(), []byte(f.expand(strings.Replace(tenant, "%s",
		`{start: 2026-12-01, schedule: [50], providers: [gmail, default, nosuch]}`, 1)+`providers:
  - {name: gmail, warmup: {start: 2026-12-01, schedule: [50], providers: [gmail]}}
`)))
	for _, want := range []string{"tenants[0].warmup.providers[1]", "tenants[0].warmup.providers[2]", "providers[0].warmup.providers"} {
		if err == nil || !strings.Contains(err.Error(), want+":") {
			t.Errorf("no problem reported at %s in:\n%v", want, err)
		}
	}
	if err != nil && strings.Contains(err.Error(), "tenants[0].warmup.providers[0]") {
		t.Errorf("gmail refused as a tenant warm-up's provider:\n%v", err)
	}
	c := mustParse(t, f, strings.Replace(tenant, "%s", `{start: 2026-12-01, schedule: [50, 100]}`, 1))
	w := c.Tenants[0].Warmup
	if w == nil || w.Timezone != "UTC" || !w.Covers("gmail") || w.Covers(CatchAllProvider) {
		t.Errorf("tenant warm-up after defaults: %+v", w)
	}
}
