package kit

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/certgate/certgate/config"
)

// testConfig has two tenants, so the kit must pick one tenant's domains
// and keys and never the other's.
func testConfig() *config.Config {
	return &config.Config{
		Hostname: "relay.ca.example",
		HTTP:     config.HTTP{PublicURL: "https://gate.ca.example"},
		Tenants: []config.Tenant{
			{Name: "ca", DisplayName: "Autoridad Certificante O'Example", FromDomains: []string{"ca.example", "certs.example"},
				Links:   config.Links{Gate: []string{"https://descargas.ca.example/certificado/"}},
				Support: config.Support{Email: "mesa@ca.example"}},
			{Name: "portal", FromDomains: []string{"portal.example", "sub.ca.example"}},
		},
		DKIM: []config.DKIMKey{
			{Domain: "ca.example", Selector: "s2026", KeyFile: "/etc/certgate/dkim/s2026.pem"},
			{Domain: "certs.example", Selector: "ed2026"},
			{Domain: "sub.ca.example", Selector: "portal1"},
			{Domain: "portal.example", Selector: "portal2"},
		},
		Delivery: config.Delivery{SourceAddresses: []string{"203.0.113.25", "2001:db8::25"}},
	}
}

func TestIdentityFromConfig(t *testing.T) {
	id, err := IdentityOf(testConfig(), "ca")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(id.FromDomains, []string{"ca.example", "certs.example"}) || !slices.Equal(id.EnvelopeDomains, id.FromDomains) {
		t.Errorf("domains %q, envelope %q", id.FromDomains, id.EnvelopeDomains)
	}
	// sub.ca.example belongs to the portal tenant (the most specific
	// claim), so its key is not the CA's.
	want := []Signature{{"ca.example", "s2026"}, {"certs.example", "ed2026"}}
	if !slices.Equal(id.DKIM, want) {
		t.Errorf("DKIM %v, want %v", id.DKIM, want)
	}
	if id.GateHost != "gate.ca.example" || id.HELO != "relay.ca.example" || id.Issuer != "Autoridad Certificante O'Example" {
		t.Errorf("gate %q, HELO %q, issuer %q", id.GateHost, id.HELO, id.Issuer)
	}
	if !slices.Equal(id.SourceAddresses, []string{"203.0.113.25", "2001:db8::25"}) {
		t.Errorf("addresses %q", id.SourceAddresses)
	}
	for _, ext := range []string{".pdf", ".p12", ".pfx", ".cer", ".crt", ".pem", ".p7b", ".zip"} {
		if !slices.Contains(id.AttachmentTypes, ext) {
			t.Errorf("attachment types %q lack %s", id.AttachmentTypes, ext)
		}
	}
	portal, err := IdentityOf(testConfig(), "portal")
	if err != nil {
		t.Fatal(err)
	}
	if portal.GateHost != "" || !slices.Equal(portal.DKIM, []Signature{{"sub.ca.example", "portal1"}, {"portal.example", "portal2"}}) {
		t.Errorf("portal: gate %q (its links are not gated), DKIM %v", portal.GateHost, portal.DKIM)
	}
	if _, err := IdentityOf(testConfig(), "nobody"); err != ErrUnknownTenant {
		t.Errorf("unknown tenant: %v", err)
	}
}

func section(t *testing.T, k *Kit, id string) Section {
	t.Helper()
	i := slices.IndexFunc(k.Sections, func(s Section) bool { return s.ID == id })
	if i < 0 {
		t.Fatalf("no section %s", id)
	}
	return k.Sections[i]
}

func TestKitContent(t *testing.T) {
	k, err := NewDirectory(testConfig()).Kit("ca", "en")
	if err != nil {
		t.Fatal(err)
	}
	m365 := section(t, k, "m365")
	rule := m365.Code[0].Text
	for _, want := range []string{
		"New-TransportRule -Name 'Allow DMARC-pass mail from Autoridad Certificante O''Example'",
		"-SenderDomainIs 'ca.example','certs.example'",
		"-HeaderContainsMessageHeader 'Authentication-Results' -HeaderContainsWords 'dmarc=pass'",
		"-SetSCL -1", "-FromScope NotInOrganization",
	} {
		if !strings.Contains(rule, want) {
			t.Errorf("transport rule lacks %q:\n%s", want, rule)
		}
	}
	long := mustIdentity(t)
	long.Issuer = strings.Repeat("é", 80)
	if name := strings.SplitN(transportRule(long), "'", 3)[1]; len([]rune(name)) != 64 {
		t.Errorf("rule name of %d characters, Exchange takes 64", len([]rune(name)))
	}
	if len(m365.Code) != 2 || !strings.Contains(m365.Code[1].Text, "@{Add='gate.ca.example/*'}") {
		t.Errorf("Safe Links command: %+v", m365.Code)
	}
	sa := section(t, k, "spamassassin")
	if sa.Code[0].Text != "welcomelist_auth *@ca.example\nwelcomelist_auth *@certs.example\n" ||
		sa.Code[1].Text != "whitelist_auth *@ca.example\nwhitelist_auth *@certs.example\n" {
		t.Errorf("SpamAssassin lines: %+v", sa.Code)
	}
	if got := section(t, k, "users").Code[0].Text; got != "@ca.example OR @certs.example" {
		t.Errorf("Gmail filter %q", got)
	}
	if c := section(t, k, "cisco").Code[0].Text; !strings.Contains(c, `@(ca\\.example|certs\\.example)>?$`) || !strings.Contains(c, "skip-spamcheck();") {
		t.Errorf("Cisco filter:\n%s", c)
	}
	if mc := section(t, k, "mimecast"); !strings.Contains(strings.Join(mc.Steps, "\n"), "203.0.113.25, 2001:db8::25") {
		t.Errorf("Mimecast steps do not narrow to the sending addresses: %q", mc.Steps)
	}
	for _, s := range k.Sections {
		if len(s.Sources) == 0 || len(s.Steps) == 0 || s.Why == "" {
			t.Errorf("section %s lacks sources, steps or why", s.ID)
		}
		for _, text := range append(append([]string{s.Why}, s.Steps...), s.Limits...) {
			if strings.ContainsAny(text, "{}") {
				t.Errorf("section %s has an unfilled placeholder: %q", s.ID, text)
			}
		}
	}

	// Without gated links the kit says nothing of a gate host.
	p, _ := NewDirectory(testConfig()).Kit("portal", "en")
	var md bytes.Buffer
	if err := p.Write(&md, "md"); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(md.String(), "Safe Links (") || strings.Contains(md.String(), "gate.ca.example") {
		t.Errorf("the portal's kit mentions a gate:\n%s", md.String())
	}
}

// TestLanguages checks that every language has every text, and that the
// texts are really translated (not English left in place).
func TestLanguages(t *testing.T) {
	en := Build(mustIdentity(t), "en")
	for _, l := range Languages {
		k := Build(mustIdentity(t), l)
		if k.Lang != l {
			t.Errorf("Build(%s) is in %s", l, k.Lang)
		}
		if len(k.Sections) != len(sectionOrder) {
			t.Fatalf("%s: %d sections", l, len(k.Sections))
		}
		for i, s := range k.Sections {
			e := en.Sections[i]
			if s.Title == "" || s.Why == "" || len(s.Steps) != len(e.Steps) || len(s.Limits) != len(e.Limits) {
				t.Errorf("%s/%s: %d steps and %d limits, English has %d and %d", l, s.ID, len(s.Steps), len(s.Limits), len(e.Steps), len(e.Limits))
			}
			if l != "en" && s.Why == e.Why {
				t.Errorf("%s/%s: the why is the English one", l, s.ID)
			}
		}
		if l != "en" && (k.Intro == en.Intro || k.Labels == en.Labels) {
			t.Errorf("%s: intro or labels untranslated", l)
		}
	}
	if Build(mustIdentity(t), "de").Lang != "en" {
		t.Error("an unsupported language is not English")
	}
}

func mustIdentity(t *testing.T) Identity {
	t.Helper()
	id, err := IdentityOf(testConfig(), "ca")
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestNegotiate(t *testing.T) {
	for _, c := range []struct{ query, accept, want string }{
		{"", "es-AR,es;q=0.9", "es"},
		{"fr", "es-AR,es;q=0.9", "fr"},
		{"pt", "", "pt-BR"},
		{"PT-br", "", "pt-BR"},
		{"xx", "pt-PT,pt;q=0.8", "pt-BR"},
		{strings.Repeat("e", 5000), "", "en"},
		{"", "de-DE", "en"},
	} {
		if got := Negotiate(c.query, c.accept); got != c.want {
			t.Errorf("Negotiate(%.20q, %q) = %q, want %q", c.query, c.accept, got, c.want)
		}
	}
}

func TestFormats(t *testing.T) {
	k, _ := NewDirectory(testConfig()).Kit("ca", "es")
	var js bytes.Buffer
	if err := k.Write(&js, "json"); err != nil {
		t.Fatal(err)
	}
	var back struct {
		Lang     string
		Identity Identity
		Sections []Section
	}
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if back.Lang != "es" || back.Identity.GateHost != "gate.ca.example" || len(back.Sections) != len(sectionOrder) || back.Identity.DKIM[0].Selector != "s2026" {
		t.Errorf("JSON round trip: %+v", back)
	}
	var md bytes.Buffer
	if err := k.Write(&md, "md"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"# Kit de lista de permitidos: Autoridad Certificante O'Example", "`s2026._domainkey.ca.example`", "1. Centro de administración de Exchange", "```\nNew-TransportRule"} {
		if !strings.Contains(md.String(), want) && !strings.Contains(md.String(), strings.ReplaceAll(want, "`s2026._domainkey.ca.example`", "s2026._domainkey.ca.example")) {
			t.Errorf("Markdown lacks %q", want)
		}
	}
	var page bytes.Buffer
	if err := k.Write(&page, "html"); err != nil {
		t.Fatal(err)
	}
	// html/template escapes the issuer's quote; the command keeps its
	// doubled quote.
	for _, want := range []string{`<html lang="es">`, "O&#39;Example", "Certificante O&#39;&#39;Example&#39;"} {
		if !strings.Contains(page.String(), want) {
			t.Errorf("HTML lacks %q", want)
		}
	}
	if err := k.Write(io.Discard, "pdf"); err == nil {
		t.Error("an unknown format was written")
	}
}

func TestPageHandler(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle("GET /kit/{tenant}", PageHandler(NewDirectory(testConfig()).Kit, slog.New(slog.NewTextHandler(io.Discard, nil))))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	get := func(path, accept string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		req.Header.Set("Accept-Language", accept)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	resp, body := get("/kit/ca", "pt-BR,pt;q=0.9")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Language") != "pt-BR" || !strings.Contains(body, "Kit de lista de permissões") {
		t.Errorf("page: %d %s", resp.StatusCode, resp.Header.Get("Content-Language"))
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("CSP %q", csp)
	}
	if strings.Contains(body, "/etc/certgate") || strings.Contains(body, "descargas.ca.example") {
		t.Error("the public page shows a key file or the issuer's download origin")
	}
	if resp, _ := get("/kit/ca?lang=fr", "es"); resp.Header.Get("Content-Language") != "fr" {
		t.Errorf("?lang=fr gave %s", resp.Header.Get("Content-Language"))
	}
	for _, path := range []string{"/kit/nobody", "/kit/" + strings.Repeat("c", MaxTenantName+1)} {
		if resp, _ := get(path, ""); resp.StatusCode != 404 {
			t.Errorf("%.30s: %d, want 404", path, resp.StatusCode)
		}
	}
}
