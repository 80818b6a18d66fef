package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/certgate/certgate/store"
)

// maxEventsPage bounds one EventsAfter call, whatever limit is asked for.
const maxEventsPage = 10000

// EventsAfter reads the next events of the log in id order. One writer
// commits every event, so ids are visible in order: a reader never sees
// an id while a smaller one is still to come.
func (s *Store) EventsAfter(ctx context.Context, afterID int64, limit int) ([]store.EventRecord, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("store/sqlite: events after %d: limit %d is not positive", afterID, limit)
	}
	limit = min(limit, maxEventsPage)
	// recipient_id 0 (a message's event) matches no recipient: ids start at 1.
	rows, err := s.rdb.QueryContext(ctx, `
		SELECT e.id, COALESCE(e.message_id, ''), e.recipient_id, e.time, e.kind, e.actor, e.detail, e.count,
			COALESCE(m.tenant, ''), COALESCE(r.address, ''), COALESCE(r.seed, ''), e.lane
		FROM events e
		LEFT JOIN messages m ON m.id = e.message_id
		LEFT JOIN recipients r ON r.id = e.recipient_id
		WHERE e.id > ?
		ORDER BY e.id LIMIT ?`, afterID, limit)
	if err != nil {
		return nil, fmt.Errorf("store/sqlite: events after %d: %w", afterID, err)
	}
	defer rows.Close()
	var out []store.EventRecord
	for rows.Next() {
		var e store.EventRecord
		var at int64
		if err := rows.Scan(&e.ID, &e.MessageID, &e.RecipientID, &at, &e.Kind, &e.Actor, &e.Detail, &e.Count,
			&e.Tenant, &e.Recipient, &e.Seed, &e.Lane); err != nil {
			return nil, fmt.Errorf("store/sqlite: events after %d: %w", afterID, err)
		}
		e.Time = store.FromNanos(at)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store/sqlite: events after %d: %w", afterID, err)
	}
	return out, nil
}

// Cursor reads the event id stored under name; 0 when there is none.
func (s *Store) Cursor(ctx context.Context, name string) (int64, error) {
	var id int64
	err := s.rdb.QueryRowContext(ctx, "SELECT event_id FROM cursors WHERE name = ?", name).Scan(&id)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("store/sqlite: cursor %q: %w", name, err)
	}
	return id, nil
}

// SetCursor stores id under name through the writer, so it shares a
// commit (and its fsync) with whatever else is being written.
func (s *Store) SetCursor(ctx context.Context, name string, id int64) error {
	if name == "" {
		return errors.New("store/sqlite: set cursor: empty name")
	}
	if id < 0 {
		return fmt.Errorf("store/sqlite: set cursor %q: negative event id %d", name, id)
	}
	req := &request{run: func(w *writer, now time.Time) error {
		_, err := w.setCursor.Exec(name, id, store.Nanos(now))
		return err
	}}
	if err := s.submit(ctx, req); err != nil {
		return fmt.Errorf("store/sqlite: set cursor %q: %w", name, err)
	}
	return nil
}
