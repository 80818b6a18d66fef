package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"
	"golang.org/x/time/rate"

	"github.com/certgate/certgate/metrics"
)

// ServerConfig is the submission server's share of the configuration.
type ServerConfig struct {
	Hostname            string
	TLS                 *tls.Config // nil: no STARTTLS
	MaxMessageBytes     int64
	MaxRecipients       int
	MaxConnections      int
	MaxConnectionsPerIP int
	ReadTimeout         time.Duration
	WriteTimeout        time.Duration
	AuthFailureDelay    time.Duration
}

// Acceptor takes a complete, checked submission and makes it durable; only
// when it returns nil does the client get 250.
type Acceptor interface {
	Accept(ctx context.Context, env *Envelope, data []byte) (queueID string, err error)
}

// Envelope is what the SMTP session learned about a submission.
type Envelope struct {
	Tenant   *Tenant
	AuthUser string
	ClientIP netip.Addr
	Helo     string
	TLS      bool
	From     string
	Rcpts    []string
}

// Server is the SMTP submission server.
type Server struct {
	cfg      ServerConfig
	dir      *Directory
	acceptor Acceptor
	metrics  *metrics.Metrics
	log      *slog.Logger
	throttle *authThrottle

	refusalLog logLimiter

	smtp        *smtp.Server
	closing     chan struct{} // closed when Shutdown begins
	closingOnce sync.Once
	mu          sync.Mutex
	conns       map[*clientConn]struct{} // open sessions, to close at the deadline
	changed     chan struct{}            // closed and replaced when conns changes
}

// NewServer builds a submission server; Serve starts it on listeners.
func NewServer(cfg ServerConfig, dir *Directory, acceptor Acceptor, m *metrics.Metrics, log *slog.Logger) *Server {
	s := &Server{cfg: cfg, dir: dir, acceptor: acceptor, metrics: m, log: log, throttle: newAuthThrottle(cfg.AuthFailureDelay),
		conns: map[*clientConn]struct{}{}, closing: make(chan struct{}), changed: make(chan struct{})}
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
	ll := &limitListener{Listener: l, max: s.cfg.MaxConnections, perIP: s.cfg.MaxConnectionsPerIP, per: map[netip.Addr]int{}, srv: s}
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
	s.closingOnce.Do(func() { close(s.closing) })
	err := s.smtp.Shutdown(ctx)
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

// limitListener enforces the total and per-address connection limits before
// go-smtp sees the connection: a client over the limit gets 421 4.7.0 and is
// closed (RFC 5321 3.8).
type limitListener struct {
	net.Listener
	max, perIP int
	srv        *Server

	mu    sync.Mutex
	total int
	per   map[netip.Addr]int
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c)
		l.mu.Lock()
		over := (l.max > 0 && l.total >= l.max) || (l.perIP > 0 && l.per[ip] >= l.perIP)
		if !over {
			l.total++
			l.per[ip]++
		}
		l.mu.Unlock()
		if over {
			l.srv.metrics.SMTPRejected.WithLabelValues(errTooManyConnections.reason).Inc()
			l.srv.logRefusal(slog.LevelInfo, errTooManyConnections, "", ip)
			go refuse(c)
			continue
		}
		l.srv.metrics.SMTPConnections.Inc()
		cc := &clientConn{Conn: c, srv: l.srv, ip: ip}
		cc.release = func() {
			l.mu.Lock()
			l.total--
			if l.per[ip]--; l.per[ip] <= 0 {
				delete(l.per, ip)
			}
			l.mu.Unlock()
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
// STARTTLS). Closing it frees the connection's slots. It also ends the
// session on the two failures go-smtp carries on after, out of step with
// the client:
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
	once    sync.Once
	release func()

	timedOut error       // go-smtp reads from one goroutine only (BDAT's Data reads a pipe)
	spoke    atomic.Bool // the client has sent something
	inData   atomic.Bool // the session reads DATA, and answers a timeout itself
	lost     sync.Once   // logs the connection lost
}

// connOf finds the clientConn beneath go-smtp's connection, or nil.
func connOf(c net.Conn) *clientConn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	cc, _ := c.(*clientConn)
	return cc
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
	c.srv.metrics.SMTPRejected.WithLabelValues(errIdleTimeout.reason).Inc()
	c.srv.logRefusal(slog.LevelInfo, errIdleTimeout, "", c.ip)
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
