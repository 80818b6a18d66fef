package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/certgate/certgate/store"
	"github.com/jackc/pgx/v5"
)

var _ store.Placements = (*Store)(nil)

// placementFrom is what scanPlacement reads: placements p with their
// recipients r, for the tracking id.
const placementFrom = `SELECT p.recipient_id, p.message_id, p.tenant, p.seed, p.address,
	COALESCE(r.tracking_id, ''), p.header, p.class, p.folder, p.provider, p.delivered_at,
	p.arrived_at, p.detected_at, p.verdicts, p.mailbox, p.uid_validity, p.uid, p.moves, p.closed_at
	FROM placements p JOIN recipients r ON r.id = p.recipient_id`

func scanPlacement(row pgx.Row) (store.Placement, error) {
	var p store.Placement
	var delivered, arrived, detected, closed, uidValidity, uid int64
	var verdicts *string
	var moves string
	if err := row.Scan(&p.RecipientID, &p.MessageID, &p.Tenant, &p.Seed, &p.Address, &p.TrackingID,
		&p.Header, &p.Class, &p.Folder, &p.Provider, &delivered, &arrived, &detected, &verdicts,
		&p.Mailbox, &uidValidity, &uid, &moves, &closed); err != nil {
		return p, err
	}
	p.DeliveredAt, p.ArrivedAt = store.FromNanos(delivered), store.FromNanos(arrived)
	p.DetectedAt, p.ClosedAt = store.FromNanos(detected), store.FromNanos(closed)
	p.UIDValidity, p.UID = uint32(uidValidity), uint32(uid) // written from uint32s
	if verdicts != nil {
		p.Verdicts = json.RawMessage(*verdicts)
	}
	var err error
	if p.Moves, err = store.DecodeMoves(moves); err != nil {
		return p, fmt.Errorf("placement %d: moves: %w", p.RecipientID, err)
	}
	return p, nil
}

// PlacementByTracking reads the seed copy with tracking id tid.
func (s *Store) PlacementByTracking(ctx context.Context, tid string) (*store.Placement, error) {
	return s.placement(ctx, "placement by tracking id", placementFrom+" WHERE r.tracking_id = $1", tid)
}

// PlacementByHeader reads the newest seed copy to address of the message
// with that Message-ID header; placements_header indexes lower(address).
func (s *Store) PlacementByHeader(ctx context.Context, header, address string) (*store.Placement, error) {
	return s.placement(ctx, "placement by header", placementFrom+
		" WHERE p.header = $1 AND lower(p.address) = lower($2) ORDER BY p.recipient_id DESC LIMIT 1", header, address)
}

func (s *Store) placement(ctx context.Context, what, query string, args ...any) (*store.Placement, error) {
	var p store.Placement
	err := s.use(func() error {
		var err error
		p, err = scanPlacement(s.pool.QueryRow(ctx, query, args...))
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("store/postgres: %s: %w", what, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("store/postgres: %s: %w", what, err)
	}
	return &p, nil
}

// RecordFound applies f to the placement under its row lock, with its
// event; a zero DetectedAt is taken as now.
func (s *Store) RecordFound(ctx context.Context, recipientID int64, f store.Found) (string, error) {
	if err := store.CheckFound(f); err != nil {
		return "", fmt.Errorf("store/postgres: record found %d: %w", recipientID, err)
	}
	if f.DetectedAt.IsZero() {
		f.DetectedAt = time.Now()
	}
	var from string
	err := s.tx(ctx, func(tx pgx.Tx) error {
		from = ""
		p, err := lockPlacement(ctx, tx, recipientID)
		if err != nil || !p.ClosedAt.IsZero() {
			return err
		}
		was := p.Folder
		detail := store.ApplyFound(&p, f)
		if err := writePlacement(ctx, tx, p); err != nil {
			return err
		}
		if detail == "" {
			return nil
		}
		from = was
		return addEvents(ctx, tx, placementEvent(p, f.DetectedAt, detail))
	})
	if err != nil {
		return "", fmt.Errorf("store/postgres: record found %d: %w", recipientID, err)
	}
	return from, nil
}

// ClosePlacement closes the placement under its row lock; a pending one
// becomes missing, with its event.
func (s *Store) ClosePlacement(ctx context.Context, recipientID int64, now time.Time) error {
	if now.IsZero() {
		now = time.Now()
	}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		p, err := lockPlacement(ctx, tx, recipientID)
		if err != nil {
			return err
		}
		changed, detail := store.ClosePlacementAt(&p, now)
		if !changed {
			return nil
		}
		if err := writePlacement(ctx, tx, p); err != nil {
			return err
		}
		if detail == "" {
			return nil
		}
		return addEvents(ctx, tx, placementEvent(p, now, detail))
	})
	if err != nil {
		return fmt.Errorf("store/postgres: close placement %d: %w", recipientID, err)
	}
	return nil
}

// closeBounced closes the placement of a seed copy that bounced, in the
// attempt's transaction, and returns the event to add.
func closeBounced(ctx context.Context, tx pgx.Tx, recipientID int64, at time.Time, provider string) ([]laneEvent, error) {
	p, err := lockPlacement(ctx, tx, recipientID)
	if err != nil {
		return nil, err
	}
	if provider != "" {
		p.Provider = provider // the lane that tried
	}
	if changed, _ := store.ClosePlacementAt(&p, at); !changed {
		return nil, nil
	}
	if err := writePlacement(ctx, tx, p); err != nil {
		return nil, err
	}
	return []laneEvent{placementEvent(p, at, p.Seed+": missing (bounced)")}, nil
}

// lockPlacement reads one placement and locks its row to the end of tx.
func lockPlacement(ctx context.Context, tx pgx.Tx, recipientID int64) (store.Placement, error) {
	p, err := scanPlacement(tx.QueryRow(ctx, placementFrom+" WHERE p.recipient_id = $1 FOR UPDATE OF p", recipientID))
	if errors.Is(err, pgx.ErrNoRows) {
		return p, store.ErrNotFound
	}
	return p, err
}

// writePlacement writes back what RecordFound and ClosePlacement change.
func writePlacement(ctx context.Context, tx pgx.Tx, p store.Placement) error {
	moves, err := store.EncodeMoves(p.Moves)
	if err != nil {
		return err
	}
	var verdicts *string // NULL for none
	if p.Verdicts != nil {
		v := string(p.Verdicts)
		verdicts = &v
	}
	if _, err := tx.Exec(ctx, `UPDATE placements SET folder = $1, arrived_at = $2, detected_at = $3, verdicts = $4,
		mailbox = $5, uid_validity = $6, uid = $7, moves = $8, closed_at = $9, provider = $10 WHERE recipient_id = $11`,
		p.Folder, store.Nanos(p.ArrivedAt), store.Nanos(p.DetectedAt), verdicts,
		p.Mailbox, int64(p.UIDValidity), int64(p.UID), moves, store.Nanos(p.ClosedAt), p.Provider, p.RecipientID); err != nil {
		return fmt.Errorf("update placement: %w", err)
	}
	return nil
}

func placementEvent(p store.Placement, at time.Time, detail string) laneEvent {
	return ev(p.MessageID, p.RecipientID, at, "placement", "placement", detail)
}

// DuePlacements reads open, delivered placements through placements_due.
func (s *Store) DuePlacements(ctx context.Context, seed string, deliveredBefore time.Time, limit int) ([]store.Placement, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("store/postgres: due placements: limit %d is not positive", limit)
	}
	out, err := s.placements(ctx, placementFrom+` WHERE p.closed_at = 0
		AND p.delivered_at > 0 AND p.delivered_at <= $1 AND ($2 = '' OR p.seed = $2)
		ORDER BY p.delivered_at, p.recipient_id LIMIT $3`, store.Nanos(deliveredBefore), seed, limit)
	if err != nil {
		return nil, fmt.Errorf("store/postgres: due placements: %w", err)
	}
	return out, nil
}

// Placements reads the placements matching q, newest first.
func (s *Store) Placements(ctx context.Context, q store.PlacementQuery) ([]store.Placement, error) {
	c := placementConds(q)
	c.args = append(c.args, store.PageLimit(q.Limit))
	out, err := s.placements(ctx, fmt.Sprintf("%s%s ORDER BY p.at DESC, p.recipient_id DESC LIMIT $%d",
		placementFrom, c.clause(), len(c.args)), c.args...)
	if err != nil {
		return nil, fmt.Errorf("store/postgres: placements: %w", err)
	}
	return out, nil
}

func (s *Store) placements(ctx context.Context, query string, args ...any) ([]store.Placement, error) {
	var out []store.Placement
	err := s.use(func() error {
		rows, err := s.pool.Query(ctx, query, args...)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Placement, error) { return scanPlacement(row) })
		return err
	})
	return out, err
}

// PlacementCounts counts the placements matching q by provider and folder.
func (s *Store) PlacementCounts(ctx context.Context, q store.PlacementQuery) ([]store.PlacementCount, error) {
	c := placementConds(q)
	var out []store.PlacementCount
	err := s.use(func() error {
		rows, err := s.pool.Query(ctx, "SELECT p.provider, p.folder, count(*) FROM placements p"+c.clause()+
			" GROUP BY p.provider, p.folder ORDER BY p.provider, p.folder", c.args...)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.PlacementCount, error) {
			var pc store.PlacementCount
			err := row.Scan(&pc.Provider, &pc.Folder, &pc.Count)
			return pc, err
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store/postgres: placement counts: %w", err)
	}
	return out, nil
}

// placementConds are the conditions of q on placements p.
func placementConds(q store.PlacementQuery) *conds {
	c := &conds{}
	if len(q.Tenants) > 0 {
		c.add("p.tenant = ANY($?)", q.Tenants)
	}
	if q.Provider != "" {
		c.add("p.provider = $?", q.Provider)
	}
	if q.Seed != "" {
		c.add("p.seed = $?", q.Seed)
	}
	if q.MessageID != "" {
		c.add("p.message_id = $?", q.MessageID)
	}
	if !q.Since.IsZero() {
		c.add("p.at >= $?", store.Nanos(q.Since))
	}
	return c
}

// conds builds a WHERE clause and its arguments.
type conds struct {
	where []string
	args  []any
}

// add adds cond, numbering each $? in it in turn for vals.
func (c *conds) add(cond string, vals ...any) {
	for _, v := range vals {
		c.args = append(c.args, v)
		cond = strings.Replace(cond, "$?", fmt.Sprintf("$%d", len(c.args)), 1)
	}
	c.where = append(c.where, cond)
}

// clause is " WHERE" and the conditions, or "" for none.
func (c *conds) clause() string {
	if len(c.where) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(c.where, " AND ")
}

// SeedFolder reads the watcher's position in a folder; zeros if unseen.
func (s *Store) SeedFolder(ctx context.Context, seed, mailbox string) (uint32, uint32, error) {
	var uidValidity, lastUID int64
	err := s.use(func() error {
		return s.pool.QueryRow(ctx, "SELECT uid_validity, last_uid FROM seed_folders WHERE seed = $1 AND mailbox = $2",
			seed, mailbox).Scan(&uidValidity, &lastUID)
	})
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return 0, 0, fmt.Errorf("store/postgres: seed folder %s/%s: %w", seed, mailbox, err)
	}
	return uint32(uidValidity), uint32(lastUID), nil // written from uint32s
}

// SetSeedFolder stores the position.
func (s *Store) SetSeedFolder(ctx context.Context, seed, mailbox string, uidValidity, lastUID uint32) error {
	err := s.tx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO seed_folders (seed, mailbox, uid_validity, last_uid, updated_at)
			VALUES ($1, $2, $3, $4, $5) ON CONFLICT (seed, mailbox) DO UPDATE SET uid_validity = excluded.uid_validity,
			last_uid = excluded.last_uid, updated_at = excluded.updated_at`,
			seed, mailbox, int64(uidValidity), int64(lastUID), store.Nanos(time.Now()))
		return err
	})
	if err != nil {
		return fmt.Errorf("store/postgres: set seed folder %s/%s: %w", seed, mailbox, err)
	}
	return nil
}
