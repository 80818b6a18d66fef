package placement_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/certgate/certgate/clock"
	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/placement"
	"github.com/certgate/certgate/sim"
	"github.com/certgate/certgate/store"
	"github.com/emersion/go-imap/v2"
)

// On a server like Exchange Online's (no IDLE here, no SPECIAL-USE, a
// junk folder known only by its name), the watcher finds the junk folder
// by name, polls with NOOP, and reads Microsoft's verdicts.
func TestWatcherPollsWithoutIdle(t *testing.T) {
	clk := clock.NewFake(time.Now())
	f := &fixture{t: t, clk: clk}
	f.st = openStore(t)
	ms, err := sim.Start(sim.Options{Name: "outlook", Domains: []string{"outlook.com"}, MXHost: "outlook-com.olc.protection.outlook.com",
		IMAP: &sim.IMAPOptions{Accounts: map[string]string{"seed@outlook.com": "pw-o1"}, Junk: "Junk Email", NoSpecialUse: true, NoIdle: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer ms.Close()
	f.seeds = []config.SeedMailbox{{Name: "o1", Provider: "outlook", Address: "seed@outlook.com", Junk: "auto",
		IMAP: config.SeedIMAP{Addr: ms.IMAPAddr(), TLS: config.IMAPNoTLS, Username: "seed@outlook.com"}}}
	rec := newRecorder()
	w := placement.NewWatcher(placement.Options{
		Seeds: config.Seeds{Deadline: config.Duration(15 * time.Minute), After: config.SeedDelete, Mailboxes: f.seeds},
		Book:  f.st, Connect: loginPlain, Clock: clk, Observer: rec, Poll: 10 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	rec.wait(t, "up", rec.allUp(2))

	wave := f.send("wave")
	copy := strings.Replace(string(wave["o1"]), "Authentication-Results: mx.seeds.example;",
		"X-Forefront-Antispam-Report: CIP:192.0.2.1;CTRY:;LANG:es;SCL:5;SRV:;IPV:NLI;SFV:SPM;H:relay.ca.example;CAT:SPM;\r\n"+
			"X-Microsoft-Antispam-Mailbox-Delivery: ucf:0;jmr:0;auth:0;dest:J;ENG:(910001);\r\n"+
			"Authentication-Results: spf=none (sender IP is 192.0.2.1);", 1)
	if _, err := ms.Append("seed@outlook.com", "Junk Email", []byte(copy), time.Time{}); err != nil {
		t.Fatal(err)
	}
	// Nothing tells the watcher: it finds the copy at its next NOOP.
	advanceUntil(t, clk, rec, time.Second, rec.has("o1", store.FolderJunk, ""))
	p, err := f.st.Placements(context.Background(), store.PlacementQuery{Seed: "o1"})
	if err != nil || len(p) != 1 || p[0].Mailbox != "Junk Email" {
		t.Fatalf("placement %+v, %v", p, err)
	}
	for _, want := range []string{`"scl":5`, `"sfv":"SPM"`, `"dest":"junk"`, `"dmarc":"pass"`} {
		if !strings.Contains(string(p[0].Verdicts), want) {
			t.Errorf("verdicts %s lack %s", p[0].Verdicts, want)
		}
	}
}

// advanceUntil moves the fake clock on by step until cond holds: the
// watcher's poll and backoff timers run on it.
func advanceUntil(t *testing.T, clk *clock.Fake, rec *recorder, step time.Duration, cond func(*recorder) bool) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		rec.mu.Lock()
		ok, ch := cond(rec), rec.changed
		rec.mu.Unlock()
		if ok {
			return
		}
		clk.Advance(step)
		select {
		case <-ch:
		case <-time.After(100 * time.Millisecond): // a command in flight: look again
		case <-deadline:
			t.Fatal("timed out moving the clock on")
		}
	}
}

// When a folder's UIDVALIDITY changes, the UIDs read before name other
// messages: the watcher reads the folder again rather than wait above a
// last UID that the new numbering may never reach, and what it recorded
// before is not reported twice.
func TestWatcherUIDValidityChange(t *testing.T) {
	clk := clock.NewFake(time.Now())
	f := &fixture{t: t, clk: clk, st: openStore(t)}
	gs, err := sim.Start(sim.Options{Name: "google", Domains: []string{"gmail.com"}, MXHost: "gmail-smtp-in.l.google.com",
		IMAP: &sim.IMAPOptions{Accounts: map[string]string{"seed@gmail.com": "pw-g1"}, Junk: "[Gmail]/Spam"}})
	if err != nil {
		t.Fatal(err)
	}
	defer gs.Close()
	f.seeds = []config.SeedMailbox{{Name: "g1", Provider: "gmail", Address: "seed@gmail.com", Junk: "auto",
		IMAP: config.SeedIMAP{Addr: gs.IMAPAddr(), TLS: config.IMAPNoTLS, Username: "seed@gmail.com"}}}
	rec := newRecorder()
	w := placement.NewWatcher(placement.Options{
		Seeds: config.Seeds{Deadline: config.Duration(15 * time.Minute), After: config.SeedDelete, Mailboxes: f.seeds},
		Book:  f.st, Connect: loginPlain, Clock: clk, Observer: rec})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	rec.wait(t, "up", rec.allUp(2))

	// Three copies in the inbox: UIDs 1 to 3.
	var waves []map[string][]byte
	for i := range 3 {
		waves = append(waves, f.send(fmt.Sprintf("wave %d", i)))
		if _, err := gs.Append("seed@gmail.com", "INBOX", waves[i]["g1"], time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	rec.wait(t, "three found", func(r *recorder) bool { return len(r.placed) == 3 })
	// Someone empties the inbox, and the server recreates it: numbering
	// starts from 1 again, below the watcher's last UID (3). The watcher
	// is dropped with BYE and reconnects.
	c, err := loginPlain(context.Background(), f.seeds[0], nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Store(imap.SeqSet{imap.SeqRange{Start: 1, Stop: 0}}, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true,
		Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Expunge().Close(); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if _, err := gs.ResetUIDValidity("seed@gmail.com", "INBOX"); err != nil {
		t.Fatal(err)
	}
	advanceUntil(t, clk, rec, time.Second, func(r *recorder) bool { return r.downs > 0 && r.allUp(2)(r) })
	// The next copy is UID 1 under the new UIDVALIDITY: a watcher that
	// kept reading above UID 3 would never see it.
	wave := f.send("after the reset")
	uid, err := gs.Append("seed@gmail.com", "INBOX", wave["g1"], time.Time{})
	if err != nil || uid != 1 {
		t.Fatalf("the copy after the reset has UID %d (%v), want 1", uid, err)
	}
	rec.wait(t, "the copy after the reset", func(r *recorder) bool { return len(r.placed) >= 4 })
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.placed) != 4 {
		t.Errorf("placements reported %v; want each copy once", rec.placed)
	}
}
