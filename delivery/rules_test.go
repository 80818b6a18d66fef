package delivery

import (
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/store"
)

// A 550 5.7.26 (the sender fails authentication) is the tenant's DNS, not
// the lane: a rule like Gmail's built-in one retries the message instead
// of bouncing it (no DSN) and holds that tenant's bulk for an hour, while
// its transactional mail and other tenants' bulk keep flowing; when the
// hour ends, the held mail goes without anything arriving to wake it.
// (The lane is unthrottled, so the fake clock moves only for the rule.)
func TestAuthenticationFailureSuspendsTheTenantsBulk(t *testing.T) {
	var refused atomic.Bool
	sims := defaultSims()
	sims[0].Respond = func(_, rcpt string) *smtp.SMTPError {
		if rcpt == "a@empresa.example" && refused.CompareAndSwap(false, true) {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 26},
				Message: "This mail has been blocked because the sender is unauthenticated."}
		}
		return nil
	}
	auth := config.BuiltinRules("gmail")[2]
	if auth.Name != "gmail-authentication" {
		t.Fatalf("built-in rule %s, want gmail-authentication", auth.Name)
	}
	e := newQEnv(t, qopts{sims: sims, fakeClock: true, providers: []config.Provider{
		{Name: "google", MXSuffixes: []string{"gmail-smtp-in.l.google.com"}, Rules: []config.ReplyRule{auth}},
		{Name: "issuer", MXSuffixes: []string{"mx.ca.example"}}}})
	msg := sample(t, "01-es-download-link-qp.eml")
	e.enqueue("certificados@ca.example", []string{"a@empresa.example"}, config.ClassBulk, msg)
	first := e.waitAttempts(1)[0]
	if first.State != store.StateQueued || first.Code != 550 {
		t.Fatalf("first attempt %+v, want 550 deferred (not bounced)", first)
	}

	e.enqueue("certificados@ca.example", []string{"b@empresa.example"}, config.ClassBulk, msg)
	e.enqueue("certificados@ca.example", []string{"c@empresa.example"}, config.ClassTransactional, msg)
	e.enqueueAs("portal", "certificados@ca.example", []string{"d@empresa.example"}, config.ClassBulk, msg)
	got := e.waitAttempts(2)
	if addrs := delivered(e, got); !slices.Equal(addrs, []string{"c@empresa.example", "d@empresa.example"}) {
		t.Fatalf("while issuer's bulk is held, delivered %v; want its token and portal's bulk only", addrs)
	}
	// a's retry falls due within the hour: still held.
	e.advance(2*time.Minute, 1)
	select {
	case a := <-e.attempts:
		t.Fatalf("attempt %+v during the suspension", a)
	default:
	}
	e.clock.Advance(time.Hour)
	if addrs := delivered(e, e.waitAttempts(2)); !slices.Equal(addrs, []string{"a@empresa.example", "b@empresa.example"}) {
		t.Fatalf("after the suspension delivered %v; want a and b", addrs)
	}
	if n := len(e.sims["issuer"].Messages()); n != 0 {
		t.Fatalf("%d DSNs sent; the refusal was retried, not bounced", n)
	}
}

// delivered lists the addresses of delivered attempts, sorted.
func delivered(e *qenv, as []store.Attempt) []string {
	e.t.Helper()
	var out []string
	for _, a := range as {
		if a.State != store.StateDelivered {
			e.t.Fatalf("attempt %+v, want delivered", a)
		}
		for _, r := range e.view(a.MessageID).Recipients {
			if r.ID == a.RecipientID {
				out = append(out, r.Address)
			}
		}
	}
	slices.Sort(out)
	return out
}

// An operator's pause holds every message of the lane, transactional too,
// queued; resuming sends them at once, without waiting for new mail.
func TestPausedLaneHoldsEverythingUntilResumed(t *testing.T) {
	e := newQEnv(t, qopts{fakeClock: true})
	lane, ok := e.policy.ProviderLane("google")
	if !ok {
		t.Fatal("no google lane")
	}
	lane.Pause("the receiver asked us to stop")
	msg := sample(t, "04-pt-token-transactional.eml")
	e.enqueue("certificados@ca.example", []string{"a@empresa.example"}, config.ClassTransactional, msg)
	e.enqueue("certificados@ca.example", []string{"b@empresa.example"}, config.ClassBulk, msg)
	// Mail for another lane goes: the queue is not stuck, only that lane.
	e.enqueue("certificados@ca.example", []string{"x@ca.example"}, config.ClassBulk, msg)
	if got := delivered(e, e.waitAttempts(1)); !slices.Equal(got, []string{"x@ca.example"}) {
		t.Fatalf("delivered %v while google is paused; want the other lane's only", got)
	}
	ready := e.queue.Ready("google")
	if ready[config.ClassTransactional]["issuer"] != 1 || ready[config.ClassBulk]["issuer"] != 1 {
		t.Fatalf("ready while paused: %v, want one of each class", ready)
	}
	if st := lane.State(); st.Name != "paused" {
		t.Fatalf("state %+v, want paused", st)
	}
	lane.Resume("cleared")
	e.queue.Wake("google")
	if got := delivered(e, e.waitAttempts(2)); !slices.Equal(got, []string{"a@empresa.example", "b@empresa.example"}) {
		t.Fatalf("after resuming delivered %v", got)
	}
}
