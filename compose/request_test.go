package compose

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestParseAddresses(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"ana@example.com", []string{"ana@example.com"}},
		{" ana@example.com , it@example.org; compras@empresa.example\n", []string{"ana@example.com", "it@example.org", "compras@empresa.example"}},
		{"ana@ñandú.example", []string{"ana@xn--and-6ma2c.example"}},
		{"Juan <juan@BÜCHER.example>", []string{"juan@xn--bcher-kva.example"}},
		{`"Pérez, Juan" <juan@empresa.example>; Ana Gómez <ana@empresa.example>`, []string{"juan@empresa.example", "ana@empresa.example"}},
		{"ana@Example.COM, ana@example.com;ANA@example.com, ana@xn--and-6ma2c.example, ana@ñandú.example", []string{"ana@example.com", "ANA@example.com", "ana@xn--and-6ma2c.example"}},
		{"a@example.com,,;", []string{"a@example.com"}},
		{"ana@example.com (oficina)", []string{"ana@example.com"}},
	} {
		got, err := ParseAddresses(tc.in)
		if err != nil || strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Errorf("%q: got %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestParseAddressesNamesEveryBadOne(t *testing.T) {
	_, err := ParseAddresses("ana@example.com, bob@, c@localhost; josé@example.com, \"x y\"@example.com, a%b@example.com, d@[192.0.2.1], e@-bad.example")
	wantFieldError(t, err, "emails", `"bob@" (address 2)`, `"c@localhost" (address 3)`, `"josé@example.com" (address 4)`, `"\"x y\"@example.com" (address 5)`, "address 6", "address 7", "address 8")
	if strings.Contains(err.Error(), "address 1)") {
		t.Errorf("a good address is named: %v", err)
	}
	for _, in := range []string{"", " , ;", strings.Repeat("a", 65) + "@example.com", "a@" + strings.Repeat("b", 250) + ".example"} {
		_, err := ParseAddresses(in)
		wantFieldError(t, err, "emails")
	}
	var many []string
	for i := 0; i <= MaxAddresses; i++ {
		many = append(many, fmt.Sprintf("u%d@example.com", i))
	}
	_, err = ParseAddresses(strings.Join(many, ","))
	wantFieldError(t, err, "emails", "more than 1000")
	_, err = ParseAddresses(strings.Repeat("x", maxListLen+1))
	wantFieldError(t, err, "emails", "longer")

	var bad []string
	for i := 0; i < 15; i++ {
		bad = append(bad, fmt.Sprintf("bad%d@", i))
	}
	_, err = ParseAddresses(strings.Join(bad, ","))
	wantFieldError(t, err, "emails", "and 5 more")
}

const goodBody = `{
  "from": "certificados@ca.example",
  "emails": ["ana@example.com", "it@example.org"],
  "certificate_collect_format": "downloadlink",
  "download_url": "https://descargas.ca.example/certificado/7f3c9a2b",
  "custom_message": "Su certificado para el portal de facturación.",
  "template": "certificate",
  "language": "es",
  "variables": {"order": "A1-2026-00042"},
  "class": "transactional",
  "hold": false
}`

func TestDecode(t *testing.T) {
	req, err := Decode(strings.NewReader(goodBody), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(req.Emails, " ") != "ana@example.com it@example.org" || req.Class != "transactional" || req.Variables["order"] != "A1-2026-00042" {
		t.Errorf("decoded %+v", req)
	}
	body := strings.Replace(goodBody, `["ana@example.com", "it@example.org"]`, `"ana@example.com; it@example.org, Ana@EXAMPLE.com"`, 1)
	req, err = Decode(strings.NewReader(body), 1<<20)
	if err != nil || strings.Join(req.Emails, " ") != "ana@example.com it@example.org Ana@example.com" {
		t.Errorf("emails as one string: %v %v", req, err)
	}
	body = strings.Replace(goodBody, `"downloadlink"`, `"attachment"`, 1)
	body = strings.Replace(body, `"class"`, `"certificate": {"der": "`+b64(certs(t).leafDER)+`"}, "class"`, 1)
	if _, err = Decode(strings.NewReader(body), 1<<20); err != nil {
		t.Errorf("with a DER certificate: %v", err)
	}
}

func TestDecodeRefusals(t *testing.T) {
	for _, tc := range []struct {
		name, old, new, field, has string
	}{
		{"unknown field", `"hold": false`, `"hold": false, "colour": "red"`, "colour", "not a field"},
		{"field in another case", `"from"`, `"From"`, "From", "not a field"},
		{"unknown certificate field", `"hold": false`, `"hold": false, "certificate": {"crt": "x"}`, "certificate.crt", "not a field"},
		{"twice", `"hold": false`, `"hold": false, "from": "x@ca.example"`, "from", "twice"},
		{"wrong type", `"hold": false`, `"hold": "yes"`, "hold", "boolean"},
		{"emails not strings", `["ana@example.com", "it@example.org"]`, `[1, 2]`, "emails", "array"},
		{"a bad address", `["ana@example.com", "it@example.org"]`, `["ana@example.com", "it@example.org", "nadie@"]`, "emails[2]", `"nadie@"`},
		{"no address", `["ana@example.com", "it@example.org"]`, `[]`, "emails", "required"},
		{"bad from", `"certificados@ca.example"`, `"certificados"`, "from", ""},
		{"bad format", `"downloadlink"`, `"fax"`, "certificate_collect_format", "fax"},
		{"link without URL", `"download_url": "https://descargas.ca.example/certificado/7f3c9a2b",`, ``, "download_url", "required"},
		{"bad class", `"transactional"`, `"urgent"`, "class", "urgent"},
		{"bad variable name", `{"order"`, `{"Order Nº"`, "variables", "variable name"},
		{"variable with a line break", `"A1-2026-00042"`, `"A1\r\nBcc: x@evil.example"`, "variables.order", "control"},
		{"bad template name", `"certificate",`, `"../etc/passwd",`, "template", ""},
		{"nested too deep", `{"order": "A1-2026-00042"}`, `{"order": {"a": {"b": 1}}}`, "variables.order.a", "nested"},
		{"custom message too long", `"Su certificado para el portal de facturación."`, `"` + strings.Repeat("a", maxCustomMessage+1) + `"`, "custom_message", "more than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(goodBody, tc.old) {
				t.Fatalf("test: %q not in the body", tc.old)
			}
			_, err := Decode(strings.NewReader(strings.Replace(goodBody, tc.old, tc.new, 1)), 1<<20)
			wantFieldError(t, err, tc.field, tc.has)
		})
	}
	for name, body := range map[string]string{
		"not JSON":      "hola",
		"array":         "[]",
		"two objects":   goodBody + "{}",
		"invalid UTF-8": strings.Replace(goodBody, "facturación", "facturaci\xf3n", 1),
		"truncated":     goodBody[:40],
	} {
		_, err := Decode(strings.NewReader(body), 1<<20)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != "" {
			t.Errorf("%s: %v, want a *FieldError on the whole body", name, err)
		}
	}
	_, err := Decode(strings.NewReader(goodBody), int64(len(goodBody)-1))
	if !errors.Is(err, ErrTooLarge) {
		t.Errorf("over the cap: %v, want ErrTooLarge", err)
	}
	if _, err := Decode(strings.NewReader(goodBody), int64(len(goodBody))); err != nil {
		t.Errorf("at the cap: %v", err)
	}
}

func TestMailWithoutACertificate(t *testing.T) {
	body := strings.Replace(goodBody, `"certificate_collect_format": "downloadlink",`, "", 1)
	_, err := Decode(strings.NewReader(body), 1<<20)
	wantFieldError(t, err, "certificate_collect_format", "required")
	body = strings.Replace(body, `"certificate",`, `"token",`, 1)
	body = strings.Replace(body, `{"order": "A1-2026-00042"}`, `{"token": "K7Q-4XW-92P"}`, 1)
	req, err := Decode(strings.NewReader(body), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	m, parts := compose(t, req)
	if m.Format != "" || !strings.Contains(string(parts[0].body), "K7Q-4XW-92P") {
		t.Errorf("token mail: format %q\n%s", m.Format, parts[0].body)
	}
}
