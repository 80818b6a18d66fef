package console

import (
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certgate/certgate/api"
	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/store"
)

// keyFile writes a session key file as an operator would (openssl rand
// -hex 32) and reads it back as cmd/certgate does.
func keyFile(t *testing.T, text string) []byte {
	t.Helper()
	p := filepath.Join(t.TempDir(), "session.key")
	if err := os.WriteFile(p, []byte(text+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	key, err := config.ReadSecret(p, "")
	if err != nil {
		t.Fatal(err)
	}
	return []byte(key)
}

const (
	testKey  = "3f1c0e5a9b7d2468ace13579bdf02468ace13579bdf02468ace13579bdf0246"
	otherKey = "0000000000000000000000000000000000000000000000000000000000000001"
)

// sealedEnv is node A of a cluster: sessions sealed with key.
func sealedEnv(t *testing.T, key string) *env {
	return newEnv(t, func(o *Options) { o.SessionKey = keyFile(t, key) })
}

// node is another node over the same store and clock, its console built
// from A's options changed by tweak.
func (e *env) node(tweak func(*Options)) *env {
	n := *e
	o := e.o
	tweak(&o)
	n.serve(o)
	return &n
}

// sessionCookie is the session cookie a reply set, nil for none.
func (r reply) sessionCookie() *http.Cookie {
	for _, c := range r.cookies {
		if c.Name == cookieName {
			return c
		}
	}
	return nil
}

// signedOut: the request was refused as one without a session.
func signedOut(r reply) bool {
	return r.code == http.StatusUnauthorized && strings.Contains(r.body, "Your session has ended.")
}

// TestSealedSessionAcrossNodes: signed in on A, a person goes on on B,
// whose console holds the same key file, forms included; a node with
// another key does not know them.
func TestSealedSessionAcrossNodes(t *testing.T) {
	a := sealedEnv(t, testKey)
	b := a.node(func(o *Options) { o.SessionKey = keyFile(t, testKey) })
	id := a.enqueue("issuer", 1, "juan@empresa.example", "Su certificado", store.StateHeld)
	path := "/console/messages/" + id

	ck := a.signIn(helpdeskToken)
	if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/console/" || ck.Secure ||
		ck.MaxAge != int((2*time.Hour)/time.Second) {
		t.Errorf("sealed cookie %+v", ck)
	}
	for _, secret := range []string{helpdeskToken, "helpdesk", testKey} {
		if strings.Contains(ck.Value, secret) {
			t.Errorf("the cookie shows %q: %s", secret, ck.Value)
		}
	}
	keyA := a.csrf(path, ck)
	if keyB := b.csrf(path, ck); keyB != keyA {
		t.Errorf("form key on B %q, on A %q: want the same, derived", keyB, keyA)
	}
	if r := b.get(path, ck); r.code != 200 || !strings.Contains(r.body, "<b>helpdesk</b>") || !strings.Contains(r.body, "juan@empresa.example") {
		t.Fatalf("A's session on B: %d %.300s", r.code, r.body)
	}
	// Another session's form key is refused on B, A's own is accepted.
	if r := b.post(path+"/release", ck, url.Values{"csrf": {a.csrf(path, a.signIn(helpdeskToken))}, "reason": {"x"}}); r.code != http.StatusForbidden {
		t.Errorf("release on B with another session's form key: %d", r.code)
	}
	r := b.post(path+"/release", ck, url.Values{"csrf": {keyA}, "reason": {"ticket 4411"}})
	if r.code != http.StatusSeeOther || r.location != path+"?done=released&n=1" {
		t.Fatalf("release on B with A's form key: %d %q %.300s", r.code, r.location, r.body)
	}
	if v := a.view(id); v.Recipients[0].State != store.StateQueued || !hasEvent(v, "released", "console:helpdesk@", "released: ticket 4411") {
		t.Errorf("after the release on B: %s, events %+v", v.Recipients[0].State, v.Events)
	}

	// A node with another key knows no such session.
	c := a.node(func(o *Options) { o.SessionKey = keyFile(t, otherKey) })
	if r := c.get("/console/lanes", ck); !signedOut(r) {
		t.Errorf("A's session on a node with another key: %d %.300s", r.code, r.body)
	}
	if r := c.get("/console/", ck); r.code != 200 || !strings.Contains(r.body, `action="/console/signin"`) || strings.Contains(r.body, "helpdesk") {
		t.Errorf("home on a node with another key: %d %.300s", r.code, r.body)
	}
	if r := c.post(path+"/release", ck, url.Values{"csrf": {keyA}, "reason": {"x"}}); !signedOut(r) {
		t.Errorf("A's form on a node with another key: %d", r.code)
	}
	// Nor does a node keeping sessions in memory.
	m := a.node(func(o *Options) { o.SessionKey = nil })
	if r := m.get("/console/lanes", ck); !signedOut(r) {
		t.Errorf("A's session on a node without a key: %d", r.code)
	}

	// Sign-out on B clears the cookie.
	r = b.post("/console/signout", ck, url.Values{"csrf": {keyA}})
	if out := r.sessionCookie(); r.code != http.StatusSeeOther || out == nil || out.MaxAge >= 0 || out.Value != "" {
		t.Errorf("sign-out: %d %+v", r.code, r.cookies)
	}
}

// TestSealedSessionsAreNotCounted: max_sessions bounds memory, and
// sealed sessions take none.
func TestSealedSessionsAreNotCounted(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.SessionKey = keyFile(t, testKey); o.MaxSessions = 1 })
	var cks []*http.Cookie
	for range 3 {
		cks = append(cks, e.signIn(helpdeskToken))
	}
	for i, ck := range cks {
		if r := e.get("/console/lanes", ck); r.code != 200 {
			t.Errorf("session %d of 3 with max_sessions 1: %d", i, r.code)
		}
	}
}

// TestSealedCookieTampered: any change to a sealed cookie is refused.
func TestSealedCookieTampered(t *testing.T) {
	e := sealedEnv(t, testKey)
	ck := e.signIn(helpdeskToken)
	if r := e.get("/console/lanes", ck); r.code != 200 {
		t.Fatalf("untouched cookie: %d", r.code)
	}
	v := ck.Value
	flip := func(i int) string {
		b := []byte(v)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	for name, bad := range map[string]string{
		"first character":  flip(0),
		"a middle one":     flip(len(v) / 2),
		"the last one":     flip(len(v) - 1),
		"cut short":        v[:len(v)-4],
		"lengthened":       v + "AAAA",
		"padded":           v + "=",
		"empty":            "",
		"an in-memory id":  random(32),
		"twice":            v + v,
		"over a kilobyte":  strings.Repeat("A", 5000),
		"not base64":       "!!" + v[2:],
		"another version":  sealEncoding.EncodeToString(append([]byte{2}, mustDecode(t, v)[1:]...)),
		"nonce swapped in": swapNonce(t, v, e.signIn(helpdeskToken).Value),
	} {
		if r := e.get("/console/lanes", &http.Cookie{Name: cookieName, Value: bad}); !signedOut(r) {
			t.Errorf("%s: %d", name, r.code)
		}
	}
}

func mustDecode(t *testing.T, v string) []byte {
	t.Helper()
	b, err := sealEncoding.DecodeString(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// swapNonce is v with the nonce of w: each half valid, together not.
func swapNonce(t *testing.T, v, w string) string {
	bv, bw := mustDecode(t, v), mustDecode(t, w)
	copy(bv[1:13], bw[1:13])
	return sealEncoding.EncodeToString(bv)
}

// TestSealedSessionExpiry: idle time counts from the last request that
// re-sealed the cookie, and max_age from sign-in however busy; a cookie
// kept from before idles out on its own.
func TestSealedSessionExpiry(t *testing.T) {
	e := sealedEnv(t, testKey) // 30m idle, 2h in all
	ck := e.signIn(helpdeskToken)
	first := ck
	e.clk.Advance(29 * time.Minute)
	r := e.get("/console/", ck)
	if r.code != 200 || !strings.Contains(r.body, "helpdesk") || r.sessionCookie() == nil {
		t.Fatalf("29 minutes idle: %d, cookie %v", r.code, r.sessionCookie())
	}
	ck = r.sessionCookie()
	e.clk.Advance(29 * time.Minute)
	if r := e.get("/console/lanes", first); !signedOut(r) {
		t.Errorf("the cookie of sign-in, 58 minutes later: %d", r.code)
	}
	if r := e.get("/console/lanes", ck); r.code != 200 {
		t.Fatalf("the re-sealed cookie, 29 minutes idle: %d", r.code)
	}
	e.clk.Advance(30 * time.Minute)
	if r := e.get("/console/lanes", ck); !signedOut(r) {
		t.Errorf("30 minutes idle: %d", r.code)
	}

	ck = e.signIn(helpdeskToken)
	for i := range 7 {
		e.clk.Advance(15 * time.Minute)
		r := e.get("/console/", ck)
		next := r.sessionCookie()
		if r.code != 200 || next == nil {
			t.Fatalf("busy session, %d minutes in: %d, cookie %v", 15*(i+1), r.code, next)
		}
		if want := int((2*time.Hour - time.Duration(i+1)*15*time.Minute) / time.Second); next.MaxAge != want {
			t.Errorf("re-sealed cookie lives %ds, want %ds (to the session's end)", next.MaxAge, want)
		}
		ck = next
	}
	e.clk.Advance(15 * time.Minute)
	if r := e.get("/console/lanes", ck); !signedOut(r) {
		t.Errorf("two hours after sign-in: %d", r.code)
	}
}

// TestSealedCookieReissue: the cookie is re-sealed on a request a
// minute or more after it was, not sooner; the session and its form key
// stay.
func TestSealedCookieReissue(t *testing.T) {
	e := sealedEnv(t, testKey)
	ck := e.signIn(helpdeskToken)
	key := e.csrf("/console/", ck)
	e.clk.Advance(59 * time.Second)
	if r := e.get("/console/", ck); r.code != 200 || r.sessionCookie() != nil {
		t.Errorf("59s after sign-in: %d, cookie %v", r.code, r.sessionCookie())
	}
	e.clk.Advance(time.Second)
	r := e.get("/console/", ck)
	next := r.sessionCookie()
	if r.code != 200 || next == nil || next.Value == ck.Value {
		t.Fatalf("a minute after sign-in: %d, cookie %v", r.code, next)
	}
	if !next.HttpOnly || next.SameSite != http.SameSiteStrictMode || next.Path != "/console/" ||
		next.MaxAge != int((2*time.Hour-time.Minute)/time.Second) {
		t.Errorf("re-sealed cookie %+v", next)
	}
	if m := csrfRE.FindStringSubmatch(r.body); m == nil || m[1] != key {
		t.Errorf("form key after re-sealing %v, want %q", m, key)
	}
	if r := e.get("/console/", next); r.code != 200 || r.sessionCookie() != nil {
		t.Errorf("the new cookie at once: %d, cookie %v", r.code, r.sessionCookie())
	}
	// Behind a TLS proxy the re-sealed cookie is Secure too.
	s := newEnv(t, func(o *Options) { o.SessionKey = keyFile(t, testKey); o.SecureCookie = true })
	ck = s.signIn(helpdeskToken)
	s.clk.Advance(time.Minute)
	if c := s.get("/console/", ck).sessionCookie(); c == nil || !c.Secure {
		t.Errorf("re-sealed with SecureCookie: %+v", c)
	}
}

// TestSealedSessionFollowsTokens: a sealed session is its token as
// configured on the node that opens it: gone when the token is, ended
// when it has a new secret, narrowed when its scopes are.
func TestSealedSessionFollowsTokens(t *testing.T) {
	a := sealedEnv(t, testKey)
	hk, ok := a.signIn(helpdeskToken), a.signIn(opsToken)
	without := func(change func(*config.APIToken) bool) *api.Tokens {
		var cfg []config.APIToken
		for _, tk := range testTokens(t) {
			if change(&tk) {
				cfg = append(cfg, tk)
			}
		}
		return loadTokens(t, cfg)
	}
	removed := a.node(func(o *Options) {
		o.Tokens = without(func(tk *config.APIToken) bool { return tk.Name != "helpdesk" })
	})
	if r := removed.get("/console/lanes", hk); !signedOut(r) {
		t.Errorf("helpdesk's session on a node without the token: %d", r.code)
	}
	if r := removed.get("/console/lanes", ok); r.code != 200 {
		t.Errorf("ops's session on the same node: %d", r.code)
	}

	rotated := a.node(func(o *Options) {
		t.Setenv("CERTGATE_CONSOLE_TEST_NEW", "helpdesk-new-secret-0123456789")
		o.Tokens = without(func(tk *config.APIToken) bool {
			if tk.Name == "helpdesk" {
				tk.TokenEnv = "CERTGATE_CONSOLE_TEST_NEW"
			}
			return true
		})
	})
	if r := rotated.get("/console/lanes", hk); !signedOut(r) {
		t.Errorf("helpdesk's session where the token has a new secret: %d", r.code)
	}

	id := a.enqueue("issuer", 1, "juan@empresa.example", "Su certificado", store.StateHeld)
	path := "/console/messages/" + id
	narrowed := a.node(func(o *Options) {
		o.Tokens = without(func(tk *config.APIToken) bool {
			if tk.Name == "helpdesk" {
				tk.Scopes = slices.DeleteFunc(slices.Clone(tk.Scopes), func(s config.Scope) bool { return s == config.ScopeRelease })
			}
			return true
		})
	})
	r := narrowed.post(path+"/release", hk, url.Values{"csrf": {a.csrf(path, hk)}, "reason": {"x"}})
	if r.code != http.StatusForbidden || !strings.Contains(r.body, "Your token may not do this.") {
		t.Errorf("release where the token lost its release scope: %d", r.code)
	}
	if st := a.view(id).Recipients[0].State; st != store.StateHeld {
		t.Errorf("the copy is %s, want held", st)
	}
}

// A key shorter than config allows is a caller's mistake, not a silent
// weak seal.
func TestSealedShortKeyPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("New with a 31-byte session key did not panic")
		}
	}()
	New(Options{SessionKey: []byte(strings.Repeat("k", MinSessionKey-1))})
}
