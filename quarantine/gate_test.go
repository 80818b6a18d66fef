package quarantine

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/certgate/certgate/clock"
	"github.com/certgate/certgate/metrics"
	"github.com/certgate/certgate/store"
	"github.com/certgate/certgate/store/sqlite"
)

const (
	chromeUA   = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
	headlessUA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0 Safari/537.36"
	issuerURL  = "https://descargas.ca.example/certificado/descargar?pedido=88412&clave=Zk3p9QwX"
)

type gateEnv struct {
	t     *testing.T
	st    store.Store
	srv   *httptest.Server
	clock *clock.Fake
	token string
	msgID string
}

// newGateEnv serves one link in state; tune, if given, changes the gate's
// options.
func newGateEnv(t *testing.T, state store.LinkState, maxUses int, expires time.Time, tune ...func(*GateOptions)) *gateEnv {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	token, hash := NewToken()
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	m := store.Message{ID: "06h0msg0000000000000000001", Tenant: "issuer", MailFrom: "certificados@ca.example", Class: "bulk", ReceivedAt: now}
	_, err = st.Enqueue(context.Background(), m, [][]byte{[]byte("x")}, []store.NewRecipient{{
		Address: "juan@empresa.example", TrackingID: "trk1", State: store.StateQueued, NextAttempt: now,
		Links: []store.NewLink{{TokenHash: hash, URL: issuerURL, State: state, MaxUses: maxUses, ExpiresAt: expires}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	c := clock.NewFake(now)
	opts := GateOptions{Clock: c, MinHumanDelay: 2 * time.Second, Tenants: map[string]TenantPage{"issuer": {
		DisplayName: "Autoridad Certificante Ejemplo", SupportEmail: "mesadeayuda@ca.example", SupportPhone: "+54 11 5555 0000"}}}
	for _, f := range tune {
		f(&opts)
	}
	g := NewGate(st, opts, metrics.New(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	mux := http.NewServeMux()
	g.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &gateEnv{t: t, st: st, srv: srv, clock: c, token: token, msgID: m.ID}
}

var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func (e *gateEnv) do(method, ua, lang string, form url.Values) (*http.Response, string) {
	e.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, e.srv.URL+"/d/"+e.token, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.Header.Set("User-Agent", ua)
	if lang != "" {
		req.Header.Set("Accept-Language", lang)
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

var nonceField = regexp.MustCompile(`name="n" value="([^"]+)"`)

// press shows the page as a browser would and presses its button after
// wait; it returns the POST's response.
func (e *gateEnv) press(ua string, wait time.Duration) (*http.Response, string) {
	e.t.Helper()
	_, page := e.do("GET", ua, "es", nil)
	m := nonceField.FindStringSubmatch(page)
	if m == nil {
		e.t.Fatalf("no button on the page:\n%s", page)
	}
	e.clock.Advance(wait)
	return e.do("POST", ua, "es", url.Values{"n": {m[1]}})
}

func (e *gateEnv) link() *store.Link {
	e.t.Helper()
	l, err := e.st.LinkByToken(context.Background(), HashToken(e.token))
	if err != nil {
		e.t.Fatal(err)
	}
	return l
}

func TestGatePendingExplainsAndNeverChanges(t *testing.T) {
	e := newGateEnv(t, store.LinkPending, 3, time.Time{})
	for _, ua := range []string{chromeUA, headlessUA, "Mimecast-URL-Protect", ""} {
		for _, method := range []string{"GET", "HEAD"} {
			resp, _ := e.do(method, ua, "", nil)
			if resp.StatusCode != 200 {
				t.Fatalf("%s by %q: %d", method, ua, resp.StatusCode)
			}
		}
	}
	_, es := e.do("GET", chromeUA, "es-AR,es;q=0.9,en;q=0.5", nil)
	for _, want := range []string{`lang="es"`, "Este enlace aún no está activo", "No es correo no deseado", "mesadeayuda@ca.example", "Autoridad Certificante Ejemplo"} {
		if !strings.Contains(es, want) {
			t.Errorf("Spanish pending page lacks %q", want)
		}
	}
	_, pt := e.do("GET", chromeUA, "pt-BR", nil)
	if !strings.Contains(pt, "Este link ainda não está ativo") {
		t.Error("Portuguese page missing")
	}
	_, fr := e.do("GET", chromeUA, "fr-FR,fr;q=0.8", nil)
	if !strings.Contains(fr, "Ce lien n’est pas encore actif") {
		t.Error("French page missing")
	}
	if strings.Contains(es, `<form`) {
		t.Error("a pending link's page offers the button")
	}
	// A POST on a pending link spends nothing.
	e.do("POST", chromeUA, "", url.Values{"n": {"x"}})
	if l := e.link(); l.State != store.LinkPending || l.Uses != 0 {
		t.Fatalf("after GETs, HEADs and a POST: %s with %d uses", l.State, l.Uses)
	}
}

// Scanners go first, as they do in real mailboxes; the person still gets
// the certificate.
func TestGateScannersCannotUseUpTheLink(t *testing.T) {
	e := newGateEnv(t, store.LinkEnabled, 3, time.Time{})
	// A scanner that says what it is: refused, whatever it waits.
	if resp, _ := e.press(headlessUA, 5*time.Second); resp.StatusCode == http.StatusSeeOther {
		t.Fatal("a headless browser was forwarded")
	}
	// A scanner posing as Chrome that renders and submits at once.
	if resp, _ := e.press(chromeUA, 100*time.Millisecond); resp.StatusCode == http.StatusSeeOther {
		t.Fatal("an instant form submission was forwarded")
	}
	// A forged or replayed form.
	if resp, _ := e.do("POST", chromeUA, "", url.Values{"n": {"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}); resp.StatusCode == http.StatusSeeOther {
		t.Fatal("a forged form was forwarded")
	}
	if l := e.link(); l.Uses != 0 {
		t.Fatalf("refused presses spent %d uses", l.Uses)
	}
	// A patient scanner that waits like a person costs one use of three.
	if resp, _ := e.press(chromeUA, 3*time.Second); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("patient press: %d", resp.StatusCode)
	}
	// The person.
	resp, _ := e.press(chromeUA, 4*time.Second)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != issuerURL {
		t.Fatalf("the person got %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	// The events say who did what.
	v, err := e.st.Message(context.Background(), e.msgID)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, ev := range v.Events {
		if strings.HasPrefix(ev.Kind, "link_") {
			kinds = append(kinds, ev.Kind+"/"+strings.SplitN(ev.Actor, ":", 2)[0])
		}
	}
	// The first refusal is in the trail; the others within the hour are
	// counted on the link, with the latest few.
	want := "link_refused/scanner link_used/browser link_used/browser"
	if strings.Join(kinds, " ") != want {
		t.Fatalf("audit trail %q, want %q", strings.Join(kinds, " "), want)
	}
	rf := e.link().Refusals
	var reasons []string
	for _, r := range rf.Recent {
		reasons = append(reasons, r.Reason)
		if r.Client != "127.0.0.1" || r.UserAgent == "" {
			t.Errorf("refusal kept as %+v", r)
		}
	}
	if rf.Count != 3 || strings.Join(reasons, " ") != "scanner too_fast no_form" {
		t.Fatalf("refusals counted on the link: %d, %v; want 3: scanner too_fast no_form", rf.Count, reasons)
	}
	// The third use spends the budget; then the page says so.
	e.press(chromeUA, 3*time.Second)
	if l := e.link(); l.State != store.LinkUsed || l.Uses != 3 {
		t.Fatalf("after three uses: %s, %d", l.State, l.Uses)
	}
	_, page := e.do("GET", chromeUA, "en", nil)
	if !strings.Contains(page, "This link has been used") || strings.Contains(page, "<form") {
		t.Fatalf("used page:\n%s", page)
	}
}

func TestGateExpiredInvalidAndRevoked(t *testing.T) {
	e := newGateEnv(t, store.LinkEnabled, 0, time.Date(2026, 11, 23, 11, 0, 0, 0, time.UTC))
	e.clock.Advance(2 * time.Hour)
	if _, page := e.do("GET", chromeUA, "en", nil); !strings.Contains(page, "This link has expired") {
		t.Fatalf("expired page:\n%s", page)
	}
	e.token = "AAAAAAAAAAAAAAAAAAAAAA"
	if resp, page := e.do("GET", chromeUA, "en", nil); resp.StatusCode != 404 || !strings.Contains(page, "This link is not valid") {
		t.Fatalf("unknown token: %d", resp.StatusCode)
	}
	r := newGateEnv(t, store.LinkEnabled, 0, time.Time{})
	if n, err := r.st.SetLinkState(context.Background(), r.msgID, 0, nil, store.LinkRevoked, "api:helpdesk", "customer asked"); err != nil || n != 1 {
		t.Fatalf("revoke: %d, %v", n, err)
	}
	if _, page := r.do("GET", chromeUA, "es", nil); strings.Contains(page, "<form") || !strings.Contains(page, "Este enlace fue retirado") {
		t.Fatalf("revoked link's page:\n%s", page)
	}
	if resp, page := r.do("POST", chromeUA, "es", url.Values{"n": {"x"}}); resp.StatusCode == http.StatusSeeOther || !strings.Contains(page, "Este enlace fue retirado") {
		t.Fatalf("POST on a revoked link: %d", resp.StatusCode)
	}
	if _, page := r.do("GET", chromeUA, "es", nil); !strings.Contains(page, `href="tel:&#43;541155550000"`) {
		t.Errorf("phone link missing:\n%s", page)
	}
}

// gate.min_human_delay: 0s turns the timing check off, as documented:
// a press at once is counted (scanner marks and the use budget remain).
func TestGateZeroHumanDelayKept(t *testing.T) {
	e := newGateEnv(t, store.LinkEnabled, 3, time.Time{}, func(o *GateOptions) { o.MinHumanDelay = 0 })
	if resp, _ := e.press(chromeUA, 0); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("a press at once with no minimum delay: %d", resp.StatusCode)
	}
	if resp, _ := e.press(headlessUA, 0); resp.StatusCode == http.StatusSeeOther {
		t.Fatal("a headless browser was forwarded")
	}
}

func TestPickLanguage(t *testing.T) {
	for in, want := range map[string]string{"": "en", "es": "es", "pt-BR,pt;q=0.9": "pt", "de-DE,fr;q=0.5": "fr",
		"en;q=0.2,es;q=0.8": "es", "xx": "en", "fr;q=0": "en", "es;q=abc,pt": "pt"} {
		if got := pickLanguage(in); got != want {
			t.Errorf("pickLanguage(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestGateScannerMarksSparePhones(t *testing.T) {
	g := NewGate(nil, GateOptions{}, metrics.New(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	for ua, scanner := range map[string]bool{
		"Mozilla/5.0 (Linux; Android 12; CUBOT_X50) AppleWebKit/537.36 Chrome/120.0 Mobile Safari/537.36": false,
		chromeUA: false,
		"Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)":  true,
		"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)": true,
		headlessUA:               true,
		"python-requests/2.31.0": true,
		"":                       true,
	} {
		r := httptest.NewRequest("POST", "/d/x", nil)
		r.Header.Set("User-Agent", ua)
		if got := g.isScanner(r); got != scanner {
			t.Errorf("isScanner(%q) = %v", ua, got)
		}
	}
}

// HTTP libraries and command-line tools are scanners, as documented: no
// person presses the button with them. Browsers on every platform are not.
func TestGateHTTPLibrariesAreScanners(t *testing.T) {
	g := NewGate(nil, GateOptions{}, metrics.New(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	for _, ua := range []string{
		"Python-urllib/3.12", "python-urllib3/2.2.1", "python-httpx/0.27.0", "Python/3.11 aiohttp/3.9.1", "python-requests/2.31.0",
		"Scrapy/2.11.0 (+https://scrapy.org)", "Go-http-client/2.0", "go-resty/2.12.0 (https://github.com/go-resty/resty)",
		"curl/8.5.0", "Wget/1.21.4", "HTTPie/3.2.2", "libwww-perl/6.72", "http.rb/5.1.1", "Ruby", "Faraday v2.9.0",
		"Java/17.0.9", "Apache-HttpClient/4.5.14 (Java/17.0.9)", "Jakarta Commons-HttpClient/3.1", "okhttp/4.12.0",
		"axios/1.6.7", "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)", "undici", "got (https://github.com/sindresorhus/got)",
		"GuzzleHttp/7", "reqwest/0.11", "Dart/3.3 (dart:io)", "Mozilla/5.0 (Windows NT; Windows NT 10.0; en-US) WindowsPowerShell/5.1.22621.2506",
		"Microsoft WinHTTP", "PostmanRuntime/7.36.3", "insomnia/8.6.1",
	} {
		r := httptest.NewRequest("POST", "/d/x", nil)
		r.Header.Set("User-Agent", ua)
		if !g.isScanner(r) {
			t.Errorf("%q is treated as a browser", ua)
		}
	}
	for _, ua := range []string{
		chromeUA,
		"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_3) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.3 Safari/605.1.15",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 17_3 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.3 Mobile/15E148 Safari/604.1",
		"Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:123.0) Gecko/20100101 Firefox/123.0",
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/121.0.0.0 Safari/537.36 Edg/121.0.2277.128",
		"Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36",
		"Mozilla/5.0 (Linux; Android 13; Redmi Note 12) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/121.0.6167.164 Mobile Safari/537.36",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 17_3 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/450.0]",
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:109.0) Gecko/20100101 Thunderbird/115.7.0",
	} {
		r := httptest.NewRequest("POST", "/d/x", nil)
		r.Header.Set("User-Agent", ua)
		if g.isScanner(r) {
			t.Errorf("the browser %q is treated as a scanner", ua)
		}
	}
}

func TestGatePendingPastItsTimeSaysExpired(t *testing.T) {
	e := newGateEnv(t, store.LinkPending, 3, time.Date(2026, 11, 23, 11, 0, 0, 0, time.UTC))
	e.clock.Advance(2 * time.Hour)
	if _, page := e.do("GET", chromeUA, "en", nil); !strings.Contains(page, "This link has expired") {
		t.Fatalf("a pending link past its time:\n%s", page)
	}
}

// Browsers apply CSP form-action to every hop of the redirect after the
// POST; an issuer whose download redirects (CDN, http to https) would see
// the use spent and the download blocked.
func TestGatePageDoesNotRestrictFormRedirects(t *testing.T) {
	e := newGateEnv(t, store.LinkEnabled, 3, time.Time{})
	resp, _ := e.do("GET", chromeUA, "es", nil)
	csp := resp.Header.Get("Content-Security-Policy")
	if strings.Contains(csp, "form-action") || !strings.Contains(csp, "default-src 'none'") {
		t.Fatalf("CSP %q", csp)
	}
}

// Nodes of a cluster that share the form key accept each other's pages.
func TestGateFormKeySharedAcrossNodes(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	c := clock.NewFake(time.Now())
	a := NewGate(nil, GateOptions{Key: key, Clock: c}, metrics.New(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	b := NewGate(nil, GateOptions{Key: key, Clock: c}, metrics.New(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	other := NewGate(nil, GateOptions{Clock: c}, metrics.New(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	n := a.nonce("tok")
	if _, ok := b.checkNonce(n, "tok"); !ok {
		t.Fatal("a node with the same key refused the form")
	}
	if _, ok := other.checkNonce(n, "tok"); ok {
		t.Fatal("a node with its own key accepted the form")
	}
	if _, ok := b.checkNonce(n, "another-token"); ok {
		t.Fatal("a form was accepted for another link")
	}
}
