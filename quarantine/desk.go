package quarantine

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/metrics"
	"github.com/certgate/certgate/store"
)

// Reader is what reading mail needs of the store.
type Reader interface {
	Message(ctx context.Context, id string) (*store.MessageView, error)
	MessagePage(ctx context.Context, id string, p store.EventPage) (*store.MessageView, error)
	Search(ctx context.Context, q store.Query) ([]store.Message, error)
}

// DeskStore is what the desk needs of the store.
type DeskStore interface {
	Reader
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

// Tenants is whose mail a caller may see and act on: every tenant, or
// those named. The zero value is none, so a caller nobody scoped sees
// nothing.
type Tenants struct {
	all   bool
	names []string
}

// AllTenants is every tenant, present and future.
func AllTenants() Tenants { return Tenants{all: true} }

// OnlyTenants is the tenants named.
func OnlyTenants(names ...string) Tenants { return Tenants{names: slices.Clone(names)} }

// Has reports whether tenant is one of t.
func (t Tenants) Has(tenant string) bool { return t.all || slices.Contains(t.names, tenant) }

// narrow limits q to t's mail, in the query so that pages stay full;
// false when nothing can match.
func (t Tenants) narrow(q store.Query) (store.Query, bool) {
	names, ok := t.Narrow(q.Tenants)
	q.Tenants = names
	return q, ok
}

// Narrow is the tenants of requested (all when it is empty) that are
// t's, for a store filter: nil with true means every tenant; false when
// none can match.
func (t Tenants) Narrow(requested []string) ([]string, bool) {
	if t.all {
		return requested, true
	}
	names := t.names
	if len(requested) > 0 {
		names = slices.DeleteFunc(slices.Clone(requested), func(n string) bool { return !t.Has(n) })
	}
	return names, len(names) > 0
}

// Every reports whether t is every tenant, present and future.
func (t Tenants) Every() bool { return t.all }

// Single is the one tenant of t when t names exactly one.
func (t Tenants) Single() (string, bool) {
	if t.all || len(t.names) != 1 {
		return "", false
	}
	return t.names[0], true
}

// Search returns the messages st finds for q among in's.
func Search(ctx context.Context, st Reader, q store.Query, in Tenants) ([]store.Message, error) {
	q, ok := in.narrow(q)
	if !ok {
		return nil, nil
	}
	return st.Search(ctx, q)
}

// Message returns message id with everything known about it if it is
// in's; otherwise store.ErrNotFound, as for an unknown id.
func Message(ctx context.Context, st Reader, id string, in Tenants) (*store.MessageView, error) {
	if err := find(ctx, st, id, in); err != nil {
		return nil, err
	}
	return st.Message(ctx, id)
}

// MessagePage is Message with a page of its events, newest first (see
// store.EventPage).
func MessagePage(ctx context.Context, st Reader, id string, page store.EventPage, in Tenants) (*store.MessageView, error) {
	if err := find(ctx, st, id, in); err != nil {
		return nil, err
	}
	return st.MessagePage(ctx, id, page)
}

// find is store.ErrNotFound unless id is a message of in's. Another
// tenant's id and an unknown one take the same single lookup by id, so
// neither the answer nor its time tells them apart.
func find(ctx context.Context, st Reader, id string, in Tenants) error {
	q, ok := in.narrow(store.Query{ID: id, Limit: 1})
	if !ok || id == "" { // an empty ID is no filter: it would find any message
		return store.ErrNotFound
	}
	found, err := st.Search(ctx, q)
	if err != nil {
		return err
	}
	if len(found) == 0 {
		return store.ErrNotFound
	}
	return nil
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

// Release marks a message of in's safe: its held copies go to the queue
// and its pending links turn on. Releasing again changes nothing but is
// recorded. It returns the recipients it queued; an unknown message, or
// one not in's, is store.ErrNotFound.
func (d *Desk) Release(ctx context.Context, id string, in Tenants, by Actor, reason string) ([]store.Pending, error) {
	if err := find(ctx, d.store, id, in); err != nil {
		return nil, err
	}
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

// Revoke turns off the links of a message of in's, or of one of its
// recipients when recipient is not empty, and returns how many it turned
// off. An unknown message, or one not in's, is store.ErrNotFound; an
// address the message was not sent to, ErrNoRecipient.
func (d *Desk) Revoke(ctx context.Context, id, recipient string, in Tenants, by Actor, reason string) (int, error) {
	return d.setLinks(ctx, id, recipient, in, nil, store.LinkRevoked, by, detail("revoked", reason))
}

// Enable turns back on the revoked links of a message of in's, or of one
// of its recipients when recipient is not empty, and returns how many it
// turned on: the helpdesk's undo of a revoke. Links used up or expired
// stay as they are (their uses and expiry are kept), and a seed copy's
// never turn on. Errors as Revoke's.
func (d *Desk) Enable(ctx context.Context, id, recipient string, in Tenants, by Actor, reason string) (int, error) {
	return d.setLinks(ctx, id, recipient, in, []store.LinkState{store.LinkRevoked}, store.LinkEnabled, by, detail("re-enabled", reason))
}

// setLinks moves the links of a message of in's, or of one recipient's
// copy, from any state of from (all when empty) to to.
func (d *Desk) setLinks(ctx context.Context, id, recipient string, in Tenants, from []store.LinkState, to store.LinkState, by Actor, what string) (int, error) {
	if err := find(ctx, d.store, id, in); err != nil {
		return 0, err
	}
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
	return d.store.SetLinkState(ctx, id, rcptID, from, to, by.Name, what)
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
