package sqlite

import (
	"context"
	"fmt"
	"time"

	"github.com/certgate/certgate/store"
)

var _ store.LaneStates = (*Store)(nil)

// SaveLaneStates writes the lanes' states through the writer, in one
// transaction.
func (s *Store) SaveLaneStates(ctx context.Context, states map[string][]byte) error {
	if len(states) == 0 {
		return nil
	}
	req := &request{run: func(w *writer, now time.Time) error {
		for lane, st := range states {
			var err error
			if st == nil {
				_, err = w.delLaneState.Exec(lane)
			} else {
				_, err = w.setLaneState.Exec(lane, string(st), store.Nanos(now))
			}
			if err != nil {
				return err
			}
		}
		return nil
	}}
	if err := s.submit(ctx, req); err != nil {
		return fmt.Errorf("store/sqlite: save lane states: %w", err)
	}
	return nil
}

// LaneStates reads every lane's state.
func (s *Store) LaneStates(ctx context.Context) (map[string][]byte, error) {
	rows, err := s.rdb.QueryContext(ctx, "SELECT lane, state FROM lane_states")
	if err != nil {
		return nil, fmt.Errorf("store/sqlite: lane states: %w", err)
	}
	defer rows.Close()
	out := map[string][]byte{}
	for rows.Next() {
		var lane, st string
		if err := rows.Scan(&lane, &st); err != nil {
			return nil, fmt.Errorf("store/sqlite: lane states: %w", err)
		}
		out[lane] = []byte(st)
	}
	return out, rows.Err()
}

// AddLaneEvent writes an event about a lane through the writer.
func (s *Store) AddLaneEvent(ctx context.Context, lane string, e store.Event) error {
	req := &request{run: func(w *writer, now time.Time) error {
		at := e.Time
		if at.IsZero() {
			at = now
		}
		_, err := w.insLaneEvent.Exec(store.Nanos(at), e.Kind, e.Actor, e.Detail, lane)
		return err
	}}
	if err := s.submit(ctx, req); err != nil {
		return fmt.Errorf("store/sqlite: lane event of %s: %w", lane, err)
	}
	return nil
}
