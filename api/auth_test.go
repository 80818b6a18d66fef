package api

import (
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/certgate/certgate/config"
)

// testTokens are tokens as LoadTokens keeps them, by secret.
func testTokens(secrets map[string]config.APIToken) *Tokens {
	ts := &Tokens{}
	for s, c := range secrets {
		ts.list = append(ts.list, newToken(s, c))
	}
	return ts
}

// frontTokens are a read, an admin and a release token, seeing one
// tenant, every tenant and two tenants.
var frontTokens = map[string]config.APIToken{
	"helpdesk-token-0123456789":  {Name: "helpdesk", Scopes: []config.Scope{config.ScopeRead}, Tenants: []string{"issuer"}},
	"ops-token-0123456789abcdef": {Name: "ops", Scopes: []config.Scope{config.ScopeAdmin}, Tenants: []string{config.EveryTenant}},
	"release-token-0123456789ab": {Name: "releaser", Scopes: []config.Scope{config.ScopeRelease}, Tenants: []string{"issuer", "reseller"}},
}

func TestBearerScopes(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	srv := httptest.NewServer(testTokens(frontTokens).Require(config.ScopeRead, ok))
	defer srv.Close()

	for _, tc := range []struct {
		name, auth string
		status     int
		code       string
	}{
		{"no token", "", 401, "unauthorized"},
		{"not bearer", "Basic aGVscGRlc2s6eA==", 401, "unauthorized"},
		{"unknown token", "Bearer nope-nope-nope-nope", 401, "unauthorized"},
		{"token with the scope", "Bearer helpdesk-token-0123456789", 200, ""},
		{"admin holds every scope", "Bearer ops-token-0123456789abcdef", 200, ""},
		{"token without the scope", "Bearer release-token-0123456789ab", 403, "forbidden"},
	} {
		req, _ := http.NewRequest("GET", srv.URL, nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != tc.status {
			t.Errorf("%s: status %d, want %d", tc.name, resp.StatusCode, tc.status)
		}
		if tc.code != "" {
			var body map[string]string
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body["error"] != tc.code || body["reason"] == "" {
				t.Errorf("%s: body %v (%v), want error %q with a reason", tc.name, body, err, tc.code)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("%s: content type %q", tc.name, ct)
			}
		}
		resp.Body.Close()
	}
}

func TestLoadTokensKeepsOnlyHashes(t *testing.T) {
	const secret = "ops-token-0123456789abcdef"
	t.Setenv("CERTGATE_TEST_TOKEN", secret+"\n")
	ts, err := LoadTokens([]config.APIToken{{Name: "ops", TokenEnv: "CERTGATE_TEST_TOKEN", Scopes: []config.Scope{config.ScopeAdmin}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(ts.list) != 1 || ts.list[0].hash != sha256.Sum256([]byte(secret)) || ts.list[0].cfg.Name != "ops" {
		t.Fatalf("tokens %+v", ts.list)
	}
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Authorization", "Bearer "+secret)
	if tok := ts.authenticate(r); tok == nil || tok.cfg.Name != "ops" {
		t.Fatalf("the loaded token does not authenticate: %+v", tok)
	}
}
