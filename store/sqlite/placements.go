package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/certgate/certgate/store"
)

var _ store.Placements = (*Store)(nil)

// placementFrom is what scanPlacement reads: placements p with their
// recipients r, for the tracking id.
const placementFrom = `SELECT p.recipient_id, p.message_id, p.tenant, p.seed, p.address,
	COALESCE(r.tracking_id, ''), p.header, p.class, p.folder, p.provider, p.delivered_at,
	p.arrived_at, p.detected_at, p.verdicts, p.mailbox, p.uid_validity, p.uid, p.moves, p.closed_at
	FROM placements p JOIN recipients r ON r.id = p.recipient_id`

func scanPlacement(sc scanner) (store.Placement, error) {
	var p store.Placement
	var delivered, arrived, detected, closed int64
	var verdicts sql.NullString
	var moves string
	if err := sc.Scan(&p.RecipientID, &p.MessageID, &p.Tenant, &p.Seed, &p.Address, &p.TrackingID,
		&p.Header, &p.Class, &p.Folder, &p.Provider, &delivered, &arrived, &detected, &verdicts,
		&p.Mailbox, &p.UIDValidity, &p.UID, &moves, &closed); err != nil {
		return p, err
	}
	p.DeliveredAt, p.ArrivedAt = store.FromNanos(delivered), store.FromNanos(arrived)
	p.DetectedAt, p.ClosedAt = store.FromNanos(detected), store.FromNanos(closed)
	if verdicts.Valid {
		p.Verdicts = json.RawMessage(verdicts.String)
	}
	var err error
	if p.Moves, err = store.DecodeMoves(moves); err != nil {
		return p, fmt.Errorf("placement %d: moves: %w", p.RecipientID, err)
	}
	return p, nil
}

// nullJSON stores nil verdicts as NULL.
func nullJSON(b json.RawMessage) any {
	if b == nil {
		return nil
	}
	return string(b)
}

// PlacementByTracking reads the seed copy with tracking id tid.
func (s *Store) PlacementByTracking(ctx context.Context, tid string) (*store.Placement, error) {
	return s.placement(ctx, "placement by tracking id", placementFrom+" WHERE r.tracking_id = ?", tid)
}

// PlacementByHeader reads the newest seed copy to address of the message
// with that Message-ID header.
func (s *Store) PlacementByHeader(ctx context.Context, header, address string) (*store.Placement, error) {
	return s.placement(ctx, "placement by header", placementFrom+
		" WHERE p.header = ? AND p.address = ? COLLATE NOCASE ORDER BY p.recipient_id DESC LIMIT 1", header, address)
}

func (s *Store) placement(ctx context.Context, what, query string, args ...any) (*store.Placement, error) {
	p, err := scanPlacement(s.rdb.QueryRowContext(ctx, query, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("store/sqlite: %s: %w", what, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("store/sqlite: %s: %w", what, err)
	}
	return &p, nil
}

// RecordFound applies f to the placement in the writer, with its event;
// a zero DetectedAt is taken as now.
func (s *Store) RecordFound(ctx context.Context, recipientID int64, f store.Found) (string, error) {
	if err := store.CheckFound(f); err != nil {
		return "", fmt.Errorf("store/sqlite: record found %d: %w", recipientID, err)
	}
	var from string
	req := &request{run: func(w *writer, now time.Time) error {
		if f.DetectedAt.IsZero() {
			f.DetectedAt = now
		}
		var err error
		from, err = w.recordFound(recipientID, f)
		return err
	}}
	if err := s.submit(ctx, req); err != nil {
		return "", fmt.Errorf("store/sqlite: record found %d: %w", recipientID, err)
	}
	return from, nil
}

func (w *writer) recordFound(recipientID int64, f store.Found) (string, error) {
	p, err := w.placement(recipientID)
	if err != nil || !p.ClosedAt.IsZero() {
		return "", err
	}
	from := p.Folder
	detail := store.ApplyFound(&p, f)
	if err := w.writePlacement(p); err != nil {
		return "", err
	}
	if detail == "" {
		return "", nil
	}
	return from, w.placementEvent(p, f.DetectedAt, detail)
}

// ClosePlacement closes the placement in the writer; a pending one
// becomes missing, with its event.
func (s *Store) ClosePlacement(ctx context.Context, recipientID int64, now time.Time) error {
	req := &request{run: func(w *writer, batchNow time.Time) error {
		at := now
		if at.IsZero() {
			at = batchNow
		}
		p, err := w.placement(recipientID)
		if err != nil {
			return err
		}
		changed, detail := store.ClosePlacementAt(&p, at)
		if !changed {
			return nil
		}
		if err := w.writePlacement(p); err != nil {
			return err
		}
		if detail == "" {
			return nil
		}
		return w.placementEvent(p, at, detail)
	}}
	if err := s.submit(ctx, req); err != nil {
		return fmt.Errorf("store/sqlite: close placement %d: %w", recipientID, err)
	}
	return nil
}

// closeBounced closes the placement of a seed copy that bounced, in the
// attempt's transaction.
func (w *writer) closeBounced(recipientID int64, at time.Time, provider string) error {
	p, err := w.placement(recipientID)
	if err != nil {
		return err
	}
	if provider != "" {
		p.Provider = provider // the lane that tried
	}
	if changed, _ := store.ClosePlacementAt(&p, at); !changed {
		return nil
	}
	if err := w.writePlacement(p); err != nil {
		return err
	}
	return w.placementEvent(p, at, p.Seed+": missing (bounced)")
}

// placement reads one placement in the writer's transaction.
func (w *writer) placement(recipientID int64) (store.Placement, error) {
	p, err := scanPlacement(w.placementOf.QueryRow(recipientID))
	if errors.Is(err, sql.ErrNoRows) {
		return p, store.ErrNotFound
	}
	return p, err
}

// writePlacement writes back what RecordFound and ClosePlacement change.
func (w *writer) writePlacement(p store.Placement) error {
	moves, err := store.EncodeMoves(p.Moves)
	if err != nil {
		return err
	}
	if _, err := w.updPlacement.Exec(p.Folder, store.Nanos(p.ArrivedAt), store.Nanos(p.DetectedAt), nullJSON(p.Verdicts),
		p.Mailbox, p.UIDValidity, p.UID, moves, store.Nanos(p.ClosedAt), p.Provider, p.RecipientID); err != nil {
		return fmt.Errorf("update placement: %w", err)
	}
	return nil
}

func (w *writer) placementEvent(p store.Placement, at time.Time, detail string) error {
	if _, err := w.insEvent.Exec(p.MessageID, p.RecipientID, store.Nanos(at), "placement", "placement", detail); err != nil {
		return fmt.Errorf("insert placement event: %w", err)
	}
	return nil
}

// DuePlacements reads open, delivered placements through placements_due.
func (s *Store) DuePlacements(ctx context.Context, seed string, deliveredBefore time.Time, limit int) ([]store.Placement, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("store/sqlite: due placements: limit %d is not positive", limit)
	}
	out, err := s.placements(ctx, placementFrom+` WHERE p.closed_at = 0
		AND p.delivered_at > 0 AND p.delivered_at <= ? AND (? = '' OR p.seed = ?)
		ORDER BY p.delivered_at, p.recipient_id LIMIT ?`, store.Nanos(deliveredBefore), seed, seed, limit)
	if err != nil {
		return nil, fmt.Errorf("store/sqlite: due placements: %w", err)
	}
	return out, nil
}

// Placements reads the placements matching q, newest first.
func (s *Store) Placements(ctx context.Context, q store.PlacementQuery) ([]store.Placement, error) {
	where, args := placementWhere(q)
	limit := store.PageLimit(q.Limit)
	out, err := s.placements(ctx, placementFrom+where+" ORDER BY p.at DESC, p.recipient_id DESC LIMIT ?",
		append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("store/sqlite: placements: %w", err)
	}
	return out, nil
}

func (s *Store) placements(ctx context.Context, query string, args ...any) ([]store.Placement, error) {
	rows, err := s.rdb.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.Placement
	for rows.Next() {
		p, err := scanPlacement(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// PlacementCounts counts the placements matching q by provider and folder.
func (s *Store) PlacementCounts(ctx context.Context, q store.PlacementQuery) ([]store.PlacementCount, error) {
	where, args := placementWhere(q)
	// +p.provider keeps SQLite from scanning all of placements_provider
	// for its order when a time range could use placements_at.
	rows, err := s.rdb.QueryContext(ctx, "SELECT p.provider, p.folder, count(*) FROM placements p"+where+
		" GROUP BY +p.provider, p.folder ORDER BY p.provider, p.folder", args...)
	if err != nil {
		return nil, fmt.Errorf("store/sqlite: placement counts: %w", err)
	}
	defer rows.Close()
	var out []store.PlacementCount
	for rows.Next() {
		var c store.PlacementCount
		if err := rows.Scan(&c.Provider, &c.Folder, &c.Count); err != nil {
			return nil, fmt.Errorf("store/sqlite: placement counts: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store/sqlite: placement counts: %w", err)
	}
	return out, nil
}

// placementWhere is the WHERE clause of q on placements p ("" for none).
func placementWhere(q store.PlacementQuery) (string, []any) {
	var where []string
	var args []any
	add := func(cond string, val any) {
		where = append(where, cond)
		args = append(args, val)
	}
	if len(q.Tenants) > 0 {
		where = append(where, "p.tenant IN (?"+strings.Repeat(", ?", len(q.Tenants)-1)+")")
		for _, t := range q.Tenants {
			args = append(args, t)
		}
	}
	if q.Provider != "" {
		add("p.provider = ?", q.Provider)
	}
	if q.Seed != "" {
		add("p.seed = ?", q.Seed)
	}
	if q.MessageID != "" {
		add("p.message_id = ?", q.MessageID)
	}
	if !q.Since.IsZero() {
		add("p.at >= ?", store.Nanos(q.Since))
	}
	if len(where) == 0 {
		return "", nil
	}
	return " WHERE " + strings.Join(where, " AND "), args
}

// SeedFolder reads the watcher's position in a folder; zeros if unseen.
func (s *Store) SeedFolder(ctx context.Context, seed, mailbox string) (uint32, uint32, error) {
	var uidValidity, lastUID uint32
	err := s.rdb.QueryRowContext(ctx, "SELECT uid_validity, last_uid FROM seed_folders WHERE seed = ? AND mailbox = ?",
		seed, mailbox).Scan(&uidValidity, &lastUID)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, 0, fmt.Errorf("store/sqlite: seed folder %s/%s: %w", seed, mailbox, err)
	}
	return uidValidity, lastUID, nil
}

// SetSeedFolder stores the position through the writer.
func (s *Store) SetSeedFolder(ctx context.Context, seed, mailbox string, uidValidity, lastUID uint32) error {
	req := &request{run: func(w *writer, now time.Time) error {
		_, err := w.setSeedFolder.Exec(seed, mailbox, uidValidity, lastUID, store.Nanos(now))
		return err
	}}
	if err := s.submit(ctx, req); err != nil {
		return fmt.Errorf("store/sqlite: set seed folder %s/%s: %w", seed, mailbox, err)
	}
	return nil
}
