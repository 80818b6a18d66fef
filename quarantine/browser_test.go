package quarantine

// The gate's pages in a real browser: Debian's headless Chromium, driven
// with chromedp, opens a link, reads the page as a person would see it,
// waits like a person, presses the button and follows the 303 to the
// issuer. The checks cover what a unit test of the HTML cannot: the page
// renders with its inline styles under the gate's CSP, loads nothing else,
// fits a phone, exposes a heading and a named button to assistive
// technology, and the redirect reaches the issuer with its query intact and
// without the gate's address as a referrer.

import (
	"context"
	"image"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/certgate/certgate/clock"
	"github.com/certgate/certgate/internal/browsertest"
	"github.com/certgate/certgate/metrics"
	"github.com/certgate/certgate/store"
	"github.com/certgate/certgate/store/sqlite"
)

const (
	// browserHumanDelay is the gate's MinHumanDelay here; the tests move
	// the gate's clock past it before they press the button.
	browserHumanDelay = 300 * time.Millisecond
	issuerPath        = "/certificado/descargar"
	issuerQuery       = "pedido=88412&clave=Zk3p9QwX"
)

// hit is one request a test server received.
type hit struct {
	Method, URI, AcceptLanguage, Referer, UserAgent string
}

func (h hit) String() string { return h.Method + " " + h.URI }

type hitRecorder struct {
	mu   sync.Mutex
	hits []hit
}

func (r *hitRecorder) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.hits = append(r.hits, hit{req.Method, req.RequestURI, req.Header.Get("Accept-Language"), req.Header.Get("Referer"), req.UserAgent()})
		r.mu.Unlock()
		next.ServeHTTP(w, req)
	})
}

func (r *hitRecorder) list() []hit {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.hits)
}

// browserGate is a gate with a real store, served on loopback, and the
// issuer's download page on a second server that the link points at.
type browserGate struct {
	st           store.Store
	clk          *clock.Fake // the gate's time; the browser's is its own
	msgID        string
	token        string
	pageURL      string
	issuerURL    string
	issuerOrigin string
	gateHits     hitRecorder
	issuerHits   hitRecorder
}

const (
	tenantDisplayName = "Autoridad Certificante Ejemplo"
	tenantEmail       = "mesadeayuda@ca.example"
	tenantPhone       = "+54 11 5555 0000"
	tenantSupportURL  = "https://ayuda.ca.example/certificados"
)

func newBrowserGate(t *testing.T, state store.LinkState) *browserGate {
	t.Helper()
	g := &browserGate{}

	issuerMux := http.NewServeMux()
	issuerMux.HandleFunc("GET "+issuerPath, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, `<!doctype html><html lang="es"><head><meta charset="utf-8"><title>Descarga</title></head>`+
			`<body><h1>certificado listo</h1><p>pedido `+r.URL.Query().Get("pedido")+`</p></body></html>`)
	})
	issuer := httptest.NewServer(g.issuerHits.wrap(issuerMux))
	t.Cleanup(issuer.Close)
	g.issuerOrigin = issuer.URL
	g.issuerURL = issuer.URL + issuerPath + "?" + issuerQuery

	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	token, hash := NewToken()
	now := time.Now()
	m := store.Message{ID: "06h0msgbrowser000000000001", Tenant: "issuer", MailFrom: "certificados@ca.example", Class: "transactional", ReceivedAt: now}
	_, err = st.Enqueue(context.Background(), m, [][]byte{[]byte("x")}, []store.NewRecipient{{
		Address: "juan@empresa.example", TrackingID: "trk-browser", State: store.StateQueued, NextAttempt: now,
		Links: []store.NewLink{{TokenHash: hash, URL: g.issuerURL, State: state, MaxUses: 3}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	g.clk = clock.NewFake(now)
	gate := NewGate(st, GateOptions{
		Clock:         g.clk,
		MinHumanDelay: browserHumanDelay,
		Tenants: map[string]TenantPage{"issuer": {
			DisplayName: tenantDisplayName, SupportEmail: tenantEmail, SupportPhone: tenantPhone, SupportURL: tenantSupportURL}},
	}, metrics.New(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	mux := http.NewServeMux()
	gate.Register(mux)
	srv := httptest.NewServer(g.gateHits.wrap(mux))
	t.Cleanup(srv.Close)

	g.st, g.msgID, g.token = st, m.ID, token
	g.pageURL = srv.URL + "/d/" + token
	return g
}

func (g *browserGate) link(t *testing.T) *store.Link {
	t.Helper()
	l, err := g.st.LinkByToken(context.Background(), HashToken(g.token))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// linkEvents lists the message's link events as kind/actor-kind.
func (g *browserGate) linkEvents(t *testing.T) []string {
	t.Helper()
	v, err := g.st.Message(context.Background(), g.msgID)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ev := range v.Events {
		if strings.HasPrefix(ev.Kind, "link_") {
			out = append(out, ev.Kind+"/"+strings.SplitN(ev.Actor, ":", 2)[0])
		}
	}
	return out
}

// show opens the gate's page and checks the HTTP side of it.
func show(t *testing.T, tab *browsertest.Tab, g *browserGate) {
	t.Helper()
	resp := tab.Navigate(t, g.pageURL)
	if resp.Status != http.StatusOK || resp.MimeType != "text/html" {
		t.Fatalf("gate page: %d %s", resp.Status, resp.MimeType)
	}
}

// press clicks the page's button and waits for the page it leads to.
// When Chromium does not get there, it also returns what the page's
// console said.
func press(t *testing.T, tab *browsertest.Tab) (*network.Response, []string, error) {
	t.Helper()
	cctx, stop := context.WithTimeout(tab.Ctx, 20*time.Second)
	defer stop()
	messages := chromedp.Console(cctx)
	resp, err := chromedp.RunResponse(browsertest.Within(t, tab.Ctx, 15*time.Second), chromedp.Click(chromedp.CSS("form button")))
	if err == nil {
		return resp, nil, nil
	}
	time.AfterFunc(500*time.Millisecond, stop) // the messages of the failed navigation are in by then
	var lines []string
	for m, merr := range messages {
		if merr != nil {
			break
		}
		lines = append(lines, m.String())
	}
	return nil, lines, err
}

// box is an element's place on the screen, in CSS pixels.
type box struct {
	X       float64 `json:"x"`
	Y       float64 `json:"y"`
	W       float64 `json:"w"`
	H       float64 `json:"h"`
	Visible bool    `json:"visible"`
	Text    string  `json:"text"`
}

func (b *box) inViewport(l *pageLayout) bool {
	return b != nil && b.X >= 0 && b.Y >= 0 && b.X+b.W <= l.ViewportW && b.Y+b.H <= l.ViewportH
}

type pageLayout struct {
	Lang      string   `json:"lang"`
	Title     string   `json:"title"`
	ViewportW float64  `json:"viewportW"`
	ViewportH float64  `json:"viewportH"`
	ScrollW   float64  `json:"scrollW"`
	Heading   *box     `json:"heading"`
	Issuer    *box     `json:"issuer"`
	Button    *box     `json:"button"`
	Support   *box     `json:"support"`
	Links     []box    `json:"links"`
	Hrefs     []string `json:"hrefs"`
	Steps     []box    `json:"steps"`
	Forms     int      `json:"forms"`
	Resources []string `json:"resources"`
	Overflow  []string `json:"overflow"`
}

// layoutJS measures the page as rendered. checkVisibility is false for
// anything not rendered (display:none, visibility:hidden, opacity 0).
const layoutJS = `(() => {
	const vis = {opacityProperty: true, visibilityProperty: true, contentVisibilityAuto: true};
	const box = el => {
		if (!el) return null;
		const r = el.getBoundingClientRect();
		return {x: r.x, y: r.y, w: r.width, h: r.height, visible: el.checkVisibility(vis) && r.width > 0 && r.height > 0, text: el.innerText};
	};
	// Whatever reaches past the card's padding on the right.
	const sticksOut = () => {
		const main = document.querySelector('main');
		if (!main) return ['no <main>'];
		const edge = main.getBoundingClientRect().right - parseFloat(getComputedStyle(main).paddingRight);
		return Array.from(main.querySelectorAll('*'))
			.filter(el => el.getBoundingClientRect().right > edge + 0.5)
			.map(el => el.tagName.toLowerCase() + ': ' + el.innerText.slice(0, 60));
	};
	return {
		lang: document.documentElement.lang,
		title: document.title,
		viewportW: window.innerWidth,
		viewportH: window.innerHeight,
		scrollW: document.documentElement.scrollWidth,
		heading: box(document.querySelector('h1')),
		issuer: box(document.querySelector('.issuer')),
		button: box(document.querySelector('button')),
		support: box(document.querySelector('.support')),
		links: Array.from(document.querySelectorAll('a'), box),
		hrefs: Array.from(document.querySelectorAll('a'), a => a.getAttribute('href')),
		steps: Array.from(document.querySelectorAll('ol > li'), box),
		forms: document.forms.length,
		resources: performance.getEntriesByType('resource').map(e => e.name),
		overflow: sticksOut(),
	};
})()`

func layout(t *testing.T, tab *browsertest.Tab) *pageLayout {
	t.Helper()
	l := browsertest.Evaluate[*pageLayout](t, tab, layoutJS)
	if l == nil {
		t.Fatal("measuring the page: no layout")
	}
	return l
}

// pageWant is what a person should see on one page.
type pageWant struct {
	lang, title, button, support string
	steps                        []string // substrings of the visible steps, in order
}

// checkLayout checks what is on the screen at the current viewport size.
func checkLayout(t *testing.T, where string, l *pageLayout, want pageWant) {
	t.Helper()
	if l.Lang != want.lang {
		t.Errorf("%s: <html lang=%q>, want %q", where, l.Lang, want.lang)
	}
	if l.Title != want.title {
		t.Errorf("%s: document title %q, want %q", where, l.Title, want.title)
	}
	if l.Heading == nil || !l.Heading.Visible || l.Heading.Text != want.title {
		t.Errorf("%s: heading %+v, want %q visible", where, l.Heading, want.title)
	} else if !l.Heading.inViewport(l) {
		t.Errorf("%s: heading at %+v is outside the %gx%g viewport", where, *l.Heading, l.ViewportW, l.ViewportH)
	}
	if l.Issuer == nil || !l.Issuer.Visible || l.Issuer.Text != tenantDisplayName {
		t.Errorf("%s: issuer %+v, want %q visible", where, l.Issuer, tenantDisplayName)
	}
	if l.Support == nil || !l.Support.Visible || !strings.HasPrefix(l.Support.Text, want.support) {
		t.Errorf("%s: support line %+v, want it visible, starting %q", where, l.Support, want.support)
	}
	wantLinks := map[string]string{
		"mailto:" + tenantEmail: tenantEmail, "tel:+541155550000": tenantPhone, tenantSupportURL: tenantSupportURL}
	if len(l.Links) != len(wantLinks) || len(l.Hrefs) != len(l.Links) {
		t.Errorf("%s: %d contact links (%q), want %d", where, len(l.Links), l.Hrefs, len(wantLinks))
	}
	for i := range min(len(l.Links), len(l.Hrefs)) {
		if text, ok := wantLinks[l.Hrefs[i]]; !ok || l.Links[i].Text != text || !l.Links[i].Visible {
			t.Errorf("%s: contact link %q %+v, want the visible text %q", where, l.Hrefs[i], l.Links[i], text)
		}
	}
	if want.button == "" {
		if l.Button != nil || l.Forms != 0 {
			t.Errorf("%s: the page offers a button (%+v) or a form (%d)", where, l.Button, l.Forms)
		}
	} else {
		switch b := l.Button; {
		case b == nil || !b.Visible:
			t.Errorf("%s: no visible button (%+v)", where, b)
		case b.Text != want.button:
			t.Errorf("%s: button says %q, want %q", where, b.Text, want.button)
		case b.H < 44:
			t.Errorf("%s: button is %.1fpx tall, a touch target needs 44", where, b.H)
		case !b.inViewport(l):
			t.Errorf("%s: button at %+v is not on the first screen (%gx%g)", where, *b, l.ViewportW, l.ViewportH)
		}
	}
	if len(l.Steps) != len(want.steps) {
		t.Errorf("%s: %d steps, want %d", where, len(l.Steps), len(want.steps))
	}
	for i := range min(len(l.Steps), len(want.steps)) {
		if !l.Steps[i].Visible || !strings.Contains(l.Steps[i].Text, want.steps[i]) {
			t.Errorf("%s: step %d %+v, want it visible, with %q", where, i+1, l.Steps[i], want.steps[i])
		}
	}
	if l.ScrollW > l.ViewportW {
		t.Errorf("%s: the page is %gpx wide in a %gpx viewport (scrolls sideways)", where, l.ScrollW, l.ViewportW)
	}
	if len(l.Overflow) != 0 {
		t.Errorf("%s: text reaches past the card's edge: %q", where, l.Overflow)
	}
	if len(l.Resources) != 0 {
		t.Errorf("%s: the page loaded resources: %q", where, l.Resources)
	}
}

// checkAccessibility reads the accessibility tree that screen readers get:
// a level-one heading named by the title and, when offered, a button
// named by its text.
func checkAccessibility(t *testing.T, tab *browsertest.Tab, want pageWant) {
	t.Helper()
	named := tab.Accessible(t)
	if !slices.Contains(named["heading"], want.title) {
		t.Errorf("accessibility tree: headings %q, want %q", named["heading"], want.title)
	}
	if want.button != "" && !slices.Equal(named["button"], []string{want.button}) {
		t.Errorf("accessibility tree: buttons %q, want [%q]", named["button"], want.button)
	}
	if want.button == "" && len(named["button"]) != 0 {
		t.Errorf("accessibility tree: buttons %q, want none", named["button"])
	}
	if len(want.steps) > 0 && len(named["listitem"]) != len(want.steps) {
		t.Errorf("accessibility tree: %d list items, want %d", len(named["listitem"]), len(want.steps))
	}
	if len(named["link"]) != 3 {
		t.Errorf("accessibility tree: links %q, want the 3 support contacts", named["link"])
	}
}

// screenshot captures the viewport, saves it and checks that it is a PNG
// of the viewport's size showing the page's colors: the background, and
// the button's blue where the button is.
func screenshot(t *testing.T, tab *browsertest.Tab, name string, l *pageLayout) {
	t.Helper()
	img := tab.Screenshot(t, name, int(l.ViewportW), int(l.ViewportH))
	near := func(p image.Point, want [3]uint8) bool { return browsertest.Near(img, p, want) }
	if bg := (image.Point{2, 2}); !near(bg, [3]uint8{0xf4, 0xf5, 0xf7}) {
		t.Errorf("screenshot %s: background at %v is %v, want #f4f5f7 (styles not applied?)", name, bg, img.At(bg.X, bg.Y))
	}
	if b := l.Button; b != nil {
		p := image.Point{int(b.X + 5), int(b.Y + b.H/2)} // in the padding, left of the text
		if !near(p, [3]uint8{0x0b, 0x5c, 0xad}) {
			t.Errorf("screenshot %s: button at %v is %v, want #0b5cad", name, p, img.At(p.X, p.Y))
		}
	}
}

// checkPage checks the page as shown on a desktop window and on a phone,
// with a screenshot of each.
func checkPage(t *testing.T, tab *browsertest.Tab, name string, want pageWant) {
	t.Helper()
	l := layout(t, tab)
	checkLayout(t, name+" (desktop)", l, want)
	screenshot(t, tab, name+"-desktop", l)
	checkAccessibility(t, tab, want)

	tab.Phone(t)
	l = layout(t, tab)
	if l.ViewportW != 360 {
		t.Errorf("phone viewport is %gpx wide, want 360", l.ViewportW)
	}
	checkLayout(t, name+" (phone)", l, want)
	screenshot(t, tab, name+"-phone", l)
	tab.Desktop(t)
}

func TestGatePagesInChromium(t *testing.T) {
	browser := browsertest.Start(t, 50*time.Second)

	downloads := []struct {
		name, acceptLanguage string
		want                 pageWant
	}{
		{"es-AR", "es-AR,es;q=0.9,en;q=0.5", pageWant{lang: "es", title: "Su descarga está lista", button: "Descargar", support: "¿Necesita ayuda? Escriba a"}},
		{"fr-FR", "fr-FR,fr;q=0.9", pageWant{lang: "fr", title: "Votre téléchargement est prêt", button: "Télécharger", support: "Besoin d’aide ? Écrivez à"}},
		{"pt-BR", "pt-BR,pt;q=0.9,en;q=0.5", pageWant{lang: "pt", title: "Seu download está pronto", button: "Baixar", support: "Precisa de ajuda? Escreva para"}},
	}
	for _, tc := range downloads {
		t.Run("download/"+tc.name, func(t *testing.T) {
			g := newBrowserGate(t, store.LinkEnabled)
			tab := browsertest.OpenTab(t, browser, tc.acceptLanguage)
			show(t, tab, g)
			checkPage(t, tab, "enabled-"+tc.name, tc.want)
			if tr := tab.Requests(); !slices.Equal(tr, []string{"GET " + g.pageURL}) {
				t.Errorf("showing the page, the tab requested %q, want only the page", tr)
			}

			// A person reads, then presses the button.
			g.clk.Advance(browserHumanDelay + 200*time.Millisecond)
			resp, console, err := press(t, tab)
			if err != nil {
				t.Fatalf("pressing the button: %v; console: %q", err, console)
			}
			if resp.URL != g.issuerURL || resp.Status != http.StatusOK {
				t.Fatalf("after the button: %d at %q, want 200 at %q", resp.Status, resp.URL, g.issuerURL)
			}
			ctx := browsertest.Within(t, tab.Ctx, 10*time.Second)
			loc, err := chromedp.Run(ctx, chromedp.Location())
			if err != nil || loc != g.issuerURL {
				t.Fatalf("the browser is at %q (%v), want %q", loc, err, g.issuerURL)
			}
			text, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("h1")))
			if err != nil || text != "certificado listo" {
				t.Fatalf("issuer's page says %q (%v)", text, err)
			}
			// The issuer's page is the issuer's business (Chromium asks it for
			// /favicon.ico); up to it, the tab asked for nothing else.
			wantTab := []string{"GET " + g.pageURL, "POST " + g.pageURL, "GET " + g.issuerURL}
			tr := tab.Requests()
			if len(tr) < len(wantTab) || !slices.Equal(tr[:len(wantTab)], wantTab) ||
				slices.ContainsFunc(tr[len(wantTab):], func(r string) bool { return !strings.HasPrefix(r, "GET "+g.issuerOrigin+"/") }) {
				t.Errorf("the tab requested %q, want %q, then only the issuer's own", tr, wantTab)
			}

			// What the servers saw.
			gh := g.gateHits.list()
			if len(gh) != 2 || gh[0].String() != "GET /d/"+g.token || gh[1].String() != "POST /d/"+g.token {
				t.Errorf("the gate served %v, want the page and one press", gh)
			}
			for _, h := range gh {
				if h.AcceptLanguage != tc.acceptLanguage || h.UserAgent != browsertest.DesktopUA {
					t.Errorf("the gate got %v with Accept-Language %q, User-Agent %q", h, h.AcceptLanguage, h.UserAgent)
				}
			}
			var fetched []hit
			for _, h := range g.issuerHits.list() {
				if strings.HasPrefix(h.URI, issuerPath) {
					fetched = append(fetched, h)
				}
			}
			if len(fetched) != 1 || fetched[0].String() != "GET "+issuerPath+"?"+issuerQuery {
				t.Errorf("the issuer served %v, want one GET with the query intact", fetched)
			} else if fetched[0].Referer != "" {
				t.Errorf("the issuer got Referer %q: the gate's address (with its token) leaked", fetched[0].Referer)
			}

			// What the store says.
			if l := g.link(t); l.Uses != 1 || l.State != store.LinkEnabled {
				t.Errorf("after one press: %s with %d uses, want enabled with 1", l.State, l.Uses)
			}
			if ev := g.linkEvents(t); !slices.Equal(ev, []string{"link_used/browser"}) {
				t.Errorf("link events %q, want one link_used by a browser", ev)
			}
		})
	}

	t.Run("pending/en", func(t *testing.T) {
		g := newBrowserGate(t, store.LinkPending)
		tab := browsertest.OpenTab(t, browser, "en-US,en;q=0.9")
		show(t, tab, g)
		checkPage(t, tab, "pending-en", pageWant{lang: "en", title: "This link is not active yet", support: "Need help? Contact",
			steps: []string{"Junk or Spam folder", "“Not junk”", "“Report not spam”", "move it to your Inbox", "open this link again"}})
		// Opening it again, as the page tells a person to, changes nothing.
		if err := chromedp.Do(browsertest.Within(t, tab.Ctx, 15*time.Second), chromedp.Reload()); err != nil {
			t.Fatalf("reloading: %v", err)
		}
		if tr := tab.Requests(); !slices.Equal(tr, []string{"GET " + g.pageURL, "GET " + g.pageURL}) {
			t.Errorf("the tab requested %q, want only the page, twice", tr)
		}
		if gh := g.gateHits.list(); len(gh) != 2 || gh[0].Method != http.MethodGet || gh[1].Method != http.MethodGet {
			t.Errorf("the gate served %v, want two GETs of the page", gh)
		}
		if l := g.link(t); l.Uses != 0 || l.State != store.LinkPending {
			t.Errorf("after showing the page: %s with %d uses, want pending with 0", l.State, l.Uses)
		}
		if ev := g.linkEvents(t); len(ev) != 0 {
			t.Errorf("link events %q, want none", ev)
		}
		if len(g.issuerHits.list()) != 0 {
			t.Errorf("the issuer was reached from a pending link: %v", g.issuerHits.list())
		}
	})
}
