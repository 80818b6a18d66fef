package sqlite

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certgate/certgate/store"
)

// TestMigrateFromVersion1 builds a database as the first release left it
// (schema step 1 only, rows written by that release's statements), opens it
// with this binary and checks that it upgrades in place: old mail is found
// by address, its view is intact, and links work on new mail.
func TestMigrateFromVersion1(t *testing.T) {
	ctx := context.Background()
	received := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	addrs := []string{"Alice@Example.COM", "odd@name@Tricky.Example", "postmaster", "bob@", "Ünï@Bücher.EXAMPLE"}
	path := oldDatabase(t, 1, func(ctx context.Context, conn *sql.Conn) { fillVersion1(t, ctx, conn, received, addrs) })

	s, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatalf("Open of a version 1 database: %v", err)
	}
	defer s.Close()
	var version int
	if err := s.rdb.QueryRowContext(ctx, "SELECT version FROM schema_version").Scan(&version); err != nil || version != len(migrations) {
		t.Fatalf("schema_version = %d, %v; want %d", version, err, len(migrations))
	}

	// The SQL that filled address_key agrees with addressKey for every row.
	rows, err := s.rdb.QueryContext(ctx, "SELECT address, address_key FROM recipients")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rows.Next() {
		var addr, key string
		if err := rows.Scan(&addr, &key); err != nil {
			t.Fatal(err)
		}
		if key != store.AddressKey(addr) {
			t.Errorf("migrated address_key of %q = %q, want %q", addr, key, store.AddressKey(addr))
		}
		n++
	}
	rows.Close()
	if n != 2*len(addrs) {
		t.Fatalf("%d recipients after migration, want %d", n, 2*len(addrs))
	}

	for q, want := range map[string]int{
		"Alice@example.com":       2,
		"odd@name@tricky.example": 2,
		"postmaster":              2,
		"bob@":                    2,
		"Ünï@bücher.example":      2,
		"alice@example.com":       0,
	} {
		ms, err := s.Search(ctx, store.Query{Recipient: q})
		if err != nil || len(ms) != want {
			t.Errorf("Search(%q) after migration = %d messages, %v; want %d", q, len(ms), err, want)
		}
	}
	ms, err := s.Search(ctx, store.Query{State: store.StateHeld})
	if err != nil || len(ms) != 1 || ms[0].ID != "old-2" {
		t.Errorf("Search(held) after migration = %+v, %v", ms, err)
	}

	v, err := s.Message(ctx, "old-2")
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Recipients) != len(addrs) || len(v.Events) != 1 || len(v.Links) != 0 || !v.Message.ReceivedAt.Equal(received.Add(time.Minute)) {
		t.Errorf("view of an old message = %+v", v)
	}
	// Old held mail can be released; new mail can carry links.
	if p, err := s.Release(ctx, "old-2", time.Now(), "api:helpdesk", ""); err != nil || len(p) != 1 {
		t.Errorf("Release of old held mail = %+v, %v", p, err)
	}
	hash := sha256.Sum256([]byte("new token"))
	if _, err := s.Enqueue(ctx, store.Message{ID: "new-1", Tenant: "issuer", Class: "bulk"}, [][]byte{[]byte("x")},
		[]store.NewRecipient{{Address: "Alice@Example.COM", TrackingID: "new-1", State: store.StateQueued,
			Links: []store.NewLink{{TokenHash: hash, URL: "https://issuer.example/download/1", State: store.LinkEnabled, MaxUses: 1}}}}); err != nil {
		t.Fatalf("Enqueue with a link after migration: %v", err)
	}
	l, err := s.LinkByToken(ctx, hash)
	if err != nil {
		t.Fatal(err)
	}
	if u, err := s.UseLink(ctx, l.ID, time.Now(), "gate", ""); err != nil || !u.OK || u.Link.State != store.LinkUsed {
		t.Errorf("UseLink after migration = %+v, %v", u, err)
	}
	if ms, err := s.Search(ctx, store.Query{Recipient: "Alice@example.com"}); err != nil || len(ms) != 3 || ms[0].ID != "old-2" {
		// "old-2" > "old-1" > "new-1" as ids.
		t.Errorf("Search(Alice) with old and new mail = %+v, %v", ms, err)
	}
}

// TestMigrateFromVersion3 opens a database as the release before retention
// left it: event ids, times and the log's order are kept, each old event
// counts one, links start with no refusals, and an event added after the
// newest ones are deleted still gets a higher id.
func TestMigrateFromVersion3(t *testing.T) {
	ctx := context.Background()
	path := oldDatabase(t, 3, func(ctx context.Context, conn *sql.Conn) {
		execAll(t, ctx, conn,
			`INSERT INTO messages (id, tenant, mail_from, header_from, message_id, subject, class, size, client_addr, auth_user, received_at)
				VALUES ('old-1', 'issuer', 'b@issuer.example', 'c@issuer.example', 'old-1@issuer.example', 'old', 'bulk', 1, '192.0.2.1', '', 1)`,
			`INSERT INTO recipients (message_id, address, domain, address_key, tracking_id, prefix, content_id, state, next_attempt, updated_at)
				VALUES ('old-1', 'a@example.com', 'example.com', 'a@example.com', 'old-1/a', NULL, NULL, 'delivered', 0, 1)`,
			`INSERT INTO links (token_hash, message_id, recipient_id, tenant, url, state, uses, max_uses, expires_at, created_at, updated_at)
				VALUES (x'`+strings.Repeat("ab", 32)+`', 'old-1', 1, 'issuer', 'https://issuer.example/d/1', 'enabled', 0, 3, 0, 1, 1)`,
			// Ids with a gap, as a log whose middle went (it never did, but ids are what must survive).
			`INSERT INTO events (id, message_id, recipient_id, time, kind, actor, detail) VALUES
				(1, 'old-1', 0, 1, 'accepted', 'smtp:192.0.2.1', ''),
				(5, 'old-1', 1, 2, 'delivered', 'queue', '250 ok'),
				(9, 'old-1', 1, 3, 'link_refused', 'browser:192.0.2.7', 'pending: download')`,
			`INSERT INTO cursors (name, event_id, updated_at) VALUES ('webhook:crm', 9, 1)`)
	})

	s, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatalf("Open of a version 3 database: %v", err)
	}
	defer s.Close()
	evs, err := s.EventsAfter(ctx, 0, 10)
	if err != nil || len(evs) != 3 {
		t.Fatalf("EventsAfter after migration = %+v, %v", evs, err)
	}
	for i, want := range []struct {
		id   int64
		kind string
	}{{1, "accepted"}, {5, "delivered"}, {9, "link_refused"}} {
		if e := evs[i]; e.ID != want.id || e.Kind != want.kind || e.Count != 1 || e.Time != time.Unix(0, int64(i+1)).UTC() {
			t.Errorf("migrated event %d = %+v, want id %d, %s, count 1", i, e, want.id, want.kind)
		}
	}
	var hash [32]byte
	for i := range hash {
		hash[i] = 0xab
	}
	l, err := s.LinkByToken(ctx, hash)
	if err != nil || l.Refusals.Count != 0 || l.Refusals.Recent != nil || !l.Refusals.NoticedAt.IsZero() {
		t.Fatalf("migrated link = %+v, %v", l, err)
	}
	if _, err := s.RefuseLink(ctx, l.ID, store.LinkRefusal{Time: time.Unix(0, 4).UTC(), Reason: "too_fast"}, "browser:192.0.2.7"); err != nil {
		t.Fatalf("RefuseLink after migration: %v", err)
	}
	if _, err := s.DeleteEvents(ctx, time.Unix(0, 100), 100); err != nil {
		t.Fatal(err)
	}
	if err := s.AddEvent(ctx, store.Event{MessageID: "old-1", Kind: "note", Actor: "test"}); err != nil {
		t.Fatal(err)
	}
	if evs, err := s.EventsAfter(ctx, 0, 10); err != nil || len(evs) != 1 || evs[0].ID <= 10 {
		t.Errorf("after deleting the migrated log, EventsAfter = %+v, %v; want one event above id 10", evs, err)
	}
}

// oldDatabase makes a database as a release with the first steps of the
// schema left it, lets fill write rows with that release's statements,
// and returns its path.
func oldDatabase(t *testing.T, steps int, fill func(ctx context.Context, conn *sql.Conn)) string {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "certgate.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := migrateTo(ctx, conn, migrations[:steps]); err != nil {
		t.Fatalf("schema steps 1-%d: %v", steps, err)
	}
	fill(ctx, conn)
	return path
}

// execAll runs statements that take no arguments.
func execAll(t *testing.T, ctx context.Context, conn *sql.Conn, stmts ...string) {
	t.Helper()
	for _, q := range stmts {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
}

// fillVersion1 writes two messages as the first release did.
func fillVersion1(t *testing.T, ctx context.Context, conn *sql.Conn, received time.Time, addrs []string) {
	for i, id := range []string{"old-1", "old-2"} {
		if _, err := conn.ExecContext(ctx, `INSERT INTO messages (id, tenant, mail_from, header_from,
			message_id, subject, class, size, client_addr, auth_user, received_at)
			VALUES (?, 'issuer', 'b@issuer.example', 'c@issuer.example', ?, 'old', 'bulk', 1, '192.0.2.1', '', ?)`,
			id, id+"@issuer.example", received.Add(time.Duration(i)*time.Minute).UnixNano()); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.ExecContext(ctx, "INSERT INTO contents (message_id, data) VALUES (?, 'x')", id); err != nil {
			t.Fatal(err)
		}
		for j, a := range addrs {
			state := "queued"
			if j == 0 && i == 1 {
				state = "held"
			}
			if _, err := conn.ExecContext(ctx, `INSERT INTO recipients (message_id, address, domain,
				tracking_id, prefix, content_id, state, next_attempt, updated_at)
				VALUES (?, ?, ?, ?, x'', 1, ?, 0, 1)`, id, a, store.DomainOf(a), id+a, state); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := conn.ExecContext(ctx, `INSERT INTO events (message_id, time, kind, actor, detail)
			VALUES (?, 1, 'accepted', 'smtp:192.0.2.1', 'old')`, id); err != nil {
			t.Fatal(err)
		}
	}
}

// TestMigrateFromVersion4 opens a database as the release before seed
// copies left it: its recipients are customers' copies with no placement,
// still delivered as before, and new mail can carry seed copies.
func TestMigrateFromVersion4(t *testing.T) {
	ctx := context.Background()
	path := oldDatabase(t, 4, func(ctx context.Context, conn *sql.Conn) {
		execAll(t, ctx, conn,
			`INSERT INTO messages (id, tenant, mail_from, header_from, message_id, subject, class, size, client_addr, auth_user, received_at)
				VALUES ('old-1', 'issuer', 'b@issuer.example', 'c@issuer.example', 'old-1@issuer.example', 'old', 'bulk', 1, '192.0.2.1', '', 1)`,
			`INSERT INTO contents (message_id, data) VALUES ('old-1', 'x')`,
			`INSERT INTO recipients (message_id, address, domain, address_key, tracking_id, prefix, content_id, state, next_attempt, updated_at)
				VALUES ('old-1', 'a@example.com', 'example.com', 'a@example.com', 'old-1/a', x'', 1, 'queued', 1, 1)`,
			`INSERT INTO events (message_id, time, kind, actor, detail) VALUES ('old-1', 1, 'accepted', 'smtp:192.0.2.1', '')`)
	})
	s, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatalf("Open of a version 4 database: %v", err)
	}
	defer s.Close()

	var old []store.Pending
	if err := s.Pending(ctx, func(p store.Pending) error { old = append(old, p); return nil }); err != nil || len(old) != 1 || old[0].Seed != "" {
		t.Fatalf("Pending after migration = %+v, %v; want the old copy, no seed", old, err)
	}
	if _, err := s.PlacementByTracking(ctx, "old-1/a"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("an old copy has a placement: %v", err)
	}
	if err := s.RecordAttempt(ctx, store.Attempt{RecipientID: old[0].RecipientID, State: store.StateDelivered, Provider: "gmail", Code: 250}); err != nil {
		t.Fatalf("delivering an old copy: %v", err)
	}
	ids, err := s.Enqueue(ctx, store.Message{ID: "new-1", Tenant: "issuer", Class: "bulk", MessageID: "new-1@issuer.example"}, [][]byte{[]byte("x")},
		[]store.NewRecipient{{Address: "seed@gmail.example", TrackingID: "new-1/seed", State: store.StateQueued, Seed: "gmail-1"}})
	if err != nil {
		t.Fatalf("Enqueue of a seed copy after migration: %v", err)
	}
	if p, err := s.PlacementByTracking(ctx, "new-1/seed"); err != nil || p.RecipientID != ids[0] || p.Folder != store.FolderPending {
		t.Errorf("placement of a new seed copy = %+v, %v", p, err)
	}
}

// Step 7 rebuilds events for lane events: every id stays, and so does the
// AUTOINCREMENT sequence above the highest id left (the newest events
// deleted by retention), so a webhook cursor past them never sees an id
// again.
func TestMigrateFromVersion6KeepsEventIDs(t *testing.T) {
	ctx := context.Background()
	path := oldDatabase(t, 6, func(ctx context.Context, conn *sql.Conn) {
		execAll(t, ctx, conn,
			`INSERT INTO messages (id, tenant, mail_from, header_from, message_id, subject, class, size, client_addr, auth_user, received_at)
				VALUES ('old-1', 'issuer', 'b@issuer.example', 'c@issuer.example', 'old-1@issuer.example', 'old', 'bulk', 1, '192.0.2.1', '', 1)`,
			`INSERT INTO events (message_id, recipient_id, time, kind, actor, detail) VALUES
				('old-1', 0, 1, 'accepted', 'smtp:192.0.2.1', ''), ('old-1', 0, 2, 'note', 'api:x', ''), ('old-1', 0, 3, 'note', 'api:x', '')`,
			`DELETE FROM events WHERE id >= 2`) // the sequence stays at 3
	})
	s, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatalf("Open of a version 6 database: %v", err)
	}
	defer s.Close()
	if err := s.AddLaneEvent(ctx, "gmail", store.Event{Kind: "lane_changed", Actor: "policy", Detail: "gmail: slowed"}); err != nil {
		t.Fatal(err)
	}
	evs, err := s.EventsAfter(ctx, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[0].ID != 1 || evs[0].MessageID != "old-1" || evs[1].ID <= 3 || evs[1].Lane != "gmail" {
		t.Fatalf("events after the migration: %+v; want id 1 kept and the new one above 3", evs)
	}
}
