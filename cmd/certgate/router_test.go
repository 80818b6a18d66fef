package main

import (
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/certgate/certgate/config"
)

func TestBearerScopes(t *testing.T) {
	tokens := []apiToken{
		{hash: sha256.Sum256([]byte("helpdesk-token-0123456789")), cfg: config.APIToken{Name: "helpdesk", Scopes: []config.Scope{config.ScopeRead}}},
		{hash: sha256.Sum256([]byte("ops-token-0123456789abcdef")), cfg: config.APIToken{Name: "ops", Scopes: []config.Scope{config.ScopeAdmin}}},
		{hash: sha256.Sum256([]byte("release-token-0123456789ab")), cfg: config.APIToken{Name: "releaser", Scopes: []config.Scope{config.ScopeRelease}}},
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

func TestClientAddressBehindTrustedProxy(t *testing.T) {
	var seen string
	h := clientAddress([]netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("10.0.0.0/8")},
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen = r.RemoteAddr }))
	for _, tc := range []struct{ peer, xff, want string }{
		{"127.0.0.1:5000", "203.0.113.9", "203.0.113.9:0"},
		{"127.0.0.1:5000", "198.51.100.1, 203.0.113.9, 10.1.2.3", "203.0.113.9:0"}, // the rightmost untrusted hop
		{"127.0.0.1:5000", "", "127.0.0.1:5000"},
		{"127.0.0.1:5000", "garbage", "127.0.0.1:5000"},
		{"192.0.2.7:5000", "203.0.113.9", "192.0.2.7:5000"}, // not a proxy: its header is not believed
	} {
		r := httptest.NewRequest("GET", "/d/x", nil)
		r.RemoteAddr = tc.peer
		if tc.xff != "" {
			r.Header.Set("X-Forwarded-For", tc.xff)
		}
		h.ServeHTTP(httptest.NewRecorder(), r)
		if seen != tc.want {
			t.Errorf("peer %s, X-Forwarded-For %q: client %s, want %s", tc.peer, tc.xff, seen, tc.want)
		}
	}
}
