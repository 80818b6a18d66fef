package gateway

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/sim"
	"github.com/certgate/certgate/store"
)

// A receiver that refuses one connection too many is not down: the
// connection the relay already has keeps delivering, and the mail queued
// for it must not be deferred with the refused one.
func TestRefusedExtraConnectionDefersNothingElse(t *testing.T) {
	b := startBooksRelay(t, []sim.Options{{Name: "gmail", Domains: []string{"gmail.com"}, MXHost: "gmail-smtp-in.l.google.com", MaxConnections: 1}},
		config.Retry{Schedule: []config.Duration{config.Duration(time.Hour)}, MaxAge: config.Duration(24 * time.Hour)}, 2)
	g := b.sims["gmail"]
	b.submit(t, []booksMessage{{from: "certificados@ca.example", class: "bulk", rcpts: []string{"first@gmail.com"}}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g.WaitFor(ctx, 1); err != nil {
		t.Fatal(err)
	}
	var wave []booksMessage
	for i := range 30 {
		wave = append(wave, booksMessage{from: "certificados@ca.example", class: "bulk", rcpts: []string{fmt.Sprintf("r%02d@gmail.com", i)}})
	}
	b.submit(t, wave)
	waitFor(t, "every recipient to be tried", 15*time.Second, func() bool {
		n := 0
		b.store.Pending(context.Background(), func(p store.Pending) error {
			if p.Attempts == 0 {
				n++
			}
			return nil
		})
		return n == 0
	})
	deferred := 0
	b.store.Pending(context.Background(), func(store.Pending) error { deferred++; return nil })
	st := g.Stats()
	if st.ConnectionsRefused == 0 {
		t.Fatal("the lane never opened a second connection; the test proves nothing")
	}
	if deferred > 0 {
		t.Fatalf("%d recipients deferred for an hour because %d extra connection(s) were refused, while one connection was delivering",
			deferred, st.ConnectionsRefused)
	}
}

// The DSN of mail that expired says certgate gave up (5.4.7) and quotes the
// receiver's last reply as it was given.
func TestExpiredDSNQuotesTheLastReply(t *testing.T) {
	full := func(from, rcpt string) *smtp.SMTPError {
		return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "mailbox full"}
	}
	b := startBooksRelay(t, []sim.Options{
		{Name: "gmail", Domains: []string{"gmail.com"}, MXHost: "gmail-smtp-in.l.google.com", Respond: full},
		{Name: "issuer", Domains: []string{"ca.example"}, MXHost: "mx.ca.example"},
	}, config.Retry{Schedule: []config.Duration{config.Duration(100 * time.Millisecond)}, MaxAge: config.Duration(time.Second)}, 1)
	b.submit(t, []booksMessage{{from: "certificados@ca.example", class: "bulk", rcpts: []string{"full@gmail.com"}}})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := b.sims["issuer"].WaitFor(ctx, 1); err != nil {
		t.Fatal(err)
	}
	dsn := string(b.sims["issuer"].Messages()[0].Data)
	for _, want := range []string{"Status: 5.4.7\r\n", "Diagnostic-Code: smtp; 452 4.2.2 mailbox full\r\n",
		"certgate gave up", "last answered:\r\n\r\n    452 4.2.2 mailbox full\r\n"} {
		if !strings.Contains(dsn, want) {
			t.Errorf("DSN without %q:\n%s", want, dsn)
		}
	}
}
