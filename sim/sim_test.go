package sim

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-smtp"
)

const (
	gmailMX   = "gmail-smtp-in.l.google.com"
	outlookMX = "outlook-com.olc.protection.outlook.com"
)

// startGroup starts providers on one port and closes them after the test.
func startGroup(t *testing.T, opts ...Options) []*Provider {
	t.Helper()
	ps, port, err := StartGroup(opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		t.Cleanup(func() { p.Close() })
		if _, got, _ := net.SplitHostPort(p.Addr()); got != fmt.Sprint(port) {
			t.Fatalf("%s listens on %s, want port %d", p.Name(), p.Addr(), port)
		}
	}
	return ps
}

func start(t *testing.T, opts Options) *Provider {
	t.Helper()
	p, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// selfSigned makes a server TLS config for host and a client config that
// trusts it.
func selfSigned(t *testing.T, host string) (server, client *tls.Config) {
	t.Helper()
	c, err := SelfSigned(host)
	if err != nil {
		t.Fatal(err)
	}
	return c.ServerConfig(), c.ClientConfig(host)
}

func message(subject, body string) string {
	return "From: App <app@issuer.example>\r\n" +
		"To: someone@example.com\r\n" +
		"Subject: " + subject + "\r\n" +
		"Message-ID: <" + subject + "@issuer.example>\r\n" +
		"\r\n" + body + "\r\n"
}

// dial connects and says EHLO as helo; with tlsConf it does STARTTLS first.
func dial(addr, helo string, tlsConf *tls.Config) (*smtp.Client, error) {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	var c *smtp.Client
	if tlsConf != nil {
		if c, err = smtp.NewClientStartTLS(nc, tlsConf); err != nil {
			return nil, err
		}
	} else {
		c = smtp.NewClient(nc)
	}
	if err := c.Hello(helo); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// sendOn runs one transaction on an open client.
func sendOn(c *smtp.Client, from string, to []string, msg string) error {
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	for _, rcpt := range to {
		if err := c.Rcpt(rcpt, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte(msg)); err != nil {
		return err
	}
	return w.Close()
}

// send delivers one message on a new plaintext connection.
func send(t *testing.T, addr string, to []string, msg string) error {
	t.Helper()
	c, err := dial(addr, "relay.issuer.example", nil)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := sendOn(c, "bounce@issuer.example", to, msg); err != nil {
		return err
	}
	return c.Quit()
}

// wantCode checks that err is an SMTP reply with the given codes.
func wantCode(t *testing.T, err error, code int, enh smtp.EnhancedCode) {
	t.Helper()
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		t.Fatalf("got %v, want SMTP %d %v", err, code, enh)
	}
	if se.Code != code || se.EnhancedCode != enh {
		t.Fatalf("got %d %v %q, want %d %v", se.Code, se.EnhancedCode, se.Message, code, enh)
	}
}

func TestGroupDelivery(t *testing.T) {
	srvTLS, cliTLS := selfSigned(t, gmailMX)
	ps := startGroup(t,
		Options{Name: "gmail", Domains: []string{"gmail.com"}, MXHost: gmailMX, TLS: srvTLS},
		Options{Name: "outlook", Domains: []string{"Outlook.com"}, MXHost: outlookMX},
	)
	gmail, outlook := ps[0], ps[1]
	if !strings.HasPrefix(gmail.Addr(), "127.0.0.11:") || !strings.HasPrefix(outlook.Addr(), "127.0.0.12:") {
		t.Fatalf("addresses %s, %s", gmail.Addr(), outlook.Addr())
	}
	if gmail.Name() != "gmail" || gmail.MXHost() != gmailMX {
		t.Fatalf("name %q mx %q", gmail.Name(), gmail.MXHost())
	}

	// Gmail over STARTTLS, two messages on one connection.
	c, err := dial(gmail.Addr(), "relay.issuer.example", cliTLS)
	if err != nil {
		t.Fatal(err)
	}
	for _, subj := range []string{"one", "two"} {
		if err := sendOn(c, "bounce@issuer.example", []string{"alice@gmail.com"}, message(subj, "hello")); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}

	// Outlook in plaintext, one message to two recipients.
	if err := send(t, outlook.Addr(), []string{"bob@outlook.com", "Carol@OUTLOOK.com"}, message("three", "hi")); err != nil {
		t.Fatal(err)
	}

	got := gmail.MessagesTo("ALICE@gmail.com")
	if len(got) != 2 {
		t.Fatalf("gmail stored %d messages for alice, want 2", len(got))
	}
	m := got[0]
	if m.Provider != "gmail" || m.From != "bounce@issuer.example" || m.To != "alice@gmail.com" ||
		m.Folder != "INBOX" || !m.TLS || m.EHLO != "relay.issuer.example" || m.Received.IsZero() {
		t.Fatalf("gmail message: %+v", m)
	}
	if !bytes.Contains(m.Data, []byte("Subject: one\r\n")) || m.BareLF || m.BareCR || m.DKIM != nil {
		t.Fatalf("gmail message data: %q", m.Data)
	}
	if s := gmail.Stats(); s.Received != 2 || s.Connections != 1 || s.DeliveriesPerConnectionMax != 2 {
		t.Fatalf("gmail stats %+v", s)
	}

	// Messages hands out copies.
	all := outlook.Messages()
	if len(all) != 2 || all[0].To != "bob@outlook.com" || all[1].To != "Carol@OUTLOOK.com" || all[1].TLS {
		t.Fatalf("outlook messages: %+v", all)
	}
	all[0].Data[0] = 'X'
	if outlook.Messages()[0].Data[0] == 'X' {
		t.Fatal("Messages shares its storage")
	}
	if s := outlook.Stats(); s.Received != 2 || s.DeliveriesPerConnectionMax != 1 {
		t.Fatalf("outlook stats %+v", s)
	}

	outlook.Reset()
	if s := outlook.Stats(); len(outlook.Messages()) != 0 || s.Received != 0 || s.Connections != 0 || s.DeliveriesPerConnectionMax != 0 {
		t.Fatalf("after Reset: %+v", outlook.Stats())
	}
}

func TestForeignDomainRejected(t *testing.T) {
	p := start(t, Options{Name: "gmail", Domains: []string{"gmail.com"}})
	err := send(t, p.Addr(), []string{"someone@yahoo.com"}, message("x", "y"))
	wantCode(t, err, 550, smtp.EnhancedCode{5, 7, 1})
	if s := p.Stats(); s.Rejected != 1 || s.Received != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestStartRefusesNonLoopback(t *testing.T) {
	if _, err := Start(Options{IP: "0.0.0.0"}); err == nil {
		t.Fatal("listening on 0.0.0.0 was allowed")
	}
}

func TestRateLimited(t *testing.T) {
	// One token, refilled every 100 s: the second recipient is over the rate.
	p := start(t, Options{Name: "gmail", RatePerSecond: 0.01})
	if err := send(t, p.Addr(), []string{"a@gmail.com"}, message("1", "x")); err != nil {
		t.Fatal(err)
	}
	c, err := dial(p.Addr(), "relay.issuer.example", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = sendOn(c, "bounce@issuer.example", []string{"b@gmail.com"}, message("2", "x"))
	wantCode(t, err, 421, smtp.EnhancedCode{4, 7, 28})
	// 421 closes the connection, as Gmail does.
	if err := c.Noop(); err == nil {
		t.Fatal("connection still usable after 421")
	}
	if s := p.Stats(); s.RateLimited != 1 || s.Rejected != 0 || s.Received != 1 {
		t.Fatalf("stats %+v", s)
	}

	p.Reset() // refills the bucket
	if err := send(t, p.Addr(), []string{"c@gmail.com"}, message("3", "x")); err != nil {
		t.Fatal(err)
	}
}

func TestScriptedResponses(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]bool{}
	p := start(t, Options{
		Name: "zimbra",
		// Greylist every first attempt; nobody@ does not exist.
		Respond: func(from, rcpt string) *smtp.SMTPError {
			if strings.HasPrefix(rcpt, "nobody@") {
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "unknown user"}
			}
			mu.Lock()
			defer mu.Unlock()
			if !seen[rcpt] {
				seen[rcpt] = true
				return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "greylisted"}
			}
			return nil
		},
		DataRespond: func(m *Message) *smtp.SMTPError {
			switch {
			case bytes.Contains(m.Data, []byte("Subject: reject")):
				return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "spam"}
			case bytes.Contains(m.Data, []byte("Subject: junk")):
				m.Folder = "Junk"
			}
			return nil
		},
	})
	to := []string{"ann@zimbra.example"}

	wantCode(t, send(t, p.Addr(), to, message("hello", "x")), 451, smtp.EnhancedCode{4, 7, 1})
	if err := send(t, p.Addr(), to, message("hello", "x")); err != nil {
		t.Fatalf("retry after greylisting: %v", err)
	}
	wantCode(t, send(t, p.Addr(), []string{"nobody@zimbra.example"}, message("hello", "x")), 550, smtp.EnhancedCode{5, 1, 1})
	wantCode(t, send(t, p.Addr(), to, message("reject", "x")), 554, smtp.EnhancedCode{5, 7, 1})
	if err := send(t, p.Addr(), to, message("junk", "x")); err != nil {
		t.Fatal(err)
	}

	got := p.MessagesTo("ann@zimbra.example")
	if len(got) != 2 || got[0].Folder != "INBOX" || got[1].Folder != "Junk" {
		t.Fatalf("stored: %+v", got)
	}
	if s := p.Stats(); s.Rejected != 3 || s.Received != 2 {
		t.Fatalf("stats %+v", s)
	}
}

// dkimKey makes an issuer.example key (selector s2026), a LookupTXT that
// publishes it and a signer.
func dkimKey(t *testing.T) (lookup func(string) ([]string, error), sign func(msg string) string) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	record := "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)
	lookup = func(name string) ([]string, error) {
		if name == "s2026._domainkey.issuer.example" {
			return []string{record}, nil
		}
		return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
	}
	sign = func(msg string) string {
		t.Helper()
		var signed bytes.Buffer
		err := dkim.Sign(&signed, strings.NewReader(msg), &dkim.SignOptions{
			Domain:                 "issuer.example",
			Selector:               "s2026",
			Signer:                 priv,
			HeaderCanonicalization: dkim.CanonicalizationRelaxed,
			BodyCanonicalization:   dkim.CanonicalizationRelaxed,
			HeaderKeys:             []string{"From", "To", "Subject", "Message-ID"},
		})
		if err != nil {
			t.Fatal(err)
		}
		return signed.String()
	}
	return lookup, sign
}

func TestDKIM(t *testing.T) {
	lookup, sign := dkimKey(t)
	p := start(t, Options{Name: "gmail", LookupTXT: lookup})

	good := sign(message("cert", "Your certificate is ready."))
	tampered := strings.Replace(good, "ready.", "ready!", 1)

	if err := send(t, p.Addr(), []string{"pass@gmail.com"}, good); err != nil {
		t.Fatal(err)
	}
	if err := send(t, p.Addr(), []string{"fail@gmail.com"}, tampered); err != nil {
		t.Fatal(err)
	}
	if err := send(t, p.Addr(), []string{"none@gmail.com"}, message("plain", "x")); err != nil {
		t.Fatal(err)
	}

	pass := p.MessagesTo("pass@gmail.com")[0].DKIM
	want := DKIMResult{Domain: "issuer.example", Selector: "s2026", Algorithm: "ed25519-sha256"}
	if len(pass) != 1 || pass[0] != want {
		t.Fatalf("pass: %+v", pass)
	}
	fail := p.MessagesTo("fail@gmail.com")[0].DKIM
	if len(fail) != 1 || fail[0].Err == nil || fail[0].Selector != "s2026" {
		t.Fatalf("fail: %+v", fail)
	}
	if none := p.MessagesTo("none@gmail.com")[0].DKIM; none != nil {
		t.Fatalf("unsigned: %+v", none)
	}
	if s := p.Stats(); s.DKIMPass != 1 || s.DKIMFail != 1 || s.Received != 3 {
		t.Fatalf("stats %+v", s)
	}
}

func TestLineFactsRecorded(t *testing.T) {
	p := start(t, Options{Name: "gmail"})
	// go-smtp's client normalizes line endings, so speak SMTP by hand.
	nc, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	r := bufio.NewReader(nc)
	long := strings.Repeat("a", 1200)
	script := []struct{ send, want string }{
		{"", "220 "},
		{"EHLO smuggler.example\r\n", "250 "},
		{"MAIL FROM:<x@issuer.example>\r\n", "250 "},
		{"RCPT TO:<v@gmail.com>\r\n", "250 "},
		{"DATA\r\n", "354 "},
		{"Subject: lf\r\n\r\nbare\nlf and bare\rcr\r\n" + long + "\r\n.\r\n", "250 "},
		{"QUIT\r\n", "221 "},
	}
	for _, step := range script {
		if _, err := nc.Write([]byte(step.send)); err != nil {
			t.Fatal(err)
		}
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("after %q: %v", step.send, err)
			}
			if strings.HasPrefix(line, step.want[:3]+"-") {
				continue
			}
			if !strings.HasPrefix(line, step.want) {
				t.Fatalf("after %q: got %q, want %q", step.send, line, step.want)
			}
			break
		}
	}
	m := p.Messages()[0]
	if !m.BareLF || !m.BareCR || m.MaxLine != 1200 || m.EHLO != "smuggler.example" {
		t.Fatalf("bareLF %v bareCR %v maxLine %d ehlo %q", m.BareLF, m.BareCR, m.MaxLine, m.EHLO)
	}
}

func TestLineFacts(t *testing.T) {
	for _, tc := range []struct {
		in             string
		bareLF, bareCR bool
		maxLine        int
	}{
		{"", false, false, 0},
		{"ab\r\ncde\r\n", false, false, 3},
		{"ab\ncd\r\n", true, false, 2},
		{"a\rb\r\n", false, true, 3},
		{"abcd", false, false, 4},
		{"x\r", false, true, 2},
	} {
		lf, cr, n := lineFacts([]byte(tc.in))
		if lf != tc.bareLF || cr != tc.bareCR || n != tc.maxLine {
			t.Errorf("lineFacts(%q) = %v %v %d", tc.in, lf, cr, n)
		}
	}
}

func TestConcurrentSessions(t *testing.T) {
	const conns, each = 8, 3
	p := start(t, Options{Name: "outlook", Domains: []string{"outlook.com"}})

	// All clients greet before any sends, so all are open at once.
	var greeted, done sync.WaitGroup
	greeted.Add(conns)
	errs := make(chan error, conns)
	for i := range conns {
		done.Go(func() {
			c, err := dial(p.Addr(), "relay.issuer.example", nil)
			greeted.Done()
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			greeted.Wait()
			for j := range each {
				to := fmt.Sprintf("user%d@outlook.com", i)
				if err := sendOn(c, "bounce@issuer.example", []string{to}, message(fmt.Sprintf("m%d-%d", i, j), "x")); err != nil {
					errs <- err
					return
				}
			}
			errs <- c.Quit()
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.WaitFor(ctx, conns*each); err != nil {
		t.Fatal(err)
	}
	done.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	s := p.Stats()
	if s.Received != conns*each || s.Connections != conns || s.MaxConcurrent != conns || s.DeliveriesPerConnectionMax != each {
		t.Fatalf("stats %+v", s)
	}
	for i := range conns {
		if n := len(p.MessagesTo(fmt.Sprintf("user%d@outlook.com", i))); n != each {
			t.Fatalf("user%d has %d messages", i, n)
		}
	}
}

func TestMaxConnections(t *testing.T) {
	p := start(t, Options{Name: "gmail", MaxConnections: 2})
	for range 2 {
		c, err := dial(p.Addr(), "relay.issuer.example", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	_, err := dial(p.Addr(), "relay.issuer.example", nil)
	wantCode(t, err, 421, smtp.EnhancedCode{4, 7, 0})
	if s := p.Stats(); s.Connections != 2 || s.ConnectionsRefused != 1 || s.MaxConcurrent != 2 {
		t.Fatalf("stats %+v", s)
	}
}

func TestWaitForContext(t *testing.T) {
	p := start(t, Options{})
	if err := p.WaitFor(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.WaitFor(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
}

func TestCloseFinishesTransaction(t *testing.T) {
	p, err := Start(Options{Name: "gmail"})
	if err != nil {
		t.Fatal(err)
	}
	idle, err := dial(p.Addr(), "idle.example", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	c, err := dial(p.Addr(), "busy.example", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail("bounce@issuer.example", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("a@gmail.com", nil); err != nil {
		t.Fatal(err)
	}

	closed := make(chan error)
	go func() { closed <- p.Close() }()
	p.waitUntil(func() bool { return p.closing }, 0)

	// A new transaction is turned away; the one in flight completes.
	wantCode(t, idle.Mail("bounce@issuer.example", nil), 421, smtp.EnhancedCode{4, 3, 2})
	select {
	case err := <-closed:
		t.Fatalf("Close returned during a transaction: %v", err)
	default:
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte(message("last", "x"))); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if len(p.Messages()) != 1 {
		t.Fatal("message in flight was lost")
	}
	if err := c.Noop(); err == nil {
		t.Fatal("connection survived Close")
	}
}
