package console

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certgate/certgate/api"
	"github.com/certgate/certgate/clock"
	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/metrics"
	"github.com/certgate/certgate/quarantine"
	"github.com/certgate/certgate/store"
	"github.com/certgate/certgate/store/sqlite"
)

// The tokens of the tests, by secret.
const (
	helpdeskToken = "helpdesk-token-0123456789"   // read, release; tenant issuer
	readerToken   = "reader-token-0123456789ab"   // read; tenant issuer
	otherToken    = "other-token-0123456789abcd"  // read, release; tenant other
	opsToken      = "ops-token-0123456789abcdefg" // admin; every tenant
)

type noQueue struct{}

func (noQueue) Add(...store.Pending) {}

// fakeLanes is a LaneControl that records its changes.
type fakeLanes struct {
	mu      sync.Mutex
	lanes   []api.Lane
	changes []string
}

func (f *fakeLanes) Lanes() []api.Lane {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.lanes)
}

func (f *fakeLanes) change(name, state, reason, actor string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.lanes {
		if f.lanes[i].Name == name {
			f.lanes[i].State, f.lanes[i].Reason = state, reason
			f.changes = append(f.changes, state+" "+name+" by "+actor+": "+reason)
			return nil
		}
	}
	return api.ErrNoLane
}

func (f *fakeLanes) Pause(name, reason, actor string) error {
	return f.change(name, "paused", reason, actor)
}
func (f *fakeLanes) Resume(name, reason, actor string) error {
	return f.change(name, "normal", reason, actor)
}
func (f *fakeLanes) SetRate(string, float64, time.Time, string, string) error {
	return nil
}
func (f *fakeLanes) Hold(int64) (api.Hold, bool) { return api.Hold{}, false }

type env struct {
	t     *testing.T
	st    *sqlite.Store
	clk   *clock.Fake
	lanes *fakeLanes
	o     Options // the console's, for another node over the same store
	con   *Console
	srv   *httptest.Server
}

// testTokens are the tests' API tokens, their secrets in the environment.
func testTokens(t *testing.T) []config.APIToken {
	var cfg []config.APIToken
	for i, tk := range []struct {
		secret, name string
		scopes       []config.Scope
		tenants      []string
	}{
		{helpdeskToken, "helpdesk", []config.Scope{config.ScopeRead, config.ScopeRelease}, []string{"issuer"}},
		{readerToken, "reader", []config.Scope{config.ScopeRead}, []string{"issuer"}},
		{otherToken, "other", []config.Scope{config.ScopeRead, config.ScopeRelease}, []string{"other"}},
		{opsToken, "ops", []config.Scope{config.ScopeAdmin}, []string{"*"}},
	} {
		env := fmt.Sprintf("CERTGATE_CONSOLE_TEST_%d", i)
		t.Setenv(env, tk.secret)
		cfg = append(cfg, config.APIToken{Name: tk.name, TokenEnv: env, Scopes: tk.scopes, Tenants: tk.tenants})
	}
	return cfg
}

func loadTokens(t *testing.T, cfg []config.APIToken) *api.Tokens {
	t.Helper()
	tokens, err := api.LoadTokens(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tokens
}

// serve builds the console of o and serves it over real HTTP.
func (e *env) serve(o Options) {
	e.o = o
	e.con = New(o)
	mux := http.NewServeMux()
	e.con.Register(mux)
	e.srv = httptest.NewServer(mux)
	e.t.Cleanup(e.srv.Close)
}

func newEnv(t *testing.T, tweak func(*Options)) *env {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	tokens := loadTokens(t, testTokens(t))
	e := &env{t: t, st: st, clk: clock.NewFake(time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)),
		lanes: &fakeLanes{lanes: []api.Lane{
			{Name: "gmail", Provider: "gmail", State: "slowed", Rate: 2, Configured: 5, Reason: "421 from gmail for tenant other",
				Ready: map[config.Class]map[string]int{"bulk": {"issuer": 3, "other": 4}}},
			{Name: "default:empresa.example", Provider: config.CatchAllProvider, State: "normal", Rate: math.Inf(1), Configured: math.Inf(1),
				Ready: map[config.Class]map[string]int{"bulk": {"other": 1}}},
		}}}
	o := Options{Store: st, Desk: quarantine.NewDesk(st, noQueue{}, metrics.New()), Tokens: tokens, Lanes: e.lanes,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Clock: e.clk,
		IdleTimeout: 30 * time.Minute, MaxAge: 2 * time.Hour, MaxSessions: 10}
	if tweak != nil {
		tweak(&o)
	}
	e.serve(o)
	return e
}

// enqueue stores a message of tenant for rcpt, held or queued, with one
// pending link, received at minute i of the test's day.
func (e *env) enqueue(tenant string, i int, rcpt, subject string, state store.State) string {
	e.t.Helper()
	at := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Minute)
	id := fmt.Sprintf("06h%013d%010d", at.UnixMilli(), i)
	_, hash := quarantine.NewToken()
	_, err := e.st.Enqueue(context.Background(), store.Message{ID: id, Tenant: tenant, MailFrom: "certificados@ca.example",
		HeaderFrom: "certificados@ca.example", MessageID: fmt.Sprintf("dl-%04d@ca.example", i), Subject: subject, Class: "bulk", ReceivedAt: at},
		[][]byte{[]byte("x")}, []store.NewRecipient{{Address: rcpt, TrackingID: id, State: state, NextAttempt: at,
			Links: []store.NewLink{{TokenHash: hash, URL: "https://descargas.ca.example/certificado/" + id + "?clave=secreta", State: store.LinkPending, MaxUses: 3}}}})
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

func (e *env) view(id string) *store.MessageView {
	e.t.Helper()
	v, err := e.st.Message(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return v
}

// client never follows redirects: the tests look at them.
var client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

type reply struct {
	code     int
	body     string
	header   http.Header
	cookies  []*http.Cookie
	location string
}

func (e *env) do(method, path string, ck *http.Cookie, form url.Values, header map[string]string) reply {
	e.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, e.srv.URL+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	if ck != nil {
		req.AddCookie(ck)
	}
	resp, err := client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, string(b), resp.Header, resp.Cookies(), resp.Header.Get("Location")}
}

func (e *env) get(path string, ck *http.Cookie) reply { return e.do("GET", path, ck, nil, nil) }

func (e *env) post(path string, ck *http.Cookie, form url.Values) reply {
	return e.do("POST", path, ck, form, nil)
}

// signIn signs in with secret and returns the session cookie.
func (e *env) signIn(secret string) *http.Cookie {
	e.t.Helper()
	r := e.post("/console/signin", nil, url.Values{"token": {secret}})
	if r.code != http.StatusSeeOther || r.location != "/console/" || len(r.cookies) != 1 {
		e.t.Fatalf("sign-in: %d to %q, cookies %v; body %.300s", r.code, r.location, r.cookies, r.body)
	}
	return r.cookies[0]
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf is the form key on the page at path.
func (e *env) csrf(path string, ck *http.Cookie) string {
	e.t.Helper()
	r := e.get(path, ck)
	m := csrfRE.FindStringSubmatch(r.body)
	if r.code != http.StatusOK || m == nil {
		e.t.Fatalf("GET %s: %d, no form key in %.300s", path, r.code, r.body)
	}
	return m[1]
}

func TestSignInAndCookie(t *testing.T) {
	e := newEnv(t, nil)
	r := e.get("/console/", nil)
	if r.code != 200 || !strings.Contains(r.body, `action="/console/signin"`) || strings.Contains(r.body, "csrf") {
		t.Fatalf("signed out, /console/ = %d %.300s", r.code, r.body)
	}
	if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "form-action 'self'") ||
		!strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP %q", csp)
	}
	for _, bad := range []string{"", "wrong-token-0123456789", helpdeskToken + "x", strings.ToUpper(helpdeskToken)} {
		r := e.post("/console/signin", nil, url.Values{"token": {bad}})
		if r.code != http.StatusUnauthorized || len(r.cookies) != 0 || !strings.Contains(r.body, "That token is not valid.") {
			t.Errorf("sign-in with %q: %d, cookies %v", bad, r.code, r.cookies)
		}
	}
	r = e.post("/console/signin", nil, url.Values{"token": {helpdeskToken}})
	if r.code != http.StatusSeeOther || r.location != "/console/" || len(r.cookies) != 1 {
		t.Fatalf("sign-in: %d %q %v", r.code, r.location, r.cookies)
	}
	ck := r.cookies[0]
	if ck.Name != cookieName || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/console/" || ck.Secure ||
		ck.MaxAge != int((2*time.Hour)/time.Second) || len(ck.Value) < 40 || strings.Contains(ck.Value, helpdeskToken) {
		t.Errorf("session cookie %+v", ck)
	}
	r = e.get("/console/", ck)
	if r.code != 200 || !strings.Contains(r.body, "<b>helpdesk</b>") || !strings.Contains(r.body, "tenants: issuer") ||
		!strings.Contains(r.body, `name="csrf"`) || !strings.Contains(r.body, `name="q"`) {
		t.Errorf("signed in, /console/ = %d %.500s", r.code, r.body)
	}

	// Behind a TLS proxy (public_url https) the cookie is Secure.
	e = newEnv(t, func(o *Options) { o.SecureCookie = true })
	if ck := e.signIn(helpdeskToken); !ck.Secure {
		t.Errorf("with SecureCookie the cookie is %+v", ck)
	}
}

func TestSignInFailuresAreLimited(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.SignInFailures = quarantine.RateLimit{Burst: 3, Every: time.Minute} })
	for i := range 3 {
		if r := e.post("/console/signin", nil, url.Values{"token": {"guess-" + fmt.Sprint(i)}}); r.code != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d", i+1, r.code)
		}
	}
	// Over the limit even the right token waits: the limit comes first.
	r := e.post("/console/signin", nil, url.Values{"token": {helpdeskToken}})
	if r.code != http.StatusTooManyRequests || r.header.Get("Retry-After") != "60" || len(r.cookies) != 0 {
		t.Fatalf("past the limit: %d, Retry-After %q", r.code, r.header.Get("Retry-After"))
	}
	e.clk.Advance(time.Minute)
	e.signIn(helpdeskToken)
	// A success spends nothing.
	e.signIn(helpdeskToken)
}

func TestFormKeyAndScope(t *testing.T) {
	e := newEnv(t, nil)
	id := e.enqueue("issuer", 1, "juan@empresa.example", "Su certificado", store.StateHeld)
	ck := e.signIn(helpdeskToken)
	path := "/console/messages/" + id
	key := e.csrf(path, ck)
	for _, form := range []url.Values{
		{"reason": {"no key"}},
		{"reason": {"wrong key"}, "csrf": {key + "x"}},
		{"reason": {"other session's key"}, "csrf": {e.csrf(path, e.signIn(helpdeskToken))}},
	} {
		if r := e.post(path+"/release", ck, form); r.code != http.StatusForbidden {
			t.Errorf("release with %v: %d", form, r.code)
		}
	}
	// From another site, the browser's Sec-Fetch-Site refuses it first.
	r := e.do("POST", path+"/release", ck, url.Values{"reason": {"x"}, "csrf": {key}}, map[string]string{"Sec-Fetch-Site": "cross-site"})
	if r.code != http.StatusForbidden {
		t.Errorf("cross-site release: %d", r.code)
	}
	if st := e.view(id).Recipients[0].State; st != store.StateHeld {
		t.Fatalf("after refused releases the copy is %s", st)
	}
	if r := e.post(path+"/release", ck, url.Values{"csrf": {key}, "reason": {"  "}}); r.code != http.StatusBadRequest {
		t.Errorf("release without a reason: %d", r.code)
	}

	// A read session sees no buttons, and its POSTs are refused.
	rk := e.signIn(readerToken)
	page := e.get(path, rk)
	if page.code != 200 || !strings.Contains(page.body, "juan@empresa.example") {
		t.Fatalf("reader's page: %d", page.code)
	}
	for _, action := range []string{"/release", "/revoke", "/enable"} {
		if strings.Contains(page.body, `action="`+path+action+`"`) {
			t.Errorf("a read session is offered %s", action)
		}
	}
	rkey := csrfRE.FindStringSubmatch(page.body)[1] // the sign-out form's
	for _, action := range []string{"/release", "/revoke", "/enable"} {
		r := e.post(path+action, rk, url.Values{"csrf": {rkey}, "reason": {"trying"}, "recipient": {"juan@empresa.example"}})
		if r.code != http.StatusForbidden || !strings.Contains(r.body, "Your token may not do this.") {
			t.Errorf("read session POST %s: %d", action, r.code)
		}
	}
	v := e.view(id)
	if v.Recipients[0].State != store.StateHeld || v.Links[0].State != store.LinkPending {
		t.Fatalf("a read session changed the message: %+v %+v", v.Recipients[0], v.Links[0])
	}

	// The helpdesk releases it, with its reason in the audit trail.
	r = e.post(path+"/release", ck, url.Values{"csrf": {key}, "reason": {"customer called, ticket 4411"}})
	if r.code != http.StatusSeeOther || r.location != path+"?done=released&n=1" {
		t.Fatalf("release: %d to %q; %.300s", r.code, r.location, r.body)
	}
	v = e.view(id)
	if v.Recipients[0].State != store.StateQueued || v.Links[0].State != store.LinkEnabled {
		t.Errorf("after release: %s, link %s", v.Recipients[0].State, v.Links[0].State)
	}
	if !hasEvent(v, "released", "console:helpdesk@127.0.0.1:", "released: customer called, ticket 4411") {
		t.Errorf("no released event by the console: %+v", v.Events)
	}
	page = e.get(r.location, ck)
	if !strings.Contains(page.body, "Released: 1 held copies queued for delivery.") || !strings.Contains(page.body, `link-state">enabled<`) {
		t.Errorf("page after release: %.2000s", page.body)
	}
}

func hasEvent(v *store.MessageView, kind, actorPrefix, detail string) bool {
	return slices.ContainsFunc(v.Events, func(e store.Event) bool {
		return e.Kind == kind && strings.HasPrefix(e.Actor, actorPrefix) && e.Detail == detail
	})
}

func TestRevokeAndEnableLinks(t *testing.T) {
	e := newEnv(t, nil)
	id := e.enqueue("issuer", 1, "juan@empresa.example", "Su certificado", store.StateQueued)
	ck := e.signIn(helpdeskToken)
	path := "/console/messages/" + id
	page := e.get(path, ck)
	if strings.Contains(page.body, "secreta") || !strings.Contains(page.body, "https://descargas.ca.example/…") {
		t.Errorf("the page shows the link's credential, or no origin: %.3000s", page.body)
	}
	key := csrfRE.FindStringSubmatch(page.body)[1]
	r := e.post(path+"/revoke", ck, url.Values{"csrf": {key}, "recipient": {"juan@empresa.example"}, "reason": {"sent to the wrong person"}})
	if r.code != http.StatusSeeOther || r.location != path+"?done=revoked&n=1" {
		t.Fatalf("revoke: %d %q", r.code, r.location)
	}
	page = e.get(r.location, ck)
	if !strings.Contains(page.body, `link-state">revoked<`) || !strings.Contains(page.body, `action="`+path+`/enable"`) ||
		strings.Contains(page.body, `action="`+path+`/revoke"`) {
		t.Errorf("after revoke the page offers: %.3000s", page.body)
	}
	if r := e.post(path+"/enable", ck, url.Values{"csrf": {key}, "recipient": {"nadie@empresa.example"}, "reason": {"x"}}); r.code != http.StatusNotFound {
		t.Errorf("enable for another address: %d", r.code)
	}
	r = e.post(path+"/enable", ck, url.Values{"csrf": {key}, "recipient": {"juan@empresa.example"}, "reason": {"right person after all"}})
	if r.code != http.StatusSeeOther || r.location != path+"?done=enabled&n=1" {
		t.Fatalf("enable: %d %q", r.code, r.location)
	}
	v := e.view(id)
	if v.Links[0].State != store.LinkEnabled || !hasEvent(v, "link_revoked", "console:helpdesk@", "revoked: sent to the wrong person") ||
		!hasEvent(v, "link_enabled", "console:helpdesk@", "re-enabled: right person after all") {
		t.Errorf("link %s, events %+v", v.Links[0].State, v.Events)
	}
}

// TestTenantWalls: to a session of tenant other, the mail of tenant
// issuer does not exist, whatever it asks.
func TestTenantWalls(t *testing.T) {
	e := newEnv(t, nil)
	id := e.enqueue("issuer", 1, "juan@empresa.example", "Su certificado", store.StateHeld)
	ok := e.signIn(otherToken)
	path := "/console/messages/" + id
	if r := e.get(path, ok); r.code != http.StatusNotFound || strings.Contains(r.body, "juan@") {
		t.Errorf("another tenant's message: %d %.300s", r.code, r.body)
	}
	if r := e.get("/console/messages/no-such-message", ok); r.code != http.StatusNotFound {
		t.Errorf("an unknown message: %d", r.code)
	}
	for _, q := range []string{"juan@empresa.example", id, "certificado", "<dl-0001@ca.example>", ""} {
		r := e.get("/console/?q="+url.QueryEscape(q)+"&in=", ok)
		if r.code != 200 || strings.Contains(r.body, "/console/messages/") || !strings.Contains(r.body, "No mail found.") {
			t.Errorf("search %q by another tenant: %d %.300s", q, r.code, r.body)
		}
	}
	key := e.csrf("/console/", ok)
	for _, action := range []string{"/release", "/revoke", "/enable"} {
		if r := e.post(path+action, ok, url.Values{"csrf": {key}, "reason": {"x"}, "recipient": {"juan@empresa.example"}}); r.code != http.StatusNotFound {
			t.Errorf("POST %s on another tenant's: %d", action, r.code)
		}
	}
	if v := e.view(id); v.Recipients[0].State != store.StateHeld || len(v.Events) != 1 {
		t.Errorf("another tenant's message changed: %+v", v)
	}
	// Its own tenant finds it.
	if r := e.get("/console/?q=juan%40empresa.example", e.signIn(helpdeskToken)); !strings.Contains(r.body, `href="/console/messages/`+id+`"`) {
		t.Errorf("the helpdesk does not find its own: %.500s", r.body)
	}
}

func TestSessionExpiry(t *testing.T) {
	e := newEnv(t, nil)
	ck := e.signIn(helpdeskToken)
	e.clk.Advance(29 * time.Minute)
	if r := e.get("/console/", ck); r.code != 200 || !strings.Contains(r.body, "helpdesk") {
		t.Fatalf("29 minutes idle: %d", r.code)
	}
	e.clk.Advance(30 * time.Minute)
	if r := e.get("/console/lanes", ck); r.code != http.StatusUnauthorized || !strings.Contains(r.body, "Your session has ended.") {
		t.Fatalf("30 minutes idle: %d %.300s", r.code, r.body)
	}
	// Busy, a session still ends two hours after sign-in.
	ck = e.signIn(helpdeskToken)
	for range 7 {
		e.clk.Advance(15 * time.Minute)
		if r := e.get("/console/", ck); r.code != 200 || !strings.Contains(r.body, "helpdesk") {
			t.Fatalf("busy session before its end: %d", r.code)
		}
	}
	e.clk.Advance(15 * time.Minute)
	if r := e.get("/console/lanes", ck); r.code != http.StatusUnauthorized {
		t.Fatalf("two hours after sign-in: %d", r.code)
	}
	if n := e.con.sessions.(*sessions).count(); n != 0 { // each was dropped when seen ended
		t.Errorf("%d sessions kept, want none", n)
	}
}

func TestSessionsAreBounded(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.MaxSessions = 3 })
	var cks []*http.Cookie
	for range 3 {
		cks = append(cks, e.signIn(helpdeskToken))
		e.clk.Advance(time.Minute)
	}
	e.get("/console/", cks[0]) // the first is the most recently seen now
	e.signIn(readerToken)
	if n := e.con.sessions.(*sessions).count(); n != 3 {
		t.Errorf("%d sessions kept, want 3", n)
	}
	for i, want := range []int{200, 401, 200} {
		if r := e.get("/console/lanes", cks[i]); r.code != want {
			t.Errorf("session %d: %d, want %d", i, r.code, want)
		}
	}
}

func TestSignOut(t *testing.T) {
	e := newEnv(t, nil)
	ck := e.signIn(helpdeskToken)
	key := e.csrf("/console/", ck)
	if r := e.post("/console/signout", ck, url.Values{}); r.code != http.StatusForbidden {
		t.Errorf("sign-out without the form key: %d", r.code)
	}
	r := e.post("/console/signout", ck, url.Values{"csrf": {key}})
	if r.code != http.StatusSeeOther || r.location != "/console/?signed_out=1" || len(r.cookies) != 1 || r.cookies[0].MaxAge >= 0 {
		t.Fatalf("sign-out: %d %q %+v", r.code, r.location, r.cookies)
	}
	if r := e.get("/console/", ck); strings.Contains(r.body, "helpdesk") || !strings.Contains(r.body, `action="/console/signin"`) {
		t.Errorf("after sign-out the old cookie shows %.300s", r.body)
	}
	if n := e.con.sessions.(*sessions).count(); n != 0 {
		t.Errorf("%d sessions after sign-out", n)
	}
}

func TestSearch(t *testing.T) {
	e := newEnv(t, nil)
	juan := e.enqueue("issuer", 1, "juan@empresa.example", "Descargue su certificado", store.StateHeld)
	ana := e.enqueue("issuer", 90, "ana@empresa.example", "Su voucher 50%", store.StateQueued)
	ck := e.signIn(helpdeskToken)
	for _, c := range []struct {
		query string
		want  []string
	}{
		{"q=juan%40empresa.example", []string{juan}},
		{"q=JUAN%40empresa.example", nil},
		{"q=CERTIFICADO", []string{juan}},
		{"q=50%25", []string{ana}},
		{"q=" + url.QueryEscape("<dl-0090@ca.example>"), []string{ana}},
		{"q=dl-0001%40ca.example", []string{juan}}, // not a recipient: then a Message-ID
		{"q=dl-0001%40ca.example&in=recipient", nil},
		{"q=" + juan, []string{juan}},
		{"q=" + juan + "&in=message_id", []string{juan}},
		{"q=su&in=subject", []string{ana, juan}},
		{"state=held", []string{juan}},
		{"since=2026-11-23T10:00", []string{ana}},
		{"until=2026-11-23T10:00", []string{juan}},
		{"since=2026-11-23&until=2026-11-23", []string{ana, juan}},
		{"since=2026-11-24", nil},
	} {
		r := e.get("/console/?"+c.query, ck)
		var got []string
		for _, m := range regexp.MustCompile(`href="/console/messages/([^"]+)"`).FindAllStringSubmatch(r.body, -1) {
			got = append(got, m[1])
		}
		if r.code != 200 || !slices.Equal(got, c.want) {
			t.Errorf("search %s: %d %v, want %v", c.query, r.code, got, c.want)
		}
	}
	for _, c := range []struct{ query, want string }{
		{"since=yesterday", "Write times as"},
		{"since=2026-11-24&until=2026-11-23", "The start must come before the end."},
		{"state=lost", "Unknown state."},
		{"q=" + strings.Repeat("x", 300), "too long"},
	} {
		if r := e.get("/console/?"+c.query, ck); r.code != http.StatusBadRequest || !strings.Contains(r.body, c.want) {
			t.Errorf("search %s: %d, want 400 saying %q", c.query, r.code, c.want)
		}
	}
}

func TestSearchPages(t *testing.T) {
	e := newEnv(t, nil)
	for i := range pageSize + 3 {
		e.enqueue("issuer", i, "juan@empresa.example", "Certificado", store.StateQueued)
	}
	ck := e.signIn(helpdeskToken)
	r := e.get("/console/?q=juan%40empresa.example", ck)
	next := regexp.MustCompile(`<a href="(/console/\?[^"]+)">Older mail</a>`).FindStringSubmatch(r.body)
	if n := strings.Count(r.body, `href="/console/messages/`); n != pageSize || next == nil {
		t.Fatalf("first page: %d messages, next %v", n, next)
	}
	r = e.get(strings.ReplaceAll(next[1], "&amp;", "&"), ck)
	if n := strings.Count(r.body, `href="/console/messages/`); n != 3 || strings.Contains(r.body, "Older mail") {
		t.Errorf("second page: %d messages; %.300s", n, r.body)
	}
}

func TestLanes(t *testing.T) {
	e := newEnv(t, nil)
	rk := e.signIn(helpdeskToken)
	r := e.get("/console/lanes", rk)
	if r.code != 200 || !strings.Contains(r.body, "gmail") || strings.Contains(r.body, "empresa.example") ||
		strings.Contains(r.body, "421 from gmail") || strings.Contains(r.body, `action="/console/lanes/`) ||
		!strings.Contains(r.body, "120/min") || !strings.Contains(r.body, "Read only") {
		t.Errorf("a one-tenant session's lanes: %d %.3000s", r.code, r.body)
	}
	key := csrfRE.FindStringSubmatch(r.body)[1]
	if r := e.post("/console/lanes/gmail/pause", rk, url.Values{"csrf": {key}, "reason": {"mine"}}); r.code != http.StatusForbidden {
		t.Errorf("a release session pausing a lane: %d", r.code)
	}

	ok := e.signIn(opsToken)
	r = e.get("/console/lanes", ok)
	if !strings.Contains(r.body, "421 from gmail for tenant other") || !strings.Contains(r.body, "default:empresa.example") ||
		!strings.Contains(r.body, `action="/console/lanes/gmail/pause"`) || !strings.Contains(r.body, "unlimited") {
		t.Errorf("an admin of every tenant's lanes: %.3000s", r.body)
	}
	key = csrfRE.FindStringSubmatch(r.body)[1]
	if r := e.post("/console/lanes/nowhere/pause", ok, url.Values{"csrf": {key}, "reason": {"x"}}); r.code != http.StatusNotFound {
		t.Errorf("pausing an unknown lane: %d", r.code)
	}
	r = e.post("/console/lanes/gmail/pause", ok, url.Values{"csrf": {key}, "reason": {"gmail incident"}})
	if r.code != http.StatusSeeOther || r.location != "/console/lanes?done=paused&n=1" {
		t.Fatalf("pause: %d %q", r.code, r.location)
	}
	if r := e.get(r.location, ok); !strings.Contains(r.body, "Lane paused.") || !strings.Contains(r.body, `action="/console/lanes/gmail/resume"`) {
		t.Errorf("after pausing: %.3000s", r.body)
	}
	if len(e.lanes.changes) != 1 || !strings.HasPrefix(e.lanes.changes[0], "paused gmail by console:ops@127.0.0.1:") ||
		!strings.HasSuffix(e.lanes.changes[0], ": gmail incident") {
		t.Errorf("lane changes %q", e.lanes.changes)
	}
}

func TestLanguages(t *testing.T) {
	e := newEnv(t, nil)
	for _, c := range []struct{ accept, query, lang, button string }{
		{"es-AR,es;q=0.9", "", "es", "Ingresar"},
		{"pt-BR", "", "pt-BR", "Entrar"},
		{"pt-PT,pt;q=0.8", "", "pt-BR", "Entrar"},
		{"fr-CA", "", "fr", "Se connecter"},
		{"de", "", "en", "Sign in"},
		{"es", "?lang=fr", "fr", "Se connecter"},
	} {
		r := e.do("GET", "/console/"+c.query, nil, nil, map[string]string{"Accept-Language": c.accept})
		if !strings.Contains(r.body, `<html lang="`+c.lang+`">`) || !strings.Contains(r.body, ">"+c.button+"</button>") {
			t.Errorf("Accept-Language %q %s: want %s with %q; %.400s", c.accept, c.query, c.lang, c.button, r.body)
		}
	}
	keys := slices.Sorted(maps.Keys(texts["en"]))
	for l, words := range texts {
		if got := slices.Sorted(maps.Keys(words)); !slices.Equal(got, keys) {
			t.Errorf("%s has keys %v, want %v", l, got, keys)
		}
		for k, w := range words {
			if strings.Count(w, "%d") != strings.Count(texts["en"][k], "%d") || w == "" {
				t.Errorf("%s %s = %q", l, k, w)
			}
		}
	}
}
