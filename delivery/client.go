package delivery

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/certgate/certgate/clock"
	"github.com/certgate/certgate/config"
)

// Dialer opens outbound SMTP connections to destinations.
type Dialer struct {
	Hostname       string // EHLO name
	Resolver       Resolver
	ConnectTimeout time.Duration // TCP connect and greeting (with STARTTLS, up to the handshake's end)
	CommandTimeout time.Duration
	DataTimeout    time.Duration
	Clock          clock.Clock // for what it remembers; nil: the wall clock

	// noTLS remembers hosts whose STARTTLS handshake failed, so that
	// opportunistic delivery does not pay a failed handshake on every
	// connection.
	mu    sync.Mutex
	noTLS map[string]tlsMemory
}

// tlsMemory is what the dialer remembers of a host's failed handshakes.
type tlsMemory struct {
	until time.Time // plaintext until then
	fails int       // failed handshakes in a row
}

// Result is what one delivery attempt came to.
type Result struct {
	Host     string // the host that answered, "" if none did
	Code     int    // SMTP reply code; 0 when no reply was had
	Enhanced string // enhanced status code, "" if none
	Text     string // reply text or the local error
	// Network: not a reply to this message's transaction: the connection
	// or a timeout failed, or the host refused the session itself (greeting,
	// EHLO, STARTTLS, AUTH). Such failures defer; they never bounce.
	Network bool
	// Stale: a reused connection failed before MAIL was answered; the
	// server closed it while idle, and the message was not attempted.
	Stale bool
	// GaveUp is set by the queue when it stops retrying at max_age: why.
	// The other fields stay those of the last attempt, for the DSN.
	GaveUp string
	// Defer is set by the queue when a reply rule says this 5xx means
	// "not now" (an IP block being lifted): retried, not bounced.
	Defer bool
}

// Detail is the reply without its code, as the store keeps it (the code is
// kept apart): "2.0.0 OK: queued", or the local error.
func (r Result) Detail() string {
	if r.Code != 0 && r.Enhanced != "" {
		return r.Enhanced + " " + r.Text
	}
	return r.Text
}

func (r Result) String() string {
	if r.Code == 0 {
		return r.Text
	}
	if r.Enhanced != "" {
		return fmt.Sprintf("%d %s %s", r.Code, r.Enhanced, r.Text)
	}
	return fmt.Sprintf("%d %s", r.Code, r.Text)
}

// Conn is an open SMTP session with one host, reused for several messages.
type Conn struct {
	c           *smtp.Client
	nc          *session // what go-smtp reads and writes
	dataTimeout time.Duration
	clock       clock.Clock
	Host        string
	Dest        *Destination
	TLS         bool
	Sent        int
	LastUsed    time.Time
	dirty       bool // a transaction failed part way: RSET before the next
}

// tlsFailure marks a STARTTLS handshake that failed after the server
// agreed to it: only then may opportunistic delivery retry in plaintext.
type tlsFailure struct{ error }

func (e tlsFailure) Unwrap() error { return e.error }

// A failed handshake sends a host's mail in plaintext for noTLSFirst, each
// further failure in a row for twice as long, up to noTLSMemory; a
// handshake that works forgets the failures. One broken or tampered-with
// connection must not put an hour of certificates in the clear, while a
// host whose TLS is really broken soon costs no handshake at all.
const (
	noTLSFirst  = time.Minute
	noTLSMemory = time.Hour
)

// Dial connects to the first host of dest that accepts a session,
// following RFC 5321 5.1: every MX in order, every address of each. A host
// that greets with 5xx is skipped like one that does not answer (Postfix's
// smtp_skip_5xx_greeting). No failure here is about a message, so none
// bounces: the result is always marked Network.
func (d *Dialer) Dial(ctx context.Context, dest *Destination) (*Conn, Result) {
	last := Result{Network: true, Text: "no host to connect to"}
	for _, host := range dest.Hosts {
		addrs, err := d.Resolver.LookupHost(ctx, host)
		if err != nil {
			last = Result{Host: host, Network: true, Text: "address lookup: " + err.Error()}
			continue
		}
		for _, addr := range addrs {
			c, res := d.dialHost(ctx, dest, host, net.JoinHostPort(addr, strconv.Itoa(dest.Port)))
			if c != nil {
				return c, res
			}
			res.Network = true
			last = res
		}
	}
	return nil, last
}

func (d *Dialer) dialHost(ctx context.Context, dest *Destination, host, addr string) (*Conn, Result) {
	useTLS := dest.TLS == config.TLSRequired || (dest.TLS == config.TLSOpportunistic && !d.tlsBroken(host))
	c, res, tlsFailed := d.open(ctx, dest, host, addr, useTLS)
	if c == nil && tlsFailed && dest.TLS == config.TLSOpportunistic {
		// A failed handshake leaves the connection unusable: redial in
		// plaintext, as the route allows, and remember the host for a while.
		d.markTLSBroken(host)
		c, res, _ = d.open(ctx, dest, host, addr, false)
	}
	if c == nil {
		return nil, res
	}
	if c.TLS {
		d.markTLSWorks(host)
	}
	if dest.User != "" {
		if !c.TLS && !isLoopbackAddr(addr) {
			c.Close()
			return nil, Result{Host: host, Text: "refusing to send smarthost credentials without TLS"}
		}
		if err := c.c.Auth(sasl.NewPlainClient("", dest.User, dest.Pass)); err != nil {
			c.Close()
			return nil, resultOf(host, err)
		}
	}
	return c, res
}

// open makes one session with one address; tlsFailed reports a handshake
// that failed after the server agreed to STARTTLS.
func (d *Dialer) open(ctx context.Context, dest *Destination, host, addr string, useTLS bool) (_ *Conn, _ Result, tlsFailed bool) {
	dctx, cancel := context.WithTimeout(ctx, d.ConnectTimeout)
	defer cancel()
	var nd net.Dialer
	raw, err := nd.DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, Result{Host: host, Network: true, Text: "connect: " + err.Error()}, false
	}
	deadline, _ := dctx.Deadline()
	raw.SetDeadline(deadline)
	// The greeting is read here, under the connect timeout, whatever the
	// route's TLS: go-smtp's client would wait for it as long as for any
	// command (RFC 5321 4.5.3.2.1's 5 minutes), holding a lane's worker on
	// a server that accepts and says nothing.
	br := bufio.NewReader(raw)
	if code, text, err := readReply(br); err != nil {
		raw.Close()
		return nil, Result{Host: host, Network: true, Text: "greeting: " + err.Error()}, false
	} else if code != 220 {
		raw.Close()
		return nil, resultOf(host, replyError(code, text)), false
	}
	conn := newSession(raw, br, host)
	if err := conn.ehlo(d.Hostname); err != nil {
		raw.Close()
		return nil, Result{Host: host, Network: true, Text: "ehlo: " + err.Error()}, false
	}
	tlsOn := false
	if useTLS {
		if tlsOn, err = d.startTLS(conn, dest, host); err != nil {
			raw.Close()
			var se *smtp.SMTPError
			if errors.As(err, &se) {
				return nil, resultOf(host, err), false
			}
			var tf tlsFailure
			return nil, Result{Host: host, Network: true, Text: "starttls: " + err.Error()}, errors.As(err, &tf)
		}
		if !tlsOn && dest.TLS == config.TLSRequired {
			raw.Close()
			return nil, Result{Host: host, Network: true, Text: "TLS required by route, but the server does not offer STARTTLS"}, false
		}
	}
	c := smtp.NewClient(conn)
	c.CommandTimeout = d.CommandTimeout
	c.SubmissionTimeout = d.DataTimeout
	conn.answerEHLO()
	if err := c.Hello(d.Hostname); err != nil {
		c.Close()
		return nil, resultOf(host, err), false
	}
	raw.SetDeadline(time.Time{})
	return &Conn{c: c, nc: conn, dataTimeout: d.DataTimeout, clock: d.clock(), Host: host, Dest: dest, TLS: tlsOn, LastUsed: d.clock().Now()}, Result{Host: host}, false
}

// startTLS upgrades the session when the server's EHLO answer offers
// STARTTLS (RFC 3207 4), and says EHLO again over TLS, as RFC 3207 4.2
// requires. go-smtp's own NewClientStartTLS would say EHLO localhost,
// which receivers hold against a sender. Without STARTTLS, or when the
// server refuses it, the session goes on in plaintext: the caller decides
// whether the route allows that.
func (d *Dialer) startTLS(s *session, dest *Destination, host string) (bool, error) {
	code, text := s.lastEHLO()
	if code != 250 {
		if code >= 500 && dest.TLS != config.TLSRequired {
			return false, nil // no EHLO, so no STARTTLS (RFC 3207 4)
		}
		return false, replyError(code, text)
	}
	offered := false
	for _, line := range strings.Split(text, "\n") {
		if strings.EqualFold(strings.TrimSpace(line), "STARTTLS") {
			offered = true
		}
	}
	if !offered {
		return false, nil
	}
	fmt.Fprintf(s.Conn, "STARTTLS\r\n")
	if code, text, err := readReply(s.br); err != nil {
		return false, err
	} else if code != 220 {
		// RFC 3207 4: 454 "TLS not available"; the session goes on in
		// plaintext, which only an opportunistic route accepts.
		if dest.TLS != config.TLSRequired {
			return false, nil
		}
		return false, replyError(code, text)
	}
	conf := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	if dest.TLS == config.TLSRequired {
		conf.RootCAs = dest.RootCAs
	} else {
		// RFC 7435: opportunistic security encrypts without authenticating;
		// an unverifiable certificate is still better than plaintext.
		conf.InsecureSkipVerify = true
	}
	tc := tls.Client(s.Conn, conf)
	if err := tc.Handshake(); err != nil {
		return false, tlsFailure{err}
	}
	s.upgrade(tc)
	return true, s.ehlo(d.Hostname)
}

// session is the connection go-smtp's client gets once the dialer has read
// the greeting and said EHLO itself. It replays a greeting, and answers
// the EHLO go-smtp says next (and again after each RSET, since go-smtp's
// Reset forgets the hello) with the server's answer to the dialer's: the
// server hears one EHLO per session. RFC 5321 4.1.4 lets a client repeat
// EHLO, but a receiver that refuses it would defer the mail for ever.
type session struct {
	net.Conn               // the server: plaintext, then TLS once upgraded
	br       *bufio.Reader // reads the server

	mu      sync.Mutex
	pending []byte // read before the server: a greeting, an EHLO answer
	ehloAns []byte // the server's answer to the last EHLO, as it came
	code    int    // and its code and text, for startTLS
	text    string
	armed   bool // the next write is go-smtp's EHLO: answer it here
}

func newSession(raw net.Conn, br *bufio.Reader, host string) *session {
	return &session{Conn: raw, br: br, pending: []byte("220 " + host + " ESMTP\r\n")}
}

// ehlo says EHLO to the server and keeps its answer, whatever it is: a
// refusal reaches go-smtp's Hello as the server gave it (500 and 502 then
// make go-smtp say HELO). The error is the connection's.
func (s *session) ehlo(hostname string) error {
	if _, err := fmt.Fprintf(s.Conn, "EHLO %s\r\n", hostname); err != nil {
		return err
	}
	code, text, err := readReply(s.br)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.code, s.text, s.ehloAns = code, text, formatReply(code, text)
	s.mu.Unlock()
	return nil
}

func (s *session) lastEHLO() (int, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.code, s.text
}

// upgrade goes on over tc, a TLS client on the same connection.
func (s *session) upgrade(tc *tls.Conn) {
	s.Conn, s.br = tc, bufio.NewReader(tc)
}

// answerEHLO makes the next write, if it is an EHLO, be answered from the
// server's last answer instead of reaching the server.
func (s *session) answerEHLO() {
	s.mu.Lock()
	s.armed = true
	s.mu.Unlock()
}

func (s *session) Write(b []byte) (int, error) {
	s.mu.Lock()
	if s.armed {
		s.armed = false
		if isEHLO(b) {
			s.pending = append(s.pending, s.ehloAns...)
			s.mu.Unlock()
			return len(b), nil
		}
	}
	s.mu.Unlock()
	return s.Conn.Write(b)
}

func (s *session) Read(b []byte) (int, error) {
	s.mu.Lock()
	if len(s.pending) > 0 {
		n := copy(b, s.pending)
		s.pending = s.pending[n:]
		s.mu.Unlock()
		return n, nil
	}
	s.mu.Unlock()
	return s.br.Read(b)
}

// isEHLO reports whether b is one whole EHLO command line.
func isEHLO(b []byte) bool {
	return len(b) > 5 && strings.EqualFold(string(b[:5]), "EHLO ") && bytes.IndexByte(b, '\n') == len(b)-1
}

// formatReply writes a reply as readReply read it: code and text lines.
func formatReply(code int, text string) []byte {
	lines := strings.Split(text, "\n")
	var b bytes.Buffer
	for i, l := range lines {
		sep := "-"
		if i == len(lines)-1 {
			sep = " "
		}
		fmt.Fprintf(&b, "%d%s%s\r\n", code, sep, l)
	}
	return b.Bytes()
}

// readReply reads a possibly multi-line SMTP reply (RFC 5321 4.2.1) and
// returns its code and text lines joined by "\n".
func readReply(br *bufio.Reader) (int, string, error) {
	var lines []string
	for n := 0; n < 100; n++ {
		// ReadSlice fails on a line longer than the reader's buffer (4 KiB),
		// far above RFC 5321 4.5.3.1.5's 512 octets: a hostile server
		// cannot make us buffer without end.
		raw, err := br.ReadSlice('\n')
		if err != nil {
			return 0, "", err
		}
		line := strings.TrimSuffix(strings.TrimSuffix(string(raw), "\n"), "\r")
		// RFC 5321 4.2: a three-digit code whose first digit is 2 to 5,
		// and no stray CR or control characters in the text.
		if len(line) < 3 || line[0] < '2' || line[0] > '5' || strings.ContainsFunc(line, isControl) {
			return 0, "", fmt.Errorf("malformed reply %q", line)
		}
		code, err := strconv.Atoi(line[:3])
		if err != nil || code < 200 {
			return 0, "", fmt.Errorf("malformed reply %q", line)
		}
		rest := ""
		if len(line) > 4 {
			rest = line[4:]
		}
		lines = append(lines, rest)
		if len(line) == 3 || line[3] == ' ' {
			return code, strings.Join(lines, "\n"), nil
		}
	}
	return 0, "", errors.New("reply too long")
}

// replyError is a reply read by readReply as go-smtp's client would report
// it: with the enhanced status code that starts its text (RFC 2034 4) taken
// out, so that results from the greeting, EHLO and STARTTLS carry it like
// those of later commands.
func replyError(code int, text string) *smtp.SMTPError {
	e := &smtp.SMTPError{Code: code, Message: text}
	first, rest, ok := strings.Cut(text, " ")
	parts := strings.Split(first, ".")
	if !ok || len(parts) != 3 || parts[0] != strconv.Itoa(code/100) {
		return e
	}
	var ec smtp.EnhancedCode
	for i, part := range parts {
		n, err := strconv.Atoi(part)
		if err != nil || n < 0 || n > 999 {
			return e
		}
		ec[i] = n
	}
	// Continuation lines repeat the code; keep only their text.
	e.EnhancedCode, e.Message = ec, strings.ReplaceAll(rest, "\n"+first+" ", "\n")
	return e
}

func isControl(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f }

func (d *Dialer) clock() clock.Clock {
	if d.Clock == nil {
		return clock.Real
	}
	return d.Clock
}

func (d *Dialer) tlsBroken(host string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	m, ok := d.noTLS[host]
	return ok && d.clock().Now().Before(m.until)
}

func (d *Dialer) markTLSBroken(host string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.noTLS == nil {
		d.noTLS = map[string]tlsMemory{}
	}
	m := d.noTLS[host]
	m.fails++
	m.until = d.clock().Now().Add(min(noTLSMemory, noTLSFirst<<min(m.fails-1, 10)))
	d.noTLS[host] = m
}

func (d *Dialer) markTLSWorks(host string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.noTLS, host)
}

// Send delivers one copy in one transaction. The copy may come in parts
// (the per-copy prefix and the shared body, say) that make the message
// when joined; each part but the last ends its last line. The connection
// stays usable unless the result is a network failure.
func (c *Conn) Send(from, to string, parts ...[]byte) Result {
	size := 0
	for _, p := range parts {
		size += len(p)
	}
	c.LastUsed = c.clock.Now()
	if c.dirty {
		if err := c.c.Reset(); err != nil {
			// Nothing of this message was sent: not an attempt.
			res := resultOf(c.Host, err)
			res.Stale, res.Network = true, true
			return res
		}
		c.nc.answerEHLO() // go-smtp says EHLO again before MAIL
		c.dirty = false
	}
	c.Sent++
	c.dirty = true
	if err := c.c.Mail(from, &smtp.MailOptions{Size: int64(size)}); err != nil {
		res := resultOf(c.Host, err)
		res.Stale = res.Network && c.Sent > 1
		return res
	}
	if err := c.c.Rcpt(to, nil); err != nil {
		return resultOf(c.Host, err)
	}
	w, err := c.c.Data()
	if err != nil {
		return resultOf(c.Host, err)
	}
	// go-smtp clears the deadline once DATA is answered and sets one only
	// for the final reply: a receiver that stops reading must not hold
	// this worker for ever.
	c.nc.SetWriteDeadline(time.Now().Add(c.dataTimeout))
	if linesWhole(parts) {
		// go-smtp flushed its buffer to send DATA, so the body may go
		// straight to the connection, stuffed here in one writev. The
		// final CRLF goes through go-smtp's writer, whose Close then ends
		// the data with "." CRLF (RFC 5321 4.1.1.4).
		bufs := stuffParts(parts)
		if _, err = bufs.WriteTo(c.nc); err == nil {
			_, err = w.Write(crlf)
		}
	} else {
		for _, p := range parts {
			if _, err = w.Write(p); err != nil {
				break
			}
		}
	}
	c.nc.SetWriteDeadline(time.Time{})
	if err != nil {
		// The data is cut mid-way and the receiver may not be reading:
		// ending it with "." would write again with no deadline, and the
		// session cannot be trusted to be in step anyway. Drop it.
		c.c.Close()
		res := resultOf(c.Host, err)
		res.Network = true
		return res
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return resultOf(c.Host, err)
	}
	c.dirty = false
	return Result{Host: c.Host, Code: 250, Text: resp.StatusText}
}

// linesWhole reports whether every part ends a line, which lets Send stuff
// each part on its own: every part then starts at the start of a line.
func linesWhole(parts [][]byte) bool {
	for _, p := range parts {
		if !bytes.HasSuffix(p, crlf) {
			return false
		}
	}
	return len(parts) > 0
}

// stuffParts is the stuffed message of parts for which linesWhole holds,
// without its final CRLF.
func stuffParts(parts [][]byte) net.Buffers {
	var bufs net.Buffers
	for i, p := range parts {
		if i == len(parts)-1 {
			p = p[:len(p)-len(crlf)]
		}
		bufs = append(bufs, dotStuff(p)...)
	}
	return bufs
}

// Close ends the session politely (QUIT), or just closes it.
func (c *Conn) Close() {
	if err := c.c.Quit(); err != nil {
		c.c.Close()
	}
}

func resultOf(host string, err error) Result {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		r := Result{Host: host, Code: se.Code, Text: se.Message}
		if se.EnhancedCode != smtp.EnhancedCodeNotSet && se.EnhancedCode != smtp.NoEnhancedCode {
			r.Enhanced = fmt.Sprintf("%d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
		}
		return r
	}
	return Result{Host: host, Network: true, Text: err.Error()}
}

func isLoopbackAddr(addr string) bool {
	h, _, _ := net.SplitHostPort(addr)
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
