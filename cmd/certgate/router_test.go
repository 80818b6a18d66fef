package main

import (
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/certgate/certgate/config"
)

func TestBearerScopes(t *testing.T) {
	tokens := []apiToken{
		{hash: sha256.Sum256([]byte("helpdesk-token-0123456789")), cfg: config.APIToken{Name: "helpdesk", Scopes: []string{"read"}}},
		{hash: sha256.Sum256([]byte("ops-token-0123456789abcdef")), cfg: config.APIToken{Name: "ops", Scopes: []string{"admin"}}},
		{hash: sha256.Sum256([]byte("release-token-0123456789ab")), cfg: config.APIToken{Name: "releaser", Scopes: []string{"release"}}},
	}
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	srv := httptest.NewServer(requireScope(tokens, "read", ok))
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
