package gateway

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/certgate/certgate/config"
)

// The intake suite (issue 9): what clients are answered and what is
// logged, and (intake_conn_test.go, intake_auth_test.go) outsiders holding
// connections or flooding AUTH must not lock out or slow down the issuers.
// Each test runs a submission server of its own, with its own limits and
// directory, over real SMTP on loopback; 127.0.0.0/8 gives it many /24s to
// come from.

// intakeTrusted is the test tenant's trusted network.
const intakeTrusted = "127.0.9.0/24"

type intake struct {
	t    *testing.T
	env  *testEnv
	srv  *Server
	dir  *Directory
	addr string
	logs *logRecorder
	hash *hashGate
}

// newIntake starts a server with cfg's limits over env's relay. Its tenant
// "issuer" has the users app and app2 (testPassword) and trusts
// intakeTrusted; bcrypt goes through a hashGate.
func newIntake(t *testing.T, env *testEnv, cfg ServerConfig) *intake {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(testPassword), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := NewDirectory([]config.Tenant{{
		Name: "issuer", FromDomains: []string{"ca.example"}, DefaultClass: config.ClassBulk,
		Users:           []config.User{{Username: "app", PasswordHash: string(hash)}, {Username: "app2", PasswordHash: string(hash)}},
		TrustedNetworks: []string{intakeTrusted},
	}}, "https://gate.ca.example")
	if err != nil {
		t.Fatal(err)
	}
	in := &intake{t: t, env: env, dir: dir, logs: newLogRecorder(), hash: &hashGate{changed: make(chan struct{})}}
	dir.compare = in.hash.compare
	cfg.Hostname = "relay.ca.example"
	cfg.TLS = env.server.cfg.TLS
	cfg.MaxMessageBytes = 1 << 20
	cfg.MaxRecipients = 50
	if cfg.ReadTimeout == 0 {
		cfg.ReadTimeout = time.Minute
	}
	cfg.WriteTimeout = 10 * time.Second
	in.srv = NewServer(cfg, dir, env.relay, env.metrics, slog.New(in.logs))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	in.addr = l.Addr().String()
	go in.srv.Serve(l)
	t.Cleanup(func() {
		in.hash.open()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		in.srv.Shutdown(ctx)
	})
	return in
}

// from opens a connection from a loopback address (Linux routes all of
// 127.0.0.0/8 to lo) and reads nothing yet.
func (in *intake) from(addr string) *raw {
	in.t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(addr)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", in.addr)
	if err != nil {
		in.t.Fatal(err)
	}
	in.t.Cleanup(func() { c.Close() })
	return &raw{t: in.t, c: c, r: bufio.NewReader(c)}
}

// greeted opens a connection from addr and says EHLO.
func (in *intake) greeted(addr string) *raw {
	in.t.Helper()
	r := in.from(addr)
	r.expect("220")
	r.cmd("EHLO client.example", "250")
	return r
}

// waitSessions waits until the server holds at most n sessions.
func (in *intake) waitSessions(n int) {
	in.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := in.srv.WaitSessions(ctx, n); err != nil {
		in.t.Fatalf("the server still holds more than %d sessions", n)
	}
}

// send submits one message on an open session and returns the reply to it.
func (r *raw) send(from string) string {
	r.t.Helper()
	r.cmd("MAIL FROM:<"+from+">", "250")
	r.cmd("RCPT TO:<a@gmail.com>", "250")
	r.cmd("DATA", "354")
	return r.cmd("From: <"+from+">\r\nSubject: certificate\r\n\r\nhello\r\n.", "250")
}

// reply reads one reply without failing the test, for use off the test's
// goroutine; the last line is returned.
func (r *raw) reply(within time.Duration) (string, error) {
	r.c.SetReadDeadline(time.Now().Add(within))
	for {
		line, err := r.r.ReadString('\n')
		if err != nil {
			return "", err
		}
		if len(line) < 4 || line[3] != '-' {
			return strings.TrimRight(line, "\r\n"), nil
		}
	}
}

// logRecorder is a slog handler that keeps every record, for tests to wait
// on and to search.
type logRecorder struct {
	mu      sync.Mutex
	recs    []logRecord
	changed chan struct{}
}

type logRecord struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

func (r logRecord) String() string { return fmt.Sprintf("%s %q %v", r.level, r.msg, r.attrs) }

func newLogRecorder() *logRecorder { return &logRecorder{changed: make(chan struct{})} }

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	rec := logRecord{level: r.Level, msg: r.Message, attrs: map[string]string{}}
	r.Attrs(func(a slog.Attr) bool {
		rec.attrs[a.Key] = a.Value.Resolve().String()
		return true
	})
	if testing.Verbose() {
		fmt.Printf("intake server: %s\n", rec)
	}
	l.mu.Lock()
	l.recs = append(l.recs, rec)
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
	return nil
}

func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }

func (l *logRecorder) WithGroup(string) slog.Handler { return l }

// find returns the records that match.
func (l *logRecorder) find(match func(logRecord) bool) []logRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []logRecord
	for _, r := range l.recs {
		if match(r) {
			out = append(out, r)
		}
	}
	return out
}

// wait returns once n records match, or fails the test after 10 s.
func (l *logRecorder) wait(t *testing.T, what string, n int, match func(logRecord) bool) []logRecord {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		l.mu.Lock()
		changed := l.changed
		l.mu.Unlock()
		if got := l.find(match); len(got) >= n {
			return got
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("timed out waiting for %d log records of %s; have %v", n, what, l.find(match))
		}
	}
}

// refusal matches the log record of a refusal with that code to client.
func refusal(code, client string) func(logRecord) bool {
	return func(r logRecord) bool {
		return r.msg == "smtp refused" && strings.HasPrefix(r.attrs["reply"], code) && r.attrs["client"] == client
	}
}

// Every refused command and message is logged once, with its reason, its
// reply, the tenant when known and the client; nothing else is.
func TestRefusalsAreLoggedOnce(t *testing.T) {
	env := newEnv(t, envOptions{})
	in := newIntake(t, env, ServerConfig{MaxConnectionsPerIP: 2})
	r := in.greeted("127.0.2.1")
	r.cmd("MAIL FROM:<certificados@ca.example>", "530 5.7.0")
	r.authPlain()
	r.cmd("MAIL FROM:<someone@other.example>", "550 5.7.1")
	r.cmd("MAIL FROM:<certificados@ca.example>", "250")
	r.cmd("RCPT TO:<a@gmail.com>", "250")
	r.cmd("DATA", "354")
	r.cmd("From: <certificados@ca.example>\r\n\r\nbare\nLF\r\n.", "550 5.6.0")
	in.greeted("127.0.2.1")
	in.from("127.0.2.1").expect("421 4.7.0")

	want := []struct{ reason, reply, tenant string }{
		{"auth_required", "530 5.7.0", ""},
		{"alignment", "550 5.7.1", "issuer"},
		{"smuggling", "550 5.6.0", "issuer"},
		{"connections", "421 4.7.0", ""},
	}
	got := in.logs.wait(t, "four refusals", len(want), func(r logRecord) bool { return r.msg == "smtp refused" })
	if len(got) != len(want) {
		t.Fatalf("%d refusals logged, want %d: %v", len(got), len(want), got)
	}
	for i, w := range want {
		a := got[i].attrs
		if a["reason"] != w.reason || !strings.HasPrefix(a["reply"], w.reply) || a["tenant"] != w.tenant || a["client"] != "127.0.2.1" {
			t.Errorf("refusal %d logged as %v, want reason %s, reply %s, tenant %q, client 127.0.2.1", i, got[i], w.reason, w.reply, w.tenant)
		}
	}
}

// A TCP health probe (connect, close, or reset, before reading the
// greeting) is no warning: it is logged at debug level only.
func TestHealthProbesAreNotWarnings(t *testing.T) {
	env := newEnv(t, envOptions{})
	in := newIntake(t, env, ServerConfig{})
	for i := 0; i < 5; i++ {
		in.from("127.0.2.1").c.Close()
		c := in.from("127.0.2.1").c
		c.(*net.TCPConn).SetLinger(0) // RST, as many probes close
		c.Close()
	}
	in.waitSessions(0)
	in.logs.wait(t, "the probes, at debug", 10, func(r logRecord) bool {
		return r.level == slog.LevelDebug && r.attrs["client"] == "127.0.2.1"
	})
	if w := in.logs.find(func(r logRecord) bool { return r.level >= slog.LevelWarn }); len(w) > 0 {
		t.Errorf("health probes logged %v", w)
	}
}

// The final reply to DATA and to BDAT names the queue id, as Postfix's
// does, so that the submitter can find the message with the API.
func TestQueuedReplyNamesTheID(t *testing.T) {
	env := newEnv(t, envOptions{})
	in := newIntake(t, env, ServerConfig{})
	r := in.greeted("127.0.2.1")
	r.authPlain()
	reply := r.send("certificados@ca.example")
	body := "From: <certificados@ca.example>\r\n\r\nchunked\r\n"
	r.cmd("MAIL FROM:<certificados@ca.example>", "250")
	r.cmd("RCPT TO:<a@gmail.com>", "250")
	chunked := r.cmd(fmt.Sprintf("BDAT %d LAST\r\n%s", len(body), body[:len(body)-2]), "250")
	for _, reply := range []string{reply, chunked} {
		id, ok := strings.CutPrefix(reply, "250 2.0.0 Ok: queued as ")
		if !ok {
			t.Fatalf("reply %q, want 250 2.0.0 Ok: queued as ID", reply)
		}
		if _, err := env.store.Message(context.Background(), id); err != nil {
			t.Errorf("queue id %q: %v", id, err)
		}
	}
}

// Under a flood one client's refusals are logged refusalLogBurst at once,
// then one a second; each line logged counts those left out before it.
func TestRefusalLogIsBoundedPerClient(t *testing.T) {
	var l logLimiter
	now := time.Now()
	flooder, other := netip.MustParseAddr("2001:db8:1:2::1"), netip.MustParseAddr("192.0.2.2")
	for i := 0; i < refusalLogBurst; i++ {
		if _, ok := l.allow(flooder, now); !ok {
			t.Fatalf("refusal %d not logged", i)
		}
	}
	for i := 0; i < 100; i++ {
		if _, ok := l.allow(netip.MustParseAddr(fmt.Sprintf("2001:db8:1:2::%x", i+2)), now); ok {
			t.Fatalf("refusal %d past the burst from the same /64 logged", i)
		}
	}
	if _, ok := l.allow(other, now); !ok {
		t.Fatal("another client's refusal not logged")
	}
	if n, ok := l.allow(flooder, now.Add(time.Second)); !ok || n != 100 {
		t.Fatalf("a second later: logged %v, %d suppressed, want true and 100", ok, n)
	}
}
