package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/dnscheck"
)

type fixedDNS struct {
	rep *dnscheck.Report
	err error
}

func (f fixedDNS) Report(context.Context) (*dnscheck.Report, error) { return f.rep, f.err }

// GET /api/v1/dns takes scope read, and a token limited to some tenants
// sees their rows and the shared ones only.
func TestDNSReport(t *testing.T) {
	rep := &dnscheck.Report{Time: time.Date(2026, 12, 1, 9, 30, 0, 0, time.UTC), Resolver: "127.0.0.1:53",
		Rows: []dnscheck.Row{
			{Tenant: "ca", Domain: "ca.example", Check: dnscheck.CheckSPF, Status: dnscheck.Pass, Detail: "192.0.2.1 pass"},
			{Tenant: "other", Domain: "other.example", Check: dnscheck.CheckDMARC, Status: dnscheck.Fail, Detail: "no DMARC record", Publish: "_dmarc.other.example. IN TXT \"v=DMARC1; p=none\""},
			{Domain: "192.0.2.1", Check: dnscheck.CheckPTR, Status: dnscheck.Pass, Detail: "PTR relay.ca.example."},
		},
		Bulk: []dnscheck.Bulk{{Tenant: "ca", Domain: "ca.example", Receiver: "gmail", Met: true, Missing: []string{}},
			{Tenant: "other", Domain: "other.example", Receiver: "gmail", Missing: []string{"dmarc"}}}}
	serve := func(reports DNSReports) *httptest.Server {
		mux := http.NewServeMux()
		New(Deps{Tokens: testTokens(map[string]config.APIToken{
			"ca-read-token-0123456789": {Name: "ca", Scopes: []config.Scope{config.ScopeRead}, Tenants: []string{"ca"}},
			"all-read-token-012345678": {Name: "all", Scopes: []config.Scope{config.ScopeRead}, Tenants: []string{config.EveryTenant}},
			"ca-rel-token-0123456789x": {Name: "rel", Scopes: []config.Scope{config.ScopeRelease}, Tenants: []string{"ca"}},
		}), DNS: reports, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}).Register(mux)
		srv := httptest.NewServer(mux)
		t.Cleanup(srv.Close)
		return srv
	}
	get := func(srv *httptest.Server, token string) (int, dnscheck.Report) {
		req, _ := http.NewRequest("GET", srv.URL+"/api/v1/dns", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out dnscheck.Report
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	srv := serve(fixedDNS{rep: rep})
	if code, got := get(srv, "all-read-token-012345678"); code != 200 || len(got.Rows) != 3 || len(got.Bulk) != 2 || got.Resolver != "127.0.0.1:53" {
		t.Errorf("every tenant: %d, %+v", code, got)
	}
	code, got := get(srv, "ca-read-token-0123456789")
	if code != 200 || len(got.Rows) != 2 || got.Rows[0].Domain != "ca.example" || got.Rows[1].Domain != "192.0.2.1" ||
		len(got.Bulk) != 1 || got.Bulk[0].Domain != "ca.example" {
		t.Errorf("tenant ca: %d, %+v", code, got)
	}
	if code, _ := get(srv, "ca-rel-token-0123456789x"); code != http.StatusForbidden {
		t.Errorf("a token without read: %d", code)
	}
	if code, _ := get(srv, "nope"); code != http.StatusUnauthorized {
		t.Errorf("no token: %d", code)
	}
	if code, _ := get(serve(nil), "ca-read-token-0123456789"); code != http.StatusNotFound {
		t.Errorf("without a checker: %d, want 404 not_configured", code)
	}
	if code, _ := get(serve(fixedDNS{err: errors.New("no keys")}), "ca-read-token-0123456789"); code != http.StatusInternalServerError {
		t.Errorf("a check that cannot run: %d", code)
	}
}
