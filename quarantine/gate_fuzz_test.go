package quarantine

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/certgate/certgate/clock"
	"github.com/certgate/certgate/metrics"
	"github.com/certgate/certgate/store"
)

// linkStore is the part of the store the gate uses, for one link, without
// memory between calls: every fuzz input sees the same state.
type linkStore struct {
	store.Store
	link store.Link
}

func (s *linkStore) LinkByToken(_ context.Context, hash [32]byte) (*store.Link, error) {
	if hash != s.link.TokenHash {
		return nil, store.ErrNotFound
	}
	l := s.link
	return &l, nil
}

func (s *linkStore) UseLink(_ context.Context, id int64, now time.Time, _, _ string) (store.LinkUse, error) {
	l := s.link
	if id != l.ID || l.State != store.LinkEnabled || l.Uses >= l.MaxUses || !l.ExpiresAt.IsZero() && !now.Before(l.ExpiresAt) {
		return store.LinkUse{Link: l, Why: string(l.State)}, nil
	}
	l.Uses++
	return store.LinkUse{Link: l, OK: true}, nil
}

func (s *linkStore) RefuseLink(context.Context, int64, store.LinkRefusal, string) (bool, error) {
	return false, nil
}

const fuzzToken = "q7Zb1xKe9WmR4sVt2YpLc8" // the shape NewToken makes

var fuzzGateKey = []byte("0123456789abcdef0123456789abcdef")

// fuzzNonce is the form nonce the gate shows for token at issued.
func fuzzNonce(token string, issued time.Time) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(issued.UnixMilli()))
	mac := hmac.New(sha256.New, fuzzGateKey)
	mac.Write(b[:])
	mac.Write([]byte(token))
	return base64.RawURLEncoding.EncodeToString(append(b[:], mac.Sum(nil)[:16]...))
}

// FuzzGate sends the gate any request a browser, a scanner or an attacker
// could: method, token, user agent, Accept-Language, client address and
// form body (or a genuine nonce of any age), for a link in any state. It
// forwards (303 to the issuer's URL, and nowhere else) only a POST to the
// link's token, of an enabled unexpired link, from a client that is not a
// scanner, carrying a nonce this gate signed for that token between 2
// seconds and an hour ago. Its pages are HTML in a language it has, with
// its security headers, and never echo markup from the request.
func FuzzGate(f *testing.F) {
	f.Add(uint8(0x01), fuzzToken, chromeUA, "es-AR,es;q=0.9,en;q=0.5", "", "203.0.113.7:4711", int64(5000))
	f.Add(uint8(0x07), fuzzToken, chromeUA, "fr", "", "203.0.113.7:4711", int64(5000))
	f.Add(uint8(0x07), fuzzToken, headlessUA, "pt-BR", "", "203.0.113.7:4711", int64(5000))
	f.Add(uint8(0x07), fuzzToken, chromeUA, "de;q=1, en;q=0", "", "198.51.100.9:1", int64(30))
	f.Add(uint8(0x06), fuzzToken, chromeUA, "", "n="+fuzzNonce(fuzzToken, time.Unix(0, 0)), "[2001:db8::1]:443", int64(0))
	f.Add(uint8(0x02), "<script>alert(1)</script>", "<b>x</b>", "<i>", "n=%3Cscript%3E", "bogus", int64(-1))
	f.Add(uint8(0x0b), fuzzToken, chromeUA, "q=NaN,es;q=inf", "n=a;n=b&n=c", "127.0.0.1:80", int64(3600001))

	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	const issuer = "https://descargas.ca.example/certificado/descargar?pedido=88412&clave=Zk3p9QwX"
	st := &linkStore{}
	g := NewGate(st, GateOptions{
		Tenants: map[string]TenantPage{"issuer": {DisplayName: "Autoridad <Certificante>", SupportEmail: "mesa@ca.example",
			SupportPhone: "+54 11 5555 0000", SupportURL: "https://ca.example/ayuda"}},
		ScannerNets:   []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")},
		Key:           fuzzGateKey,
		Clock:         clock.NewFake(now),
		MinHumanDelay: 2 * time.Second,
		// Every input is judged alone: the limits, which remember
		// presses across requests, have their own test.
		PerLink:   RateLimit{Burst: 1 << 40, Every: time.Nanosecond},
		PerClient: RateLimit{Burst: 1 << 40, Every: time.Nanosecond},
	}, metrics.New(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	mux := http.NewServeMux()
	g.Register(mux)
	states := []store.LinkState{store.LinkPending, store.LinkEnabled, store.LinkUsed, store.LinkExpired, store.LinkRevoked}

	f.Fuzz(func(t *testing.T, sel uint8, token, ua, lang, form, peer string, ageMillis int64) {
		method := [...]string{"GET", "HEAD", "POST", "POST"}[sel&3]
		if sel&3 == 3 { // a genuine nonce, shown ageMillis ago
			form = "n=" + fuzzNonce(token, now.Add(-time.Duration(ageMillis)*time.Millisecond))
		}
		st.link = store.Link{ID: 7, TokenHash: HashToken(fuzzToken), MessageID: "06h0msg0000000000000000001", RecipientID: 3,
			Tenant: "issuer", URL: issuer, State: states[int(sel>>2&7)%len(states)], MaxUses: 3}
		if sel&0x40 != 0 {
			st.link.ExpiresAt = now // expired by time, whatever its state
		}
		if sel&0x80 != 0 {
			st.link.Uses = 3
		}
		r := &http.Request{Method: method, URL: &url.URL{Path: "/d/" + token}, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: http.Header{}, Host: "gate.ca.example", RemoteAddr: peer, Body: http.NoBody}
		r = r.WithContext(context.Background())
		r.Header.Set("User-Agent", ua)
		r.Header.Set("Accept-Language", lang)
		if method == "POST" {
			r.Body = io.NopCloser(strings.NewReader(form))
			r.ContentLength = int64(len(form))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, r)
		res, body := w.Result(), w.Body.String()

		if res.StatusCode == http.StatusSeeOther {
			if loc := res.Header.Get("Location"); loc != issuer {
				t.Fatalf("forwarded to %q", loc)
			}
			if method != "POST" || token != fuzzToken || st.link.State != store.LinkEnabled || !st.link.ExpiresAt.IsZero() || st.link.Uses >= st.link.MaxUses {
				t.Fatalf("%s %q forwarded a %s link (uses %d, expires %v)", method, token, st.link.State, st.link.Uses, st.link.ExpiresAt)
			}
			if ua == "" || g.isScanner(r) {
				t.Fatalf("forwarded a scanner: %q from %q", ua, peer)
			}
			vals, _ := url.ParseQuery(form)
			issued, ok := genuineNonce(vals.Get("n"), fuzzToken)
			if !ok {
				t.Fatalf("forwarded on a nonce the gate never signed: %q", form)
			}
			if age := now.Sub(issued); age < 2*time.Second || age > time.Hour {
				t.Fatalf("forwarded on a nonce shown %v ago", age)
			}
			return
		}
		switch res.StatusCode {
		case http.StatusOK, http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusMovedPermanently, http.StatusTemporaryRedirect,
			http.StatusPermanentRedirect, http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("status %d", res.StatusCode)
		}
		if res.StatusCode != http.StatusOK && res.StatusCode != http.StatusNotFound || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
			return // the mux's own answers (no route, redirects to a clean path)
		}
		if method == "HEAD" && body != "" {
			t.Fatal("a body for HEAD")
		}
		if _, ok := texts[res.Header.Get("Content-Language")]; !ok {
			t.Fatalf("Content-Language %q", res.Header.Get("Content-Language"))
		}
		for _, h := range []string{"Content-Security-Policy", "X-Content-Type-Options", "Referrer-Policy"} {
			if res.Header.Get(h) == "" {
				t.Fatalf("no %s header", h)
			}
		}
		if res.Header.Get("Cache-Control") != "no-store" {
			t.Fatalf("Cache-Control %q", res.Header.Get("Cache-Control"))
		}
		for _, in := range []string{token, ua, lang, form, peer} {
			if strings.ContainsAny(in, "<>") && len(in) > 2 && strings.Contains(body, in) {
				t.Fatalf("the page echoes %q", in)
			}
		}
		if strings.Contains(strings.ToLower(body), "<script") {
			t.Fatal("a script on the page")
		}
	})
}

// genuineNonce is checkNonce written again from the format: 8 octets of
// Unix milliseconds and 16 of HMAC-SHA256 over them and the token.
func genuineNonce(n, token string) (time.Time, bool) {
	raw, err := base64.RawURLEncoding.DecodeString(n)
	if err != nil || len(raw) != 24 {
		return time.Time{}, false
	}
	ms := int64(binary.BigEndian.Uint64(raw[:8]))
	if fuzzNonce(token, time.UnixMilli(ms)) != base64.RawURLEncoding.EncodeToString(raw) {
		return time.Time{}, false
	}
	return time.UnixMilli(ms), true
}
