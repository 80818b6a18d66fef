package quarantine

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/metrics"
	"github.com/certgate/certgate/store"
	"github.com/certgate/certgate/store/sqlite"
)

// requeued records what the desk hands back to delivery.
type requeued struct {
	mu sync.Mutex
	ps []store.Pending
}

func (r *requeued) Add(ps ...store.Pending) {
	r.mu.Lock()
	r.ps = append(r.ps, ps...)
	r.mu.Unlock()
}

func newTestDesk(t *testing.T) (*Desk, *sqlite.Store, *requeued, *metrics.Metrics) {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	q, m := &requeued{}, metrics.New()
	return NewDesk(st, q, m), st, q, m
}

// issuer is the tenant deskEnqueue stores mail for, as callers may see it.
var issuer = OnlyTenants("issuer")

// deskEnqueue stores message id of tenant issuer for rcpts, each with one
// gated link.
func deskEnqueue(t *testing.T, st store.Store, id string, state store.State, rcpts ...string) {
	t.Helper()
	deskEnqueueFor(t, st, "issuer", id, state, rcpts...)
}

// deskEnqueueFor is deskEnqueue for another tenant.
func deskEnqueueFor(t *testing.T, st store.Store, tenant, id string, state store.State, rcpts ...string) {
	t.Helper()
	var rs []store.NewRecipient
	for _, a := range rcpts {
		_, hash := NewToken()
		rs = append(rs, store.NewRecipient{Address: a, TrackingID: id + "/" + a, State: state, NextAttempt: time.Now(),
			Links: []store.NewLink{{TokenHash: hash, URL: "https://descargas.ca.example/c/" + id, State: store.LinkPending, MaxUses: 3}}})
	}
	if _, err := st.Enqueue(context.Background(), store.Message{ID: id, Tenant: tenant, MailFrom: "certificados@ca.example",
		Class: "bulk", ReceivedAt: time.Now()}, [][]byte{[]byte("x")}, rs); err != nil {
		t.Fatal(err)
	}
}

func TestDeskReleaseQueuesHeldCopies(t *testing.T) {
	ctx := context.Background()
	d, st, q, m := newTestDesk(t)
	deskEnqueue(t, st, "068w3qk2v0yzj7a5c1m9rt4xh1", store.StateHeld, "ana@empresa.example", "luis@empresa.example")
	admin := Actor{Name: "api:ops@192.0.2.9:4000", Scope: config.ScopeAdmin}
	pend, err := d.Release(ctx, "068w3qk2v0yzj7a5c1m9rt4xh1", issuer, admin, "  ticket\n4711  ")
	if err != nil || len(pend) != 2 || len(q.ps) != 2 {
		t.Fatalf("Release = %v, %v; queue got %d", pend, err, len(q.ps))
	}
	if got := metricValue(m.Releases.WithLabelValues("admin")); got != 1 {
		t.Errorf("releases by admin: %v, want 1", got)
	}
	v, err := st.Message(ctx, "068w3qk2v0yzj7a5c1m9rt4xh1")
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, e := range v.Events {
		found = found || (e.Kind == "released" && e.Actor == admin.Name && e.Detail == "released: ticket 4711")
	}
	if !found {
		t.Errorf("no released event by %s with the reason on one line: %+v", admin.Name, v.Events)
	}
	if pend, err := d.Release(ctx, "068w3qk2v0yzj7a5c1m9rt4xh1", issuer, admin, ""); err != nil || len(pend) != 0 || len(q.ps) != 2 {
		t.Errorf("second Release = %v, %v; queue got %d, want still 2", pend, err, len(q.ps))
	}
	if _, err := d.Release(ctx, "nope", issuer, admin, ""); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Release of an unknown message = %v", err)
	}
}

// TestHeldGaugeCountsAtStartAndFallsOnRelease: the gauge counts held
// messages at start, falls by one per message released, and a second
// release of the same message changes nothing.
func TestHeldGaugeCountsAtStartAndFallsOnRelease(t *testing.T) {
	ctx := context.Background()
	d, st, _, m := newTestDesk(t)
	deskEnqueue(t, st, "068w3qk2v0yzj7a5c1m9rt4xj1", store.StateHeld, "a@empresa.example")
	deskEnqueue(t, st, "068w3qk2v0yzj7a5c1m9rt4xj2", store.StateHeld, "b@empresa.example")
	deskEnqueue(t, st, "068w3qk2v0yzj7a5c1m9rt4xj3", store.StateQueued, "c@empresa.example")
	if err := d.CountHeld(ctx); err != nil {
		t.Fatal(err)
	}
	if got := metricValue(m.Held.WithLabelValues("issuer")); got != 2 {
		t.Fatalf("held at start: %v, want 2", got)
	}
	by := Actor{Name: "api:helpdesk@192.0.2.9:4000", Scope: config.ScopeRelease}
	for range 2 { // the second has nothing left to release: no change
		if _, err := d.Release(ctx, "068w3qk2v0yzj7a5c1m9rt4xj1", issuer, by, ""); err != nil {
			t.Fatal(err)
		}
	}
	if got := metricValue(m.Held.WithLabelValues("issuer")); got != 1 {
		t.Fatalf("held after a release: %v, want 1", got)
	}
}

func TestDeskRevoke(t *testing.T) {
	ctx := context.Background()
	d, st, _, _ := newTestDesk(t)
	const id = "068w3qk2v0yzj7a5c1m9rt4xh2"
	deskEnqueue(t, st, id, store.StateQueued, "ana@empresa.example", "luis@empresa.example")
	by := Actor{Name: "api:helpdesk@192.0.2.9:4000", Scope: config.ScopeRelease}
	if n, err := d.Revoke(ctx, id, "nadie@empresa.example", issuer, by, ""); !errors.Is(err, ErrNoRecipient) || n != 0 {
		t.Errorf("Revoke for another address = %d, %v", n, err)
	}
	if _, err := d.Revoke(ctx, "nope", "ana@empresa.example", issuer, by, ""); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Revoke of an unknown message by recipient = %v", err)
	}
	if _, err := d.Revoke(ctx, "nope", "", issuer, by, ""); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Revoke of an unknown message = %v", err)
	}
	long := strings.Repeat("x", 300)
	if n, err := d.Revoke(ctx, id, "ANA@empresa.example", issuer, by, long); err != nil || n != 1 {
		t.Fatalf("Revoke of one recipient's links = %d, %v", n, err)
	}
	if n, err := d.Revoke(ctx, id, "", issuer, by, ""); err != nil || n != 1 {
		t.Fatalf("Revoke of the rest = %d, %v", n, err)
	}
	v, err := st.Message(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range v.Links {
		if l.State != store.LinkRevoked {
			t.Errorf("link %d is %s", l.ID, l.State)
		}
	}
	for _, e := range v.Events {
		if e.Kind == "link_revoked" && e.Detail != "revoked" && e.Detail != "revoked: "+long[:200] {
			t.Errorf("revoke detail %q", e.Detail)
		}
	}
}

// TestDeskEnable: the helpdesk's undo of a revoke turns on the revoked
// links of one recipient, and only those: a pending link waits for
// delivery or release, as before.
func TestDeskEnable(t *testing.T) {
	ctx := context.Background()
	d, st, _, _ := newTestDesk(t)
	const id = "068w3qk2v0yzj7a5c1m9rt4xh3"
	deskEnqueue(t, st, id, store.StateQueued, "ana@empresa.example", "luis@empresa.example")
	by := Actor{Name: "console:helpdesk@192.0.2.9:4000", Scope: config.ScopeRelease}
	if n, err := d.Enable(ctx, id, "ana@empresa.example", issuer, by, ""); err != nil || n != 0 {
		t.Fatalf("Enable of a pending link = %d, %v; want 0 moved", n, err)
	}
	if n, err := d.Revoke(ctx, id, "", issuer, by, "wrong address"); err != nil || n != 2 {
		t.Fatalf("Revoke = %d, %v", n, err)
	}
	if n, err := d.Enable(ctx, id, "nadie@empresa.example", issuer, by, ""); !errors.Is(err, ErrNoRecipient) || n != 0 {
		t.Errorf("Enable for another address = %d, %v", n, err)
	}
	if n, err := d.Enable(ctx, id, "", OnlyTenants("other"), by, ""); !errors.Is(err, store.ErrNotFound) || n != 0 {
		t.Errorf("Enable by another tenant's caller = %d, %v", n, err)
	}
	if n, err := d.Enable(ctx, id, "ANA@empresa.example", issuer, by, "  customer  confirmed\nthe address "); err != nil || n != 1 {
		t.Fatalf("Enable of one recipient's links = %d, %v", n, err)
	}
	v, err := st.Message(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	states := map[int64]store.LinkState{}
	for _, l := range v.Links {
		states[l.RecipientID] = l.State
	}
	if a, l := states[v.Recipients[0].ID], states[v.Recipients[1].ID]; a != store.LinkEnabled || l != store.LinkRevoked {
		t.Errorf("after enabling ana's: ana's link %s, luis's %s; want enabled, revoked", a, l)
	}
	found := false
	for _, e := range v.Events {
		found = found || (e.Kind == "link_enabled" && e.Actor == by.Name && e.Detail == "re-enabled: customer confirmed the address")
	}
	if !found {
		t.Errorf("no link_enabled event with the reason: %+v", v.Events)
	}
}

// TestDeskActsOnlyOnItsTenants: to a caller of tenant issuer, mail of
// tenant other is mail that does not exist, whatever it asks.
func TestDeskActsOnlyOnItsTenants(t *testing.T) {
	ctx := context.Background()
	d, st, q, m := newTestDesk(t)
	const mine, theirs = "068w3qk2v0yzj7a5c1m9rt4xk1", "068w3qk2v0yzj7a5c1m9rt4xk2"
	deskEnqueue(t, st, mine, store.StateHeld, "ana@empresa.example")
	deskEnqueueFor(t, st, "other", theirs, store.StateHeld, "ana@empresa.example")
	before, err := st.Message(ctx, theirs)
	if err != nil {
		t.Fatal(err)
	}
	by := Actor{Name: "api:helpdesk@192.0.2.9:4000", Scope: config.ScopeAdmin}

	for _, in := range []Tenants{issuer, {}, OnlyTenants("nobody")} {
		if _, err := Message(ctx, st, theirs, in); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%+v: Message of another tenant's = %v", in, err)
		}
		if pend, err := d.Release(ctx, theirs, in, by, ""); !errors.Is(err, store.ErrNotFound) || len(pend) != 0 {
			t.Errorf("%+v: Release of another tenant's = %v, %v", in, pend, err)
		}
		for _, rcpt := range []string{"", "ana@empresa.example", "nadie@empresa.example"} {
			if n, err := d.Revoke(ctx, theirs, rcpt, in, by, ""); !errors.Is(err, store.ErrNotFound) || n != 0 {
				t.Errorf("%+v: Revoke of another tenant's for %q = %d, %v", in, rcpt, n, err)
			}
		}
	}
	after, err := st.Message(ctx, theirs)
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Events) != len(before.Events) || after.Recipients[0].State != store.StateHeld || after.Links[0].State != store.LinkPending {
		t.Errorf("another tenant's message changed: %+v", after)
	}
	if len(q.ps) != 0 || metricValue(m.Releases.WithLabelValues("admin")) != 0 {
		t.Errorf("queue got %d, releases counted %v", len(q.ps), metricValue(m.Releases.WithLabelValues("admin")))
	}

	// An empty id is no id, not "no id filter".
	if _, err := Message(ctx, st, "", issuer); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Message of an empty id = %v", err)
	}

	for _, c := range []struct {
		in   Tenants
		q    store.Query
		want []string
	}{
		{issuer, store.Query{}, []string{mine}},
		{issuer, store.Query{Recipient: "ana@empresa.example", State: store.StateHeld}, []string{mine}},
		{issuer, store.Query{Tenant: "other"}, nil},
		{issuer, store.Query{Tenants: []string{"other"}}, nil},
		{OnlyTenants("issuer", "other"), store.Query{Tenants: []string{"other", "third"}}, []string{theirs}},
		{Tenants{}, store.Query{}, nil},
		{AllTenants(), store.Query{}, []string{theirs, mine}},
	} {
		found, err := Search(ctx, st, c.q, c.in)
		var ids []string
		for _, msg := range found {
			ids = append(ids, msg.ID)
		}
		if err != nil || !slices.Equal(ids, c.want) {
			t.Errorf("%+v: Search(%+v) = %v, %v; want %v", c.in, c.q, ids, err, c.want)
		}
	}

	if _, err := Message(ctx, st, theirs, AllTenants()); err != nil {
		t.Errorf("Message for every tenant = %v", err)
	}
	if pend, err := d.Release(ctx, theirs, OnlyTenants("other"), by, ""); err != nil || len(pend) != 1 {
		t.Errorf("Release by its own tenant = %v, %v", pend, err)
	}
}

// readLog records what is asked of the store.
type readLog struct {
	Reader
	calls []string
}

func (r *readLog) Message(ctx context.Context, id string) (*store.MessageView, error) {
	r.calls = append(r.calls, "Message")
	return r.Reader.Message(ctx, id)
}

func (r *readLog) Search(ctx context.Context, q store.Query) ([]store.Message, error) {
	r.calls = append(r.calls, fmt.Sprintf("Search(id %t, tenants %d)", q.ID != "", len(q.Tenants)))
	return r.Reader.Search(ctx, q)
}

// TestAnotherTenantsIDCostsWhatAnUnknownOneDoes: no timing oracle. The
// store is asked the same for either: one lookup by id, no message read.
func TestAnotherTenantsIDCostsWhatAnUnknownOneDoes(t *testing.T) {
	ctx := context.Background()
	_, st, _, _ := newTestDesk(t)
	const theirs = "068w3qk2v0yzj7a5c1m9rt4xm1"
	deskEnqueueFor(t, st, "other", theirs, store.StateHeld, "ana@empresa.example")
	asked := func(id string) []string {
		r := &readLog{Reader: st}
		if _, err := Message(ctx, r, id, issuer); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Message(%s) = %v", id, err)
		}
		return r.calls
	}
	foreign, unknown := asked(theirs), asked("068w3qk2v0yzj7a5c1m9rt4xm9")
	if !slices.Equal(foreign, unknown) || len(foreign) != 1 {
		t.Errorf("the store was asked %q for another tenant's id, %q for an unknown one", foreign, unknown)
	}
}

// metricValue reads a gauge or a counter.
func metricValue(c interface{ Write(*dto.Metric) error }) float64 {
	var m dto.Metric
	c.Write(&m)
	return m.GetGauge().GetValue() + m.GetCounter().GetValue()
}
