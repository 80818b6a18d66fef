package quarantine

import (
	"context"
	"errors"
	"path/filepath"
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

// deskEnqueue stores message id for rcpts, each with one gated link.
func deskEnqueue(t *testing.T, st store.Store, id string, state store.State, rcpts ...string) {
	t.Helper()
	var rs []store.NewRecipient
	for _, a := range rcpts {
		_, hash := NewToken()
		rs = append(rs, store.NewRecipient{Address: a, TrackingID: id + "/" + a, State: state, NextAttempt: time.Now(),
			Links: []store.NewLink{{TokenHash: hash, URL: "https://descargas.ca.example/c/" + id, State: store.LinkPending, MaxUses: 3}}})
	}
	if _, err := st.Enqueue(context.Background(), store.Message{ID: id, Tenant: "issuer", MailFrom: "certificados@ca.example",
		Class: "bulk", ReceivedAt: time.Now()}, [][]byte{[]byte("x")}, rs); err != nil {
		t.Fatal(err)
	}
}

func TestDeskReleaseQueuesHeldCopies(t *testing.T) {
	ctx := context.Background()
	d, st, q, m := newTestDesk(t)
	deskEnqueue(t, st, "068w3qk2v0yzj7a5c1m9rt4xh1", store.StateHeld, "ana@empresa.example", "luis@empresa.example")
	admin := Actor{Name: "api:ops@192.0.2.9:4000", Scope: config.ScopeAdmin}
	pend, err := d.Release(ctx, "068w3qk2v0yzj7a5c1m9rt4xh1", admin, "  ticket\n4711  ")
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
	if pend, err := d.Release(ctx, "068w3qk2v0yzj7a5c1m9rt4xh1", admin, ""); err != nil || len(pend) != 0 || len(q.ps) != 2 {
		t.Errorf("second Release = %v, %v; queue got %d, want still 2", pend, err, len(q.ps))
	}
	if _, err := d.Release(ctx, "nope", admin, ""); !errors.Is(err, store.ErrNotFound) {
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
		if _, err := d.Release(ctx, "068w3qk2v0yzj7a5c1m9rt4xj1", by, ""); err != nil {
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
	if n, err := d.Revoke(ctx, id, "nadie@empresa.example", by, ""); !errors.Is(err, ErrNoRecipient) || n != 0 {
		t.Errorf("Revoke for another address = %d, %v", n, err)
	}
	if _, err := d.Revoke(ctx, "nope", "ana@empresa.example", by, ""); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Revoke of an unknown message by recipient = %v", err)
	}
	if _, err := d.Revoke(ctx, "nope", "", by, ""); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Revoke of an unknown message = %v", err)
	}
	long := strings.Repeat("x", 300)
	if n, err := d.Revoke(ctx, id, "ANA@empresa.example", by, long); err != nil || n != 1 {
		t.Fatalf("Revoke of one recipient's links = %d, %v", n, err)
	}
	if n, err := d.Revoke(ctx, id, "", by, ""); err != nil || n != 1 {
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

// metricValue reads a gauge or a counter.
func metricValue(c interface{ Write(*dto.Metric) error }) float64 {
	var m dto.Metric
	c.Write(&m)
	return m.GetGauge().GetValue() + m.GetCounter().GetValue()
}
