package dnscheck

import (
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// tag is one tag=value of a tag list.
type tag struct{ name, value string }

// parseTags reads a tag list (RFC 6376 3.2, which DMARC reuses in RFC 7489
// 6.4): tag=value pairs separated by ";", white space around names and
// values ignored, a trailing ";" allowed. A tag named twice makes the whole
// list invalid. fold lower-cases names, for DMARC, whose ABNF literals are
// case-insensitive; DKIM tag names are case-sensitive.
func parseTags(s string, fold bool) ([]tag, error) {
	if len(s) > MaxTXTBytes {
		return nil, fmt.Errorf("record longer than %d bytes", MaxTXTBytes)
	}
	var out []tag
	for _, spec := range strings.Split(s, ";") {
		if spec = strings.Trim(spec, " \t\r\n"); spec == "" {
			continue
		}
		name, value, ok := strings.Cut(spec, "=")
		if !ok {
			return nil, fmt.Errorf("%q is not tag=value", clip(spec))
		}
		name, value = strings.Trim(name, " \t\r\n"), strings.Trim(value, " \t\r\n")
		if fold {
			name = strings.ToLower(name)
		}
		if !validTagName(name) {
			return nil, fmt.Errorf("%q is not a tag name", clip(name))
		}
		for j := 0; j < len(value); j++ {
			if c := value[j]; c < 0x20 && c != '\t' && c != '\r' && c != '\n' || c > 0x7e {
				return nil, fmt.Errorf("tag %s has a control or non-ASCII character", name)
			}
		}
		if slices.ContainsFunc(out, func(t tag) bool { return t.name == name }) {
			return nil, fmt.Errorf("tag %s appears twice (RFC 6376 3.2)", name)
		}
		out = append(out, tag{name, value})
	}
	return out, nil
}

// validTagName: ALPHA *ALNUMPUNC (RFC 6376 3.2).
func validTagName(s string) bool {
	if s == "" || !isAlpha(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isAlpha(c) && !('0' <= c && c <= '9') && c != '_' {
			return false
		}
	}
	return true
}

func isAlpha(c byte) bool { return 'a' <= c|0x20 && c|0x20 <= 'z' }

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

func tagValue(ts []tag, name string) (string, bool) {
	for _, t := range ts {
		if t.name == name {
			return t.value, true
		}
	}
	return "", false
}

// DKIMRecord is a DKIM key record (RFC 6376 3.6.1; k=ed25519 from RFC
// 8463).
type DKIMRecord struct {
	KeyType   string   // k=, "rsa" when absent
	Hashes    []string // h=, nil when absent (any)
	Services  []string // s=, ["*"] when absent
	Flags     []string // t=: "y" testing, "s" no subdomains in i=
	PublicKey []byte   // p=, decoded; empty: the key is revoked
}

// Testing reports t=y: receivers may treat signed mail as unsigned.
func (r *DKIMRecord) Testing() bool { return slices.Contains(r.Flags, "y") }

// ParseDKIMRecord reads the value of a TXT record at
// <selector>._domainkey.<domain>.
func ParseDKIMRecord(s string) (*DKIMRecord, error) {
	ts, err := parseTags(s, false)
	if err != nil {
		return nil, err
	}
	r := &DKIMRecord{KeyType: "rsa", Services: []string{"*"}}
	for i, t := range ts {
		switch t.name {
		case "v":
			// RFC 6376 3.6.1: if present, first, and exactly DKIM1.
			if i != 0 || t.value != "DKIM1" {
				return nil, errors.New("v= must come first and be DKIM1")
			}
		case "k":
			r.KeyType = strings.ToLower(t.value)
		case "h":
			r.Hashes = colonList(t.value)
		case "s":
			r.Services = colonList(t.value)
		case "t":
			r.Flags = colonList(t.value)
		case "p":
			b64 := strings.Map(func(c rune) rune {
				if c == ' ' || c == '\t' || c == '\r' || c == '\n' {
					return -1
				}
				return c
			}, t.value)
			if r.PublicKey, err = base64.StdEncoding.DecodeString(b64); err != nil {
				return nil, fmt.Errorf("p= is not base64: %v", err)
			}
		}
	}
	if _, ok := tagValue(ts, "p"); !ok {
		return nil, errors.New("no p= tag (RFC 6376 3.6.1 requires it)")
	}
	if r.KeyType == "" {
		return nil, errors.New("k= is empty")
	}
	if r.Hashes != nil && !slices.Contains(r.Hashes, "sha256") {
		return nil, fmt.Errorf("h=%s excludes sha256, which certgate signs with", strings.Join(r.Hashes, ":"))
	}
	if !slices.Contains(r.Services, "*") && !slices.Contains(r.Services, "email") {
		return nil, fmt.Errorf("s=%s excludes email", strings.Join(r.Services, ":"))
	}
	return r, nil
}

func colonList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ":") {
		if p = strings.ToLower(strings.TrimSpace(p)); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// DMARCRecord is a DMARC policy record (RFC 7489 6.3).
type DMARCRecord struct {
	Policy          string   // p=: none, quarantine or reject
	SubdomainPolicy string   // sp=; Policy when absent
	ADKIM, ASPF     string   // "r" (relaxed, the default) or "s" (strict)
	Percent         int      // pct=, 100 when absent
	RUA, RUF        []string // report URIs
}

// ParseDMARCRecord reads the value of a TXT record at _dmarc.<domain>.
// Unknown tags are ignored (RFC 7489 6.3); a bad value of a known one
// makes the record invalid.
func ParseDMARCRecord(s string) (*DMARCRecord, error) {
	ts, err := parseTags(s, true)
	if err != nil {
		return nil, err
	}
	if len(ts) == 0 || ts[0].name != "v" || ts[0].value != "DMARC1" {
		return nil, errors.New("a DMARC record starts with v=DMARC1 (RFC 7489 6.4)")
	}
	r := &DMARCRecord{ADKIM: "r", ASPF: "r", Percent: 100}
	policies := []string{"none", "quarantine", "reject"}
	for _, t := range ts[1:] {
		v := strings.ToLower(t.value)
		bad := false
		switch t.name {
		case "p":
			r.Policy, bad = v, !slices.Contains(policies, v)
		case "sp":
			r.SubdomainPolicy, bad = v, !slices.Contains(policies, v)
		case "adkim":
			r.ADKIM, bad = v, v != "r" && v != "s"
		case "aspf":
			r.ASPF, bad = v, v != "r" && v != "s"
		case "pct":
			n, err := strconv.Atoi(v)
			r.Percent, bad = n, err != nil || n < 0 || n > 100
		case "rua", "ruf":
			var uris []string
			for _, u := range strings.Split(t.value, ",") {
				u = strings.TrimSpace(u)
				// RFC 7489 6.4: a URI with an optional "!" size limit.
				if base, _, _ := strings.Cut(u, "!"); !strings.Contains(base, ":") {
					bad = true
				}
				uris = append(uris, u)
			}
			if t.name == "rua" {
				r.RUA = uris
			} else {
				r.RUF = uris
			}
		}
		if bad {
			return nil, fmt.Errorf("%s=%s is not a valid value (RFC 7489 6.3)", t.name, clip(t.value))
		}
	}
	if r.Policy == "" {
		return nil, errors.New("no p= tag (RFC 7489 6.3 requires it)")
	}
	if r.SubdomainPolicy == "" {
		r.SubdomainPolicy = r.Policy
	}
	return r, nil
}
