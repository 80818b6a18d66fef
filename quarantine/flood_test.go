package quarantine

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certgate/certgate/clock"
	"github.com/certgate/certgate/metrics"
	"github.com/certgate/certgate/store"
	"github.com/certgate/certgate/store/sqlite"
)

// Flood is what a flood of refused presses on one link left behind.
type Flood struct {
	Posts, Limited int   // presses sent, and those answered 429
	Growth         int64 // bytes the database file grew, the WAL checkpointed away
	MaxWAL         int64 // the largest the WAL file was seen (it is reused, not grown)
	Events         int   // link_refused events on the message
	Counted        int64 // refusals counted on the link
}

// RefusalFlood sends n refused presses (a forged form, from a browser) to
// one enabled link of a real gate over HTTP, from workers concurrent
// clients, and measures what they leave in a real SQLite database. opts
// tunes the gate (its clock is a fake standing still, so the limits never
// refill). bench/hostile.sh quotes it through BenchmarkGateRefusalFlood.
func RefusalFlood(t testing.TB, n, workers int, opts GateOptions) Flood {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "certgate.db")
	st, err := sqlite.Open(ctx, path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	token, hash := NewToken()
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	m := store.Message{ID: "06h0flood00000000000000001", Tenant: "issuer", Class: "bulk", ReceivedAt: now}
	if _, err := st.Enqueue(ctx, m, [][]byte{[]byte("x")}, []store.NewRecipient{{Address: "juan@empresa.example", TrackingID: "flood",
		State: store.StateQueued, NextAttempt: now, Links: []store.NewLink{{TokenHash: hash, URL: issuerURL, State: store.LinkEnabled, MaxUses: 3}}}}); err != nil {
		t.Fatal(err)
	}
	// Closing checkpoints and removes the WAL: sizes compare database files.
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	before := fileSize(path)
	if st, err = sqlite.Open(ctx, path, sqlite.Options{}); err != nil {
		t.Fatal(err)
	}
	opts.Clock = clock.NewFake(now)
	g := NewGate(st, opts, metrics.New(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	mux := http.NewServeMux()
	g.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	body := url.Values{"n": {"forged"}}.Encode()

	f := Flood{Posts: n}
	var limited atomic.Int64
	var maxWAL atomic.Int64
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := next.Add(1); i <= int64(n); i = next.Add(1) {
				req, _ := http.NewRequest("POST", srv.URL+"/d/"+token, strings.NewReader(body))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				req.Header.Set("User-Agent", chromeUA)
				resp, err := client.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				switch resp.StatusCode {
				case http.StatusTooManyRequests:
					limited.Add(1)
				case http.StatusOK:
				default:
					t.Errorf("a refused press answered %s", resp.Status)
					return
				}
				if i%500 == 0 {
					if w := fileSize(path + "-wal"); w > maxWAL.Load() {
						maxWAL.Store(w)
					}
				}
			}
		})
	}
	wg.Wait()
	f.Limited, f.MaxWAL = int(limited.Load()), maxWAL.Load()
	v, err := st.Message(ctx, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range v.Events {
		if e.Kind == "link_refused" {
			f.Events++
		}
	}
	f.Counted = v.Links[0].Refusals.Count
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	f.Growth = fileSize(path) - before
	return f
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// noLimits lets every press reach the store: the worst case for the disk.
var noLimits = GateOptions{PerLink: RateLimit{Burst: 1 << 40, Every: time.Nanosecond},
	PerClient: RateLimit{Burst: 1 << 40, Every: time.Nanosecond}}

// TestGateRefusalFloodStaysSmall: 10,000 refused presses on one link, even
// with the limits lifted so that every one reaches the store, grow the
// database by less than 100 KB and leave one link_refused event (the
// first); they are counted on the link. (Each was a row and a webhook:
// the database grew 2 MB, with a WAL of up to 59 MB.)
func TestGateRefusalFloodStaysSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 HTTP requests on a real database")
	}
	const n = 10000
	for _, c := range []struct {
		name string
		n    int
		opts GateOptions
	}{{"limits lifted", n, noLimits}, {"default limits", n, GateOptions{}}} {
		if raceEnabled && c.name == "limits lifted" {
			c.n = n / 5 // every press a commit: slow under the race detector
		}
		t.Run(c.name, func(t *testing.T) {
			f := RefusalFlood(t, c.n, 16, c.opts)
			t.Logf("%d refused presses (%d answered 429): database grew %d bytes, WAL at most %d bytes; %d link_refused events, %d counted",
				f.Posts, f.Limited, f.Growth, f.MaxWAL, f.Events, f.Counted)
			if limit := int64(100<<10) * int64(c.n) / n; f.Growth >= limit {
				t.Errorf("the database grew %d bytes, want under %d (100 KB per 10,000)", f.Growth, limit)
			}
			if f.Events != 1 {
				t.Errorf("%d link_refused events, want 1", f.Events)
			}
			if f.Counted != int64(c.n-f.Limited) {
				t.Errorf("%d refusals counted on the link, want the %d that reached it", f.Counted, c.n-f.Limited)
			}
		})
	}
}

// BenchmarkGateRefusalFlood reports the database growth per 10,000
// refused presses that all reach the store (the limits lifted), for
// bench/hostile.sh: go test -run '^$' -bench GateRefusalFlood -benchtime 10000x ./quarantine
func BenchmarkGateRefusalFlood(b *testing.B) {
	f := RefusalFlood(b, b.N, 16, noLimits)
	b.ReportMetric(float64(f.Growth)*10000/float64(b.N), "db-bytes/10k-posts")
	b.ReportMetric(float64(f.MaxWAL), "max-wal-bytes")
	b.ReportMetric(float64(f.Events), "events")
}

// countingStore counts what the gate asks of the store.
type countingStore struct {
	GateStore
	lookups, refusals atomic.Int64
}

func (c *countingStore) LinkByToken(ctx context.Context, hash [32]byte) (*store.Link, error) {
	c.lookups.Add(1)
	return c.GateStore.LinkByToken(ctx, hash)
}

func (c *countingStore) RefuseLink(ctx context.Context, id int64, r store.LinkRefusal, actor string) (bool, error) {
	c.refusals.Add(1)
	return c.GateStore.RefuseLink(ctx, id, r, actor)
}

// TestGateLimitsPresses: presses over a link's limit, or a client's, get
// 429 with Retry-After without the store being read; pages (GET, HEAD)
// are never limited; the limits refill with time; another person's press
// on another link goes through during the flood.
func TestGateLimitsPresses(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	tokens := make([]string, 3)
	var rs []store.NewRecipient
	for i := range tokens {
		var hash [32]byte
		tokens[i], hash = NewToken()
		rs = append(rs, store.NewRecipient{Address: fmt.Sprintf("p%d@empresa.example", i), TrackingID: fmt.Sprint("t", i), State: store.StateQueued,
			NextAttempt: now, Links: []store.NewLink{{TokenHash: hash, URL: issuerURL, State: store.LinkEnabled, MaxUses: 3}}})
	}
	if _, err := st.Enqueue(ctx, store.Message{ID: "06h0limits0000000000000001", Tenant: "issuer", Class: "bulk", ReceivedAt: now},
		[][]byte{[]byte("x")}, rs); err != nil {
		t.Fatal(err)
	}
	cs := &countingStore{GateStore: st}
	clk := clock.NewFake(now)
	g := NewGate(cs, GateOptions{Clock: clk, PerLink: RateLimit{Burst: 3, Every: time.Minute}, PerClient: RateLimit{Burst: 5, Every: 10 * time.Second}},
		metrics.New(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	mux := http.NewServeMux()
	g.Register(mux)
	do := func(method, token, from string, form url.Values) *httptest.ResponseRecorder {
		t.Helper()
		r := httptest.NewRequest(method, "/d/"+token, strings.NewReader(form.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.Header.Set("User-Agent", chromeUA)
		r.RemoteAddr = from
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, r)
		return w
	}
	forged := url.Values{"n": {"forged"}}

	// A link's limit: three presses from anywhere, then 429.
	for i, from := range []string{"192.0.2.1:1", "192.0.2.2:1", "192.0.2.3:1"} {
		if w := do("POST", tokens[0], from, forged); w.Code != http.StatusOK {
			t.Fatalf("press %d: %d", i, w.Code)
		}
	}
	lookups, refusals := cs.lookups.Load(), cs.refusals.Load()
	w := do("POST", tokens[0], "192.0.2.4:1", forged)
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "60" {
		t.Fatalf("fourth press on the link: %d, Retry-After %q; want 429, 60", w.Code, w.Header().Get("Retry-After"))
	}
	if cs.lookups.Load() != lookups || cs.refusals.Load() != refusals {
		t.Error("a limited press read or wrote the store")
	}
	for _, m := range []string{"GET", "HEAD"} {
		if w := do(m, tokens[0], "192.0.2.4:1", nil); w.Code != http.StatusOK {
			t.Errorf("%s while presses are limited: %d", m, w.Code)
		}
	}
	// Another person, on another link, from elsewhere, presses as usual.
	_, page := pageNonce(t, do("GET", tokens[1], "203.0.113.9:1", nil))
	clk.Advance(3 * time.Second)
	if w := do("POST", tokens[1], "203.0.113.9:1", url.Values{"n": {page}}); w.Code != http.StatusSeeOther {
		t.Fatalf("a person's press on another link during the flood: %d", w.Code)
	}
	// A minute refills one press on the flooded link (3s of it passed).
	clk.Advance(57 * time.Second)
	if w := do("POST", tokens[0], "192.0.2.5:1", forged); w.Code != http.StatusOK {
		t.Fatalf("a press a minute later: %d", w.Code)
	}
	if w := do("POST", tokens[0], "192.0.2.5:1", forged); w.Code != http.StatusTooManyRequests {
		t.Fatalf("the press after that: %d", w.Code)
	}

	// A client's limit, over links and malformed tokens alike, counts an
	// IPv6 client by its /64.
	clk.Advance(time.Hour)
	presses := []struct{ token, from string }{
		{tokens[2], "[2001:db8:1:2::1]:1"}, {tokens[2], "[2001:db8:1:2::2]:1"}, {"short", "[2001:db8:1:2::3]:1"},
		{"short", "[2001:db8:1:2:ffff::4]:1"}, {tokens[1], "[2001:db8:1:2::5]:1"},
	}
	for i, p := range presses {
		if w := do("POST", p.token, p.from, forged); w.Code == http.StatusTooManyRequests {
			t.Fatalf("press %d of the client's five: 429", i)
		}
	}
	if w := do("POST", tokens[1], "[2001:db8:1:2:abcd::6]:1", forged); w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "10" {
		t.Fatalf("the /64's sixth press: %d, Retry-After %q; want 429, 10", w.Code, w.Header().Get("Retry-After"))
	}
	if w := do("POST", tokens[1], "[2001:db8:1:3::1]:1", forged); w.Code != http.StatusOK {
		t.Fatalf("the next /64: %d", w.Code)
	}
}

func pageNonce(t *testing.T, w *httptest.ResponseRecorder) (int, string) {
	t.Helper()
	m := nonceField.FindStringSubmatch(w.Body.String())
	if m == nil {
		t.Fatalf("no button on the page (%d)", w.Code)
	}
	return w.Code, m[1]
}

// TestKeyLimiterStaysBounded: a flood of distinct keys never holds more
// than two generations of max keys, and a quiet refill time empties it.
func TestKeyLimiterStaysBounded(t *testing.T) {
	l := newKeyLimiter[netip.Prefix](RateLimit{Burst: 2, Every: time.Second}, 100)
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	for i := range 100000 {
		k := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
		tat, wait := l.check(k, now)
		if wait != 0 {
			t.Fatalf("a new key waits %s", wait)
		}
		l.spend(k, tat, now)
		if n := len(l.cur) + len(l.old); n > 200 {
			t.Fatalf("%d keys remembered, want at most 200", n)
		}
	}
	// A key pressed just now is still limited...
	k := netip.MustParsePrefix("192.0.2.1/32")
	for range 2 {
		tat, _ := l.check(k, now)
		l.spend(k, tat, now)
	}
	if _, wait := l.check(k, now); wait != time.Second {
		t.Fatalf("after its burst a key waits %s, want 1s", wait)
	}
	// ...and after two refill times nothing is left.
	for range 2 {
		now = now.Add(2 * time.Second)
		tat, _ := l.check(k, now)
		l.spend(k, tat, now)
	}
	if n := len(l.cur) + len(l.old); n > 2 {
		t.Errorf("%d keys remembered after a quiet while, want the one in use", n)
	}
}
