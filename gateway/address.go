package gateway

import (
	"strings"

	"github.com/emersion/go-smtp"
)

var (
	errBadAddress = newReply(553, smtp.EnhancedCode{5, 1, 3}, "syntax", "Address syntax not accepted: use a plain local-part@domain")
	errBadSender  = newReply(553, smtp.EnhancedCode{5, 1, 7}, "syntax", "Sender address syntax not accepted: use a plain local-part@domain")
)

// parseAddress validates an envelope address as go-smtp hands it over and
// returns it with its domain lower-cased. go-smtp has already dropped any
// source route (RFC 5321 4.1.2 a-d-l) and unquoted a quoted local part, so a
// quoted "a@b"@c arrives as a@b@c: anything that is not a plain dot-atom
// local part at a DNS domain is refused. That also shuts out the relay
// tricks of old (% hacks, bang paths, IP literals).
func parseAddress(s string) (addr, local, domain string, err error) {
	at := strings.LastIndexByte(s, '@')
	if at <= 0 || at == len(s)-1 {
		return "", "", "", errBadAddress
	}
	local, domain = s[:at], strings.ToLower(s[at+1:])
	if !validLocalPart(local) || !validDomain(domain) {
		return "", "", "", errBadAddress
	}
	return local + "@" + domain, local, domain, nil
}

// validLocalPart accepts an RFC 5322 3.2.3 dot-atom, less '%' and '!' which
// some MTAs still treat as routing.
func validLocalPart(s string) bool {
	if len(s) == 0 || len(s) > 64 { // RFC 5321 4.5.3.1.1
		return false
	}
	prevDot := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '.' {
			if prevDot {
				return false
			}
			prevDot = true
			continue
		}
		prevDot = false
		if !isAtext(c) {
			return false
		}
	}
	return !prevDot
}

func isAtext(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("#$&'*+-/=?^_`{|}~", c) >= 0
}

// validDomain accepts a fully qualified DNS name of LDH labels (RFC 5321
// 4.1.2 Domain); IP literals and single labels are not deliverable targets
// for certificate mail.
func validDomain(s string) bool {
	if len(s) == 0 || len(s) > 253 || !strings.Contains(s, ".") {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}
