package demo

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certgate/certgate/sim"
)

var t0 = time.Date(2026, 12, 5, 14, 30, 0, 0, time.UTC)

func at(d time.Duration) *time.Time {
	t := t0.Add(d)
	return &t
}

func ratio(f float64) *float64 { return &f }

// The placement section reads as a person wants it: one row per
// provider in the setup's order with the reason next to it, the folders
// the columns lack, why a lane's copies went to junk, how soon they were
// found, and what Microsoft wrote into a junked copy.
func TestPrintPlacement(t *testing.T) {
	rep := placementReport{
		Providers: []providerPlacement{ // as the API orders them, by name
			{Provider: "gmail", Total: 10, Folders: map[string]int{"inbox": 9, "tab:promotions": 1}, InboxRate: ratio(0.9)},
			{Provider: "outlook", Total: 10, Folders: map[string]int{"inbox": 4, "junk": 6}, InboxRate: ratio(0.4)},
			{Provider: "yahoo", Total: 10, Folders: map[string]int{"inbox": 6, "junk": 3, "missing": 1}, InboxRate: ratio(2.0 / 3)},
		},
		Recent: []seedCopy{
			{Seed: "outlook-1", Provider: "outlook", Folder: "inbox", MessageID: "M1", DeliveredAt: at(0), DetectedAt: at(2 * time.Millisecond),
				Verdicts: &verdicts{SPF: "none", DKIM: "pass", DMARC: "pass", SCL: 1, SFV: "NSPM", CAT: "NONE", Dest: "inbox"}},
			{Seed: "outlook-1", Provider: "outlook", Folder: "junk", MessageID: "M2", DeliveredAt: at(time.Second), DetectedAt: at(time.Second + 1200*time.Microsecond),
				Verdicts: &verdicts{SPF: "none", DKIM: "pass", DMARC: "pass", SCL: 5, SFV: "SPM", CAT: "SPM", BCL: 6, Dest: "junk"}},
			// Found a moment before certgate recorded the receiver's 250.
			{Seed: "gmail-1", Provider: "gmail", Folder: "inbox", MessageID: "M3", DeliveredAt: at(0), DetectedAt: at(-time.Millisecond),
				Verdicts: &verdicts{DKIM: "pass", DMARC: "pass", SPF: "none", SCL: -1, BCL: -1}},
			{Seed: "yahoo-1", Provider: "yahoo", Folder: "missing", MessageID: "M4", DeliveredAt: at(0)},
		},
	}
	var l lines
	printPlacement(l.out, rep, time.Second)
	want := `
placement (seed copies, watched over IMAP IDLE)
  provider   copies  inbox  junk  missing  inbox rate   why
  gmail          10      9     0        0         90%   Google files everything in the inbox
  outlook        10      4     6        0         40%   Microsoft throttles above 25/s (451 4.7.650) and junks bulk while pushed, until calm for 3s
  yahoo          10      6     3        1         67%   Yahoo junks every third copy it stores
  and: gmail 1 tab:promotions
  outlook: its lane sends 15/s, under Microsoft's 25/s; but microsoft365 sends 20/s to the same servers,
           so together (35/s) they pushed Microsoft, which junked bulk for a while: see the closed loop below.
  found in the seed mailboxes a median 1.2ms after the receiver's 250 (max 2ms, 3 copies; IMAP IDLE on loopback)
  what Microsoft wrote into a copy it filed in junk: dkim=pass dmarc=pass spf=none, SCL 5 (SFV SPM, CAT SPM), BCL 6, dest junk
  (GET /api/v1/messages/M2 shows it with its message; GET /api/v1/placement has it all)
`
	if l.String() != want {
		t.Errorf("printed:\n%s\nwant:\n%s", l.String(), want)
	}
}

// Copies still pending when the wait ends are said to be so, those not
// delivered yet included; without a Microsoft copy there is no verdict.
func TestPrintPlacementPending(t *testing.T) {
	rep := placementReport{Providers: []providerPlacement{
		{Provider: "", Total: 1, Folders: map[string]int{"pending": 1}},
		{Provider: "gmail", Total: 2, Folders: map[string]int{"inbox": 1, "pending": 1}, InboxRate: ratio(1)},
		{Provider: "outlook", Total: 1, Folders: map[string]int{"pending": 1}},
	}}
	var l lines
	printPlacement(l.out, rep, 20*time.Second)
	want := `
placement (seed copies, watched over IMAP IDLE)
  provider   copies  inbox  junk  missing  inbox rate   why
  gmail           2      1     0        0        100%   Google files everything in the inbox
  outlook         1      0     0        0           -   Microsoft throttles above 25/s (451 4.7.650) and junks bulk while pushed, until calm for 3s
  (queued)        1      0     0        0           -   
  3 copies still pending after 20s: not found yet (a copy not found by seeds.deadline is missing)
`
	if l.String() != want {
		t.Errorf("printed:\n%s\nwant:\n%s", l.String(), want)
	}
}

// The wait asks the API with the demo's token until no copy is pending,
// and gives up when its time is up.
func TestWaitPlacement(t *testing.T) {
	var asked atomic.Int32
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" || r.URL.Path != "/api/v1/placement" {
			http.Error(w, `{"error": "no"}`, http.StatusUnauthorized)
			return
		}
		folders := `{"inbox": 3}`
		if asked.Add(1) < 3 {
			folders = `{"inbox": 2, "pending": 1}`
		}
		fmt.Fprintf(w, `{"providers": [{"provider": "gmail", "total": 3, "folders": %s, "inbox_rate": 1}], "recent": []}`, folders)
	}))
	defer api.Close()

	rep, _, err := waitPlacement(context.Background(), api.URL, "tok", 3, 0)
	if err != nil || rep.copies() != 3 || rep.pending() != 1 || asked.Load() != 1 {
		t.Errorf("without time to wait: %+v, %v after %d questions; want the first answer", rep, err, asked.Load())
	}
	asked.Store(0)
	rep, waited, err := waitPlacement(context.Background(), api.URL, "tok", 3, time.Minute)
	if err != nil || rep.pending() != 0 || rep.Providers[0].Folders["inbox"] != 3 || asked.Load() != 3 {
		t.Errorf("%+v, %v after %d questions; want all found at the third", rep, err, asked.Load())
	}
	if waited < 2*placementPoll || waited > 10*time.Second {
		t.Errorf("waited %s for three answers %s apart", waited, placementPoll)
	}
	// Fewer copies than the wave should have made: keep asking.
	asked.Store(0)
	if rep, _, _ := waitPlacement(context.Background(), api.URL, "tok", 4, 3*placementPoll); asked.Load() < 3 || rep.copies() != 3 {
		t.Errorf("asked %d times for 4 copies of 3", asked.Load())
	}
	if _, _, err := waitPlacement(context.Background(), api.URL, "wrong", 3, time.Minute); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("with a wrong token: %v", err)
	}
}

// The filters' rules in words, as the setup and the placement print them.
func TestRules(t *testing.T) {
	for _, c := range []struct {
		p    provider
		want string
	}{
		{providers[0], "files everything in the inbox"},
		{providers[1], "throttles above 25/s (451 4.7.650) and junks bulk while pushed, until calm for 3s; it counts contoso.example and outlook.com together"},
		{provider{domains: providers[1].domains, filing: sim.Filing{JunkAboveRate: 25}},
			"junks what arrives faster than 25/s, counting contoso.example and outlook.com together"},
		{provider{distrust: &sim.Distrust{ThrottleAbove: 2, Calm: time.Minute}}, "throttles above 2/s (451 4.7.650) and junks what it takes while pushed, until calm for 1m0s"},
		{providers[2], "junks every third copy it stores"},
		{provider{filing: sim.Filing{JunkEvery: 1, BulkOnly: true, JunkUnlessDKIMPass: true}}, "junks every bulk copy, and junks what fails DKIM"},
		{provider{filing: sim.Filing{JunkAboveRate: 5, RateWindow: 10 * time.Second, MoveAfter: time.Minute, MoveEvery: 2}},
			"junks what arrives faster than 5/s over 10s, and moves every second copy it filed in the inbox to junk 1m0s later"},
		{provider{filing: sim.Filing{JunkEvery: 12}}, "junks every 12th copy it stores"},
		{provider{filing: sim.Filing{JunkEvery: 22}}, "junks every 22nd copy it stores"},
	} {
		if got := c.p.rule() + c.p.scope(); got != c.want {
			t.Errorf("rule %q; want %q", got, c.want)
		}
	}
}

// A junked lane whose provider hears no other lane needs no note.
func TestSharedRateOnlyWhereLanesShare(t *testing.T) {
	if n := sharedRate("gmail", &providers[0]); n != nil {
		t.Errorf("note for Google: %q", n)
	}
	if n := sharedRate("microsoft365", &providers[1]); len(n) != 2 || !strings.HasPrefix(n[0], "microsoft365: its lane sends 20/s, under Microsoft's 25/s; but outlook sends 15/s") {
		t.Errorf("note for microsoft365: %q", n)
	}
}

func TestFine(t *testing.T) {
	for d, want := range map[time.Duration]string{
		1234 * time.Microsecond:  "1.2ms",
		0:                        "0s",
		340 * time.Millisecond:   "340ms",
		2345 * time.Millisecond:  "2.35s",
		12345 * time.Millisecond: "12.3s",
	} {
		if got := fine(d); got != want {
			t.Errorf("fine(%s) = %s; want %s", d, got, want)
		}
	}
}
