package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/certgate/certgate/store"
)

// linkColumns are what scanLink reads from the links table.
const linkColumns = `id, token_hash, message_id, recipient_id, tenant, url, state, uses,
	max_uses, expires_at, created_at, updated_at,
	refusals, refusals_noticed, refusals_noticed_at, refusals_recent`

func scanLink(sc scanner) (store.Link, error) {
	var l store.Link
	var hash []byte
	var state, recent string
	var expires, created, updated, noticed int64
	if err := sc.Scan(&l.ID, &hash, &l.MessageID, &l.RecipientID, &l.Tenant, &l.URL, &state,
		&l.Uses, &l.MaxUses, &expires, &created, &updated,
		&l.Refusals.Count, &l.Refusals.Noticed, &noticed, &recent); err != nil {
		return l, err
	}
	l.Refusals.NoticedAt = store.FromNanos(noticed)
	var err error
	if l.Refusals.Recent, err = store.DecodeRefusals(recent); err != nil {
		return l, fmt.Errorf("link %d: recent refusals: %w", l.ID, err)
	}
	if len(hash) != len(l.TokenHash) {
		return l, fmt.Errorf("link %d: token hash of %d bytes, want %d", l.ID, len(hash), len(l.TokenHash))
	}
	copy(l.TokenHash[:], hash)
	l.State = store.LinkState(state)
	l.ExpiresAt = store.FromNanos(expires)
	l.CreatedAt = store.FromNanos(created)
	l.UpdatedAt = store.FromNanos(updated)
	return l, nil
}

// LinkByToken returns the link stored under hash, or store.ErrNotFound.
func (s *Store) LinkByToken(ctx context.Context, hash [32]byte) (*store.Link, error) {
	row := s.rdb.QueryRowContext(ctx, "SELECT "+linkColumns+" FROM links WHERE token_hash = ?", hash[:])
	l, err := scanLink(row)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("store/sqlite: link by token: %w", store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("store/sqlite: link by token: %w", err)
	}
	return &l, nil
}

// UseLink spends one use of the link in the writer, so concurrent uses of
// one link are counted one after the other and never past max_uses.
func (s *Store) UseLink(ctx context.Context, id int64, now time.Time, actor, detail string) (store.LinkUse, error) {
	var use store.LinkUse
	req := &request{run: func(w *writer, batchNow time.Time) error {
		at := now
		if at.IsZero() {
			at = batchNow
		}
		var err error
		use, err = w.useLink(id, at, actor, detail)
		return err
	}}
	if err := s.submit(ctx, req); err != nil {
		return store.LinkUse{}, fmt.Errorf("store/sqlite: use link %d: %w", id, err)
	}
	return use, nil
}

func (w *writer) useLink(id int64, now time.Time, actor, detail string) (store.LinkUse, error) {
	l, err := scanLink(w.linkByID.QueryRow(id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.LinkUse{}, store.ErrNotFound
	}
	if err != nil {
		return store.LinkUse{}, err
	}
	use := store.DecideUse(&l, now)
	if use.Changed {
		l.UpdatedAt = now
		if _, err := w.updLink.Exec(string(l.State), l.Uses, store.Nanos(now), l.ID); err != nil {
			return store.LinkUse{}, fmt.Errorf("update link: %w", err)
		}
	}
	if use.OK {
		if _, err := w.insEvent.Exec(l.MessageID, l.RecipientID, store.Nanos(now), "link_used", actor, detail); err != nil {
			return store.LinkUse{}, fmt.Errorf("insert link_used event: %w", err)
		}
	}
	return store.LinkUse{Link: l, OK: use.OK, Why: use.Why}, nil
}

// RefuseLink counts a refused press in the writer: one update of the
// link, and an event only when store.CountRefusal says one is due.
func (s *Store) RefuseLink(ctx context.Context, id int64, r store.LinkRefusal, actor string) (bool, error) {
	var noticed bool
	req := &request{run: func(w *writer, now time.Time) error {
		if r.Time.IsZero() {
			r.Time = now
		}
		var err error
		noticed, err = w.refuseLink(id, r, actor)
		return err
	}}
	if err := s.submit(ctx, req); err != nil {
		return false, fmt.Errorf("store/sqlite: refuse link %d: %w", id, err)
	}
	return noticed, nil
}

func (w *writer) refuseLink(id int64, r store.LinkRefusal, actor string) (bool, error) {
	l, err := scanLink(w.linkByID.QueryRow(id))
	if errors.Is(err, sql.ErrNoRows) {
		return false, store.ErrNotFound
	}
	if err != nil {
		return false, err
	}
	notice, count := store.CountRefusal(&l, r)
	rf := l.Refusals
	recent, err := store.EncodeRefusals(rf.Recent)
	if err != nil {
		return false, err
	}
	if _, err := w.updRefusals.Exec(rf.Count, rf.Noticed, store.Nanos(rf.NoticedAt), recent, l.ID); err != nil {
		return false, fmt.Errorf("update link refusals: %w", err)
	}
	if notice {
		if _, err := w.insCounted.Exec(l.MessageID, l.RecipientID, store.Nanos(r.Time), "link_refused", actor,
			store.RefusalDetail(r.Reason, count), count); err != nil {
			return false, fmt.Errorf("insert link_refused event: %w", err)
		}
	}
	return notice, nil
}

// SetLinkState moves the message's (or one recipient's) links whose state
// is in from to the state to, in the writer, one event per link moved.
func (s *Store) SetLinkState(ctx context.Context, messageID string, recipientID int64, from []store.LinkState, to store.LinkState, actor, detail string) (int, error) {
	if err := store.CheckLinkStates(from, to); err != nil {
		return 0, fmt.Errorf("store/sqlite: set links of %s: %w", messageID, err)
	}
	var n int
	req := &request{run: func(w *writer, now time.Time) error {
		if err := w.exists(messageID, recipientID); err != nil {
			return err
		}
		var err error
		n, err = w.setLinkState(messageID, recipientID, from, to, now, actor, detail)
		return err
	}}
	if err := s.submit(ctx, req); err != nil {
		return 0, fmt.Errorf("store/sqlite: set links of %s to %s: %w", messageID, to, err)
	}
	return n, nil
}

// exists returns store.ErrNotFound unless the message exists and, when
// recipientID is not 0, the recipient belongs to it.
func (w *writer) exists(messageID string, recipientID int64) error {
	var one int
	var err error
	if recipientID != 0 {
		err = w.recipientOf.QueryRow(recipientID, messageID).Scan(&one)
	} else {
		err = w.messageExists.QueryRow(messageID).Scan(&one)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return store.ErrNotFound
	}
	return err
}

// setLinkState moves links; the message (and recipient) must exist. An
// empty from means every state but to; a link already in to never moves,
// nor does a seed copy's link to enabled.
func (w *writer) setLinkState(messageID string, recipientID int64, from []store.LinkState, to store.LinkState, now time.Time, actor, detail string) (int, error) {
	links, err := w.links(messageID)
	if err != nil {
		return 0, err
	}
	var seeds []int64
	if to == store.LinkEnabled && len(links) > 0 {
		if seeds, err = w.seedRecipients(messageID); err != nil {
			return 0, err
		}
	}
	n := 0
	for _, l := range links {
		if (recipientID != 0 && l.RecipientID != recipientID) || slices.Contains(seeds, l.RecipientID) {
			continue
		}
		if l.State == to || (len(from) > 0 && !slices.Contains(from, l.State)) {
			continue
		}
		if _, err := w.updLink.Exec(string(to), l.Uses, store.Nanos(now), l.ID); err != nil {
			return n, fmt.Errorf("update link %d: %w", l.ID, err)
		}
		if _, err := w.insEvent.Exec(messageID, l.RecipientID, store.Nanos(now), "link_"+string(to), actor, detail); err != nil {
			return n, fmt.Errorf("insert link_%s event: %w", to, err)
		}
		n++
	}
	return n, nil
}

// seedRecipients reads the ids of a message's seed copies.
func (w *writer) seedRecipients(messageID string) ([]int64, error) {
	rows, err := w.seedsOf.Query(messageID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// links reads every link of a message in id order. A message has a few.
func (w *writer) links(messageID string) ([]store.Link, error) {
	rows, err := w.linksOf.Query(messageID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.Link
	for rows.Next() {
		l, err := scanLink(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, rows.Err()
}

// Release queues the held recipients, enables the pending links and
// records who released the message, in one savepoint of a group commit.
func (s *Store) Release(ctx context.Context, messageID string, now time.Time, actor, detail string) ([]store.Pending, error) {
	var out []store.Pending
	req := &request{run: func(w *writer, batchNow time.Time) error {
		at := now
		if at.IsZero() {
			at = batchNow
		}
		var err error
		out, err = w.releaseMessage(messageID, at, actor, detail)
		return err
	}}
	if err := s.submit(ctx, req); err != nil {
		return nil, fmt.Errorf("store/sqlite: release %s: %w", messageID, err)
	}
	return out, nil
}

func (w *writer) releaseMessage(messageID string, now time.Time, actor, detail string) ([]store.Pending, error) {
	if err := w.exists(messageID, 0); err != nil {
		return nil, err
	}
	// The writer is the only one changing states, so the recipients read
	// here are exactly those the update below moves.
	rows, err := w.heldOf.Query(messageID)
	if err != nil {
		return nil, err
	}
	var out []store.Pending
	for rows.Next() {
		p, err := scanPending(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		p.NextAttempt = now
		out = append(out, p)
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(out) > 0 {
		if _, err := w.releaseHeld.Exec(store.Nanos(now), store.Nanos(now), messageID); err != nil {
			return nil, fmt.Errorf("queue held recipients: %w", err)
		}
	}
	if _, err := w.insEvent.Exec(messageID, 0, store.Nanos(now), "released", actor, detail); err != nil {
		return nil, fmt.Errorf("insert released event: %w", err)
	}
	if _, err := w.setLinkState(messageID, 0, []store.LinkState{store.LinkPending}, store.LinkEnabled, now, actor, detail); err != nil {
		return nil, err
	}
	return out, nil
}
