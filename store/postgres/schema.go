package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrations are the schema's history, applied in order at Open, each in
// its own transaction with the row that records it in schema_migrations,
// so a crash mid-migration leaves the previous version intact. Never edit
// a step that has shipped; append a new one. (None has shipped yet: step
// 1 may still change until the backend is selectable in the
// configuration.)
//
// The tables mirror store/sqlite's, with these choices:
//   - Times are bigint Unix nanoseconds, UTC, 0 for none, as in SQLite:
//     the store returns them unchanged, and a copy from SQLite
//     (certgate store copy) moves them as they are.
//   - Row ids are bigint identity columns; EventsAfter reads events only
//     once every smaller id is committed or never will be (see
//     insertEvents), so its promise holds.
//   - Message ids are text in the "C" collation: they sort by time byte
//     by byte, which Search's paging and order rely on, whatever the
//     database's default collation.
//   - Binary data (bodies, prefixes, token hashes) is bytea; JSON that is
//     only ever read back whole stays text.
var migrations = []string{
	// 1: the schema of store/sqlite's eight steps, in one.
	`
CREATE TABLE messages (
	id          text COLLATE "C" PRIMARY KEY,
	tenant      text NOT NULL,
	mail_from   text NOT NULL,
	header_from text NOT NULL,
	message_id  text NOT NULL,
	subject     text NOT NULL,
	class       text NOT NULL,
	size        bigint NOT NULL,
	client_addr text NOT NULL,
	auth_user   text NOT NULL,
	received_at bigint NOT NULL
);
CREATE INDEX messages_message_id ON messages(message_id);
CREATE INDEX messages_received ON messages(received_at);

CREATE TABLE contents (
	id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	message_id text COLLATE "C" NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
	data       bytea NOT NULL
);
CREATE INDEX contents_message ON contents(message_id);

CREATE TABLE recipients (
	id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	message_id   text COLLATE "C" NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
	address      text NOT NULL,
	domain       text NOT NULL,
	address_key  text NOT NULL,
	tracking_id  text UNIQUE,
	prefix       bytea,  -- NULL once the contents are dropped
	content_id   bigint, -- not a foreign key: the store clears it with the contents
	state        text NOT NULL,
	attempts     integer NOT NULL DEFAULT 0,
	next_attempt bigint NOT NULL,
	provider     text NOT NULL DEFAULT '',
	last_code    integer NOT NULL DEFAULT 0,
	last_reply   text NOT NULL DEFAULT '',
	updated_at   bigint NOT NULL,
	seed         text NOT NULL DEFAULT ''
);
CREATE INDEX recipients_message ON recipients(message_id);
CREATE INDEX recipients_address ON recipients(address_key);
-- Pending and Release look for the few live copies among the history.
CREATE INDEX recipients_live ON recipients(state, id) WHERE state IN ('queued', 'held');

CREATE TABLE events (
	id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	message_id   text COLLATE "C" REFERENCES messages(id) ON DELETE CASCADE, -- NULL for a lane's event
	recipient_id bigint NOT NULL DEFAULT 0,
	time         bigint NOT NULL,
	kind         text NOT NULL,
	actor        text NOT NULL,
	detail       text NOT NULL,
	count        bigint NOT NULL DEFAULT 1,
	lane         text NOT NULL DEFAULT ''
);
CREATE INDEX events_message ON events(message_id, id);
CREATE INDEX events_time ON events(time);

CREATE TABLE links (
	id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	token_hash          bytea NOT NULL UNIQUE,
	message_id          text COLLATE "C" NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
	recipient_id        bigint NOT NULL,
	tenant              text NOT NULL,
	url                 text NOT NULL,
	state               text NOT NULL,
	uses                integer NOT NULL DEFAULT 0,
	max_uses            integer NOT NULL,
	expires_at          bigint NOT NULL,
	created_at          bigint NOT NULL,
	updated_at          bigint NOT NULL,
	refusals            bigint NOT NULL DEFAULT 0,
	refusals_noticed    bigint NOT NULL DEFAULT 0,
	refusals_noticed_at bigint NOT NULL DEFAULT 0,
	refusals_recent     text NOT NULL DEFAULT '[]'
);
CREATE INDEX links_message ON links(message_id);

CREATE TABLE cursors (
	name       text PRIMARY KEY,
	event_id   bigint NOT NULL,
	updated_at bigint NOT NULL
);

CREATE TABLE placements (
	recipient_id bigint PRIMARY KEY REFERENCES recipients(id) ON DELETE CASCADE,
	message_id   text COLLATE "C" NOT NULL,
	tenant       text NOT NULL,
	seed         text NOT NULL,
	address      text NOT NULL,
	header       text NOT NULL,
	class        text NOT NULL,
	folder       text NOT NULL,
	provider     text NOT NULL DEFAULT '',
	delivered_at bigint NOT NULL DEFAULT 0,
	at           bigint NOT NULL,
	arrived_at   bigint NOT NULL DEFAULT 0,
	detected_at  bigint NOT NULL DEFAULT 0,
	verdicts     text,
	mailbox      text NOT NULL DEFAULT '',
	uid_validity bigint NOT NULL DEFAULT 0,
	uid          bigint NOT NULL DEFAULT 0,
	moves        text NOT NULL DEFAULT '[]',
	closed_at    bigint NOT NULL DEFAULT 0
);
CREATE INDEX placements_header ON placements(header, lower(address));
CREATE INDEX placements_due ON placements(delivered_at) WHERE closed_at = 0;
CREATE INDEX placements_at ON placements(at);
CREATE INDEX placements_tenant ON placements(tenant, at);
CREATE INDEX placements_provider ON placements(provider, at);
CREATE INDEX placements_message ON placements(message_id);

CREATE TABLE seed_folders (
	seed         text NOT NULL,
	mailbox      text NOT NULL,
	uid_validity bigint NOT NULL,
	last_uid     bigint NOT NULL,
	updated_at   bigint NOT NULL,
	PRIMARY KEY (seed, mailbox)
);

CREATE TABLE lane_states (
	lane       text PRIMARY KEY,
	state      text NOT NULL,
	updated_at bigint NOT NULL
);

CREATE TABLE idempotency_keys (
	key        bytea PRIMARY KEY, -- the API's keys hold a NUL, which text refuses
	body_hash  bytea NOT NULL,
	status     integer NOT NULL DEFAULT 0,
	response   bytea,
	expires_at bigint NOT NULL
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys(expires_at);
`,
	// 2: leases for several nodes sharing the queue (cluster.go).
	clusterSchema,
}

// Advisory lock keys of this store (pg_advisory_lock's bigint space is
// shared by every application on the database: these are "certgate"
// in ASCII, and one more).
const (
	migrateLock int64 = 0x6365727467617465
	eventsLock  int64 = 0x6365727467617466
)

// migrate brings the database to the newest schema this binary knows. A
// session advisory lock makes nodes that start together migrate one after
// the other: the second finds the work done. It refuses a database
// written by a newer binary rather than guess at it.
func migrate(ctx context.Context, pool *pgxpool.Pool) error {
	return migrateTo(ctx, pool, migrations)
}

func migrateTo(ctx context.Context, pool *pgxpool.Pool, steps []string) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrateLock); err != nil {
		return fmt.Errorf("lock for migration: %w", err)
	}
	defer conn.Exec(context.Background(), "SELECT pg_advisory_unlock($1)", migrateLock)
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    integer PRIMARY KEY,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	var version int
	if err := conn.QueryRow(ctx, "SELECT COALESCE(max(version), 0) FROM schema_migrations").Scan(&version); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if version > len(steps) {
		return fmt.Errorf("database schema version %d is newer than this binary supports (%d)", version, len(steps))
	}
	for i := version; i < len(steps); i++ {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, steps[i]); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version) VALUES ($1)", i+1)
			return err
		})
		if err != nil {
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
	}
	return nil
}
