// Package sim is a simulated receiving mailbox provider (a Gmail, an Outlook)
// listening on loopback. certgate's demo and tests deliver to it exactly as
// they would to a real provider: by MX, over SMTP. It stores what arrives,
// verifies DKIM on receipt and can throttle, refuse or script replies the way
// real providers do.
//
// It is for the demo and the tests only; production code paths never import it.
package sim

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"
	"golang.org/x/time/rate"
)

// Options configure one simulated provider.
type Options struct {
	// Name identifies the provider in messages and logs, e.g. "gmail".
	Name string
	// Domains are the recipient domains it hosts. RCPT to any other domain
	// gets 550 5.7.1. Empty means it accepts every domain.
	Domains []string
	// MXHost is the name certgate's static DNS table points at this provider,
	// e.g. "gmail-smtp-in.l.google.com". It is also the greeting name.
	MXHost string
	// IP is the loopback address to listen on; default 127.0.0.1.
	IP string
	// Port to listen on; 0 picks a free one.
	Port int
	// TLS, when set, makes the provider offer STARTTLS.
	TLS *tls.Config
	// LookupTXT answers DKIM key queries; nil skips DKIM verification.
	LookupTXT func(domain string) ([]string, error)
	// RatePerSecond caps RCPT commands per second to hosted domains (burst:
	// one second's worth, at least 1); above it RCPT gets 421 4.7.28 like
	// Gmail's throttling. 0 means unlimited.
	RatePerSecond float64
	// Distrust, when set, makes the provider refuse recipients above a rate
	// with Outlook.com's 451 4.7.650 and junk mail while it is pushed (see
	// Distrust).
	Distrust *Distrust
	// MaxConnections caps concurrent connections; the ones above it are
	// greeted with 421 4.7.0 and closed. 0 means unlimited.
	MaxConnections int
	// Respond, when set, scripts the RCPT reply: nil (or a code below 400)
	// accepts, anything else is sent as is. It runs concurrently for
	// concurrent sessions.
	Respond func(from, rcpt string) *smtp.SMTPError
	// DataRespond, when set, scripts the reply after DATA. It is called once
	// per recipient copy before the copy is stored and may change its
	// Folder (a folder other than INBOX overrides Filing); the first
	// non-nil reply is sent, and a code of 400 or above rejects the whole
	// message.
	DataRespond func(msg *Message) *smtp.SMTPError
	// Faults inject the failures of broken and hostile receivers (see
	// Faults); the zero value injects none.
	Faults Faults
	// IMAP, when set, gives the provider an IMAP side with mailboxes for
	// some recipients (see IMAPOptions).
	IMAP *IMAPOptions
	// Filing says where accepted copies are filed (see Filing); the zero
	// value files everything in INBOX.
	Filing Filing
	// Now is the provider's clock for arrival times, INTERNALDATE, the rate
	// rule, Distrust and delayed moves; nil is the wall clock. With an
	// injected clock, delayed moves happen only when ApplyDueMoves is
	// called.
	Now func() time.Time
	// Logger receives debug logs; nil discards them.
	Logger *slog.Logger
}

// maxMessageBytes is roughly what big providers advertise in SIZE.
const maxMessageBytes = 35 << 20

// closeGrace is how long Close lets transactions in flight finish before it
// drops their connections.
const closeGrace = 5 * time.Second

// Replies the sim gives by itself. Any 421 also closes the connection, as
// RFC 5321 says and real providers do, so clients cannot get away with
// reusing it.
var (
	errRelay   = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "relay not permitted"}
	errRate    = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 28}, Message: "rate limited, slow down"}
	errBusy    = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "too many concurrent connections, try again later"}
	errClosing = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "service shutting down"}
	errNoRcpt  = &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "no valid recipients"}
	errRead    = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "error reading message"}
)

// Provider is one running simulated provider.
type Provider struct {
	opts      Options
	log       *slog.Logger
	domains   map[string]bool
	srv       *smtp.Server
	ln        *listener
	serveDone chan struct{}
	refusals  sync.WaitGroup // goroutines writing 421 to refused connections
	closeOnce sync.Once

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every change; see notify
	msgs     []Message
	stats    Stats
	limiter  *rate.Limiter
	conns    map[*conn]struct{} // open connections
	seq      int                // connections accepted, refused ones included
	busy     int                // sessions inside a mail transaction
	closing  bool
	faults   faultState
	filing   filingState
	distrust distrustState

	imap *imapSide // nil without Options.IMAP
}

// Start listens on opts.IP and opts.Port and serves until Close.
func Start(opts Options) (*Provider, error) {
	opts, err := normalize(opts, "127.0.0.1")
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(opts.IP, strconv.Itoa(opts.Port)))
	if err != nil {
		return nil, err
	}
	return serve(opts, ln)
}

// StartGroup starts several providers on one common port, each on its own
// loopback IP (127.0.0.11, .12, ... where IP is unset), because certgate
// dials every MX on one configured port as it would dial port 25. It returns
// the providers in order and the port.
func StartGroup(opts []Options) ([]*Provider, int, error) {
	if len(opts) == 0 {
		return nil, 0, errors.New("sim: no providers")
	}
	port := 0
	all := make([]Options, len(opts))
	for i, o := range opts {
		o, err := normalize(o, "127.0.0."+strconv.Itoa(11+i))
		if err != nil {
			return nil, 0, err
		}
		if o.Port != 0 && port != 0 && o.Port != port {
			return nil, 0, fmt.Errorf("sim: %s: port %d differs from the group's port %d", o.Name, o.Port, port)
		}
		if o.Port != 0 {
			port = o.Port
		}
		all[i] = o
	}
	// A port free on the first IP may be taken on another; try a few.
	tries := 20
	if port != 0 {
		tries = 1
	}
	var err error
	for range tries {
		var lns []net.Listener
		lns, err = listenAll(all, port)
		if err == nil {
			ps := make([]*Provider, len(all))
			for i := range all {
				if ps[i], err = serve(all[i], lns[i]); err != nil {
					for _, p := range ps[:i] {
						p.Close()
					}
					for _, ln := range lns[i+1:] {
						ln.Close()
					}
					return nil, 0, err
				}
			}
			return ps, ps[0].ln.Addr().(*net.TCPAddr).Port, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	return nil, 0, err
}

// listenAll binds every provider's IP on port (the first on a free port
// when port is 0); on failure it closes what it opened.
func listenAll(all []Options, port int) ([]net.Listener, error) {
	var lns []net.Listener
	for _, o := range all {
		ln, err := net.Listen("tcp", net.JoinHostPort(o.IP, strconv.Itoa(port)))
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, err
		}
		port = ln.Addr().(*net.TCPAddr).Port
		lns = append(lns, ln)
	}
	return lns, nil
}

func normalize(o Options, defaultIP string) (Options, error) {
	if o.Name == "" {
		o.Name = "sim"
	}
	if o.IP == "" {
		o.IP = defaultIP
	}
	// The sim must never be reachable from outside the machine.
	if ip := net.ParseIP(o.IP); ip == nil || !ip.IsLoopback() {
		return o, fmt.Errorf("sim: %s: IP %q is not a loopback address", o.Name, o.IP)
	}
	if o.Port < 0 || o.Port > 65535 {
		return o, fmt.Errorf("sim: %s: bad port %d", o.Name, o.Port)
	}
	if err := o.Faults.check(o.TLS != nil); err != nil {
		return o, fmt.Errorf("sim: %s: %w", o.Name, err)
	}
	if err := o.Filing.check(o.LookupTXT != nil); err != nil {
		return o, fmt.Errorf("sim: %s: %w", o.Name, err)
	}
	if o.Distrust != nil {
		d, err := o.Distrust.withDefaults() // the caller's copy stays as it was
		if err != nil {
			return o, fmt.Errorf("sim: %s: %w", o.Name, err)
		}
		o.Distrust = &d
	}
	if o.IMAP != nil {
		imapOpts := *o.IMAP // the caller's copy stays as it was
		if err := imapOpts.check(o); err != nil {
			return o, fmt.Errorf("sim: %s: %w", o.Name, err)
		}
		o.IMAP = &imapOpts
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, nil
}

// serve serves SMTP on ln and, when configured, IMAP; on failure it
// closes ln.
func serve(opts Options, ln net.Listener) (*Provider, error) {
	p := &Provider{
		opts:      opts,
		log:       opts.Logger.With("provider", opts.Name),
		domains:   make(map[string]bool),
		serveDone: make(chan struct{}),
		changed:   make(chan struct{}),
		limiter:   newLimiter(opts.RatePerSecond),
		conns:     make(map[*conn]struct{}),
		faults:    newFaultState(),
		distrust:  newDistrustState(opts.Distrust),
	}
	for _, d := range opts.Domains {
		p.domains[strings.ToLower(d)] = true
	}
	p.ln = &listener{Listener: ln, p: p}

	srv := smtp.NewServer(smtp.BackendFunc(p.newSession))
	srv.Domain = opts.MXHost
	if srv.Domain == "" {
		srv.Domain = "localhost"
	}
	srv.TLSConfig = p.tlsConfig()
	srv.MaxMessageBytes = maxMessageBytes
	srv.MaxRecipients = 100 // Gmail's limit per transaction
	srv.ReadTimeout = 2 * time.Minute
	srv.WriteTimeout = time.Minute
	srv.ErrorLog = smtpLog{p.log}
	p.srv = srv

	if opts.IMAP != nil {
		var err error
		if p.imap, err = startIMAP(p); err != nil {
			ln.Close()
			return nil, fmt.Errorf("sim: %s: IMAP: %w", opts.Name, err)
		}
	}

	go func() {
		defer close(p.serveDone)
		srv.Serve(p.ln)
	}()
	return p, nil
}

// tlsConfig is Options.TLS, made to break the handshakes Faults.TLSBreak
// picks.
func (p *Provider) tlsConfig() *tls.Config {
	base := p.opts.TLS
	if base == nil || p.opts.Faults.TLSBreak == 0 {
		return base
	}
	conf := base.Clone()
	conf.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if c, ok := hello.Conn.(*conn); ok && p.breakTLS(c) {
			return nil, errHungUp
		}
		if base.GetConfigForClient != nil {
			return base.GetConfigForClient(hello)
		}
		return nil, nil
	}
	return conf
}

func newLimiter(perSecond float64) *rate.Limiter {
	if perSecond <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(perSecond), max(1, int(perSecond)))
}

// now is the provider's clock: Options.Now or the wall clock.
func (p *Provider) now() time.Time {
	if p.opts.Now != nil {
		return p.opts.Now()
	}
	return time.Now()
}

// Addr is the listening address, "ip:port".
func (p *Provider) Addr() string { return p.ln.Addr().String() }

// Name is the provider's name from Options.
func (p *Provider) Name() string { return p.opts.Name }

// MXHost is the MX host name from Options.
func (p *Provider) MXHost() string { return p.opts.MXHost }

// Close stops accepting connections, lets transactions in flight finish
// (for a few seconds at most), closes idle connections and waits until every
// session, IMAP ones included, has ended.
func (p *Provider) Close() error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closing = true
		p.notify()
		p.mu.Unlock()

		p.ln.Close()
		<-p.serveDone // no new connections from here on

		p.waitUntil(func() bool { return p.busy == 0 }, closeGrace)
		p.mu.Lock()
		for c := range p.conns {
			// Close the raw connection: the session's own Close still runs
			// and does the accounting we wait for below.
			c.Conn.Close()
		}
		p.mu.Unlock()
		p.waitUntil(func() bool { return len(p.conns) == 0 }, 0)

		p.srv.Close() // marks the server done; nothing is left to close
		p.refusals.Wait()

		if p.imap != nil {
			p.imap.close()
		}
		p.mu.Lock()
		p.stopMoves()
		p.mu.Unlock()
	})
	return nil
}

// notify wakes everything waiting for a change. Call with p.mu held.
func (p *Provider) notify() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// waitUntil waits until cond (called with p.mu held) is true, or timeout
// passes when it is not 0.
func (p *Provider) waitUntil(cond func() bool, timeout time.Duration) {
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	for {
		p.mu.Lock()
		ok, ch := cond(), p.changed
		p.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-expired:
			return
		}
	}
}

// listener counts connections and refuses the ones above MaxConnections
// before go-smtp sees them, so they get 421 instead of a greeting.
type listener struct {
	net.Listener
	p    *Provider
	once sync.Once
	cerr error
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if tc := l.p.admit(c); tc != nil {
			return tc, nil
		}
	}
}

// Close is idempotent because both Provider.Close and go-smtp close it.
func (l *listener) Close() error {
	l.once.Do(func() { l.cerr = l.Listener.Close() })
	return l.cerr
}

func (p *Provider) admit(c net.Conn) *conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		c.Close()
		return nil
	}
	seq := p.seq
	p.seq++
	if limit := p.opts.MaxConnections; limit > 0 && len(p.conns) >= limit {
		p.stats.ConnectionsRefused++
		p.refusals.Add(1)
		go func() {
			defer p.refusals.Done()
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, replyLine(errBusy))
			c.Close()
		}()
		return nil
	}
	if p.greetingFault(c, seq) {
		return nil
	}
	tc := &conn{Conn: c, p: p, seq: seq}
	p.conns[tc] = struct{}{}
	p.stats.Connections++
	p.stats.MaxConcurrent = max(p.stats.MaxConcurrent, len(p.conns))
	p.notify()
	return tc
}

// conn is an accepted connection; it remembers how many messages it
// delivered, for connection-reuse accounting.
type conn struct {
	net.Conn
	p         *Provider
	seq       int // order of acceptance, from 0: what connection faults are drawn for
	once      sync.Once
	delivered int // guarded by p.mu
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.p.mu.Lock()
		delete(c.p.conns, c)
		c.p.notify()
		c.p.mu.Unlock()
	})
	return err
}

// replyLine formats e as go-smtp would, for the replies the sim writes itself.
func replyLine(e *smtp.SMTPError) string {
	ec := e.EnhancedCode
	switch ec {
	case smtp.NoEnhancedCode:
		return fmt.Sprintf("%d %s\r\n", e.Code, e.Message)
	case smtp.EnhancedCodeNotSet:
		ec = smtp.EnhancedCode{e.Code / 100, 0, 0}
	}
	return fmt.Sprintf("%d %d.%d.%d %s\r\n", e.Code, ec[0], ec[1], ec[2], e.Message)
}

// smtpLog routes go-smtp's internal errors (mostly clients hanging up) to
// the debug log.
type smtpLog struct{ l *slog.Logger }

func (s smtpLog) Printf(format string, v ...any) { s.l.Debug(fmt.Sprintf(format, v...)) }
func (s smtpLog) Println(v ...any)               { s.l.Debug(strings.TrimSpace(fmt.Sprintln(v...))) }
