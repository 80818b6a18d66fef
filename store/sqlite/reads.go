package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/certgate/certgate/store"
)

// pendingPage is how many recipients Pending reads per query. Paging keeps
// no read transaction open while fn runs, so fn may take its time or call
// the store (Data, RecordAttempt) without pinning the WAL or a connection.
const pendingPage = 1000

// Pending calls fn for every queued recipient, in recipient id order. A
// recipient that changes state during the walk may or may not be seen.
func (s *Store) Pending(ctx context.Context, fn func(store.Pending) error) error {
	var after int64
	page := make([]store.Pending, 0, pendingPage)
	for {
		var err error
		page, err = s.pendingPage(ctx, after, page[:0])
		if err != nil {
			return fmt.Errorf("store/sqlite: pending: %w", err)
		}
		for _, p := range page {
			if err := fn(p); err != nil {
				return err
			}
		}
		if len(page) < pendingPage {
			return nil
		}
		after = page[len(page)-1].RecipientID
	}
}

func (s *Store) pendingPage(ctx context.Context, after int64, page []store.Pending) ([]store.Pending, error) {
	rows, err := s.rdb.QueryContext(ctx, "SELECT "+pendingColumns+`
		FROM recipients r JOIN messages m ON m.id = r.message_id
		WHERE r.state = 'queued' AND r.id > ?
		ORDER BY r.id LIMIT ?`, after, pendingPage)
	if err != nil {
		return page, err
	}
	defer rows.Close()
	for rows.Next() {
		p, err := scanPending(rows)
		if err != nil {
			return page, err
		}
		page = append(page, p)
	}
	return page, rows.Err()
}

// pendingColumns are what scanPending reads, from recipients r joined with
// messages m.
const pendingColumns = `r.id, r.message_id, m.tenant, m.mail_from, r.address, r.domain,
	m.class, m.size, r.attempts, r.next_attempt, m.received_at, r.seed`

func scanPending(sc scanner) (store.Pending, error) {
	var p store.Pending
	var next, received int64
	if err := sc.Scan(&p.RecipientID, &p.MessageID, &p.Tenant, &p.MailFrom, &p.Address,
		&p.Domain, &p.Class, &p.Size, &p.Attempts, &next, &received, &p.Seed); err != nil {
		return p, err
	}
	p.NextAttempt = store.FromNanos(next)
	p.ReceivedAt = store.FromNanos(received)
	return p, nil
}

// scanner is a row: *sql.Row or *sql.Rows.
type scanner interface{ Scan(dest ...any) error }

// Data returns the recipient's prefix followed by its content. Once the
// message's contents were dropped it returns an error wrapping
// store.ErrNotFound.
func (s *Store) Data(ctx context.Context, recipientID int64) ([]byte, error) {
	rows, err := s.rdb.QueryContext(ctx, `
		SELECT c.id IS NOT NULL, r.prefix, c.data
		FROM recipients r LEFT JOIN contents c ON c.id = r.content_id
		WHERE r.id = ?`, recipientID)
	if err != nil {
		return nil, fmt.Errorf("store/sqlite: data of recipient %d: %w", recipientID, err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("store/sqlite: data of recipient %d: %w", recipientID, err)
		}
		return nil, fmt.Errorf("store/sqlite: data of recipient %d: %w", recipientID, store.ErrNotFound)
	}
	// RawBytes points into SQLite's buffers: the body is copied once, into
	// the result, instead of once per column and again when joined.
	// Empty blobs may scan as nil, so presence is asked of SQL directly.
	var present bool
	var prefix, data sql.RawBytes
	if err := rows.Scan(&present, &prefix, &data); err != nil {
		return nil, fmt.Errorf("store/sqlite: data of recipient %d: %w", recipientID, err)
	}
	if !present {
		return nil, fmt.Errorf("store/sqlite: data of recipient %d: contents dropped after final delivery: %w", recipientID, store.ErrNotFound)
	}
	out := make([]byte, 0, len(prefix)+len(data))
	out = append(append(out, prefix...), data...)
	return out, nil
}

// Message returns the message, its recipients in enqueue order, its links
// in id order and its events oldest first, all read from one snapshot.
func (s *Store) Message(ctx context.Context, id string) (*store.MessageView, error) {
	v, err := s.message(ctx, id, nil)
	if err != nil {
		return nil, fmt.Errorf("store/sqlite: message %s: %w", id, err)
	}
	return v, nil
}

// MessagePage is Message with one page of the events, newest by id.
func (s *Store) MessagePage(ctx context.Context, id string, p store.EventPage) (*store.MessageView, error) {
	p = p.Clamped()
	v, err := s.message(ctx, id, &p)
	if err != nil {
		return nil, fmt.Errorf("store/sqlite: message %s: %w", id, err)
	}
	return v, nil
}

// message reads a view; page nil reads every event.
func (s *Store) message(ctx context.Context, id string, page *store.EventPage) (*store.MessageView, error) {
	// A read transaction gives the four queries one WAL snapshot, so a
	// view never shows an event without the recipient state it describes.
	tx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()

	v := &store.MessageView{}
	m := &v.Message
	var received int64
	err = tx.QueryRowContext(ctx, `
		SELECT id, tenant, mail_from, header_from, message_id, subject, class, size,
			client_addr, auth_user, received_at
		FROM messages WHERE id = ?`, id).Scan(&m.ID, &m.Tenant, &m.MailFrom, &m.HeaderFrom,
		&m.MessageID, &m.Subject, &m.Class, &m.Size, &m.ClientAddr, &m.AuthUser, &received)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	m.ReceivedAt = store.FromNanos(received)

	rows, err := tx.QueryContext(ctx, `
		SELECT id, message_id, address, domain, COALESCE(tracking_id, ''), state, attempts,
			next_attempt, provider, last_code, last_reply, updated_at, seed
		FROM recipients WHERE message_id = ? ORDER BY id`, id)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var r store.Recipient
		var state string
		var next, updated int64
		if err := rows.Scan(&r.ID, &r.MessageID, &r.Address, &r.Domain, &r.TrackingID, &state,
			&r.Attempts, &next, &r.Provider, &r.LastCode, &r.LastReply, &updated, &r.Seed); err != nil {
			rows.Close()
			return nil, err
		}
		r.State = store.State(state)
		r.NextAttempt = store.FromNanos(next)
		r.UpdatedAt = store.FromNanos(updated)
		v.Recipients = append(v.Recipients, r)
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}

	rows, err = tx.QueryContext(ctx, "SELECT "+linkColumns+" FROM links WHERE message_id = ? ORDER BY id", id)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		l, err := scanLink(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		v.Links = append(v.Links, l)
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}

	const eventColumns = "SELECT id, message_id, recipient_id, time, kind, actor, detail, count FROM events"
	if page == nil {
		rows, err = tx.QueryContext(ctx, eventColumns+" WHERE message_id = ? ORDER BY time, id", id)
	} else {
		// One more than the page tells whether older events remain. The
		// index on message_id carries the id, so this reads the page only.
		before := page.Before
		if before <= 0 {
			before = math.MaxInt64
		}
		rows, err = tx.QueryContext(ctx, eventColumns+" WHERE message_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
			id, before, page.Limit+1)
	}
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var e store.Event
		var at int64
		if err := rows.Scan(&e.ID, &e.MessageID, &e.RecipientID, &at, &e.Kind, &e.Actor, &e.Detail, &e.Count); err != nil {
			return nil, err
		}
		e.Time = store.FromNanos(at)
		v.Events = append(v.Events, e)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if page != nil {
		if len(v.Events) > page.Limit {
			v.Events = v.Events[:page.Limit]
			v.OlderEvents = v.Events[page.Limit-1].ID
		}
		slices.SortFunc(v.Events, func(a, b store.Event) int {
			return cmp.Or(a.Time.Compare(b.Time), cmp.Compare(a.ID, b.ID))
		})
	}
	return v, nil
}
