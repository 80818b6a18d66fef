package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/certgate/certgate/store"
	"github.com/jackc/pgx/v5"
)

var _ store.LaneStates = (*Store)(nil)

// SaveLaneStates writes the lanes' states in one transaction.
func (s *Store) SaveLaneStates(ctx context.Context, states map[string][]byte) error {
	if len(states) == 0 {
		return nil
	}
	now := store.Nanos(time.Now())
	err := s.tx(ctx, func(tx pgx.Tx) error {
		for lane, st := range states {
			var err error
			if st == nil {
				_, err = tx.Exec(ctx, "DELETE FROM lane_states WHERE lane = $1", lane)
			} else {
				_, err = tx.Exec(ctx, `INSERT INTO lane_states (lane, state, updated_at) VALUES ($1, $2, $3)
					ON CONFLICT (lane) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at`,
					lane, string(st), now)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store/postgres: save lane states: %w", err)
	}
	return nil
}

// LaneStates reads every lane's state.
func (s *Store) LaneStates(ctx context.Context) (map[string][]byte, error) {
	out := map[string][]byte{}
	err := s.use(func() error {
		rows, err := s.pool.Query(ctx, "SELECT lane, state FROM lane_states")
		if err != nil {
			return err
		}
		var lane, st string
		_, err = pgx.ForEachRow(rows, []any{&lane, &st}, func() error {
			out[lane] = []byte(st)
			return nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store/postgres: lane states: %w", err)
	}
	return out, nil
}

// AddLaneEvent writes an event about a lane, with no message.
func (s *Store) AddLaneEvent(ctx context.Context, lane string, e store.Event) error {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		return addEvents(ctx, tx, laneEvent{Event: store.Event{Time: e.Time, Kind: e.Kind, Actor: e.Actor, Detail: e.Detail}, lane: lane})
	})
	if err != nil {
		return fmt.Errorf("store/postgres: lane event of %s: %w", lane, err)
	}
	return nil
}
