package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/certgate/certgate/store"
	"github.com/jackc/pgx/v5"
)

// clusterSchema is migration step 2: what several nodes need to share one
// queue. A recipient's lease is the name of the node holding it; the
// lease lasts as long as that node's heartbeat in nodes, so that keeping
// thousands of claims costs one row's update per heartbeat, not one per
// claim. leases holds the named leases of jobs one node runs at a time.
const clusterSchema = `
ALTER TABLE recipients ADD COLUMN lease_node text NOT NULL DEFAULT '';
-- Claim looks for the due copies of lapsed nodes (and of none) only.
CREATE INDEX recipients_lease ON recipients(lease_node, next_attempt) WHERE state = 'queued';

CREATE TABLE nodes (
	name        text PRIMARY KEY,
	instance    text NOT NULL,   -- the process now holding the name
	started_at  bigint NOT NULL,
	alive_until bigint NOT NULL
);

CREATE TABLE leases (
	name  text PRIMARY KEY,
	node  text NOT NULL,
	until bigint NOT NULL
);

-- The hot tables change row by row all day (each attempt updates a
-- recipient, adds an event; retention deletes in batches): vacuum them
-- after 2% of their rows changed rather than the default 20%, so that
-- dead rows never pile up between two runs on a large table. nodes and
-- leases are rewritten every few seconds and stay a page or two.
ALTER TABLE recipients SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE events SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE links SET (autovacuum_vacuum_scale_factor = 0.02);
ALTER TABLE nodes SET (fillfactor = 50);
-- A message's bytes are mostly base64 (attachments) and live minutes:
-- compressing them on the way in costs CPU on every message and saves
-- little; they go out of line as they are.
ALTER TABLE contents ALTER COLUMN data SET STORAGE EXTERNAL;
ALTER TABLE leases SET (fillfactor = 50);
`

var _ store.Cluster = (*Store)(nil)

// errNoNode is what the cluster's calls answer on a store opened without
// a node name.
var errNoNode = errors.New("store/postgres: the store was opened without a node name (Options.Node)")

// Heartbeat implements store.Cluster.
func (s *Store) Heartbeat(ctx context.Context, now, until time.Time) (live int, lapsed bool, err error) {
	if s.node == "" {
		return 0, false, errNoNode
	}
	err = s.tx(ctx, func(tx pgx.Tx) error {
		var prevUntil *int64
		var prevInstance *string
		err := tx.QueryRow(ctx, `WITH prev AS (SELECT instance, alive_until FROM nodes WHERE name = $1)
			INSERT INTO nodes (name, instance, started_at, alive_until) VALUES ($1, $2, $3, $4)
			ON CONFLICT (name) DO UPDATE SET instance = EXCLUDED.instance, alive_until = EXCLUDED.alive_until,
				started_at = CASE WHEN nodes.instance = EXCLUDED.instance THEN nodes.started_at ELSE EXCLUDED.started_at END
			WHERE nodes.instance = EXCLUDED.instance OR nodes.alive_until < $5
			RETURNING (SELECT alive_until FROM prev), (SELECT instance FROM prev)`,
			s.node, s.instance, store.Nanos(s.started), store.Nanos(until), store.Nanos(now)).Scan(&prevUntil, &prevInstance)
		if errors.Is(err, pgx.ErrNoRows) {
			return store.ErrNodeInUse
		}
		if err != nil {
			return err
		}
		// Only this process's own heartbeat can lapse: a new process
		// taking over its name after a crash starts afresh, with Pending.
		lapsed = prevInstance != nil && *prevInstance == s.instance && *prevUntil < store.Nanos(now)
		return tx.QueryRow(ctx, "SELECT count(*) FROM nodes WHERE alive_until >= $1", store.Nanos(now)).Scan(&live)
	})
	if err != nil {
		return 0, false, fmt.Errorf("store/postgres: heartbeat of node %s: %w", s.node, err)
	}
	return live, lapsed, nil
}

// Claim implements store.Cluster. The free copies are found by the
// recipients_lease index, one holder name at a time, and locked with SKIP
// LOCKED, so that claiming nodes neither wait for each other nor take
// the same copy.
func (s *Store) Claim(ctx context.Context, now, due time.Time, limit int) ([]store.Pending, error) {
	if s.node == "" {
		return nil, errNoNode
	}
	if limit <= 0 {
		return nil, nil
	}
	var out []store.Pending
	err := s.tx(ctx, func(tx pgx.Tx) error {
		free := []string{""} // copies no node ever claimed: copied in, or of a store without nodes
		// FOR SHARE: a lapsed node's heartbeat (an update of its row)
		// waits for this claim to commit, so the Pending it then reads to
		// find what it still holds already leaves out what this took.
		rows, err := tx.Query(ctx, "SELECT name FROM nodes WHERE alive_until < $1 AND name <> $2 FOR SHARE", store.Nanos(now), s.node)
		if err != nil {
			return err
		}
		lapsed, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		free = append(free, lapsed...)
		rows, err = tx.Query(ctx, `UPDATE recipients r SET lease_node = $1
			FROM messages m
			WHERE m.id = r.message_id AND r.id IN (
				SELECT id FROM recipients
				WHERE state = 'queued' AND lease_node = ANY($2) AND next_attempt <= $3
				ORDER BY next_attempt LIMIT $4
				FOR UPDATE SKIP LOCKED)
			RETURNING `+pendingColumns, s.node, free, store.Nanos(due), limit)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Pending, error) { return scanPending(row) })
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store/postgres: claim for node %s: %w", s.node, err)
	}
	// UPDATE ... RETURNING keeps no order.
	slices.SortFunc(out, func(a, b store.Pending) int {
		return cmp.Or(a.NextAttempt.Compare(b.NextAttempt), cmp.Compare(a.RecipientID, b.RecipientID))
	})
	return out, nil
}

// Leave implements store.Cluster.
func (s *Store) Leave(ctx context.Context) error {
	if s.node == "" {
		return errNoNode
	}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "UPDATE recipients SET lease_node = '' WHERE lease_node = $1 AND state = 'queued'", s.node); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "DELETE FROM leases WHERE node = $1", s.node); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "UPDATE nodes SET alive_until = 0 WHERE name = $1 AND instance = $2", s.node, s.instance)
		return err
	})
	if err != nil {
		return fmt.Errorf("store/postgres: node %s leaving: %w", s.node, err)
	}
	return nil
}

// TryLease implements store.Cluster.
func (s *Store) TryLease(ctx context.Context, name string, now, until time.Time) (bool, error) {
	if s.node == "" {
		return false, errNoNode
	}
	var held bool
	err := s.use(func() error {
		var holder string
		err := s.pool.QueryRow(ctx, `INSERT INTO leases (name, node, until) VALUES ($1, $2, $3)
			ON CONFLICT (name) DO UPDATE SET node = EXCLUDED.node, until = EXCLUDED.until
			WHERE leases.node = EXCLUDED.node OR leases.until < $4
			RETURNING node`, name, s.node, store.Nanos(until), store.Nanos(now)).Scan(&holder)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // another node's
		}
		held = err == nil
		return err
	})
	if err != nil {
		return false, fmt.Errorf("store/postgres: lease %s: %w", name, err)
	}
	return held, nil
}

// DropLease implements store.Cluster.
func (s *Store) DropLease(ctx context.Context, name string) error {
	if s.node == "" {
		return errNoNode
	}
	err := s.use(func() error {
		_, err := s.pool.Exec(ctx, "DELETE FROM leases WHERE name = $1 AND node = $2", name, s.node)
		return err
	})
	if err != nil {
		return fmt.Errorf("store/postgres: dropping lease %s: %w", name, err)
	}
	return nil
}

// Nodes implements store.Cluster.
func (s *Store) Nodes(ctx context.Context) ([]store.Node, error) {
	var out []store.Node
	err := s.use(func() error {
		rows, err := s.pool.Query(ctx, `SELECT n.name, n.started_at, n.alive_until,
			(SELECT count(*) FROM recipients r WHERE r.state = 'queued' AND r.lease_node = n.name)
			FROM nodes n ORDER BY n.name`)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Node, error) {
			var n store.Node
			var started, until int64
			err := row.Scan(&n.Name, &started, &until, &n.Queued)
			n.StartedAt, n.AliveUntil = store.FromNanos(started), store.FromNanos(until)
			return n, err
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store/postgres: nodes: %w", err)
	}
	return out, nil
}

// Leases implements store.Cluster.
func (s *Store) Leases(ctx context.Context) ([]store.Lease, error) {
	var out []store.Lease
	err := s.use(func() error {
		rows, err := s.pool.Query(ctx, "SELECT name, node, until FROM leases ORDER BY name")
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Lease, error) {
			var l store.Lease
			var until int64
			err := row.Scan(&l.Name, &l.Node, &until)
			l.Until = store.FromNanos(until)
			return l, err
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store/postgres: leases: %w", err)
	}
	return out, nil
}

// leaseHolder says who holds a recipient, for RecordAttempt's answer when
// its lease check matched nothing: ErrNotFound or ErrLeaseLost.
func leaseHolder(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, id int64, messageID string) error {
	var holder string
	err := q.QueryRow(ctx, "SELECT lease_node FROM recipients WHERE id = $1 AND ($2 = '' OR message_id = $2)", id, messageID).Scan(&holder)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.ErrNotFound
	}
	if err != nil {
		return err
	}
	return store.ErrLeaseLost
}
