package sim

import (
	"errors"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// bulkMessage looks bulk to the receiver by its List-Unsubscribe field.
func bulkMessage(subject string) string {
	return "List-Unsubscribe: <mailto:unsubscribe@issuer.example>\r\n" + message(subject, "Your certificate is ready.")
}

// transact runs one transaction on c and resets it after a refusal, so the
// connection stays usable.
func transact(t *testing.T, c *smtp.Client, to []string, msg string) error {
	t.Helper()
	err := sendOn(c, "bounce@issuer.example", to, msg)
	if err != nil {
		if rerr := c.Reset(); rerr != nil {
			t.Fatalf("RSET after %v: %v", err, rerr)
		}
	}
	return err
}

func mustDial(t *testing.T, p *Provider) *smtp.Client {
	t.Helper()
	c, err := dial(p.Addr(), "relay.issuer.example", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func wantPushed(t *testing.T, p *Provider, pushed bool, since time.Time) {
	t.Helper()
	if got, at := p.Distrusted(); got != pushed || !at.Equal(since) {
		t.Fatalf("Distrusted() = %v, %v; want %v, %v", got, at, pushed, since)
	}
}

func TestDistrustOutlook(t *testing.T) {
	clock := newClock()
	t0 := clock.Now()
	p := gmailIMAP(t, Options{
		Now:      clock.Now,
		Filing:   Filing{Microsoft: true},
		Distrust: &Distrust{ThrottleAbove: 2, Calm: time.Minute, BulkOnly: true},
	}, IMAPOptions{Junk: "Junk Email", NoSpecialUse: true})
	wantPushed(t, p, false, time.Time{})
	c := mustDial(t, p)
	ok := func(msg string) {
		t.Helper()
		if err := transact(t, c, []string{seed}, msg); err != nil {
			t.Fatal(err)
		}
	}

	// Two recipients in a second are welcome; the third is refused the way
	// Outlook.com refuses, and go-smtp's client parses the enhanced code.
	ok(bulkMessage("one"))
	ok(bulkMessage("two"))
	err := transact(t, c, []string{seed}, bulkMessage("three"))
	wantCode(t, err, 451, smtp.EnhancedCode{4, 7, 650})
	var se *smtp.SMTPError
	if errors.As(err, &se); se.Message != "The mail server [127.0.0.1] has been temporarily rate limited due to IP reputation. "+
		"For e-mail delivery information, see https://aka.ms/postmaster (S775)" {
		t.Fatalf("reply text %q", se.Message)
	}
	wantPushed(t, p, true, t0)
	// Pushing on keeps it refusing: refused recipients count as arrivals.
	wantCode(t, transact(t, c, []string{seed}, bulkMessage("four")), 451, smtp.EnhancedCode{4, 7, 650})

	// Below the rate again, it accepts, but files bulk in junk; a
	// transactional mail still reaches the inbox.
	clock.Add(time.Second)
	ok(bulkMessage("five"))
	ok(message("token", "Your code is 123456."))

	// A new excess within the push extends it without restarting it.
	clock.Add(29 * time.Second)
	ok(bulkMessage("six"))
	ok(bulkMessage("seven"))
	wantCode(t, transact(t, c, []string{seed}, bulkMessage("eight")), 451, smtp.EnhancedCode{4, 7, 650})
	lastOver := clock.Now()

	clock.Add(time.Minute - time.Millisecond)
	wantPushed(t, p, true, t0)
	ok(bulkMessage("nine"))

	// A minute after the last refusal it trusts again: bulk is filed in the
	// inbox.
	clock.Add(time.Millisecond)
	wantPushed(t, p, false, lastOver.Add(time.Minute))
	ok(bulkMessage("ten"))
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}

	want := []string{"INBOX", "INBOX", "Junk Email", "INBOX", "Junk Email", "Junk Email", "Junk Email", "INBOX"}
	if got := folders(p); !slices.Equal(got, want) {
		t.Fatalf("folders %v, want %v", got, want)
	}
	s := p.Stats()
	if s.Throttled != 3 || s.JunkedWhilePushed != 4 || s.Rejected != 0 || s.RateLimited != 0 || s.Received != 8 {
		t.Fatalf("stats %+v", s)
	}

	im := login(t, p, nil)
	if in, junk := count(t, im, "INBOX"), count(t, im, "Junk Email"); in != 4 || junk != 4 {
		t.Fatalf("IMAP: INBOX %d, Junk Email %d; want 4 and 4", in, junk)
	}
	junked := headers(t, im, "Junk Email")
	if !strings.Contains(junked[0], "dest:J;") || !strings.Contains(junked[0], "Subject: five\r\n") {
		t.Fatalf("junked copy's header %q", junked[0])
	}
}

func TestDistrustEveryCopyAndReply(t *testing.T) {
	clock := newClock()
	t0 := clock.Now()
	busy := &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 500}, Message: "Server busy. Please try again later. (AS761)"}
	d := &Distrust{ThrottleAbove: 1, Window: 2 * time.Second, Reply: busy}
	p := start(t, Options{Name: "outlook", Domains: []string{"outlook.com"}, MXHost: outlookMX, Now: clock.Now, Distrust: d})
	if d.Calm != 0 {
		t.Fatal("Start wrote its defaults into the caller's Distrust")
	}
	c := mustDial(t, p)

	// A recipient the provider does not host is refused before it counts.
	wantCode(t, transact(t, c, []string{"x@elsewhere.example"}, message("relay", "x")), 550, smtp.EnhancedCode{5, 7, 1})
	if err := transact(t, c, []string{"a@outlook.com"}, message("a", "x")); err != nil {
		t.Fatal(err)
	}
	// The third in the window is refused with the configured reply; the
	// second, accepted in the same transaction, is stored after the push
	// began and lands in junk.
	if err := c.Mail("bounce@issuer.example", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("b@outlook.com", nil); err != nil {
		t.Fatal(err)
	}
	err := c.Rcpt("c@outlook.com", nil)
	wantCode(t, err, 451, smtp.EnhancedCode{4, 7, 500})
	if se := (*smtp.SMTPError)(nil); !errors.As(err, &se) || se.Message != busy.Message {
		t.Fatalf("reply %v", err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(message("b", "x")))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	// Without BulkOnly, every copy accepted while pushed goes to junk.
	clock.Add(2 * time.Second)
	if err := transact(t, c, []string{"d@outlook.com"}, message("token", "x")); err != nil {
		t.Fatal(err)
	}
	// The default calm period is ten minutes after the refusal.
	clock.Add(10*time.Minute - 2*time.Second)
	wantPushed(t, p, false, t0.Add(10*time.Minute))
	if err := transact(t, c, []string{"e@outlook.com"}, message("token", "x")); err != nil {
		t.Fatal(err)
	}
	if got := folders(p); !slices.Equal(got, []string{"INBOX", "Junk", "Junk", "INBOX"}) {
		t.Fatalf("folders %v", got)
	}
	if s := p.Stats(); s.Throttled != 1 || s.JunkedWhilePushed != 2 || s.Rejected != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestDistrustFloodBounded(t *testing.T) {
	clock := newClock()
	t0 := clock.Now()
	p := start(t, Options{Name: "outlook", Domains: []string{"outlook.com"}, MXHost: outlookMX, Now: clock.Now,
		Distrust: &Distrust{ThrottleAbove: 5, Calm: time.Minute}})
	ring := func() (*time.Time, int, int) {
		p.mu.Lock()
		defer p.mu.Unlock()
		return &p.distrust.ring[0], len(p.distrust.ring), cap(p.distrust.ring)
	}
	first, n, c := ring()
	if n != 6 || c != 6 {
		t.Fatalf("window holds %d (cap %d), want 6", n, c)
	}

	// Four connections flood 1000 recipients at one instant: exactly five
	// get through, whatever the order.
	const senders, each = 4, 250
	var wg sync.WaitGroup
	accepted := make([]int, senders)
	errs := make(chan error, senders)
	for i := range senders {
		wg.Go(func() {
			cl, err := dial(p.Addr(), "relay.issuer.example", nil)
			if err != nil {
				errs <- err
				return
			}
			defer cl.Close()
			if err := cl.Mail("bounce@issuer.example", nil); err != nil {
				errs <- err
				return
			}
			for range each {
				err := cl.Rcpt("flood@outlook.com", nil)
				var se *smtp.SMTPError
				switch {
				case err == nil:
					accepted[i]++
				case !errors.As(err, &se) || se.EnhancedCode != (smtp.EnhancedCode{4, 7, 650}):
					errs <- err
					return
				}
			}
			if accepted[i] == 0 {
				cl.Reset()
				return
			}
			w, err := cl.Data()
			if err == nil {
				w.Write([]byte(message("flood", "x")))
				err = w.Close()
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	total := 0
	for _, a := range accepted {
		total += a
	}
	if s := p.Stats(); total != 5 || s.Received != 5 || s.Throttled != senders*each-5 || s.JunkedWhilePushed != 5 {
		t.Fatalf("accepted %d; stats %+v", total, p.Stats())
	}
	if f, n, c := ring(); f != first || n != 6 || c != 6 {
		t.Fatalf("the window grew: len %d, cap %d, same array %v", n, c, f == first)
	}
	wantPushed(t, p, true, t0)

	// A steady sender just above the rate (one every 190 ms) gets five
	// through, then is refused as long as it keeps that pace, since its
	// refused attempts count too.
	clock.Add(time.Second)
	cl := mustDial(t, p)
	refused := 0
	var lastOver time.Time
	for range 100 {
		if err := transact(t, cl, []string{"steady@outlook.com"}, message("steady", "x")); err != nil {
			wantCode(t, err, 451, smtp.EnhancedCode{4, 7, 650})
			refused++
			lastOver = clock.Now()
		}
		clock.Add(190 * time.Millisecond)
	}
	if refused != 95 {
		t.Fatalf("%d of 100 refused at 5.26/s, want 95", refused)
	}
	// At the rate (one every 200 ms) it is never refused, and the push
	// ends a minute after the last refusal.
	clock.Add(time.Second)
	for range 400 {
		if err := transact(t, cl, []string{"steady@outlook.com"}, message("steady", "x")); err != nil {
			t.Fatalf("refused at the rate, %v after the last refusal: %v", clock.Now().Sub(lastOver), err)
		}
		clock.Add(200 * time.Millisecond)
	}
	wantPushed(t, p, false, lastOver.Add(time.Minute))
	if f, n, c := ring(); f != first || n != 6 || c != 6 {
		t.Fatalf("the window grew: len %d, cap %d", n, c)
	}
	msgs := p.Messages()
	last := msgs[len(msgs)-1]
	if len(msgs) != 410 || last.Folder != "INBOX" {
		t.Fatalf("%d copies, the last in %s", len(msgs), last.Folder)
	}
	for _, m := range msgs {
		if (m.Folder == "Junk") != m.Received.Before(lastOver.Add(time.Minute)) {
			t.Fatalf("copy received at %v filed in %s; push ended at %v", m.Received, m.Folder, lastOver.Add(time.Minute))
		}
	}

	// Reset forgets the push and the window.
	p.Reset()
	wantPushed(t, p, false, time.Time{})
	if _, n, _ := ring(); n != 6 {
		t.Fatalf("window of %d after Reset", n)
	}
}

func TestDistrustOptions(t *testing.T) {
	for _, d := range []Distrust{
		{},
		{ThrottleAbove: -1},
		{ThrottleAbove: math.NaN()},
		{ThrottleAbove: math.Inf(1)},
		{ThrottleAbove: 1, Window: -time.Second},
		{ThrottleAbove: 1, Calm: -time.Second},
		{ThrottleAbove: 0.5}, // a one-second window holds no message
		{ThrottleAbove: 1e6}, // too many to remember
		{ThrottleAbove: 1, Reply: &smtp.SMTPError{Code: 250, Message: "ok"}},
	} {
		if p, err := Start(Options{Distrust: &d}); err == nil {
			p.Close()
			t.Errorf("Start accepted %+v", d)
		}
	}
	for _, d := range []Distrust{{ThrottleAbove: 0.5, Window: 2 * time.Second}, {ThrottleAbove: 0.7, Window: 10 * time.Second}} {
		p := start(t, Options{Distrust: &d})
		p.mu.Lock()
		n := len(p.distrust.ring)
		p.mu.Unlock()
		if want := int(d.ThrottleAbove*d.Window.Seconds()+0.5) + 1; n != want {
			t.Errorf("%+v: window of %d, want %d", d, n, want)
		}
	}
	p := start(t, Options{})
	wantPushed(t, p, false, time.Time{})
}
