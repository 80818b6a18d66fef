package sim

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
)

// IMAPOptions configure a provider's IMAP side, where the mailbox owners
// (and certgate's seed watcher) read what the provider filed. The zero
// value is Gmail-like: SPECIAL-USE and IDLE on, plaintext.
type IMAPOptions struct {
	// Addr is the loopback address to listen on; default the provider's IP
	// on a free port.
	Addr string
	// Accounts maps each mailbox address (of one of the provider's
	// Domains) to its password. Mail the SMTP side stores for one of them
	// is filed into its mailboxes.
	Accounts map[string]string
	// Junk is the junk folder's name: "Junk" by default; "[Gmail]/Spam",
	// "Bulk" (Yahoo) or "Junk Email" (Exchange) where that is simulated.
	Junk string
	// NoSpecialUse hides SPECIAL-USE: LIST marks no folder \Junk, as
	// Exchange Online does.
	NoSpecialUse bool
	// NoIdle hides the IDLE capability and refuses IDLE, so clients must
	// poll with NOOP.
	NoIdle bool
	// TLS serves implicit TLS (as on port 993) with Options.TLS.
	// Plaintext LOGIN is allowed either way: the sim is on loopback.
	TLS bool
}

// Bounds on what IMAP clients may make the sim keep.
const (
	maxMailboxes    = 100       // per account
	maxMailboxName  = 200       // octets
	maxMessages     = 100_000   // per mailbox
	maxAccountBytes = 512 << 20 // per account, all mailboxes
	maxKeywords     = 32        // flags per message
	maxListPattern  = 1024      // octets
)

const delim = '/'

// imapSide is the IMAP server and every account's mailboxes.
type imapSide struct {
	p    *Provider
	opts IMAPOptions
	srv  *imapserver.Server
	ln   net.Listener
	done chan struct{} // closed when Serve returns

	mu        sync.Mutex
	accounts  map[string]*account // by lower-cased address
	validity  uint32              // the last UIDVALIDITY handed out
	sessions  int                 // open sessions
	closing   bool
	sessEnded chan struct{} // closed and replaced when a session ends
}

type account struct {
	password  string
	mailboxes map[string]*mailbox
	bytes     int64
}

type mailbox struct {
	name        string
	special     imap.MailboxAttr // \Junk or another special use, or ""
	subscribed  bool
	uidValidity uint32
	uidNext     imap.UID
	msgs        []*imapMsg     // in UID order
	views       map[*view]bool // sessions that selected it
	changed     chan struct{}  // closed and replaced on every change
}

// imapMsg is one message in one mailbox; a move makes a new one.
type imapMsg struct {
	uid   imap.UID
	data  []byte // never changed once stored
	date  time.Time
	flags []imap.Flag
	mbox  *mailbox
	gone  bool // expunged or moved out
}

func (o *IMAPOptions) check(p Options) error {
	if o.Junk == "" {
		o.Junk = "Junk"
	}
	if err := checkName(o.Junk); err != nil || strings.EqualFold(o.Junk, "INBOX") {
		return fmt.Errorf("IMAP: bad junk folder %q", o.Junk)
	}
	if o.Addr == "" {
		o.Addr = net.JoinHostPort(p.IP, "0")
	}
	host, _, err := net.SplitHostPort(o.Addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("IMAP: address %q is not on loopback", o.Addr)
	}
	if o.TLS && p.TLS == nil {
		return errors.New("IMAP: TLS needs Options.TLS")
	}
	seen := map[string]bool{}
	for addr := range o.Accounts {
		_, dom, ok := strings.Cut(addr, "@")
		if !ok || len(p.Domains) > 0 && !slices.ContainsFunc(p.Domains, func(d string) bool { return strings.EqualFold(d, dom) }) {
			return fmt.Errorf("IMAP: account %q is not in the provider's domains", addr)
		}
		if seen[strings.ToLower(addr)] { // addresses match without case
			return fmt.Errorf("IMAP: account %q is listed twice", addr)
		}
		seen[strings.ToLower(addr)] = true
	}
	return nil
}

// startIMAP listens and serves the IMAP side of p.
func startIMAP(p *Provider) (*imapSide, error) {
	o := *p.opts.IMAP
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return nil, err
	}
	s := &imapSide{p: p, opts: o, done: make(chan struct{}), accounts: make(map[string]*account), sessEnded: make(chan struct{})}
	for addr, password := range o.Accounts {
		a := &account{password: password, mailboxes: make(map[string]*mailbox)}
		a.mailboxes["INBOX"] = s.newMailbox("INBOX", "")
		a.mailboxes[o.Junk] = s.newMailbox(o.Junk, imap.MailboxAttrJunk)
		s.accounts[strings.ToLower(addr)] = a
	}

	caps := imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapUIDPlus: {}, imap.CapMove: {}, imap.CapChildren: {}}
	if !o.NoSpecialUse {
		caps[imap.CapSpecialUse] = struct{}{}
	}
	s.srv = imapserver.New(&imapserver.Options{
		NewSession:   s.newSession,
		Caps:         caps,
		Logger:       smtpLog{p.log.With("side", "imap")},
		InsecureAuth: true, // loopback only
	})
	s.ln = &imapListener{Listener: ln, tls: o.TLS, conf: p.opts.TLS, noIdle: o.NoIdle}
	go func() {
		defer close(s.done)
		s.srv.Serve(s.ln)
	}()
	return s, nil
}

// newMailbox makes an empty mailbox with a fresh UIDVALIDITY. Call with
// s.mu held or before serving.
func (s *imapSide) newMailbox(name string, special imap.MailboxAttr) *mailbox {
	s.validity++
	return &mailbox{name: name, special: special, subscribed: true, uidValidity: s.validity, uidNext: 1,
		views: make(map[*view]bool), changed: make(chan struct{})}
}

// close stops the server and waits until every session has ended.
func (s *imapSide) close() {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.srv.Close()
	<-s.done
	for {
		s.mu.Lock()
		n, ch := s.sessions, s.sessEnded
		s.mu.Unlock()
		if n == 0 {
			return
		}
		<-ch
	}
}

// account returns addr's account, or nil. Call with s.mu held.
func (s *imapSide) account(addr string) *account {
	if s == nil {
		return nil
	}
	return s.accounts[strings.ToLower(addr)]
}

// hasAccount says whether addr has mailboxes here.
func (s *imapSide) hasAccount(addr string) bool {
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.account(addr) != nil
}

// lookup finds a mailbox by name; INBOX in any case. Call with s.mu held.
func (a *account) lookup(name string) *mailbox {
	if strings.EqualFold(name, "INBOX") {
		name = "INBOX"
	}
	return a.mailboxes[name]
}

// add appends a message to mb and wakes its watchers. Call with
// imapSide.mu held.
func (a *account) add(mb *mailbox, data []byte, date time.Time, flags []imap.Flag) (*imapMsg, error) {
	if len(mb.msgs) >= maxMessages || a.bytes+int64(len(data)) > maxAccountBytes {
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeOverQuota, Text: "Mailbox full"}
	}
	m := &imapMsg{uid: mb.uidNext, data: data, date: date, flags: flags, mbox: mb}
	mb.uidNext++
	mb.msgs = append(mb.msgs, m)
	a.bytes += int64(len(data))
	mb.notify()
	return m, nil
}

// removeIf takes the messages drop picks out of mb in one pass, however
// many; sessions learn it as EXPUNGE. Call with imapSide.mu held.
func (a *account) removeIf(mb *mailbox, drop func(*imapMsg) bool) {
	mb.msgs = slices.DeleteFunc(mb.msgs, func(m *imapMsg) bool {
		if drop(m) {
			m.gone = true
			a.bytes -= int64(len(m.data))
		}
		return m.gone
	})
	mb.notify()
}

func (mb *mailbox) notify() {
	close(mb.changed)
	mb.changed = make(chan struct{})
}

// deliver files a message the SMTP side stored for addr into folder,
// making the folder when the provider's scripts name a new one.
func (s *imapSide) deliver(addr, folder string, data []byte, date time.Time) *imapMsg {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.account(addr)
	if a == nil {
		return nil
	}
	mb := a.lookup(folder)
	var err error
	if mb == nil {
		if err = checkName(folder); err == nil {
			mb = s.newMailbox(folder, "")
			a.mailboxes[folder] = mb
		}
	}
	var m *imapMsg
	if err == nil {
		m, err = a.add(mb, data, date, nil)
	}
	if err != nil {
		s.p.log.Debug("imap: not filed", "rcpt", addr, "folder", folder, "err", err)
	}
	return m
}

// moveToJunk moves m from its account's INBOX to junk; false when it is no
// longer in INBOX.
func (s *imapSide) moveToJunk(m *imapMsg) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m.gone || m.mbox.name != "INBOX" {
		return false
	}
	for _, a := range s.accounts {
		if a.mailboxes["INBOX"] != m.mbox {
			continue
		}
		junk := a.lookup(s.opts.Junk)
		if junk == nil { // the owner deleted it; the provider makes it anew
			junk = s.newMailbox(s.opts.Junk, imap.MailboxAttrJunk)
			a.mailboxes[s.opts.Junk] = junk
		}
		if _, err := a.add(junk, m.data, m.date, slices.Clone(m.flags)); err != nil {
			return false
		}
		a.removeIf(m.mbox, func(x *imapMsg) bool { return x == m })
		return true
	}
	return false
}

// IMAPAddr is the IMAP side's address, "ip:port", or "" without one.
func (p *Provider) IMAPAddr() string {
	if p.imap == nil {
		return ""
	}
	return p.imap.ln.Addr().String()
}

// Append files data into the folder of the account addr with INTERNALDATE
// date (the provider's clock when zero), as an IMAP APPEND would, and
// returns its UID. Tests file mail by hand with it.
func (p *Provider) Append(addr, folder string, data []byte, date time.Time) (uint32, error) {
	if date.IsZero() {
		date = p.now()
	}
	s := p.imap
	if s == nil {
		return 0, errors.New("sim: no IMAP side")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.account(addr)
	if a == nil {
		return 0, fmt.Errorf("sim: no account %s", addr)
	}
	mb := a.lookup(folder)
	if mb == nil {
		return 0, fmt.Errorf("sim: %s has no mailbox %q", addr, folder)
	}
	m, err := a.add(mb, slices.Clone(data), date, nil)
	if err != nil {
		return 0, err
	}
	return uint32(m.uid), nil
}

// ResetUIDValidity renumbers a folder as a server that recreated it would:
// a new, higher UIDVALIDITY and UIDs from 1 again, same messages. Sessions
// that selected it are dropped with BYE, as Dovecot does. It returns the
// new UIDVALIDITY.
func (p *Provider) ResetUIDValidity(addr, folder string) (uint32, error) {
	s := p.imap
	if s == nil {
		return 0, errors.New("sim: no IMAP side")
	}
	s.mu.Lock()
	var mb *mailbox
	if a := s.account(addr); a != nil {
		mb = a.lookup(folder)
	}
	if mb == nil {
		s.mu.Unlock()
		return 0, fmt.Errorf("sim: %s has no mailbox %q", addr, folder)
	}
	s.validity++
	mb.uidValidity = s.validity
	for i, m := range mb.msgs {
		m.uid = imap.UID(i + 1)
	}
	mb.uidNext = imap.UID(len(mb.msgs) + 1)
	validity := mb.uidValidity
	conns := mb.dropViews()
	s.mu.Unlock()
	bye(conns, "Mailbox recreated, UIDVALIDITY changed")
	return validity, nil
}

// dropViews ends every session's view of mb, whose sequence numbers or
// UIDs no longer hold, and returns their connections, to say BYE once s.mu
// is released. Call with s.mu held.
func (mb *mailbox) dropViews() []*imapserver.Conn {
	var conns []*imapserver.Conn
	for v := range mb.views {
		v.dropped = true
		conns = append(conns, v.conn)
	}
	mb.views = make(map[*view]bool)
	mb.notify()
	return conns
}

func bye(conns []*imapserver.Conn, text string) {
	for _, c := range conns {
		c.Bye(text)
	}
}

// imapListener adds implicit TLS and, with noIdle, hides IDLE.
type imapListener struct {
	net.Listener
	tls    bool
	conf   *tls.Config
	noIdle bool
}

func (l *imapListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if l.tls {
		c = tls.Server(c, l.conf)
	}
	if l.noIdle {
		c = &noIdleConn{Conn: c}
	}
	return c, nil
}

// noIdleConn hides IDLE from the capability lists the server writes:
// go-imap's server advertises it to every IMAP4rev1 client, and the sim
// must also play servers without it. It follows the response stream line
// by line and passes literals through untouched, so message data is never
// mistaken for a response.
type noIdleConn struct {
	net.Conn
	line    []byte // a response line not yet complete
	literal int64  // octets of a literal still to pass through
}

// Write is called by one writer at a time: go-imap serializes responses.
func (c *noIdleConn) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		if c.literal > 0 {
			k := int(min(int64(len(b)), c.literal))
			if _, err := c.Conn.Write(b[:k]); err != nil {
				return 0, err
			}
			c.literal -= int64(k)
			b = b[k:]
			continue
		}
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			c.line = append(c.line, b...)
			break
		}
		c.line = append(c.line, b[:i+1]...)
		b = b[i+1:]
		c.literal = literalSize(c.line)
		if _, err := c.Conn.Write(hideIdle(c.line)); err != nil {
			return 0, err
		}
		c.line = c.line[:0]
	}
	return n, nil
}

// literalSize is the size of the literal that line announces ("{n}\r\n"
// or "~{n}\r\n" at its end), or 0.
func literalSize(line []byte) int64 {
	s, ok := strings.CutSuffix(string(line), "}\r\n")
	i := strings.LastIndexByte(s, '{')
	if !ok || i < 0 {
		return 0
	}
	n, err := strconv.ParseInt(s[i+1:], 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// hideIdle drops IDLE from "* CAPABILITY ..." and "... [CAPABILITY ...]".
func hideIdle(line []byte) []byte {
	s := string(line)
	i := strings.Index(s, "CAPABILITY ")
	if i < 0 {
		return line
	}
	head := strings.Split(s[:i], " ") // "*" or a tag, "OK" or "PREAUTH", "["
	bracket := len(head) == 3 && (head[1] == "OK" || head[1] == "PREAUTH") && head[2] == "["
	if s[:i] != "* " && !bracket {
		return line
	}
	i += len("CAPABILITY")
	end := strings.IndexAny(s[i:], "]\r")
	if end < 0 {
		return line
	}
	end += i
	caps := slices.DeleteFunc(strings.Fields(s[i:end]), func(c string) bool { return strings.EqualFold(c, "IDLE") })
	return []byte(s[:i] + " " + strings.Join(caps, " ") + s[end:])
}
