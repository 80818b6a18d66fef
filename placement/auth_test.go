package placement

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	"github.com/emersion/go-sasl"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/sim"
)

const (
	seedUser     = "seed1@gmail.com"
	seedPassword = `pa"ss\word`
	goodToken    = "ya29.good-token"
)

func TestXOAUTH2ClientSendsTheExactInitialResponse(t *testing.T) {
	x := &XOAUTH2Client{Username: "seed1@outlook.com", Token: "EwB4A8l6"}
	mech, ir, err := x.Start()
	if err != nil || mech != "XOAUTH2" {
		t.Fatalf("Start: %q, %v", mech, err)
	}
	if want := "user=seed1@outlook.com\x01auth=Bearer EwB4A8l6\x01\x01"; string(ir) != want {
		t.Fatalf("initial response %q, want %q", ir, want)
	}
	if x.Err() != nil {
		t.Fatalf("Err before any challenge: %v", x.Err())
	}
}

func TestXOAUTH2ClientAnswersTheErrorWithAnEmptyResponse(t *testing.T) {
	x := &XOAUTH2Client{Username: "u", Token: "secret-token"}
	x.Start()
	resp, err := x.Next([]byte(`{"status":"401","schemes":"Bearer","scope":"https://mail.google.com/"}`))
	if err != nil || resp == nil || len(resp) != 0 {
		t.Fatalf("Next: %q (nil %v), %v; want an empty, non-nil response", resp, resp == nil, err)
	}
	msg := x.Err().Error()
	for _, want := range []string{`status "401"`, `schemes "Bearer"`, "mail.google.com"} {
		if !strings.Contains(msg, want) {
			t.Errorf("Err %q lacks %s", msg, want)
		}
	}
	if strings.Contains(msg, "secret-token") {
		t.Errorf("Err %q holds the token", msg)
	}
	if _, err := x.Next([]byte("{}")); err == nil {
		t.Error("a second challenge was answered")
	}
}

func TestXOAUTH2ClientBoundsAHostileError(t *testing.T) {
	for name, ch := range map[string][]byte{
		"not json": []byte("\x1b[31mnot json\r\n"),
		"huge":     []byte(`{"status":"` + strings.Repeat("4", 1<<20) + `"}`),
		"long":     []byte(`{"status":"401","scope":"` + strings.Repeat("\x07s", 1000) + `"}`),
	} {
		x := &XOAUTH2Client{Username: "u", Token: "t"}
		if _, err := x.Next(ch); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		msg := x.Err().Error()
		if len(msg) > 400 || strings.ContainsFunc(msg, func(r rune) bool { return r < ' ' || r > '~' }) {
			t.Errorf("%s: Err of %d bytes: %q", name, len(msg), msg)
		}
	}
	if _, _, err := (&XOAUTH2Client{Username: "u\x01", Token: "t"}).Start(); err == nil {
		t.Error("a ^A in the user name was sent")
	}
}

// writeFile writes a secret file in dir and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestTokenFileIsReadAtEachLogin(t *testing.T) {
	dir := t.TempDir()
	f := writeFile(t, dir, "token", "first\n")
	cr := NewCredentials(config.SeedMailbox{IMAP: config.SeedIMAP{Username: "u", OAuth2: &config.SeedOAuth{TokenFile: f}}}, nil)
	for _, want := range []string{"first", "second"} {
		if want == "second" {
			writeFile(t, dir, "token", "  second\r\n")
		}
		got, err := cr.token()
		if err != nil || got != want {
			t.Fatalf("token %q, %v; want %q", got, err, want)
		}
	}
	os.Remove(f)
	if _, err := cr.token(); err == nil || strings.Contains(err.Error(), "second") {
		t.Fatalf("missing token file: %v", err)
	}
}

// tokenEndpoint is an OAuth 2.0 token endpoint on loopback that checks
// the refresh request and counts refreshes.
type tokenEndpoint struct {
	*httptest.Server
	refreshes atomic.Int32
	expiresIn int    // seconds
	rotateTo  string // a new refresh token to hand out, if any

	mu        sync.Mutex
	lastRT    string
	fail      bool
	validRT   map[string]bool
	accessSeq int
}

func newTokenEndpoint(t *testing.T, expiresIn int) *tokenEndpoint {
	e := &tokenEndpoint{expiresIn: expiresIn, validRT: map[string]bool{"refresh-1": true}}
	e.Server = httptest.NewServer(http.HandlerFunc(e.serve))
	t.Cleanup(e.Close)
	return e
}

func (e *tokenEndpoint) serve(w http.ResponseWriter, r *http.Request) {
	e.refreshes.Add(1)
	r.ParseForm()
	id, secret, ok := r.BasicAuth()
	if !ok {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	rt := r.PostForm.Get("refresh_token")
	e.mu.Lock()
	defer e.mu.Unlock()
	e.lastRT = rt
	w.Header().Set("Content-Type", "application/json")
	if e.fail || r.PostForm.Get("grant_type") != "refresh_token" || id != "certgate" || secret != "client-secret" || !e.validRT[rt] {
		w.WriteHeader(http.StatusBadRequest)
		// A hostile or careless endpoint echoing the request.
		fmt.Fprintf(w, `{"error":"invalid_grant","error_description":"bad refresh token %s for %s"}`, rt, secret)
		return
	}
	e.accessSeq++
	resp := map[string]any{"access_token": fmt.Sprintf("access-%d", e.accessSeq), "token_type": "Bearer", "expires_in": e.expiresIn}
	if e.rotateTo != "" {
		resp["refresh_token"] = e.rotateTo
		e.validRT[e.rotateTo] = true
	}
	json.NewEncoder(w).Encode(resp)
}

func refreshCredentials(t *testing.T, e *tokenEndpoint, dir string) *Credentials {
	o := &config.SeedOAuth{
		TokenURL:         e.URL + "/token",
		ClientID:         "certgate",
		ClientSecretFile: writeFile(t, dir, "client-secret", "client-secret\n"),
		RefreshTokenFile: writeFile(t, dir, "refresh-token", "refresh-1\n"),
	}
	return NewCredentials(config.SeedMailbox{IMAP: config.SeedIMAP{Username: "u", OAuth2: o}}, e.Client())
}

func TestRefreshedTokenIsKeptUntilNearExpiry(t *testing.T) {
	e := newTokenEndpoint(t, 3600)
	cr := refreshCredentials(t, e, t.TempDir())
	for range 3 {
		if tok, err := cr.token(); err != nil || tok != "access-1" {
			t.Fatalf("token %q, %v", tok, err)
		}
	}
	if n := e.refreshes.Load(); n != 1 {
		t.Fatalf("%d refreshes for three logins within the hour, want 1", n)
	}
	cr.forgetToken() // the server refused it
	if tok, err := cr.token(); err != nil || tok != "access-2" || e.refreshes.Load() != 2 {
		t.Fatalf("after forgetToken: %q, %v, %d refreshes", tok, err, e.refreshes.Load())
	}
}

func TestTokenNearExpiryIsRefreshed(t *testing.T) {
	e := newTokenEndpoint(t, int(tokenEarlyExpiry/time.Second)-10) // expired as soon as it comes
	cr := refreshCredentials(t, e, t.TempDir())
	cr.token()
	if tok, err := cr.token(); err != nil || tok != "access-2" || e.refreshes.Load() != 2 {
		t.Fatalf("token %q, %v after %d refreshes; want access-2 after 2", tok, err, e.refreshes.Load())
	}
}

func TestRotatedRefreshTokenIsUsedUntilTheFileChanges(t *testing.T) {
	e := newTokenEndpoint(t, 1) // refresh at every call
	e.rotateTo = "refresh-2"
	dir := t.TempDir()
	cr := refreshCredentials(t, e, dir)
	var sent []string
	step := func() {
		t.Helper()
		if _, err := cr.token(); err != nil {
			t.Fatal(err)
		}
		e.mu.Lock()
		sent = append(sent, e.lastRT)
		e.mu.Unlock()
	}
	step()
	step()
	writeFile(t, dir, "refresh-token", "refresh-3")
	e.mu.Lock()
	e.validRT["refresh-3"] = true
	e.rotateTo = ""
	e.mu.Unlock()
	step()
	if got := strings.Join(sent, " "); got != "refresh-1 refresh-2 refresh-3" {
		t.Fatalf("refresh tokens sent: %s", got)
	}
}

func TestRefreshErrorHoldsNoSecret(t *testing.T) {
	e := newTokenEndpoint(t, 3600)
	e.fail = true
	cr := refreshCredentials(t, e, t.TempDir())
	_, err := cr.token()
	if err == nil {
		t.Fatal("a refused refresh gave a token")
	}
	msg := err.Error()
	if !strings.Contains(msg, "invalid_grant") || !strings.Contains(msg, "400") {
		t.Errorf("error %q does not say why", msg)
	}
	// The endpoint's description echoes both secrets.
	if strings.Contains(msg, "refresh-1") || strings.Contains(msg, "client-secret") {
		t.Errorf("error %q holds a secret", msg)
	}
}

// selfSigned makes a certificate for 127.0.0.1 and localhost, and
// returns a server configuration and a ca_file that trusts it.
func selfSigned(t *testing.T) (*tls.Config, string) {
	t.Helper()
	c, err := sim.SelfSigned("127.0.0.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	return c.ServerConfig(), writeFile(t, t.TempDir(), "ca.pem", string(c.CertPEM))
}

// imapTest is a go-imap/v2 server (imapmemserver behind a session that
// offers chosen SASL mechanisms, XOAUTH2 among them) on loopback,
// recording how each client logged in.
type imapTest struct {
	addr string

	mu     sync.Mutex
	mechs  []string
	logins []string
}

func (s *imapTest) setMechs(mechs ...string) {
	s.mu.Lock()
	s.mechs = mechs
	s.mu.Unlock()
}

func (s *imapTest) record(how string) {
	s.mu.Lock()
	s.logins = append(s.logins, how)
	s.mu.Unlock()
}

func (s *imapTest) lastLogin() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.logins) == 0 {
		return ""
	}
	return s.logins[len(s.logins)-1]
}

type serverTLS int

const (
	plainServer serverTLS = iota
	implicitServer
	startTLSServer
)

func startIMAP(t *testing.T, mode serverTLS, mechs ...string) (*imapTest, string) {
	t.Helper()
	mem := imapmemserver.New()
	mem.AddUser(imapmemserver.NewUser(seedUser, seedPassword))
	s := &imapTest{mechs: mechs}
	opts := &imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return &saslSession{Session: mem.NewSession(), test: s}, nil, nil
		},
		Caps:         imap.CapSet{imap.CapIMAP4rev1: {}},
		InsecureAuth: mode == plainServer,
		Logger:       discardLogger{},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var ca string
	if mode != plainServer {
		var tc *tls.Config
		tc, ca = selfSigned(t)
		if mode == implicitServer {
			ln = tls.NewListener(ln, tc)
		} else {
			opts.TLSConfig = tc
		}
	}
	srv := imapserver.New(opts)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	s.addr = ln.Addr().String()
	return s, ca
}

type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}

// saslSession adds SASL mechanisms of the test's choice to
// imapmemserver's session.
type saslSession struct {
	imapserver.Session
	test *imapTest
}

func (s *saslSession) Login(username, password string) error {
	s.test.record("LOGIN")
	return s.Session.Login(username, password)
}

func (s *saslSession) AuthenticateMechanisms() []string {
	s.test.mu.Lock()
	defer s.test.mu.Unlock()
	return s.test.mechs
}

func (s *saslSession) Authenticate(mech string) (sasl.Server, error) {
	switch mech {
	case "PLAIN":
		return sasl.NewPlainServer(func(identity, username, password string) error {
			s.test.record("PLAIN")
			return s.Session.Login(username, password)
		}), nil
	case "XOAUTH2":
		return &xoauth2Server{login: func(user, token string) bool {
			s.test.record("XOAUTH2 " + token)
			return token == goodToken && s.Session.Login(user, seedPassword) == nil
		}}, nil
	}
	return nil, errors.New("no such mechanism")
}

// xoauth2Server is the server side as Gmail documents it: a refused token
// gets a JSON challenge, the client's empty response then a NO.
type xoauth2Server struct {
	login   func(user, token string) bool
	refused bool
}

func (x *xoauth2Server) Next(resp []byte) ([]byte, bool, error) {
	switch {
	case x.refused:
		if len(resp) != 0 {
			return nil, false, errors.New("expected an empty response")
		}
		return nil, false, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeAuthenticationFailed, Text: "Invalid credentials (Failure)"}
	case resp == nil:
		return nil, false, nil // no SASL-IR: ask for the initial response
	}
	if rest, ok := strings.CutPrefix(string(resp), "user="); ok {
		user, rest, _ := strings.Cut(rest, "\x01auth=Bearer ")
		if token, ok := strings.CutSuffix(rest, "\x01\x01"); ok && x.login(user, token) {
			return nil, true, nil
		}
	}
	x.refused = true
	return []byte(`{"status":"401","schemes":"Bearer","scope":"https://mail.google.com/"}`), false, nil
}

func seedMailbox(addr string, tlsMode config.IMAPTLS) config.SeedMailbox {
	return config.SeedMailbox{Name: "gmail-1", Provider: "gmail", Address: seedUser, Junk: "auto",
		IMAP: config.SeedIMAP{Addr: addr, TLS: tlsMode, Username: seedUser}}
}

func withPassword(t *testing.T, m config.SeedMailbox, password string) config.SeedMailbox {
	m.IMAP.PasswordFile = writeFile(t, t.TempDir(), "password", password+"\n")
	return m
}

func withTokenFile(t *testing.T, m config.SeedMailbox, token string) config.SeedMailbox {
	m.IMAP.OAuth2 = &config.SeedOAuth{TokenFile: writeFile(t, t.TempDir(), "token", token)}
	return m
}

func dialAndLogin(t *testing.T, m config.SeedMailbox) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, m, nil)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := Login(ctx, c, m, NewCredentials(m, nil)); err != nil {
		return err
	}
	// Not c.State(): go-imap/v2 wakes the waiter before it sets the state.
	if err := c.Create("Seeds", nil).Wait(); err != nil {
		return fmt.Errorf("create after Login: %w", err)
	}
	return c.Logout().Wait()
}

func TestLoginPicksPlainWhenOffered(t *testing.T) {
	s, _ := startIMAP(t, plainServer, "PLAIN")
	if err := dialAndLogin(t, withPassword(t, seedMailbox(s.addr, config.IMAPNoTLS), seedPassword)); err != nil {
		t.Fatal(err)
	}
	if got := s.lastLogin(); got != "PLAIN" {
		t.Fatalf("logged in with %q, want PLAIN", got)
	}
}

func TestLoginFallsBackToLOGIN(t *testing.T) {
	s, _ := startIMAP(t, plainServer) // no AUTH= at all
	if err := dialAndLogin(t, withPassword(t, seedMailbox(s.addr, config.IMAPNoTLS), seedPassword)); err != nil {
		t.Fatal(err)
	}
	if got := s.lastLogin(); got != "LOGIN" {
		t.Fatalf("logged in with %q, want LOGIN", got)
	}
}

func TestLoginRefusedIsErrLoginRefused(t *testing.T) {
	s, _ := startIMAP(t, plainServer, "PLAIN")
	for _, mechs := range [][]string{{"PLAIN"}, nil} {
		s.setMechs(mechs...)
		err := dialAndLogin(t, withPassword(t, seedMailbox(s.addr, config.IMAPNoTLS), "wrong"))
		if !errors.Is(err, ErrLoginRefused) {
			t.Fatalf("%v: %v, want ErrLoginRefused", mechs, err)
		}
		if strings.Contains(err.Error(), "wrong") {
			t.Fatalf("error %q holds the password", err)
		}
	}
}

func TestImplicitTLSWithCAFile(t *testing.T) {
	s, ca := startIMAP(t, implicitServer, "PLAIN")
	m := withPassword(t, seedMailbox(s.addr, config.IMAPImplicit), seedPassword)
	if err := dialAndLogin(t, m); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a self-signed certificate without ca_file: %v", err)
	}
	m.IMAP.CAFile = ca
	if err := dialAndLogin(t, m); err != nil {
		t.Fatal(err)
	}
	if got := s.lastLogin(); got != "PLAIN" {
		t.Fatalf("logged in with %q, want PLAIN", got)
	}
}

func TestStartTLS(t *testing.T) {
	s, ca := startIMAP(t, startTLSServer, "PLAIN")
	m := withPassword(t, seedMailbox(s.addr, config.IMAPStartTLS), seedPassword)
	m.IMAP.CAFile = ca
	if err := dialAndLogin(t, m); err != nil {
		t.Fatal(err)
	}
	if got := s.lastLogin(); got != "PLAIN" {
		t.Fatalf("logged in with %q, want PLAIN", got)
	}
}

func TestLoginXOAUTH2(t *testing.T) {
	s, ca := startIMAP(t, implicitServer, "XOAUTH2", "PLAIN")
	m := withTokenFile(t, seedMailbox(s.addr, config.IMAPImplicit), goodToken)
	m.IMAP.CAFile = ca
	if err := dialAndLogin(t, m); err != nil {
		t.Fatal(err)
	}
	if got := s.lastLogin(); got != "XOAUTH2 "+goodToken {
		t.Fatalf("logged in with %q", got)
	}

	m = withTokenFile(t, m, "expired-token")
	err := dialAndLogin(t, m)
	if !errors.Is(err, ErrLoginRefused) || !strings.Contains(err.Error(), `status "401"`) || !strings.Contains(err.Error(), `schemes "Bearer"`) {
		t.Fatalf("refused token: %v; want ErrLoginRefused with the server's reason", err)
	}
	if strings.Contains(err.Error(), "expired-token") {
		t.Fatalf("error %q holds the token", err)
	}

	s.setMechs("PLAIN")
	if err := dialAndLogin(t, m); err == nil || !strings.Contains(err.Error(), "AUTH=XOAUTH2") {
		t.Fatalf("server without XOAUTH2: %v", err)
	}
}

func TestRefusedRefreshedTokenIsRefreshedAgain(t *testing.T) {
	s, ca := startIMAP(t, implicitServer, "XOAUTH2")
	e := newTokenEndpoint(t, 3600) // hands out access-N, which the server refuses
	m := seedMailbox(s.addr, config.IMAPImplicit)
	m.IMAP.CAFile = ca
	cr := refreshCredentials(t, e, t.TempDir())
	ctx := context.Background()
	for range 2 {
		c, err := Dial(ctx, m, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := Login(ctx, c, m, cr); !errors.Is(err, ErrLoginRefused) {
			t.Fatalf("login: %v", err)
		}
		c.Close()
	}
	if n := e.refreshes.Load(); n != 2 {
		t.Fatalf("%d refreshes for two refused logins, want 2 (a refused token is not kept)", n)
	}
}

func TestPlaintextOnlyToLoopback(t *testing.T) {
	m := withPassword(t, seedMailbox("192.0.2.1:143", config.IMAPNoTLS), seedPassword)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := Dial(ctx, m, nil); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("Dial: %v", err)
	}
	if err := Login(ctx, nil, m, NewCredentials(m, nil)); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("Login: %v", err)
	}
}

// silentServer accepts connections and never says anything.
func silentServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().String()
}

func TestDialGivesUpWithCtx(t *testing.T) {
	addr := silentServer(t)
	for _, mode := range []config.IMAPTLS{config.IMAPNoTLS, config.IMAPImplicit, config.IMAPStartTLS} {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		start := time.Now()
		_, err := Dial(ctx, seedMailbox(addr, mode), nil)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
			t.Fatalf("%s: %v after %s", mode, err, time.Since(start))
		}
	}
}
