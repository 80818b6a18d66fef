package config

import (
	"slices"
	"strings"
	"time"
)

// CatchAllProvider is the name of the provider that matches every domain
// no other provider claims. Its limits apply per recipient domain: every
// such domain gets a lane of its own.
const CatchAllProvider = "default"

func perMinute(n int) Rate { return Rate{Count: n, Period: time.Minute} }

// BuiltinProviders returns fresh copies of the built-in providers in match
// order (after the configured ones), the catch-all last. docs/providers.md
// has the same table for operators.
//
// The limits are deliberately conservative: certgate's senders are issuers
// warming up a new sending IP for bulk certificate mail, whose reputation is
// still unknown to the receivers. Receivers publish no numbers; they throttle
// a sender by reputation with 4xx replies (Gmail "421 4.7.28", Outlook
// "451 4.7.650", Yahoo "421 4.7.0 [TSS04]"). Starting slow and raising the
// rate once placement feedback is good costs minutes; starting fast costs
// days of deferrals and a junk-folder reputation. Operators raise them per
// provider in configuration.
func BuiltinProviders() []Provider {
	return []Provider{
		{
			// Gmail and Google Workspace. Workspace customers keep their own
			// domains, so the MX suffix does most of the matching.
			// Google's infrastructure takes high concurrency; 10/s over 5
			// connections leaves room for Workspace tenants sharing the lane,
			// and 100 deliveries per connection amortises the TLS handshake
			// without keeping one connection long enough to be singled out.
			Name:                       "gmail",
			Domains:                    []string{"gmail.com", "googlemail.com"},
			MXSuffixes:                 []string{".google.com", ".googlemail.com"},
			MaxMessageRate:             perMinute(600),
			ConnectionLimit:            5,
			MaxDeliveriesPerConnection: 100,
		},
		{
			// Outlook.com consumer mailboxes (the former Hotmail/Live/MSN).
			// The consumer filter is the strictest with unknown IPs and
			// answers bursts with "451 4.7.650" reputation throttling, so it
			// gets half Gmail's rate, 4 connections and shorter connections.
			Name: "outlook",
			Domains: []string{
				"outlook.com", "hotmail.com", "live.com", "msn.com", "passport.com", "windowslive.com",
				"hotmail.co.uk", "hotmail.fr", "hotmail.de", "hotmail.it", "hotmail.es", "hotmail.nl",
				"hotmail.be", "hotmail.ca", "hotmail.se", "hotmail.com.br", "hotmail.com.ar", "hotmail.co.jp",
				"live.co.uk", "live.fr", "live.de", "live.it", "live.nl", "live.ca", "live.com.au",
				"outlook.fr", "outlook.de", "outlook.es", "outlook.it",
			},
			MXSuffixes:                 []string{".olc.protection.outlook.com"},
			MaxMessageRate:             perMinute(300),
			ConnectionLimit:            4,
			MaxDeliveriesPerConnection: 50,
		},
		{
			// Microsoft 365 (Exchange Online Protection) in front of
			// organisations' own domains: recognised by MX only. It is the
			// receiving side of most corporate customers and is built for
			// volume, so it gets Gmail's rate and more connections; the lane
			// is shared by every Microsoft 365 tenant.
			Name:                       "microsoft365",
			MXSuffixes:                 []string{".mail.protection.outlook.com"},
			MaxMessageRate:             perMinute(600),
			ConnectionLimit:            10,
			MaxDeliveriesPerConnection: 100,
		},
		{
			// Yahoo and AOL share one platform (MX under yahoodns.net). Yahoo
			// defers unknown senders early ("421 4.7.0 [TSS04]"), so the
			// same cautious limits as Outlook.
			Name: "yahoo",
			Domains: []string{
				"yahoo.com", "ymail.com", "rocketmail.com", "aol.com", "aim.com",
				"yahoo.co.uk", "yahoo.fr", "yahoo.de", "yahoo.it", "yahoo.es", "yahoo.ca",
				"yahoo.com.br", "yahoo.in",
			},
			MXSuffixes:                 []string{".yahoodns.net"},
			MaxMessageRate:             perMinute(300),
			ConnectionLimit:            4,
			MaxDeliveriesPerConnection: 50,
		},
		{
			// Apple iCloud Mail. Smaller volume than the others and little
			// published guidance; the cautious limits of Outlook.
			Name:                       "apple",
			Domains:                    []string{"icloud.com", "me.com", "mac.com"},
			MXSuffixes:                 []string{".mail.icloud.com"},
			MaxMessageRate:             perMinute(300),
			ConnectionLimit:            4,
			MaxDeliveriesPerConnection: 50,
		},
		{
			// Zimbra: hosted Zimbra and the many self-hosted Zimbra servers
			// whose MX names say so. These are single servers with modest
			// capacity, often with aggressive local rate limits, so they get
			// the catch-all's limits. "*zimbra*" is a substring rule (see
			// Provider.MXSuffixes); it comes last among the built-ins so it
			// never takes a host a more specific provider claims.
			Name:                       "zimbra",
			MXSuffixes:                 []string{".zimbra.com", ".zimbra.cloud", "*zimbra*"},
			MaxMessageRate:             perMinute(120),
			ConnectionLimit:            2,
			MaxDeliveriesPerConnection: 20,
		},
		{
			// The catch-all: corporate filters, small providers, self-hosted
			// servers. Limits apply per recipient domain, so 2/s and 2
			// connections per domain is polite to a single server without
			// limiting a wave that spreads over many domains.
			Name:                       CatchAllProvider,
			MaxMessageRate:             perMinute(120),
			ConnectionLimit:            2,
			MaxDeliveriesPerConnection: 20,
		},
	}
}

// ResolveProviders merges the configured providers (valid, as Validate
// leaves them) into the built-ins and returns every provider in match
// order, the catch-all last. Names are compared in lower case.
//
// A configured provider named like a built-in overrides it field by field:
// a non-empty list replaces the built-in's list, a non-zero limit replaces
// the built-in's limit, zero keeps the built-in's value. Any other
// configured provider is new: its zero connection limits take the
// catch-all's (as configured), and its zero rate means unlimited, as Rate
// defines. Configured providers, overrides included, come first in
// configuration order, then the remaining built-ins; the catch-all, which
// may be configured for its limits, comes last.
func ResolveProviders(configured []Provider) []Provider {
	builtins := BuiltinProviders()
	byName := map[string]int{}
	for i, b := range builtins {
		byName[b.Name] = i
	}
	catchAll := &builtins[byName[CatchAllProvider]]
	// The catch-all first: new providers take its limits wherever it is listed.
	for _, c := range configured {
		if providerKey(c.Name) == CatchAllProvider {
			catchAll.override(c)
		}
	}

	var out []Provider
	taken := map[string]bool{CatchAllProvider: true}
	for _, c := range configured {
		name := providerKey(c.Name)
		if name == CatchAllProvider {
			continue
		}
		p := Provider{
			Name:                       name,
			ConnectionLimit:            catchAll.ConnectionLimit,
			MaxDeliveriesPerConnection: catchAll.MaxDeliveriesPerConnection,
		}
		if i, ok := byName[name]; ok {
			p = builtins[i]
			taken[name] = true
		}
		p.override(c)
		out = append(out, p)
	}
	for _, b := range builtins {
		if !taken[b.Name] {
			out = append(out, b)
		}
	}
	return append(out, *catchAll)
}

func providerKey(name string) string { return strings.ToLower(strings.TrimSpace(name)) }

// override sets the fields c sets: non-empty lists and non-zero limits.
func (p *Provider) override(c Provider) {
	if len(c.Domains) > 0 {
		p.Domains = slices.Clone(c.Domains)
	}
	if len(c.MXSuffixes) > 0 {
		p.MXSuffixes = slices.Clone(c.MXSuffixes)
	}
	if c.MaxMessageRate.Count > 0 {
		p.MaxMessageRate = c.MaxMessageRate
	}
	if c.ConnectionLimit > 0 {
		p.ConnectionLimit = c.ConnectionLimit
	}
	if c.MaxDeliveriesPerConnection > 0 {
		p.MaxDeliveriesPerConnection = c.MaxDeliveriesPerConnection
	}
	if len(c.Rules) > 0 {
		p.Rules = slices.Clone(c.Rules)
	}
	if c.Recovery != nil {
		r := *c.Recovery
		p.Recovery = &r
	}
	if c.Placement != nil {
		r := *c.Placement
		p.Placement = &r
	}
	if c.Warmup != nil {
		w := *c.Warmup
		w.Schedule = slices.Clone(c.Warmup.Schedule)
		p.Warmup = &w
	}
}
