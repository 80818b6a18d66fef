package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/metrics"
	"github.com/certgate/certgate/quarantine"
	"github.com/certgate/certgate/store"
	"github.com/certgate/certgate/store/sqlite"
)

// noQueue stands for delivery: what the desk hands it is the desk's test.
type noQueue struct{}

func (noQueue) Add(...store.Pending) {}

// helpdeskToken reads and releases the mail of tenant issuer, which the
// API's tests store; they call as it.
const helpdeskToken = "helpdesk-token-0123456789"

type apiEnv struct {
	t   *testing.T
	st  store.Store
	srv *httptest.Server
}

func newAPIEnv(t *testing.T) *apiEnv {
	t.Helper()
	return newAPIEnvWith(t, map[string]config.APIToken{
		helpdeskToken: {Name: "helpdesk", Scopes: []config.Scope{config.ScopeRead, config.ScopeRelease}, Tenants: []string{"issuer"}}})
}

// newAPIEnvWith serves the API with the given tokens, by secret.
func newAPIEnvWith(t *testing.T, secrets map[string]config.APIToken) *apiEnv {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	desk := quarantine.NewDesk(st, noQueue{}, metrics.New())
	mux := http.NewServeMux()
	New(Deps{Store: st, Desk: desk, Tokens: testTokens(secrets), Log: slog.New(slog.NewTextHandler(io.Discard, nil))}).Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &apiEnv{t: t, st: st, srv: srv}
}

// do sends a request as the helpdesk.
func (e *apiEnv) do(method, path, body string) *http.Response {
	e.t.Helper()
	return e.doAs(helpdeskToken, method, path, body)
}

// doAs sends a request with the bearer token secret.
func (e *apiEnv) doAs(secret, method, path, body string) *http.Response {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp
}

// enqueue stores a message of tenant issuer at minute i of the day with
// one recipient.
func (e *apiEnv) enqueue(i int, rcpt string, state store.State, link store.LinkState) string {
	e.t.Helper()
	return e.enqueueFor("issuer", i, rcpt, state, link)
}

// enqueueFor is enqueue for another tenant.
func (e *apiEnv) enqueueFor(tenant string, i int, rcpt string, state store.State, link store.LinkState) string {
	e.t.Helper()
	at := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Minute)
	id := fmt.Sprintf("06h%013d%010d", at.UnixMilli(), i)
	_, hash := quarantine.NewToken()
	_, err := e.st.Enqueue(context.Background(), store.Message{ID: id, Tenant: tenant, MailFrom: "certificados@ca.example",
		Subject: fmt.Sprintf("Certificado %d", i), Class: "bulk", ReceivedAt: at}, [][]byte{[]byte("x")},
		[]store.NewRecipient{{Address: rcpt, TrackingID: id, State: state, NextAttempt: at,
			Links: []store.NewLink{{TokenHash: hash, URL: "https://descargas.ca.example/certificado/" + id, State: link, MaxUses: 3}}}})
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

func (e *apiEnv) call(method, path, body string, out any) int {
	e.t.Helper()
	return e.callAs(helpdeskToken, method, path, body, out)
}

// callAs sends a request with the bearer token secret and decodes the
// JSON answer into out.
func (e *apiEnv) callAs(secret, method, path, body string, out any) int {
	e.t.Helper()
	resp := e.doAs(secret, method, path, body)
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		e.t.Fatalf("%s %s: content type %q", method, path, ct)
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			e.t.Fatalf("%s %s: %v", method, path, err)
		}
	}
	return resp.StatusCode
}

func TestAPIReleaseHeldMailEnablesLinksAndIsIdempotent(t *testing.T) {
	e := newAPIEnv(t)
	id := e.enqueue(1, "juan@empresa.example", store.StateHeld, store.LinkPending)
	var res releaseResult
	if code := e.call("POST", "/api/v1/messages/"+id+"/release", `{"reason": "customer called the helpdesk"}`, &res); code != 200 {
		t.Fatalf("release: %d", code)
	}
	if len(res.Requeued) != 1 || res.Requeued[0] != "juan@empresa.example" {
		t.Fatalf("release requeued %v", res.Requeued)
	}
	if code := e.call("POST", "/api/v1/messages/"+id+"/release", "", &res); code != 200 || len(res.Requeued) != 0 {
		t.Fatalf("second release: %d, requeued %v", code, res.Requeued)
	}
	var m apiMessage
	e.call("GET", "/api/v1/messages/"+id, "", &m)
	if len(m.Links) != 1 || m.Links[0].State != "enabled" || m.Recipients[0].State != "queued" {
		t.Fatalf("after release: links %+v, recipient %s", m.Links, m.Recipients[0].State)
	}
	var released []apiEvent
	for _, ev := range m.Events {
		if ev.Kind == "released" {
			released = append(released, ev)
		}
	}
	if len(released) != 2 || !strings.HasPrefix(released[0].Actor, "api:helpdesk@127.0.0.1:") || !strings.Contains(released[0].Detail, "customer called") {
		t.Fatalf("release events %+v", released)
	}
}

func TestAPISearchPagesAndFilters(t *testing.T) {
	e := newAPIEnv(t)
	for i := 0; i < 7; i++ {
		e.enqueue(i, fmt.Sprintf("r%d@empresa.example", i%2), store.StateQueued, store.LinkPending)
	}
	var page struct {
		Messages []apiSummary `json:"messages"`
		Next     string       `json:"next"`
	}
	seen := map[string]bool{}
	after := ""
	for n := 0; n < 5; n++ {
		page.Messages, page.Next = nil, ""
		if code := e.call("GET", "/api/v1/messages?limit=3&after="+after, "", &page); code != 200 {
			t.Fatalf("search: %d", code)
		}
		for _, m := range page.Messages {
			if seen[m.ID] {
				t.Fatalf("%s on two pages", m.ID)
			}
			seen[m.ID] = true
		}
		if page.Next == "" {
			break
		}
		after = page.Next
	}
	if len(seen) != 7 {
		t.Fatalf("paging saw %d of 7 messages", len(seen))
	}
	e.call("GET", "/api/v1/messages?recipient=r1@empresa.example", "", &page)
	if len(page.Messages) != 3 {
		t.Fatalf("recipient filter: %d messages, want 3", len(page.Messages))
	}
	e.call("GET", "/api/v1/messages?since=2026-11-23T09:05:00Z", "", &page)
	if len(page.Messages) != 2 {
		t.Fatalf("since filter: %d messages, want 2", len(page.Messages))
	}
	var apiErr map[string]string
	for _, bad := range []string{"?state=lost", "?since=yesterday", "?limit=0", "?limit=501"} {
		if code := e.call("GET", "/api/v1/messages"+bad, "", &apiErr); code != 400 || apiErr["error"] != "bad_request" || apiErr["reason"] == "" {
			t.Errorf("search%s: %d %v", bad, code, apiErr)
		}
	}
}

func TestAPIBatchReleaseAndRevoke(t *testing.T) {
	e := newAPIEnv(t)
	a := e.enqueue(1, "ana@empresa.example", store.StateHeld, store.LinkPending)
	b := e.enqueue(2, "ana@empresa.example", store.StateHeld, store.LinkPending)
	e.enqueue(3, "luis@empresa.example", store.StateHeld, store.LinkPending)
	var out struct {
		Released []releaseResult `json:"released"`
		NotFound []string        `json:"not_found"`
	}
	if code := e.call("POST", "/api/v1/release", `{"recipient": "ana@empresa.example"}`, &out); code != 200 || len(out.Released) != 2 {
		t.Fatalf("release by recipient: %d, %+v", code, out)
	}
	if code := e.call("POST", "/api/v1/release", `{"ids": ["`+a+`", "nope"]}`, &out); code != 200 || len(out.NotFound) != 1 || out.NotFound[0] != "nope" {
		t.Fatalf("release by ids: %d, %+v", code, out)
	}
	var apiErr map[string]string
	for _, body := range []string{`{}`, `{"ids": ["x"], "recipient": "y@z.example"}`, `{"idz": ["x"]}`, `not json`} {
		if code := e.call("POST", "/api/v1/release", body, &apiErr); code != 400 || apiErr["reason"] == "" {
			t.Errorf("release %s: %d %v", body, code, apiErr)
		}
	}
	var rev map[string]any
	if code := e.call("POST", "/api/v1/messages/"+b+"/links/revoke", `{"recipient": "ana@empresa.example", "reason": "sent to the wrong person"}`, &rev); code != 200 || rev["revoked"] != float64(1) {
		t.Fatalf("revoke: %d %v", code, rev)
	}
	var m apiMessage
	e.call("GET", "/api/v1/messages/"+b, "", &m)
	if m.Links[0].State != "revoked" {
		t.Fatalf("link after revoke: %s", m.Links[0].State)
	}
	if code := e.call("POST", "/api/v1/messages/nope/links/revoke", "", &apiErr); code != 404 || apiErr["error"] != "not_found" {
		t.Fatalf("revoke unknown: %d %v", code, apiErr)
	}
	if code := e.call("GET", "/api/v1/messages/nope", "", &apiErr); code != 404 {
		t.Fatalf("unknown message: %d", code)
	}
}
