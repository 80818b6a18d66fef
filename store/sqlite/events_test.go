package sqlite

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/certgate/certgate/store"
)

// TestCursorSurvivesReopen checks that a cursor is on disk once SetCursor
// returns: a new Store on the same file reads it back.
func TestCursorSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "certgate.db")
	s, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetCursor(ctx, "webhook:crm", 42); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, err := s.Cursor(ctx, "webhook:crm"); err != nil || got != 42 {
		t.Errorf("Cursor after reopening = %d, %v; want 42", got, err)
	}
}

// TestMigrateFromVersion2 opens a database as the release before cursors
// left it: its events are in the log, and cursors start at 0.
func TestMigrateFromVersion2(t *testing.T) {
	ctx := context.Background()
	path := oldDatabase(t, 2, func(ctx context.Context, conn *sql.Conn) {
		execAll(t, ctx, conn,
			`INSERT INTO messages (id, tenant, mail_from, header_from,
		message_id, subject, class, size, client_addr, auth_user, received_at)
		VALUES ('old-1', 'issuer', 'b@issuer.example', 'c@issuer.example', 'old-1@issuer.example', 'old', 'bulk', 1, '192.0.2.1', '', 1)`,
			`INSERT INTO recipients (message_id, address, domain, address_key,
		tracking_id, prefix, content_id, state, next_attempt, updated_at)
		VALUES ('old-1', 'a@example.com', 'example.com', 'a@example.com', 'old-1/a', NULL, NULL, 'delivered', 0, 1)`,
			`INSERT INTO events (message_id, recipient_id, time, kind, actor, detail)
		VALUES ('old-1', 0, 1, 'accepted', 'smtp:192.0.2.1', ''), ('old-1', 1, 2, 'delivered', 'queue', '250 ok')`,
		)
	})

	s, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatalf("Open of a version 2 database: %v", err)
	}
	defer s.Close()
	evs, err := s.EventsAfter(ctx, 0, 10)
	if err != nil || len(evs) != 2 {
		t.Fatalf("EventsAfter after migration = %+v, %v", evs, err)
	}
	if e := evs[1]; e.Kind != "delivered" || e.Recipient != "a@example.com" || e.Tenant != "issuer" || e.Time != time.Unix(0, 2).UTC() {
		t.Errorf("migrated event = %+v", e)
	}
	if got, err := s.Cursor(ctx, "webhook:crm"); err != nil || got != 0 {
		t.Errorf("Cursor after migration = %d, %v; want 0", got, err)
	}
	if err := s.SetCursor(ctx, "webhook:crm", evs[1].ID); err != nil {
		t.Errorf("SetCursor after migration: %v", err)
	}
	if _, err := s.Enqueue(ctx, store.Message{ID: "new-1", Tenant: "issuer", Class: "bulk"}, [][]byte{[]byte("x")},
		[]store.NewRecipient{{Address: "b@example.com", State: store.StateQueued}}); err != nil {
		t.Fatal(err)
	}
	if evs, err := s.EventsAfter(ctx, evs[1].ID, 10); err != nil || len(evs) != 1 || evs[0].MessageID != "new-1" {
		t.Errorf("EventsAfter the migrated events = %+v, %v", evs, err)
	}
}
