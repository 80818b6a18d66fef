package gateway

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// session is one SMTP connection. Every method returns through s.out so
// that each refusal is counted and reaches the client as a bare SMTP reply.
type session struct {
	srv  *Server
	conn *smtp.Conn
	cc   *clientConn // beneath conn, nil in some unit tests
	ip   netip.Addr

	tenant   *Tenant // from AUTH, or from a trusted network at MAIL
	authUser string
	from     string
	rcpts    []string
	seen     map[string]bool
	excess   int // RCPT refused in this transaction for the limit
	size     int // what MAIL declared with SIZE= (RFC 1870), 0 if nothing

	refusals atomic.Int32 // since the last accepted message; BDAT's Data runs apart
	hungUp   sync.Once
}

const (
	// hardErrorLimit refusals without a message accepted in between end
	// the session with 421 4.7.0 (Postfix's smtpd_hard_error_limit): it
	// bounds what one connection can make the server do to no end.
	hardErrorLimit = 20
	// recipientOvershoot recipients past max_recipients get 452 before
	// those count as errors. RFC 5321 4.5.3.1.10 lets a pipelining client
	// send them all, then DATA for those accepted (Postfix's
	// smtpd_recipient_overshoot_limit).
	recipientOvershoot = 1000
	// The header section is bounded before a message is prepared.
	maxHeaderFields = 1000
	maxHeaderBytes  = 256 << 10
)

func (s *Server) newSession(c *smtp.Conn) (smtp.Session, error) {
	cc := connOf(c.Conn())
	cc.authenticated("") // a session after STARTTLS starts anonymous
	return &session{srv: s, conn: c, cc: cc, ip: remoteIP(c.Conn())}, nil
}

// out answers a refused command: it counts the refusal, logs it once
// (with attrs), and hangs up after a 421, a line too long, or too many
// refusals.
func (s *session) out(err error, attrs ...any) error {
	if err == nil {
		return nil
	}
	r, internal := replyOf(err)
	s.srv.metrics.SMTPRejected.WithLabelValues(r.reason).Inc()
	if internal {
		attrs = append(attrs, "err", err)
	}
	if r.code == 421 || r == errLineTooLong {
		return s.hangUp(r, attrs...)
	}
	if !(r == errTooManyRecipients && s.excess <= recipientOvershoot) && s.refusals.Add(1) >= hardErrorLimit {
		s.srv.metrics.SMTPRejected.WithLabelValues(errTooManyErrors.reason).Inc()
		return s.hangUp(errTooManyErrors, append(attrs, "last", r.reason)...)
	}
	// Recipients past the limit are logged once per transaction: a
	// pipelining client may send a thousand (see recipientOvershoot).
	if r != errTooManyRecipients || s.excess == 1 {
		s.logRefusal(r, internal, attrs...)
	}
	return toSMTP(r)
}

// logRefusal logs a refused command with the session's tenant (from AUTH
// or a trusted network) and user.
func (s *session) logRefusal(r *reply, internal bool, attrs ...any) {
	level := slog.LevelInfo
	if internal {
		level = slog.LevelError
	}
	t := s.tenant
	if t == nil {
		t = s.srv.dir.Trusted(s.ip)
	}
	tenant := ""
	if t != nil {
		tenant = t.Name
	}
	if s.authUser != "" {
		attrs = append(attrs, "user", s.authUser)
	}
	s.srv.logRefusal(level, r, tenant, s.ip, attrs...)
}

// hangUp sends r and closes the connection: after a 421 the server closes
// (RFC 5321 3.8), where go-smtp would read on. go-smtp flushes every reply,
// so r is written straight to the connection; go-smtp's own reply to the
// command then meets a closed connection and is dropped.
func (s *session) hangUp(r *reply, attrs ...any) error {
	s.hungUp.Do(func() {
		c := s.conn.Conn()
		c.SetWriteDeadline(time.Now().Add(cmp.Or(s.srv.cfg.WriteTimeout, time.Minute)))
		fmt.Fprintf(c, "%s\r\n", r.String())
		s.logRefusal(r, false, append(attrs, "closing", true)...)
		lingerClose(c)
		s.conn.Close()
	})
	return toSMTP(r)
}

func (s *session) isTLS() bool {
	_, ok := s.conn.TLSConnectionState()
	return ok
}

// AuthMechanisms offers PLAIN and LOGIN only where the password cannot be
// read on the wire: under TLS, or from loopback.
func (s *session) AuthMechanisms() []string { return s.authMechanismsFor(s.isTLS()) }

func (s *session) authMechanismsFor(tls bool) []string {
	if tls || s.ip.IsLoopback() {
		return []string{sasl.Plain, sasl.Login}
	}
	return nil
}

func (s *session) Auth(mech string) (sasl.Server, error) {
	if s.authMechanismsFor(s.isTLS()) == nil {
		return nil, s.out(errEncryptionRequired)
	}
	if s.from != "" {
		// RFC 4954 4: no AUTH during a mail transaction, or MAIL checked
		// against one tenant would be filed under another.
		return nil, s.out(newReply(503, smtp.EnhancedCode{5, 5, 1}, "sequence", "AUTH not permitted during a mail transaction"))
	}
	switch mech {
	case sasl.Plain:
		return saslReplies{sasl.NewPlainServer(s.login)}, nil
	case sasl.Login:
		return saslReplies{newLoginServer(func(username, password string) error { return s.login("", username, password) })}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

// saslReplies keeps go-sasl's own error text from the client: go-smtp
// sends a non-SMTP error as "454 4.7.0 <text>", a temporary failure for
// what is a malformed response (RFC 4954 4: 501).
type saslReplies struct{ sasl.Server }

func (s saslReplies) Next(response []byte) ([]byte, bool, error) {
	challenge, done, err := s.Server.Next(response)
	if err != nil {
		if _, ok := err.(*smtp.SMTPError); !ok {
			err = &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 5, 2}, Message: "Malformed authentication response"}
		}
	}
	return challenge, done, err
}

// login checks credentials; the replies are RFC 4954 6's, as *SMTPError
// (a SASL callback's plain error would become a 454). The address's
// failure budget is checked first, so that an address past it costs no
// bcrypt and cannot use the credential cache to guess; then the
// directory runs bcrypt in one of the server's slots, if one is free. A
// failure is logged with a known user's name, an unknown one's only as a
// hash: it may be a password typed into the wrong field.
func (s *session) login(identity, username, password string) error {
	suspect, ok := s.srv.throttle.allowed(s.ip, time.Now())
	if !ok {
		return s.out(errAuthLimit, "user", s.srv.dir.logName(username))
	}
	var t *Tenant
	err := error(errAuthFailed)
	if identity == "" || identity == username { // no acting as another (RFC 4616 2)
		t, err = s.srv.dir.Authenticate(username, password, func() (func(), bool) { return s.srv.slots.acquire(suspect) })
	}
	switch err {
	case nil:
		s.tenant, s.authUser = t, username
		s.cc.authenticated(t.Name)
		s.srv.log.Info("smtp auth", "user", username, "tenant", t.Name, "client", s.ip)
		return nil
	case errAuthFailed:
		s.srv.metrics.SMTPAuthFailures.Inc()
		// Within the budget only: a client past it is refused at once.
		time.Sleep(s.srv.throttle.failed(s.ip, time.Now()))
	case errAuthBusy:
		s.srv.throttle.busy(s.ip, time.Now())
	}
	return s.out(err, "user", s.srv.dir.logName(username))
}

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	return s.out(s.mail(from, opts))
}

func (s *session) mail(from string, opts *smtp.MailOptions) error {
	if s.srv.isClosing() {
		return errShuttingDown
	}
	// No open relay, ever: without AUTH only a trusted network may submit,
	// and nothing else about the envelope is looked at first.
	t := s.tenant
	if t == nil {
		t = s.srv.dir.Trusted(s.ip)
	}
	if t == nil {
		return errAuthRequired
	}
	if from == "" {
		return newReply(550, smtp.EnhancedCode{5, 7, 1}, "alignment", "The null sender is not accepted for submission")
	}
	addr, _, domain, err := parseAddress(from)
	if err != nil {
		return errBadSender // RFC 3463 3.2: X.1.7 is the sender's address
	}
	if !t.Owns(domain) {
		return newReply(550, smtp.EnhancedCode{5, 7, 1}, "alignment",
			fmt.Sprintf("Sender domain %s is not one of the domains of tenant %s", domain, t.Name))
	}
	if opts != nil && opts.Size > 0 && s.srv.cfg.MaxMessageBytes > 0 && opts.Size > s.srv.cfg.MaxMessageBytes {
		return errTooBig // RFC 1870 6.1
	}
	if s.srv.cfg.Memory.Full() {
		return errMemoryBudget
	}
	if t.MaxQueued > 0 && s.srv.cfg.Queued != nil && s.srv.cfg.Queued(t.Name) >= t.MaxQueued {
		return errTenantQueue
	}
	if !t.startTransaction() {
		return errTenantRate
	}
	s.tenant, s.from, s.rcpts, s.seen, s.excess, s.size = t, addr, nil, map[string]bool{}, 0, 0
	s.cc.mail(true, false)
	if opts != nil && opts.Size > 0 && opts.Size <= s.srv.cfg.MaxMessageBytes {
		// A hint only, and bounded: a declared size costs nothing to
		// send, so it must not reserve megabytes per connection.
		s.size = int(min(opts.Size, maxDataPrealloc))
	}
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	return s.out(s.rcpt(to))
}

func (s *session) rcpt(to string) error {
	if s.from == "" {
		return errNeedMail
	}
	if max := s.srv.cfg.MaxRecipients; max > 0 && len(s.rcpts) >= max {
		s.excess++
		return errTooManyRecipients
	}
	addr, _, _, err := parseAddress(to)
	if err != nil {
		return err
	}
	// The domain is already lower case; the local part is the receiver's
	// to interpret (RFC 5321 2.4), so only exact repeats are folded.
	if !s.seen[addr] {
		s.seen[addr] = true
		s.rcpts = append(s.rcpts, addr)
	}
	return nil
}

func (s *session) Data(r io.Reader) error {
	id, err := s.data(r)
	switch {
	case err == nil:
		// Postfix's reply, so that the submitter learns the id the API
		// and `certgate release` know the message by. go-smtp writes an
		// *SMTPError's code whatever it is: that is how a session chooses
		// its success reply (emersion/go-smtp#86).
		return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "Ok: queued as " + id}
	case errors.Is(err, smtp.ErrDataReset):
		// BDAT cut short (RSET, EHLO, a chunk over the size limit): go-smtp
		// has answered, and reads no result.
		return toSMTP(errTempFail)
	case errors.Is(err, errClientGone):
		s.conn.Close()
		return toSMTP(errTempFail)
	}
	return s.out(err)
}

// initialDataBuffer holds a typical certificate mail (20 to 30 KB) when
// the client declared no SIZE.
const (
	initialDataBuffer = 48 << 10
	maxDataPrealloc   = 1 << 20
)

// dataChunk is how much of a message is read between two looks at the
// memory budget.
const dataChunk = 64 << 10

// readData reads a message into one buffer, sized at first to hint (the
// declared SIZE or a typical certificate mail: one allocation instead of
// doubling from 512 bytes, a third of the bytes certgate allocated per
// message), counting what the buffer holds against the memory budget.
// Over the budget the rest of the message is read and dropped, so the
// session stays in step, and the message is refused with 452 4.3.1.
func readData(r io.Reader, hint int, mem *holding) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(hint)
	for {
		if err := mem.grow(int64(buf.Cap()) - mem.held); err != nil {
			if _, err := io.Copy(io.Discard, r); err != nil {
				return nil, dataReadError(err)
			}
			return nil, err
		}
		n, err := buf.ReadFrom(io.LimitReader(r, dataChunk))
		if err != nil {
			return nil, dataReadError(err)
		}
		if n < dataChunk {
			return buf.Bytes(), nil
		}
	}
}

// errClientGone: the connection ended during DATA; nobody reads a reply.
var errClientGone = errors.New("connection lost during DATA")

func (s *session) data(r io.Reader) (queueID string, err error) {
	if s.from == "" || len(s.rcpts) == 0 {
		return "", errNeedMail
	}
	mem := &holding{b: s.srv.cfg.Memory}
	defer mem.releaseAll()
	s.cc.readingData(true)
	data, err := readData(r, cmp.Or(s.size+bytes.MinRead, initialDataBuffer), mem)
	s.cc.readingData(false)
	if err != nil {
		return "", err
	}
	start := time.Now()
	if err := checkLineEndings(data); err != nil {
		return "", err
	}
	if err := checkHeaderSection(data); err != nil {
		return "", err
	}
	env := &Envelope{
		Tenant: s.tenant, AuthUser: s.authUser, ClientIP: s.ip, Helo: s.conn.Hostname(),
		TLS: s.isTLS(), From: s.from, Rcpts: s.rcpts, Reserve: mem.grow, Release: mem.shrink, Buffered: mem.held,
	}
	size := len(data) // data itself is not needed once prepared
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id, err := s.srv.acceptor.Accept(ctx, env, data)
	s.srv.metrics.SMTPAcceptDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		return "", err
	}
	s.refusals.Store(0)
	s.cc.mail(false, true)
	s.srv.log.Info("accepted", "id", id, "tenant", s.tenant.Name, "from", s.from, "rcpts", len(s.rcpts), "size", size, "client", s.ip)
	return id, nil
}

func (s *session) Reset() {
	s.cc.mail(false, false)
	s.from, s.rcpts, s.seen = "", nil, nil
	if s.authUser == "" {
		s.tenant = nil
	}
}

func (s *session) Logout() error { return nil }

// checkLineEndings refuses bare CR, bare LF and NUL in DATA. go-smtp passes
// them through, and a receiver that treats a bare LF as a line end can be
// made to see a second, smuggled message after "\n.\n" (RFC 5321 2.3.8,
// 4.1.1.4; CVE-2023-51766 and friends). 8BITMIME data may not hold NUL
// (RFC 6152 3).
func checkLineEndings(b []byte) error {
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '\r':
			if i+1 >= len(b) || b[i+1] != '\n' {
				return errSmuggling
			}
			i++
		case '\n':
			return errSmuggling
		case 0:
			return newReply(550, smtp.EnhancedCode{5, 6, 0}, "syntax", "Message contains a NUL octet")
		}
	}
	return nil
}

// dataReadError says what a failed read of the message means for the
// session. Only a message over the size limit leaves it in step: go-smtp
// reads on to the end of the data.
func dataReadError(err error) error {
	var ne net.Error
	switch {
	case errors.Is(err, smtp.ErrDataTooLarge):
		return errTooBig
	case errors.Is(err, smtp.ErrTooLongLine):
		return errLineTooLong
	case errors.Is(err, smtp.ErrDataReset):
		return err
	case errors.As(err, &ne) && ne.Timeout():
		return errDataTimeout
	}
	return errClientGone
}

// checkHeaderSection bounds the header section (up to the first empty
// line; lines end in CRLF, see checkLineEndings). Preparing a message costs
// per header field: 1 MiB of 131,000 short fields allocated 97 MB.
func checkHeaderSection(b []byte) error {
	fields := 0
	for off := 0; off < len(b); {
		if off > maxHeaderBytes {
			return errHeaderTooBig
		}
		end := bytes.Index(b[off:], []byte("\r\n"))
		if end == 0 {
			return nil
		}
		if b[off] != ' ' && b[off] != '\t' {
			if fields++; fields > maxHeaderFields {
				return errHeaderTooBig
			}
		}
		if end < 0 {
			break
		}
		off += end + 2
	}
	return nil
}
