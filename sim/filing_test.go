package sim

import (
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-smtp"
)

// fakeClock is an injectable clock that only tests move.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// folders lists where the provider filed each copy, in order of arrival.
func folders(p *Provider) []string {
	var out []string
	for _, m := range p.Messages() {
		out = append(out, m.Folder)
	}
	return out
}

// count is a mailbox's message count over IMAP.
func count(t *testing.T, c *imapclient.Client, name string) uint32 {
	t.Helper()
	st, err := c.Status(name, &imap.StatusOptions{NumMessages: true}).Wait()
	if err != nil {
		t.Fatal(err)
	}
	return *st.NumMessages
}

// headers fetches the header of every message in a mailbox, in UID order.
func headers(t *testing.T, c *imapclient.Client, name string) []string {
	t.Helper()
	selectBox(t, c, name)
	sec := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, Peek: true}
	msgs, err := c.Fetch(imap.UIDSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{sec}}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range msgs {
		out = append(out, string(m.FindBodySection(sec)))
	}
	return out
}

// deliver sends each message to seed, one connection each.
func deliver(t *testing.T, p *Provider, msgs ...string) {
	t.Helper()
	for _, m := range msgs {
		if err := send(t, p.Addr(), []string{seed}, m); err != nil {
			t.Fatal(err)
		}
	}
}

// waitExists waits until the client was told the mailbox holds n.
func waitExists(t *testing.T, ev *events, n uint32) {
	t.Helper()
	for recv(t, ev.exists, "EXISTS") != n {
	}
}

func TestFilingDefaultInbox(t *testing.T) {
	p := gmailIMAP(t, Options{}, IMAPOptions{})
	deliver(t, p, message("a", "x"), "Precedence: bulk\r\n"+message("b", "x"))
	if got := folders(p); !slices.Equal(got, []string{"INBOX", "INBOX"}) {
		t.Fatalf("folders %v", got)
	}
	c := login(t, p, nil)
	if count(t, c, "INBOX") != 2 || count(t, c, "Junk") != 0 {
		t.Fatal("mailboxes do not hold what was filed")
	}
}

func TestFilingDKIM(t *testing.T) {
	lookup, sign := dkimKey(t)
	p := gmailIMAP(t, Options{LookupTXT: lookup, Filing: Filing{JunkUnlessDKIMPass: true}}, IMAPOptions{})
	good := sign(message("good", "Your certificate is ready."))
	deliver(t, p, good, strings.Replace(good, "ready.", "ready!", 1), message("unsigned", "x"))
	if got := folders(p); !slices.Equal(got, []string{"INBOX", "Junk", "Junk"}) {
		t.Fatalf("folders %v", got)
	}

	c := login(t, p, nil)
	inbox := headers(t, c, "INBOX")
	want := "Authentication-Results: " + gmailMX + ";\r\n\tdkim=pass header.d=issuer.example header.s=s2026;\r\n" +
		"\tspf=none smtp.mailfrom=issuer.example;\r\n\tdmarc=pass header.from=issuer.example\r\nDKIM-Signature:"
	if len(inbox) != 1 || !strings.HasPrefix(inbox[0], want) {
		t.Fatalf("INBOX headers %q", inbox)
	}
	junk := headers(t, c, "Junk")
	if len(junk) != 2 ||
		!strings.Contains(junk[0], "\tdkim=fail header.d=issuer.example header.s=s2026;\r\n") || !strings.Contains(junk[0], "\tdmarc=none header.from=issuer.example\r\n") ||
		!strings.Contains(junk[1], "\tdkim=none;\r\n") {
		t.Fatalf("Junk headers %q", junk)
	}
}

func TestFilingBulkFraction(t *testing.T) {
	p := gmailIMAP(t, Options{Filing: Filing{JunkEvery: 3, BulkOnly: true}}, IMAPOptions{Junk: "[Gmail]/Spam"})
	var want []string
	for i := range 12 {
		if i%4 == 3 { // not bulk: never counted
			deliver(t, p, message("transactional", "x"))
			want = append(want, "INBOX")
			continue
		}
		bulk := "Precedence: bulk\r\n"
		if i%2 == 1 {
			bulk = "List-Unsubscribe: <mailto:u@issuer.example>\r\n"
		}
		deliver(t, p, bulk+message("wave", "x"))
		want = append(want, "INBOX")
		if bulks := i + 1 - (i+1)/4; bulks%3 == 0 {
			want[i] = "[Gmail]/Spam"
		}
	}
	if got := folders(p); !slices.Equal(got, want) {
		t.Fatalf("folders %v, want %v", got, want)
	}
	c := login(t, p, nil)
	if in, junk := count(t, c, "INBOX"), count(t, c, "[Gmail]/Spam"); in != 9 || junk != 3 {
		t.Fatalf("INBOX %d, junk %d; want 9 and 3 (every 3rd of 9 bulk)", in, junk)
	}

	// Without BulkOnly every copy counts.
	all := gmailIMAP(t, Options{Filing: Filing{JunkEvery: 2}}, IMAPOptions{})
	deliver(t, all, message("a", "x"), message("b", "x"), message("c", "x"), message("d", "x"))
	if got := folders(all); !slices.Equal(got, []string{"INBOX", "Junk", "INBOX", "Junk"}) {
		t.Fatalf("folders %v", got)
	}
}

func TestFilingRate(t *testing.T) {
	clock := newClock()
	p := gmailIMAP(t, Options{Now: clock.Now, Filing: Filing{JunkAboveRate: 2}}, IMAPOptions{})
	for range 5 {
		deliver(t, p, message("burst", "x"))
	}
	clock.Add(999 * time.Millisecond)
	deliver(t, p, message("still", "x")) // the first two are still in the window
	clock.Add(time.Second)
	deliver(t, p, message("calm", "x"))
	want := []string{"INBOX", "INBOX", "Junk", "Junk", "Junk", "Junk", "INBOX"}
	if got := folders(p); !slices.Equal(got, want) {
		t.Fatalf("folders %v, want %v", got, want)
	}
	if m := p.Messages(); !m[0].Received.Equal(clock.Now().Add(-1999*time.Millisecond)) || !m[6].Received.Equal(clock.Now()) {
		t.Fatalf("arrival times do not follow the clock: %v, %v", m[0].Received, m[6].Received)
	}
}

func TestFilingDelayedMove(t *testing.T) {
	clock := newClock()
	p := gmailIMAP(t, Options{Now: clock.Now, Filing: Filing{MoveAfter: 10 * time.Minute, MoveEvery: 2, Microsoft: true}},
		IMAPOptions{Junk: "Junk Email", NoSpecialUse: true})
	var inboxEv, junkEv events
	inbox, junk := login(t, p, &inboxEv), login(t, p, &junkEv)
	selectBox(t, inbox, "INBOX")
	selectBox(t, junk, "Junk Email")
	stopInbox, stopJunk := idle(t, inbox), idle(t, junk)

	deliver(t, p, message("first", "x"), message("second", "x"))
	waitExists(t, &inboxEv, 2)
	clock.Add(10*time.Minute - time.Second)
	if n := p.ApplyDueMoves(); n != 0 {
		t.Fatalf("%d moves before they are due", n)
	}
	clock.Add(time.Second)
	if n := p.ApplyDueMoves(); n != 1 {
		t.Fatalf("%d moves, want 1", n)
	}
	if seq := recv(t, inboxEv.expunge, "EXPUNGE in INBOX"); seq != 2 {
		t.Fatalf("EXPUNGE %d, want 2", seq)
	}
	waitExists(t, &junkEv, 1)
	stopInbox()
	stopJunk()
	if got := folders(p); !slices.Equal(got, []string{"INBOX", "Junk Email"}) {
		t.Fatalf("folders %v", got)
	}
	if n := p.ApplyDueMoves(); n != 0 {
		t.Fatalf("a move was made twice: %d", n)
	}

	// Exchange's verdicts were written when the copy was filed, in the inbox.
	moved := headers(t, junk, "Junk Email")
	if len(moved) != 1 || !strings.HasPrefix(moved[0], "Authentication-Results: spf=none smtp.mailfrom=issuer.example;\r\n") ||
		!strings.Contains(moved[0], "SCL:1;") || !strings.Contains(moved[0], "SFV:NSPM;") ||
		!strings.Contains(moved[0], "X-Microsoft-Antispam-Mailbox-Delivery: ucf:0;jmr:0;auth:0;dest:I;\r\n") ||
		!strings.Contains(moved[0], "Subject: second\r\n") {
		t.Fatalf("moved copy's header %q", moved)
	}
}

func TestFilingMicrosoftJunk(t *testing.T) {
	p := gmailIMAP(t, Options{Filing: Filing{JunkEvery: 1, Microsoft: true}}, IMAPOptions{Junk: "Junk Email"})
	deliver(t, p, "Precedence: bulk\r\n"+message("wave", "x"))
	h := headers(t, login(t, p, nil), "Junk Email")
	for _, want := range []string{"SCL:5;", "SFV:SPM;", "CAT:SPM;", "X-Microsoft-Antispam: BCL:6;\r\n", "dest:J;"} {
		if len(h) != 1 || !strings.Contains(h[0], want) {
			t.Fatalf("junk copy lacks %q: %q", want, h)
		}
	}
}

func TestFilingMoveByWallClock(t *testing.T) {
	p := gmailIMAP(t, Options{Filing: Filing{MoveAfter: time.Millisecond}}, IMAPOptions{})
	var ev events
	c := login(t, p, &ev)
	selectBox(t, c, "Junk")
	stop := idle(t, c)
	deliver(t, p, message("later", "x"))
	waitExists(t, &ev, 1) // moved by the provider's own timer
	stop()
	if got := folders(p); !slices.Equal(got, []string{"Junk"}) {
		t.Fatalf("folders %v", got)
	}
}

func TestFilingDataRespondOverrides(t *testing.T) {
	p := gmailIMAP(t, Options{
		Filing:      Filing{JunkEvery: 1},
		DataRespond: func(m *Message) *smtp.SMTPError { m.Folder = "Promotions"; return nil },
	}, IMAPOptions{})
	deliver(t, p, message("promo", "x"))
	c := login(t, p, nil)
	if got := folders(p); !slices.Equal(got, []string{"Promotions"}) || count(t, c, "Promotions") != 1 || count(t, c, "Junk") != 0 {
		t.Fatalf("folders %v", got)
	}
}
