package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certgate/certgate/clock"
	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/store"
	"github.com/certgate/certgate/store/sqlite"
)

// whNotice is one POST as the receiver saw it.
type whNotice struct {
	path   string
	method string
	header http.Header
	body   []byte
	at     time.Time
	// decoded from body
	ID        int64  `json:"id"`
	Kind      string `json:"kind"`
	Time      string `json:"time"`
	MessageID string `json:"message_id"`
	Tenant    string `json:"tenant"`
	Recipient string `json:"recipient"`
	Actor     string `json:"actor"`
	Detail    string `json:"detail"`
	Count     int64  `json:"count"`
}

// whReceiver is a real HTTP server on 127.0.0.1 that records every POST
// on arrival, stamped with the test's clock, and answers what status says
// (200 when nil). status may block, to keep a POST in flight.
type whReceiver struct {
	t      *testing.T
	clk    clock.Clock
	srv    *httptest.Server
	mu     sync.Mutex
	got    []whNotice
	status func(n whNotice, seen int) int // seen: tries of this id and path so far, this one included
}

func newWHReceiver(t *testing.T, clk clock.Clock, status func(n whNotice, seen int) int) *whReceiver {
	r := &whReceiver{t: t, clk: clk, status: status}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(req.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		n := whNotice{path: req.URL.Path, method: req.Method, header: req.Header.Clone(), body: body, at: r.clk.Now()}
		if err := json.Unmarshal(body, &n); err != nil {
			t.Errorf("notice body %q: %v", body, err)
		}
		r.mu.Lock()
		r.got = append(r.got, n)
		seen := 0
		for _, g := range r.got {
			if g.path == n.path && g.ID == n.ID {
				seen++
			}
		}
		r.mu.Unlock()
		code := http.StatusOK
		if r.status != nil {
			code = r.status(n, seen)
		}
		w.WriteHeader(code)
		fmt.Fprintln(w, "thanks")
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// notices returns what arrived on path ("" for every path), oldest first.
func (r *whReceiver) notices(path string) []whNotice {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []whNotice
	for _, n := range r.got {
		if path == "" || n.path == path {
			out = append(out, n)
		}
	}
	return out
}

func ids(ns []whNotice) []int64 {
	var out []int64
	for _, n := range ns {
		out = append(out, n.ID)
	}
	return out
}

// verifyNotice checks a notice the way docs/config.md tells receivers to:
// the HMAC of timestamp "." body, a timestamp within 5 minutes of the
// receiver's clock, and headers that agree with the body.
func verifyNotice(t *testing.T, secret string, n whNotice) {
	t.Helper()
	if n.method != http.MethodPost {
		t.Errorf("notice %d: method %s", n.ID, n.method)
	}
	if ct := n.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("notice %d: Content-Type %q", n.ID, ct)
	}
	if k := n.header.Get("X-Certgate-Event"); k != n.Kind {
		t.Errorf("notice %d: X-Certgate-Event %q, body kind %q", n.ID, k, n.Kind)
	}
	if id := n.header.Get("X-Certgate-Delivery"); id != strconv.FormatInt(n.ID, 10) {
		t.Errorf("notice %d: X-Certgate-Delivery %q", n.ID, id)
	}
	ts := n.header.Get("X-Certgate-Timestamp")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		t.Errorf("notice %d: X-Certgate-Timestamp %q: %v", n.ID, ts, err)
	} else if d := n.at.Sub(time.Unix(sec, 0)); d > 5*time.Minute || d < -5*time.Minute {
		t.Errorf("notice %d: timestamp %s is %s away", n.ID, ts, d)
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "." + string(n.body)))
	want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	if got := n.header.Get("X-Certgate-Signature"); !hmac.Equal([]byte(got), []byte(want)) {
		t.Errorf("notice %d: X-Certgate-Signature %q, want %q", n.ID, got, want)
	}
	var keys map[string]any
	if err := json.Unmarshal(n.body, &keys); err != nil {
		t.Fatal(err)
	}
	wantKeys := []string{"actor", "count", "detail", "id", "kind", "message_id", "recipient", "tenant", "time"}
	if got := slices.Sorted(maps.Keys(keys)); !slices.Equal(got, wantKeys) {
		t.Errorf("notice %d has keys %v, want %v", n.ID, got, wantKeys)
	}
	if _, err := time.Parse(time.RFC3339, n.Time); err != nil {
		t.Errorf("notice %d: time %q is not RFC 3339: %v", n.ID, n.Time, err)
	}
}

func whStore(t *testing.T, path string) *sqlite.Store {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "db")
	}
	st, err := sqlite.Open(context.Background(), path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// whEnqueue stores a message of tenant for addrs, returning the
// recipients' ids.
func whEnqueue(t *testing.T, st store.Store, id, tenant string, state store.State, addrs []string, links ...store.NewLink) []int64 {
	t.Helper()
	var rs []store.NewRecipient
	for i, a := range addrs {
		r := store.NewRecipient{Address: a, TrackingID: id + "/" + a, State: state, NextAttempt: time.Now()}
		if i == 0 {
			r.Links = links
		}
		rs = append(rs, r)
	}
	rids, err := st.Enqueue(context.Background(), store.Message{ID: id, Tenant: tenant, MailFrom: "certificados@ca.example",
		Class: "transactional", ClientAddr: "192.0.2.1", AuthUser: "portal"}, [][]byte{[]byte("x")}, rs)
	if err != nil {
		t.Fatal(err)
	}
	return rids
}

func whAttempt(t *testing.T, st store.Store, msg string, rid int64, state store.State, code int, reply string) {
	t.Helper()
	next := time.Time{}
	if state == store.StateQueued {
		next = time.Now().Add(time.Minute)
	}
	if err := st.RecordAttempt(context.Background(), store.Attempt{RecipientID: rid, MessageID: msg, State: state,
		NextAttempt: next, Provider: "default", Host: "mx.empresa.example", Code: code, Reply: reply}); err != nil {
		t.Fatal(err)
	}
}

// syncBuffer is a log destination tests can read while the dispatcher writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// epoch is where a test's fake clock starts.
var epoch = time.Date(2026, 11, 20, 9, 30, 0, 0, time.UTC)

// whRun is a started dispatcher whose polls and backoff run on a fake
// clock that only the test moves: it moves the clock once every endpoint
// waits on it, so nothing happens between a check and the next step.
type whRun struct {
	t    *testing.T
	d    *Dispatcher
	clk  *clock.Fake
	eps  int // lanes, in fact: each endpoint's walks of the log
	poll time.Duration
}

// startWH starts a dispatcher for eps on clk (polls of 10ms, backoff from
// 10ms, 10s per try unless opts or the endpoints say otherwise).
func startWH(t *testing.T, st EventLog, clk *clock.Fake, eps []Endpoint, opts Options, logTo io.Writer) *whRun {
	t.Helper()
	if logTo == nil {
		logTo = io.Discard
	}
	if opts.Poll == 0 {
		opts.Poll = 10 * time.Millisecond
	}
	if opts.BackoffBase == 0 {
		opts.BackoffBase = 10 * time.Millisecond
	}
	opts.Clock = clk
	for i := range eps {
		if eps[i].Timeout == 0 {
			eps[i].Timeout = 10 * time.Second
		}
	}
	d := New(st, eps, opts, slog.New(slog.NewTextHandler(logTo, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Stop(context.Background()) })
	lanes := 0 // each waits on the clock on its own
	for _, ep := range d.eps {
		lanes += len(ep.lanes)
	}
	return &whRun{t: t, d: d, clk: clk, eps: lanes, poll: opts.Poll}
}

// idle waits until every endpoint waits on the clock (polling or backing
// off): no read of the log or POST is under way.
func (r *whRun) idle() {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.clk.WaitTimers(ctx, r.eps); err != nil {
		r.t.Fatalf("the endpoints never all waited on the clock: %v", err)
	}
}

// runUntil moves the clock from one wait's end to the next until cond
// holds while every endpoint is idle.
func (r *whRun) runUntil(what string, cond func() bool) {
	r.t.Helper()
	for range 1000 {
		r.idle()
		if cond() {
			return
		}
		if next, ok := r.clk.Next(); ok {
			r.clk.Advance(next.Sub(r.clk.Now()))
		}
	}
	r.t.Fatalf("1000 waits passed without %s", what)
}

// quiet lets every endpoint poll once more, after which nothing more may
// have arrived.
func (r *whRun) quiet() {
	r.t.Helper()
	r.idle()
	r.clk.Advance(r.poll)
	r.idle()
}

var allKinds = []string{"delivered", "bounced", "released", "link_used", "link_refused"}

const (
	secretAll = "0f6b1d0e9c2a4b7e8d3f5a6c7b8e9d0a"
	secretCA  = "c4f1e2d3a4b5c6d7e8f9a0b1c2d3e4f5"
)

// TestWebhooksSignedInOrder writes events through the store as the queue,
// the API and the gate do, and checks that each endpoint receives the
// ones it asks for, in order, correctly signed.
func TestWebhooksSignedInOrder(t *testing.T) {
	ctx := context.Background()
	st := whStore(t, "")
	clk := clock.NewFake(epoch)
	rcv := newWHReceiver(t, clk, nil)
	hash := sha256.Sum256([]byte("a link token"))
	msgA := "068w3qk2v0yzj7a5c1m9rt4xa1"
	ra := whEnqueue(t, st, msgA, "ca", store.StateQueued, []string{"juan@empresa.example", "ana@empresa.example"},
		store.NewLink{TokenHash: hash, URL: "https://descargas.ca.example/certificado?clave=Zk3p9QwX", State: store.LinkEnabled, MaxUses: 1})

	run := startWH(t, st, clk, []Endpoint{
		{Name: "all", URL: rcv.srv.URL + "/all", Secret: []byte(secretAll), Events: allKinds, Tenants: []string{config.EveryTenant}},
		{Name: "ca-delivered", URL: rcv.srv.URL + "/ca", Secret: []byte(secretCA), Events: []string{"delivered"}, Tenants: []string{"ca"}},
	}, Options{}, nil)

	whAttempt(t, st, msgA, ra[0], store.StateQueued, 451, "4.7.1 try later")
	whAttempt(t, st, msgA, ra[0], store.StateDelivered, 250, "2.0.0 ok")
	whAttempt(t, st, msgA, ra[1], store.StateBounced, 550, "5.1.1 no such user")
	msgB := "068w3qk2v0yzj7a5c1m9rt4xb2"
	rb := whEnqueue(t, st, msgB, "other", store.StateHeld, []string{"pedro@otra.example"})
	if _, err := st.Release(ctx, msgB, time.Now(), "api:helpdesk@192.0.2.9", "released: ticket 4711"); err != nil {
		t.Fatal(err)
	}
	whAttempt(t, st, msgB, rb[0], store.StateDelivered, 250, "2.0.0 ok")
	link, err := st.LinkByToken(ctx, hash)
	if err != nil {
		t.Fatal(err)
	}
	if u, err := st.UseLink(ctx, link.ID, time.Now(), "browser:192.0.2.50", "download"); err != nil || !u.OK {
		t.Fatalf("UseLink = %+v, %v", u, err)
	}
	u, err := st.UseLink(ctx, link.ID, time.Now(), "browser:192.0.2.50", "download")
	if err != nil || u.OK {
		t.Fatalf("second UseLink = %+v, %v", u, err)
	}
	if _, err := st.RefuseLink(ctx, link.ID, store.LinkRefusal{Time: time.Now(), Reason: u.Why, Client: "192.0.2.50"}, "browser:192.0.2.50"); err != nil {
		t.Fatal(err)
	}

	// The log as the store has it, to compare the notices with.
	log, err := st.EventsAfter(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[int64]store.EventRecord{}
	for _, e := range log {
		byID[e.ID] = e
	}
	lastID := log[len(log)-1].ID

	type want struct{ kind, msg, tenant, rcpt string }
	wantAll := []want{
		{"delivered", msgA, "ca", "juan@empresa.example"},
		{"bounced", msgA, "ca", "ana@empresa.example"},
		{"released", msgB, "other", ""},
		{"delivered", msgB, "other", "pedro@otra.example"},
		{"link_used", msgA, "ca", "juan@empresa.example"},
		{"link_refused", msgA, "ca", "juan@empresa.example"},
	}
	wantCA := wantAll[:1]
	cursor := func(name string) int64 {
		c, err := st.Cursor(ctx, "webhook:"+name)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// Both cursors reach the end of the log, the filtered one too: events
	// it does not want move it along.
	run.runUntil("both endpoints to reach the end of the log", func() bool {
		return cursor("all") == lastID && cursor("ca-delivered") == lastID
	})
	run.quiet()
	// link_refused notices come in a lane of their own: each lane in order.
	refusals := func(refused bool) func(whNotice) bool {
		return func(n whNotice) bool { return (n.Kind == "link_refused") == refused }
	}
	for _, c := range []struct {
		path, secret string
		lane         func(whNotice) bool
		want         []want
	}{{"/all", secretAll, refusals(false), wantAll[:5]}, {"/all", secretAll, refusals(true), wantAll[5:]}, {"/ca", secretCA, refusals(false), wantCA}} {
		got := slices.DeleteFunc(rcv.notices(c.path), func(n whNotice) bool { return !c.lane(n) })
		if len(got) != len(c.want) {
			t.Fatalf("%s received %d notices %v, want %d", c.path, len(got), ids(got), len(c.want))
		}
		for i, n := range got {
			verifyNotice(t, c.secret, n)
			w := c.want[i]
			if n.Kind != w.kind || n.MessageID != w.msg || n.Tenant != w.tenant || n.Recipient != w.rcpt {
				t.Errorf("%s notice %d = %s %s %s %q, want %s %s %s %q", c.path, i, n.Kind, n.MessageID, n.Tenant, n.Recipient,
					w.kind, w.msg, w.tenant, w.rcpt)
			}
			if i > 0 && n.ID <= got[i-1].ID {
				t.Errorf("%s: notice %d has id %d after %d", c.path, i, n.ID, got[i-1].ID)
			}
			e, ok := byID[n.ID]
			if !ok {
				t.Errorf("%s: notice id %d is no event", c.path, n.ID)
				continue
			}
			at, _ := time.Parse(time.RFC3339, n.Time)
			if n.Kind != e.Kind || n.Actor != e.Actor || n.Detail != e.Detail || !at.Equal(e.Time) {
				t.Errorf("%s: notice %+v does not match event %+v", c.path, n, e)
			}
		}
	}
	got := slices.DeleteFunc(rcv.notices("/all"), refusals(true))
	refused := slices.DeleteFunc(rcv.notices("/all"), refusals(false))
	if got[0].Actor != "queue" || !strings.Contains(got[0].Detail, "250") || got[2].Actor != "api:helpdesk@192.0.2.9" ||
		got[4].Actor != "browser:192.0.2.50" || got[0].Count != 1 {
		t.Errorf("actors and details: %+v", got)
	}
	if r := refused[0]; r.Actor != "browser:192.0.2.50" || !strings.HasPrefix(r.Detail, "used") || r.Count != 1 {
		t.Errorf("link_refused notice: %+v", r)
	}

	// A receiver with another secret, or a changed body, would not verify.
	n := got[0]
	mac := hmac.New(sha256.New, []byte(secretCA))
	mac.Write([]byte(n.header.Get("X-Certgate-Timestamp") + "." + string(n.body)))
	if "sha256="+hex.EncodeToString(mac.Sum(nil)) == n.header.Get("X-Certgate-Signature") {
		t.Error("the notice verifies with another endpoint's secret")
	}
	if err := run.d.Stop(ctx); err != nil {
		t.Errorf("Stop: %v", err)
	}
}

// TestWebhooksRetryWithBackoff: a receiver that fails twice gets the same
// event three times, with growing pauses, before any later event.
func TestWebhooksRetryWithBackoff(t *testing.T) {
	const base = 40 * time.Millisecond
	st := whStore(t, "")
	msg := "068w3qk2v0yzj7a5c1m9rt4xc3"
	rids := whEnqueue(t, st, msg, "ca", store.StateQueued, []string{"a@empresa.example", "b@empresa.example", "c@empresa.example"})
	for _, rid := range rids {
		whAttempt(t, st, msg, rid, store.StateDelivered, 250, "2.0.0 ok")
	}
	log, err := st.EventsAfter(context.Background(), 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var delivered []int64
	for _, e := range log {
		if e.Kind == "delivered" {
			delivered = append(delivered, e.ID)
		}
	}
	first := delivered[0]
	clk := clock.NewFake(epoch)
	rcv := newWHReceiver(t, clk, func(n whNotice, seen int) int {
		if n.ID == first && seen <= 2 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	logs := &syncBuffer{}
	run := startWH(t, st, clk, []Endpoint{{Name: "crm", URL: rcv.srv.URL + "/hook?token=q-secret", Secret: []byte(secretAll),
		Events: []string{"delivered"}}}, Options{BackoffBase: base, BackoffMax: time.Second}, logs)

	run.runUntil("five notices", func() bool { return len(rcv.notices("")) >= 5 })
	run.quiet()
	got := rcv.notices("")
	want := []int64{first, first, first, delivered[1], delivered[2]}
	if !slices.Equal(ids(got), want) {
		t.Fatalf("received ids %v, want %v", ids(got), want)
	}
	for _, n := range got {
		verifyNotice(t, secretAll, n)
	}
	// Waits of base and 2*base, less at most a fifth for jitter; the
	// fake clock makes them exact.
	if d := got[1].at.Sub(got[0].at); d < base*4/5 || d > base {
		t.Errorf("first retry after %s, want %s to %s", d, base*4/5, base)
	}
	if d := got[2].at.Sub(got[1].at); d < 2*base*4/5 || d > 2*base {
		t.Errorf("second retry after %s, want %s to %s", d, 2*base*4/5, 2*base)
	}

	out := logs.String()
	if n := strings.Count(out, "webhook delivery failed"); n != 2 {
		t.Errorf("%d failure lines, want 2:\n%s", n, out)
	}
	for _, s := range []string{"attempt=1", "attempt=2", "status=500", "webhook=crm", fmt.Sprintf("event=%d", first)} {
		if !strings.Contains(out, s) {
			t.Errorf("log lacks %q:\n%s", s, out)
		}
	}
	for _, s := range []string{secretAll, "q-secret"} {
		if strings.Contains(out, s) {
			t.Errorf("log shows %q:\n%s", s, out)
		}
	}
}

// TestWebhooksBackoffGrowsToCap checks the schedule itself: doubling from
// the base, never above the cap, jittered downwards by at most a fifth.
func TestWebhooksBackoffGrowsToCap(t *testing.T) {
	d := New(nil, nil, Options{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	for n, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 8: 128 * time.Second,
		9: 256 * time.Second, 10: 5 * time.Minute, 20: 5 * time.Minute, 64: 5 * time.Minute, 1000: 5 * time.Minute} {
		for range 50 {
			if got := d.backoff(n); got > want || got < want*4/5 {
				t.Fatalf("backoff(%d) = %s, want within [%s, %s]", n, got, want*4/5, want)
			}
		}
	}
}

// TestWebhooksRestart stops a dispatcher while a POST is in flight and
// starts a new one on the same database: nothing is lost, and only the
// event in flight arrives twice.
func TestWebhooksRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "db")
	st := whStore(t, path)
	msg := "068w3qk2v0yzj7a5c1m9rt4xd4"
	var addrs []string
	for i := range 10 {
		addrs = append(addrs, fmt.Sprintf("u%d@empresa.example", i))
	}
	rids := whEnqueue(t, st, msg, "ca", store.StateQueued, addrs)
	for _, rid := range rids {
		whAttempt(t, st, msg, rid, store.StateDelivered, 250, "2.0.0 ok")
	}
	evs, err := st.EventsAfter(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	evs = evs[1:] // after "accepted"

	hold := evs[3].ID
	inFlight := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	clk := clock.NewFake(epoch)
	rcv := newWHReceiver(t, clk, func(n whNotice, seen int) int {
		if n.ID == hold && seen == 1 {
			once.Do(func() { close(inFlight) })
			<-release
		}
		return http.StatusOK
	})
	ep := Endpoint{Name: "crm", URL: rcv.srv.URL + "/hook", Secret: []byte(secretAll), Events: []string{"delivered"}}
	d1 := startWH(t, st, clk, []Endpoint{ep}, Options{}, nil).d
	select {
	case <-inFlight:
	case <-time.After(10 * time.Second):
		t.Fatal("the fourth event never arrived")
	}
	sctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	err = d1.Stop(sctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Stop with a POST held by the receiver = %v, want the deadline", err)
	}
	close(release)
	if err := d1.Stop(ctx); err != nil { // a second Stop waits for the cut POST's goroutine to end
		t.Fatal(err)
	}
	if c, err := st.Cursor(ctx, "webhook:crm"); err != nil || c != evs[2].ID {
		t.Errorf("cursor after the cut = %d, %v; want %d (the last event answered)", c, err, evs[2].ID)
	}

	// More mail while no dispatcher runs; then a new process on the file.
	msg2 := "068w3qk2v0yzj7a5c1m9rt4xe5"
	r2 := whEnqueue(t, st, msg2, "ca", store.StateQueued, []string{"v@empresa.example", "w@empresa.example"})
	whAttempt(t, st, msg2, r2[0], store.StateDelivered, 250, "2.0.0 ok")
	whAttempt(t, st, msg2, r2[1], store.StateBounced, 550, "5.1.1 no such user")
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st2 := whStore(t, path)
	run := startWH(t, st2, clk, []Endpoint{ep}, Options{}, nil)
	all, err := st2.EventsAfter(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var want []int64
	for _, e := range all {
		if e.Kind == "delivered" {
			want = append(want, e.ID)
			if e.ID == hold {
				want = append(want, e.ID) // cut short once, sent again
			}
		}
	}
	run.runUntil("every delivered event", func() bool { return len(rcv.notices("")) >= len(want) })
	run.quiet()
	if got := ids(rcv.notices("")); !slices.Equal(got, want) {
		t.Errorf("received %v, want %v", got, want)
	}
	run.runUntil("the cursor at the end of the log", func() bool {
		c, err := st2.Cursor(ctx, "webhook:crm")
		return err == nil && c == all[len(all)-1].ID
	})
}

// TestWebhooksStopWaitsForAnswer: a Stop with time to spare lets the POST
// in flight be answered and recorded, so a restart repeats nothing.
func TestWebhooksStopWaitsForAnswer(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "db")
	st := whStore(t, path)
	msg := "068w3qk2v0yzj7a5c1m9rt4xf6"
	rids := whEnqueue(t, st, msg, "ca", store.StateQueued, []string{"a@empresa.example", "b@empresa.example", "c@empresa.example"})
	for _, rid := range rids {
		whAttempt(t, st, msg, rid, store.StateDelivered, 250, "2.0.0 ok")
	}
	// The receiver holds the first POST until the test has called Stop.
	inFlight, answer := make(chan int64, 1), make(chan struct{})
	var once sync.Once
	clk := clock.NewFake(epoch)
	rcv := newWHReceiver(t, clk, func(n whNotice, seen int) int {
		once.Do(func() {
			inFlight <- n.ID
			<-answer
		})
		return http.StatusOK
	})
	ep := Endpoint{Name: "crm", URL: rcv.srv.URL + "/hook", Secret: []byte(secretAll), Events: []string{"delivered"}}
	d1 := startWH(t, st, clk, []Endpoint{ep}, Options{}, nil).d
	held := <-inFlight
	stopped := make(chan error, 1)
	go func() { stopped <- d1.Stop(ctx) }()
	<-d1.stopping.Done() // Stop has begun
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned (%v) while a POST was unanswered", err)
	default:
	}
	close(answer)
	if err := <-stopped; err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if got := ids(rcv.notices("")); len(got) != 1 || got[0] != held {
		t.Fatalf("received %v before stopping, want only %d", got, held)
	}
	if c, err := st.Cursor(ctx, "webhook:crm"); err != nil || c != held {
		t.Errorf("cursor after a graceful stop = %d, %v; want %d", c, err, held)
	}
	run := startWH(t, st, clk, []Endpoint{ep}, Options{}, nil)
	run.runUntil("three notices", func() bool { return len(rcv.notices("")) >= 3 })
	run.quiet()
	got := ids(rcv.notices(""))
	if len(got) != 3 || !slices.IsSorted(got) || got[0] == got[1] || got[1] == got[2] {
		t.Errorf("received %v, want three events once each, in order", got)
	}
}

// TestWebhooksReceiverDownAcrossRestart: a dispatcher waiting out a long
// backoff stops at once, and the event waits in the log for the next one.
func TestWebhooksReceiverDownAcrossRestart(t *testing.T) {
	ctx := context.Background()
	st := whStore(t, "")
	msg := "068w3qk2v0yzj7a5c1m9rt4xg7"
	rids := whEnqueue(t, st, msg, "ca", store.StateQueued, []string{"a@empresa.example"})
	whAttempt(t, st, msg, rids[0], store.StateBounced, 550, "5.1.1 no such user")
	var mu sync.Mutex
	down := true
	clk := clock.NewFake(epoch)
	rcv := newWHReceiver(t, clk, func(whNotice, int) int {
		mu.Lock()
		defer mu.Unlock()
		if down {
			return http.StatusServiceUnavailable
		}
		return http.StatusNoContent
	})
	ep := Endpoint{Name: "siem", URL: rcv.srv.URL + "/hook", Secret: []byte(secretAll), Events: []string{"bounced"}}
	run1 := startWH(t, st, clk, []Endpoint{ep}, Options{BackoffBase: time.Hour}, nil)
	run1.idle() // backing off for an hour that the fake clock never lets pass
	if n := len(rcv.notices("")); n != 1 {
		t.Fatalf("%d tries before the backoff, want 1", n)
	}
	d1 := run1.d
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := d1.Stop(sctx); err != nil {
		t.Fatalf("Stop during a backoff of an hour: %v", err)
	}
	if c, err := st.Cursor(ctx, "webhook:siem"); err != nil || c != 0 {
		t.Errorf("cursor after failures = %d, %v; want 0", c, err)
	}
	mu.Lock()
	down = false
	mu.Unlock()
	run2 := startWH(t, st, clk, []Endpoint{ep}, Options{}, nil)
	run2.runUntil("the second try", func() bool { return len(rcv.notices("")) == 2 })
	got := rcv.notices("")
	if got[0].ID != got[1].ID || got[1].Kind != "bounced" {
		t.Errorf("notices %+v", got)
	}
	// 204 is a 2xx: taken.
	run2.runUntil("the cursor to move", func() bool {
		c, _ := st.Cursor(ctx, "webhook:siem")
		return c == got[1].ID
	})
}

func TestEndpointsReadSecrets(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "crm.secret")
	if err := os.WriteFile(file, []byte(secretCA+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CERTGATE_TEST_WEBHOOK", " "+secretAll+" ")
	eps, err := Endpoints([]config.Webhook{
		{Name: "crm", URL: "https://crm.example/h", SecretFile: file, Events: []string{"delivered", "bounced"}, Tenants: []string{"ca"}, Timeout: config.Duration(3 * time.Second)},
		{Name: "siem", URL: "http://127.0.0.1:9000/h", SecretEnv: "CERTGATE_TEST_WEBHOOK", Events: []string{"link_refused"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(eps) != 2 || string(eps[0].Secret) != secretCA || string(eps[1].Secret) != secretAll ||
		eps[0].Timeout != 3*time.Second || !slices.Equal(eps[0].Tenants, []string{"ca"}) || eps[1].URL != "http://127.0.0.1:9000/h" {
		t.Errorf("endpoints = %+v", eps)
	}

	// Checked when the file was loaded, but unset since.
	_, err = Endpoints([]config.Webhook{{Name: "x", URL: "https://crm.example/h", SecretEnv: "CERTGATE_TEST_UNSET", Events: []string{"delivered"}}})
	if err == nil || !strings.Contains(err.Error(), "CERTGATE_TEST_UNSET") {
		t.Errorf("an unset variable: %v", err)
	}
}
