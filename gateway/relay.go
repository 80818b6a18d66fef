package gateway

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"fmt"
	"log/slog"
	"time"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/metrics"
	"github.com/certgate/certgate/store"
)

// Relay joins the parts of the mail path: it prepares an accepted
// submission, makes it durable, hands it to the queue, and turns permanent
// failures into DSNs.
type Relay struct {
	tenants *Directory
	prep    *Preparer
	store   store.Store
	queue   *Queue
	metrics *metrics.Metrics
	log     *slog.Logger
	now     func() time.Time
}

// NewRelay wires a relay; the queue reports bounces and deliveries to it.
func NewRelay(dir *Directory, prep *Preparer, st store.Store, q *Queue, m *metrics.Metrics, log *slog.Logger) *Relay {
	r := &Relay{tenants: dir, prep: prep, store: st, queue: q, metrics: m, log: log, now: time.Now}
	q.SetBouncer(r)
	return r
}

// Accept prepares a submission and returns only once it is durable: the
// 250 that follows is a promise (RFC 5321 6.1).
func (r *Relay) Accept(ctx context.Context, env *Envelope, data []byte) (string, error) {
	now := r.now()
	p, err := r.prep.Prepare(env, newQueueID(now), data, now)
	if err != nil {
		return "", err
	}
	if err := r.enqueue(ctx, p); err != nil {
		return "", fmt.Errorf("spooling: %w", err) // becomes 451 4.3.0 at the boundary
	}
	r.metrics.SMTPAccepted.WithLabelValues(p.Message.Tenant, p.Message.Class).Inc()
	for _, rc := range p.Rcpts {
		if rc.State == store.StateHeld {
			r.metrics.Held.WithLabelValues(p.Message.Tenant).Inc()
			break
		}
	}
	return p.Message.ID, nil
}

func (r *Relay) enqueue(ctx context.Context, p *Prepared) error {
	ids, err := r.store.Enqueue(ctx, p.Message, p.Contents, p.Rcpts)
	if err != nil {
		return err
	}
	m := p.Message
	pend := make([]store.Pending, 0, len(ids))
	var prefixes, bodies [][]byte
	for i, id := range ids {
		rc := p.Rcpts[i]
		if rc.State != store.StateQueued {
			continue
		}
		_, _, domain, _ := parseAddress(rc.Address)
		pend = append(pend, store.Pending{RecipientID: id, MessageID: m.ID, Tenant: m.Tenant, MailFrom: m.MailFrom,
			Address: rc.Address, Domain: domain, Class: m.Class, Size: m.Size, NextAttempt: rc.NextAttempt, ReceivedAt: m.ReceivedAt})
		prefixes, bodies = append(prefixes, rc.Prefix), append(bodies, p.Contents[rc.Content])
	}
	r.queue.AddAccepted(pend, prefixes, bodies)
	return nil
}

// Bounce sends an RFC 3464 DSN for a failed recipient to its envelope
// sender, from the null sender so that it can never bounce in turn (RFC 5321
// 4.5.5).
func (r *Relay) Bounce(ctx context.Context, p store.Pending, res Result, original []byte) error {
	if p.MailFrom == "" {
		return nil
	}
	now := r.now()
	id := newQueueID(now)
	dsn := buildDSN(dsnInput{
		ReportingMTA: r.prep.hostname, QueueID: id, OriginalID: p.MessageID, Sender: p.MailFrom,
		Recipient: p.Address, RemoteMTA: res.Host, Status: dsnStatus(res), Diagnostic: res.String(), GaveUp: res.GaveUp, NoReply: res.Code == 0,
		Arrival: p.ReceivedAt, Now: now, Original: original,
	})
	prep, err := r.prep.PrepareDSN(p.Tenant, id, p.MailFrom, dsn, now)
	if err != nil {
		return err
	}
	if err := r.enqueue(ctx, prep); err != nil {
		return err
	}
	r.metrics.DSNSent.Inc()
	return r.store.AddEvent(ctx, store.Event{MessageID: p.MessageID, RecipientID: p.RecipientID, Time: now, Kind: "dsn",
		Actor: "queue", Detail: fmt.Sprintf("DSN %s sent to %s for %s", id, p.MailFrom, p.Address)})
}

// EnablesOnDelivery reports whether the tenant's links turn on once the
// receiving MX accepted a copy (links.enable: on_delivery).
func (r *Relay) EnablesOnDelivery(tenant string) bool {
	t := r.tenants.Tenant(tenant)
	return t != nil && t.Links.Rewriter != nil && t.Links.Enable == config.LinksOnDelivery
}

var idEncoding = base32.NewEncoding("0123456789abcdefghjkmnpqrstvwxyz").WithPadding(base32.NoPadding)

// newQueueID returns a 26-character id: 48 bits of milliseconds, so ids sort
// by time, then 80 random bits.
func newQueueID(now time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixMilli())<<16)
	rand.Read(b[6:])
	return idEncoding.EncodeToString(b[:])
}

// newTrackingID returns 128 random bits, unguessable and unique per copy.
func newTrackingID() string {
	var b [16]byte
	rand.Read(b[:])
	return idEncoding.EncodeToString(b[:])
}
