package sim

import (
	"bytes"
	"crypto/tls"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
)

const (
	seed     = "seed@gmail.com"
	seedPass = "s3cret"
)

// gmailIMAP is a provider with one IMAP account, seed@gmail.com.
func gmailIMAP(t *testing.T, o Options, io IMAPOptions) *Provider {
	t.Helper()
	o.Name, o.Domains, o.MXHost = "gmail", []string{"gmail.com"}, gmailMX
	if io.Accounts == nil {
		io.Accounts = map[string]string{seed: seedPass}
	}
	o.IMAP = &io
	return start(t, o)
}

// events is what an IMAP client heard unasked: EXISTS and EXPUNGE.
type events struct {
	exists  chan uint32
	expunge chan uint32
}

// handler only signals, as go-imap's reader goroutine requires.
func (e *events) handler() *imapclient.UnilateralDataHandler {
	e.exists, e.expunge = make(chan uint32, 100), make(chan uint32, 100)
	return &imapclient.UnilateralDataHandler{
		Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.NumMessages != nil {
				e.exists <- *d.NumMessages
			}
		},
		Expunge: func(seq uint32) { e.expunge <- seq },
	}
}

// login dials p's IMAP side in plaintext and logs in as seed.
func login(t *testing.T, p *Provider, ev *events) *imapclient.Client {
	t.Helper()
	o := &imapclient.Options{}
	if ev != nil {
		o.UnilateralDataHandler = ev.handler()
	}
	c, err := imapclient.DialInsecure(p.IMAPAddr(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login(seed, seedPass).Wait(); err != nil {
		t.Fatal(err)
	}
	return c
}

func selectBox(t *testing.T, c *imapclient.Client, name string) *imap.SelectData {
	t.Helper()
	d, err := c.Select(name, nil).Wait()
	if err != nil {
		t.Fatalf("select %s: %v", name, err)
	}
	return d
}

// idle starts IDLE; the returned func ends it.
func idle(t *testing.T, c *imapclient.Client) func() {
	t.Helper()
	cmd, err := c.Idle()
	if err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := cmd.Close(); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatal(err)
		}
	}
}

// recv waits for a value; the timer only turns a hang into a failure.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("no %s", what)
		panic("unreachable")
	}
}

func listAll(t *testing.T, c *imapclient.Client, o *imap.ListOptions) map[string][]imap.MailboxAttr {
	t.Helper()
	l, err := c.List("", "*", o).Collect()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]imap.MailboxAttr{}
	for _, d := range l {
		if d.Delim != '/' {
			t.Fatalf("%s: delimiter %q", d.Mailbox, d.Delim)
		}
		out[d.Mailbox] = d.Attrs
	}
	return out
}

func TestIMAPListSpecialUse(t *testing.T) {
	gmail := gmailIMAP(t, Options{}, IMAPOptions{Junk: "[Gmail]/Spam"})
	c := login(t, gmail, nil)
	if !c.Caps().Has(imap.CapSpecialUse) {
		t.Fatalf("caps %v lack SPECIAL-USE", c.Caps())
	}
	got := listAll(t, c, nil)
	want := map[string][]imap.MailboxAttr{
		"INBOX":        {imap.MailboxAttrHasNoChildren},
		"[Gmail]":      {imap.MailboxAttrNoSelect, imap.MailboxAttrHasChildren},
		"[Gmail]/Spam": {imap.MailboxAttrHasNoChildren, imap.MailboxAttrJunk},
	}
	if len(got) != len(want) {
		t.Fatalf("LIST: %v", got)
	}
	for name, attrs := range want {
		if !slices.Equal(got[name], attrs) {
			t.Fatalf("LIST %s: %v, want %v", name, got[name], attrs)
		}
	}
	// LIST (SPECIAL-USE) "" "*" selects the junk folder alone.
	if only := listAll(t, c, &imap.ListOptions{SelectSpecialUse: true}); len(only) != 1 || only["[Gmail]/Spam"] == nil {
		t.Fatalf("LIST (SPECIAL-USE): %v", only)
	}
	// % stops at the delimiter; INBOX matches in any case.
	l, err := c.List("", "%", nil).Collect()
	if err != nil || len(l) != 2 {
		t.Fatalf("LIST %%: %v %v", l, err)
	}
	if l, err := c.List("", "inbox", nil).Collect(); err != nil || len(l) != 1 || l[0].Mailbox != "INBOX" {
		t.Fatalf("LIST inbox: %v %v", l, err)
	}

	// Exchange Online: no SPECIAL-USE, a localized junk name.
	exchange := start(t, Options{Name: "outlook", Domains: []string{"outlook.com"}, MXHost: outlookMX,
		IMAP: &IMAPOptions{Accounts: map[string]string{"seed@outlook.com": "pw"}, Junk: "Junk Email", NoSpecialUse: true}})
	c2, err := imapclient.DialInsecure(exchange.IMAPAddr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if err := c2.Login("seed@outlook.com", "pw").Wait(); err != nil {
		t.Fatal(err)
	}
	if c2.Caps().Has(imap.CapSpecialUse) {
		t.Fatal("SPECIAL-USE advertised with NoSpecialUse")
	}
	got = listAll(t, c2, &imap.ListOptions{ReturnSpecialUse: true})
	if len(got) != 2 || !slices.Equal(got["Junk Email"], []imap.MailboxAttr{imap.MailboxAttrHasNoChildren}) {
		t.Fatalf("Exchange LIST: %v", got)
	}
}

func TestIMAPIdleSeesDelivery(t *testing.T) {
	p := gmailIMAP(t, Options{}, IMAPOptions{})
	var ev events
	c := login(t, p, &ev)
	if !c.Caps().Has(imap.CapIdle) {
		t.Fatalf("caps %v lack IDLE", c.Caps())
	}
	if d := selectBox(t, c, "INBOX"); d.NumMessages != 0 || d.UIDNext != 1 {
		t.Fatalf("SELECT: %+v", d)
	}
	stop := idle(t, c)
	if err := send(t, p.Addr(), []string{"Seed@Gmail.com", "other@gmail.com"}, message("idle", "hello")); err != nil {
		t.Fatal(err)
	}
	if n := recv(t, ev.exists, "EXISTS"); n != 1 {
		t.Fatalf("EXISTS %d", n)
	}
	stop()

	msgs, err := c.Fetch(imap.UIDSetNum(1), &imap.FetchOptions{
		UID: true, InternalDate: true,
		BodySection: []*imap.FetchItemBodySection{{Specifier: imap.PartSpecifierHeader, Peek: true}},
	}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("UID FETCH: %v %v", msgs, err)
	}
	hdr := string(msgs[0].BodySection[0].Bytes)
	want := "Authentication-Results: " + gmailMX + ";\r\n\tspf=none smtp.mailfrom=issuer.example;\r\n\tdmarc=none header.from=issuer.example\r\n"
	if !strings.HasPrefix(hdr, want) || !strings.Contains(hdr, "Subject: idle\r\n") {
		t.Fatalf("header:\n%s", hdr)
	}
	stored := p.MessagesTo(seed)
	if len(stored) != 1 || stored[0].Folder != "INBOX" || !msgs[0].InternalDate.Equal(stored[0].Received.Truncate(time.Second)) {
		t.Fatalf("stored %+v, INTERNALDATE %v", stored, msgs[0].InternalDate)
	}
	if bytes.Contains(stored[0].Data, []byte("Authentication-Results")) {
		t.Fatal("Message.Data is no longer the data as received")
	}
}

func TestIMAPNoIdlePolls(t *testing.T) {
	p := gmailIMAP(t, Options{}, IMAPOptions{NoIdle: true})
	var ev events
	c := login(t, p, &ev)
	if c.Caps().Has(imap.CapIdle) {
		t.Fatalf("caps after LOGIN %v offer IDLE", c.Caps())
	}
	caps, err := c.Capability().Wait()
	if err != nil || caps.Has(imap.CapIdle) || !caps.Has(imap.CapUIDPlus) {
		t.Fatalf("CAPABILITY %v %v", caps, err)
	}
	// A message whose body looks like a capability response passes
	// through untouched: literals are not rewritten.
	trap := "Subject: trap\r\n\r\n* CAPABILITY IMAP4rev1 IDLE\r\nA1 OK [CAPABILITY IDLE] x\r\n"
	if _, err := p.Append(seed, "INBOX", []byte(trap), time.Time{}); err != nil {
		t.Fatal(err)
	}
	selectBox(t, c, "INBOX")
	msgs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).Collect()
	if err != nil || len(msgs) != 1 || string(msgs[0].BodySection[0].Bytes) != trap {
		t.Fatalf("FETCH: %v %v", msgs, err)
	}

	// The poll fallback: NOOP reports what arrived.
	if err := send(t, p.Addr(), []string{seed}, message("poll", "x")); err != nil {
		t.Fatal(err)
	}
	if err := c.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	if n := recv(t, ev.exists, "EXISTS after NOOP"); n != 2 {
		t.Fatalf("EXISTS %d", n)
	}
}

func TestIMAPAppendFetch(t *testing.T) {
	p := gmailIMAP(t, Options{}, IMAPOptions{Junk: "Bulk"})
	c := login(t, p, nil)
	msg := "From: App <app@issuer.example>\r\nTo: seed@gmail.com\r\nSubject: by hand\r\nMessage-ID: <hand@issuer.example>\r\n\r\nbody\r\n"
	date := time.Date(2026, 3, 1, 12, 30, 0, 0, time.UTC)
	app := c.Append("Bulk", int64(len(msg)), &imap.AppendOptions{Flags: []imap.Flag{imap.FlagSeen}, Time: date})
	if _, err := app.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	if err := app.Close(); err != nil {
		t.Fatal(err)
	}
	ad, err := app.Wait()
	if err != nil || ad.UID != 1 || ad.UIDValidity == 0 {
		t.Fatalf("APPEND: %+v %v", ad, err)
	}
	missing := c.Append("Nowhere", 1, nil)
	missing.Write([]byte("x"))
	missing.Close()
	if _, err := missing.Wait(); err == nil {
		t.Fatal("APPEND to a missing mailbox succeeded")
	}

	st, err := c.Status("Bulk", &imap.StatusOptions{NumMessages: true, UIDNext: true, UIDValidity: true, NumUnseen: true, NumDeleted: true, Size: true}).Wait()
	if err != nil || *st.NumMessages != 1 || st.UIDNext != 2 || st.UIDValidity != ad.UIDValidity || *st.NumUnseen != 0 || *st.Size != int64(len(msg)) {
		t.Fatalf("STATUS: %+v %v", st, err)
	}

	if _, err := c.Select("Bulk", &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		t.Fatal(err)
	}
	fields := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"Message-ID", "Subject"}, Peek: true}
	msgs, err := c.Fetch(imap.UIDSetNum(1), &imap.FetchOptions{
		UID: true, Flags: true, InternalDate: true, RFC822Size: true, Envelope: true,
		BodySection: []*imap.FetchItemBodySection{{Specifier: imap.PartSpecifierHeader, Peek: true}, fields},
	}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("UID FETCH: %v %v", msgs, err)
	}
	m := msgs[0]
	if m.UID != 1 || !slices.Equal(m.Flags, []imap.Flag{imap.FlagSeen}) || !m.InternalDate.Equal(date) || m.RFC822Size != int64(len(msg)) {
		t.Fatalf("fetched %+v", m)
	}
	if m.Envelope.Subject != "by hand" || m.Envelope.MessageID != "hand@issuer.example" || m.Envelope.From[0].Host != "issuer.example" {
		t.Fatalf("envelope %+v", m.Envelope)
	}
	if h := string(m.FindBodySection(fields)); h != "Subject: by hand\r\nMessage-ID: <hand@issuer.example>\r\n\r\n" {
		t.Fatalf("HEADER.FIELDS: %q", h)
	}
	if h := string(m.FindBodySection(&imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader})); !strings.HasSuffix(msg, "\r\n\r\nbody\r\n") || !strings.HasPrefix(msg, h) {
		t.Fatalf("HEADER: %q", h)
	}
	// EXAMINE is read-only.
	if err := c.Store(imap.UIDSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err == nil {
		t.Fatal("STORE after EXAMINE succeeded")
	}
}

func TestIMAPUIDValidityReset(t *testing.T) {
	p := gmailIMAP(t, Options{}, IMAPOptions{})
	for i := range 3 {
		if _, err := p.Append(seed, "INBOX", []byte(message("m"+string(rune('1'+i)), "x")), time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	c := login(t, p, nil)
	before := selectBox(t, c, "INBOX")
	uidSearch := func(c *imapclient.Client, crit *imap.SearchCriteria) []imap.UID {
		t.Helper()
		d, err := c.UIDSearch(crit, nil).Wait()
		if err != nil {
			t.Fatal(err)
		}
		return d.AllUIDs()
	}
	uidRange := func(lo, hi imap.UID) *imap.SearchCriteria {
		var s imap.UIDSet
		s.AddRange(lo, hi)
		return &imap.SearchCriteria{UID: []imap.UIDSet{s}}
	}
	if got := uidSearch(c, uidRange(2, 0)); !slices.Equal(got, []imap.UID{2, 3}) {
		t.Fatalf("UID SEARCH UID 2:*: %v", got)
	}
	// Delete the first, so renumbering shifts the others.
	if err := c.Store(imap.UIDSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if seqs, err := c.UIDExpunge(imap.UIDSetNum(1)).Collect(); err != nil || !slices.Equal(seqs, []uint32{1}) {
		t.Fatalf("UID EXPUNGE: %v %v", seqs, err)
	}

	validity, err := p.ResetUIDValidity(seed, "inbox")
	if err != nil || validity <= before.UIDValidity {
		t.Fatalf("reset: %d %v (was %d)", validity, err, before.UIDValidity)
	}
	recv(t, c.Closed(), "BYE after the reset")

	c = login(t, p, nil)
	after := selectBox(t, c, "INBOX")
	if after.UIDValidity != validity || after.UIDNext != 3 || after.NumMessages != 2 {
		t.Fatalf("SELECT after reset: %+v", after)
	}
	if got := uidSearch(c, uidRange(2, 0)); !slices.Equal(got, []imap.UID{2}) {
		t.Fatalf("UID SEARCH UID 2:*: %v", got)
	}
	// n:* holds the last message even past the end (RFC 9051 6.4.8).
	if got := uidSearch(c, uidRange(5, 0)); !slices.Equal(got, []imap.UID{2}) {
		t.Fatalf("UID SEARCH UID 5:*: %v", got)
	}
	crit := &imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Message-ID", Value: "<M3@issuer"}}}
	if got := uidSearch(c, crit); !slices.Equal(got, []imap.UID{2}) {
		t.Fatalf("UID SEARCH HEADER: %v", got)
	}
	if got := uidSearch(c, &imap.SearchCriteria{}); !slices.Equal(got, []imap.UID{1, 2}) {
		t.Fatalf("UID SEARCH ALL: %v", got)
	}
}

func TestIMAPMoveCopyPushed(t *testing.T) {
	p := gmailIMAP(t, Options{}, IMAPOptions{})
	for range 2 {
		if _, err := p.Append(seed, "INBOX", []byte(message("m", "x")), time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	// A watcher on each folder, and the owner moving mail by hand.
	var inboxEv, junkEv events
	inbox, junk := login(t, p, &inboxEv), login(t, p, &junkEv)
	selectBox(t, inbox, "INBOX")
	selectBox(t, junk, "Junk")
	stopInbox, stopJunk := idle(t, inbox), idle(t, junk)

	owner := login(t, p, nil)
	selectBox(t, owner, "INBOX")
	md, err := owner.Move(imap.UIDSetNum(1), "Junk").Wait()
	if err != nil || md.UIDValidity == 0 || md.DestUIDs.String() != "1" {
		t.Fatalf("UID MOVE: %+v %v", md, err)
	}
	if seq := recv(t, inboxEv.expunge, "EXPUNGE in INBOX"); seq != 1 {
		t.Fatalf("EXPUNGE %d", seq)
	}
	if n := recv(t, junkEv.exists, "EXISTS in Junk"); n != 1 {
		t.Fatalf("EXISTS %d", n)
	}
	cd, err := owner.Copy(imap.SeqSetNum(1), "Junk").Wait()
	if err != nil || !slices.Equal(cd.SourceUIDs, imap.UIDSetNum(2)) || !slices.Equal(cd.DestUIDs, imap.UIDSetNum(2)) {
		t.Fatalf("COPY: %+v %v", cd, err)
	}
	if n := recv(t, junkEv.exists, "EXISTS in Junk"); n != 2 {
		t.Fatalf("EXISTS %d", n)
	}
	stopInbox()
	stopJunk()
	if _, err := owner.Move(imap.UIDSetNum(2), "Nowhere").Wait(); err == nil {
		t.Fatal("MOVE to a missing mailbox succeeded")
	}
}

func TestIMAPAuthenticatePlainTLS(t *testing.T) {
	srvTLS, cliTLS := selfSigned(t, "127.0.0.1")
	p := gmailIMAP(t, Options{TLS: srvTLS}, IMAPOptions{TLS: true})
	c, err := imapclient.DialTLS(p.IMAPAddr(), &imapclient.Options{TLSConfig: cliTLS})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Authenticate(sasl.NewPlainClient("", seed, "wrong")); err == nil {
		t.Fatal("a wrong password was accepted")
	}
	if err := c.Authenticate(sasl.NewPlainClient("", seed, seedPass)); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Caps()[imap.CapIdle]; !ok {
		t.Fatalf("caps %v", c.Caps())
	}
	selectBox(t, c, "Junk")

	if _, err := imapclient.DialTLS(p.IMAPAddr(), &imapclient.Options{TLSConfig: &tls.Config{ServerName: "127.0.0.1"}}); err == nil {
		t.Fatal("an untrusted certificate was accepted")
	}
}

func TestIMAPOptionsChecked(t *testing.T) {
	for name, o := range map[string]Options{
		"foreign account": {Domains: []string{"gmail.com"}, IMAP: &IMAPOptions{Accounts: map[string]string{"a@yahoo.com": "x"}}},
		"public address":  {IMAP: &IMAPOptions{Addr: "0.0.0.0:0"}},
		"TLS without":     {IMAP: &IMAPOptions{TLS: true}},
		"junk is INBOX":   {IMAP: &IMAPOptions{Junk: "inbox"}},
		"DKIM rule":       {Filing: Filing{JunkUnlessDKIMPass: true}},
	} {
		if p, err := Start(o); err == nil {
			p.Close()
			t.Errorf("%s: started", name)
		}
	}
}

// applyExpunges removes sequence numbers from a model of the mailbox, in
// the order a client must apply them.
func applyExpunges(uids []imap.UID, seqs []uint32) []imap.UID {
	for _, s := range seqs {
		uids = slices.Delete(uids, int(s-1), int(s))
	}
	return uids
}

func TestIMAPExpungeSeqNums(t *testing.T) {
	p := gmailIMAP(t, Options{}, IMAPOptions{})
	for range 5 {
		if _, err := p.Append(seed, "INBOX", []byte(message("m", "x")), time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	var ev events
	watcher := login(t, p, &ev)
	selectBox(t, watcher, "INBOX")
	stop := idle(t, watcher)

	owner := login(t, p, nil)
	selectBox(t, owner, "INBOX")
	// A non-peek fetch sets \Seen, as RFC 9051 6.4.5 says.
	if msgs, err := owner.Fetch(imap.SeqSetNum(2), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{}}}).Collect(); err != nil || !slices.Contains(msgs[0].Flags, imap.FlagSeen) {
		t.Fatalf("FETCH BODY[]: %v %v", msgs, err)
	}
	d, err := owner.UIDSearch(&imap.SearchCriteria{
		Or:  [][2]imap.SearchCriteria{{{Flag: []imap.Flag{imap.FlagSeen}}, {SeqNum: []imap.SeqSet{imap.SeqSetNum(4, 5)}}}},
		Not: []imap.SearchCriteria{{UID: []imap.UIDSet{imap.UIDSetNum(5)}}},
	}, nil).Wait()
	if err != nil || !slices.Equal(d.AllUIDs(), []imap.UID{2, 4}) {
		t.Fatalf("UID SEARCH OR SEEN 4:5 NOT UID 5: %v %v", d, err)
	}
	if err := owner.Store(imap.UIDSetNum(2, 4), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	seqs, err := owner.Expunge().Collect()
	if err != nil {
		t.Fatal(err)
	}
	want := []imap.UID{1, 3, 5}
	if got := applyExpunges([]imap.UID{1, 2, 3, 4, 5}, seqs); !slices.Equal(got, want) {
		t.Fatalf("EXPUNGE %v leaves %v", seqs, got)
	}
	pushed := []uint32{recv(t, ev.expunge, "EXPUNGE"), recv(t, ev.expunge, "EXPUNGE")}
	if got := applyExpunges([]imap.UID{1, 2, 3, 4, 5}, pushed); !slices.Equal(got, want) {
		t.Fatalf("pushed EXPUNGE %v leaves %v", pushed, got)
	}
	stop()
}
