package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/certgate/certgate/store"
)

// client dials the submission server, upgrades to TLS and authenticates
// as tenant issuer's user app.
func (e *testEnv) client() *smtp.Client { return e.clientAs("app") }

// clientAs is client for another user, whose password is testPassword too.
func (e *testEnv) clientAs(user string) *smtp.Client {
	e.t.Helper()
	c, err := smtp.DialStartTLS(e.addr, e.tlsConf)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := c.Auth(sasl.NewPlainClient("", user, testPassword)); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

func (e *testEnv) send(c *smtp.Client, from string, to []string, data []byte) error {
	return c.SendMail(from, to, bytes.NewReader(data))
}

// raw is a line-level SMTP conversation for what go-smtp's client will not
// send (bare LF, odd syntax).
type raw struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func (e *testEnv) raw() *raw {
	e.t.Helper()
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	r := &raw{t: e.t, c: c, r: bufio.NewReader(c)}
	r.expect("220")
	r.cmd("EHLO client.example", "250")
	return r
}

// cmd writes a line and returns the reply, which must start with want.
func (r *raw) cmd(line, want string) string {
	r.t.Helper()
	fmt.Fprintf(r.c, "%s\r\n", line)
	return r.expect(want)
}

func (r *raw) expect(want string) string {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var all []string
	for {
		line, err := r.r.ReadString('\n')
		if err != nil {
			r.t.Fatalf("reading reply (want %s): %v (so far %q)", want, err, all)
		}
		all = append(all, strings.TrimRight(line, "\r\n"))
		if len(line) < 4 || line[3] != '-' {
			break
		}
	}
	last := all[len(all)-1]
	if !strings.HasPrefix(last, want) {
		r.t.Fatalf("reply %q, want %s", last, want)
	}
	return last
}

func (r *raw) authPlain() {
	r.t.Helper()
	r.cmd("AUTH PLAIN "+b64("\x00app\x00"+testPassword), "235")
}

func (e *testEnv) pendingCount() int {
	n := 0
	e.store.Pending(context.Background(), func(store.Pending) error { n++; return nil })
	return n
}

func (e *testEnv) received() int {
	n := 0
	for _, s := range e.sims {
		n += s.Stats().Received
	}
	return n
}

func TestSubmitSignDeliverSamples(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.client()
	type sub struct {
		file string
		from string
		to   []string
	}
	subs := []sub{
		{"01-es-download-link-qp.eml", "certificados@ca.example", []string{"juan.perez@empresa.example"}},
		{"02-fr-plaintext-pem-multi-rcpt.eml", "no-reply@certs.example", []string{"admin@gmail.com", "securite@gmail.com"}},
		{"03-fr-attachment-b64-text.eml", "no-reply@certs.example", []string{"admin@empresa.example"}},
		{"04-pt-token-transactional.eml", "emissao@ac.example", []string{"maria.silva@gmail.com"}},
		{"05-pt-voucher-html-8bit-longline.eml", "vendas@ac.example", []string{"maria.silva@empresa.example"}},
	}
	for _, s := range subs {
		if err := e.send(c, s.from, s.to, sample(t, s.file)); err != nil {
			t.Fatalf("%s: %v", s.file, err)
		}
	}
	g := e.sims["google"]
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := g.WaitFor(ctx, 6); err != nil {
		t.Fatal(err)
	}
	tracking := map[string]bool{}
	for _, m := range g.Messages() {
		if len(m.DKIM) < 1 {
			t.Errorf("%s: no DKIM signature", m.To)
		}
		for _, r := range m.DKIM {
			if r.Err != nil {
				t.Errorf("%s: DKIM %s/%s failed at the receiver: %v", m.To, r.Domain, r.Selector, r.Err)
			}
		}
		if m.BareLF || m.BareCR {
			t.Errorf("%s: bare line ending delivered", m.To)
		}
		if m.MaxLine > 998 {
			t.Errorf("%s: line of %d octets delivered", m.To, m.MaxLine)
		}
		if m.EHLO != "relay.ca.example" {
			t.Errorf("EHLO %q, want relay.ca.example", m.EHLO)
		}
		hdr := string(m.Data[:bytes.Index(m.Data, []byte("\r\n\r\n"))])
		if strings.Contains(strings.ToLower(hdr), "x-certgate-class") {
			t.Errorf("%s: control header leaked", m.To)
		}
		id := headerValue(hdr, store.TrackingHeader)
		if id == "" || tracking[id] {
			t.Errorf("%s: tracking id %q missing or reused", m.To, id)
		}
		tracking[id] = true
		if m.To == "juan.perez@empresa.example" {
			// ca.example has two keys: RSA and Ed25519 both sign.
			algs := map[string]bool{}
			for _, r := range m.DKIM {
				algs[r.Algorithm] = true
			}
			if !algs["rsa-sha256"] || !algs["ed25519-sha256"] {
				t.Errorf("ca.example mail signed with %+v, want rsa-sha256 and ed25519-sha256", m.DKIM)
			}
		}
	}
	if st := g.Stats(); st.DKIMPass != st.Received {
		t.Errorf("DKIM pass %d of %d", st.DKIMPass, st.Received)
	}
	// Sample 01 kept its own Message-ID.
	for _, m := range g.MessagesTo("juan.perez@empresa.example") {
		if !bytes.Contains(m.Data, []byte("Message-ID: <dl-0001@ca.example>")) {
			t.Error("the issuer's Message-ID was not kept")
		}
	}
	waitDrained(t, e.queue)
	if n := e.queue.HeldBytes(); n != 0 {
		t.Errorf("queue still holds %d bytes of delivered copies", n)
	}
}

func TestHeaderOnlyMessageIsDelivered(t *testing.T) {
	e := newEnv(t, envOptions{})
	msg := []byte("From: <certificados@ca.example>\r\nTo: <a@gmail.com>\r\nSubject: header only\r\n")
	if err := e.send(e.client(), "certificados@ca.example", []string{"a@gmail.com"}, msg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g := e.sims["google"]
	if err := g.WaitFor(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if st := g.Stats(); st.DKIMPass != 1 {
		t.Errorf("DKIM pass %d of %d", st.DKIMPass, st.Received)
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func headerValue(hdr, name string) string {
	for _, line := range strings.Split(hdr, "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func TestOpenRelayRefusedWhateverTheAddress(t *testing.T) {
	// Trusted networks that do not hold the loopback client.
	e := newEnv(t, envOptions{trusted: []string{"192.0.2.0/24"}})
	r := e.raw()
	for _, from := range []string{
		"<certificados@ca.example>", "<>", "<@ca.example:victim@gmail.com>", "<victim%gmail.com@ca.example>",
		"<\"victim@gmail.com\"@ca.example>", "<victim@[127.0.0.1]>", "<gmail.com!victim@ca.example>",
	} {
		r.cmd("MAIL FROM:"+from, "530 5.7.0")
	}
	for _, rcpt := range []string{"<victim@gmail.com>", "<@ca.example:victim@gmail.com>", "<victim%gmail.com@ca.example>"} {
		got := r.cmd("RCPT TO:"+rcpt, "5")
		if !strings.HasPrefix(got, "503") && !strings.HasPrefix(got, "530") && !strings.HasPrefix(got, "502") {
			t.Errorf("RCPT %s without MAIL answered %q", rcpt, got)
		}
	}
	r.cmd("DATA", "5")
	// Every refusal came before its reply: there is nothing to wait for.
	r.cmd("QUIT", "221")
	if n := e.pendingCount(); n != 0 {
		t.Fatalf("%d recipients queued from an unauthenticated client", n)
	}
	if n := e.received(); n != 0 {
		t.Fatalf("%d messages relayed", n)
	}
}

func TestTrustedNetworkSubmitsWithoutAuth(t *testing.T) {
	e := newEnv(t, envOptions{trusted: []string{"127.0.0.0/8"}})
	c, err := smtp.Dial(e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := e.send(c, "certificados@ca.example", []string{"a@gmail.com"}, sample(t, "01-es-download-link-qp.eml")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.sims["google"].WaitFor(ctx, 1); err != nil {
		t.Fatal(err)
	}
}

func TestAuthentication(t *testing.T) {
	e := newEnv(t, envOptions{})
	t.Run("wrong password is 535 5.7.8 and counted", func(t *testing.T) {
		c, err := smtp.DialStartTLS(e.addr, e.tlsConf)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		err = c.Auth(sasl.NewPlainClient("", "app", "wrong"))
		var se *smtp.SMTPError
		if !errors.As(err, &se) || se.Code != 535 || se.EnhancedCode != (smtp.EnhancedCode{5, 7, 8}) {
			t.Fatalf("AUTH with a wrong password: %v", err)
		}
		if err := c.Auth(sasl.NewPlainClient("", "nobody", testPassword)); err == nil {
			t.Fatal("unknown user authenticated")
		}
	})
	t.Run("LOGIN over TLS", func(t *testing.T) {
		c, err := smtp.DialStartTLS(e.addr, e.tlsConf)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Auth(sasl.NewLoginClient("app", testPassword)); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("plaintext AUTH from loopback", func(t *testing.T) {
		r := e.raw()
		r.authPlain()
		r.cmd("MAIL FROM:<certificados@ca.example>", "250")
	})
	t.Run("plaintext AUTH refused from elsewhere", func(t *testing.T) {
		s := &session{srv: e.server, ip: netip.MustParseAddr("192.0.2.7")}
		s.conn = nil
		if m := s.authMechanismsFor(false); len(m) != 0 {
			t.Fatalf("mechanisms %v offered in plaintext to a remote client", m)
		}
		if m := s.authMechanismsFor(true); len(m) != 2 {
			t.Fatalf("mechanisms %v under TLS", m)
		}
	})
}

func TestSmugglingRefused(t *testing.T) {
	e := newEnv(t, envOptions{})
	r := e.raw()
	r.authPlain()
	for name, body := range map[string]string{
		"bare LF before dot": "From: <certificados@ca.example>\r\nTo: <a@gmail.com>\r\n\r\nhello\n.\nMAIL FROM:<certificados@ca.example>\r\nRCPT TO:<b@gmail.com>\r\nDATA\r\nsmuggled\r\n",
		"bare CR":            "From: <certificados@ca.example>\r\nTo: <a@gmail.com>\r\n\r\nhello\r.\rmore\r\n",
		"NUL":                "From: <certificados@ca.example>\r\nTo: <a@gmail.com>\r\n\r\nhel\x00lo\r\n",
	} {
		r.cmd("MAIL FROM:<certificados@ca.example>", "250")
		r.cmd("RCPT TO:<a@gmail.com>", "250")
		r.cmd("DATA", "354")
		fmt.Fprintf(r.c, "%s.\r\n", body)
		if got := r.expect("550 5.6.0"); !strings.Contains(got, "5.6.0") {
			t.Errorf("%s: %q", name, got)
		}
	}
	// The session is still in step: a clean message goes through.
	r.cmd("MAIL FROM:<certificados@ca.example>", "250")
	r.cmd("RCPT TO:<a@gmail.com>", "250")
	r.cmd("DATA", "354")
	fmt.Fprintf(r.c, "From: <certificados@ca.example>\r\nTo: <a@gmail.com>\r\nSubject: ok\r\n\r\nclean\r\n.\r\n")
	r.expect("250")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.sims["google"].WaitFor(ctx, 1); err != nil {
		t.Fatal(err)
	}
	waitDrained(t, e.queue) // every attempt made
	if n := e.sims["google"].Stats().Received; n != 1 {
		t.Fatalf("%d messages delivered, want only the clean one", n)
	}
}

func TestAlignment(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.client()
	msg := func(from string) []byte {
		return []byte("From: Certificados <" + from + ">\r\nTo: <a@gmail.com>\r\nSubject: test\r\n\r\nbody\r\n")
	}
	cases := []struct {
		name, envFrom, hdrFrom string
		want, text             string // want "" is accepted, else code + enhanced; text is in the reply
	}{
		{"aligned", "certificados@ca.example", "certificados@ca.example", "", ""},
		{"subdomain sender aligns on the organizational domain", "avisos@news.ca.example", "avisos@news.ca.example", "", ""},
		{"envelope sender of another domain", "x@evil.example", "certificados@ca.example", "550 5.7.1", "Sender domain evil.example"},
		{"From header of another domain", "certificados@ca.example", "ceo@evil.example", "550 5.7.1", "From domain evil.example"},
		{"from domain without a DKIM key", "x@nokey.example", "x@nokey.example", "550 5.7.1", "No DKIM key aligned with From domain nokey.example"},
	}
	for _, tc := range cases {
		err := e.send(c, tc.envFrom, []string{"a@gmail.com"}, msg(tc.hdrFrom))
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		var se *smtp.SMTPError
		if !errors.As(err, &se) || fmt.Sprintf("%d %d.%d.%d", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2]) != tc.want {
			t.Errorf("%s: got %v, want %s", tc.name, err, tc.want)
		} else if !strings.Contains(se.Message, tc.text) {
			t.Errorf("%s: reply text %q lacks %q", tc.name, se.Message, tc.text)
		}
		c.Reset()
	}
	// Two From addresses cannot be aligned.
	err := e.send(c, "certificados@ca.example", []string{"a@gmail.com"},
		[]byte("From: a@ca.example, b@evil.example\r\nSubject: x\r\n\r\nbody\r\n"))
	if err == nil {
		t.Error("a From header with two addresses was accepted")
	}
}

func TestSizeRecipientAndConnectionLimits(t *testing.T) {
	e := newEnv(t, envOptions{maxBytes: 64 << 10, maxRcpts: 3, perIP: 4})
	c := e.client()
	big := []byte("From: <certificados@ca.example>\r\nSubject: big\r\n\r\n" + strings.Repeat(strings.Repeat("x", 76)+"\r\n", 1000))
	err := e.send(c, "certificados@ca.example", []string{"a@gmail.com"}, big)
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 552 || se.EnhancedCode != (smtp.EnhancedCode{5, 3, 4}) {
		t.Fatalf("oversized message: %v", err)
	}
	c.Reset()

	r := e.raw()
	r.authPlain()
	r.cmd("MAIL FROM:<certificados@ca.example> SIZE=10000000", "552 5.3.4")
	r.cmd("MAIL FROM:<certificados@ca.example>", "250")
	for i := 0; i < 3; i++ {
		r.cmd(fmt.Sprintf("RCPT TO:<u%d@gmail.com>", i), "250")
	}
	r.cmd("RCPT TO:<u3@gmail.com>", "452 4.5.3")

	// Two sessions are open from 127.0.0.1; two more fit, the fifth is refused.
	var conns []net.Conn
	for i := 0; i < 3; i++ {
		cn, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer cn.Close()
		conns = append(conns, cn)
	}
	line, _ := bufio.NewReader(conns[2]).ReadString('\n')
	if !strings.HasPrefix(line, "421 4.7.0") {
		t.Fatalf("connection over the per-address limit got %q", line)
	}
	if n := e.pendingCount(); n != 0 {
		t.Fatalf("%d recipients queued by refused transactions", n)
	}
}

// messageView finds the message delivered or queued for rcpt through the
// Received field certgate wrote, and returns its stored view.
func (e *testEnv) messageView(t *testing.T, rcpt string) *store.MessageView {
	t.Helper()
	var id string
	for _, s := range e.sims {
		for _, m := range s.MessagesTo(rcpt) {
			_, rest, _ := strings.Cut(string(m.Data), ") with ESMTPSA id ")
			id, _, _ = strings.Cut(rest, ";")
		}
	}
	if id == "" {
		t.Fatalf("no delivered message for %s", rcpt)
	}
	e.attempts.waitFinal(t, id, 1)
	v, err := e.store.Message(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestPermanentFailureBouncesWithDSN(t *testing.T) {
	e := newEnv(t, envOptions{respond: func(_, rcpt string) *smtp.SMTPError {
		if rcpt == "unknown@gmail.com" {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
		}
		return nil
	}})
	c := e.client()
	if err := e.send(c, "certificados@ca.example", []string{"unknown@gmail.com", "known@gmail.com"}, sample(t, "01-es-download-link-qp.eml")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	issuer := e.sims["issuer"]
	if err := issuer.WaitFor(ctx, 1); err != nil {
		t.Fatal(err)
	}
	dsn := issuer.Messages()[0]
	if dsn.From != "" || dsn.To != "certificados@ca.example" {
		t.Fatalf("DSN envelope from %q to %q, want <> to the sender", dsn.From, dsn.To)
	}
	body := string(dsn.Data)
	for _, want := range []string{"multipart/report; report-type=delivery-status", "Final-Recipient: rfc822; unknown@gmail.com",
		"Action: failed", "Status: 5.1.1", "Remote-MTA: dns; gmail-smtp-in.l.google.com", "Subject: Descargue su certificado"} {
		if !strings.Contains(body, want) {
			t.Errorf("DSN lacks %q", want)
		}
	}
	if strings.Contains(body, "pedido=3D88412") {
		t.Error("DSN quotes the original body, which holds the download link")
	}
	for _, r := range dsn.DKIM {
		if r.Err != nil {
			t.Errorf("DSN signature %s failed: %v", r.Domain, r.Err)
		}
	}
	if err := e.sims["google"].WaitFor(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if got := len(issuer.Messages()); got != 1 {
		t.Fatalf("%d DSNs, want exactly one", got)
	}
}
