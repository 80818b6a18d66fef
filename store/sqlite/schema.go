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

	// 2: gated download links, and recipient search by address.
	`
-- address_key is the address with its domain lower-cased (store.AddressKey), so
-- that search by address can use an index while the local part stays
-- exact. Rows from before this step get it here: everything up to the
-- last '@' (rtrim drops every trailing character that is not an '@'),
-- then the domain column, which was always stored lower-cased.
ALTER TABLE recipients ADD COLUMN address_key TEXT NOT NULL DEFAULT '';
UPDATE recipients SET address_key = CASE
	WHEN instr(address, '@') = 0 THEN address
	ELSE rtrim(address, replace(address, '@', '')) || domain
END;
CREATE INDEX recipients_address ON recipients(address_key);

-- Only the SHA-256 of a link's token is kept; the token is in the mail
-- alone. recipient_id is not a foreign key, like events.recipient_id:
-- recipients only go with their message, and links with it too.
CREATE TABLE links (
	id           INTEGER PRIMARY KEY,
	token_hash   BLOB NOT NULL UNIQUE, -- the unique index is the lookup by token
	message_id   TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
	recipient_id INTEGER NOT NULL,
	tenant       TEXT NOT NULL, -- the message's, so the gate needs no join
	url          TEXT NOT NULL,
	state        TEXT NOT NULL,
	uses         INTEGER NOT NULL DEFAULT 0,
	max_uses     INTEGER NOT NULL, -- 0 for unlimited
	expires_at   INTEGER NOT NULL, -- Unix nanoseconds, 0 for never
	created_at   INTEGER NOT NULL,
	updated_at   INTEGER NOT NULL
);
CREATE INDEX links_message ON links(message_id);
`,

	// 3: consumers' positions in the event log (webhooks).
	`
-- EventsAfter walks events by id, and a consumer resumes after the id it
-- stored here. That relies on event ids never being reused: SQLite gives
-- a new row the largest id plus one, so events must never be deleted
-- from the top of the table (nothing deletes them today; a retention job
-- must keep the newest event or rebuild the table with AUTOINCREMENT).
CREATE TABLE cursors (
	name       TEXT PRIMARY KEY,
	event_id   INTEGER NOT NULL,
	updated_at INTEGER NOT NULL -- Unix nanoseconds, UTC
);
`,

	// 4: retention, and refused link presses counted instead of written.
	`
-- Retention deletes old events, the newest too when they are old, and
-- whole messages with their events; plain INTEGER PRIMARY KEY would then
-- give the next event an id a webhook cursor has passed. AUTOINCREMENT
-- never gives an id twice. The table is rebuilt, every id kept, with
-- count: how many occurrences an event stands for (store.Event.Count).
CREATE TABLE events_v4 (
	id           INTEGER PRIMARY KEY AUTOINCREMENT,
	message_id   TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
	recipient_id INTEGER NOT NULL DEFAULT 0,
	time         INTEGER NOT NULL,
	kind         TEXT NOT NULL,
	actor        TEXT NOT NULL,
	detail       TEXT NOT NULL,
	count        INTEGER NOT NULL DEFAULT 1
);
INSERT INTO events_v4 (id, message_id, recipient_id, time, kind, actor, detail)
	SELECT id, message_id, recipient_id, time, kind, actor, detail FROM events ORDER BY id;
DROP TABLE events;
ALTER TABLE events_v4 RENAME TO events;
CREATE INDEX events_message ON events(message_id);
-- The sweep takes the oldest events, and the oldest finished messages.
CREATE INDEX events_time ON events(time);
CREATE INDEX messages_received ON messages(received_at);

-- What a link keeps of its refused presses (store.LinkRefusals); recent
-- is a JSON list of the latest few.
ALTER TABLE links ADD COLUMN refusals INTEGER NOT NULL DEFAULT 0;
ALTER TABLE links ADD COLUMN refusals_noticed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE links ADD COLUMN refusals_noticed_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE links ADD COLUMN refusals_recent TEXT NOT NULL DEFAULT '[]';
`,

	// 5: seed copies and where they landed (store.Placement).
	`
-- The seed mailbox a copy goes to; '' for a customer's copy.
ALTER TABLE recipients ADD COLUMN seed TEXT NOT NULL DEFAULT '';

-- One row per seed copy, made with its recipient and gone with it. The
-- message's fields are copied in so that every query here is answered
-- from this table's indexes; the tracking id is read from recipients
-- (its unique index is the lookup).
CREATE TABLE placements (
	recipient_id INTEGER PRIMARY KEY REFERENCES recipients(id) ON DELETE CASCADE,
	message_id   TEXT NOT NULL,
	tenant       TEXT NOT NULL,
	seed         TEXT NOT NULL,
	address      TEXT NOT NULL,
	header       TEXT NOT NULL, -- the message's Message-ID header
	class        TEXT NOT NULL,
	folder       TEXT NOT NULL,
	provider     TEXT NOT NULL DEFAULT '',
	delivered_at INTEGER NOT NULL DEFAULT 0, -- Unix nanoseconds, 0 for none
	-- delivered_at once delivered, the message's received_at before:
	-- what PlacementQuery.Since and the newest-first order go by.
	at           INTEGER NOT NULL,
	arrived_at   INTEGER NOT NULL DEFAULT 0,
	detected_at  INTEGER NOT NULL DEFAULT 0,
	verdicts     TEXT,          -- JSON, NULL until found
	mailbox      TEXT NOT NULL DEFAULT '',
	uid_validity INTEGER NOT NULL DEFAULT 0,
	uid          INTEGER NOT NULL DEFAULT 0,
	moves        TEXT NOT NULL DEFAULT '[]', -- JSON list, oldest first
	closed_at    INTEGER NOT NULL DEFAULT 0
);
-- The watcher's fallback match: a copy's Message-ID header and address.
CREATE INDEX placements_header ON placements(header, address);
-- The deadline sweep: open copies by delivery.
CREATE INDEX placements_due ON placements(delivered_at) WHERE closed_at = 0;
-- The API and the metrics: newest first, by tenant or provider.
CREATE INDEX placements_at ON placements(at);
CREATE INDEX placements_tenant ON placements(tenant, at);
CREATE INDEX placements_provider ON placements(provider, at);
CREATE INDEX placements_message ON placements(message_id);

-- The watcher's position in each folder of each seed mailbox.
CREATE TABLE seed_folders (
	seed         TEXT NOT NULL,
	mailbox      TEXT NOT NULL,
	uid_validity INTEGER NOT NULL,
	last_uid     INTEGER NOT NULL,
	updated_at   INTEGER NOT NULL, -- Unix nanoseconds, UTC
	PRIMARY KEY (seed, mailbox)
) WITHOUT ROWID;
`,
	// 6: each delivery lane's state, so that a restart resumes a slowdown,
	// a suspension or a pause rather than the static configuration.
	`
CREATE TABLE lane_states (
	lane       TEXT PRIMARY KEY,
	state      TEXT NOT NULL, -- the policy's snapshot, JSON
	updated_at INTEGER NOT NULL -- Unix nanoseconds, UTC
) WITHOUT ROWID;
`,
	// 7: events about a delivery lane rather than a message (lane_changed),
	// on the same log webhooks follow: message_id may be NULL, lane names
	// the lane. The table is rebuilt, every id kept, and so is the
	// AUTOINCREMENT sequence, which may stand above the highest id left.
	`
CREATE TABLE events_v7 (
	id           INTEGER PRIMARY KEY AUTOINCREMENT,
	message_id   TEXT REFERENCES messages(id) ON DELETE CASCADE,
	recipient_id INTEGER NOT NULL DEFAULT 0,
	time         INTEGER NOT NULL,
	kind         TEXT NOT NULL,
	actor        TEXT NOT NULL,
	detail       TEXT NOT NULL,
	count        INTEGER NOT NULL DEFAULT 1,
	lane         TEXT NOT NULL DEFAULT ''
);
INSERT INTO events_v7 (id, message_id, recipient_id, time, kind, actor, detail, count)
	SELECT id, message_id, recipient_id, time, kind, actor, detail, count FROM events ORDER BY id;
DELETE FROM sqlite_sequence WHERE name = 'events_v7';
INSERT INTO sqlite_sequence (name, seq) SELECT 'events_v7', seq FROM sqlite_sequence WHERE name = 'events';
DROP TABLE events;
ALTER TABLE events_v7 RENAME TO events;
CREATE INDEX events_message ON events(message_id);
CREATE INDEX events_time ON events(time);
`,
	// 8: the API's Idempotency-Key answers (POST /api/v1/send), kept a
	// day: a key is claimed before the call acts; its answer is stored
	// with the message the call sent, in Enqueue's transaction.
	`
CREATE TABLE idempotency_keys (
	key        TEXT PRIMARY KEY, -- the caller's scope (token) and the key
	body_hash  BLOB NOT NULL,    -- SHA-256 of the request body
	status     INTEGER NOT NULL DEFAULT 0, -- 0 while the call is under way
	response   BLOB,
	expires_at INTEGER NOT NULL  -- Unix nanoseconds, UTC
) WITHOUT ROWID;
CREATE INDEX idempotency_keys_expiry ON idempotency_keys(expires_at);
`,
}

// migrate brings the database to the newest schema this binary knows. It
// refuses a database written by a newer binary rather than guess at it.
func migrate(ctx context.Context, conn *sql.Conn) error {
	return migrateTo(ctx, conn, migrations)
}

// migrateTo applies steps, a prefix of migrations; tests use it to build a
// database as an older binary left it.
func migrateTo(ctx context.Context, conn *sql.Conn, steps []string) (err error) {
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
	if version > len(steps) {
		return fmt.Errorf("database schema version %d is newer than this binary supports (%d)", version, len(steps))
	}
	for i := version; i < len(steps); i++ {
		if _, err := conn.ExecContext(ctx, steps[i]); err != nil {
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
	}
	if _, err := conn.ExecContext(ctx, "UPDATE schema_version SET version = ?", len(steps)); err != nil {
		return fmt.Errorf("record schema version: %w", err)
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		return fmt.Errorf("commit migration: %w", err)
	}
	return nil
}
