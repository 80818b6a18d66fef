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
	"time"

	"github.com/emersion/go-smtp"

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
	// Queued, when set, says how many recipients of a tenant wait in the
	// delivery queue, for tenants[].max_queued.
	Queued func(tenant string) int
	// MemoryBudget bounds the bytes submissions hold at once (DATA and
	// prepared copies); 0 is no bound.
	MemoryBudget int64
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
	// transaction ends; false when they do not fit. nil: no budget.
	Reserve func(n int64) bool

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
	budget   *memoryBudget

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
		budget: newMemoryBudget(cfg.MemoryBudget),
		conns:  map[*clientConn]struct{}{}, closing: make(chan struct{}), changed: make(chan struct{})}
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
			l.srv.metrics.SMTPRejected.WithLabelValues("connections").Inc()
			go refuse(c)
			continue
		}
		l.srv.metrics.SMTPConnections.Inc()
		cc := &clientConn{Conn: c}
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
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	w := bufio.NewWriter(c)
	w.WriteString("421 4.7.0 Too many connections, try again later\r\n")
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
	once     sync.Once
	release  func()
	timedOut error // go-smtp reads from one goroutine only
}

func (c *clientConn) Read(b []byte) (int, error) {
	if c.timedOut != nil {
		return 0, c.timedOut
	}
	n, err := c.Conn.Read(b)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		c.timedOut = err
	}
	return n, err
}

func (c *clientConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if err != nil {
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

// slogPrinter adapts go-smtp's Logger to slog.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Printf(format string, v ...any) {
	p.log.Warn("smtp server", "detail", fmt.Sprintf(format, v...))
}
func (p slogPrinter) Println(v ...any) { p.log.Warn("smtp server", "detail", fmt.Sprint(v...)) }
