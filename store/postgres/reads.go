package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/certgate/certgate/store"
	"github.com/jackc/pgx/v5"
)

// pendingPage is how many recipients Pending reads per query: no
// transaction stays open while fn runs.
const pendingPage = 1000

// pendingColumns are what scanPending reads, from recipients r joined with
// messages m.
const pendingColumns = `r.id, r.message_id, m.tenant, m.mail_from, r.address, r.domain,
	m.class, m.size, r.attempts, r.next_attempt, m.received_at, r.seed`

func scanPending(row pgx.Row) (store.Pending, error) {
	var p store.Pending
	var next, received int64
	if err := row.Scan(&p.RecipientID, &p.MessageID, &p.Tenant, &p.MailFrom, &p.Address,
		&p.Domain, &p.Class, &p.Size, &p.Attempts, &next, &received, &p.Seed); err != nil {
		return p, err
	}
	p.NextAttempt = store.FromNanos(next)
	p.ReceivedAt = store.FromNanos(received)
	return p, nil
}

// Pending calls fn for every queued recipient (a cluster node's: those it
// holds), in recipient id order. A recipient that changes state during
// the walk may or may not be seen.
func (s *Store) Pending(ctx context.Context, fn func(store.Pending) error) error {
	var after int64
	for {
		var page []store.Pending
		err := s.use(func() error {
			rows, err := s.pool.Query(ctx, "SELECT "+pendingColumns+`
				FROM recipients r JOIN messages m ON m.id = r.message_id
				WHERE r.state = 'queued' AND r.id > $1 AND ($3 = '' OR r.lease_node = $3)
				ORDER BY r.id LIMIT $2`, after, pendingPage, s.node)
			if err != nil {
				return err
			}
			page, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Pending, error) { return scanPending(row) })
			return err
		})
		if err != nil {
			return fmt.Errorf("store/postgres: pending: %w", err)
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

// Data returns the recipient's prefix followed by its content. Once the
// message's contents were dropped it returns an error wrapping
// store.ErrNotFound.
func (s *Store) Data(ctx context.Context, recipientID int64) ([]byte, error) {
	var present bool
	var prefix, data []byte
	err := s.use(func() error {
		return s.pool.QueryRow(ctx, `
			SELECT c.id IS NOT NULL, r.prefix, c.data
			FROM recipients r LEFT JOIN contents c ON c.id = r.content_id
			WHERE r.id = $1`, recipientID).Scan(&present, &prefix, &data)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("store/postgres: data of recipient %d: %w", recipientID, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("store/postgres: data of recipient %d: %w", recipientID, err)
	}
	if !present {
		return nil, fmt.Errorf("store/postgres: data of recipient %d: contents dropped after final delivery: %w", recipientID, store.ErrNotFound)
	}
	return append(prefix, data...), nil
}

// Message returns the message, its recipients in enqueue order, its links
// in id order and its events oldest first, all read from one snapshot.
func (s *Store) Message(ctx context.Context, id string) (*store.MessageView, error) {
	v, err := s.message(ctx, id, nil)
	if err != nil {
		return nil, fmt.Errorf("store/postgres: message %s: %w", id, err)
	}
	return v, nil
}

// MessagePage is Message with one page of the events, newest by id.
func (s *Store) MessagePage(ctx context.Context, id string, p store.EventPage) (*store.MessageView, error) {
	p = p.Clamped()
	v, err := s.message(ctx, id, &p)
	if err != nil {
		return nil, fmt.Errorf("store/postgres: message %s: %w", id, err)
	}
	return v, nil
}

// message reads a view in one repeatable-read transaction, so a view
// never shows an event without the recipient state it describes; page
// nil reads every event.
func (s *Store) message(ctx context.Context, id string, page *store.EventPage) (*store.MessageView, error) {
	v := &store.MessageView{}
	err := s.use(func() error {
		return pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly},
			func(tx pgx.Tx) error { return readMessage(ctx, tx, id, page, v) })
	})
	if err != nil {
		return nil, err
	}
	return v, nil
}

func readMessage(ctx context.Context, tx pgx.Tx, id string, page *store.EventPage, v *store.MessageView) error {
	m := &v.Message
	var received int64
	err := tx.QueryRow(ctx, "SELECT "+messageColumns+" FROM messages m WHERE id = $1", id).Scan(
		&m.ID, &m.Tenant, &m.MailFrom, &m.HeaderFrom,
		&m.MessageID, &m.Subject, &m.Class, &m.Size, &m.ClientAddr, &m.AuthUser, &received)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.ErrNotFound
	}
	if err != nil {
		return err
	}
	m.ReceivedAt = store.FromNanos(received)

	rows, err := tx.Query(ctx, `
		SELECT id, message_id, address, domain, COALESCE(tracking_id, ''), state, attempts,
			next_attempt, provider, last_code, last_reply, updated_at, seed
		FROM recipients WHERE message_id = $1 ORDER BY id`, id)
	if err != nil {
		return err
	}
	v.Recipients, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Recipient, error) {
		var r store.Recipient
		var state string
		var next, updated int64
		err := row.Scan(&r.ID, &r.MessageID, &r.Address, &r.Domain, &r.TrackingID, &state,
			&r.Attempts, &next, &r.Provider, &r.LastCode, &r.LastReply, &updated, &r.Seed)
		r.State = store.State(state)
		r.NextAttempt = store.FromNanos(next)
		r.UpdatedAt = store.FromNanos(updated)
		return r, err
	})
	if err != nil {
		return err
	}

	rows, err = tx.Query(ctx, "SELECT "+linkColumns+" FROM links WHERE message_id = $1 ORDER BY id", id)
	if err != nil {
		return err
	}
	if v.Links, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Link, error) { return scanLink(row) }); err != nil {
		return err
	}

	const eventColumns = "SELECT id, message_id, recipient_id, time, kind, actor, detail, count FROM events"
	if page == nil {
		rows, err = tx.Query(ctx, eventColumns+" WHERE message_id = $1 ORDER BY time, id", id)
	} else {
		// One more than the page tells whether older events remain.
		before := page.Before
		if before <= 0 {
			before = math.MaxInt64
		}
		rows, err = tx.Query(ctx, eventColumns+" WHERE message_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
			id, before, page.Limit+1)
	}
	if err != nil {
		return err
	}
	v.Events, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Event, error) {
		var e store.Event
		var at int64
		err := row.Scan(&e.ID, &e.MessageID, &e.RecipientID, &at, &e.Kind, &e.Actor, &e.Detail, &e.Count)
		e.Time = store.FromNanos(at)
		return e, err
	})
	if err != nil {
		return err
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
	return nil
}

const messageColumns = `m.id, m.tenant, m.mail_from, m.header_from, m.message_id, m.subject,
	m.class, m.size, m.client_addr, m.auth_user, m.received_at`

// linkColumns are what scanLink reads.
const linkColumns = `id, token_hash, message_id, recipient_id, tenant, url, state, uses,
	max_uses, expires_at, created_at, updated_at,
	refusals, refusals_noticed, refusals_noticed_at, refusals_recent`

func scanLink(row pgx.Row) (store.Link, error) {
	var l store.Link
	var hash []byte
	var state, recent string
	var expires, created, updated, noticed int64
	if err := row.Scan(&l.ID, &hash, &l.MessageID, &l.RecipientID, &l.Tenant, &l.URL, &state,
		&l.Uses, &l.MaxUses, &expires, &created, &updated,
		&l.Refusals.Count, &l.Refusals.Noticed, &noticed, &recent); err != nil {
		return l, err
	}
	if len(hash) != len(l.TokenHash) {
		return l, fmt.Errorf("link %d: token hash of %d bytes, want %d", l.ID, len(hash), len(l.TokenHash))
	}
	var err error
	if l.Refusals.Recent, err = store.DecodeRefusals(recent); err != nil {
		return l, fmt.Errorf("link %d: recent refusals: %w", l.ID, err)
	}
	copy(l.TokenHash[:], hash)
	l.State = store.LinkState(state)
	l.ExpiresAt = store.FromNanos(expires)
	l.CreatedAt = store.FromNanos(created)
	l.UpdatedAt = store.FromNanos(updated)
	l.Refusals.NoticedAt = store.FromNanos(noticed)
	return l, nil
}

// Search returns the messages matching q, newest (highest id) first.
func (s *Store) Search(ctx context.Context, q store.Query) ([]store.Message, error) {
	query, args := searchSQL(q)
	var out []store.Message
	err := s.use(func() error {
		rows, err := s.pool.Query(ctx, query, args...)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Message, error) {
			var m store.Message
			var received int64
			err := row.Scan(&m.ID, &m.Tenant, &m.MailFrom, &m.HeaderFrom, &m.MessageID, &m.Subject,
				&m.Class, &m.Size, &m.ClientAddr, &m.AuthUser, &received)
			m.ReceivedAt = store.FromNanos(received)
			return m, err
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store/postgres: search: %w", err)
	}
	return out, nil
}

// likeEscaper makes a LIKE pattern match its text literally.
var likeEscaper = strings.NewReplacer(`\`, `\\`, "%", `\%`, "_", `\_`)

// asciiLower folds ASCII letters only, whatever the database's locale:
// Query.Subject ignores the case of ASCII letters alone.
const asciiLower = "translate(%s, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')"

// searchSQL builds the query for q and its arguments.
func searchSQL(q store.Query) (string, []any) {
	c := &conds{}
	if q.ID != "" {
		c.add("m.id = $?", q.ID)
	}
	if q.Tenant != "" {
		c.add("m.tenant = $?", q.Tenant)
	}
	if len(q.Tenants) > 0 {
		c.add("m.tenant = ANY($?)", q.Tenants)
	}
	switch {
	case q.Recipient != "" && q.State != "":
		c.add("m.id IN (SELECT message_id FROM recipients WHERE address_key = $? AND state = $?)",
			store.AddressKey(q.Recipient), string(q.State))
	case q.Recipient != "":
		c.add("m.id IN (SELECT message_id FROM recipients WHERE address_key = $?)", store.AddressKey(q.Recipient))
	case q.State != "":
		c.add("EXISTS (SELECT 1 FROM recipients r WHERE r.message_id = m.id AND r.state = $?)", string(q.State))
	}
	if q.MessageID != "" {
		c.add("m.message_id = $?", q.MessageID)
	}
	if q.Subject != "" {
		c.add(fmt.Sprintf(asciiLower, "m.subject")+" LIKE "+fmt.Sprintf(asciiLower, "$?")+` ESCAPE '\'`,
			"%"+likeEscaper.Replace(q.Subject)+"%")
	}
	if !q.Since.IsZero() {
		c.add("m.received_at >= $?", store.Nanos(q.Since))
	}
	if !q.Until.IsZero() {
		c.add("m.received_at < $?", store.Nanos(q.Until))
	}
	if q.After != "" {
		c.add("m.id < $?", q.After)
	}
	c.args = append(c.args, store.PageLimit(q.Limit))
	return fmt.Sprintf("SELECT %s FROM messages m%s ORDER BY m.id DESC LIMIT $%d",
		messageColumns, c.clause(), len(c.args)), c.args
}
