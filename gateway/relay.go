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
	if err := env.reserve(int64(len(data))); err != nil {
		return "", err
	}
	p, err := r.prep.Prepare(env, store.NewMessageID(now), data, now)
	if err != nil {
		return "", err
	}
	// Only the prepared contents live on: the DATA buffer and the
	// normalized message are garbage now.
	env.release(env.Buffered + int64(len(data)))
	// The store copies each content as it writes it, outside Go's heap
	// (see storeCopies): that is this submission's memory too.
	if err := env.reserve(storeCopies * largest(p.Contents)); err != nil {
		return "", err
	}
	ids, err := r.spool.Enqueue(ctx, p.Message, p.Contents, p.Rcpts)
	if err != nil {
		r.metrics.StoreErrors.WithLabelValues("enqueue").Inc()
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
