package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"time"

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
}

// NewRelay wires a relay.
func NewRelay(prep *Preparer, spool Spool, handoff Handoff, m *metrics.Metrics, log *slog.Logger) *Relay {
	return &Relay{prep: prep, spool: spool, handoff: handoff, metrics: m, log: log, now: time.Now}
}

// Accept prepares a submission and returns only once it is durable: the
// 250 that follows is a promise (RFC 5321 6.1).
func (r *Relay) Accept(ctx context.Context, env *Envelope, data []byte) (string, error) {
	now := r.now()
	// Preparing makes one more copy of the message (more with gated
	// links; gatedCopies counts those).
	if env.Reserve != nil && !env.Reserve(int64(len(data))) {
		return "", errMemoryBudget
	}
	p, err := r.prep.Prepare(env, store.NewMessageID(now), data, now)
	if err != nil {
		return "", err
	}
	ids, err := r.spool.Enqueue(ctx, p.Message, p.Contents, p.Rcpts)
	if err != nil {
		return "", fmt.Errorf("spooling: %w", err) // becomes 451 4.3.0 at the boundary
	}
	r.handoff.AddAccepted(store.QueuedCopies(p.Message, p.Contents, p.Rcpts, ids))
	r.metrics.SMTPAccepted.WithLabelValues(p.Message.Tenant, p.Message.Class).Inc()
	for _, rc := range p.Rcpts {
		if rc.State == store.StateHeld {
			r.metrics.Held.WithLabelValues(p.Message.Tenant).Inc()
			break
		}
	}
	return p.Message.ID, nil
}
