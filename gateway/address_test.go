package gateway

import (
	"strings"
	"testing"
)

func TestParseAddress(t *testing.T) {
	good := map[string]string{
		"juan.perez@empresa.example": "juan.perez@empresa.example",
		"Juan.Perez@EMPRESA.Example": "Juan.Perez@empresa.example",
		"a+tag@sub.domain.example":   "a+tag@sub.domain.example",
		"o'brien@x.example":          "o'brien@x.example",
	}
	for in, want := range good {
		got, _, _, err := parseAddress(in)
		if err != nil || got != want {
			t.Errorf("parseAddress(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	bad := []string{
		"", "@x.example", "user@", "user", "user@localhost",
		"user%victim.example@relay.example", // % hack
		"victim.example!user@relay.example", // bang path
		"user@[192.0.2.1]",                  // IP literal
		"a@b@c.example",                     // unquoted "a@b"@c.example
		"john doe@x.example",                // unquoted "john doe"@x.example
		".user@x.example", "user.@x.example", "us..er@x.example",
		"user@-x.example", "user@x..example", "user@x_y.example",
		strings.Repeat("a", 65) + "@x.example",
		"us\x00er@x.example", "usér@x.example",
	}
	for _, in := range bad {
		if _, _, _, err := parseAddress(in); err == nil {
			t.Errorf("parseAddress(%q) accepted a bad address", in)
		}
	}
}

// A tenant alone owns its domains and their subdomains, nothing else.
func TestTenantOwnsItsDomains(t *testing.T) {
	tenant := &Tenant{Name: "ca", FromDomains: []string{"ca.example"}}
	for d, want := range map[string]bool{"ca.example": true, "mail.ca.example": true, "evilca.example": false, "example": false} {
		if tenant.Owns(d) != want {
			t.Errorf("Owns(%q) = %v", d, !want)
		}
	}
}

func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{"a@b.example", "a%b@c.example", "x@[1.2.3.4]", "\"q\"@x.example"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		addr, local, domain, err := parseAddress(s)
		if err != nil {
			return
		}
		// Whatever is accepted must re-parse to itself and carry no routing.
		again, _, _, err := parseAddress(addr)
		if err != nil || again != addr {
			t.Fatalf("accepted %q as %q, which re-parses to %q, %v", s, addr, again, err)
		}
		if strings.ContainsAny(local, "%!@\" \r\n") || strings.ContainsAny(domain, "[]:@ ") {
			t.Fatalf("accepted routing characters in %q", addr)
		}
	})
}
