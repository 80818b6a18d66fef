package main

// The helpdesk console end to end: a whole certgate holds a real
// certificate mail; in headless Chromium the helpdesk signs in with its
// API token, finds the mail by its recipient, releases it with a reason
// and sees its download link turn on, then signs out. A read-only token
// sees no buttons, and a POST with its session's cookie is refused.

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/emersion/go-smtp"

	"github.com/certgate/certgate/internal/browsertest"
	"github.com/certgate/certgate/store"
)

const (
	consoleHelpdeskToken = "console-helpdesk-token-0123456789"
	consoleReaderToken   = "console-reader-token-0123456789ab"
)

// consoleRig is a certgate that holds the issuer's mail, with a helpdesk
// token and a read-only one.
type consoleRig struct {
	d    *daemon
	base string // http.listen's URL
}

func newConsoleRig(t *testing.T) *consoleRig {
	t.Helper()
	dir := t.TempDir()
	mx := startCorpMX(t)
	cfg := writeSmallConfig(t, dir, "")
	text, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// The tenant holds its mail and gates its download links.
	held := strings.Replace(string(text), "from_domains: [ca.example]}",
		`from_domains: [ca.example], hold: true, links: {gate: ["https://descargas.ca.example/certificado/"]}}`, 1)
	held += "delivery: {routes: [{domains: [\"*\"], host: \"" + mx.Addr() + "\", tls: none}]}\n" +
		"api: {tokens: [{name: helpdesk, token_file: " + writeTestFile(t, dir, "helpdesk.token", consoleHelpdeskToken) + ", scopes: [read, release]}," +
		" {name: lectura, token_file: " + writeTestFile(t, dir, "reader.token", consoleReaderToken) + ", scopes: [read]}]}\n"
	if err := os.WriteFile(cfg, []byte(held), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startTestDaemon(t, cfg)
	return &consoleRig{d: d, base: "http://" + d.httpAddr.String()}
}

// send submits the Spanish download mail of the shared samples to rcpt
// and returns its id once certgate holds it.
func (rig *consoleRig) send(t *testing.T, rcpt string) string {
	t.Helper()
	eml, err := os.ReadFile("/work/shared/testdata/mail/01-es-download-link-qp.eml")
	if err != nil {
		t.Skipf("the shared sample mail is not here: %v", err)
	}
	c, err := smtp.Dial(rig.d.smtpAddrs[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SendMail("certificados@ca.example", []string{rcpt}, strings.NewReader(string(eml))); err != nil {
		t.Fatal(err)
	}
	msgs, err := rig.d.store.Search(context.Background(), store.Query{Recipient: rcpt})
	if err != nil || len(msgs) != 1 {
		t.Fatalf("certgate holds %v for %s (%v)", msgs, rcpt, err)
	}
	return msgs[0].ID
}

func (rig *consoleRig) view(t *testing.T, id string) *store.MessageView {
	t.Helper()
	v, err := rig.d.store.Message(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// consoleSubmit clicks sel and waits for the page the form leads to.
func consoleSubmit(t *testing.T, tab *browsertest.Tab, sel string) *network.Response {
	t.Helper()
	resp, err := chromedp.RunResponse(browsertest.Within(t, tab.Ctx, 15*time.Second), chromedp.Click(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("submitting with %s: %v", sel, err)
	}
	return resp
}

func consoleType(t *testing.T, tab *browsertest.Tab, sel, text string) {
	t.Helper()
	if err := chromedp.Do(browsertest.Within(t, tab.Ctx, 10*time.Second), chromedp.SendKeys(chromedp.CSS(sel), text)); err != nil {
		t.Fatalf("typing into %s: %v", sel, err)
	}
}

func consoleText(t *testing.T, tab *browsertest.Tab) string {
	t.Helper()
	return browsertest.Evaluate[string](t, tab, `document.body.innerText`)
}

// consoleSignIn opens the console and signs in with token.
func consoleSignIn(t *testing.T, tab *browsertest.Tab, base, token, wantWho string) {
	t.Helper()
	if resp := tab.Navigate(t, base+"/console/"); resp.Status != http.StatusOK {
		t.Fatalf("the sign-in page: %d", resp.Status)
	}
	consoleType(t, tab, "#token", token)
	if resp := consoleSubmit(t, tab, "main form button"); resp.Status != http.StatusOK || resp.URL != base+"/console/" {
		t.Fatalf("after sign-in: %d at %s", resp.Status, resp.URL)
	}
	if text := consoleText(t, tab); !strings.Contains(text, "Sesión de "+wantWho) {
		t.Fatalf("signed in, the page says %q", text)
	}
}

// consoleFind searches for rcpt and opens the one message found.
func consoleFind(t *testing.T, tab *browsertest.Tab, base, rcpt, id string) {
	t.Helper()
	consoleType(t, tab, "#q", rcpt)
	consoleSubmit(t, tab, "main form button")
	links := browsertest.Evaluate[[]string](t, tab, `Array.from(document.querySelectorAll('a[href^="/console/messages/"]'), a => a.getAttribute('href'))`)
	if !slices.Equal(links, []string{"/console/messages/" + id}) {
		t.Fatalf("searching %s found %q, want the message %s", rcpt, links, id)
	}
	if resp := consoleSubmit(t, tab, `a[href="/console/messages/`+id+`"]`); resp.Status != http.StatusOK {
		t.Fatalf("the message page: %d", resp.Status)
	}
}

// checkConsoleFits checks the page on a phone: nothing scrolls sideways,
// and screenshots it there and on the desktop.
func checkConsoleFits(t *testing.T, tab *browsertest.Tab, name string) {
	t.Helper()
	size := func() (int, int, int) {
		v := browsertest.Evaluate[[]int](t, tab, `[window.innerWidth, window.innerHeight, document.documentElement.scrollWidth]`)
		return v[0], v[1], v[2]
	}
	w, h, _ := size()
	tab.Screenshot(t, name+"-desktop", w, h)
	tab.Phone(t)
	w, h, scroll := size()
	if w != 360 || scroll > w {
		t.Errorf("%s on a phone: %dpx wide content in a %dpx viewport (scrolls sideways)", name, scroll, w)
	}
	tab.Screenshot(t, name+"-phone", w, h)
	// Back to a desktop window explicitly: after tab.Desktop the next
	// page was still laid out at the phone's 360px here.
	if err := chromedp.Do(browsertest.Within(t, tab.Ctx, 10*time.Second), chromedp.EmulateViewport(1280, 800)); err != nil {
		t.Fatalf("desktop viewport: %v", err)
	}
}

func TestConsoleInChromium(t *testing.T) {
	browser := browsertest.Start(t, 90*time.Second)
	rig := newConsoleRig(t)
	juan := rig.send(t, "juan.perez@empresa.example")
	ana := rig.send(t, "ana.gomez@empresa.example")
	if v := rig.view(t, juan); v.Recipients[0].State != store.StateHeld || len(v.Links) == 0 || v.Links[0].State != store.LinkPending {
		t.Fatalf("before the console: %+v", v)
	}

	t.Run("helpdesk releases", func(t *testing.T) {
		tab := browsertest.OpenTab(t, browser, "es-AR,es;q=0.9")
		consoleSignIn(t, tab, rig.base, consoleHelpdeskToken, "helpdesk")
		consoleFind(t, tab, rig.base, "juan.perez@empresa.example", juan)
		text := consoleText(t, tab)
		for _, want := range []string{"Descargue su certificado de firma digital", "juan.perez@empresa.example", "retenido", "pending", "https://descargas.ca.example/…", "accepted"} {
			if !strings.Contains(text, want) {
				t.Errorf("the held message's page lacks %q:\n%s", want, text)
			}
		}
		if strings.Contains(text, "Zk3p9QwX") {
			t.Error("the page shows the download link's credential")
		}
		checkConsoleFits(t, tab, "console-message-held")

		consoleType(t, tab, "#release-reason", "el cliente llamó, ticket 4411")
		resp := consoleSubmit(t, tab, `form[action$="/release"] button`)
		if resp.Status != http.StatusOK || resp.URL != rig.base+"/console/messages/"+juan+"?done=released&n=1" {
			t.Fatalf("after release: %d at %s", resp.Status, resp.URL)
		}
		states := browsertest.Evaluate[[]string](t, tab, `Array.from(document.querySelectorAll('.link-state'), e => e.innerText)`)
		if len(states) == 0 || slices.ContainsFunc(states, func(s string) bool { return s != "enabled" }) {
			t.Errorf("after release the links are %q, want enabled", states)
		}
		if text := consoleText(t, tab); !strings.Contains(text, "Liberado: 1 copias retenidas") || !strings.Contains(text, "released: el cliente llamó, ticket 4411") {
			t.Errorf("after release the page says:\n%s", text)
		}
		v := rig.view(t, juan)
		if v.Links[0].State != store.LinkEnabled || !slices.ContainsFunc(v.Events, func(e store.Event) bool {
			return e.Kind == "released" && strings.HasPrefix(e.Actor, "console:helpdesk@127.0.0.1:") && e.Detail == "released: el cliente llamó, ticket 4411"
		}) {
			t.Errorf("the store after release: link %s, events %+v", v.Links[0].State, v.Events)
		}
		checkConsoleFits(t, tab, "console-message-released")

		// Signing out ends the session: the page asks for a token again.
		if resp := consoleSubmit(t, tab, "header form button"); resp.URL != rig.base+"/console/?signed_out=1" {
			t.Fatalf("after sign-out: at %s", resp.URL)
		}
		if text := consoleText(t, tab); !strings.Contains(text, "Cerró la sesión.") {
			t.Errorf("after sign-out the page says %q", text)
		}
		if resp := tab.Navigate(t, rig.base+"/console/messages/"+juan); resp.Status != http.StatusUnauthorized {
			t.Errorf("the message page after sign-out: %d", resp.Status)
		}
		// Chromium draws the date fields' calendar icon from a data: URL
		// of its own; anything else is a request to the network.
		for _, r := range tab.Requests() {
			if _, u, _ := strings.Cut(r, " "); !strings.HasPrefix(u, rig.base+"/console/") && !strings.HasPrefix(u, "data:") {
				t.Errorf("the tab requested %s, outside the console", r)
			}
		}
	})

	t.Run("read token", func(t *testing.T) {
		tab := browsertest.OpenTab(t, browser, "es-AR,es;q=0.9")
		consoleSignIn(t, tab, rig.base, consoleReaderToken, "lectura")
		consoleFind(t, tab, rig.base, "ana.gomez@empresa.example", ana)
		if buttons := tab.Accessible(t)["button"]; !slices.Equal(buttons, []string{"Salir"}) {
			t.Errorf("a read session is offered the buttons %q, want only Salir", buttons)
		}
		if n := browsertest.Evaluate[int](t, tab, `document.querySelectorAll('main form').length`); n != 0 {
			t.Errorf("a read session's message page has %d forms", n)
		}
		checkConsoleFits(t, tab, "console-message-read")

		// The server refuses the POST anyway, with the session's own
		// cookie and form key.
		res, err := chromedp.Call(browsertest.Within(t, tab.Ctx, 10*time.Second), network.GetCookies, network.GetCookiesParams{URLs: []string{rig.base + "/console/"}})
		if err != nil {
			t.Fatal(err)
		}
		var session *network.Cookie
		for _, c := range res.Cookies {
			if c.Name == "certgate_console" {
				session = c
			}
		}
		if session == nil || !session.HTTPOnly || session.SameSite != network.CookieSameSiteStrict || session.Path != "/console/" {
			t.Fatalf("the session cookie in the browser: %+v", session)
		}
		key := browsertest.Evaluate[string](t, tab, `document.querySelector('input[name=csrf]').value`)
		form := url.Values{"csrf": {key}, "reason": {"intento"}}
		req, _ := http.NewRequest("POST", rig.base+"/console/messages/"+ana+"/release", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.AddCookie(&http.Cookie{Name: session.Name, Value: session.Value})
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("a read session's release: %d, want 403", resp.StatusCode)
		}
		if v := rig.view(t, ana); v.Recipients[0].State != store.StateHeld || v.Links[0].State != store.LinkPending {
			t.Errorf("a read session's POST changed the message: %+v", v)
		}
	})
}
