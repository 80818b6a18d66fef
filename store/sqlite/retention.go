package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/certgate/certgate/store"
)

// DeleteEvents deletes the oldest events before before, at most limit, in
// the writer. The events table has AUTOINCREMENT (schema step 4), so the
// newest event may go too without its id ever coming back.
func (s *Store) DeleteEvents(ctx context.Context, before time.Time, limit int) (int, error) {
	return s.delete(ctx, "events", before, limit, func(w *writer) *sql.Stmt { return w.delEvents })
}

// DeleteMessages deletes the oldest finished messages received before
// before, at most limit, in the writer; foreign keys take their
// contents, recipients (and their placements), links and events with them.
func (s *Store) DeleteMessages(ctx context.Context, before time.Time, limit int) (int, error) {
	return s.delete(ctx, "messages", before, limit, func(w *writer) *sql.Stmt { return w.delMessages })
}

// delete runs one of the writer's retention deletes, which take a time
// and a limit.
func (s *Store) delete(ctx context.Context, what string, before time.Time, limit int, stmt func(*writer) *sql.Stmt) (int, error) {
	if limit <= 0 {
		return 0, fmt.Errorf("store/sqlite: delete %s: limit %d is not positive", what, limit)
	}
	var n int64
	req := &request{run: func(w *writer, _ time.Time) error {
		res, err := stmt(w).Exec(store.Nanos(before), limit)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	}}
	if err := s.submit(ctx, req); err != nil {
		return 0, fmt.Errorf("store/sqlite: delete %s: %w", what, err)
	}
	return int(n), nil
}
