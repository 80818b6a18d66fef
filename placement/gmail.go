package placement

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-sasl"

	"github.com/certgate/certgate/config"
)

// ErrNotGmail is returned by GmailCategories when the server does not
// offer X-GM-EXT-1, Gmail's IMAP extensions.
var ErrNotGmail = errors.New("the server does not offer X-GM-EXT-1")

// The categories (inbox tabs) Gmail files mail in, in the order they are
// asked for; a copy in more than one is reported in the first.
var gmailCategories = [...]string{"primary", "social", "promotions", "updates", "forums"}

// Bounds on what a server may make GmailCategories read or wait for.
const (
	maxLine       = 64 << 10         // one response line, CRLF included
	maxUIDs       = 1000             // UIDs asked about in one call, and in one SEARCH response
	maxCaps       = 256              // capabilities in one response
	maxResponses  = 10000            // untagged responses to one command
	gmailIOWait   = 30 * time.Second // one read or write, when ctx allows longer
	maxMailboxLen = 1 << 10          // a mailbox name we are asked to examine
)

// GmailCategories finds which Gmail category (the inbox tab: primary,
// social, promotions, updates, forums) seed copies were filed in.
// go-imap/v2 cannot send Gmail's X-GM-RAW search key, so this speaks just
// enough IMAP itself, over a connection of its own for each call: the
// greeting, STARTTLS when configured, login, EXAMINE, UID SEARCH X-GM-RAW
// and LOGOUT. Every response is read with bounds (line length, counts,
// no literals) and a deadline.
type GmailCategories struct {
	m  config.SeedMailbox
	cr *Credentials
}

// NewGmailCategories returns the finder for seed mailbox m, logging in
// with cr (which it shares with the watcher's connection, and so its
// cached token).
func NewGmailCategories(m config.SeedMailbox, cr *Credentials) *GmailCategories {
	return &GmailCategories{m: m, cr: cr}
}

// Category returns the category of the message with UID uid in mailbox,
// or "" when it is in none (or not there). Errors wrap ErrNotGmail,
// ErrLoginRefused or ctx's error where those are the cause.
func (g *GmailCategories) Category(ctx context.Context, mailbox string, uid uint32) (string, error) {
	cats, err := g.Categories(ctx, mailbox, []uint32{uid})
	return cats[uid], err
}

// Categories returns the category of each message of uids (at most
// 1000) in mailbox that is in one, over one connection.
func (g *GmailCategories) Categories(ctx context.Context, mailbox string, uids []uint32) (map[uint32]string, error) {
	cats := map[uint32]string{}
	if len(uids) == 0 {
		return cats, nil
	}
	if len(uids) > maxUIDs {
		return nil, fmt.Errorf("gmail categories: %d UIDs, at most %d at a time", len(uids), maxUIDs)
	}
	asked := map[uint32]bool{}
	set := make([]string, 0, len(uids))
	for _, u := range uids {
		if u == 0 {
			return nil, errors.New("gmail categories: UID 0")
		}
		if !asked[u] {
			asked[u] = true
			set = append(set, strconv.FormatUint(uint64(u), 10))
		}
	}
	if len(mailbox) > maxMailboxLen {
		return nil, errors.New("gmail categories: mailbox name too long")
	}
	mbox, err := quote(mailbox)
	if err != nil {
		return nil, fmt.Errorf("gmail categories: mailbox: %w", err)
	}

	r, err := g.open(ctx)
	if err != nil {
		return nil, fmt.Errorf("gmail categories: %w", err)
	}
	defer r.close()
	if !r.caps["X-GM-EXT-1"] {
		return nil, fmt.Errorf("gmail categories: %s: %w", g.m.IMAP.Addr, ErrNotGmail)
	}
	// EXAMINE is SELECT read-only (RFC 9051 6.3.3): looking changes nothing.
	if _, err := r.command("EXAMINE "+mbox, nil, nil); err != nil {
		return nil, fmt.Errorf("gmail categories: examine: %w", err)
	}
	for _, cat := range gmailCategories {
		// Gmail's search syntax through X-GM-RAW, ANDed with the UID set
		// (RFC 9051 6.4.4: criteria listed are ANDed).
		cmd := `UID SEARCH X-GM-RAW "category:` + cat + `" UID ` + strings.Join(set, ",")
		_, err := r.command(cmd, func(resp response) error {
			if resp.kind != "SEARCH" {
				return nil
			}
			for _, u := range resp.uids {
				if !asked[u] {
					return fmt.Errorf("SEARCH answered UID %d, which was not asked about", u)
				}
				if cats[u] == "" {
					cats[u] = cat
				}
			}
			return nil
		}, nil)
		if err != nil {
			return nil, fmt.Errorf("gmail categories: search category:%s: %w", cat, err)
		}
	}
	r.command("LOGOUT", nil, nil) // its answer changes nothing
	return cats, nil
}

// open dials, reads the greeting, upgrades with STARTTLS when configured
// and logs in; it knows the capabilities after the login.
func (g *GmailCategories) open(ctx context.Context) (*rawConn, error) {
	conn, tc, err := dialConn(ctx, g.m.IMAP, nil)
	if err != nil {
		return nil, err
	}
	r := &rawConn{ctx: ctx, conn: conn, br: bufio.NewReader(conn)}
	// Cancelling ctx fails the read or write under way (see arm).
	r.stop = context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	if err := g.greetAndLogin(r, tc); err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

func (g *GmailCategories) greetAndLogin(r *rawConn, tc *tls.Config) error {
	greeting, err := r.read()
	if err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	if greeting.tag != "*" || (greeting.kind != "OK" && greeting.kind != "PREAUTH") {
		return fmt.Errorf("greeting: the server said %s %s", greeting.kind, printable(greeting.text, 200))
	}
	preauth := greeting.kind == "PREAUTH"
	if greeting.code == "CAPABILITY" {
		r.setCaps(greeting.caps)
	}
	if g.m.IMAP.TLS == config.IMAPStartTLS {
		if preauth { // RFC 9051 7.1.4: no STARTTLS then, so refuse it
			return errors.New("PREAUTH on a connection that was to use STARTTLS")
		}
		if err := r.startTLS(tc); err != nil {
			return err
		}
	}
	if !preauth {
		if err := r.login(g.cr); err != nil {
			return err
		}
	}
	if r.caps == nil {
		return r.capability()
	}
	return nil
}

// rawConn is a minimal IMAP client connection: one command at a time,
// every response line bounded and parsed by parseResponse.
type rawConn struct {
	ctx  context.Context
	conn net.Conn
	br   *bufio.Reader
	stop func() bool
	tag  int
	caps map[string]bool // nil: not known (yet, or any more)
	bye  string          // the text of an untagged BYE
}

func (r *rawConn) close() {
	r.stop()
	r.conn.Close()
}

// arm sets the deadline of the next read or write: ctx's, but never more
// than gmailIOWait away. Checking ctx after setting it closes the race
// with the AfterFunc that cancels.
func (r *rawConn) arm() error {
	d := time.Now().Add(gmailIOWait)
	if dl, ok := r.ctx.Deadline(); ok && dl.Before(d) {
		d = dl
	}
	r.conn.SetDeadline(d)
	return r.ctx.Err()
}

// ioError prefers ctx's error and the server's BYE over a closed
// connection's. A read that timed out at ctx's deadline may end before
// ctx's own timer has fired.
func (r *rawConn) ioError(err error) error {
	var ne net.Error
	dl, hasDeadline := r.ctx.Deadline()
	switch {
	case r.ctx.Err() != nil:
		return r.ctx.Err()
	case errors.As(err, &ne) && ne.Timeout() && hasDeadline && !time.Now().Before(dl):
		return context.DeadlineExceeded
	case r.bye != "":
		return fmt.Errorf("the server closed the connection: BYE %s", printable(r.bye, 200))
	}
	return err
}

func (r *rawConn) read() (response, error) {
	if err := r.arm(); err != nil {
		return response{}, err
	}
	line, err := readLine(r.br, maxLine)
	if err != nil {
		return response{}, r.ioError(err)
	}
	return parseResponse(line)
}

func (r *rawConn) send(line string) error {
	if err := r.arm(); err != nil {
		return err
	}
	if _, err := io.WriteString(r.conn, line+"\r\n"); err != nil {
		return r.ioError(err)
	}
	return nil
}

// statusError is a command's tagged NO or BAD.
type statusError struct{ kind, code, text string }

func (e *statusError) Error() string {
	s := "the server said " + e.kind
	if e.code != "" {
		s += " [" + printable(e.code, 64) + "]"
	}
	return s + " " + printable(e.text, 200)
}

// command sends cmd under a new tag and reads up to its tagged response
// (RFC 9051 2.2.2), handing untagged responses to each and continuation
// requests to cont (either may be nil). NO and BAD are *statusError.
func (r *rawConn) command(cmd string, each func(response) error, cont func(response) (string, error)) (response, error) {
	r.tag++
	tag := "g" + strconv.Itoa(r.tag)
	if err := r.send(tag + " " + cmd); err != nil {
		return response{}, err
	}
	for n := 0; n <= maxResponses; n++ {
		resp, err := r.read()
		if err != nil {
			return resp, err
		}
		switch resp.tag {
		case "*":
			switch {
			case resp.kind == "BYE":
				r.bye = resp.text
			case resp.kind == "CAPABILITY":
				r.setCaps(resp.caps)
			case each != nil:
				if err := each(resp); err != nil {
					return resp, err
				}
			}
		case "+":
			if cont == nil {
				return resp, errors.New("a continuation request, which was not asked for")
			}
			line, err := cont(resp)
			if err != nil {
				return resp, err
			}
			if err := r.send(line); err != nil {
				return resp, err
			}
		case tag:
			if resp.code == "CAPABILITY" {
				r.setCaps(resp.caps)
			}
			if resp.kind != "OK" {
				return resp, &statusError{resp.kind, resp.code, resp.text}
			}
			return resp, nil
		default:
			return resp, fmt.Errorf("a response tagged %q, to no command of ours", printable(resp.tag, 40))
		}
	}
	return response{}, fmt.Errorf("more than %d responses to one command", maxResponses)
}

func (r *rawConn) setCaps(caps []string) {
	r.caps = map[string]bool{}
	for _, c := range caps {
		r.caps[c] = true
	}
}

func (r *rawConn) capability() error {
	r.caps = nil
	if _, err := r.command("CAPABILITY", nil, nil); err != nil {
		return fmt.Errorf("capability: %w", err)
	}
	if r.caps == nil {
		return errors.New("capability: no CAPABILITY response")
	}
	return nil
}

// startTLS upgrades the connection (RFC 9051 6.2.1) and forgets the
// capabilities learnt before it, as that section requires.
func (r *rawConn) startTLS(tc *tls.Config) error {
	if _, err := r.command("STARTTLS", nil, nil); err != nil {
		return fmt.Errorf("starttls: %w", err)
	}
	// Bytes after the OK came before the handshake, from anyone on the
	// path: refuse them rather than read them as if protected.
	if r.br.Buffered() > 0 {
		return errors.New("starttls: the server sent more after its OK, before TLS")
	}
	t := tls.Client(r.conn, tc)
	if err := r.arm(); err != nil {
		return err
	}
	if err := t.HandshakeContext(r.ctx); err != nil {
		return fmt.Errorf("starttls: %w", r.ioError(err))
	}
	r.conn, r.br, r.caps = t, bufio.NewReader(t), nil
	return nil
}

// login logs in as Credentials.mechanism picks. Capabilities may change
// with it (RFC 9051 6.2.2, 6.2.3), so they are forgotten unless the
// tagged OK gave them anew.
func (r *rawConn) login(cr *Credentials) error {
	if r.caps == nil {
		if err := r.capability(); err != nil {
			return err
		}
	}
	mech, password, err := cr.mechanism(func(c imap.Cap) bool { return r.caps[strings.ToUpper(string(c))] })
	if err != nil {
		return fmt.Errorf("login: %w", err)
	}
	saslIR := r.caps["SASL-IR"]
	r.caps = nil
	if mech != nil {
		err = r.authenticate(mech, saslIR)
	} else {
		err = r.loginCommand(cr.username, password)
	}
	if err != nil {
		var se *statusError
		return cr.loginFailed(mech, errors.As(err, &se) && se.kind == "NO", err)
	}
	return nil
}

func (r *rawConn) loginCommand(username, password string) error {
	u, err := quote(username)
	if err != nil {
		return fmt.Errorf("user name: %w", err)
	}
	p, err := quote(password)
	if err != nil {
		return fmt.Errorf("password: %w", err)
	}
	_, err = r.command("LOGIN "+u+" "+p, nil, nil)
	return err
}

// authenticate runs AUTHENTICATE (RFC 9051 6.2.2) with the initial
// response on the command line when the server offers SASL-IR (RFC 4959,
// where an empty one is "="); challenges and responses are base64, an
// empty response an empty line.
func (r *rawConn) authenticate(mech sasl.Client, saslIR bool) error {
	name, ir, err := mech.Start()
	if err != nil {
		return err
	}
	cmd := "AUTHENTICATE " + name
	if ir != nil && saslIR {
		enc := base64.StdEncoding.EncodeToString(ir)
		if enc == "" {
			enc = "="
		}
		cmd, ir = cmd+" "+enc, nil
	}
	_, err = r.command(cmd, nil, func(resp response) (string, error) {
		if ir != nil { // the server asks for the initial response
			enc := base64.StdEncoding.EncodeToString(ir)
			ir = nil
			return enc, nil
		}
		challenge, err := base64.StdEncoding.DecodeString(resp.text)
		if err != nil {
			return "", errors.New("a challenge that is not base64")
		}
		out, err := mech.Next(challenge)
		if err != nil {
			return "", err
		}
		return base64.StdEncoding.EncodeToString(out), nil
	})
	return err
}

// quote makes s a quoted string (RFC 9051 4.3): no NUL, CR or LF, and \
// and " escaped. 8-bit text would need a literal (or UTF8=ACCEPT), which
// this client does not send. The error never holds s: it may be a
// password.
func quote(s string) (string, error) {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == 0 || c == '\r' || c == '\n' || c >= 0x80:
			return "", errors.New("holds a character a quoted string cannot (NUL, CR, LF or 8-bit)")
		case c == '\\' || c == '"':
			b.WriteByte('\\')
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String(), nil
}

// readLine reads one line of at most max bytes, CRLF included (RFC 9051
// 2.2: lines end in CRLF), and returns it without the CRLF.
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(line)+len(chunk) > max {
			return nil, fmt.Errorf("a response line longer than %d bytes", max)
		}
		line = append(line, chunk...)
		if err == nil {
			break
		}
		if err == io.EOF {
			return nil, io.ErrUnexpectedEOF
		}
		if err != bufio.ErrBufferFull {
			return nil, err
		}
	}
	if !bytes.HasSuffix(line, []byte("\r\n")) {
		return nil, errors.New("a response line that does not end in CRLF")
	}
	return line[:len(line)-2], nil
}

// response is one server response line (RFC 9051 7), as far as this
// client needs it.
type response struct {
	tag  string   // "*" untagged, "+" a continuation request, or a command's tag
	kind string   // upper-case: OK, NO, BAD, BYE, PREAUTH, CAPABILITY, SEARCH, EXISTS, ...; "" for "+"
	code string   // a status response's code (RFC 9051 7.1), upper-case
	text string   // a status response's text, or a continuation request's
	caps []string // CAPABILITY data or code, upper-case
	uids []uint32 // SEARCH data
}

var errLiteral = errors.New("a response with a literal, which this client does not read")

// parseResponse reads one response line, without its CRLF. It refuses
// what this client never needs and could not read safely: literals, and
// CAPABILITY or SEARCH data that is not a list of atoms or numbers.
func parseResponse(line []byte) (response, error) {
	var r response
	s := string(line)
	if strings.ContainsAny(s, "\x00\r\n") {
		return r, errors.New("a NUL, CR or LF inside a response line")
	}
	if endsInLiteral(s) {
		return r, errLiteral
	}
	head, rest, _ := strings.Cut(s, " ")
	switch {
	case head == "+": // RFC 9051 7.5
		r.tag, r.text = "+", rest
		return r, nil
	case head == "*" || isTag(head):
		r.tag = head
	default:
		return r, fmt.Errorf("not a response: %q", printable(s, 40))
	}
	kind, rest, _ := strings.Cut(rest, " ")
	if r.tag == "*" && isNumber(kind) { // message data: "* 3 EXISTS" (RFC 9051 7.4)
		kind, _, _ = strings.Cut(rest, " ")
		if !isAtom(kind) {
			return r, fmt.Errorf("not a response: %q", printable(s, 40))
		}
		r.kind = strings.ToUpper(kind)
		return r, nil
	}
	if !isAtom(kind) {
		return r, fmt.Errorf("not a response: %q", printable(s, 40))
	}
	r.kind = strings.ToUpper(kind)
	var err error
	switch r.kind {
	case "OK", "NO", "BAD":
		err = r.readRespText(rest)
	case "BYE", "PREAUTH":
		if r.tag != "*" {
			return r, fmt.Errorf("a tagged %s", r.kind)
		}
		err = r.readRespText(rest)
	default:
		if r.tag != "*" { // tagged responses are status responses only (RFC 9051 7.1)
			return r, fmt.Errorf("a tagged %s", printable(r.kind, 40))
		}
		switch r.kind {
		case "CAPABILITY":
			r.caps, err = parseCaps(rest)
		case "SEARCH":
			r.uids, err = parseUIDs(rest)
		}
	}
	return r, err
}

// readRespText reads resp-text: ["[" resp-text-code "]" SP] text (RFC
// 9051 7.1). Codes hold no "]" (it is an atom-special), so the first one
// ends the code.
func (r *response) readRespText(s string) error {
	if code, ok := strings.CutPrefix(s, "["); ok {
		code, after, ok := strings.Cut(code, "]")
		if !ok {
			return errors.New("a response code without its ]")
		}
		name, args, _ := strings.Cut(code, " ")
		if !isAtom(name) {
			return fmt.Errorf("a response code %q", printable(name, 40))
		}
		r.code = strings.ToUpper(name)
		if r.code == "CAPABILITY" {
			caps, err := parseCaps(args)
			if err != nil {
				return err
			}
			r.caps = caps
		}
		s = strings.TrimPrefix(after, " ")
	}
	r.text = s
	return nil
}

// parseCaps reads capability *(SP capability) (RFC 9051 7.2.2).
func parseCaps(s string) ([]string, error) {
	caps := strings.Split(s, " ")
	if len(caps) > maxCaps {
		return nil, fmt.Errorf("more than %d capabilities", maxCaps)
	}
	for i, c := range caps {
		if !isAtom(c) {
			return nil, fmt.Errorf("a capability %q", printable(c, 40))
		}
		caps[i] = strings.ToUpper(c)
	}
	return caps, nil
}

// parseUIDs reads SEARCH data: *(SP nz-number) (RFC 3501 7.2.5; RFC 9051
// keeps it for IMAP4rev1 clients). A MODSEQ (RFC 7162) is never asked for.
func parseUIDs(s string) ([]uint32, error) {
	if s == "" {
		return nil, nil
	}
	fields := strings.Split(s, " ")
	if len(fields) > maxUIDs {
		return nil, fmt.Errorf("more than %d UIDs in a SEARCH response", maxUIDs)
	}
	uids := make([]uint32, len(fields))
	for i, f := range fields {
		if !isNumber(f) || f[0] == '0' {
			return nil, fmt.Errorf("a SEARCH result %q is not a UID", printable(f, 40))
		}
		n, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("a SEARCH result %q is not a UID", printable(f, 40))
		}
		uids[i] = uint32(n)
	}
	return uids, nil
}

// endsInLiteral says whether a line ends in a literal's announcement,
// "{" number ["+"] "}" (RFC 9051 4.3; 7888 for "+"), after which the
// server would send that many bytes.
func endsInLiteral(s string) bool {
	s, ok := strings.CutSuffix(s, "}")
	if !ok {
		return false
	}
	i := strings.LastIndexByte(s, '{')
	if i < 0 {
		return false
	}
	n := strings.TrimSuffix(s[i+1:], "+")
	return isNumber(n)
}

func isNumber(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// isAtom: 1*ATOM-CHAR, any CHAR but atom-specials (RFC 9051 9).
func isAtom(s string) bool {
	return s != "" && !strings.ContainsFunc(s, func(c rune) bool { return !isAtomChar(c) })
}

// isTag: 1*<any ASTRING-CHAR except "+"> (RFC 9051 9), ASTRING-CHAR being
// ATOM-CHAR or "]".
func isTag(s string) bool {
	return s != "" && !strings.ContainsFunc(s, func(c rune) bool { return c == '+' || c != ']' && !isAtomChar(c) })
}

func isAtomChar(c rune) bool {
	return c > ' ' && c < 0x7f && !strings.ContainsRune(`(){%*"\]`, c)
}
