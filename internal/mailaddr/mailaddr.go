// Package mailaddr holds the syntax rules for the addresses and names
// certgate accepts, shared by the SMTP side (gateway), the HTTP side
// (compose) and the DKIM keys (gateway/signer), so that what one accepts
// the others do too.
package mailaddr

import "strings"

// DotAtom accepts an RFC 5322 3.2.3 dot-atom-text of ASCII of at most 64
// octets (RFC 5321 4.5.3.1.1), less '%' and '!', which some MTAs still
// treat as routing: the plain local part certgate accepts.
func DotAtom(s string) bool {
	if len(s) == 0 || len(s) > 64 {
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

// DNSName accepts a lower-case name of LDH labels (RFC 1035 2.3.1, RFC
// 5890 A-labels included), at most 253 octets.
func DNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// Domain accepts a fully qualified DNS name (RFC 5321 4.1.2 Domain, at
// least two labels): IP literals and single labels are not deliverable
// targets for certificate mail.
func Domain(s string) bool {
	return strings.Contains(s, ".") && DNSName(s)
}
