package policy

import (
	"math"
	"strings"

	"github.com/certgate/certgate/config"
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
// provider claims.
const CatchAll = config.CatchAllProvider

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
