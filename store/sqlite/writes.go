package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/certgate/certgate/store"
)

// Enqueue stores the message, its contents, its recipients with their
// links, an "accepted" event and its idempotency key's answer in one
// savepoint of a group commit. It returns once they are durable.
func (s *Store) Enqueue(ctx context.Context, m store.Message, contents [][]byte, rcpts []store.NewRecipient) ([]int64, error) {
	if err := store.CheckEnqueue(m, contents, rcpts); err != nil {
		return nil, fmt.Errorf("store/sqlite: %w", err)
	}
	size := 0
	for _, c := range contents {
		size += len(c)
	}
	for _, r := range rcpts {
		size += len(r.Prefix)
		for _, l := range r.Links {
			size += len(l.URL)
		}
	}
	if m.Idempotency != nil {
		size += len(m.Idempotency.Response)
	}
	ids := make([]int64, len(rcpts))
	req := &request{bytes: size, run: func(w *writer, now time.Time) error {
		return w.enqueue(m, contents, rcpts, ids, now)
	}}
	if err := s.submit(ctx, req); err != nil {
		return nil, fmt.Errorf("store/sqlite: enqueue %s: %w", m.ID, err)
	}
	return ids, nil
}

func (w *writer) enqueue(m store.Message, contents [][]byte, rcpts []store.NewRecipient, ids []int64, now time.Time) error {
	received := m.ReceivedAt
	if received.IsZero() {
		received = now
	}
	if a := m.Idempotency; a != nil {
		if err := w.answerKey(a); err != nil {
			return err
		}
	}
	if _, err := w.insMessage.Exec(m.ID, m.Tenant, m.MailFrom, m.HeaderFrom, m.MessageID,
		m.Subject, m.Class, m.Size, m.ClientAddr, m.AuthUser, store.Nanos(received)); err != nil {
		return fmt.Errorf("insert message: %w", err)
	}
	contentIDs := make([]int64, len(contents))
	for i, c := range contents {
		if c == nil {
			c = []byte{} // data is NOT NULL; an empty body is still a body
		}
		res, err := w.insContent.Exec(m.ID, c)
		if err != nil {
			return fmt.Errorf("insert content %d: %w", i, err)
		}
		if contentIDs[i], err = res.LastInsertId(); err != nil {
			return err
		}
	}
	for i, r := range rcpts {
		prefix := r.Prefix
		if prefix == nil {
			prefix = []byte{} // NULL means "contents dropped"
		}
		next := r.NextAttempt
		if r.State == store.StateHeld {
			next = time.Time{} // none until released
		}
		res, err := w.insRecipient.Exec(m.ID, r.Address, store.DomainOf(r.Address), store.AddressKey(r.Address),
			r.TrackingID, prefix, contentIDs[r.Content], string(r.State), store.Nanos(next), store.Nanos(now), r.Seed)
		if err != nil {
			return fmt.Errorf("insert recipient %d (%s): %w", i, r.Address, err)
		}
		if ids[i], err = res.LastInsertId(); err != nil {
			return err
		}
		if r.Seed != "" {
			if _, err := w.insPlacement.Exec(ids[i], m.ID, m.Tenant, r.Seed, r.Address, m.MessageID, m.Class,
				store.FolderPending, store.Nanos(received), r.SeedProvider); err != nil {
				return fmt.Errorf("insert placement of recipient %d (%s): %w", i, r.Address, err)
			}
		}
		for j, l := range r.Links {
			if _, err := w.insLink.Exec(l.TokenHash[:], m.ID, ids[i], m.Tenant, l.URL, string(l.State),
				l.MaxUses, store.Nanos(l.ExpiresAt), store.Nanos(now), store.Nanos(now)); err != nil {
				return fmt.Errorf("insert link %d of recipient %d (%s): %w", j, i, r.Address, err)
			}
		}
	}
	actor, detail := store.AcceptedEvent(m, rcpts)
	if _, err := w.insEvent.Exec(m.ID, 0, store.Nanos(received), "accepted", actor, detail); err != nil {
		return fmt.Errorf("insert accepted event: %w", err)
	}
	return nil
}

// RecordAttempt updates the recipient, counts the attempt and writes a
// delivered, deferred or bounced event. When that leaves no recipient of
// the message queued or held, the message's bytes are dropped in the same
// transaction: nothing will ever send them again.
func (s *Store) RecordAttempt(ctx context.Context, a store.Attempt) error {
	kind, ok := store.AttemptKind(a.State)
	if !ok {
		return fmt.Errorf("store/sqlite: record attempt for recipient %d: state %q is not an attempt outcome", a.RecipientID, a.State)
	}
	req := &request{run: func(w *writer, now time.Time) error {
		return w.recordAttempt(a, kind, now)
	}}
	if err := s.submit(ctx, req); err != nil {
		return fmt.Errorf("store/sqlite: record attempt for recipient %d: %w", a.RecipientID, err)
	}
	return nil
}

func (w *writer) recordAttempt(a store.Attempt, kind string, now time.Time) error {
	at := a.Time
	if at.IsZero() {
		at = now
	}
	next := a.NextAttempt
	if a.State != store.StateQueued {
		next = time.Time{} // no further attempt
	}
	var msgID, seed string
	err := w.updAttempt.QueryRow(string(a.State), store.Nanos(next), a.Provider, a.Code, a.Reply,
		store.Nanos(at), a.RecipientID, a.MessageID, a.MessageID).Scan(&msgID, &seed)
	if errors.Is(err, sql.ErrNoRows) {
		return store.ErrNotFound
	}
	if err != nil {
		return err
	}
	if _, err := w.insEvent.Exec(msgID, a.RecipientID, store.Nanos(at), kind, "queue", store.AttemptDetail(a, next)); err != nil {
		return fmt.Errorf("insert %s event: %w", kind, err)
	}
	if seed != "" && a.State == store.StateDelivered {
		if _, err := w.deliverPlacement.Exec(store.Nanos(at), store.Nanos(at), a.Provider, a.RecipientID); err != nil {
			return fmt.Errorf("placement delivered: %w", err)
		}
	}
	// A seed copy that bounced will never arrive: it is missing now,
	// not at a deadline that only delivered copies have.
	if seed != "" && a.State == store.StateBounced {
		if err := w.closeBounced(a.RecipientID, at, a.Provider); err != nil {
			return fmt.Errorf("placement bounced: %w", err)
		}
	}
	// A seed copy's links never become enabled.
	if a.EnableLinks && a.State == store.StateDelivered && seed == "" {
		if _, err := w.setLinkState(msgID, a.RecipientID, []store.LinkState{store.LinkPending}, store.LinkEnabled, at, "queue", "enabled on delivery"); err != nil {
			return fmt.Errorf("enable links on delivery: %w", err)
		}
	}
	if a.State == store.StateQueued {
		return nil // still live: nothing to drop
	}
	var one int
	switch err := w.hasLive.QueryRow(msgID).Scan(&one); {
	case err == nil:
		return nil // another recipient still needs the bytes
	case !errors.Is(err, sql.ErrNoRows):
		return err
	}
	if _, err := w.clearPrefixes.Exec(msgID); err != nil {
		return fmt.Errorf("drop prefixes: %w", err)
	}
	if _, err := w.dropContents.Exec(msgID); err != nil {
		return fmt.Errorf("drop contents: %w", err)
	}
	return nil
}

// AddEvent appends e to its message's audit trail. The message (and the
// recipient, when e names one) must exist.
func (s *Store) AddEvent(ctx context.Context, e store.Event) error {
	if e.Kind == "" {
		return fmt.Errorf("store/sqlite: add event to %s: empty kind", e.MessageID)
	}
	req := &request{run: func(w *writer, now time.Time) error {
		return w.addEvent(e, now)
	}}
	if err := s.submit(ctx, req); err != nil {
		return fmt.Errorf("store/sqlite: add %s event to %s: %w", e.Kind, e.MessageID, err)
	}
	return nil
}

func (w *writer) addEvent(e store.Event, now time.Time) error {
	var one int
	var err error
	if e.RecipientID != 0 {
		err = w.recipientOf.QueryRow(e.RecipientID, e.MessageID).Scan(&one)
	} else {
		err = w.messageExists.QueryRow(e.MessageID).Scan(&one)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return store.ErrNotFound
	}
	if err != nil {
		return err
	}
	at := e.Time
	if at.IsZero() {
		at = now
	}
	_, err = w.insCounted.Exec(e.MessageID, e.RecipientID, store.Nanos(at), e.Kind, e.Actor, e.Detail, max(e.Count, 1))
	return err
}
