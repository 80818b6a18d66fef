package quarantine

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/metrics"
	"github.com/certgate/certgate/store"
)

type apiEnv struct {
	desk *Desk
	m    *metrics.Metrics
	t    *testing.T
	st   store.Store
	srv  *httptest.Server
	q    *requeued
}

func newAPIEnv(t *testing.T) *apiEnv {
	t.Helper()
	desk, st, q, m := newTestDesk(t)
	api := NewAPI(st, desk, func(*http.Request) (string, config.Scope) { return "helpdesk", config.ScopeRelease }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	mux := http.NewServeMux()
	api.Register(mux, func(_ config.Scope, h http.Handler) http.Handler { return h }) // scopes are the router's (cmd/certgate tests)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &apiEnv{desk: desk, m: m, t: t, st: st, srv: srv, q: q}
}

// enqueue stores a message at minute i of the day with one recipient.
func (e *apiEnv) enqueue(i int, rcpt string, state store.State, link store.LinkState) string {
	e.t.Helper()
	at := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Minute)
	id := fmt.Sprintf("06h%013d%010d", at.UnixMilli(), i)
	_, hash := NewToken()
	_, err := e.st.Enqueue(context.Background(), store.Message{ID: id, Tenant: "issuer", MailFrom: "certificados@ca.example",
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
	req, _ := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
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
	if len(res.Requeued) != 1 || res.Requeued[0] != "juan@empresa.example" || len(e.q.ps) != 1 {
		t.Fatalf("release requeued %v (queue got %d)", res.Requeued, len(e.q.ps))
	}
	if code := e.call("POST", "/api/v1/messages/"+id+"/release", "", &res); code != 200 || len(res.Requeued) != 0 || len(e.q.ps) != 1 {
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

func TestHeldGaugeCountsAtStartAndFallsOnRelease(t *testing.T) {
	e := newAPIEnv(t)
	id := e.enqueue(1, "a@empresa.example", store.StateHeld, store.LinkPending)
	e.enqueue(2, "b@empresa.example", store.StateHeld, store.LinkPending)
	e.enqueue(3, "c@empresa.example", store.StateQueued, store.LinkPending)
	m := e.m
	if err := e.desk.CountHeld(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := metricValue(m.Held.WithLabelValues("issuer")); got != 2 {
		t.Fatalf("held at start: %v, want 2", got)
	}
	e.call("POST", "/api/v1/messages/"+id+"/release", "", &map[string]any{})
	e.call("POST", "/api/v1/messages/"+id+"/release", "", nil) // nothing left to release: no change
	if got := metricValue(m.Held.WithLabelValues("issuer")); got != 1 {
		t.Fatalf("held after a release: %v, want 1", got)
	}
}
