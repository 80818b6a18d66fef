package placement

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
	"golang.org/x/oauth2"

	"github.com/certgate/certgate/config"
)

// ErrLoginRefused is wrapped by the errors of Login and GmailCategories
// when the server answered the login with NO: the credentials (or the
// account) are the problem, not the network.
var ErrLoginRefused = errors.New("seed mailbox refused the login")

const (
	// A refreshed access token is used until this long before it expires,
	// so that it does not expire between the refresh and the login.
	tokenEarlyExpiry = 2 * time.Minute
	// How long a token refresh may take when the caller gave no client.
	refreshTimeout = 30 * time.Second
	// Dialing without a deadline in ctx takes at most this long.
	dialTimeout = 30 * time.Second
	// TCP keepalive: go-imap's client resets its read deadline between
	// responses, so a server that is gone is only noticed this way (about
	// idle + count*interval).
	keepAliveIdle     = time.Minute
	keepAliveInterval = 15 * time.Second
	keepAliveCount    = 4
)

// Credentials are a seed mailbox's secrets, read when a login needs them
// (so a rotated file takes effect at the next login) and never logged.
// An OAuth 2.0 access token refreshed at token_url is kept until shortly
// before it expires, or until the server refuses it. Safe for concurrent
// use.
type Credentials struct {
	username     string
	passwordFile string
	oauth        bool
	tokenFile    string // token_file: read at each login
	refresher    *refresher

	mu    sync.Mutex
	cache oauth2.TokenSource // over refresher; replaced by forgetToken
}

// NewCredentials returns the credentials of m, as config validated them.
// hc makes the token refreshes (nil: a client with a 30 s timeout).
func NewCredentials(m config.SeedMailbox, hc *http.Client) *Credentials {
	c := &Credentials{username: m.IMAP.Username, passwordFile: m.IMAP.PasswordFile}
	o := m.IMAP.OAuth2
	if o == nil {
		return c
	}
	c.oauth = true
	if o.TokenFile != "" {
		c.tokenFile = o.TokenFile
		return c
	}
	if hc == nil {
		hc = &http.Client{Timeout: refreshTimeout}
	}
	c.refresher = &refresher{o: *o, hc: hc}
	c.forgetToken()
	return c
}

// token returns the access token to log in with.
func (c *Credentials) token() (string, error) {
	if c.tokenFile != "" {
		return config.ReadSecret(c.tokenFile, "")
	}
	c.mu.Lock()
	src := c.cache
	c.mu.Unlock()
	t, err := src.Token()
	if err != nil {
		return "", err
	}
	return t.AccessToken, nil
}

// forgetToken drops a cached access token, after the server refused it
// (a token without expires_in would otherwise be kept for ever).
func (c *Credentials) forgetToken() {
	if c.refresher == nil {
		return
	}
	c.mu.Lock()
	c.cache = oauth2.ReuseTokenSourceWithExpiry(nil, c.refresher, tokenEarlyExpiry)
	c.mu.Unlock()
}

// mechanism picks how to log in, given what the server advertises (has
// reports a capability): XOAUTH2 when oauth2 is configured, else PLAIN
// when AUTH=PLAIN is offered, else LOGIN (sasl nil, with the password).
func (c *Credentials) mechanism(has func(imap.Cap) bool) (mech sasl.Client, password string, err error) {
	if c.oauth {
		if !has("AUTH=XOAUTH2") {
			return nil, "", errors.New("the server does not offer AUTH=XOAUTH2")
		}
		tok, err := c.token()
		if err != nil {
			return nil, "", fmt.Errorf("oauth2 token: %w", err)
		}
		return &XOAUTH2Client{Username: c.username, Token: tok}, "", nil
	}
	pw, err := config.ReadSecret(c.passwordFile, "")
	if err != nil {
		return nil, "", err
	}
	switch {
	case has("AUTH=PLAIN"):
		return sasl.NewPlainClient("", c.username, pw), "", nil
	case has(imap.CapLoginDisabled): // RFC 9051 6.2.3
		return nil, "", errors.New("the server offers neither AUTH=PLAIN nor LOGIN")
	}
	return nil, pw, nil
}

// loginFailed words a failed login: refused (NO) wraps ErrLoginRefused
// and makes a cached token be refreshed next time. An XOAUTH2 error
// challenge is a refusal whatever the tagged status: go-imap/v2 answers
// it with "=", which a server may take for bad base64 and answer BAD
// (RFC 4959 gives "=" to initial responses only).
func (c *Credentials) loginFailed(mech sasl.Client, refused bool, err error) error {
	if x, ok := mech.(*XOAUTH2Client); ok && x.Err() != nil {
		err = fmt.Errorf("%w (%v)", err, x.Err())
		refused = true
	}
	if !refused {
		return fmt.Errorf("login: %w", err)
	}
	if c.oauth {
		c.forgetToken()
	}
	return fmt.Errorf("%w: %w", ErrLoginRefused, err)
}

// refresher gets a new access token at token_url with the refresh token
// (RFC 6749 6). It reads the client secret and the refresh token at each
// refresh. When the server hands out a new refresh token (Microsoft does,
// RFC 6749 6 allows it), that one is used until the file changes.
type refresher struct {
	o  config.SeedOAuth
	hc *http.Client

	mu       sync.Mutex
	fromFile string // the refresh token last read from the file
	rotated  string // the one the server gave instead, if any
}

func (r *refresher) Token() (*oauth2.Token, error) {
	secret, err := config.ReadSecret(r.o.ClientSecretFile, "")
	if err != nil {
		return nil, err
	}
	rt, err := config.ReadSecret(r.o.RefreshTokenFile, "")
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if rt != r.fromFile {
		r.fromFile, r.rotated = rt, ""
	} else if r.rotated != "" {
		rt = r.rotated
	}
	cfg := oauth2.Config{ClientID: r.o.ClientID, ClientSecret: secret, Endpoint: oauth2.Endpoint{TokenURL: r.o.TokenURL}}
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, r.hc)
	t, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: rt}).Token()
	if err != nil {
		return nil, refreshError(r.o.TokenURL, err, secret, rt)
	}
	if t.RefreshToken != "" && t.RefreshToken != rt {
		r.rotated = t.RefreshToken
	}
	return t, nil
}

// refreshError words a failed refresh without the response body or the
// request: only the status, RFC 6749 5.2's error code and description,
// and the endpoint's host and path; secrets an endpoint echoes back in
// its description are blanked.
func refreshError(tokenURL string, err error, secrets ...string) error {
	where := tokenURL
	if u, perr := url.Parse(tokenURL); perr == nil {
		where = u.Host + u.Path
	}
	var msg string
	var re *oauth2.RetrieveError
	var ue *url.Error
	switch {
	case errors.As(err, &re):
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		msg = fmt.Sprintf("status %d, error %q: %s", status, re.ErrorCode, re.ErrorDescription)
	case errors.As(err, &ue):
		msg = ue.Err.Error() // its own text holds the URL, named already
	default:
		msg = err.Error()
	}
	for _, s := range secrets {
		msg = strings.ReplaceAll(msg, s, "[secret]")
	}
	return fmt.Errorf("oauth2 refresh at %s: %s", where, printable(msg, 300))
}

// XOAUTH2Client is the client side of XOAUTH2, the SASL mechanism of
// Google and Microsoft that RFC 7628's OAUTHBEARER grew out of (go-sasl
// has OAUTHBEARER only). Use a new one for each login.
type XOAUTH2Client struct {
	Username, Token string
	failure         error
}

// Start gives the initial response: user=U ^A auth=Bearer T ^A ^A.
func (x *XOAUTH2Client) Start() (mech string, ir []byte, err error) {
	if strings.ContainsRune(x.Username, '\x01') || strings.ContainsRune(x.Token, '\x01') {
		return "", nil, errors.New("xoauth2: ^A in the user name or the token")
	}
	return "XOAUTH2", []byte("user=" + x.Username + "\x01auth=Bearer " + x.Token + "\x01\x01"), nil
}

// Next answers the server's only challenge, its JSON error (as in RFC
// 7628 3.2.2), with the empty response after which the server ends the
// exchange with NO; the reason is kept for Err.
func (x *XOAUTH2Client) Next(challenge []byte) ([]byte, error) {
	if x.failure != nil {
		return nil, errors.New("xoauth2: a second challenge")
	}
	x.failure = xoauth2Failure(challenge)
	return []byte{}, nil
}

// Err is the server's reason for refusing the token (status, schemes,
// scope), or nil when it sent none.
func (x *XOAUTH2Client) Err() error { return x.failure }

// xoauth2Failure reads the server's error (RFC 7628 3.2.2: status, scope,
// openid-configuration; Google adds schemes), bounded.
func xoauth2Failure(challenge []byte) error {
	var e struct {
		Status  string `json:"status"`
		Schemes string `json:"schemes"`
		Scope   string `json:"scope"`
	}
	if len(challenge) > 4096 || json.Unmarshal(challenge, &e) != nil {
		return fmt.Errorf("xoauth2: the server's error is not JSON: %q", printable(string(challenge), 100))
	}
	return fmt.Errorf("xoauth2: status %q, schemes %q, scope %q",
		printable(e.Status, 32), printable(e.Schemes, 64), printable(e.Scope, 200))
}

// printable cuts s to max bytes and replaces anything but printable ASCII,
// so that what a server or token endpoint says is fit for a log line.
func printable(s string, max int) string {
	if len(s) > max {
		s = s[:max]
	}
	return strings.Map(func(r rune) rune {
		if r < ' ' || r > '~' {
			return '?'
		}
		return r
	}, s)
}

// Dial connects to m's IMAP server as its tls setting says (implicit:
// TLS from the first byte, with ca_file's roots when given; starttls;
// none, to a loopback address only), with TCP keepalive, and waits for
// the greeting. ctx bounds the dialing, the handshakes and the greeting
// only. opts.TLSConfig, when set, is the base of the TLS configuration;
// opts.Dialer is not used. opts.DebugWriter would see the credentials.
func Dial(ctx context.Context, m config.SeedMailbox, opts *imapclient.Options) (*imapclient.Client, error) {
	o := imapclient.Options{}
	if opts != nil {
		o = *opts
	}
	conn, tc, err := dialConn(ctx, m.IMAP, o.TLSConfig)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	var c *imapclient.Client
	if m.IMAP.TLS == config.IMAPStartTLS {
		o.TLSConfig = tc
		c, err = imapclient.NewStartTLS(conn, &o) // refuses PREAUTH (RFC 9051 7.1.4)
	} else {
		c = imapclient.New(conn, &o)
		if err = c.WaitGreeting(); err != nil {
			c.Close()
		}
	}
	if !stop() {
		if err == nil {
			c.Close()
		}
		return nil, fmt.Errorf("imap %s: %w", m.IMAP.Addr, ctx.Err())
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("imap %s: %w", m.IMAP.Addr, err)
	}
	return c, nil
}

// Login logs c in to m with cr: XOAUTH2 when m has oauth2, else
// AUTHENTICATE PLAIN when the server offers it, else LOGIN. It refuses to
// send credentials in the clear anywhere but to a loopback address. If
// ctx ends first, Login closes c.
func Login(ctx context.Context, c *imapclient.Client, m config.SeedMailbox, cr *Credentials) error {
	if err := plaintextAllowed(m.IMAP); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	caps := c.Caps()
	if caps == nil {
		if ctx.Err() != nil {
			return fmt.Errorf("login: %w", ctx.Err())
		}
		return errors.New("login: no capabilities from the server")
	}
	mech, password, err := cr.mechanism(caps.Has)
	if err != nil {
		return fmt.Errorf("login: %w", err)
	}
	if mech != nil {
		err = c.Authenticate(mech)
	} else {
		err = c.Login(cr.username, password).Wait()
	}
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("login: %w", ctx.Err())
	}
	var ie *imap.Error
	refused := errors.As(err, &ie) && ie.Type == imap.StatusResponseTypeNo
	return cr.loginFailed(mech, refused, err)
}

// plaintextAllowed is config's rule again, at the point of use:
// credentials in the clear only to this machine.
func plaintextAllowed(m config.SeedIMAP) error {
	if m.TLS != config.IMAPNoTLS {
		return nil
	}
	host, _, err := net.SplitHostPort(m.Addr)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); !strings.EqualFold(host, "localhost") && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("imap %s: tls none is only allowed to a loopback address", m.Addr)
	}
	return nil
}

// dialConn opens the TCP connection, checked to reach a loopback address
// when it stays plaintext, and with implicit TLS does the handshake. It
// returns the TLS configuration to use for STARTTLS too.
func dialConn(ctx context.Context, m config.SeedIMAP, base *tls.Config) (net.Conn, *tls.Config, error) {
	if err := plaintextAllowed(m); err != nil {
		return nil, nil, err
	}
	tc, err := tlsConfig(m, base)
	if err != nil {
		return nil, nil, err
	}
	d := net.Dialer{KeepAliveConfig: net.KeepAliveConfig{
		Enable: true, Idle: keepAliveIdle, Interval: keepAliveInterval, Count: keepAliveCount}}
	if _, ok := ctx.Deadline(); !ok {
		d.Timeout = dialTimeout
	}
	conn, err := d.DialContext(ctx, "tcp", m.Addr)
	if err != nil {
		return nil, nil, fmt.Errorf("imap: %w", err)
	}
	switch m.TLS {
	case config.IMAPNoTLS:
		// localhost might resolve elsewhere: check where we got to.
		if a, ok := conn.RemoteAddr().(*net.TCPAddr); !ok || !a.IP.IsLoopback() {
			conn.Close()
			return nil, nil, fmt.Errorf("imap %s: tls none reached %s, not a loopback address", m.Addr, conn.RemoteAddr())
		}
	case config.IMAPStartTLS:
	default:
		t := tc.Clone()
		if t.NextProtos == nil {
			t.NextProtos = []string{"imap"} // RFC 9051 7.1.4 ALPN
		}
		c := tls.Client(conn, t)
		if err := c.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, nil, fmt.Errorf("imap %s: %w", m.Addr, err)
		}
		return c, tc, nil
	}
	return conn, tc, nil
}

// tlsConfig is base (or the defaults) with the server's name and, when
// ca_file is set, its roots instead of the system's.
func tlsConfig(m config.SeedIMAP, base *tls.Config) (*tls.Config, error) {
	tc := &tls.Config{}
	if base != nil {
		tc = base.Clone()
	}
	if tc.ServerName == "" {
		host, _, err := net.SplitHostPort(m.Addr)
		if err != nil {
			return nil, err
		}
		tc.ServerName = host
	}
	if tc.MinVersion == 0 {
		tc.MinVersion = tls.VersionTLS12
	}
	if m.CAFile != "" {
		pem, err := os.ReadFile(m.CAFile)
		if err != nil {
			return nil, fmt.Errorf("imap ca_file: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("imap ca_file %s: no PEM certificate in it", m.CAFile)
		}
	}
	return tc, nil
}
