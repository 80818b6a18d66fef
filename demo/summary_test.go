package demo

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/certgate/certgate/sim"
)

// lines collects what the demo prints.
type lines struct{ strings.Builder }

func (l *lines) out(format string, a ...any) { fmt.Fprintf(&l.Builder, format+"\n", a...) }

func receivedCounts(counts map[string]int) []received {
	var got []received
	for _, p := range providers {
		got = append(got, received{name: p.name, stats: sim.Stats{Received: counts[p.name]}})
	}
	return got
}

func TestBooks(t *testing.T) {
	got := receivedCounts(map[string]int{"google": 10, "microsoft": 6, "yahoo": 3, "issuer": 1})
	for _, c := range []struct {
		accepted, queued int
		want             string
	}{
		{20, 0, "20 recipients accepted = 19 delivered + 1 bounced (one DSN each) + 0 queued: balanced"},
		{23, 3, "23 recipients accepted = 19 delivered + 1 bounced (one DSN each) + 3 queued: balanced"},
		{22, 0, "22 recipients accepted = 19 delivered + 1 bounced (one DSN each) + 0 queued: OFF BY 2"},
	} {
		var l lines
		printBooks(l.out, got, c.accepted, c.queued, -1)
		if !strings.Contains(l.String(), c.want) {
			t.Errorf("books for %d accepted, %d queued:\n%s\nwant %q", c.accepted, c.queued, l.String(), c.want)
		}
	}
}

// Seed copies are certgate's own: the books of the customers' recipients
// leave them out, and they have books of their own, queued ones too.
func TestBooksKeepSeedCopiesApart(t *testing.T) {
	got := receivedCounts(map[string]int{"google": 12, "microsoft": 6, "yahoo": 3, "issuer": 1})
	got[0].msgs = []sim.Message{{To: "cliente0000@gmail.com"}, {To: "seed.gmail@gmail.com"}, {To: "Seed.Gmail@gmail.com"}}
	got[2].msgs = []sim.Message{{To: "seed.yahoo@yahoo.com"}}
	for _, c := range []struct {
		accepted, queued, seedsMade int
		want                        string
	}{
		{19, 0, 3, `  books:      19 recipients accepted = 18 delivered + 1 bounced (one DSN each) + 0 queued: balanced
              + 3 seed copies, certgate's own: 3 delivered + 0 queued, not counted above
`},
		// The queue holds 2 customer copies and 2 seed copies.
		{21, 4, 5, `  books:      21 recipients accepted = 18 delivered + 1 bounced (one DSN each) + 2 queued: balanced
              + 5 seed copies, certgate's own: 3 delivered + 2 queued, not counted above
`},
		// The API did not say how many certgate made.
		{19, 0, -1, `  books:      19 recipients accepted = 18 delivered + 1 bounced (one DSN each) + 0 queued: balanced
              + 3 seed copies delivered, certgate's own, not counted above
`},
		// Seed copies counted as customers' would unbalance them.
		{22, 0, 3, `  books:      22 recipients accepted = 18 delivered + 1 bounced (one DSN each) + 0 queued: OFF BY 3
`},
	} {
		var l lines
		printBooks(l.out, got, c.accepted, c.queued, c.seedsMade)
		if !strings.HasPrefix(l.String(), c.want) {
			t.Errorf("books for %d accepted, %d queued, %d seed copies made:\n%s\nwant:\n%s", c.accepted, c.queued, c.seedsMade, l.String(), c.want)
		}
	}
}

// Each provider's line counts its customer copies and its seed copies
// apart; DKIM counts them all, since the receiver checked them all.
func TestDeliveriesCountSeedCopiesApart(t *testing.T) {
	got := receivedCounts(map[string]int{"google": 3, "microsoft": 12, "yahoo": 1, "issuer": 1})
	got[0].stats.DKIMPass = 3
	got[0].msgs = []sim.Message{{To: "cliente0000@gmail.com"}, {To: "seed.gmail@gmail.com"}, {To: "cliente0001@empresa.example"}}
	got[1].msgs = make([]sim.Message, 10, 12)
	got[1].msgs = append(got[1].msgs, sim.Message{To: "seed.outlook@outlook.com"}, sim.Message{To: "seed.outlook@outlook.com"})
	var l lines
	printDeliveries(l.out, got, 14, 15, false, false)
	for _, want := range []string{
		"  google         2 delivered + 1 seed copy,    DKIM verified at the receiver    3/3,",
		"  microsoft     10 delivered + 2 seed copies,  DKIM verified at the receiver    0/12,",
		"  issuer         1 delivered,                  DKIM verified at the receiver    0/1,",
		"  DKIM:       3 of 17 delivered copies verified at the receiving side (3 of them seed copies)",
	} {
		if !strings.Contains(l.String(), want) {
			t.Errorf("deliveries lack %q:\n%s", want, l.String())
		}
	}
}

func TestDeliveriesShowFaultsOnlyWhenAsked(t *testing.T) {
	got := receivedCounts(map[string]int{"google": 2, "issuer": 1})
	got[2].stats.Faults.Greylisted = 4
	for _, faults := range []bool{false, true} {
		var l lines
		printDeliveries(l.out, got, 2, 3, true, faults)
		text := l.String()
		if !strings.Contains(text, "accepted:   2 messages, 3 recipients") || !strings.Contains(text, "DKIM:       0 of 3 delivered copies") {
			t.Errorf("summary:\n%s", text)
		}
		if shown := strings.Contains(text, "faults:     yahoo      greylisted 4"); shown != faults {
			t.Errorf("with faults %v, the fault line shown is %v:\n%s", faults, shown, text)
		}
		if strings.Contains(text, "faults:     google") {
			t.Errorf("a provider without faults has a fault line:\n%s", text)
		}
	}
}

func TestWaitsSplitUrgentFromBulk(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	got := []received{{name: "google", msgs: []sim.Message{
		{To: "cliente0000@gmail.com", Received: t0.Add(2 * time.Second)},
		{To: "token00@gmail.com", Received: t0.Add(50 * time.Millisecond)},
		{To: "someone.else@gmail.com", Received: t0.Add(time.Hour)}, // not in the wave
	}}}
	acceptedAt := func(rcpt string) (time.Time, bool) { return t0, !strings.HasPrefix(rcpt, "someone") }
	var l lines
	printWaits(l.out, got, acceptedAt)
	for _, want := range []string{"bulk    p50 2s       p95 2s       max 2s", "urgent  p50 50ms     p95 50ms     max 50ms"} {
		if !strings.Contains(l.String(), want) {
			t.Errorf("waits lack %q:\n%s", want, l.String())
		}
	}
}

func TestPct(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i)*time.Second)
	}
	for p, want := range map[int]string{50: "50s", 95: "1m35s", 100: "1m40s"} {
		if got := pct(ds, p); got != want {
			t.Errorf("p%d = %s; want %s", p, got, want)
		}
	}
	if got := pct(nil, 50); got != "-" {
		t.Errorf("p50 of nothing = %s; want -", got)
	}
}

func TestQueueIDOf(t *testing.T) {
	m := sim.Message{Data: []byte("Received: from [127.0.0.1] (localhost)\r\n\tby relay.ca.example (certgate) with ESMTPSA id 06h4d73r823zc7kn6c1cjqxnaw;\r\n\tFri, 5 Dec 2026 14:30:15 +0000\r\nSubject: x\r\n\r\nbody\r\n")}
	if got := queueIDOf(m); got != "06h4d73r823zc7kn6c1cjqxnaw" {
		t.Errorf("queue id %q", got)
	}
	if got := queueIDOf(sim.Message{Data: []byte("Subject: x\r\n\r\n")}); got != "" {
		t.Errorf("queue id %q of a copy certgate did not relay", got)
	}
}

// The API read-back prints each recipient's state, with the token sent.
func TestShowMessage(t *testing.T) {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" || r.URL.Path != "/api/v1/messages/ID1" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		fmt.Fprint(w, `{"id": "ID1", "subject": "Voucher", "events": [{"kind": "accepted"}, {"kind": "delivered"}],
			"recipients": [{"address": "a@outlook.com", "state": "delivered", "provider": "outlook", "last_code": 250, "last_reply": "2.0.0 OK", "attempts": 1}]}`)
	}))
	defer api.Close()
	var l lines
	showMessage(l.out, api.URL, "tok", "ID1")
	showMessage(l.out, api.URL, "wrong", "ID1")
	want := `  GET /api/v1/messages/ID1 -> "Voucher", 2 events
    a@outlook.com                    delivered via outlook      after 1 attempt(s): 250 2.0.0 OK
  API answered 401 Unauthorized
`
	if l.String() != want {
		t.Errorf("printed:\n%s\nwant:\n%s", l.String(), want)
	}
}
