package api

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certgate/certgate/compose"
	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/metrics"
	"github.com/certgate/certgate/quarantine"
	"github.com/certgate/certgate/store"
	"github.com/certgate/certgate/store/sqlite"
)

const (
	portalToken = "portal-token-0123456789ab" // send, tenant issuer
	readToken   = "read-token-0123456789abcd" // read only
	otherToken  = "other-token-0123456789abc" // send, tenant reseller
)

type sendEnv struct {
	t       *testing.T
	st      *sqlite.Store
	srv     *httptest.Server
	sends   atomic.Int32
	last    chan Outgoing
	gate    chan struct{} // when set, the sender says so on entered and waits on it
	entered chan struct{}
	// fail makes the sender's spooling fail (a taken message id), after
	// the key's answer was made: the transaction must take both back.
	fail   atomic.Bool
	lastID atomic.Value // the id of the message spooled last
	late   atomic.Int64 // nanoseconds the API's clock is ahead
}

func newSendEnv(t *testing.T) *sendEnv {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &sendEnv{t: t, st: st, last: make(chan Outgoing, 100)}
	tpl, err := compose.NewTemplates(nil)
	if err != nil {
		t.Fatal(err)
	}
	tenantsByDomain := map[string]SendTenant{
		"issuer.example":   {Name: "issuer", MaxRecipients: 3, Classes: []config.Class{config.ClassBulk, config.ClassTransactional}},
		"reseller.example": {Name: "reseller", MaxRecipients: 500, Classes: []config.Class{config.ClassBulk}},
	}
	sender := func(ctx context.Context, m Outgoing) (*Sent, error) {
		if e.gate != nil {
			e.entered <- struct{}{}
			<-e.gate
		}
		e.sends.Add(1)
		// Spooled for real: the message must be in the store once, with
		// its key's answer, as the relay spools it.
		now := time.Now()
		id := store.NewMessageID(now)
		if prev, ok := e.lastID.Load().(string); ok && e.fail.Load() {
			id = prev
		}
		var rcpts []store.NewRecipient
		for _, a := range m.Rcpts {
			rcpts = append(rcpts, store.NewCopy(a, store.StateQueued, now))
		}
		out := &Sent{ID: id}
		for _, r := range rcpts {
			out.Recipients = append(out.Recipients, SentRecipient{Address: r.Address, ID: r.TrackingID})
		}
		msg := store.Message{ID: id, Tenant: m.Tenant, MailFrom: m.From, HeaderFrom: m.From, MessageID: id,
			Class: "bulk", ReceivedAt: now, ClientAddr: m.ClientIP.String(), Submitter: m.Actor, Note: "via HTTP, format " + m.Format}
		if m.Answer != nil {
			msg.Idempotency = m.Answer(out)
		}
		if _, err := st.Enqueue(ctx, msg, [][]byte{m.Data}, rcpts); err != nil {
			return nil, err
		}
		e.lastID.Store(id)
		e.last <- m
		return out, nil
	}
	desk := quarantine.NewDesk(st, noQueue{}, metrics.New())
	mux := http.NewServeMux()
	New(Deps{Store: st, Desk: desk, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Tokens: testTokens(map[string]config.APIToken{
			portalToken: {Name: "portal", Scopes: []config.Scope{config.ScopeSend}, Tenants: []string{"issuer"}},
			readToken:   {Name: "reader", Scopes: []config.Scope{config.ScopeRead}, Tenants: []string{"issuer"}},
			otherToken:  {Name: "other", Scopes: []config.Scope{config.ScopeSend}, Tenants: []string{"reseller"}},
		}),
		Send: Sending{Templates: tpl, Sender: sender, Keys: st, MaxBytes: 4096, Hostname: "relay.example",
			Tenant: func(d string) (SendTenant, bool) { t, ok := tenantsByDomain[d]; return t, ok },
			Now:    func() time.Time { return time.Now().Add(time.Duration(e.late.Load())) }},
	}).Register(mux)
	e.srv = httptest.NewServer(mux)
	t.Cleanup(e.srv.Close)
	return e
}

func (e *sendEnv) post(token, path, body string, header ...string) (*http.Response, map[string]any) {
	e.t.Helper()
	resp, raw := e.postRaw(token, path, body, header...)
	var out map[string]any
	json.Unmarshal(raw, &out)
	if out == nil {
		out = map[string]any{"raw": string(raw)}
	}
	return resp, out
}

// postRaw is post with the answer's body as it came.
func (e *sendEnv) postRaw(token, path, body string, header ...string) (*http.Response, []byte) {
	e.t.Helper()
	req, _ := http.NewRequest("POST", e.srv.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp, raw
}

const okSend = `{"from": "certificados@issuer.example", "emails": "ana@example.com; it@example.org",
	"certificate_collect_format": "downloadlink", "download_url": "https://issuer.example/download/1", "class": "transactional"}`

func TestSendAnswers202OnceDurable(t *testing.T) {
	e := newSendEnv(t)
	resp, out := e.post(portalToken, "/api/v1/send", okSend)
	if resp.StatusCode != 202 {
		t.Fatalf("send = %d %v", resp.StatusCode, out)
	}
	rcpts, _ := out["recipients"].([]any)
	if out["id"] == "" || len(rcpts) != 2 || rcpts[0].(map[string]any)["address"] != "ana@example.com" || rcpts[0].(map[string]any)["id"] == "" {
		t.Fatalf("answer %v", out)
	}
	m := <-e.last
	if m.Tenant != "issuer" || m.Class != config.ClassTransactional || m.Format != "downloadlink" ||
		!strings.HasPrefix(m.Actor, "api:portal@127.0.0.1:") || !m.ClientIP.IsLoopback() {
		t.Fatalf("outgoing %+v", m)
	}
	v, err := e.st.Message(context.Background(), out["id"].(string))
	if err != nil || v.Events[0].Actor != m.Actor || !strings.Contains(v.Events[0].Detail, "format downloadlink") {
		t.Fatalf("audit event: %+v, %v", v, err)
	}
}

func TestSendRefusals(t *testing.T) {
	e := newSendEnv(t)
	for _, c := range []struct {
		name, token, body string
		status            int
		field             string
	}{
		{"no send scope", readToken, okSend, 403, ""},
		{"another tenant's From", otherToken, okSend, 403, "from"},
		{"nobody's domain", portalToken, strings.Replace(okSend, "issuer.example\"", "nobody.example\"", 1), 403, "from"},
		{"class the tenant may not use", otherToken, strings.Replace(okSend, "issuer.example\"", "reseller.example\"", 1), 403, "class"},
		{"unknown class", portalToken, strings.Replace(okSend, `"transactional"`, `"urgent"`, 1), 400, "class"},
		{"bad format", portalToken, strings.Replace(okSend, `"downloadlink"`, `"fax"`, 1), 400, "certificate_collect_format"},
		{"too many recipients", portalToken, strings.Replace(okSend, `it@example.org`, `b@x.example, c@x.example, d@x.example`, 1), 413, "emails"},
		{"body over the cap", portalToken, strings.Replace(okSend, "Su", "", 1)[:len(okSend)-1] + `, "custom_message": "` + strings.Repeat("x", 5000) + `"}`, 413, ""},
	} {
		resp, out := e.post(c.token, "/api/v1/send", c.body)
		if resp.StatusCode != c.status || (c.field != "" && out["field"] != c.field) || out["error"] == nil {
			t.Errorf("%s: %d %v; want %d field %q", c.name, resp.StatusCode, out, c.status, c.field)
		}
	}
	if n := e.sends.Load(); n != 0 {
		t.Fatalf("%d sends for refused calls", n)
	}
}

func TestSendPreviewSendsNothing(t *testing.T) {
	e := newSendEnv(t)
	resp, out := e.post(portalToken, "/api/v1/send/preview", okSend)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "message/rfc822" || !strings.Contains(out["raw"].(string), "From: certificados@issuer.example") {
		t.Fatalf("preview = %d %s %v", resp.StatusCode, resp.Header.Get("Content-Type"), out)
	}
	if e.sends.Load() != 0 {
		t.Fatal("the preview sent")
	}
}

func TestSendIdempotencyKey(t *testing.T) {
	e := newSendEnv(t)
	resp1, body1 := e.postRaw(portalToken, "/api/v1/send", okSend, "Idempotency-Key", "order-42")
	resp2, body2 := e.postRaw(portalToken, "/api/v1/send", okSend, "Idempotency-Key", "order-42")
	var out1 Sent
	if resp1.StatusCode != 202 || resp2.StatusCode != 202 || json.Unmarshal(body1, &out1) != nil || out1.ID == "" ||
		resp2.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retry: %d %s, %d %s", resp1.StatusCode, body1, resp2.StatusCode, body2)
	}
	// The replay is the first answer, byte for byte.
	if string(body2) != string(body1) || resp2.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("the replay is %q (%s), the first answer %q", body2, resp2.Header.Get("Content-Type"), body1)
	}
	if n := e.sends.Load(); n != 1 {
		t.Fatalf("%d sends for one key; want 1", n)
	}
	msgs, err := e.st.Search(context.Background(), store.Query{Tenant: "issuer", Limit: 10})
	if err != nil || len(msgs) != 1 {
		t.Fatalf("spooled %d messages, %v; want 1", len(msgs), err)
	}
	// The same key with another body.
	resp, out := e.post(portalToken, "/api/v1/send", strings.Replace(okSend, "ana@", "bea@", 1), "Idempotency-Key", "order-42")
	if resp.StatusCode != 409 || out["error"] != "idempotency_key_reused" {
		t.Fatalf("other body: %d %v", resp.StatusCode, out)
	}
	// Another token's key of the same name is its own.
	if resp, out := e.post(otherToken, "/api/v1/send", strings.Replace(okSend, `"transactional"`, `"bulk"`, 1), "Idempotency-Key", "order-42"); resp.StatusCode != 403 || out["field"] != "from" {
		t.Fatalf("other token: %d %v", resp.StatusCode, out)
	}
	// A refused call frees its key: fixed, the retry sends.
	bad := strings.Replace(okSend, `"downloadlink"`, `"fax"`, 1)
	if resp, _ := e.post(portalToken, "/api/v1/send", bad, "Idempotency-Key", "order-43"); resp.StatusCode != 400 {
		t.Fatalf("bad call: %d", resp.StatusCode)
	}
	if resp, out := e.post(portalToken, "/api/v1/send", bad, "Idempotency-Key", "order-43"); resp.StatusCode != 400 {
		t.Fatalf("bad call again: %d %v", resp.StatusCode, out)
	}
	// Another body with the refused call's key is not 409: the key was freed.
	if resp, out := e.post(portalToken, "/api/v1/send", okSend, "Idempotency-Key", "order-43"); resp.StatusCode != 202 {
		t.Fatalf("a refused call's key was kept: %d %v", resp.StatusCode, out)
	}
	if resp, _ := e.post(portalToken, "/api/v1/send", okSend, "Idempotency-Key", "bad key"); resp.StatusCode != 400 {
		t.Fatalf("a key with a space: %d", resp.StatusCode)
	}
}

// Two calls with one key at once: one sends, the other is told the first
// is under way (or, once it finished, gets its answer); never two sends.
func TestSendIdempotencyRace(t *testing.T) {
	e := newSendEnv(t)
	e.gate, e.entered = make(chan struct{}), make(chan struct{}, 1)
	var wg sync.WaitGroup
	statuses := make(chan int, 2)
	wg.Add(1)
	go func() {
		defer wg.Done()
		resp, _ := e.post(portalToken, "/api/v1/send", okSend, "Idempotency-Key", "race")
		statuses <- resp.StatusCode
	}()
	// The second call comes while the first, which holds the key, sends:
	// it is answered 409 at once.
	<-e.entered
	resp, out := e.post(portalToken, "/api/v1/send", okSend, "Idempotency-Key", "race")
	close(e.gate)
	if resp.StatusCode != 409 || out["error"] != "idempotency_key_in_use" {
		t.Fatalf("second call: %d %v", resp.StatusCode, out)
	}
	wg.Wait()
	if s := <-statuses; s != 202 {
		t.Fatalf("first call: %d", s)
	}
	if n := e.sends.Load(); n != 1 {
		t.Fatalf("%d sends; want 1", n)
	}
	resp, out = e.post(portalToken, "/api/v1/send", okSend, "Idempotency-Key", "race")
	if resp.StatusCode != 202 || e.sends.Load() != 1 {
		t.Fatalf("after: %d %v, %d sends", resp.StatusCode, out, e.sends.Load())
	}
}

// A call whose spooling fails sends nothing and keeps no answer: the
// message and its key's answer are one transaction, and the key is freed
// for the retry.
func TestSendIdempotencySpoolFailureFreesKey(t *testing.T) {
	e := newSendEnv(t)
	if resp, out := e.post(portalToken, "/api/v1/send", okSend); resp.StatusCode != 202 {
		t.Fatalf("first send: %d %v", resp.StatusCode, out)
	}
	e.fail.Store(true)
	if resp, out := e.post(portalToken, "/api/v1/send", okSend, "Idempotency-Key", "order-44"); resp.StatusCode != 500 {
		t.Fatalf("a failing spool: %d %v; want 500", resp.StatusCode, out)
	}
	e.fail.Store(false)
	resp, out := e.post(portalToken, "/api/v1/send", okSend, "Idempotency-Key", "order-44")
	if resp.StatusCode != 202 || resp.Header.Get("Idempotent-Replayed") != "" || e.sends.Load() != 3 {
		t.Fatalf("the retry: %d %v (replayed %q); want sent anew", resp.StatusCode, out, resp.Header.Get("Idempotent-Replayed"))
	}
	if msgs, err := e.st.Search(context.Background(), store.Query{Tenant: "issuer", Limit: 10}); err != nil || len(msgs) != 2 {
		t.Fatalf("spooled %d messages, %v; want 2", len(msgs), err)
	}
}

// A call cut short after claiming its key (certgate stopped before the
// message was durable) sent nothing: its claim lapses after
// IdempotencyClaim, and the retry sends.
func TestSendIdempotencyClaimLapses(t *testing.T) {
	e := newSendEnv(t)
	now := time.Now()
	if c, err := e.st.ReserveKey(context.Background(), "portal\x00order-45", sha256.Sum256([]byte(okSend)), now, now.Add(IdempotencyClaim)); err != nil || !c.Claimed {
		t.Fatalf("ReserveKey = %+v, %v", c, err)
	}
	if resp, out := e.post(portalToken, "/api/v1/send", okSend, "Idempotency-Key", "order-45"); resp.StatusCode != 409 || out["error"] != "idempotency_key_in_use" {
		t.Fatalf("while claimed: %d %v", resp.StatusCode, out)
	}
	e.late.Store(int64(IdempotencyClaim + time.Second))
	resp, out := e.post(portalToken, "/api/v1/send", okSend, "Idempotency-Key", "order-45")
	if resp.StatusCode != 202 || e.sends.Load() != 1 {
		t.Fatalf("after the claim lapsed: %d %v, %d sends", resp.StatusCode, out, e.sends.Load())
	}
	// The answer is kept a day, not for the claim's while.
	e.late.Store(int64(IdempotencyTTL - time.Minute))
	if resp, out2 := e.post(portalToken, "/api/v1/send", okSend, "Idempotency-Key", "order-45"); resp.StatusCode != 202 ||
		resp.Header.Get("Idempotent-Replayed") != "true" || out2["id"] != out["id"] || e.sends.Load() != 1 {
		t.Fatalf("a day less a minute later: %d %v, %d sends", resp.StatusCode, out2, e.sends.Load())
	}
}
