package gateway

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"
	"golang.org/x/time/rate"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/membudget"
	"github.com/certgate/certgate/metrics"
)

// ServerConfig is the submission server's share of the configuration.
// A limit left at zero is not enforced.
type ServerConfig struct {
	Hostname        string
	TLS             *tls.Config // nil: no STARTTLS
	MaxMessageBytes int64
	MaxRecipients   int
	// Connections open at once: in total, per client address, and per
	// client network (a /24 of IPv4, a /64 of IPv6). TrustedReserve of the
	// total are kept for tenants' trusted networks, which the network
	// limit does not count.
	MaxConnections           int
	MaxConnectionsPerIP      int
	MaxConnectionsPerNetwork int
	TrustedReserve           int
	ReadTimeout              time.Duration // per command, and the whole of DATA
	WriteTimeout             time.Duration
	// PreAuthTimeout shortens ReadTimeout until the client authenticates
	// (clients on a trusted network need not). MaxSessionWithoutMail caps
	// the time outside a mail transaction, from the session's start or its
	// last accepted message: commands do not extend it.
	PreAuthTimeout        time.Duration
	MaxSessionWithoutMail time.Duration
	// AuthFailureDelay is the pause after a failed AUTH, times the recent
	// failures of the client's address (up to 8). Past AuthFailureLimit
	// failures within AuthFailureWindow (15 minutes if zero) of each other,
	// the address is refused before bcrypt runs. At most AuthConcurrency
	// bcrypt comparisons run at once (0: GOMAXPROCS).
	AuthFailureDelay  time.Duration
	AuthFailureLimit  int
	AuthFailureWindow time.Duration
	AuthConcurrency   int
	// Queued, when set, says how many recipients of a tenant wait in the
	// delivery queue, for tenants[].max_queued.
	Queued func(tenant string) int
	// Memory is the server-wide budget of bytes that DATA buffers and
	// prepared copies hold (deliveries share it); nil is no bound.
	Memory *membudget.Budget
}

// Acceptor takes a complete, checked submission and makes it durable; only
// when it returns nil does the client get 250.
type Acceptor interface {
	Accept(ctx context.Context, env *Envelope, data []byte) (queueID string, err error)
}

// Envelope is what the SMTP session learned about a submission.
type Envelope struct {
	// Reserve takes bytes of the server's memory budget for what the
	// submission makes of the message (prepared copies), until the
	// transaction ends or Release gives them back; a reply error when
	// they do not fit. nil: no budget.
	Reserve func(n int64) error
	Release func(n int64)
	// Buffered is what the DATA buffer holds of the budget, given back
	// once the message is prepared and the buffer no longer needed.
	Buffered int64

	Tenant   *Tenant
	AuthUser string
	ClientIP netip.Addr
	// Via is how the message came in: ViaSMTP (the zero value), or
	// ViaHTTP for the send API, which has no HELO.
	Via  Via
	Helo string
	TLS  bool
	From string
	// Class and Hold, when Class is set, are the submission's own
	// controls (the send API's class and hold), in place of the
	// X-Certgate-Class and X-Certgate-Hold header fields.
	Class config.Class
	Hold  bool
	// Note is added to the accepted event's detail (the send API's
	// format).
	Note  string
	Rcpts []string
	// PlacementTest sends the message to every seed mailbox, beside
	// Rcpts (which may then be empty): an on-demand placement test.
	PlacementTest bool
}

// Via is the protocol a submission came in by.
type Via string

const (
	ViaSMTP Via = ""     // an SMTP submission session
	ViaHTTP Via = "HTTP" // POST /api/v1/send
)

func (e *Envelope) reserve(n int64) error {
	if e.Reserve == nil {
		return nil
	}
	return e.Reserve(n)
}

func (e *Envelope) release(n int64) {
	if e.Release != nil {
		e.Release(n)
	}
}

// Server is the SMTP submission server.
type Server struct {
	cfg      ServerConfig
	dir      *Directory
	acceptor Acceptor
	metrics  *metrics.Metrics
	log      *slog.Logger
	throttle *authThrottle
	slots    *hashSlots
	reserve  int // TrustedReserve, 0 when no tenant has trusted networks
	limits   connLimits

	refusalLog logLimiter

	smtp        *smtp.Server
	closing     chan struct{} // closed when Shutdown begins
	closingOnce sync.Once
	mu          sync.Mutex
	conns       map[*clientConn]struct{} // open sessions, to close at the deadline
	listeners   []net.Listener           // what Serve was given, for Shutdown to close
	changed     chan struct{}            // closed and replaced when conns changes
}

// NewServer builds a submission server; Serve starts it on listeners.
func NewServer(cfg ServerConfig, dir *Directory, acceptor Acceptor, m *metrics.Metrics, log *slog.Logger) *Server {
	s := &Server{cfg: cfg, dir: dir, acceptor: acceptor, metrics: m, log: log,
		throttle: newAuthThrottle(cfg.AuthFailureDelay, cfg.AuthFailureLimit, cfg.AuthFailureWindow),
		slots:    newHashSlots(cmp.Or(cfg.AuthConcurrency, runtime.GOMAXPROCS(0))),
		limits:   connLimits{perAddr: map[netip.Addr]int{}, perNet: map[netip.Prefix]int{}},
		conns:    map[*clientConn]struct{}{}, closing: make(chan struct{}), changed: make(chan struct{})}
	for _, t := range dir.tenants {
		if len(t.Networks) > 0 {
			s.reserve = cfg.TrustedReserve
		}
	}
	srv := smtp.NewServer(smtp.BackendFunc(s.newSession))
	srv.Domain = cfg.Hostname
	srv.TLSConfig = cfg.TLS
	srv.MaxMessageBytes = cfg.MaxMessageBytes
	// Checked in Rcpt with the right reply; go-smtp's own would be a 552.
	srv.MaxRecipients = 0
	// DATA lines over 998 octets are re-encoded, not refused, so the line
	// limit only bounds memory (it applies to commands and DATA alike).
	srv.MaxLineLength = 64 << 10
	srv.ReadTimeout = cfg.ReadTimeout
	srv.WriteTimeout = cfg.WriteTimeout
	// Plaintext AUTH is allowed by go-smtp so that the session can decide:
	// loopback only (see AuthMechanisms).
	srv.AllowInsecureAuth = true
	srv.ErrorLog = slogPrinter{log}
	s.smtp = srv
	return s
}

// Serve accepts connections on l until Shutdown.
func (s *Server) Serve(l net.Listener) error {
	// go-smtp's Shutdown closes only the listeners its Serve has taken:
	// one handed over just after would accept for ever. The server keeps
	// its own list, and closes a late one at once.
	s.mu.Lock()
	if s.isClosing() {
		s.mu.Unlock()
		l.Close()
		return nil
	}
	s.listeners = append(s.listeners, l)
	s.mu.Unlock()
	ll := &limitListener{Listener: l, srv: s}
	err := s.smtp.Serve(ll)
	if errors.Is(err, smtp.ErrServerClosed) || s.isClosing() {
		return nil
	}
	return err
}

// Shutdown stops accepting mail: new transactions get 421 4.3.2, listeners
// close, and sessions get until ctx ends to finish. go-smtp waits for idle
// sessions too, so those left at the deadline are closed: a transaction cut
// there was never answered 250, so the client still holds its message.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closingOnce.Do(func() { close(s.closing) })
	for _, l := range s.listeners {
		l.Close()
	}
	s.mu.Unlock()
	err := s.smtp.Shutdown(ctx)
	if errors.Is(err, net.ErrClosed) {
		err = nil // go-smtp closing a listener closed above, once sessions ended
	}
	if err != nil {
		// go-smtp's Close does nothing once Shutdown has begun.
		s.mu.Lock()
		for c := range s.conns {
			c.Conn.Close()
		}
		s.mu.Unlock()
	}
	return err
}

// sessionsChanged wakes WaitSessions; called with s.mu held.
func (s *Server) sessionsChanged() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// WaitSessions blocks until at most n sessions are open, or ctx ends.
func (s *Server) WaitSessions(ctx context.Context, n int) error {
	for {
		s.mu.Lock()
		open, changed := len(s.conns), s.changed
		s.mu.Unlock()
		if open <= n {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s *Server) isClosing() bool {
	select {
	case <-s.closing:
		return true
	default:
		return false
	}
}

// limitListener enforces the connection limits before go-smtp sees the
// connection: a client over one gets 421 4.7.0 and is closed (RFC 5321
// 3.8).
type limitListener struct {
	net.Listener
	srv *Server
}

// connLimits counts the open connections of every listener of a server.
// Clients outside every trusted network may take all but the reserve of
// the total, and no more than the limits per address and per network:
// idle holders from one network cannot lock out the others, and nobody
// can lock out the tenants' own systems.
type connLimits struct {
	mu        sync.Mutex
	total     int                  // every open connection
	untrusted int                  // those not from a trusted network
	perAddr   map[netip.Addr]int   // every one, by address
	perNet    map[netip.Prefix]int // untrusted ones, by network
}

// networkOf is the network a client is counted in: its /24 (IPv4) or /64
// (IPv6), what one client usually holds.
func networkOf(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap()
	bits := 64
	if ip.Is4() {
		bits = 24
	}
	p, _ := ip.Prefix(bits)
	return p
}

// admit counts a new connection from ip, or says which limit it would
// exceed.
func (s *Server) admit(ip netip.Addr, network netip.Prefix, trusted bool) (limit string) {
	l, cfg := &s.limits, s.cfg
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case cfg.MaxConnections > 0 && l.total >= cfg.MaxConnections:
		return "total"
	case !trusted && cfg.MaxConnections > 0 && l.untrusted >= cfg.MaxConnections-s.reserve:
		return "trusted_reserve"
	case cfg.MaxConnectionsPerIP > 0 && l.perAddr[ip] >= cfg.MaxConnectionsPerIP:
		return "address"
	case !trusted && cfg.MaxConnectionsPerNetwork > 0 && l.perNet[network] >= cfg.MaxConnectionsPerNetwork:
		return "network"
	}
	l.total++
	l.perAddr[ip]++
	if !trusted {
		l.untrusted++
		l.perNet[network]++
	}
	return ""
}

// leave uncounts a connection admit counted.
func (s *Server) leave(ip netip.Addr, network netip.Prefix, trusted bool) {
	l := &s.limits
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.perAddr[ip]--; l.perAddr[ip] <= 0 {
		delete(l.perAddr, ip)
	}
	if !trusted {
		l.untrusted--
		if l.perNet[network]--; l.perNet[network] <= 0 {
			delete(l.perNet, network)
		}
	}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c)
		network := networkOf(ip)
		trusted := l.srv.dir.Trusted(ip) != nil
		if limit := l.srv.admit(ip, network, trusted); limit != "" {
			l.srv.metrics.SMTPRejected.WithLabelValues(errTooManyConnections.reason).Inc()
			l.srv.logRefusal(slog.LevelInfo, errTooManyConnections, "", ip, "limit", limit)
			go refuse(c)
			continue
		}
		l.srv.metrics.SMTPConnections.Inc()
		cc := &clientConn{Conn: c, srv: l.srv, ip: ip, trusted: trusted, quietSince: time.Now()}
		cc.release = func() {
			l.srv.leave(ip, network, trusted)
			l.srv.mu.Lock()
			delete(l.srv.conns, cc)
			l.srv.sessionsChanged()
			l.srv.mu.Unlock()
			l.srv.metrics.SMTPConnections.Dec()
		}
		l.srv.mu.Lock()
		l.srv.conns[cc] = struct{}{}
		l.srv.sessionsChanged()
		l.srv.mu.Unlock()
		return cc, nil
	}
}

func refuse(c net.Conn) {
	r := errTooManyConnections
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	w := bufio.NewWriter(c)
	fmt.Fprintf(w, "%d %d.%d.%d %s\r\n", r.code, r.enhanced[0], r.enhanced[1], r.enhanced[2], r.text)
	w.Flush()
	c.Close()
}

// clientConn is a client's connection as go-smtp sees it (under TLS after
// STARTTLS). Closing it frees the connection's slots. It holds what the
// session limits need across go-smtp's sessions (a new one follows
// STARTTLS), and ends the session on the two failures go-smtp carries on
// after, out of step with the client:
//   - a read timeout. bufio hands go-smtp the part of a line read before it
//     as a whole command, and a timeout in DATA leaves the rest of the
//     message to be read as commands; so once a read has timed out, every
//     read fails and go-smtp closes with 421 4.4.2 (RFC 5321 4.5.3.2).
//   - a failed write. go-smtp ignores it and keeps reading commands it can
//     no longer answer, so a client that has not read its replies for
//     write_timeout is closed.
type clientConn struct {
	net.Conn
	srv     *Server
	ip      netip.Addr
	trusted bool // from a tenant's trusted network
	once    sync.Once
	release func()

	timedOut error       // go-smtp reads from one goroutine only (BDAT's Data reads a pipe)
	spoke    atomic.Bool // the client has sent something
	inData   atomic.Bool // the session reads DATA, and answers a timeout itself
	lost     sync.Once   // logs the connection lost

	mu         sync.Mutex
	tenant     string    // authenticated as a user of this tenant
	inMail     bool      // a mail transaction is open
	quietSince time.Time // the session's start, or its last accepted message
	limit      string    // the session limit the read deadline was cut to, if any
}

// connOf finds the clientConn beneath go-smtp's connection, or nil.
func connOf(c net.Conn) *clientConn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	cc, _ := c.(*clientConn)
	return cc
}

// SetReadDeadline takes go-smtp's deadline for the next command (now plus
// read_timeout) and brings it forward to the session limits that apply.
// RFC 5321 4.5.3.2.7 asks a server for 5 minutes between commands; that
// is read_timeout, for clients that have authenticated or come from a
// trusted network. An anonymous client gets pre_auth_timeout, as Postfix
// gives less under stress, and nobody may stay outside a transaction past
// max_session_without_mail, however busy with NOOP, RSET or EHLO.
func (c *clientConn) SetReadDeadline(t time.Time) error {
	cfg := c.srv.cfg
	now := time.Now()
	c.mu.Lock()
	c.limit = ""
	if d := cfg.PreAuthTimeout; d > 0 && c.tenant == "" && !c.trusted && now.Add(d).Before(t) {
		t, c.limit = now.Add(d), "pre_auth_timeout"
	}
	if d := cfg.MaxSessionWithoutMail; d > 0 && !c.inMail && c.quietSince.Add(d).Before(t) {
		t, c.limit = c.quietSince.Add(d), "max_session_without_mail"
	}
	c.mu.Unlock()
	return c.Conn.SetReadDeadline(t)
}

// SetDeadline is SetReadDeadline and SetWriteDeadline.
func (c *clientConn) SetDeadline(t time.Time) error {
	c.Conn.SetWriteDeadline(t)
	return c.SetReadDeadline(t)
}

// authenticated notes the tenant the client logged in as ("" for none: a
// new session after STARTTLS must authenticate again).
func (c *clientConn) authenticated(tenant string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.tenant = tenant
	c.mu.Unlock()
}

// mail notes a transaction opened or closed; accepted, a message accepted,
// which starts the time without mail anew.
func (c *clientConn) mail(open, accepted bool) {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.inMail = open
	if accepted {
		c.quietSince = time.Now()
	}
	c.mu.Unlock()
}

// readingData notes that the session reads a message, and answers a
// timeout there itself.
func (c *clientConn) readingData(on bool) {
	if c != nil {
		c.inData.Store(on)
	}
}

func (c *clientConn) Read(b []byte) (int, error) {
	if c.timedOut != nil {
		return 0, c.timedOut
	}
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.spoke.Store(true)
	}
	var ne net.Error
	switch {
	case err == nil:
	case errors.As(err, &ne) && ne.Timeout():
		c.timedOut = err
		if !c.inData.Load() {
			c.idleTimeout()
		}
	case errors.Is(err, syscall.ECONNRESET):
		// The client's doing, as EOF is: go-smtp would log it as an error
		// (every TCP health probe that resets would).
		c.connLost(err)
		err = io.EOF
	case errors.Is(err, net.ErrClosed): // by the server
	default:
		c.connLost(err)
	}
	return n, err
}

// connLost logs, once and at debug level, a connection the client closed
// or reset. One that sent nothing is a TCP health probe, most likely.
func (c *clientConn) connLost(err error) {
	c.lost.Do(func() {
		msg := "smtp connection lost"
		if !c.spoke.Load() {
			msg = "smtp connection closed before any command"
		}
		c.srv.log.Debug(msg, "client", c.ip, "err", err)
	})
}

// idleTimeout logs the reply go-smtp gives a client that sent no command
// in time.
func (c *clientConn) idleTimeout() {
	c.mu.Lock()
	reason, tenant := cmp.Or(c.limit, "timeout"), c.tenant
	c.mu.Unlock()
	r := newReply(errIdleTimeout.code, errIdleTimeout.enhanced, reason, errIdleTimeout.text)
	c.srv.metrics.SMTPRejected.WithLabelValues(reason).Inc()
	c.srv.logRefusal(slog.LevelInfo, r, tenant, c.ip)
}

func (c *clientConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if err != nil {
		c.connLost(err)
		c.Close()
	}
	return n, err
}

func (c *clientConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

// lingerTime bounds how long a hung-up client is read from (and ignored)
// until it closes its side.
const lingerTime = 2 * time.Second

// lingerClose closes c after its last reply. Closing a socket with unread
// input sends RST, and a client reset before it has read the reply loses it:
// a pipelining client always has input in flight. So the write side is shut
// first, and input is discarded until the client closes too or lingerTime
// passes. c may be under TLS; the caller closes it afterwards.
func lingerClose(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		tc.CloseWrite() // close_notify
		c = tc.NetConn()
	}
	if cc, ok := c.(*clientConn); ok {
		c = cc.Conn // beneath its sticky read timeout
	}
	if tcp, ok := c.(*net.TCPConn); ok {
		tcp.CloseWrite()
		tcp.SetReadDeadline(time.Now().Add(lingerTime))
		io.Copy(io.Discard, tcp)
	}
}

func remoteIP(c net.Conn) netip.Addr {
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// logRefusal logs a refusal, once: why, the reply, the tenant when known
// and the client, then attrs. At error level it is an internal error's
// (with its cause in attrs), and always logged; others are subject to
// s.refusalLog.
func (s *Server) logRefusal(level slog.Level, r *reply, tenant string, ip netip.Addr, attrs ...any) {
	msg := "smtp refused"
	if level >= slog.LevelError {
		msg = "smtp session: internal error"
	}
	suppressed, ok := 0, true
	if level < slog.LevelError {
		suppressed, ok = s.refusalLog.allow(ip, time.Now())
	}
	if !ok {
		return
	}
	a := []any{"reason", r.reason, "reply", r.String()}
	if tenant != "" {
		a = append(a, "tenant", tenant)
	}
	a = append(a, "client", ip)
	if suppressed > 0 {
		a = append(a, "suppressed", suppressed)
	}
	s.log.Log(context.Background(), level, msg, append(a, attrs...)...)
}

// logLimiter bounds the refusals one client writes to the log: an AUTH
// flood from 100 addresses drew 5,000 refusals a second, 28 MB of log in
// 20 s. Each client (address, or /64 of IPv6) logs refusalLogBurst lines
// at once, then one a second; the refusals left out are counted, and the
// count goes on the client's next line as "suppressed". The metric counts
// every refusal.
type logLimiter struct {
	mu        sync.Mutex
	clients   map[netip.Addr]*logBucket
	nextPrune int
}

type logBucket struct {
	lim        *rate.Limiter
	suppressed int
}

const (
	refusalLogBurst = 20
	refusalLogRate  = rate.Limit(1) // lines a second past the burst
)

// allow says whether a refusal from ip is logged now, and how many were
// left out before it.
func (l *logLimiter) allow(ip netip.Addr, now time.Time) (suppressed int, ok bool) {
	key := authKey(ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.clients == nil {
		l.clients, l.nextPrune = map[netip.Addr]*logBucket{}, 10000
	}
	if len(l.clients) >= l.nextPrune { // bound memory under a spray of addresses
		for k, b := range l.clients {
			if b.suppressed == 0 && b.lim.TokensAt(now) >= refusalLogBurst {
				delete(l.clients, k)
			}
		}
		l.nextPrune = max(10000, 2*len(l.clients))
	}
	b := l.clients[key]
	if b == nil {
		b = &logBucket{lim: rate.NewLimiter(refusalLogRate, refusalLogBurst)}
		l.clients[key] = b
	}
	if !b.lim.AllowN(now, 1) {
		b.suppressed++
		return 0, false
	}
	suppressed, b.suppressed = b.suppressed, 0
	return suppressed, true
}

// slogPrinter adapts go-smtp's Logger to slog.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Printf(format string, v ...any) {
	p.log.Warn("smtp server", "detail", fmt.Sprintf(format, v...))
}
func (p slogPrinter) Println(v ...any) { p.log.Warn("smtp server", "detail", fmt.Sprint(v...)) }
