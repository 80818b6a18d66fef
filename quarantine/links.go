package quarantine

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"html"
	neturl "net/url"
	"strings"

	"github.com/certgate/certgate/mimeedit"
)

// NewToken returns a link token of 128 random bits, URL-safe (RFC 4648 5
// without padding, 22 characters), and the hash under which it is stored.
func NewToken() (token string, hash [32]byte) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("quarantine: no randomness: " + err.Error()) // crypto/rand does not fail on Linux
	}
	token = base64.RawURLEncoding.EncodeToString(b[:])
	return token, HashToken(token)
}

// HashToken is how a token is stored and looked up: the gate hashes what it
// is given and looks the hash up, so neither the stored value nor the time
// taken reveals anything about a token.
func HashToken(token string) [32]byte { return sha256.Sum256([]byte(token)) }

// GatedLink is one issuer URL replaced in a copy by a gate URL.
type GatedLink struct {
	URL   string // the issuer's URL, as a browser would request it
	Token string // the copy's token for it
}

// Rewriter replaces every URL under a tenant's gate prefixes, in the text
// and HTML parts of a message, by the gate's URL for a token of its own.
type Rewriter struct {
	prefixes []string
	gateBase string // public_url + "/d/"
}

// NewRewriter rewrites URLs starting with any of prefixes to
// publicURL/d/{token}.
func NewRewriter(prefixes []string, publicURL string) *Rewriter {
	return &Rewriter{prefixes: prefixes, gateBase: strings.TrimSuffix(publicURL, "/") + "/d/"}
}

// Rewrite returns the message with its gated URLs replaced and the links it
// made: one token per distinct URL, shared by the text and HTML forms of the
// same link. Every other byte of the MIME structure stays as it was;
// changed parts are re-encoded in their own transfer encoding, with lines
// within 998 octets (see mimeedit.Rewrite). A message without gated URLs
// comes back unchanged and with no links.
func (r *Rewriter) Rewrite(msg []byte) ([]byte, []GatedLink, error) {
	if len(r.prefixes) == 0 {
		return msg, nil, nil
	}
	var links []GatedLink
	tokens := map[string]string{} // URL -> token
	tokenFor := func(url string) string {
		if t, ok := tokens[url]; ok {
			return t
		}
		t, _ := NewToken()
		tokens[url] = t
		links = append(links, GatedLink{URL: url, Token: t})
		return t
	}
	// Only text parts can hold a link a person follows; decoding a 20 MB
	// attachment for every recipient's copy cost 15 MB of garbage each.
	out, err := mimeedit.RewriteTypes(msg, []string{"text/plain", "text/html"}, func(p *mimeedit.Part, decoded []byte) ([]byte, bool, error) {
		edited, n := r.replace(decoded, p.MediaType == "text/html", tokenFor)
		return edited, n > 0, nil
	})
	if err != nil {
		return nil, nil, err
	}
	if len(links) == 0 {
		return msg, nil, nil
	}
	return out, links, nil
}

// replace rewrites the gated URLs in one decoded text or HTML body and
// returns how many it replaced.
func (r *Rewriter) replace(body []byte, isHTML bool, tokenFor func(string) string) ([]byte, int) {
	var out bytes.Buffer
	n, last := 0, 0
	for i := 0; i < len(body); {
		end := r.matchAt(body, i, isHTML)
		if end < 0 {
			i++
			continue
		}
		raw := string(body[i:end])
		url := raw
		if isHTML {
			// In HTML the URL is written with entities (&amp; in an
			// attribute); the browser would request it unescaped.
			url = html.UnescapeString(raw)
		}
		if !r.sameOrigin(url) {
			// "https://issuer.example@evil.example/" starts with the
			// prefix "https://issuer.example" but goes elsewhere: the gate
			// must never forward anywhere but the issuer.
			i = end
			continue
		}
		out.Write(body[last:i])
		out.WriteString(r.gateBase)
		out.WriteString(tokenFor(url))
		last, i = end, end
		n++
	}
	if n == 0 {
		return body, 0
	}
	out.Write(body[last:])
	return out.Bytes(), n
}

// matchAt returns the end of a gated URL starting at i, or -1. Prefixes
// match without regard to case in their scheme and host, as URLs do (RFC
// 3986 6.2.2.1); the URL runs to the first character that cannot be part of
// one (RFC 3986 2, Appendix C: white space, quotes, angle brackets), less
// trailing sentence punctuation.
func (r *Rewriter) matchAt(body []byte, i int, isHTML bool) int {
	if body[i] != 'h' && body[i] != 'H' {
		return -1
	}
	for _, p := range r.prefixes {
		if len(body)-i < len(p) || !strings.EqualFold(string(body[i:i+len(p)]), p) {
			continue
		}
		end := i + len(p)
		for end < len(body) && isURLByte(body[end]) {
			if isHTML && body[end] == '&' {
				// An entity ends the URL unless it stands for a character a
				// URL may hold (&amp; in a query): "&nbsp;(7 days)" does.
				n := entityEnd(body[end:])
				if n == 0 {
					break
				}
				if d := html.UnescapeString(string(body[end : end+n])); len(d) != 1 || !isURLByte(d[0]) {
					break
				}
				end += n
				continue
			}
			end++
		}
		for end > i+len(p) && strings.IndexByte(".,;:!?", body[end-1]) >= 0 {
			end--
		}
		if end > i+len(p) && body[end-1] == ')' && bytes.IndexByte(body[i:end], '(') < 0 {
			end-- // "(see https://x/y)" keeps its parenthesis
		}
		return end
	}
	return -1
}

// sameOrigin reports whether u has the scheme and host of the prefix it
// matched (RFC 3986 3.2: userinfo and a longer host name differ).
func (r *Rewriter) sameOrigin(u string) bool {
	cand, err := neturl.Parse(u)
	if err != nil || cand.User != nil {
		return false
	}
	for _, p := range r.prefixes {
		pre, err := neturl.Parse(p)
		if err == nil && strings.EqualFold(pre.Scheme, cand.Scheme) && strings.EqualFold(pre.Host, cand.Host) &&
			len(u) >= len(p) && strings.EqualFold(u[:len(p)], p) {
			return true
		}
	}
	return false
}

// entityEnd returns the length of the character reference starting b
// ("&amp;", "&#38;"), or 0 when b does not start with one.
func entityEnd(b []byte) int {
	for j := 1; j < len(b) && j <= 32; j++ {
		switch c := b[j]; {
		case c == ';':
			if j == 1 {
				return 0
			}
			return j + 1
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '#' && j == 1:
		default:
			return 0
		}
	}
	return 0
}

func isURLByte(c byte) bool {
	if c <= ' ' || c >= 0x7f {
		return false
	}
	return strings.IndexByte("\"'<>`{}|\\^", c) < 0
}
