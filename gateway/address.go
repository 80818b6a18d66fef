package gateway

import (
	"strings"

	"github.com/emersion/go-smtp"

	"github.com/certgate/certgate/internal/mailaddr"
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
	if !mailaddr.DotAtom(local) || !mailaddr.Domain(domain) {
		return "", "", "", errBadAddress
	}
	return local + "@" + domain, local, domain, nil
}
