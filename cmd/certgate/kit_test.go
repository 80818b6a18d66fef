package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/certgate/certgate/api"
	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/kit"
	"github.com/certgate/certgate/metrics"
	"github.com/certgate/certgate/quarantine"
	"github.com/certgate/certgate/store/sqlite"
)

// kitConfig writes a configuration with one gated tenant and a real DKIM
// key, as certgate kit reads it.
func kitConfig(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	var out bytes.Buffer
	if code := run([]string{"dkim", "keygen", "--domain", "ca.example", "--selector", "s2026", "--algorithm", "ed25519", "--out", dir}, &out, &out); code != 0 {
		t.Fatalf("dkim keygen: %s", out.String())
	}
	path := filepath.Join(dir, "certgate.yaml")
	writeSecret(t, path, `hostname: relay.ca.example
data_dir: `+filepath.Join(dir, "data")+`
smtp: {listen: ["127.0.0.1:0"]}
http: {listen: "127.0.0.1:0", public_url: "https://gate.ca.example"}
tenants:
  - name: ca
    display_name: Autoridad Certificante Ejemplo
    trusted_networks: [127.0.0.1/32]
    from_domains: [ca.example]
    links: {gate: ["https://descargas.ca.example/certificado/"]}
dkim:
  - {domain: ca.example, selector: s2026, key_file: `+filepath.Join(dir, "s2026._domainkey.ca.example.pem")+`}
delivery:
  source_addresses: [203.0.113.25, "2001:db8::25"]
`)
	return path
}

func TestKitCommand(t *testing.T) {
	path := kitConfig(t)
	kitRun := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := run(append([]string{"kit", "--config", path}, args...), &out, &errOut)
		return code, out.String(), errOut.String()
	}
	code, md, errOut := kitRun("--tenant", "ca")
	if code != 0 {
		t.Fatalf("kit: %d %s", code, errOut)
	}
	for _, want := range []string{"# Allowlisting kit: Autoridad Certificante Ejemplo", "`d=ca.example; s=s2026", "`203.0.113.25`, `2001:db8::25`",
		"`relay.ca.example`", "`gate.ca.example`", "-SenderDomainIs 'ca.example'", "welcomelist_auth *@ca.example"} {
		if !strings.Contains(md, want) {
			t.Errorf("kit lacks %q", want)
		}
	}
	code, js, _ := kitRun("--tenant", "ca", "--lang", "pt-br", "--format", "json")
	var k struct {
		Lang     string
		Identity kit.Identity
	}
	if code != 0 || json.Unmarshal([]byte(js), &k) != nil || k.Lang != "pt-BR" || k.Identity.DKIM[0].Selector != "s2026" {
		t.Errorf("kit --lang pt-br --format json: %d %+v", code, k)
	}
	if code, page, _ := kitRun("--tenant", "ca", "--lang", "fr", "--format", "html"); code != 0 || !strings.Contains(page, `<html lang="fr">`) {
		t.Errorf("kit --format html: %d", code)
	}
	for _, args := range [][]string{{}, {"--tenant", "nobody"}, {"--tenant", "ca", "--lang", "de"}, {"--tenant", "ca", "--format", "pdf"}} {
		if code, _, errOut := kitRun(args...); code != 2 || errOut == "" {
			t.Errorf("kit %q: exit %d (%q), want 2 with a reason", args, code, errOut)
		}
	}
}

// TestKitRoutes checks that the daemon's router serves the daemon's
// kits: the API behind the read scope and the token's tenants, the page
// in public.
func TestKitRoutes(t *testing.T) {
	cfg, err := config.Load(kitConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	t.Setenv("CERTGATE_TEST_KIT", "kit-read-token-0123456789")
	tokens, err := api.LoadTokens([]config.APIToken{{Name: "r", TokenEnv: "CERTGATE_TEST_KIT", Scopes: []config.Scope{config.ScopeRead}, Tenants: []string{"ca"}}})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	m := metrics.New()
	d := &daemon{cfg: cfg, log: log, metrics: m, store: st, ready: make(chan struct{}),
		gate: quarantine.NewGate(st, quarantine.GateOptions{}, m, log), kits: kit.NewDirectory(cfg)}
	srv := httptest.NewServer(newRouter(d, tokens, true))
	defer srv.Close()
	get := func(path, token string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	if resp, body := get("/kit/ca?lang=es", ""); resp.StatusCode != 200 || resp.Header.Get("Content-Language") != "es" || !strings.Contains(body, "gate.ca.example") {
		t.Errorf("/kit/ca: %d %s", resp.StatusCode, resp.Header.Get("Content-Language"))
	}
	if resp, _ := get("/kit/nobody", ""); resp.StatusCode != 404 {
		t.Errorf("/kit/nobody: %d", resp.StatusCode)
	}
	resp, body := get("/api/v1/kit", "kit-read-token-0123456789")
	var k struct{ Identity kit.Identity }
	if resp.StatusCode != 200 || json.Unmarshal([]byte(body), &k) != nil || k.Identity.GateHost != "gate.ca.example" || k.Identity.SourceAddresses[1] != "2001:db8::25" {
		t.Errorf("/api/v1/kit: %d %s", resp.StatusCode, body)
	}
	if resp, _ := get("/api/v1/kit?tenant=ca", ""); resp.StatusCode != 401 {
		t.Errorf("/api/v1/kit without a token: %d", resp.StatusCode)
	}
}
