package policy

import (
	"math"
	"strings"
)

// Provider is a receiving mailbox provider: how to recognise its mail and
// the limits of its lane.
type Provider struct {
	// Name identifies the provider in configuration, lane keys and metric
	// labels. Lower case.
	Name string
	// Domains are recipient domains known to be hosted by the provider,
	// matched exactly (case-insensitive, trailing dot ignored). They let
	// common domains be matched without an MX lookup.
	Domains []string
	// MXSuffixes match the provider's MX host names. An entry is compared
	// with the end of the host name: ".google.com" matches
	// "aspmx.l.google.com"; an entry without a leading dot also matches on
	// a label boundary ("google.com" matches "google.com" and
	// "x.google.com", not "notgoogle.com"). An entry starting with "*" is
	// a substring rule instead: "*zimbra*" matches any host name that
	// contains "zimbra" anywhere (the stars are stripped).
	MXSuffixes []string
	// Rate is the lane's message rate in messages per second; +Inf means
	// unlimited.
	Rate float64
	// ConnectionLimit caps concurrent SMTP connections of the lane.
	ConnectionLimit int
	// MaxDeliveriesPerConnection caps the messages sent over one SMTP
	// connection before it is closed and a new one opened.
	MaxDeliveriesPerConnection int
}

// CatchAll is the name of the provider that matches every domain no other
// provider claims. Its limits apply per recipient domain: every such domain
// gets a lane of its own.
const CatchAll = "default"

func perMinute(n float64) float64 { return n / 60 }

// builtinProviders returns fresh copies of the built-in providers, in the
// order they are matched (after the configured ones). docs/providers.md has
// the same table for operators.
//
// The limits are deliberately conservative: certgate's senders are issuers
// warming up a new sending IP for bulk certificate mail, whose reputation is
// still unknown to the receivers. Receivers publish no numbers; they throttle
// a sender by reputation with 4xx replies (Gmail "421 4.7.28", Outlook
// "451 4.7.650", Yahoo "421 4.7.0 [TSS04]"). Starting slow and raising the
// rate once placement feedback is good costs minutes; starting fast costs
// days of deferrals and a junk-folder reputation. Operators raise them per
// provider in configuration.
func builtinProviders() []Provider {
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
			Rate:                       perMinute(600),
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
			Rate:                       perMinute(300),
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
			Rate:                       perMinute(600),
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
			Rate:                       perMinute(300),
			ConnectionLimit:            4,
			MaxDeliveriesPerConnection: 50,
		},
		{
			// Apple iCloud Mail. Smaller volume than the others and little
			// published guidance; the cautious limits of Outlook.
			Name:                       "apple",
			Domains:                    []string{"icloud.com", "me.com", "mac.com"},
			MXSuffixes:                 []string{".mail.icloud.com"},
			Rate:                       perMinute(300),
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
			Rate:                       perMinute(120),
			ConnectionLimit:            2,
			MaxDeliveriesPerConnection: 20,
		},
		{
			// The catch-all: corporate filters, small providers, self-hosted
			// servers. Limits apply per recipient domain, so 2/s and 2
			// connections per domain is polite to a single server without
			// limiting a wave that spreads over many domains.
			Name:                       CatchAll,
			Rate:                       perMinute(120),
			ConnectionLimit:            2,
			MaxDeliveriesPerConnection: 20,
		},
	}
}

// BuiltinProviders returns the built-in providers in match order, the
// catch-all last. The slices are fresh copies.
func BuiltinProviders() []Provider { return builtinProviders() }

// normName normalises a domain or host name for matching: lower case, no
// surrounding space, no trailing dot.
func normName(s string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), ".")
}

// mxRule is one compiled entry of Provider.MXSuffixes.
type mxRule struct {
	pattern   string
	substring bool
}

func compileMXRule(s string) (mxRule, bool) {
	s = strings.ToLower(strings.TrimSpace(s))
	if strings.HasPrefix(s, "*") {
		p := strings.Trim(s, "*")
		return mxRule{pattern: p, substring: true}, p != ""
	}
	s = strings.TrimSuffix(s, ".")
	return mxRule{pattern: s}, strings.Trim(s, ".") != ""
}

// match reports whether the normalised host name matches the rule.
func (r mxRule) match(host string) bool {
	if host == "" {
		return false
	}
	if r.substring {
		return strings.Contains(host, r.pattern)
	}
	bare := strings.TrimPrefix(r.pattern, ".")
	return host == bare || strings.HasSuffix(host, "."+bare)
}

var inf = math.Inf(1)

func isUnlimited(rate float64) bool { return math.IsInf(rate, 1) }
