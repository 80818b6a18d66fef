package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/certgate/certgate/store"
	"github.com/jackc/pgx/v5"
)

// LinkByToken returns the link stored under hash, or store.ErrNotFound.
func (s *Store) LinkByToken(ctx context.Context, hash [32]byte) (*store.Link, error) {
	var l store.Link
	err := s.use(func() error {
		var err error
		l, err = scanLink(s.pool.QueryRow(ctx, "SELECT "+linkColumns+" FROM links WHERE token_hash = $1", hash[:]))
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("store/postgres: link by token: %w", store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("store/postgres: link by token: %w", err)
	}
	return &l, nil
}

// UseLink spends one use of the link under its row lock, so concurrent
// uses of one link, from any node, are counted one after the other and
// never past max_uses.
func (s *Store) UseLink(ctx context.Context, id int64, now time.Time, actor, detail string) (store.LinkUse, error) {
	if now.IsZero() {
		now = time.Now()
	}
	var use store.LinkUse
	err := s.tx(ctx, func(tx pgx.Tx) error {
		l, err := lockLink(ctx, tx, id)
		if err != nil {
			return err
		}
		d := store.DecideUse(&l, now)
		if d.Changed {
			l.UpdatedAt = now
			if _, err := tx.Exec(ctx, "UPDATE links SET state = $1, uses = $2, updated_at = $3 WHERE id = $4",
				string(l.State), l.Uses, store.Nanos(now), l.ID); err != nil {
				return fmt.Errorf("update link: %w", err)
			}
		}
		if d.OK {
			if err := addEvents(ctx, tx, ev(l.MessageID, l.RecipientID, now, "link_used", actor, detail)); err != nil {
				return err
			}
		}
		use = store.LinkUse{Link: l, OK: d.OK, Why: d.Why}
		return nil
	})
	if err != nil {
		return store.LinkUse{}, fmt.Errorf("store/postgres: use link %d: %w", id, err)
	}
	return use, nil
}

// lockLink reads the link and locks its row to the end of tx.
func lockLink(ctx context.Context, tx pgx.Tx, id int64) (store.Link, error) {
	l, err := scanLink(tx.QueryRow(ctx, "SELECT "+linkColumns+" FROM links WHERE id = $1 FOR UPDATE", id))
	if errors.Is(err, pgx.ErrNoRows) {
		return l, store.ErrNotFound
	}
	return l, err
}

// RefuseLink counts a refused press under the link's row lock: one
// update of the link, and an event only when store.CountRefusal says one
// is due.
func (s *Store) RefuseLink(ctx context.Context, id int64, r store.LinkRefusal, actor string) (bool, error) {
	if r.Time.IsZero() {
		r.Time = time.Now()
	}
	var notice bool
	err := s.tx(ctx, func(tx pgx.Tx) error {
		l, err := lockLink(ctx, tx, id)
		if err != nil {
			return err
		}
		var count int64
		notice, count = store.CountRefusal(&l, r)
		rf := l.Refusals
		recent, err := store.EncodeRefusals(rf.Recent)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE links SET refusals = $1, refusals_noticed = $2, refusals_noticed_at = $3,
			refusals_recent = $4 WHERE id = $5`, rf.Count, rf.Noticed, store.Nanos(rf.NoticedAt), recent, l.ID); err != nil {
			return fmt.Errorf("update link refusals: %w", err)
		}
		if !notice {
			return nil
		}
		e := ev(l.MessageID, l.RecipientID, r.Time, "link_refused", actor, store.RefusalDetail(r.Reason, count))
		e.Count = count
		return addEvents(ctx, tx, e)
	})
	if err != nil {
		return false, fmt.Errorf("store/postgres: refuse link %d: %w", id, err)
	}
	return notice, nil
}

// SetLinkState moves the message's (or one recipient's) links whose state
// is in from to the state to, one event per link moved.
func (s *Store) SetLinkState(ctx context.Context, messageID string, recipientID int64, from []store.LinkState, to store.LinkState, actor, detail string) (int, error) {
	if err := store.CheckLinkStates(from, to); err != nil {
		return 0, fmt.Errorf("store/postgres: set links of %s: %w", messageID, err)
	}
	var n int
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if err := exists(ctx, tx, messageID, recipientID); err != nil {
			return err
		}
		evs, err := setLinkState(ctx, tx, messageID, recipientID, from, to, time.Now(), actor, detail)
		if err != nil {
			return err
		}
		n = len(evs)
		return addEvents(ctx, tx, evs...)
	})
	if err != nil {
		return 0, fmt.Errorf("store/postgres: set links of %s to %s: %w", messageID, to, err)
	}
	return n, nil
}

// exists returns store.ErrNotFound unless the message exists and, when
// recipientID is not 0, the recipient belongs to it.
func exists(ctx context.Context, tx pgx.Tx, messageID string, recipientID int64) error {
	var ok bool
	var err error
	if recipientID != 0 {
		err = tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM recipients WHERE id = $1 AND message_id = $2)",
			recipientID, messageID).Scan(&ok)
	} else {
		err = tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM messages WHERE id = $1)", messageID).Scan(&ok)
	}
	if err == nil && !ok {
		err = store.ErrNotFound
	}
	return err
}

// setLinkState moves links under their row locks, taken in id order,
// and returns the events to add, one a link moved. An empty from means
// every state but to; a link already in to never moves, nor does a seed
// copy's link to enabled.
func setLinkState(ctx context.Context, tx pgx.Tx, messageID string, recipientID int64, from []store.LinkState, to store.LinkState, now time.Time, actor, detail string) ([]laneEvent, error) {
	rows, err := tx.Query(ctx, `SELECT l.id, l.recipient_id, l.state, r.seed != ''
		FROM links l JOIN recipients r ON r.id = l.recipient_id
		WHERE l.message_id = $1 AND ($2 = 0 OR l.recipient_id = $2)
		ORDER BY l.id FOR UPDATE OF l`, messageID, recipientID)
	if err != nil {
		return nil, err
	}
	type link struct {
		id, recipient int64
		state         string
		seed          bool
	}
	links, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (link, error) {
		var l link
		err := row.Scan(&l.id, &l.recipient, &l.state, &l.seed)
		return l, err
	})
	if err != nil {
		return nil, err
	}
	var ids []int64
	var evs []laneEvent
	for _, l := range links {
		st := store.LinkState(l.state)
		if st == to || (len(from) > 0 && !slices.Contains(from, st)) || (l.seed && to == store.LinkEnabled) {
			continue
		}
		ids = append(ids, l.id)
		evs = append(evs, ev(messageID, l.recipient, now, "link_"+string(to), actor, detail))
	}
	if len(ids) == 0 {
		return nil, nil
	}
	if _, err := tx.Exec(ctx, "UPDATE links SET state = $1, updated_at = $2 WHERE id = ANY($3)",
		string(to), store.Nanos(now), ids); err != nil {
		return nil, fmt.Errorf("update links: %w", err)
	}
	return evs, nil
}

// Release queues the held recipients, enables the pending links and
// records who released the message, in one transaction. The held rows
// are locked as they are read, so the recipients returned are exactly
// those this call moved: of two releases, the second finds none.
func (s *Store) Release(ctx context.Context, messageID string, now time.Time, actor, detail string) ([]store.Pending, error) {
	if now.IsZero() {
		now = time.Now()
	}
	var out []store.Pending
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if err := exists(ctx, tx, messageID, 0); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, "SELECT "+pendingColumns+` FROM recipients r JOIN messages m ON m.id = r.message_id
			WHERE r.message_id = $1 AND r.state = 'held' ORDER BY r.id FOR NO KEY UPDATE OF r`, messageID)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Pending, error) { return scanPending(row) })
		if err != nil {
			return err
		}
		ids := make([]int64, len(out))
		for i := range out {
			out[i].NextAttempt = now
			ids[i] = out[i].RecipientID
		}
		if len(ids) > 0 {
			// The releasing node delivers what it releases (in a cluster).
			if _, err := tx.Exec(ctx, `UPDATE recipients SET state = 'queued', next_attempt = $1, updated_at = $1,
				lease_node = $3 WHERE id = ANY($2)`, store.Nanos(now), ids, s.node); err != nil {
				return fmt.Errorf("queue held recipients: %w", err)
			}
		}
		evs, err := setLinkState(ctx, tx, messageID, 0, []store.LinkState{store.LinkPending}, store.LinkEnabled, now, actor, detail)
		if err != nil {
			return err
		}
		return addEvents(ctx, tx, append([]laneEvent{ev(messageID, 0, now, "released", actor, detail)}, evs...)...)
	})
	if err != nil {
		return nil, fmt.Errorf("store/postgres: release %s: %w", messageID, err)
	}
	return out, nil
}
