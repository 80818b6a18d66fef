package sqlite

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"path/filepath"
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
	path := filepath.Join(t.TempDir(), "certgate.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := migrateTo(ctx, conn, migrations[:1]); err != nil {
		t.Fatalf("schema step 1: %v", err)
	}
	received := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	addrs := []string{"Alice@Example.COM", "odd@name@Tricky.Example", "postmaster", "bob@", "Ünï@Bücher.EXAMPLE"}
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
	conn.Close()
	db.Close()

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
