package placement

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certgate/certgate/config"
)

// fakeGmail is a small Gmail IMAP server on loopback: the greeting,
// CAPABILITY (X-GM-EXT-1), STARTTLS, LOGIN, AUTHENTICATE PLAIN and
// XOAUTH2, EXAMINE, UID SEARCH X-GM-RAW "category:..." UID <set> over a
// table of UIDs, LOGOUT. hostile makes it misbehave.
type fakeGmail struct {
	categories map[uint32]string
	caps       string // before login; after it, X-GM-EXT-1 is added unless noGmail
	noGmail    bool
	hostile    string
	tls        *tls.Config // for STARTTLS

	mu       sync.Mutex
	commands []string
	conns    []net.Conn
}

const gmailCaps = "IMAP4rev1 UNSELECT IDLE NAMESPACE QUOTA ID XLIST CHILDREN X-GM-EXT-1 XYZZY SASL-IR AUTH=XOAUTH2 AUTH=PLAIN AUTH=PLAIN-CLIENTTOKEN AUTH=OAUTHBEARER AUTH=XOAUTH"

func newFakeGmail(t *testing.T, hostile string) *fakeGmail {
	return &fakeGmail{
		categories: map[uint32]string{1: "primary", 2: "promotions", 3: "social", 5: "updates", 6: "forums"},
		caps:       gmailCaps,
		hostile:    hostile,
	}
}

// start listens on loopback, with implicit TLS when tc is given, and
// returns the address.
func (f *fakeGmail) start(t *testing.T, tc *tls.Config) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if tc != nil {
		ln = tls.NewListener(ln, tc)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.conns = append(f.conns, c)
			f.mu.Unlock()
			go f.serve(c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		f.mu.Lock()
		for _, c := range f.conns {
			c.Close()
		}
		f.mu.Unlock()
	})
	return ln.Addr().String()
}

func (f *fakeGmail) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.commands...)
}

func (f *fakeGmail) serve(c net.Conn) {
	defer c.Close()
	if f.hostile == "silent" {
		c.Read(make([]byte, 1)) // until the client gives up
		return
	}
	br, w := bufio.NewReader(c), c
	say := func(lines ...string) { fmt.Fprint(w, strings.Join(lines, "\r\n")+"\r\n") }
	say("* OK Gimap ready for requests from 127.0.0.1 a1b2c3")
	loggedIn := false
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimSuffix(line, "\r\n")
		f.mu.Lock()
		f.commands = append(f.commands, line)
		f.mu.Unlock()
		tag, cmd, _ := strings.Cut(line, " ")
		verb, args, _ := strings.Cut(cmd, " ")
		switch strings.ToUpper(verb) {
		case "CAPABILITY":
			caps := f.caps
			if loggedIn && !f.noGmail && !strings.Contains(caps, "X-GM-EXT-1") {
				caps += " X-GM-EXT-1"
			}
			say("* CAPABILITY "+caps, tag+" OK Thats all she wrote! a1b2c3")
		case "STARTTLS":
			if f.hostile == "starttls-injection" {
				say(tag+" OK Begin TLS negotiation now", "* CAPABILITY IMAP4rev1 AUTH=PLAIN")
				return
			}
			say(tag + " OK Begin TLS negotiation now")
			tc := tls.Server(c, f.tls)
			if tc.Handshake() != nil {
				return
			}
			br, w = bufio.NewReader(tc), tc
		case "LOGIN":
			if f.hostile == "no-login" || args != `"seed1@gmail.com" "pa\"ss\\word"` {
				say(tag + " NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)")
				continue
			}
			loggedIn = true
			say(tag + " OK seed1@gmail.com authenticated (Success)")
		case "AUTHENTICATE":
			mech, ir, hasIR := strings.Cut(args, " ")
			if !hasIR {
				say("+ ")
				ir, _ = br.ReadString('\n')
				ir = strings.TrimSuffix(ir, "\r\n")
			}
			resp, _ := base64.StdEncoding.DecodeString(ir)
			ok := false
			switch mech {
			case "PLAIN":
				ok = string(resp) == "\x00seed1@gmail.com\x00"+seedPassword
			case "XOAUTH2":
				ok = string(resp) == "user=seed1@gmail.com\x01auth=Bearer "+goodToken+"\x01\x01"
				if !ok {
					say("+ " + base64.StdEncoding.EncodeToString([]byte(`{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}`)))
					if empty, _ := br.ReadString('\n'); empty != "\r\n" || f.hostile == "xoauth2-bad" {
						say(tag + " BAD Invalid SASL argument")
						continue
					}
				}
			}
			if !ok || f.hostile == "no-login" {
				say(tag + " NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)")
				continue
			}
			loggedIn = true
			caps := "IMAP4rev1 UNSELECT IDLE NAMESPACE QUOTA ID XLIST CHILDREN X-GM-EXT-1 UIDPLUS COMPRESS=DEFLATE ENABLE MOVE CONDSTORE ESEARCH UTF8=ACCEPT LIST-EXTENDED LIST-STATUS LITERAL- SPECIAL-USE APPENDLIMIT=35651584"
			if f.noGmail {
				caps = "IMAP4rev1 IDLE"
			}
			say(tag + " OK [CAPABILITY " + caps + "] seed1@gmail.com authenticated (Success)")
		case "EXAMINE":
			if !loggedIn {
				say(tag + " BAD not logged in")
				continue
			}
			say(`* FLAGS (\Answered \Flagged \Draft \Deleted \Seen $NotPhishing $Phishing)`,
				`* OK [PERMANENTFLAGS ()] Flags permitted.`,
				`* OK [UIDVALIDITY 3] UIDs valid.`,
				`* 6 EXISTS`, `* 0 RECENT`,
				`* OK [UIDNEXT 7] Predicted next UID.`,
				`* OK [HIGHESTMODSEQ 912345]`,
				tag+` OK [READ-ONLY] `+args+` selected. (Success)`)
		case "UID":
			if f.hostile == "search-silent" {
				br.ReadString('\n') // until the client gives up
				return
			}
			f.search(say, tag, args)
		case "LOGOUT":
			say("* BYE LOGOUT Requested", tag+" OK 73 good day (Success)")
			return
		default:
			say(tag + " BAD Unknown command")
		}
	}
}

func (f *fakeGmail) search(say func(...string), tag, args string) {
	var cat, set string
	if _, err := fmt.Sscanf(args, `SEARCH X-GM-RAW "category:%s UID %s`, &cat, &set); err != nil {
		say(tag + " BAD Could not parse command")
		return
	}
	cat = strings.TrimSuffix(cat, `"`)
	var found []string
	for _, s := range strings.Split(set, ",") {
		u, _ := strconv.ParseUint(s, 10, 32)
		if f.categories[uint32(u)] == cat {
			found = append(found, s)
		}
	}
	result := strings.TrimSpace("* SEARCH " + strings.Join(found, " "))
	switch f.hostile {
	case "long-line":
		result = "* SEARCH 2" + strings.Repeat(" 2", maxLine)
	case "literal":
		result = "* SEARCH {5}\r\n2 3 4"
	case "garbage":
		result = "\x16\x03\x01\x02 garbage \xa5\xa1"
	case "foreign-uid":
		result = "* SEARCH 999"
	case "flood":
		for range maxResponses + 1 {
			say("* OK still searching")
		}
	}
	say(result, tag+" OK SEARCH completed (Success)")
}

func gmailMailbox(t *testing.T, addr string) config.SeedMailbox {
	return withPassword(t, seedMailbox(addr, config.IMAPNoTLS), seedPassword)
}

func categories(t *testing.T, m config.SeedMailbox, timeout time.Duration, uids ...uint32) (map[uint32]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return NewGmailCategories(m, NewCredentials(m, nil)).Categories(ctx, "INBOX", uids)
}

func TestGmailCategoriesOverLOGIN(t *testing.T) {
	f := newFakeGmail(t, "")
	f.caps = "IMAP4rev1 X-GM-EXT-1" // no AUTH=PLAIN: LOGIN
	got, err := categories(t, gmailMailbox(t, f.start(t, nil)), 10*time.Second, 1, 2, 3, 4, 5, 6, 2)
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint32]string{1: "primary", 2: "promotions", 3: "social", 5: "updates", 6: "forums"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("categories %v, want %v", got, want)
	}
	seen := f.seen()
	for _, want := range []string{
		`g1 CAPABILITY`,
		`g2 LOGIN "seed1@gmail.com" "pa\"ss\\word"`, // RFC 9051 4.3 escapes
		`g3 CAPABILITY`, // forgotten at login
		`g4 EXAMINE "INBOX"`,
		`g5 UID SEARCH X-GM-RAW "category:primary" UID 1,2,3,4,5,6`,
		`g9 UID SEARCH X-GM-RAW "category:forums" UID 1,2,3,4,5,6`,
		`g10 LOGOUT`,
	} {
		if !containsString(seen, want) {
			t.Errorf("the server did not see %s; it saw:\n%s", want, strings.Join(seen, "\n"))
		}
	}
}

func containsString(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}

func TestGmailCategoryOfOneUID(t *testing.T) {
	m := gmailMailbox(t, newFakeGmail(t, "").start(t, nil))
	g := NewGmailCategories(m, NewCredentials(m, nil))
	for uid, want := range map[uint32]string{2: "promotions", 4: "", 6: "forums"} {
		got, err := g.Category(context.Background(), "INBOX", uid)
		if err != nil || got != want {
			t.Errorf("UID %d: %q, %v; want %q", uid, got, err, want)
		}
	}
}

func TestGmailCategoriesOverImplicitTLSWithXOAUTH2(t *testing.T) {
	tc, ca := selfSigned(t)
	f := newFakeGmail(t, "")
	m := withTokenFile(t, seedMailbox(f.start(t, tc), config.IMAPImplicit), goodToken)
	m.IMAP.CAFile = ca
	got, err := categories(t, m, 10*time.Second, 2)
	if err != nil || got[2] != "promotions" {
		t.Fatalf("%v, %v", got, err)
	}
	if seen := f.seen(); !containsString(seen, "g2 AUTHENTICATE XOAUTH2 "+base64.StdEncoding.EncodeToString([]byte("user=seed1@gmail.com\x01auth=Bearer "+goodToken+"\x01\x01"))) {
		t.Fatalf("no XOAUTH2 with SASL-IR; the server saw:\n%s", strings.Join(seen, "\n"))
	}

	m = withTokenFile(t, m, "stale-token")
	_, err = categories(t, m, 10*time.Second, 2)
	if !errors.Is(err, ErrLoginRefused) || !strings.Contains(err.Error(), `status "400"`) || strings.Contains(err.Error(), "stale-token") {
		t.Fatalf("stale token: %v", err)
	}
}

// A server may end a refused XOAUTH2 with BAD rather than NO (go-imap's
// client answers its challenge with "=", which is not base64 to all).
func TestXOAUTH2ErrorChallengeIsARefusalEvenWithBAD(t *testing.T) {
	f := newFakeGmail(t, "xoauth2-bad")
	m := withTokenFile(t, seedMailbox(f.start(t, nil), config.IMAPNoTLS), "stale-token")
	if _, err := categories(t, m, 10*time.Second, 2); !errors.Is(err, ErrLoginRefused) || !strings.Contains(err.Error(), "BAD") {
		t.Fatalf("%v, want ErrLoginRefused", err)
	}
}

func TestGmailCategoriesPlainWithoutSASLIRAndStartTLS(t *testing.T) {
	tc, ca := selfSigned(t)
	f := newFakeGmail(t, "")
	f.caps = "IMAP4rev1 STARTTLS AUTH=PLAIN X-GM-EXT-1"
	f.tls = tc
	m := withPassword(t, seedMailbox(f.start(t, nil), config.IMAPStartTLS), seedPassword)
	m.IMAP.CAFile = ca
	got, err := categories(t, m, 10*time.Second, 3)
	if err != nil || got[3] != "social" {
		t.Fatalf("%v, %v", got, err)
	}
	seen := f.seen()
	if !containsString(seen, "g1 STARTTLS") || !containsString(seen, "g3 AUTHENTICATE PLAIN") {
		t.Fatalf("the server saw:\n%s", strings.Join(seen, "\n"))
	}
}

func TestGmailCategoriesRefusesHostileServers(t *testing.T) {
	for _, tc := range []struct {
		hostile string
		want    string
	}{
		{"long-line", "longer than"},
		{"literal", "literal"},
		{"garbage", "not a response"},
		{"foreign-uid", "not asked about"},
		{"flood", "more than"},
		{"no-login", "refused"},
	} {
		t.Run(tc.hostile, func(t *testing.T) {
			_, err := categories(t, gmailMailbox(t, newFakeGmail(t, tc.hostile).start(t, nil)), 10*time.Second, 2, 3)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v, want an error saying %q", err, tc.want)
			}
		})
	}
}

func TestGmailCategoriesWithoutGmailExtensions(t *testing.T) {
	f := newFakeGmail(t, "")
	f.caps, f.noGmail = "IMAP4rev1 SASL-IR AUTH=PLAIN", true
	if _, err := categories(t, gmailMailbox(t, f.start(t, nil)), 10*time.Second, 2); !errors.Is(err, ErrNotGmail) {
		t.Fatalf("%v, want ErrNotGmail", err)
	}
}

func TestGmailCategoriesStartTLSInjection(t *testing.T) {
	f := newFakeGmail(t, "starttls-injection")
	f.caps = "IMAP4rev1 STARTTLS AUTH=PLAIN X-GM-EXT-1"
	m := withPassword(t, seedMailbox(f.start(t, nil), config.IMAPStartTLS), seedPassword)
	if _, err := categories(t, m, 10*time.Second, 2); err == nil || !strings.Contains(err.Error(), "before TLS") {
		t.Fatalf("%v, want the bytes after STARTTLS's OK refused", err)
	}
}

func TestGmailCategoriesGiveUpWithCtx(t *testing.T) {
	for _, hostile := range []string{"silent", "search-silent"} {
		t.Run(hostile, func(t *testing.T) {
			m := gmailMailbox(t, newFakeGmail(t, hostile).start(t, nil))
			start := time.Now()
			_, err := categories(t, m, 300*time.Millisecond, 2)
			if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
				t.Fatalf("%v after %s", err, time.Since(start))
			}
		})
	}
	t.Run("cancel", func(t *testing.T) {
		m := gmailMailbox(t, newFakeGmail(t, "search-silent").start(t, nil))
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(300*time.Millisecond, cancel)
		start := time.Now()
		_, err := NewGmailCategories(m, NewCredentials(m, nil)).Categories(ctx, "INBOX", []uint32{2})
		if !errors.Is(err, context.Canceled) || time.Since(start) > 5*time.Second {
			t.Fatalf("%v after %s", err, time.Since(start))
		}
	})
}

func TestGmailCategoriesRefusesBadInput(t *testing.T) {
	m := gmailMailbox(t, "127.0.0.1:1") // never dialed
	g := NewGmailCategories(m, NewCredentials(m, nil))
	ctx := context.Background()
	if _, err := g.Categories(ctx, "INBOX", []uint32{0}); err == nil {
		t.Error("UID 0 accepted")
	}
	if _, err := g.Categories(ctx, "INBOX", make([]uint32, maxUIDs+1)); err == nil {
		t.Error("too many UIDs accepted")
	}
	if _, err := g.Categories(ctx, "INBOX\r\nA1 DELETE INBOX", []uint32{1}); err == nil {
		t.Error("a CRLF in the mailbox name accepted")
	}
	if got, err := g.Categories(ctx, "INBOX", nil); err != nil || len(got) != 0 {
		t.Errorf("no UIDs: %v, %v", got, err)
	}
}

func TestQuote(t *testing.T) {
	for in, want := range map[string]string{
		`INBOX`:            `"INBOX"`,
		`[Gmail]/All Mail`: `"[Gmail]/All Mail"`,
		`a"b\c`:            `"a\"b\\c"`,
		``:                 `""`,
	} {
		if got, err := quote(in); err != nil || got != want {
			t.Errorf("quote(%q) = %s, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"a\rb", "a\nb", "a\x00b", "Boîte"} {
		if _, err := quote(in); err == nil || strings.Contains(err.Error(), in) {
			t.Errorf("quote(%q): %v", in, err)
		}
	}
}

func TestParseResponse(t *testing.T) {
	for line, want := range map[string]response{
		"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] Gimap ready": {tag: "*", kind: "OK", code: "CAPABILITY", text: "Gimap ready", caps: []string{"IMAP4REV1", "AUTH=PLAIN"}},
		"* PREAUTH welcome": {tag: "*", kind: "PREAUTH", text: "welcome"},
		"g1 NO [AUTHENTICATIONFAILED] Invalid credentials": {tag: "g1", kind: "NO", code: "AUTHENTICATIONFAILED", text: "Invalid credentials"},
		"g2 ok": {tag: "g2", kind: "OK"},
		"* OK [PERMANENTFLAGS (\\Seen \\*)] Limited": {tag: "*", kind: "OK", code: "PERMANENTFLAGS", text: "Limited"},
		"+ eyJzdGF0dXMiOiI0MDAifQ==":                 {tag: "+", text: "eyJzdGF0dXMiOiI0MDAifQ=="},
		"+":                                          {tag: "+"},
		"* SEARCH":                                   {tag: "*", kind: "SEARCH"},
		"* SEARCH 1 4294967295":                      {tag: "*", kind: "SEARCH", uids: []uint32{1, 4294967295}},
		"* 6 EXISTS":                                 {tag: "*", kind: "EXISTS"},
		"* CAPABILITY IMAP4rev1 X-GM-EXT-1":          {tag: "*", kind: "CAPABILITY", caps: []string{"IMAP4REV1", "X-GM-EXT-1"}},
		"* FLAGS (\\Seen)":                           {tag: "*", kind: "FLAGS"},
		"* BYE bye {5} now":                          {tag: "*", kind: "BYE", text: "bye {5} now"},
	} {
		got, err := parseResponse([]byte(line))
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%q: %+v, %v; want %+v", line, got, err, want)
		}
	}
	for _, line := range []string{
		"", "*", "* ", "g1", "g1 FETCH x", "g1 BYE x", "+g1 OK", "g(1 OK", "* SEARCH 0", "* SEARCH 01",
		"* SEARCH 4294967296", "* SEARCH 1  2", "* SEARCH 1 ", "* SEARCH (MODSEQ 5)", "* OK [ALERT oops",
		"* CAPABILITY", "* CAPABILITY IMAP4rev1 (x)", "* LIST () \"/\" {5}", "* OK {12+}", "* OK a\x00b",
		"* SEARCH " + strings.Repeat("1 ", maxUIDs) + "1",
	} {
		if got, err := parseResponse([]byte(line)); err == nil {
			t.Errorf("%q accepted as %+v", line, got)
		}
	}
}

func TestReadLine(t *testing.T) {
	read := func(s string, max int) (string, error) {
		l, err := readLine(bufio.NewReaderSize(strings.NewReader(s), 16), max)
		return string(l), err
	}
	if l, err := read("* OK a line longer than the buffer\r\n", 64); err != nil || l != "* OK a line longer than the buffer" {
		t.Errorf("%q, %v", l, err)
	}
	for _, s := range []string{"* OK too long for the limit\r\n", "* OK bare LF\n", "* OK no end"} {
		if l, err := read(s, 20); err == nil {
			t.Errorf("%q read as %q", s, l)
		}
	}
}

// FuzzGmailResponse feeds any bytes as a server's responses through the
// line reader and the parser.
func FuzzGmailResponse(f *testing.F) {
	f.Add([]byte("* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN X-GM-EXT-1] Gimap ready\r\n"))
	f.Add([]byte("* SEARCH 2 3 4294967295\r\ng5 OK SEARCH completed (Success)\r\n"))
	f.Add([]byte("+ eyJzdGF0dXMiOiI0MDAifQ==\r\ng2 NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)\r\n"))
	f.Add([]byte("* SEARCH {5}\r\n2 3 4\r\n"))
	const max = 256
	f.Fuzz(func(t *testing.T, data []byte) {
		br := bufio.NewReaderSize(strings.NewReader(string(data)), 16)
		for {
			line, err := readLine(br, max)
			if err != nil {
				return
			}
			if len(line)+2 > max {
				t.Fatalf("a line of %d bytes passed a limit of %d", len(line)+2, max)
			}
			r, err := parseResponse(line)
			if err != nil {
				continue
			}
			checkResponse(t, line, r)
		}
	})
}

func checkResponse(t *testing.T, line []byte, r response) {
	t.Helper()
	if endsInLiteral(string(line)) {
		t.Fatalf("%q announces a literal and was accepted", line)
	}
	if strings.ContainsAny(r.text, "\x00\r\n") {
		t.Fatalf("text %q", r.text)
	}
	switch {
	case r.tag == "+":
		if r.kind != "" || r.code != "" || r.caps != nil || r.uids != nil {
			t.Fatalf("continuation %+v", r)
		}
		return
	case r.tag != "*" && !isTag(r.tag):
		t.Fatalf("tag %q", r.tag)
	}
	if !isAtom(r.kind) || r.kind != strings.ToUpper(r.kind) {
		t.Fatalf("kind %q", r.kind)
	}
	if r.tag != "*" && r.kind != "OK" && r.kind != "NO" && r.kind != "BAD" {
		t.Fatalf("a tagged %s", r.kind)
	}
	if r.code != "" && (!isAtom(r.code) || r.code != strings.ToUpper(r.code)) {
		t.Fatalf("code %q", r.code)
	}
	if len(r.caps) > maxCaps || (r.caps != nil && r.kind != "CAPABILITY" && r.code != "CAPABILITY") {
		t.Fatalf("%d capabilities in %+v", len(r.caps), r)
	}
	for _, c := range r.caps {
		if !isAtom(c) || c != strings.ToUpper(c) {
			t.Fatalf("capability %q", c)
		}
	}
	if r.uids != nil && r.kind != "SEARCH" || len(r.uids) > maxUIDs {
		t.Fatalf("%d UIDs in %+v", len(r.uids), r)
	}
	if r.kind == "SEARCH" && r.tag == "*" {
		// What was read writes back to a line that reads the same.
		s := "* SEARCH"
		for _, u := range r.uids {
			if u == 0 {
				t.Fatalf("UID 0 in %q", line)
			}
			s += " " + strconv.FormatUint(uint64(u), 10)
		}
		again, err := parseResponse([]byte(s))
		if err != nil || !reflect.DeepEqual(again.uids, r.uids) {
			t.Fatalf("%q read as %v, written as %q, read again as %v, %v", line, r.uids, s, again.uids, err)
		}
	}
}
