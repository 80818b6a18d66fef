package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/membudget"

	"github.com/certgate/certgate/metrics"
	"github.com/certgate/certgate/store"
)

// Spool is what the relay needs of the store: to make a message durable.
type Spool interface {
	Enqueue(ctx context.Context, m store.Message, contents [][]byte, rcpts []store.NewRecipient) ([]int64, error)
}

// Handoff takes the copies the relay has made durable, with their bytes:
// the delivery queue.
type Handoff interface {
	AddAccepted(copies []store.Copy)
}

// Relay is the end of the submission side: it prepares an accepted
// submission into signed copies, makes them durable and hands them on.
type Relay struct {
	prep    *Preparer
	spool   Spool
	handoff Handoff
	metrics *metrics.Metrics
	log     *slog.Logger
	now     func() time.Time
	limits  struct {
		memory *membudget.Budget
		queued func(tenant string) int
	}
}

// NewRelay wires a relay.
func NewRelay(prep *Preparer, spool Spool, handoff Handoff, m *metrics.Metrics, log *slog.Logger) *Relay {
	return &Relay{prep: prep, spool: spool, handoff: handoff, metrics: m, log: log, now: time.Now}
}

// Accept prepares a submission and returns only once it is durable: the
// 250 that follows is a promise (RFC 5321 6.1).
func (r *Relay) Accept(ctx context.Context, env *Envelope, data []byte) (string, error) {
	p, _, err := r.accept(ctx, env, data, nil)
	if err != nil {
		return "", err
	}
	return p.Message.ID, nil
}

// accept prepares and spools a submission. answer, when set, gives the
// idempotency answer to spool with the prepared message, in the same
// transaction.
func (r *Relay) accept(ctx context.Context, env *Envelope, data []byte, answer func(*Prepared) *store.IdempotentAnswer) (*Prepared, []int64, error) {
	now := r.now()
	// Preparing makes one more copy of the message (more with gated
	// links; gatedCopies counts those).
	if err := env.reserve(int64(len(data))); err != nil {
		return nil, nil, err
	}
	p, err := r.prep.Prepare(env, store.NewMessageID(now), data, now)
	if err != nil {
		return nil, nil, err
	}
	// Only the prepared contents live on: the DATA buffer and the
	// normalized message are garbage now.
	env.release(env.Buffered + int64(len(data)))
	// The store copies each content as it writes it, outside Go's heap
	// (see storeCopies): that is this submission's memory too.
	if err := env.reserve(storeCopies * largest(p.Contents)); err != nil {
		return nil, nil, err
	}
	m := p.Message // the answer goes to the store alone, not to the queue
	if answer != nil {
		m.Idempotency = answer(p)
	}
	ids, err := r.spool.Enqueue(ctx, m, p.Contents, p.Rcpts)
	if err != nil {
		r.metrics.StoreErrors.WithLabelValues("enqueue").Inc()
		return nil, nil, fmt.Errorf("spooling: %w", err) // becomes 451 4.3.0 at the boundary
	}
	r.handoff.AddAccepted(store.QueuedCopies(p.Message, p.Contents, p.Rcpts, ids))
	r.metrics.SMTPAccepted.WithLabelValues(p.Message.Tenant, p.Message.Class).Inc()
	for _, rc := range p.Rcpts {
		if rc.State == store.StateHeld {
			r.metrics.Held.WithLabelValues(p.Message.Tenant).Inc()
			break
		}
	}
	return p, ids, nil
}

// Submission is a message composed by the send API, to be sent as the
// tenant's mail through the same preparation as SMTP's.
type Submission struct {
	Tenant   *Tenant
	From     string // the envelope sender, the From address
	Rcpts    []string
	Data     []byte // the whole message, CRLF lines
	Actor    string // "api:<token>@<client>", for the audit trail
	ClientIP netip.Addr
	TLS      bool
	Class    config.Class // "": the tenant's default
	Hold     bool
	Note     string // for the accepted event ("format attachment")
	// Answer, when set, makes the answer of the call's Idempotency-Key
	// from the Sent that Send will return; Send stores it with the
	// message, in the same transaction (store.Message.Idempotency), so
	// the message is never durable without its key's answer.
	Answer func(*Sent) *store.IdempotentAnswer
}

// Sent is a submission made durable: its message id and each recipient's
// tracking id, in the order given.
type Sent struct {
	ID         string
	Recipients []SentRecipient
}

// SentRecipient is one recipient's copy.
type SentRecipient struct {
	Address, TrackingID string
}

// Send makes a send API submission durable, as Accept does an SMTP one,
// under the same limits: the tenant's classes, transaction rate and
// queue cap, and the server's memory budget. A refusal is an error
// RefusalOf reads.
func (r *Relay) Send(ctx context.Context, s Submission) (*Sent, error) {
	t := s.Tenant
	if s.Class != "" && !t.mayUse(s.Class) {
		return nil, newReply(550, smtp.EnhancedCode{5, 7, 1}, "class",
			fmt.Sprintf("Tenant %s may not send %s mail (tenants[].classes)", t.Name, s.Class))
	}
	if r.limits.memory.Full() {
		return nil, errMemoryBudget
	}
	if t.MaxQueued > 0 && r.limits.queued != nil && r.limits.queued(t.Name) >= t.MaxQueued {
		return nil, errTenantQueue
	}
	if !t.startTransaction() {
		return nil, errTenantRate
	}
	mem := &holding{b: r.limits.memory}
	defer mem.releaseAll()
	if err := mem.grow(int64(len(s.Data))); err != nil {
		return nil, err
	}
	env := &Envelope{Tenant: t, AuthUser: s.Actor, ClientIP: s.ClientIP, Via: ViaHTTP, TLS: s.TLS, From: s.From,
		Class: s.Class, Hold: s.Hold, Note: s.Note, Rcpts: s.Rcpts,
		Reserve: mem.grow, Release: mem.shrink, Buffered: mem.held}
	if env.Class == "" {
		env.Class = t.DefaultClass
	}
	var answer func(*Prepared) *store.IdempotentAnswer
	if s.Answer != nil {
		answer = func(p *Prepared) *store.IdempotentAnswer { return s.Answer(sentOf(p, s.Rcpts)) }
	}
	p, _, err := r.accept(ctx, env, s.Data, answer)
	if err != nil {
		return nil, err
	}
	return sentOf(p, s.Rcpts), nil
}

// sentOf is what Send answers for a prepared submission to rcpts: its
// message id (made before preparing) and the tracking id of each
// recipient's copy (made while preparing).
func sentOf(p *Prepared, rcpts []string) *Sent {
	out := &Sent{ID: p.Message.ID}
	for _, rc := range p.Rcpts {
		if rc.Seed != "" && !slices.Contains(rcpts, rc.Address) {
			continue // a seed copy of certgate's own
		}
		out.Recipients = append(out.Recipients, SentRecipient{Address: rc.Address, TrackingID: rc.TrackingID})
	}
	return out
}

// SetLimits gives Send the limits an SMTP transaction meets at MAIL: the
// server's memory budget (nil: none) and the tenants' queued recipients
// (nil: no max_queued).
func (r *Relay) SetLimits(memory *membudget.Budget, queued func(tenant string) int) {
	r.limits.memory, r.limits.queued = memory, queued
}

// storeCopies is how many copies of a content the store makes while it
// writes it: SQLite's driver copies a bound value into C memory, and
// SQLite builds the row in another buffer of its size.
const storeCopies = 2

func largest(contents [][]byte) int64 {
	var n int
	for _, c := range contents {
		n = max(n, len(c))
	}
	return int64(n)
}
