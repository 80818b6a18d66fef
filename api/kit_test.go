package api

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/certgate/certgate/config"
)

// TestKitRoute checks GET /api/v1/kit over HTTP: the read scope, the
// token's tenants as a wall (another tenant's kit is not found), the
// single tenant as the default, and the language passed through.
func TestKitRoute(t *testing.T) {
	const (
		caOnly   = "kit-ca-read-token-0123456"
		everyone = "kit-all-read-token-012345"
		noScope  = "kit-release-only-token-01"
	)
	tokens := testTokens(map[string]config.APIToken{
		caOnly:   {Name: "ca-portal", Scopes: []config.Scope{config.ScopeRead}, Tenants: []string{"ca"}},
		everyone: {Name: "helpdesk", Scopes: []config.Scope{config.ScopeRead}, Tenants: []string{config.EveryTenant}},
		noScope:  {Name: "releaser", Scopes: []config.Scope{config.ScopeRelease}, Tenants: []string{"ca"}},
	})
	known := map[string]bool{"ca": true, "certs": true}
	var asked []string
	source := func(tenant, lang, accept string) (any, bool) {
		asked = append(asked, tenant+"/"+lang+"/"+accept)
		return map[string]string{"tenant": tenant, "lang": lang}, known[tenant]
	}
	mux := http.NewServeMux()
	New(Deps{Tokens: tokens, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Kit: source}).Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	get := func(secret, query string) (int, map[string]string) {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+"/api/v1/kit"+query, nil)
		req.Header.Set("Authorization", "Bearer "+secret)
		req.Header.Set("Accept-Language", "es-AR")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]string
		json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	for _, c := range []struct {
		secret, query string
		code          int
		tenant, err   string
	}{
		{caOnly, "", 200, "ca", ""}, // its one tenant
		{caOnly, "?tenant=ca&lang=pt-BR", 200, "ca", ""},
		{caOnly, "?tenant=certs", 404, "", "not_found"}, // exists, but not this token's
		{caOnly, "?tenant=nobody", 404, "", "not_found"},
		{everyone, "?tenant=certs", 200, "certs", ""},
		{everyone, "", 400, "", "bad_request"}, // which tenant?
		{everyone, "?tenant=nobody", 404, "", "not_found"},
		{everyone, "?tenant=ca&lang=" + strings.Repeat("x", 17), 400, "", "bad_request"},
		{noScope, "?tenant=ca", 403, "", "forbidden"},
		{"wrong-token", "?tenant=ca", 401, "", "unauthorized"},
	} {
		code, body := get(c.secret, c.query)
		if code != c.code || body["tenant"] != c.tenant || body["error"] != c.err {
			t.Errorf("%s %s: %d %v, want %d tenant %q error %q", c.secret[:6], c.query, code, body, c.code, c.tenant, c.err)
		}
	}
	// The kit was never built for a tenant the token does not see.
	certs := 0
	for _, a := range asked {
		if strings.HasPrefix(a, "certs/") {
			certs++
		}
	}
	if certs != 1 {
		t.Errorf("the source built certs' kit %d times, want once (for the token of every tenant): %q", certs, asked)
	}
	if asked[1] != "ca/pt-BR/es-AR" {
		t.Errorf("the source got %q, want the tenant, ?lang= and Accept-Language", asked[1])
	}
}

func TestKitRouteNotConfigured(t *testing.T) {
	mux := http.NewServeMux()
	const secret = "kit-read-token-0123456789"
	New(Deps{Tokens: testTokens(map[string]config.APIToken{secret: {Name: "r", Scopes: []config.Scope{config.ScopeRead}, Tenants: []string{"ca"}}}),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}).Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL+"/api/v1/kit", nil)
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("without a kit source: %d, want 404", resp.StatusCode)
	}
}
