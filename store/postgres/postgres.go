// Package postgres is a store.Store on PostgreSQL, for several certgate
// nodes sharing one queue (issue 14). It holds to the same contract as
// store/sqlite, checked by the same store/storetest suite.
package postgres

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/certgate/certgate/store"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrClosed is returned by calls made after Close.
var ErrClosed = errors.New("store/postgres: closed")

// Options tune the store.
type Options struct {
	// MaxConns bounds the connection pool (pgxpool's default when 0).
	MaxConns int32
	// Node, when set, makes the store a cluster member's (store.Cluster):
	// what it accepts and releases is leased to this node, Pending yields
	// this node's claims only, and attempts are recorded only for them.
	Node string
}

// Store is a store.Store on a PostgreSQL database.
type Store struct {
	pool *pgxpool.Pool
	// node is Options.Node; instance tells this process from an earlier
	// one of the same node, started when it opened the store.
	node     string
	instance string
	started  time.Time

	mu     sync.RWMutex
	closed bool
}

// Open connects to the database dsn names and brings its schema to the
// newest version, once even when several nodes open it together.
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx's message may quote the DSN, password and all.
		return nil, errors.New("store/postgres: the DSN does not parse")
	}
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("store/postgres: %w", err)
	}
	if err := migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("store/postgres: %w", err)
	}
	return &Store{pool: pool, node: opts.Node, instance: rand.Text(), started: time.Now()}, nil
}

// Close waits for the calls under way and closes the pool; later calls
// fail with ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.pool.Close()
	return nil
}

// use runs fn unless the store is closed, holding Close off meanwhile.
func (s *Store) use(fn func() error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	return fn()
}

// tx runs fn in a read-committed transaction and commits it. PostgreSQL
// makes a commit durable before it answers (synchronous_commit on, as
// the store's contract needs; the operator must not turn it off).
func (s *Store) tx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.use(func() error { return pgx.BeginFunc(ctx, s.pool, fn) })
}

// The events lock orders event ids by commit: a transaction adding
// events takes it shared, to the end of the transaction, before it takes
// their ids, and EventsAfter takes it exclusive, for its transaction,
// before it reads. So the reader waits until every transaction that took
// an id has committed (or rolled back) and is visible, and any id taken
// after is larger than all it can see: a reader that resumes after the
// last id it saw never skips one that an older transaction commits
// later. Writers do not wait for each other (their commits' flushes can
// be grouped), only, briefly, for a reader; the statement that takes the
// lock also inserts the events (insertEvents) and comes last, right
// before the commit. A transaction holding the lock must never wait for
// a row another writer may hold while waiting for the lock behind a
// reader: events come after every row lock of their transaction.
//
// insertEvents takes the lock and then inserts the events given as
// arrays ($2..$9, see eventArgs), in their order: the rows are sorted
// before they are inserted, and each takes its id as it is inserted,
// once the lock (a FROM item, read before any row is made) is held.
const insertEvents = `INSERT INTO events (message_id, recipient_id, time, kind, actor, detail, count, lane)
	SELECT NULLIF(e.message_id, ''), e.recipient_id, e.time, e.kind, e.actor, e.detail, e.count, e.lane
	FROM pg_advisory_xact_lock_shared($1) AS l,
		unnest($2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::bigint[], $9::text[])
		WITH ORDINALITY AS e(message_id, recipient_id, time, kind, actor, detail, count, lane, n)
	ORDER BY e.n`

// eventArgs are insertEvents' arguments for evs.
func eventArgs(evs []laneEvent) []any {
	n := len(evs)
	msgs, kinds, actors, details, lanes := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	rcpts, times, counts := make([]int64, n), make([]int64, n), make([]int64, n)
	for i, e := range evs {
		msgs[i], rcpts[i], times[i], kinds[i] = e.MessageID, e.RecipientID, store.Nanos(e.Time), e.Kind
		actors[i], details[i], counts[i], lanes[i] = e.Actor, e.Detail, max(e.Count, 1), e.lane
	}
	return []any{eventsLock, msgs, rcpts, times, kinds, actors, details, counts, lanes}
}
