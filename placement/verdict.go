// Package placement watches seed mailboxes over IMAP, matches the copies
// certgate sent there, and tells where each landed and what the receiver
// said of it. It reports; policy decides what to do about it.
//
// Dial and Login reach a seed mailbox as config describes it (implicit
// TLS, STARTTLS or loopback plaintext; a password, or XOAUTH2 with a token
// from a file or refreshed at a token endpoint). GmailCategories asks
// Gmail which category (inbox tab) a copy was filed in, with the X-GM-RAW
// search go-imap cannot send, over a minimal IMAP client of its own.
package placement

import (
	"strconv"
	"strings"

	"github.com/certgate/certgate/mimeedit"
)

// Verdicts is what a receiver said of a copy in the header fields it
// filed the copy with. Every field comes from a header the receiver (or
// anyone before it) wrote, so it is evidence to report, never a reason to
// trust the message.
type Verdicts struct {
	// From the topmost Authentication-Results (RFC 8601): the receiver
	// prepends its own and must remove any earlier field with its
	// authserv-id (RFC 8601 5). "" when the method is absent.
	AuthServ string `json:"authserv_id,omitempty"`
	SPF      string `json:"spf,omitempty"`
	DKIM     string `json:"dkim,omitempty"` // pass when any signature passed
	DMARC    string `json:"dmarc,omitempty"`
	ARC      string `json:"arc,omitempty"`

	// Microsoft: X-Forefront-Antispam-Report and X-Microsoft-Antispam.
	// SCL and BCL are -1 when absent.
	SCL int    `json:"scl"`
	SFV string `json:"sfv,omitempty"` // NSPM, SPM, SKN, ...
	CAT string `json:"cat,omitempty"` // NONE, SPM, BULK, PHSH, ...
	BCL int    `json:"bcl"`
	// Microsoft's own filing (X-Microsoft-Antispam-Mailbox-Delivery dest):
	// "inbox" (I), "junk" (J), or the letter as given.
	Dest string `json:"dest,omitempty"`

	// SpamAssassin and alike: X-Spam-Flag, X-Spam-Status.
	Spam      string   `json:"spam,omitempty"` // "yes" or "no"
	SpamScore *float64 `json:"spam_score,omitempty"`
}

// Bounds on what a hostile header may make us do: fields longer than
// maxFieldLen are cut, and at most maxResults results of one
// Authentication-Results field are read.
const (
	maxFieldLen = 16 << 10
	maxResults  = 64
)

// ParseVerdicts reads the receiver's verdicts from a copy's header block
// (as fetched with BODY.PEEK[HEADER]). A field it cannot read is left
// out; only a header that is not a header at all is an error.
func ParseVerdicts(header []byte) (Verdicts, error) {
	v := Verdicts{SCL: -1, BCL: -1}
	h, err := mimeedit.ParseHeader(header)
	if err != nil {
		return v, err
	}
	if ar := h.Values("Authentication-Results"); len(ar) > 0 {
		v.readAuthResults(bounded(ar[0]))
	}
	if f := h.Get("X-Forefront-Antispam-Report"); f != "" {
		pairs := msPairs(bounded(f))
		v.SCL = msInt(pairs["SCL"])
		v.SFV, v.CAT = pairs["SFV"], pairs["CAT"]
	}
	if f := h.Get("X-Microsoft-Antispam"); f != "" {
		v.BCL = msInt(msPairs(bounded(f))["BCL"])
	}
	if f := h.Get("X-Microsoft-Antispam-Mailbox-Delivery"); f != "" {
		switch d := msPairs(bounded(f))["dest"]; d {
		case "I":
			v.Dest = "inbox"
		case "J":
			v.Dest = "junk"
		default:
			v.Dest = d
		}
	}
	v.readSpamAssassin(bounded(h.Get("X-Spam-Flag")), bounded(h.Get("X-Spam-Status")))
	return v, nil
}

func bounded(s string) string {
	if len(s) > maxFieldLen {
		return s[:maxFieldLen]
	}
	return s
}

// readAuthResults reads one Authentication-Results field body.
// RFC 8601 2.2: authserv-id [version] *( ";" resinfo ) or "; none";
// resinfo starts with method[/version]=result, and comments (RFC 5322
// 3.2.2) may hold anything, semicolons included.
func (v *Verdicts) readAuthResults(field string) {
	parts := splitOutsideComments(field, ';', maxResults+1)
	if len(parts) == 0 {
		return
	}
	// Exchange Online leaves the authserv-id out and starts with a
	// result; an authserv-id never holds "=".
	if id := firstToken(parts[0]); !strings.Contains(id, "=") {
		v.AuthServ = strings.ToLower(id)
		parts = parts[1:]
	}
	for _, p := range parts {
		method, result, ok := strings.Cut(firstToken(p), "=")
		if !ok {
			continue
		}
		method, _, _ = strings.Cut(strings.ToLower(method), "/")
		result = strings.ToLower(result)
		switch method {
		case "spf":
			v.SPF = first(v.SPF, result)
		case "dkim":
			if v.DKIM != "pass" {
				v.DKIM = result
			}
		case "dmarc":
			v.DMARC = first(v.DMARC, result)
		case "arc":
			v.ARC = first(v.ARC, result)
		}
	}
}

func first(had, next string) string {
	if had != "" {
		return had
	}
	return next
}

// splitOutsideComments splits s at sep where sep is neither inside a
// comment (nested parentheses, RFC 5322 3.2.2) nor inside a quoted string,
// into at most n parts (the rest is dropped).
func splitOutsideComments(s string, sep byte, n int) []string {
	var parts []string
	depth, quoted, escaped, start := 0, false, false, 0
	for i := 0; i < len(s) && len(parts) < n; i++ {
		c := s[i]
		switch {
		case escaped:
			escaped = false
		case c == '\\' && (quoted || depth > 0):
			escaped = true
		case quoted:
			quoted = c != '"'
		case c == '"' && depth == 0:
			quoted = true
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case c == sep && depth == 0:
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	if len(parts) < n {
		parts = append(parts, s[start:])
	}
	return parts
}

// firstToken is the first run of characters of s that is neither
// whitespace nor inside a comment: "dkim=pass" of
// " (a comment) dkim=pass header.d=ca.example".
func firstToken(s string) string {
	var b strings.Builder
	depth := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '(' && b.Len() > 0, (c == ' ' || c == '\t') && depth == 0 && b.Len() > 0:
			return b.String() // a comment or a space ends the token
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case depth > 0, c == ' ', c == '\t':
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// msPairs reads Microsoft's "KEY:value;KEY:value;" reports. A key seen
// twice keeps its first value.
func msPairs(s string) map[string]string {
	pairs := map[string]string{}
	for _, p := range strings.SplitN(s, ";", maxResults*2) {
		k, val, ok := strings.Cut(p, ":")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			continue
		}
		if _, seen := pairs[k]; !seen {
			pairs[k] = strings.TrimSpace(val)
		}
	}
	return pairs
}

// msInt reads SCL or BCL: -1 (absent, or "-1" as Microsoft writes for
// trusted senders) through 9; anything else is absent.
func msInt(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil || n < -1 || n > 9 {
		return -1
	}
	return n
}

// readSpamAssassin reads "X-Spam-Flag: YES" and
// "X-Spam-Status: Yes, score=7.1 required=5.0 tests=... ".
func (v *Verdicts) readSpamAssassin(flag, status string) {
	switch strings.ToLower(strings.TrimSpace(flag)) {
	case "yes":
		v.Spam = "yes"
	case "no":
		v.Spam = "no"
	}
	verdict, rest, _ := strings.Cut(status, ",")
	switch strings.ToLower(strings.TrimSpace(verdict)) {
	case "yes":
		v.Spam = "yes"
	case "no":
		v.Spam = first(v.Spam, "no")
	default:
		return
	}
	for _, f := range strings.Fields(rest) {
		if s, ok := strings.CutPrefix(strings.ToLower(f), "score="); ok {
			if score, err := strconv.ParseFloat(s, 64); err == nil && score > -1e6 && score < 1e6 {
				v.SpamScore = &score
			}
			return
		}
	}
}
