package compose

import (
	"fmt"
	"net/mail"
	"strings"

	"golang.org/x/net/idna"

	"github.com/certgate/certgate/internal/mailaddr"
)

// MaxAddresses bounds one request's list of addresses before the tenant's
// own recipient limit (the API's 413) is even considered: parsing stops
// there.
const MaxAddresses = 1000

// maxAddressLen is the longest forward-path less its angle brackets (RFC
// 5321 4.5.3.1.3: 256 octets).
const maxAddressLen = 254

// maxListLen bounds a pasted list: MaxAddresses addresses of the longest
// form, with a display name each.
const maxListLen = MaxAddresses * (maxAddressLen + 64)

// maxReported bounds how many bad addresses one error names.
const maxReported = 10

// ParseAddresses parses one pasted list ("a@x, b@y; Ana <c@z>") into
// addresses, in order, without duplicates. See parseAddress for what an
// address may be. The error is a *FieldError on "emails" naming every bad
// address (up to ten).
func ParseAddresses(s string) ([]string, error) {
	if len(s) > maxListLen {
		return nil, fieldErr("emails", fmt.Sprintf("is longer than %d characters", maxListLen))
	}
	items, err := splitList(s)
	if err != nil {
		return nil, err
	}
	var l addrList
	for i, item := range items {
		l.add(item, fmt.Sprintf("%s (address %d)", quoteShort(item), i+1))
	}
	return l.result("emails")
}

// addrList gathers addresses, removing duplicates and remembering the bad
// ones for one error.
type addrList struct {
	out  []string
	seen map[string]bool
	bad  []string
	nbad int
}

func (l *addrList) add(item, label string) {
	a, err := parseAddress(item)
	if err != nil {
		l.nbad++
		if len(l.bad) < maxReported {
			l.bad = append(l.bad, label+": "+err.Error())
		}
		return
	}
	if l.seen == nil {
		l.seen = map[string]bool{}
	}
	// parseAddress has already lower-cased the domain; the local part is
	// the receiver's to interpret (RFC 5321 2.4), so its case counts.
	if !l.seen[a] {
		l.seen[a] = true
		l.out = append(l.out, a)
	}
}

func (l *addrList) result(field string) ([]string, error) {
	if l.nbad > 0 {
		reason := strings.Join(l.bad, "; ")
		if l.nbad > len(l.bad) {
			reason += fmt.Sprintf("; and %d more", l.nbad-len(l.bad))
		}
		return nil, fieldErr(field, reason)
	}
	if len(l.out) == 0 {
		return nil, fieldErr(field, "holds no address")
	}
	return l.out, nil
}

// splitList splits a pasted list at commas, semicolons (Outlook's
// separator) and line breaks, but not inside a quoted display name
// ("Pérez, Juan" <juan@x>), a comment or angle brackets. Empty items
// (a trailing comma) are dropped.
func splitList(s string) ([]string, error) {
	var items []string
	start, quoted, angle, comment := 0, false, false, 0
	flush := func(end int) error {
		if item := strings.TrimSpace(s[start:end]); item != "" {
			if len(items) == MaxAddresses {
				return fieldErr("emails", fmt.Sprintf("holds more than %d addresses", MaxAddresses))
			}
			items = append(items, item)
		}
		start = end + 1
		return nil
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quoted:
			if c == '\\' {
				i++
			} else if c == '"' {
				quoted = false
			}
		case c == '"':
			quoted = true
		case c == '(':
			comment++
		case c == ')' && comment > 0:
			comment--
		case comment > 0:
		case c == '<':
			angle = true
		case c == '>':
			angle = false
		case !angle && (c == ',' || c == ';' || c == '\n' || c == '\r'):
			if err := flush(i); err != nil {
				return nil, err
			}
		}
	}
	if err := flush(len(s)); err != nil {
		return nil, err
	}
	return items, nil
}

// parseAddress reads one address, bare or with a display name (RFC 5322
// 3.4, via net/mail), and returns local@domain with the domain in
// lower-case A-labels (RFC 5890 2.3.2.1; IDNA2008 through x/net/idna).
// What it returns is what certgate's SMTP side accepts in an envelope: a
// dot-atom local part in ASCII (no SMTPUTF8) without '%' or '!', at a DNS
// name of at least two labels; nothing else would be deliverable by it.
func parseAddress(s string) (string, error) {
	a, err := mail.ParseAddress(s)
	if err != nil {
		return "", fmt.Errorf("not an address (%s)", strings.TrimPrefix(err.Error(), "mail: "))
	}
	at := strings.LastIndexByte(a.Address, '@')
	if at <= 0 {
		return "", fmt.Errorf("not an address")
	}
	local, domain := a.Address[:at], a.Address[at+1:]
	if len(local) > 64 { // RFC 5321 4.5.3.1.1
		return "", fmt.Errorf("the part before @ is longer than 64 characters")
	}
	if !mailaddr.DotAtom(local) {
		return "", fmt.Errorf("the part before @ must be plain letters, digits and . _ - + (no quotes, spaces or accents)")
	}
	if strings.HasPrefix(domain, "[") {
		return "", fmt.Errorf("an IP address is not a mail domain here")
	}
	ascii, err := idna.Lookup.ToASCII(domain)
	if err != nil {
		return "", fmt.Errorf("the domain is not valid (%v)", err)
	}
	ascii = strings.ToLower(ascii)
	if !mailaddr.Domain(ascii) {
		return "", fmt.Errorf("the domain %q is not a full domain name", ascii)
	}
	addr := local + "@" + ascii
	if len(addr) > maxAddressLen {
		return "", fmt.Errorf("longer than %d characters", maxAddressLen)
	}
	return addr, nil
}

// quoteShort quotes what a person typed for an error, cut to a readable
// length.
func quoteShort(s string) string {
	if len(s) > 80 {
		s = strings.ToValidUTF8(s[:80], "") + "…"
	}
	return fmt.Sprintf("%q", s)
}
