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
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/store"
)

// client dials the submission server, upgrades to TLS and authenticates.
func (e *testEnv) client() *smtp.Client {
	e.t.Helper()
	c, err := smtp.DialStartTLS(e.addr, e.tlsConf)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := c.Auth(sasl.NewPlainClient("", "app", testPassword)); err != nil {
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
		id := headerValue(hdr, TrackingHeader)
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
	waitFor(t, "queue to drain", 5*time.Second, func() bool { return e.queue.Len() == 0 })
	if n := e.queue.heldBytes.Load(); n != 0 {
		t.Errorf("queue still holds %d bytes of delivered copies", n)
	}
}

// Copies over the queue's memory budget are read back from the store, and
// arrive the same: signed, with their own tracking header.
func TestCopiesBeyondTheMemoryBudgetComeFromTheStore(t *testing.T) {
	e := newEnv(t, envOptions{freshBudget: 30 << 10}) // about one sample copy
	c := e.client()
	to := []string{"a@gmail.com", "b@gmail.com", "c@gmail.com", "d@gmail.com"}
	if err := e.send(c, "certificados@ca.example", to, sample(t, "01-es-download-link-qp.eml")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	g := e.sims["google"]
	if err := g.WaitFor(ctx, len(to)); err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, m := range g.Messages() {
		hdr := string(m.Data[:bytes.Index(m.Data, []byte("\r\n\r\n"))])
		ids[headerValue(hdr, TrackingHeader)] = true
	}
	if st := g.Stats(); st.DKIMPass != len(to) || len(ids) != len(to) {
		t.Errorf("DKIM pass %d, distinct tracking ids %d, want %d each", st.DKIMPass, len(ids), len(to))
	}
	waitFor(t, "queue to drain", 5*time.Second, func() bool { return e.queue.Len() == 0 })
	if n := e.queue.heldBytes.Load(); n != 0 {
		t.Errorf("queue still holds %d bytes", n)
	}
}

// failingRecords makes the first RecordAttempt calls fail the way a full
// disk does.
type failingRecords struct {
	store.Store
	fails atomic.Int32
}

func (s *failingRecords) RecordAttempt(ctx context.Context, a store.Attempt) error {
	if s.fails.Add(-1) >= 0 {
		return errors.New("store/sqlite: commit: database or disk is full (13)")
	}
	return s.Store.RecordAttempt(ctx, a)
}

// A delivery whose record fails is recorded once the store works again,
// not forgotten: otherwise the store lists it as queued and a restart
// sends it a second time.
func TestDeliveryRecordRetriedUntilTheStoreTakesIt(t *testing.T) {
	var fs *failingRecords
	e := newEnv(t, envOptions{queueStore: func(st store.Store) store.Store {
		fs = &failingRecords{Store: st}
		fs.fails.Store(3)
		return fs
	}})
	if err := e.send(e.client(), "certificados@ca.example", []string{"a@gmail.com"}, sample(t, "01-es-download-link-qp.eml")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the delivery to be recorded", 10*time.Second, func() bool {
		n := 0
		e.store.Pending(context.Background(), func(store.Pending) error { n++; return nil })
		return n == 0 && e.queue.Len() == 0
	})
	if got := e.sims["google"].Stats().Received; got != 1 {
		t.Errorf("the receiver got %d copies, want 1", got)
	}
	if left := fs.fails.Load(); left >= 0 {
		t.Errorf("%d failures left unconsumed: the record was not retried", left+1)
	}
}

// A message that is all header, with no empty line and no body, is legal
// (RFC 5322 3.5): it is accepted, signed and delivered, not answered 451
// forever (found by FuzzPrepare).
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
	r.cmd("QUIT", "221")
	time.Sleep(100 * time.Millisecond)
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
	time.Sleep(200 * time.Millisecond)
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

func TestTemporaryFailureIsRetried(t *testing.T) {
	var mu sync.Mutex
	tries := 0
	e := newEnv(t, envOptions{respond: func(_, rcpt string) *smtp.SMTPError {
		mu.Lock()
		defer mu.Unlock()
		if rcpt == "grey@gmail.com" {
			if tries++; tries <= 2 {
				return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "greylisted, try later"}
			}
		}
		return nil
	}})
	c := e.client()
	if err := e.send(c, "certificados@ca.example", []string{"grey@gmail.com"}, sample(t, "01-es-download-link-qp.eml")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := e.sims["google"].WaitFor(ctx, 1); err != nil {
		t.Fatal(err)
	}
	v := e.messageView(t, "grey@gmail.com")
	rc := v.Recipients[0]
	if rc.State != store.StateDelivered || rc.Attempts != 3 {
		t.Fatalf("recipient %+v, want delivered after 3 attempts", rc)
	}
	var kinds []string
	for _, ev := range v.Events {
		kinds = append(kinds, ev.Kind)
	}
	if got := strings.Join(kinds, ","); got != "accepted,deferred,deferred,delivered" {
		t.Fatalf("events %s", got)
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
	var v *store.MessageView
	waitFor(t, "attempt recorded", 5*time.Second, func() bool {
		var err error
		v, err = e.store.Message(context.Background(), id)
		return err == nil && v.Recipients[0].State.Final()
	})
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

func TestRestartDeliversQueuedMail(t *testing.T) {
	dir := t.TempDir()
	retry := config.Retry{Schedule: []config.Duration{config.Duration(300 * time.Millisecond)}, MaxAge: config.Duration(time.Hour)}
	down := newEnv(t, envOptions{dir: dir, sinkDown: true, retry: retry})
	c := down.client()
	for i := 0; i < 5; i++ {
		if err := down.send(c, "certificados@ca.example", []string{fmt.Sprintf("r%d@gmail.com", i)}, sample(t, "01-es-download-link-qp.eml")); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "first attempts to fail", 10*time.Second, func() bool {
		n := 0
		down.store.Pending(context.Background(), func(p store.Pending) error {
			if p.Attempts > 0 {
				n++
			}
			return nil
		})
		return n == 5
	})
	c.Close()
	down.stop()

	// A new process on the same data directory, with the receiver back.
	up := newEnv(t, envOptions{dir: dir, retry: retry})
	if n := up.queue.Len(); n != 5 {
		t.Fatalf("%d recipients loaded at restart, want 5", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := up.sims["google"].WaitFor(ctx, 5); err != nil {
		t.Fatal(err)
	}
	v := up.messageView(t, "r3@gmail.com")
	if v.Recipients[0].Attempts < 2 {
		t.Fatalf("attempts %d: the attempt before the restart was not kept", v.Recipients[0].Attempts)
	}
}

func TestTransactionalOvertakesBulk(t *testing.T) {
	e := newEnv(t, envOptions{providers: []config.Provider{{Name: "gmail", MaxMessageRate: config.Rate{Count: 10, Period: time.Second}, ConnectionLimit: 1}}})
	c := e.client()
	bulk := sample(t, "03-fr-attachment-b64-text.eml")
	for i := 0; i < 60; i++ {
		if err := e.send(c, "no-reply@certs.example", []string{fmt.Sprintf("bulk%02d@gmail.com", i)}, bulk); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.send(c, "emissao@ac.example", []string{"token@gmail.com"}, sample(t, "04-pt-token-transactional.eml")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	g := e.sims["google"]
	if err := g.WaitFor(ctx, 61); err != nil {
		t.Fatal(err)
	}
	pos := -1
	for i, m := range g.Messages() {
		if m.To == "token@gmail.com" {
			pos = i
		}
	}
	// Submitted 61st; with one connection at 10/s, the bulk ahead of it can
	// only have used the slots that passed while the wave was submitted.
	if pos < 0 || pos >= 40 {
		t.Fatalf("the transactional mail was delivered %dth of 61", pos+1)
	}
	if st := g.Stats(); st.MaxConcurrent > 1 {
		t.Fatalf("%d concurrent connections, the lane allows 1", st.MaxConcurrent)
	}
	if st := g.Stats(); st.DeliveriesPerConnectionMax < 2 {
		t.Fatalf("no connection reuse: at most %d delivery per connection", st.DeliveriesPerConnectionMax)
	}
}

func TestDeadDestinationDefersItsWholeQueue(t *testing.T) {
	e := newEnv(t, envOptions{sinkDown: true, providers: []config.Provider{{Name: "gmail",
		MaxMessageRate: config.Rate{Count: 2, Period: time.Second}, ConnectionLimit: 1}},
		retry: config.Retry{Schedule: []config.Duration{config.Duration(time.Hour)}, MaxAge: config.Duration(24 * time.Hour)}})
	c := e.client()
	for i := 0; i < 30; i++ {
		if err := e.send(c, "certificados@ca.example", []string{fmt.Sprintf("r%02d@gmail.com", i)}, sample(t, "01-es-download-link-qp.eml")); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every recipient to be deferred", 20*time.Second, func() bool {
		n := 0
		e.store.Pending(context.Background(), func(p store.Pending) error {
			if p.Attempts == 1 {
				n++
			}
			return nil
		})
		return n == 30
	})
	// A deferred copy lets go of its bytes: a backlog lives in the store.
	if n := e.queue.heldBytes.Load(); n != 0 {
		t.Errorf("queue holds %d bytes of deferred copies", n)
	}
	var m dto.Metric
	e.metrics.ShapingWait.WithLabelValues("gmail", "bulk").(prometheus.Histogram).Write(&m)
	// Each failed connection defers everything queued behind it, so far
	// fewer than 30 items went through the lane's rate limiter.
	if n := m.GetHistogram().GetSampleCount(); n >= 15 {
		t.Fatalf("%d items went through shaping to reach a dead MX, want the queue deferred together", n)
	}
}

// Gaps in a wave shorter than the idle time do not cost a new connection.
func TestConnectionKeptAcrossGaps(t *testing.T) {
	e := newEnv(t, envOptions{providers: []config.Provider{{Name: "gmail", ConnectionLimit: 1}}})
	c := e.client()
	g := e.sims["google"]
	for i := 0; i < 5; i++ {
		if err := e.send(c, "certificados@ca.example", []string{fmt.Sprintf("gap%d@gmail.com", i)}, sample(t, "04-pt-token-transactional.eml")); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := g.WaitFor(ctx, i+1); err != nil {
			t.Fatal(err)
		}
		cancel()
		time.Sleep(200 * time.Millisecond) // the lane is empty for a moment
	}
	if st := g.Stats(); st.Connections != 1 || st.DeliveriesPerConnectionMax != 5 {
		t.Fatalf("%d connections, at most %d deliveries on one; want 1 connection carrying all 5", st.Connections, st.DeliveriesPerConnectionMax)
	}
}
