package placement_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/certgate/certgate/clock"
	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/placement"
	"github.com/certgate/certgate/sim"
	"github.com/certgate/certgate/store"
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
