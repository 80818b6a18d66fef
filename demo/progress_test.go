package demo

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/certgate/certgate/sim"
)

// fakeGateway stands in for certgate where only the queue length is read.
type fakeGateway struct{ queued int }

func (g fakeGateway) SMTPAddr() string     { return "127.0.0.1:1" }
func (g fakeGateway) HTTPURL() string      { return "http://127.0.0.1:1" }
func (g fakeGateway) Queued() int          { return g.queued }
func (g fakeGateway) Stop(context.Context) {}

func startTestProviders(t *testing.T) []*sim.Provider {
	t.Helper()
	sims, _, err := startProviders(nil, false, seedPasswords())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeProviders(sims) })
	return sims
}

// deliverTo stores one copy per recipient at its provider, as certgate
// would, and waits until the provider has it.
func deliverTo(t *testing.T, sims []*sim.Provider, rcpts ...string) {
	t.Helper()
	for _, r := range rcpts {
		deliver(t, named(sims, providerOf(r)), r, "Subject: x\r\n\r\nx\r\n")
	}
}

func deliver(t *testing.T, p *sim.Provider, rcpt, msg string) {
	t.Helper()
	n := p.Stats().Received
	c, err := smtp.Dial(p.Addr()) // plaintext: the providers here offer no STARTTLS
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SendMail("no-reply@ca.example", []string{rcpt}, strings.NewReader(msg)); err != nil {
		t.Fatalf("delivering to %s: %v", rcpt, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.WaitFor(ctx, n+1); err != nil {
		t.Fatalf("%s never stored the copy for %s: %v", p.Name(), rcpt, err)
	}
}

// Customer copies are counted per provider, seed copies apart: all must
// land before the watch ends.
func TestDeliveredSoFar(t *testing.T) {
	sims := startTestProviders(t)
	expected := map[string]int{"google": 2, "microsoft": 1, "issuer": 1}
	deliverTo(t, sims, "a@gmail.com", "b@outlook.com", "dsn@ca.example", "seed.gmail@gmail.com")
	line, landed := deliveredSoFar(sims, expected, 2)
	if line != "google 1/2  microsoft 1/1  yahoo 0/0  issuer 1/1  seed copies 1/2" || landed {
		t.Errorf("so far %q, landed %v; want google 1/2, a seed copy apart, and not landed", line, landed)
	}
	deliverTo(t, sims, "c@empresa.example")
	if line, landed = deliveredSoFar(sims, expected, 2); landed {
		t.Errorf("so far %q: landed without the second seed copy", line)
	}
	deliverTo(t, sims, "SEED.Outlook@outlook.com")
	if line, landed = deliveredSoFar(sims, expected, 2); !landed || line != "google 2/2  microsoft 1/1  yahoo 0/0  issuer 1/1  seed copies 2/2" {
		t.Errorf("so far %q, landed %v", line, landed)
	}
	// Seed copies where none were expected are shown too.
	if line, _ := deliveredSoFar(sims, expected, 0); !strings.HasSuffix(line, "seed copies 2/0") {
		t.Errorf("so far %q", line)
	}
	if line, _ := deliveredSoFar(startTestProviders(t), expected, 0); strings.Contains(line, "seed") {
		t.Errorf("so far %q: seed copies where none are expected or came", line)
	}
}

// deliverSeedCopies stores the seed copies of a wave's seeded messages.
func deliverSeedCopies(t *testing.T, sims []*sim.Provider, w wave) {
	t.Helper()
	for range seedings(len(w.bulk)) {
		for _, s := range seedMailboxes() {
			deliverTo(t, sims, s.address)
		}
	}
}

// settlingGateway's queue still holds a copy the receiver has already
// stored, until it has been asked once.
type settlingGateway struct {
	fakeGateway
	asked *int
}

func (g settlingGateway) Queued() int {
	*g.asked++
	if *g.asked == 1 {
		return 1
	}
	return 0
}

// Every copy has landed but one delivery is not recorded yet: the watch
// goes on until the queue is empty, so the books it closes balance.
func TestWatchProgressWaitsForTheLastRecord(t *testing.T) {
	sims := startTestProviders(t)
	w := testWave(t, 2, 0)
	for _, m := range w.all() {
		for _, r := range m.rcpts {
			deliverTo(t, sims, r)
		}
	}
	deliverSeedCopies(t, sims, w)
	submitted := make(chan error, 1)
	submitted <- nil
	var l lines
	asked := 0
	if err := watchProgress(context.Background(), l.out, time.Now(), submitted, newSubmitter("", ""), w, sims, settlingGateway{asked: &asked}); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(l.String(), "\n"); n != 2 || !strings.HasSuffix(l.String(), "queued: 0\n") {
		t.Errorf("printed %d lines, want the watch to end on an empty queue:\n%s", n, l.String())
	}
}

// Once the wave is submitted and every copy has landed, one line is
// printed and the watch ends without waiting for the next second.
func TestWatchProgressEndsWhenEverythingLanded(t *testing.T) {
	sims := startTestProviders(t)
	w := testWave(t, 8, 0)
	for _, m := range w.all() {
		for _, r := range m.rcpts {
			if r != bounceAddress {
				deliverTo(t, sims, r)
			}
		}
	}
	deliverTo(t, sims, "dsn@ca.example")
	deliverSeedCopies(t, sims, w)
	submitted := make(chan error, 1)
	submitted <- nil
	var l lines
	if err := watchProgress(context.Background(), l.out, time.Now(), submitted, newSubmitter("", ""), w, sims, fakeGateway{}); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(l.String(), "\n"); n != 1 || !strings.Contains(l.String(), "delivered: google 4/4  microsoft 3/3  yahoo 1/1  issuer 1/1  seed copies 3/3  queued: 0") {
		t.Errorf("printed %d lines:\n%s", n, l.String())
	}
}

func TestWatchProgressFailsWithTheSubmission(t *testing.T) {
	sims := startTestProviders(t)
	w := testWave(t, 2, 0)
	refused := errors.New("submitting: 535 authentication failed")
	submitted := make(chan error, 1)
	submitted <- refused
	var l lines
	if err := watchProgress(context.Background(), l.out, time.Now(), submitted, newSubmitter("", ""), w, sims, fakeGateway{}); !errors.Is(err, refused) {
		t.Errorf("watch ended with %v; want the submission's error", err)
	}
}

// Interrupting the demo ends the watch after the line it is printing.
func TestWatchProgressStopsWithContext(t *testing.T) {
	sims := startTestProviders(t)
	w := testWave(t, 2, 0)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var l lines
	if err := watchProgress(ctx, l.out, time.Now(), make(chan error), newSubmitter("", ""), w, sims, fakeGateway{queued: 2}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(l.String(), "accepted   0/2  delivered: google 0/2  microsoft 0/0  yahoo 0/0  issuer 0/0  seed copies 0/3  queued: 2") {
		t.Errorf("printed:\n%s", l.String())
	}
}
