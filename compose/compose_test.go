package compose

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"html"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func baseRequest(format string, cert *Certificate) *Request {
	return &Request{
		From: "certificados@ca.example", Emails: Addresses{"ana@example.com", "it@example.org"},
		CertificateCollectFormat: format, Certificate: cert,
		Variables: map[string]string{"order": "A1-2026-00042"},
	}
}

func compose(t *testing.T, req *Request) (*Message, []part) {
	t.Helper()
	m, err := testTemplates(t).Compose(req, testOpts)
	if err != nil {
		t.Fatalf("Compose: %v", err)
	}
	_, parts := parseBack(t, m.Data)
	return m, parts
}

func wantFieldError(t *testing.T, err error, field string, reasonHas ...string) {
	t.Helper()
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("error %v (%T), want a *FieldError on %s", err, err, field)
	}
	if fe.Field != field {
		t.Errorf("field %q, want %q (%s)", fe.Field, field, fe.Reason)
	}
	for _, s := range reasonHas {
		if !strings.Contains(fe.Reason, s) {
			t.Errorf("reason %q lacks %q", fe.Reason, s)
		}
	}
}

// byType returns the parts of a media type.
func byType(parts []part, ct string) []part {
	var out []part
	for _, p := range parts {
		if p.contentType == ct {
			out = append(out, p)
		}
	}
	return out
}

func TestAttachmentKeepsTheCertificateAsGiven(t *testing.T) {
	c := certs(t)
	p7, err := buildPKCS7([]*x509.Certificate{mustParse(t, c.leafDER), mustParse(t, c.caDER)})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		cert     *Certificate
		filename string
		ctype    string
		want     []byte // nil: a PKCS#7 holding leaf and CA
	}{
		{"der", &Certificate{DER: b64(c.leafDER)}, "ana.example.com.cer", "application/pkix-cert", c.leafDER},
		{"pem", &Certificate{PEM: c.leafPEM}, "ana.example.com.crt", "application/x-pem-file", []byte(c.leafPEM)},
		{"pem chain", &Certificate{PEM: c.chainPEM}, "ana.example.com.p7b", "application/pkcs7-mime", nil},
		{"pkcs7", &Certificate{PKCS7: b64(p7)}, "ana.example.com.p7b", "application/pkcs7-mime", p7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, parts := compose(t, baseRequest(FormatAttachment, tc.cert))
			if len(parts) != 3 {
				t.Fatalf("%d parts, want text, html and the attachment", len(parts))
			}
			if !bytes.HasPrefix(m.Data, []byte("Content-Type: multipart/mixed;")) {
				t.Errorf("top level is not multipart/mixed:\n%.200s", m.Data)
			}
			att := byType(parts, tc.ctype)
			if len(att) != 1 {
				t.Fatalf("no %s part among %v", tc.ctype, parts)
			}
			a := att[0]
			if a.filename != tc.filename || a.params["name"] != tc.filename {
				t.Errorf("filename %q, name %q, want %q", a.filename, a.params["name"], tc.filename)
			}
			if tc.want != nil && !bytes.Equal(a.body, tc.want) {
				t.Errorf("attachment bytes differ from what was given")
			}
			if tc.ctype == "application/pkcs7-mime" {
				if a.params["smime-type"] != "certs-only" {
					t.Errorf("smime-type %q, want certs-only (RFC 5751 3.2.2)", a.params["smime-type"])
				}
				got, err := parsePKCS7(a.body)
				if err != nil || len(got) != 2 || !bytes.Equal(got[0].Raw, c.leafDER) || !bytes.Equal(got[1].Raw, c.caDER) {
					t.Errorf("the .p7b does not hold leaf then CA: %v", err)
				}
				opensslReadsPKCS7(t, a.body, 2)
			}
			text := string(byType(parts, "text/plain")[0].body)
			if !strings.Contains(text, tc.filename) || !strings.Contains(text, "ana.example.com") || !strings.Contains(text, "0A:1B:2C:3D:4E:5F") {
				t.Errorf("text does not name the file, the CN and the serial:\n%s", text)
			}
		})
	}
}

// opensslReadsPKCS7 has an independent reader, where installed, list the
// certificates of a .p7b.
func opensslReadsPKCS7(t *testing.T, der []byte, n int) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Log("openssl not installed: PKCS#7 checked by our reader only")
		return
	}
	cmd := exec.Command("openssl", "pkcs7", "-inform", "DER", "-print_certs", "-noout")
	cmd.Stdin = bytes.NewReader(der)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("openssl pkcs7: %v\n%s", err, out)
	}
	if got := strings.Count(string(out), "subject="); got != n {
		t.Errorf("openssl lists %d certificates, want %d:\n%s", got, n, out)
	}
}

func mustParse(t *testing.T, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestPlaintextPutsThePEMInTheText(t *testing.T) {
	c := certs(t)
	for name, cert := range map[string]*Certificate{"pem": {PEM: c.chainPEM}, "der": {DER: b64(c.leafDER)}} {
		t.Run(name, func(t *testing.T) {
			m, parts := compose(t, baseRequest(FormatPlaintext, cert))
			if len(parts) != 2 || !bytes.HasPrefix(m.Data, []byte("Content-Type: multipart/alternative;")) {
				t.Fatalf("want multipart/alternative with text and html, got %d parts", len(parts))
			}
			want := c.leafPEM
			if name == "pem" {
				want = c.chainPEM
			}
			want = strings.TrimSpace(want)
			if text := string(byType(parts, "text/plain")[0].body); !strings.Contains(text, want) {
				t.Errorf("the text part lacks the PEM:\n%s", text)
			}
			if h := html.UnescapeString(string(byType(parts, "text/html")[0].body)); !strings.Contains(h, want) {
				t.Errorf("the HTML part lacks the PEM")
			}
		})
	}
}

func TestDownloadLinkInBothParts(t *testing.T) {
	const url = "https://descargas.ca.example/certificado/descargar?pedido=88412&clave=Zk3p9QwX"
	for name, cert := range map[string]*Certificate{"with certificate": {PEM: certs(t).leafPEM}, "without": nil} {
		t.Run(name, func(t *testing.T) {
			req := baseRequest(FormatDownloadLink, cert)
			req.DownloadURL = url
			opts := testOpts
			opts.GatePrefixes = []string{"https://descargas.ca.example/certificado/"}
			m, err := testTemplates(t).Compose(req, opts)
			if err != nil {
				t.Fatal(err)
			}
			_, parts := parseBack(t, m.Data)
			if len(parts) != 2 {
				t.Fatalf("%d parts, want text and html", len(parts))
			}
			if text := string(byType(parts, "text/plain")[0].body); !strings.Contains(text, "\n"+url+"\n") {
				t.Errorf("the text part lacks the link on a line of its own:\n%s", text)
			}
			h := string(byType(parts, "text/html")[0].body)
			if !strings.Contains(h, `href="`+html.EscapeString(url)+`"`) {
				t.Errorf("the HTML part lacks the link:\n%s", h)
			}
			if (cert != nil) != strings.Contains(m.Subject, "ana.example.com") {
				t.Errorf("subject %q: the certificate's CN fills it only when there is one", m.Subject)
			}
		})
	}
}

func TestDownloadURLOutsideTheGateIsRefused(t *testing.T) {
	opts := testOpts
	opts.GatePrefixes = []string{"https://descargas.ca.example/certificado/"}
	for _, u := range []string{
		"https://evil.example/certificado/1",
		"https://descargas.ca.example/otro/1",
		"https://descargas.ca.example.evil.example/certificado/1",
	} {
		req := baseRequest(FormatDownloadLink, nil)
		req.DownloadURL = u
		_, err := testTemplates(t).Compose(req, opts)
		wantFieldError(t, err, "download_url", "prefixes")
	}
	for _, u := range []string{"https://descargas.ca.example@evil.example/certificado/1", "ftp://descargas.ca.example/x", "https://x.example/a b", "https://x.example/a."} {
		req := baseRequest(FormatDownloadLink, nil)
		req.DownloadURL = u
		wantFieldError(t, req.Check(), "download_url")
	}
	req := baseRequest(FormatDownloadLink, nil)
	req.DownloadURL = "HTTPS://Descargas.CA.example/certificado/7"
	if _, err := testTemplates(t).Compose(req, opts); err != nil {
		t.Errorf("scheme and host match without regard to case: %v", err)
	}
}

// fakePFX is a PFX's outer shape (RFC 7292 4) around an empty bag.
func fakePFX(t *testing.T) []byte {
	t.Helper()
	inner, _ := asn1.Marshal([]byte{})
	authSafe, err := marshalContentInfo(oidData, inner)
	if err != nil {
		t.Fatal(err)
	}
	b, err := asn1.Marshal(struct {
		Version  int
		AuthSafe asn1.RawValue
	}{3, asn1.RawValue{FullBytes: authSafe}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPKCS12OnlyAsDownloadLink(t *testing.T) {
	pfx := &Certificate{PKCS12: b64(fakePFX(t))}
	for _, f := range []string{FormatAttachment, FormatPlaintext} {
		wantFieldError(t, baseRequest(f, pfx).Check(), "certificate.pkcs12", "private key", "downloadlink")
	}
	req := baseRequest(FormatDownloadLink, pfx)
	req.DownloadURL = "https://descargas.ca.example/certificado/p12/7"
	_, parts := compose(t, req)
	if len(byType(parts, "application/x-pkcs12")) != 0 || len(parts) != 2 {
		t.Errorf("a PKCS#12 went into the mail")
	}
	wantFieldError(t, baseRequest(FormatDownloadLink, &Certificate{PKCS12: b64([]byte("not a pfx"))}).Check(), "certificate.pkcs12", "PKCS#12")

	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed: no real PKCS#12 to try")
	}
	dir := t.TempDir()
	c := certs(t)
	os.WriteFile(filepath.Join(dir, "key.pem"), []byte(c.leafKeyPEM), 0o600)
	os.WriteFile(filepath.Join(dir, "cert.pem"), []byte(c.leafPEM), 0o600)
	out, err := exec.Command("openssl", "pkcs12", "-export", "-inkey", filepath.Join(dir, "key.pem"), "-in", filepath.Join(dir, "cert.pem"), "-passout", "pass:secreto").Output()
	if err != nil {
		t.Fatalf("openssl pkcs12 -export: %v", err)
	}
	real := &Certificate{PKCS12: b64(out)}
	wantFieldError(t, baseRequest(FormatAttachment, real).Check(), "certificate.pkcs12", "private key")
	req = baseRequest(FormatDownloadLink, real)
	req.DownloadURL = "https://descargas.ca.example/certificado/p12/8"
	if err := req.Check(); err != nil {
		t.Errorf("a real PKCS#12 with downloadlink: %v", err)
	}
}

func TestNotACertificateIsRefused(t *testing.T) {
	c := certs(t)
	signed := signedPKCS7(t, c.leafDER)
	for _, tc := range []struct {
		cert  *Certificate
		field string
		has   string
	}{
		{&Certificate{PEM: "hello"}, "certificate.pem", "no -----BEGIN CERTIFICATE"},
		{&Certificate{PEM: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}, "certificate.pem", "not an X.509"},
		{&Certificate{PEM: c.leafPEM + "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}, "certificate.pem", "private key"},
		{&Certificate{PEM: "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}, "certificate.pem", "PUBLIC KEY"},
		{&Certificate{DER: b64([]byte("definitely not DER"))}, "certificate.der", "not an X.509"},
		{&Certificate{DER: "!!!"}, "certificate.der", "base64"},
		{&Certificate{PKCS7: b64(c.leafDER)}, "certificate.pkcs7", "PKCS#7"},
		{&Certificate{PKCS7: b64(signed)}, "certificate.pkcs7", "signed"},
		{&Certificate{}, "certificate", "one of"},
		{&Certificate{PEM: c.leafPEM, DER: b64(c.leafDER)}, "certificate", "one encoding"},
	} {
		wantFieldError(t, baseRequest(FormatAttachment, tc.cert).Check(), tc.field, tc.has)
	}
	wantFieldError(t, baseRequest(FormatAttachment, nil).Check(), "certificate", "required")
}

// signedPKCS7 is a SignedData with one (fake) signer: not certs-only.
func signedPKCS7(t *testing.T, der []byte) []byte {
	t.Helper()
	b, err := marshalSignedData(der, []byte{0x05, 0x00})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCustomMessageIsTextNeverMarkup(t *testing.T) {
	req := baseRequest(FormatDownloadLink, nil)
	req.DownloadURL = "https://descargas.ca.example/certificado/1"
	req.CustomMessage = "Hola <script>alert(1)</script> & <b>bienvenida</b>\nSegunda línea"
	_, parts := compose(t, req)
	h := string(byType(parts, "text/html")[0].body)
	if strings.Contains(h, "<script") || strings.Contains(h, "<b>bienvenida") {
		t.Errorf("markup from the request reached the HTML:\n%s", h)
	}
	if !strings.Contains(h, "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;bienvenida&lt;/b&gt;<br>Segunda línea") {
		t.Errorf("the custom message is not in the HTML, escaped, with its line break:\n%s", h)
	}
	if text := string(byType(parts, "text/plain")[0].body); !strings.Contains(text, req.CustomMessage) {
		t.Errorf("the text part does not keep the custom message as written:\n%s", text)
	}
}

func TestTemplatesInEveryLanguage(t *testing.T) {
	c := certs(t)
	subjects := map[string]map[string]string{
		"certificate": {"es": "Su certificado digital para ana.example.com", "pt-BR": "Seu certificado digital para ana.example.com", "fr": "Votre certificat pour ana.example.com", "en": "Your certificate for ana.example.com"},
		"voucher":     {"es": "Su voucher", "pt-BR": "Seu voucher", "fr": "Votre bon", "en": "Your certificate voucher"},
		"token":       {"es": "Su token de acceso", "pt-BR": "Seu token de acesso", "fr": "Votre code d'accès", "en": "Your access token"},
	}
	for name, byLang := range subjects {
		for _, l := range Languages {
			req := baseRequest(FormatPlaintext, &Certificate{PEM: c.leafPEM})
			req.Template, req.Language = name, l
			req.Variables["voucher"] = "AC1-77F2-K9"
			req.Variables["token"] = "K7Q-4XW-92P"
			req.CustomMessage = "<i>hi</i>"
			m, parts := compose(t, req)
			if !strings.HasPrefix(m.Subject, byLang[l]) || m.Language != l {
				t.Errorf("%s.%s: subject %q (language %s), want it to start %q", name, l, m.Subject, m.Language, byLang[l])
			}
			h := string(byType(parts, "text/html")[0].body)
			if !strings.Contains(h, `<html lang="`+l+`">`) || !strings.Contains(h, "Certificados Digitales") {
				t.Errorf("%s.%s: HTML without its language or the issuer's name", name, l)
			}
			text := string(byType(parts, "text/plain")[0].body)
			for _, v := range []string{"A1-2026-00042", "mesadeayuda@ca.example", "<i>hi</i>"} {
				if !strings.Contains(text, v) {
					t.Errorf("%s.%s: text lacks %q:\n%s", name, l, v, text)
				}
			}
			if name != "certificate" && !strings.Contains(text, req.Variables[name]) {
				t.Errorf("%s.%s: text lacks the %s", name, l, name)
			}
			if strings.Contains(text, "<no value>") || strings.Contains(h, "<no value>") {
				t.Errorf("%s.%s: a missing value shows", name, l)
			}
		}
	}
}

func TestLanguageAndTemplateChoice(t *testing.T) {
	tt := testTemplates(t)
	req := func(template, language string) *Request {
		r := baseRequest(FormatDownloadLink, nil)
		r.DownloadURL = "https://descargas.ca.example/certificado/1"
		r.Template, r.Language = template, language
		return r
	}
	for asked, want := range map[string]string{"": "es", "pt": "pt-BR", "PT-br": "pt-BR", "es-AR": "es", "fr-CA": "fr", "en": "en"} {
		m, err := tt.Compose(req("", asked), testOpts)
		if err != nil || m.Language != want {
			t.Errorf("language %q: got %v %v, want %s", asked, m, err, want)
		}
	}
	opts := testOpts
	opts.Language = "fr"
	if m, err := tt.Compose(req("", ""), opts); err != nil || m.Language != "fr" {
		t.Errorf("the tenant's default language is not used: %v", err)
	}
	_, err := tt.Compose(req("", "de"), testOpts)
	wantFieldError(t, err, "language", "de", "es, pt-BR, fr, en")
	_, err = tt.Compose(req("renewal", ""), testOpts)
	wantFieldError(t, err, "template", "renewal", "certificate, token, voucher")
	_, err = tt.Compose(req("token", ""), testOpts)
	wantFieldError(t, err, "variables.token", "required")
}

func TestVariablesAgreeWithTheCertificate(t *testing.T) {
	req := baseRequest(FormatAttachment, &Certificate{PEM: certs(t).leafPEM})
	req.Variables["common_name"] = "ANA.example.com"
	if _, err := testTemplates(t).Compose(req, testOpts); err != nil {
		t.Errorf("the same CN in another case is refused: %v", err)
	}
	req.Variables["common_name"] = "bob.example.com"
	_, err := testTemplates(t).Compose(req, testOpts)
	wantFieldError(t, err, "variables.common_name", "bob.example.com", "ana.example.com")
}

func TestHeaders(t *testing.T) {
	req := baseRequest(FormatAttachment, &Certificate{DER: b64(certs(t).leafDER)})
	req.Class = "Transactional"
	opts := testOpts
	opts.DisplayName = "Emissão de Certificados"
	m, _ := compose(t, req)
	m2, err := testTemplates(t).Compose(req, opts)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := parseBack(t, m2.Data)
	if got := h.Get("X-Certgate-Class"); got != "transactional" || m.Class != "transactional" {
		t.Errorf("X-Certgate-Class %q, Class %q", got, m.Class)
	}
	from, err := h.AddressList("From")
	if err != nil || len(from) != 1 || from[0].Name != "Emissão de Certificados" || from[0].Address != "certificados@ca.example" {
		t.Errorf("From %v %v", from, err)
	}
	if !bytes.Contains(m2.Data, []byte("From: =?utf-8?q?Emiss=C3=A3o_de_Certificados?= <certificados@ca.example>\r\n")) {
		t.Errorf("display name not Q-encoded (RFC 2047):\n%.600s", m2.Data)
	}
	if id, _ := h.MessageID(); id != testOpts.MessageID {
		t.Errorf("Message-ID %q", id)
	}
	if d, _ := h.Date(); !d.Equal(testOpts.Now) {
		t.Errorf("Date %v", d)
	}
	if h.Get("Mime-Version") != "1.0" {
		t.Errorf("no MIME-Version")
	}
	if to := h.Get("To"); to != "ana@example.com, it@example.org" {
		t.Errorf("To %q", to)
	}
	if strings.Join(m.Recipients, " ") != "ana@example.com it@example.org" {
		t.Errorf("Recipients %v", m.Recipients)
	}

	req.Class = ""
	req.CustomMessage = ""
	req.Variables = map[string]string{"order": "Pedido nº 42 – urgente"}
	var many []string
	for i := 0; i < maxVisibleRecipients+1; i++ {
		many = append(many, "cliente"+string(rune('a'+i))+"@example.com")
	}
	req.Emails = many
	m, _ = compose(t, req)
	h, _ = parseBack(t, m.Data)
	if h.Get("To") != "undisclosed-recipients:;" || len(m.Recipients) != len(many) {
		t.Errorf("a wave names everyone: To %q", h.Get("To"))
	}
	if h.Has("X-Certgate-Class") || m.Class != "" {
		t.Errorf("X-Certgate-Class without a class")
	}
	if s, _ := h.Subject(); s != m.Subject || !strings.Contains(s, "Pedido nº 42 – urgente") || !bytes.Contains(m.Data, []byte("Subject: =?utf-8?q?")) {
		t.Errorf("subject %q not Q-encoded or not read back", s)
	}
}

func TestTenantTemplates(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("certificate.es.txt", "{{define \"subject\"}}Certificado {{.V.order}}{{end}}Propio: {{.URL}}\r\n{{template \"footer\" .}}")
	write("certificate.es.html", "{{template \"layout\" .}}{{define \"content\"}}<p>Propio {{.Message}}</p>{{end}}")
	write("renewal.en.txt", "{{define \"subject\"}}Time to renew {{.V.common_name}}{{end}}Renew by {{.V.not_after}}.")
	write("renewal.en.html", "<p>Renew {{.V.common_name}} by {{.V.not_after}}.</p>")
	tt, err := NewTemplates(map[string]string{"ca": dir})
	if err != nil {
		t.Fatal(err)
	}
	req := baseRequest(FormatDownloadLink, nil)
	req.DownloadURL = "https://descargas.ca.example/certificado/1"
	req.CustomMessage = "<b>x</b>"
	m, err := tt.Compose(req, testOpts)
	if err != nil {
		t.Fatal(err)
	}
	_, parts := parseBack(t, m.Data)
	if m.Subject != "Certificado A1-2026-00042" || !strings.Contains(string(parts[0].body), "Propio: https://") ||
		!strings.Contains(string(parts[1].body), "<p>Propio &lt;b&gt;x&lt;/b&gt;</p>") || !strings.Contains(string(parts[0].body), "Atentamente") {
		t.Errorf("the tenant's override is not used: %q\n%s\n%s", m.Subject, parts[0].body, parts[1].body)
	}
	other := testOpts
	other.Tenant = "other"
	if m, _ := tt.Compose(req, other); m == nil || !strings.HasPrefix(m.Subject, "Su certificado digital") {
		t.Errorf("another tenant does not get the defaults")
	}
	req.Template, req.Certificate = "renewal", &Certificate{PEM: certs(t).leafPEM}
	if m, err := tt.Compose(req, testOpts); err != nil || m.Subject != "Time to renew ana.example.com" || m.Language != "en" {
		t.Errorf("the tenant's own template: %v %v", m, err)
	}
	if _, err := tt.Compose(req, other); err == nil {
		t.Errorf("another tenant may use this tenant's template")
	}

	for name, files := range map[string]map[string]string{
		"no html":    {"x.es.txt": `{{define "subject"}}s{{end}}b`},
		"no subject": {"x.es.txt": "b", "x.es.html": "b"},
		"bad name":   {"certificate.es.htm": "b"},
		"bad syntax": {"x.es.txt": `{{define "subject"}}s{{end}}{{.V.`, "x.es.html": "b"},
	} {
		d := t.TempDir()
		for f, s := range files {
			os.WriteFile(filepath.Join(d, f), []byte(s), 0o644)
		}
		if _, err := NewTemplates(map[string]string{"ca": d}); err == nil {
			t.Errorf("%s: loaded", name)
		}
	}
}

func TestComposeRefusesABadMessageID(t *testing.T) {
	opts := testOpts
	for _, id := range []string{"", "<a@b.example>", "a b@c.example", "abc"} {
		opts.MessageID = id
		if _, err := testTemplates(t).Compose(baseRequest(FormatAttachment, &Certificate{PEM: certs(t).leafPEM}), opts); err == nil {
			t.Errorf("message ID %q accepted", id)
		}
	}
}
