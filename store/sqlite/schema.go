package sqlite

import (
	"context"
	"database/sql"
	"fmt"
)

// migrations are the schema's history, applied in order at Open. Each step
// runs in the transaction that records its number in schema_version, so a
// crash mid-migration leaves the previous version intact. Never edit a step
// that has shipped; append a new one.
var migrations = []string{
	// 1: the initial schema.
	`
CREATE TABLE messages (
	id          TEXT PRIMARY KEY,
	tenant      TEXT NOT NULL,
	mail_from   TEXT NOT NULL,
	header_from TEXT NOT NULL,
	message_id  TEXT NOT NULL,
	subject     TEXT NOT NULL,
	class       TEXT NOT NULL,
	size        INTEGER NOT NULL,
	client_addr TEXT NOT NULL,
	auth_user   TEXT NOT NULL,
	received_at INTEGER NOT NULL -- Unix nanoseconds, UTC
);
-- The helpdesk looks mail up by its Message-ID header.
CREATE INDEX messages_message_id ON messages(message_id);

-- One row per distinct body; recipients that share a body share its row.
CREATE TABLE contents (
	id         INTEGER PRIMARY KEY,
	message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
	data       BLOB NOT NULL
);
CREATE INDEX contents_message ON contents(message_id);

-- content_id is deliberately not a foreign key: dropping contents would
-- then make SQLite search recipients by content_id, which needs an index
-- that every enqueue would pay for. The store clears content_id itself
-- in the transaction that drops the contents.
CREATE TABLE recipients (
	id           INTEGER PRIMARY KEY,
	message_id   TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
	address      TEXT NOT NULL,
	domain       TEXT NOT NULL,
	tracking_id  TEXT UNIQUE, -- NULL when the caller gave none
	prefix       BLOB,        -- NULL once the contents are dropped
	content_id   INTEGER,
	state        TEXT NOT NULL,
	attempts     INTEGER NOT NULL DEFAULT 0,
	next_attempt INTEGER NOT NULL, -- Unix nanoseconds, 0 for none
	provider     TEXT NOT NULL DEFAULT '',
	last_code    INTEGER NOT NULL DEFAULT 0,
	last_reply   TEXT NOT NULL DEFAULT '',
	updated_at   INTEGER NOT NULL
);
CREATE INDEX recipients_message ON recipients(message_id);
-- Pending scans state = 'queued' in id order; the index carries the rowid.
CREATE INDEX recipients_state ON recipients(state);

-- recipient_id is not a foreign key for the same reason as content_id.
CREATE TABLE events (
	id           INTEGER PRIMARY KEY,
	message_id   TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
	recipient_id INTEGER NOT NULL DEFAULT 0,
	time         INTEGER NOT NULL,
	kind         TEXT NOT NULL,
	actor        TEXT NOT NULL,
	detail       TEXT NOT NULL
);
CREATE INDEX events_message ON events(message_id);
`,
}

// migrate brings the database to the newest schema this binary knows. It
// refuses a database written by a newer binary rather than guess at it.
func migrate(ctx context.Context, conn *sql.Conn) (err error) {
	// IMMEDIATE takes the write lock up front, so two processes opening the
	// same new file cannot both decide to create the schema.
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return fmt.Errorf("begin migration: %w", err)
	}
	defer func() {
		if err != nil {
			conn.ExecContext(context.Background(), "ROLLBACK")
		}
	}()
	if _, err := conn.ExecContext(ctx,
		"CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"); err != nil {
		return fmt.Errorf("create schema_version: %w", err)
	}
	var version int
	switch err := conn.QueryRowContext(ctx, "SELECT version FROM schema_version").Scan(&version); err {
	case nil:
	case sql.ErrNoRows:
		if _, err := conn.ExecContext(ctx, "INSERT INTO schema_version (version) VALUES (0)"); err != nil {
			return fmt.Errorf("init schema_version: %w", err)
		}
	default:
		return fmt.Errorf("read schema_version: %w", err)
	}
	if version > len(migrations) {
		return fmt.Errorf("database schema version %d is newer than this binary supports (%d)", version, len(migrations))
	}
	for i := version; i < len(migrations); i++ {
		if _, err := conn.ExecContext(ctx, migrations[i]); err != nil {
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
	}
	if _, err := conn.ExecContext(ctx, "UPDATE schema_version SET version = ?", len(migrations)); err != nil {
		return fmt.Errorf("record schema version: %w", err)
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		return fmt.Errorf("commit migration: %w", err)
	}
	return nil
}
