package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/certgate/certgate/api"
	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/metrics"
	"github.com/certgate/certgate/quarantine"
	"github.com/certgate/certgate/store/sqlite"
)

// TestRouterWiring checks that each part is mounted where operators,
// clients and recipients expect it, behind the right guard; the parts'
// own tests cover what they do.
func TestRouterWiring(t *testing.T) {
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	t.Setenv("CERTGATE_TEST_READ", "read-token-0123456789ab")
	t.Setenv("CERTGATE_TEST_ADMIN", "admin-token-0123456789a")
	tokens, err := api.LoadTokens([]config.APIToken{
		{Name: "helpdesk", TokenEnv: "CERTGATE_TEST_READ", Scopes: []config.Scope{config.ScopeRead}},
		{Name: "ops", TokenEnv: "CERTGATE_TEST_ADMIN", Scopes: []config.Scope{config.ScopeAdmin}},
	})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	m := metrics.New()
	// No desk: nothing here releases or revokes.
	d := &daemon{log: log, metrics: m, store: st, ready: make(chan struct{}), gate: quarantine.NewGate(st, quarantine.GateOptions{}, m, log)}
	srv := httptest.NewServer(newRouter(d, tokens, true))
	defer srv.Close()

	get := func(path, token string) (int, string, string) {
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
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(body)
	}
	if code, _, _ := get("/readyz", ""); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before start: %d", code)
	}
	close(d.ready)
	for _, c := range []struct {
		path, token string
		code        int
		ctype, body string // prefix of the content type, part of the body
	}{
		{"/healthz", "", 200, "text/plain", "ok"},
		{"/readyz", "", 200, "text/plain", "ready"},
		{"/metrics", "", 200, "text/plain", "certgate_"},
		{"/api/v1/openapi.yaml", "", 200, "application/yaml", "openapi:"},
		{"/api/v1/messages", "", 401, "application/json", `"unauthorized"`},
		{"/api/v1/messages", "read-token-0123456789ab", 200, "application/json", `"messages"`},
		{"/api/v1/nothing/here", "", 404, "application/json", `"not_found"`},
		{"/d/AAAAAAAAAAAAAAAAAAAAAA", "", 404, "text/html", "<html"},
		{"/debug/pprof/", "", 401, "application/json", `"unauthorized"`},
		{"/debug/pprof/", "read-token-0123456789ab", 403, "application/json", `"forbidden"`},
		{"/debug/pprof/", "admin-token-0123456789a", 200, "text/html", "goroutine"},
		{"/console/", "", 200, "text/html", `action="/console/signin"`},
		{"/console/messages/x", "read-token-0123456789ab", 401, "text/html", `action="/console/signin"`},
	} {
		code, ctype, body := get(c.path, c.token)
		if code != c.code || !strings.HasPrefix(ctype, c.ctype) || !strings.Contains(body, c.body) {
			t.Errorf("GET %s (token %q): %d %q, want %d %s containing %q; body %.200q", c.path, c.token, code, ctype, c.code, c.ctype, c.body, body)
		}
	}
}

// With http.gate_listen, recipients' pages have a listener of their own
// and nothing else: /metrics (tenant names, volumes), the API and
// profiling answer only on http.listen, which no longer serves the gate.
func TestGateListenServesOnlyThePublicPages(t *testing.T) {
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("read-token-0123456789ab\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgPath := writeSmallConfig(t, dir, fmt.Sprintf("http: {listen: \"127.0.0.1:0\", gate_listen: \"127.0.0.1:0\"}\napi: {tokens: [{name: helpdesk, token_file: %s, scopes: [read]}]}\n", token))
	d := startTestDaemon(t, cfgPath)
	if d.gateAddr == nil || d.gateAddr.String() == d.httpAddr.String() {
		t.Fatalf("gate on %v, http on %v", d.gateAddr, d.httpAddr)
	}
	get := func(addr net.Addr, path string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+addr.String()+path, nil)
		req.Header.Set("Authorization", "Bearer read-token-0123456789ab")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	const link = "/d/AAAAAAAAAAAAAAAAAAAAAA" // no such link: the gate's own page says so
	for _, c := range []struct {
		on   net.Addr
		path string
		code int
		body string
	}{
		{d.gateAddr, link, 404, "<html"},
		{d.gateAddr, "/healthz", 200, "ok"},
		{d.gateAddr, "/metrics", 404, "404 page not found"},
		{d.gateAddr, "/readyz", 404, "404 page not found"},
		{d.gateAddr, "/api/v1/messages", 404, "404 page not found"},
		{d.gateAddr, "/debug/pprof/", 404, "404 page not found"},
		{d.gateAddr, "/console/", 404, "404 page not found"},
		{d.httpAddr, "/console/", 200, `action="/console/signin"`},
		{d.httpAddr, "/metrics", 200, "certgate_"},
		{d.httpAddr, "/readyz", 200, "ready"},
		{d.httpAddr, "/api/v1/messages", 200, `"messages"`},
		{d.httpAddr, link, 404, "404 page not found"},
	} {
		which := "http.listen"
		if c.on == d.gateAddr {
			which = "http.gate_listen"
		}
		if code, body := get(c.on, c.path); code != c.code || !strings.Contains(body, c.body) {
			t.Errorf("GET %s on %s: %d %.100q, want %d with %q", c.path, which, code, body, c.code, c.body)
		}
	}
}
