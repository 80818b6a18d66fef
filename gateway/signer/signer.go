// Package signer owns the gateway's DKIM keys and signatures: loading and
// generating keys, the DNS records that publish them, choosing the keys that
// align with a From domain, and signing prepared messages with go-msgauth.
//
// The t= tag is stamped by go-msgauth from time.Now: v0.7.0 has no option to
// inject a clock, and every other tag and the signature are computed over
// it, so it cannot be set afterwards.
package signer

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/certgate/certgate/mimeedit"
	"github.com/emersion/go-msgauth/dkim"
	"golang.org/x/net/idna"
	"golang.org/x/net/publicsuffix"
)

// signedFields are the header fields signed when present, in the order
// listed in h= (RFC 6376 5.4.1 recommends them; RFC 8058 4 requires the
// List-Unsubscribe pair to be signed). Every present one is listed once
// more than it occurs (oversigning, RFC 6376 5.4.2 and 8.15), so that a
// copy added in transit makes the signature fail instead of being what the
// reader sees. X-Certgate-* and any other field are never signed: the
// per-recipient tracking fields are added after signing.
var signedFields = []string{
	"from", "reply-to", "to", "cc", "subject", "date", "message-id",
	"in-reply-to", "references", "mime-version", "content-type",
	"content-transfer-encoding", "list-unsubscribe", "list-unsubscribe-post",
}

// guardedFields are listed in h= even when absent, so that none can be added
// later: Reply-To (replies, and certificates, going to a phisher), the
// addressing and identity fields a reader trusts, and the MIME fields that
// say how the body is read. The threading and List-* fields are not
// guarded, so that a list manager may add them without breaking the
// signature.
var guardedFields = map[string]bool{
	"from": true, "reply-to": true, "to": true, "cc": true, "subject": true,
	"date": true, "message-id": true, "mime-version": true,
	"content-type": true, "content-transfer-encoding": true,
}

// Errors of Sign about the message; the caller should have prepared it.
var (
	ErrNoKeys   = errors.New("dkim: no keys to sign with")
	ErrNotCRLF  = errors.New("dkim: message has a bare LF or CR (RFC 5322 2.3)")
	ErrLongLine = errors.New("dkim: message has a line longer than 998 octets (RFC 5322 2.1.1); relays would rewrite it after signing (run mimeedit.FixLongLines)")
	ErrFrom     = errors.New("dkim: message must have exactly one From field (RFC 5322 3.6)")
)

// Signer signs with a fixed set of keys. It is safe for concurrent use.
type Signer struct {
	keys []entry
}

type entry struct {
	key *Key
	org string // organizational domain, "" if none (a public suffix)
}

// New returns a Signer for keys, in the given order of preference among
// equally good keys.
func New(keys []*Key) *Signer {
	s := &Signer{}
	for _, k := range keys {
		org, _ := publicsuffix.EffectiveTLDPlusOne(k.Domain)
		s.keys = append(s.keys, entry{k, org})
	}
	return s
}

// KeysFor returns the keys whose domain is aligned with fromDomain, the
// domain of the From address, at most one RSA and one Ed25519 key, RSA
// first.
//
// Alignment is DMARC relaxed alignment (RFC 7489 3.1.1): the key's domain
// and fromDomain have the same organizational domain, found with the
// Public Suffix List (RFC 7489 3.2; golang.org/x/net/publicsuffix, which
// includes the list's private section). Among aligned keys an exact match
// is preferred, then the closest parent domain, then any other aligned
// domain (a sibling or child), then configuration order. A fromDomain that
// is a public suffix itself (co.uk) or not a valid name aligns with
// nothing. Internationalized domains are compared as A-labels. usable, when
// not nil, keeps only the keys whose domain it accepts: a tenant signs with
// its own keys only.
func (s *Signer) KeysFor(fromDomain string, usable func(keyDomain string) bool) []*Key {
	d, err := idna.Lookup.ToASCII(strings.TrimSuffix(strings.ToLower(fromDomain), "."))
	if err != nil {
		return nil
	}
	org, err := publicsuffix.EffectiveTLDPlusOne(d)
	if err != nil {
		return nil
	}
	best := map[string]*Key{}
	bestRank := map[string]int{}
	for _, e := range s.keys {
		if e.org != org || (usable != nil && !usable(e.key.Domain)) {
			continue
		}
		var rank int
		switch {
		case e.key.Domain == d:
			rank = 0
		case strings.HasSuffix(d, "."+e.key.Domain):
			rank = strings.Count(d, ".") - strings.Count(e.key.Domain, ".") // closer parent first
		default:
			rank = 1000 // aligned, but neither the domain nor a parent
		}
		alg := e.key.Algorithm
		if r, ok := bestRank[alg]; !ok || rank < r {
			best[alg], bestRank[alg] = e.key, rank
		}
	}
	var out []*Key
	for _, alg := range []string{AlgRSASHA256, AlgEd25519SHA256} {
		if k := best[alg]; k != nil {
			out = append(out, k)
		}
	}
	return out
}

// Sign returns the DKIM-Signature header fields for msg, one per key, to be
// prepended to msg. msg is a whole message with CRLF line endings, ready to
// send: nothing may change it after signing except prepending fields and
// adding the unsigned X-Certgate-* fields.
//
// The signatures use relaxed/relaxed canonicalization (RFC 6376 3.4.2 and
// 3.4.4: they survive the whitespace and folding changes relays make) and
// SHA-256 (RFC 8301 3.1); see signedFields for h=. The message is read once
// for all keys.
//
// The fields come in the order of keys; KeysFor puts RSA first, so the
// topmost signature is the one every verifier understands (some evaluate
// only the first). Each field ends in CRLF; go-msgauth folds at 75
// characters and Sign checks that no line exceeds 998 octets.
func (s *Signer) Sign(msg []byte, keys []*Key) ([]byte, error) {
	if len(keys) == 0 {
		return nil, ErrNoKeys
	}
	if err := checkLines(msg); err != nil {
		return nil, err
	}
	header, _, err := mimeedit.SplitHeader(msg)
	if err != nil {
		return nil, fmt.Errorf("dkim: %w", err)
	}
	if !bytes.HasSuffix(header, []byte("\r\n\r\n")) && !bytes.Equal(header, []byte("\r\n")) {
		return nil, errors.New("dkim: message has no empty line after its header")
	}
	h, err := mimeedit.ParseHeader(header)
	if err != nil {
		return nil, fmt.Errorf("dkim: %w", err)
	}
	// RFC 6376 5.4: From MUST be signed; with two, receivers disagree on
	// which one the reader sees (RFC 7489 6.6.1).
	if h.Count("From") != 1 {
		return nil, ErrFrom
	}
	headerKeys := headerList(h)

	signers := make([]*dkim.Signer, 0, len(keys))
	defer func() {
		for _, ds := range signers {
			ds.Close() // after a successful Close this is a no-op
		}
	}()
	writers := make([]io.Writer, 0, len(keys))
	for _, k := range keys {
		ds, err := dkim.NewSigner(&dkim.SignOptions{
			Domain:                 k.Domain,
			Selector:               k.Selector,
			Signer:                 k.signer,
			Hash:                   crypto.SHA256,
			HeaderCanonicalization: dkim.CanonicalizationRelaxed,
			BodyCanonicalization:   dkim.CanonicalizationRelaxed,
			HeaderKeys:             headerKeys,
		})
		if err != nil {
			return nil, fmt.Errorf("dkim: %s: %w", k, err)
		}
		signers = append(signers, ds)
		writers = append(writers, ds)
	}
	if _, err := io.MultiWriter(writers...).Write(msg); err != nil {
		return nil, fmt.Errorf("dkim: %w", err)
	}
	var out bytes.Buffer
	for i, ds := range signers {
		if err := ds.Close(); err != nil {
			return nil, fmt.Errorf("dkim: %s: %w", keys[i], err)
		}
		out.WriteString(ds.Signature())
	}
	sigs := out.Bytes()
	if err := checkLines(sigs); err != nil || !bytes.HasSuffix(sigs, []byte("\r\n")) {
		return nil, fmt.Errorf("dkim: signature field not usable (%v); too many signed fields?", err)
	}
	return sigs, nil
}

// headerList returns h= for a header: see signedFields and guardedFields.
func headerList(h *mimeedit.Header) []string {
	var keys []string
	for _, name := range signedFields {
		n := h.Count(name)
		if n == 0 && !guardedFields[name] {
			continue
		}
		for range n + 1 {
			keys = append(keys, name)
		}
	}
	return keys
}

// checkLines checks that every line of b ends in CRLF, except perhaps the
// last, and has at most 998 octets (RFC 5322 2.1.1, 2.3).
func checkLines(b []byte) error {
	for len(b) > 0 {
		i := bytes.IndexAny(b, "\r\n")
		if i < 0 {
			i = len(b)
		}
		if i > 998 {
			return ErrLongLine
		}
		if i == len(b) {
			return nil
		}
		if b[i] != '\r' || i+1 == len(b) || b[i+1] != '\n' {
			return ErrNotCRLF
		}
		b = b[i+2:]
	}
	return nil
}
