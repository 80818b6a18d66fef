package quarantine

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/metrics"
	"github.com/certgate/certgate/store"
)

// DeskStore is what the desk needs of the store.
type DeskStore interface {
	Message(ctx context.Context, id string) (*store.MessageView, error)
	Search(ctx context.Context, q store.Query) ([]store.Message, error)
	Release(ctx context.Context, messageID string, now time.Time, actor, detail string) ([]store.Pending, error)
	SetLinkState(ctx context.Context, messageID string, recipientID int64, from []store.LinkState, to store.LinkState, actor, detail string) (int, error)
}

// Requeuer takes released recipients back into delivery (the queue).
type Requeuer interface {
	Add(ps ...store.Pending)
}

// Actor is who asks the desk for a change.
type Actor struct {
	Name  string       // as the audit trail records it, such as "api:helpdesk@192.0.2.9:41000"
	Scope config.Scope // the scope the request used, for certgate_releases_total
}

// ErrNoRecipient is Revoke's answer for an address that is not one of the
// message's recipients.
var ErrNoRecipient = errors.New("no such recipient")

// Desk is where held mail is released and links are revoked, whoever
// asks (the API today): it records each change on the message and keeps
// the queue and the held gauge in step with the store.
type Desk struct {
	store   DeskStore
	queue   Requeuer
	metrics *metrics.Metrics
	now     func() time.Time
}

// NewDesk builds the desk.
func NewDesk(st DeskStore, q Requeuer, m *metrics.Metrics) *Desk {
	return &Desk{store: st, queue: q, metrics: m, now: time.Now}
}

// Release marks a message safe: its held copies go to the queue and its
// pending links turn on. Releasing again changes nothing but is
// recorded. It returns the recipients it queued; an unknown message is
// store.ErrNotFound.
func (d *Desk) Release(ctx context.Context, id string, by Actor, reason string) ([]store.Pending, error) {
	pend, err := d.store.Release(ctx, id, d.now(), by.Name, detail("released", reason))
	if err != nil {
		return nil, err
	}
	d.queue.Add(pend...)
	if len(pend) > 0 {
		d.metrics.Held.WithLabelValues(pend[0].Tenant).Dec()
	}
	d.metrics.Releases.WithLabelValues(string(by.Scope)).Inc()
	return pend, nil
}

// Revoke turns off the links of a message, or of one of its recipients
// when recipient is not empty, and returns how many it turned off. An
// unknown message is store.ErrNotFound; an address the message was not
// sent to, ErrNoRecipient.
func (d *Desk) Revoke(ctx context.Context, id, recipient string, by Actor, reason string) (int, error) {
	var rcptID int64
	if recipient != "" {
		v, err := d.store.Message(ctx, id)
		if err != nil {
			return 0, err
		}
		for _, rc := range v.Recipients {
			if strings.EqualFold(rc.Address, recipient) {
				rcptID = rc.ID
			}
		}
		if rcptID == 0 {
			return 0, ErrNoRecipient
		}
	}
	return d.store.SetLinkState(ctx, id, rcptID, nil, store.LinkRevoked, by.Name, detail("revoked", reason))
}

// CountHeld sets the held-messages gauge from the store, at start.
func (d *Desk) CountHeld(ctx context.Context) error {
	counts := map[string]int{}
	after := ""
	for {
		page, err := d.store.Search(ctx, store.Query{State: store.StateHeld, After: after, Limit: 500})
		if err != nil {
			return err
		}
		for _, msg := range page {
			counts[msg.Tenant]++
		}
		if len(page) < 500 {
			break
		}
		after = page[len(page)-1].ID
	}
	for tenant, n := range counts {
		d.metrics.Held.WithLabelValues(tenant).Set(float64(n))
	}
	return nil
}

// detail is an event's text: what happened, and the reason given, on one
// line of at most 200 bytes.
func detail(what, reason string) string {
	if reason == "" {
		return what
	}
	reason = strings.Join(strings.Fields(reason), " ")
	if len(reason) > 200 {
		reason = reason[:200]
	}
	return what + ": " + reason
}
