package placement_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/certgate/certgate/clock"
	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/internal/testdovecot"
	"github.com/certgate/certgate/placement"
	"github.com/certgate/certgate/store"
	"github.com/certgate/certgate/store/sqlite"
)

// requireDovecot starts a private Dovecot with one user per seed, or
// skips (fails under CERTGATE_E2E=1) where it cannot run.
func requireDovecot(t *testing.T, seeds []config.SeedMailbox) *testdovecot.Server {
	t.Helper()
	if why := testdovecot.Missing(); why != "" {
		if os.Getenv("CERTGATE_E2E") == "1" {
			t.Fatal(why)
		}
		t.Skip("skipping: " + why + " (with CERTGATE_E2E=1 this is a failure)")
	}
	var users []testdovecot.User
	for _, s := range seeds {
		users = append(users, testdovecot.User{Name: s.Address, Password: "pw-" + s.Name})
	}
	d, err := testdovecot.Start(t.TempDir(), users)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Stop() })
	return d
}

func seedsAt(addr string, names ...string) []config.SeedMailbox {
	var out []config.SeedMailbox
	for _, n := range names {
		out = append(out, config.SeedMailbox{Name: n, Provider: "dovecot", Address: n + "@seeds.example", Junk: "auto",
			IMAP: config.SeedIMAP{Addr: addr, TLS: config.IMAPNoTLS, Username: n + "@seeds.example"}})
	}
	return out
}

// loginPlain is the tests' Connector: plaintext LOGIN to the private
// Dovecot on loopback.
func loginPlain(ctx context.Context, m config.SeedMailbox, h *imapclient.UnilateralDataHandler) (*imapclient.Client, error) {
	c, err := imapclient.DialInsecure(m.IMAP.Addr, &imapclient.Options{UnilateralDataHandler: h})
	if err != nil {
		return nil, err
	}
	if err := c.Login(m.IMAP.Username, "pw-"+m.Name).Wait(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// recorder is the Observer of a test: every placement and mailbox state,
// with a channel that says something happened.
type recorder struct {
	mu      sync.Mutex
	placed  []placed
	states  map[string]bool // seed/folder -> up
	downs   int
	changed chan struct{}
}

type placed struct {
	seed, folder, from string
}

func newRecorder() *recorder {
	return &recorder{states: map[string]bool{}, changed: make(chan struct{})}
}

func (r *recorder) Placed(p store.Placement, from string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.placed = append(r.placed, placed{p.Seed, p.Folder, from})
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *recorder) MailboxState(seed, folder string, up bool, _ error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.states[seed+"/"+folder] = up
	if !up {
		r.downs++
	}
	close(r.changed)
	r.changed = make(chan struct{})
}

// wait returns once cond holds, or fails the test after 20 s.
func (r *recorder) wait(t *testing.T, what string, cond func(*recorder) bool) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		r.mu.Lock()
		ok, ch := cond(r), r.changed
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-timeout:
			r.mu.Lock()
			defer r.mu.Unlock()
			t.Fatalf("timed out waiting for %s: placed %v, states %v", what, r.placed, r.states)
		}
	}
}

func (r *recorder) allUp(n int) func(*recorder) bool {
	return func(r *recorder) bool {
		up := 0
		for _, v := range r.states {
			if v {
				up++
			}
		}
		return up == n
	}
}

func (r *recorder) has(seed, folder, from string) func(*recorder) bool {
	return func(r *recorder) bool {
		for _, p := range r.placed {
			if p == (placed{seed, folder, from}) {
				return true
			}
		}
		return false
	}
}

// fixture is a store with one seeded message per call to send, and
// Dovecot seed mailboxes to file its copies in.
type fixture struct {
	t     *testing.T
	st    *sqlite.Store
	seeds []config.SeedMailbox
	dc    *testdovecot.Server
	clk   clock.Clock
}

func newFixture(t *testing.T, clk clock.Clock, names ...string) *fixture {
	f := &fixture{t: t, clk: clk, st: openStore(t)}
	f.seeds = seedsAt("", names...)
	f.dc = requireDovecot(t, f.seeds)
	for i := range f.seeds {
		f.seeds[i].IMAP.Addr = f.dc.Addr
	}
	return f
}

// openStore opens a fresh SQLite store for the test.
func openStore(t *testing.T) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "certgate.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// send stores a message with a seed copy for every seed, delivered now,
// and returns each copy's bytes as the receiver would file it, by seed.
func (f *fixture) send(subject string) map[string][]byte {
	f.t.Helper()
	ctx := context.Background()
	now := f.clk.Now()
	id := store.NewMessageID(now)
	m := store.Message{ID: id, Tenant: "issuer", MailFrom: "certificados@ca.example", HeaderFrom: "certificados@ca.example",
		MessageID: id + "@relay.ca.example", Subject: subject, Class: "bulk", ReceivedAt: now}
	body := fmt.Sprintf("From: <certificados@ca.example>\r\nSubject: %s\r\nMessage-ID: <%s@relay.ca.example>\r\n\r\nSu certificado.\r\n", subject, id)
	var rcpts []store.NewRecipient
	for _, s := range f.seeds {
		nr := store.NewCopy(s.Address, store.StateQueued, now)
		nr.Seed = s.Name
		rcpts = append(rcpts, nr)
	}
	ids, err := f.st.Enqueue(ctx, m, [][]byte{[]byte(body)}, rcpts)
	if err != nil {
		f.t.Fatal(err)
	}
	out := map[string][]byte{}
	for i, s := range f.seeds {
		if err := f.st.RecordAttempt(ctx, store.Attempt{RecipientID: ids[i], MessageID: id, Tenant: "issuer", Time: now,
			State: store.StateDelivered, Provider: "dovecot", Host: "127.0.0.1", Code: 250, Reply: "2.0.0 ok"}); err != nil {
			f.t.Fatal(err)
		}
		out[s.Name] = append([]byte("Authentication-Results: mx.seeds.example; dkim=pass header.d=ca.example; spf=pass; dmarc=pass\r\n"+
			string(rcpts[i].Prefix)), body...)
	}
	return out
}

// file puts a copy in a seed's mailbox, as the receiver's filter would.
func (f *fixture) file(seed, mailbox string, msg []byte) {
	f.t.Helper()
	for _, s := range f.seeds {
		if s.Name != seed {
			continue
		}
		c, err := loginPlain(context.Background(), s, nil)
		if err != nil {
			f.t.Fatal(err)
		}
		defer c.Close()
		ap := c.Append(mailbox, int64(len(msg)), nil)
		ap.Write(msg)
		ap.Close()
		if _, err := ap.Wait(); err != nil {
			f.t.Fatal(err)
		}
		return
	}
	f.t.Fatalf("no seed %s", seed)
}

// move moves every message of a seed's mailbox to another, as a filter's
// second look does.
func (f *fixture) move(seed, from, to string) {
	f.t.Helper()
	for _, s := range f.seeds {
		if s.Name != seed {
			continue
		}
		c, err := loginPlain(context.Background(), s, nil)
		if err != nil {
			f.t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Select(from, nil).Wait(); err != nil {
			f.t.Fatal(err)
		}
		if _, err := c.Move(imap.SeqSet{imap.SeqRange{Start: 1, Stop: 0}}, to).Wait(); err != nil {
			f.t.Fatal(err)
		}
		return
	}
}

func (f *fixture) count(seed, mailbox string) uint32 {
	f.t.Helper()
	for _, s := range f.seeds {
		if s.Name != seed {
			continue
		}
		c, err := loginPlain(context.Background(), s, nil)
		if err != nil {
			f.t.Fatal(err)
		}
		defer c.Close()
		st, err := c.Status(mailbox, &imap.StatusOptions{NumMessages: true}).Wait()
		if err != nil {
			f.t.Fatal(err)
		}
		return *st.NumMessages
	}
	return 0
}

func (f *fixture) watcher(rec *recorder) (*placement.Watcher, func()) {
	w := placement.NewWatcher(placement.Options{
		Seeds: config.Seeds{Deadline: config.Duration(15 * time.Minute), After: config.SeedDelete, Mailboxes: f.seeds},
		Book:  f.st, Connect: loginPlain, Clock: f.clk, Observer: rec})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	return w, func() { cancel(); <-done }
}

// The watcher finds each copy in the folder the receiver filed it in,
// with the receiver's verdicts, sees a later move, and misses nothing
// across a restart of Dovecot or of certgate.
func TestWatcherOnDovecot(t *testing.T) {
	// The real clock: reconnecting after Dovecot's restart takes the
	// watcher's first backoff, a second.
	f := newFixture(t, clock.Real, "s1", "s2")
	rec := newRecorder()
	_, stop := f.watcher(rec)
	rec.wait(t, "both folders of both seeds up", rec.allUp(4))

	wave := f.send("wave 1")
	f.file("s1", "INBOX", wave["s1"])
	f.file("s2", "Junk", wave["s2"])
	rec.wait(t, "s1 inbox, s2 junk", func(r *recorder) bool {
		return r.has("s1", "inbox", "")(r) && r.has("s2", "junk", "")(r)
	})
	p, err := f.st.Placements(context.Background(), store.PlacementQuery{Seed: "s2"})
	if err != nil || len(p) != 1 || p[0].Folder != store.FolderJunk || !strings.Contains(string(p[0].Verdicts), `"dmarc":"pass"`) ||
		p[0].Mailbox != "Junk" || p[0].UID == 0 || p[0].ArrivedAt.IsZero() {
		t.Fatalf("stored placement of s2: %+v, %v", p, err)
	}

	// A filter's second look: s1's copy moves to Junk.
	f.move("s1", "INBOX", "Junk")
	rec.wait(t, "s1 moved inbox -> junk", rec.has("s1", "junk", "inbox"))

	// Dovecot restarts: every connection drops; the watcher reconnects
	// and catches up.
	rec.mu.Lock()
	downs := rec.downs
	rec.mu.Unlock()
	if err := f.dc.Restart(); err != nil {
		t.Fatal(err)
	}
	rec.wait(t, "the watcher to notice", func(r *recorder) bool { return r.downs >= downs+4 })
	wave2 := f.send("wave 2")
	f.file("s1", "INBOX", wave2["s1"])
	f.file("s2", "INBOX", wave2["s2"])
	rec.wait(t, "wave 2 after the restart", func(r *recorder) bool {
		n := 0
		for _, p := range r.placed {
			if p.folder == "inbox" && p.from == "" {
				n++
			}
		}
		return n == 3 // s1's first copy, and both of wave 2
	})

	// certgate stops; mail arrives; certgate starts again and reads it
	// from where it stopped (the last UID is durable).
	stop()
	wave3 := f.send("wave 3")
	f.file("s1", "Junk", wave3["s1"])
	rec2 := newRecorder()
	_, stop2 := f.watcher(rec2)
	defer stop2()
	rec2.wait(t, "wave 3 after certgate's restart", rec2.has("s1", "junk", ""))
	rec2.mu.Lock()
	if len(rec2.placed) != 1 {
		t.Errorf("after a restart the watcher reported %v; only wave 3's copy is new", rec2.placed)
	}
	rec2.mu.Unlock()
}

// At the deadline a copy never found is missing, one filed in a folder
// the watcher does not watch is "other:<folder>", and found copies are
// deleted from the seed mailboxes; while a mailbox is out of reach its
// copies wait, so an outage never reads as missing mail.
func TestWatcherDeadline(t *testing.T) {
	clk := clock.NewFake(time.Now())
	f := newFixture(t, clk, "s1", "s2", "s3")
	rec := newRecorder()
	w, stop := f.watcher(rec)
	defer stop()
	rec.wait(t, "up", rec.allUp(6))
	wave := f.send("wave")
	f.file("s1", "Junk", wave["s1"])
	f.create("s2", "Archive")
	f.file("s2", "Archive", wave["s2"]) // a user's rule files it there
	rec.wait(t, "s1 junk", rec.has("s1", "junk", ""))
	// s3's copy never arrives.

	// Dovecot goes away before the deadline passes.
	rec.mu.Lock()
	downs := rec.downs
	rec.mu.Unlock()
	if err := f.dc.Stop(); err != nil {
		t.Fatal(err)
	}
	rec.wait(t, "every connection down", func(r *recorder) bool { return r.downs >= downs+6 })
	clk.Advance(15*time.Minute + time.Second)
	if err := w.SweepOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	open, err := f.st.Placements(context.Background(), store.PlacementQuery{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range open {
		if !p.ClosedAt.IsZero() || p.Folder == store.FolderMissing {
			t.Errorf("placement of %s closed (%s) while its mailbox was out of reach", p.Seed, p.Folder)
		}
	}

	// Dovecot is back; once the watcher has looked again, the sweep
	// closes everything.
	if err := f.dc.Restart(); err != nil {
		t.Fatal(err)
	}
	untilUp(t, clk, rec, 6)
	if err := w.SweepOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	rec.wait(t, "s2 other, s3 missing", func(r *recorder) bool {
		return r.has("s2", "other:Archive", "")(r) && r.has("s3", store.FolderMissing, "")(r)
	})
	if n := f.count("s1", "Junk"); n != 0 {
		t.Errorf("s1's Junk holds %d messages after the deadline; want the copy deleted", n)
	}
	if n := f.count("s2", "Archive"); n != 0 {
		t.Errorf("s2's Archive holds %d messages after the deadline; want the copy deleted", n)
	}
	all, err := f.st.Placements(context.Background(), store.PlacementQuery{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"s1": store.FolderJunk, "s2": "other:Archive", "s3": store.FolderMissing}
	for _, p := range all {
		if p.ClosedAt.IsZero() || p.Folder != want[p.Seed] {
			t.Errorf("placement of %s: %s, closed %v; want %s, closed", p.Seed, p.Folder, !p.ClosedAt.IsZero(), want[p.Seed])
		}
	}
}

// untilUp moves the fake clock on, a second at a time, until the
// watcher's n connections are up again: its reconnect backoff runs on it.
func untilUp(t *testing.T, clk *clock.Fake, rec *recorder, n int) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		rec.mu.Lock()
		up, ch := rec.allUp(n)(rec), rec.changed
		rec.mu.Unlock()
		if up {
			return
		}
		clk.Advance(time.Second)
		select {
		case <-ch:
		case <-time.After(100 * time.Millisecond): // the watcher is dialing: look again
		case <-deadline:
			t.Fatal("the watcher did not reconnect")
		}
	}
}

// create makes a folder in a seed's mailbox.
func (f *fixture) create(seed, mailbox string) {
	f.t.Helper()
	for _, s := range f.seeds {
		if s.Name == seed {
			c, err := loginPlain(context.Background(), s, nil)
			if err != nil {
				f.t.Fatal(err)
			}
			defer c.Close()
			if err := c.Create(mailbox, nil).Wait(); err != nil {
				f.t.Fatal(err)
			}
		}
	}
}
