package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/certgate/certgate/store"
	"github.com/jackc/pgx/v5"
)

// maxEventsPage bounds one EventsAfter call, whatever limit is asked for.
const maxEventsPage = 10000

// EventsAfter reads the next events of the log in id order. It reads
// under the events lock, taken exclusive (see insertEvents), so it never
// sees an id while a smaller one is still to come. The lock and the read
// are one batch: one implicit transaction, whose read takes its snapshot
// once the lock is held.
func (s *Store) EventsAfter(ctx context.Context, afterID int64, limit int) ([]store.EventRecord, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("store/postgres: events after %d: limit %d is not positive", afterID, limit)
	}
	limit = min(limit, maxEventsPage)
	var out []store.EventRecord
	err := s.use(func() error {
		// recipient_id 0 (a message's event) matches no recipient.
		var b pgx.Batch
		b.Queue("SELECT pg_advisory_xact_lock($1)", eventsLock)
		b.Queue(`
			SELECT e.id, COALESCE(e.message_id, ''), e.recipient_id, e.time, e.kind, e.actor, e.detail, e.count,
				COALESCE(m.tenant, ''), COALESCE(r.address, ''), COALESCE(r.seed, ''), e.lane
			FROM events e
			LEFT JOIN messages m ON m.id = e.message_id
			LEFT JOIN recipients r ON r.id = e.recipient_id
			WHERE e.id > $1
			ORDER BY e.id LIMIT $2`, afterID, limit)
		br := s.pool.SendBatch(ctx, &b)
		defer br.Close()
		if _, err := br.Exec(); err != nil {
			return fmt.Errorf("lock events: %w", err)
		}
		rows, err := br.Query()
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.EventRecord, error) {
			var e store.EventRecord
			var at int64
			err := row.Scan(&e.ID, &e.MessageID, &e.RecipientID, &at, &e.Kind, &e.Actor, &e.Detail, &e.Count,
				&e.Tenant, &e.Recipient, &e.Seed, &e.Lane)
			e.Time = store.FromNanos(at)
			return e, err
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store/postgres: events after %d: %w", afterID, err)
	}
	return out, nil
}

// Cursor reads the event id stored under name; 0 when there is none.
func (s *Store) Cursor(ctx context.Context, name string) (int64, error) {
	var id int64
	err := s.use(func() error {
		return s.pool.QueryRow(ctx, "SELECT event_id FROM cursors WHERE name = $1", name).Scan(&id)
	})
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("store/postgres: cursor %q: %w", name, err)
	}
	return id, nil
}

// SetCursor stores id under name.
func (s *Store) SetCursor(ctx context.Context, name string, id int64) error {
	if name == "" {
		return errors.New("store/postgres: set cursor: empty name")
	}
	if id < 0 {
		return fmt.Errorf("store/postgres: set cursor %q: negative event id %d", name, id)
	}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO cursors (name, event_id, updated_at) VALUES ($1, $2, $3)
			ON CONFLICT (name) DO UPDATE SET event_id = excluded.event_id, updated_at = excluded.updated_at`,
			name, id, store.Nanos(time.Now()))
		return err
	})
	if err != nil {
		return fmt.Errorf("store/postgres: set cursor %q: %w", name, err)
	}
	return nil
}

// DeleteEvents deletes the oldest events before before, at most limit.
// Ids come from a sequence, which never gives one twice.
func (s *Store) DeleteEvents(ctx context.Context, before time.Time, limit int) (int, error) {
	return s.delete(ctx, "events", `DELETE FROM events WHERE id IN
		(SELECT id FROM events WHERE time < $1 ORDER BY time LIMIT $2)`, before, limit)
}

// DeleteMessages deletes the oldest finished messages received before
// before, at most limit; foreign keys take their contents, recipients
// (and their placements), links and events with them.
func (s *Store) DeleteMessages(ctx context.Context, before time.Time, limit int) (int, error) {
	return s.delete(ctx, "messages", `DELETE FROM messages WHERE id IN
		(SELECT id FROM messages m WHERE received_at < $1 AND NOT EXISTS
			(SELECT 1 FROM recipients r WHERE r.message_id = m.id AND r.state IN ('queued', 'held'))
		ORDER BY received_at LIMIT $2)`, before, limit)
}

// delete runs one retention delete, which takes a time and a limit.
func (s *Store) delete(ctx context.Context, what, query string, before time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, fmt.Errorf("store/postgres: delete %s: limit %d is not positive", what, limit)
	}
	var n int64
	err := s.tx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, query, store.Nanos(before), limit)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store/postgres: delete %s: %w", what, err)
	}
	return int(n), nil
}
