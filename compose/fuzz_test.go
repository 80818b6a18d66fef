package compose

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
)

// FuzzDecode: any body is refused with a *FieldError (or ErrTooLarge), or
// decodes into a request that passes Check again unchanged, whose
// addresses each parse back to themselves, once each, and which composes
// (or is refused with a *FieldError) into mail that parses back, CRLF
// only, no line over 998 octets, with no markup from the request in its
// HTML.
func FuzzDecode(f *testing.F) {
	c := certs(f)
	f.Add([]byte(goodBody))
	f.Add([]byte(strings.Replace(goodBody, `["ana@example.com", "it@example.org"]`, `"Ana <ana@ñandú.example>; it@example.org, ana@xn--and-6ma2c.example"`, 1)))
	f.Add([]byte(strings.Replace(goodBody, `"Su certificado para el portal de facturación."`, `"<script>alert(1)</script>\n&amp;"`, 1)))
	for _, cert := range []string{`{"pem": "` + strings.ReplaceAll(c.chainPEM, "\n", `\n`) + `"}`, `{"der": "` + b64(c.leafDER) + `"}`, `{"pkcs12": "MAA="}`} {
		for _, format := range []string{"attachment", "plaintext", "downloadlink"} {
			body := strings.Replace(goodBody, `"downloadlink"`, `"`+format+`"`, 1)
			f.Add([]byte(strings.Replace(body, `"class"`, `"certificate": `+cert+`, "class"`, 1)))
		}
	}
	f.Add([]byte(`{"from":"a@b.example","emails":"x@y.example","template":"token","variables":{"token":"K7Q"}}`))
	f.Add([]byte(`{"from":"a@b.example","emails":[["x"]],"certificate_collect_format":"downloadlink"}`))
	f.Add([]byte(`{"from":"a@b.example","from":"c@d.example"}`))
	tt := testTemplates(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := Decode(bytes.NewReader(body), 1<<16)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("refused with %T %v, not a *FieldError", err, err)
			}
			if fe != nil && fe.Reason == "" {
				t.Fatalf("a refusal without a reason: %+v", fe)
			}
			return
		}
		if len(req.Emails) == 0 || len(req.Emails) > MaxAddresses {
			t.Fatalf("%d addresses", len(req.Emails))
		}
		seen := map[string]bool{}
		for _, a := range req.Emails {
			if back, err := parseAddress(a); err != nil || back != a || len(a) > maxAddressLen {
				t.Fatalf("address %q parses back as %q, %v", a, back, err)
			}
			if seen[a] {
				t.Fatalf("address %q twice", a)
			}
			seen[a] = true
		}
		before := slices.Clone(req.Emails)
		if err := req.Check(); err != nil || !slices.Equal(before, req.Emails) {
			t.Fatalf("Check again: %v, %q then %q", err, before, req.Emails)
		}
		m, err := tt.Compose(req, testOpts)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Compose failed with %T %v, not a *FieldError", err, err)
			}
			return
		}
		_, parts := parseBack(t, m.Data)
		if !slices.Equal(m.Recipients, req.Emails) {
			t.Fatalf("recipients %q, want %q", m.Recipients, req.Emails)
		}
		for _, p := range parts {
			if p.contentType == "text/html" && strings.Contains(strings.ToLower(string(p.body)), "<script") {
				t.Fatalf("markup from the request in the HTML:\n%s", p.body)
			}
		}
	})
}

// FuzzParseAddresses: a list is refused with a *FieldError on "emails", or
// gives at most MaxAddresses distinct ASCII addresses that each parse
// back to themselves.
func FuzzParseAddresses(f *testing.F) {
	for _, s := range []string{
		"ana@example.com",
		" ana@example.com , it@example.org; compras@empresa.example\n",
		"ana@ñandú.example, Juan <juan@BÜCHER.example>",
		`"Pérez, Juan" <juan@empresa.example>; Ana Gómez <ana@empresa.example>`,
		"ana@Example.COM, ana@example.com;ANA@example.com",
		"bob@, c@localhost; josé@example.com, \"x y\"@example.com, a%b@example.com, d@[192.0.2.1]",
		"ana@example.com (oficina), (comentario) it@example.org",
		"=?utf-8?q?Jos=C3=A9?= <jose@example.com>",
		"a@b.example>, <c@d.example",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseAddresses(s)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != "emails" || fe.Reason == "" {
				t.Fatalf("refused with %v, not a *FieldError on emails", err)
			}
			return
		}
		if len(got) == 0 || len(got) > MaxAddresses {
			t.Fatalf("%d addresses", len(got))
		}
		seen := map[string]bool{}
		for _, a := range got {
			back, err := parseAddress(a)
			if err != nil || back != a {
				t.Fatalf("%q parses back as %q, %v", a, back, err)
			}
			for i := 0; i < len(a); i++ {
				if a[i] <= ' ' || a[i] >= 0x7f {
					t.Fatalf("%q holds %q", a, a[i])
				}
			}
			if seen[a] {
				t.Fatalf("%q twice", a)
			}
			seen[a] = true
		}
		again, err := ParseAddresses(strings.Join(got, ", "))
		if err != nil || !slices.Equal(again, got) {
			t.Fatalf("the result read again: %q, %v; want %q", again, err, got)
		}
	})
}
