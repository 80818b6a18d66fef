package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/certgate/certgate/store"
	"github.com/jackc/pgx/v5"
)

// Enqueue stores the message, its contents, its recipients with their
// links and placements, its idempotency key's answer and an "accepted"
// event in one transaction, sent as one batch (batch.go).
func (s *Store) Enqueue(ctx context.Context, m store.Message, contents [][]byte, rcpts []store.NewRecipient) ([]int64, error) {
	if err := store.CheckEnqueue(m, contents, rcpts); err != nil {
		return nil, fmt.Errorf("store/postgres: %w", err)
	}
	ids := make([]int64, len(rcpts))
	if err := s.run(ctx, enqueue(m, contents, rcpts, ids, time.Now(), s.node)); err != nil {
		return nil, fmt.Errorf("store/postgres: enqueue %s: %w", m.ID, err)
	}
	return ids, nil
}

// enqueue is the batch that writes the message, leasing its recipients
// to node (the accepting node delivers what it accepts; "" outside a
// cluster), and reads the recipients' ids into ids. A recipient's row
// finds its content's id by the content's rank among the message's, and
// its placement and links find the recipient's id as the last the
// recipients' sequence gave this session: both were written by earlier
// statements of the same transaction.
func enqueue(m store.Message, contents [][]byte, rcpts []store.NewRecipient, ids []int64, now time.Time, node string) *batch {
	received := m.ReceivedAt
	if received.IsZero() {
		received = now
	}
	b := &batch{}
	if a := m.Idempotency; a != nil {
		response := a.Response
		if response == nil {
			response = []byte{}
		}
		b.queueGuard("answer idempotency key", store.ErrKeyNotClaimed,
			`UPDATE idempotency_keys SET status = $1, response = $2, expires_at = $3
			WHERE key = $4 AND body_hash = $5 AND status = 0`,
			a.Status, response, store.Nanos(a.Expires), []byte(a.Key), a.BodyHash[:])
	}
	b.queue("insert message", `INSERT INTO messages (id, tenant, mail_from, header_from, message_id,
		subject, class, size, client_addr, auth_user, received_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		m.ID, m.Tenant, m.MailFrom, m.HeaderFrom, m.MessageID,
		m.Subject, m.Class, m.Size, m.ClientAddr, m.AuthUser, store.Nanos(received))
	for i, c := range contents {
		if c == nil {
			c = []byte{} // data is NOT NULL; an empty body is still a body
		}
		b.queue(fmt.Sprintf("insert content %d", i), "INSERT INTO contents (message_id, data) VALUES ($1, $2)", m.ID, c)
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
		b.queueRow(fmt.Sprintf("insert recipient %d (%s)", i, r.Address), func(row pgx.Row) error { return row.Scan(&ids[i]) },
			`INSERT INTO recipients (message_id, address, domain, address_key,
			tracking_id, prefix, content_id, state, next_attempt, updated_at, seed, lease_node)
			VALUES ($1, $2, $3, $4, NULLIF($5, ''), $6,
				(SELECT id FROM contents WHERE message_id = $1 ORDER BY id OFFSET $7 LIMIT 1),
				$8, $9, $10, $11, $12) RETURNING id`,
			m.ID, r.Address, store.DomainOf(r.Address), store.AddressKey(r.Address),
			r.TrackingID, prefix, int64(r.Content), string(r.State), store.Nanos(next), store.Nanos(now), r.Seed, node)
		if r.Seed != "" {
			b.queue(fmt.Sprintf("insert placement of recipient %d (%s)", i, r.Address),
				`INSERT INTO placements (recipient_id, message_id, tenant, seed, address,
				header, class, folder, at, provider) VALUES (`+lastRecipient+`, $1, $2, $3, $4, $5, $6, $7, $8, $9)`,
				m.ID, m.Tenant, r.Seed, r.Address, m.MessageID, m.Class,
				store.FolderPending, store.Nanos(received), r.SeedProvider)
		}
		for j, l := range r.Links {
			b.queue(fmt.Sprintf("insert link %d of recipient %d (%s)", j, i, r.Address),
				`INSERT INTO links (token_hash, message_id, recipient_id, tenant, url,
				state, max_uses, expires_at, created_at, updated_at)
				VALUES ($1, $2, `+lastRecipient+`, $3, $4, $5, $6, $7, $8, $8)`,
				l.TokenHash[:], m.ID, m.Tenant, l.URL, string(l.State),
				l.MaxUses, store.Nanos(l.ExpiresAt), store.Nanos(now))
		}
	}
	actor, detail := store.AcceptedEvent(m, rcpts)
	b.queue("insert accepted event", insertEvents, eventArgs([]laneEvent{ev(m.ID, 0, received, "accepted", actor, detail)})...)
	return b
}

// lastRecipient is the id of the recipient this session inserted last
// (the identity column's sequence is named as PostgreSQL names it).
const lastRecipient = "currval('recipients_id_seq')"

// addEvents inserts evs in order, their times and counts as given (count
// 0 as 1), a lane's event with its lane, after taking the events lock,
// in one statement. Callers add events last, after every row lock their
// transaction takes (see insertEvents).
func addEvents(ctx context.Context, tx pgx.Tx, evs ...laneEvent) error {
	if len(evs) == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, insertEvents, eventArgs(evs)...); err != nil {
		return fmt.Errorf("insert %s event: %w", evs[0].Kind, err)
	}
	return nil
}

// laneEvent is an event to add, with the lane of a lane's event (whose
// MessageID is "").
type laneEvent struct {
	store.Event
	lane string
}

// ev is an event of message messageID (and its recipient recipientID,
// when not 0) to add.
func ev(messageID string, recipientID int64, at time.Time, kind, actor, detail string) laneEvent {
	return laneEvent{Event: store.Event{MessageID: messageID, RecipientID: recipientID, Time: at,
		Kind: kind, Actor: actor, Detail: detail}}
}

// RecordAttempt updates the recipient, counts the attempt and writes a
// delivered, deferred or bounced event. When that leaves no recipient of
// the message queued or held, the message's bytes are dropped in the same
// transaction. A deferral or a delivery is one batch (recordAttemptBatch);
// a bounce, which may close a seed copy's placement with rules of Go's,
// is an interactive transaction.
func (s *Store) RecordAttempt(ctx context.Context, a store.Attempt) error {
	kind, ok := store.AttemptKind(a.State)
	if !ok {
		return fmt.Errorf("store/postgres: record attempt for recipient %d: state %q is not an attempt outcome", a.RecipientID, a.State)
	}
	var err error
	if a.State == store.StateBounced {
		err = s.tx(ctx, func(tx pgx.Tx) error { return recordAttempt(ctx, tx, a, kind, time.Now(), s.node) })
	} else {
		err = s.run(ctx, recordAttemptBatch(a, kind, time.Now(), s.node))
		if errors.Is(err, errNoRecipient) {
			err = store.ErrNotFound
			if s.node != "" {
				err = s.use(func() error { return leaseHolder(ctx, s.pool, a.RecipientID, a.MessageID) })
			}
		}
	}
	if err != nil {
		return fmt.Errorf("store/postgres: record attempt for recipient %d: %w", a.RecipientID, err)
	}
	return nil
}

// errNoRecipient fails recordAttemptBatch when the recipient is not
// there, not of a.MessageID, or (in a cluster) not leased to this node.
var errNoRecipient = errors.New("no such recipient held here")

// recordAttemptBatch records a deferral or a delivery (not a bounce) as
// recordAttempt does, in one batch: what recordAttempt decides in Go
// between statements (the recipient's message, whether it is a seed copy,
// which links move, whether any recipient is left live) each statement
// here decides in SQL, and the update of the recipient is a guard, so
// that when it matches no row nothing is written.
func recordAttemptBatch(a store.Attempt, kind string, now time.Time, node string) *batch {
	at := a.Time
	if at.IsZero() {
		at = now
	}
	next := a.NextAttempt
	final := a.State != store.StateQueued
	if final {
		next = time.Time{} // no further attempt
	}
	enable := a.EnableLinks && a.State == store.StateDelivered
	b := &batch{}
	if final {
		// First of all this transaction's locks, as the drop needs.
		// NO KEY UPDATE: the events' foreign key checks need not wait on it.
		b.queue("lock message", `SELECT 1 FROM messages WHERE id =
			(SELECT message_id FROM recipients WHERE id = $1) FOR NO KEY UPDATE`, a.RecipientID)
	}
	// A final attempt whose message has no other live recipient drops
	// its own prefix in this update (under the message's lock, so the
	// look at the others is current): the drop below then rewrites no
	// row of a message with one recipient, the usual case.
	b.queueGuard("update recipient", errNoRecipient, `UPDATE recipients r SET state = $1, attempts = attempts + 1,
		next_attempt = $2, provider = $3, last_code = $4, last_reply = $5, updated_at = $6,
		prefix = CASE WHEN $10 AND NOT EXISTS (SELECT 1 FROM recipients o WHERE o.message_id = r.message_id
			AND o.id <> r.id AND o.state IN ('queued', 'held')) THEN NULL ELSE r.prefix END,
		content_id = CASE WHEN $10 AND NOT EXISTS (SELECT 1 FROM recipients o WHERE o.message_id = r.message_id
			AND o.id <> r.id AND o.state IN ('queued', 'held')) THEN NULL ELSE r.content_id END
		WHERE id = $7 AND ($8 = '' OR message_id = $8) AND ($9 = '' OR lease_node = $9)`,
		string(a.State), store.Nanos(next), a.Provider, a.Code, a.Reply, store.Nanos(at), a.RecipientID, a.MessageID, node, final)
	if a.State == store.StateDelivered {
		// Only a seed copy has a placement.
		b.queue("placement delivered", `UPDATE placements SET delivered_at = $1, at = $1, provider = $2
			WHERE recipient_id = $3 AND EXISTS (SELECT 1 FROM recipients WHERE id = $3 AND seed != '')`,
			store.Nanos(at), a.Provider, a.RecipientID)
	}
	if enable {
		// The links' row locks, in id order as setLinkState takes them,
		// before the events lock; the events statement moves them.
		b.queue("lock links", `SELECT 1 FROM links WHERE message_id = (SELECT message_id FROM recipients WHERE id = $1)
			AND recipient_id = $1 ORDER BY id FOR UPDATE`, a.RecipientID)
	}
	if final {
		// dropIfFinal's, under the message's lock.
		b.queue("drop contents", `WITH m AS (SELECT message_id FROM recipients WHERE id = $1),
			live AS (SELECT EXISTS (SELECT 1 FROM recipients WHERE message_id = (SELECT message_id FROM m)
				AND state IN ('queued', 'held')) AS live),
			prefixes AS (UPDATE recipients SET prefix = NULL, content_id = NULL
				WHERE message_id = (SELECT message_id FROM m) AND prefix IS NOT NULL AND NOT (SELECT live FROM live))
			DELETE FROM contents WHERE message_id = (SELECT message_id FROM m) AND NOT (SELECT live FROM live)`,
			a.RecipientID)
	}
	// The attempt's event, then one per link enabled (never a seed
	// copy's), in the links' id order, as setLinkState's.
	b.queue("insert events", `WITH r AS (SELECT message_id, seed FROM recipients WHERE id = $2),
		enabled AS (UPDATE links SET state = $8, updated_at = $3
			WHERE $7 AND message_id = (SELECT message_id FROM r) AND recipient_id = $2 AND state = $9
			AND (SELECT seed FROM r) = '' RETURNING id)
		INSERT INTO events (message_id, recipient_id, time, kind, actor, detail)
		SELECT (SELECT message_id FROM r), $2, $3, e.kind, 'queue', e.detail
		FROM pg_advisory_xact_lock_shared($1) AS l,
			(SELECT 0::bigint AS n, $4::text AS kind, $5::text AS detail
			UNION ALL SELECT id, $6, 'enabled on delivery' FROM enabled) AS e
		ORDER BY e.n`,
		eventsLock, a.RecipientID, store.Nanos(at), kind, store.AttemptDetail(a, next),
		"link_"+string(store.LinkEnabled), enable, string(store.LinkEnabled), string(store.LinkPending))
	return b
}

// recordAttempt records a, when node (in a cluster) holds the recipient.
func recordAttempt(ctx context.Context, tx pgx.Tx, a store.Attempt, kind string, now time.Time, node string) error {
	at := a.Time
	if at.IsZero() {
		at = now
	}
	next := a.NextAttempt
	if a.State != store.StateQueued {
		next = time.Time{} // no further attempt
	}
	if a.State != store.StateQueued {
		// First of all this transaction's locks, as dropIfFinal needs.
		// NO KEY UPDATE: the events' foreign key checks need not wait on it.
		if _, err := tx.Exec(ctx, `SELECT 1 FROM messages WHERE id =
			(SELECT message_id FROM recipients WHERE id = $1) FOR NO KEY UPDATE`, a.RecipientID); err != nil {
			return err
		}
	}
	var msgID, seed string
	err := tx.QueryRow(ctx, `UPDATE recipients SET state = $1, attempts = attempts + 1,
		next_attempt = $2, provider = $3, last_code = $4, last_reply = $5, updated_at = $6
		WHERE id = $7 AND ($8 = '' OR message_id = $8) AND ($9 = '' OR lease_node = $9) RETURNING message_id, seed`,
		string(a.State), store.Nanos(next), a.Provider, a.Code, a.Reply, store.Nanos(at), a.RecipientID, a.MessageID, node,
	).Scan(&msgID, &seed)
	if errors.Is(err, pgx.ErrNoRows) && node != "" {
		return leaseHolder(ctx, tx, a.RecipientID, a.MessageID)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return store.ErrNotFound
	}
	if err != nil {
		return err
	}
	// Events in SQLite's order: the attempt's before those it causes.
	evs := []laneEvent{ev(msgID, a.RecipientID, at, kind, "queue", store.AttemptDetail(a, next))}
	if seed != "" && a.State == store.StateDelivered {
		if _, err := tx.Exec(ctx, "UPDATE placements SET delivered_at = $1, at = $1, provider = $2 WHERE recipient_id = $3",
			store.Nanos(at), a.Provider, a.RecipientID); err != nil {
			return fmt.Errorf("placement delivered: %w", err)
		}
	}
	// A seed copy that bounced will never arrive: it is missing now,
	// not at a deadline that only delivered copies have.
	if seed != "" && a.State == store.StateBounced {
		e, err := closeBounced(ctx, tx, a.RecipientID, at, a.Provider)
		if err != nil {
			return fmt.Errorf("placement bounced: %w", err)
		}
		evs = append(evs, e...)
	}
	// A seed copy's links never become enabled.
	if a.EnableLinks && a.State == store.StateDelivered && seed == "" {
		e, err := setLinkState(ctx, tx, msgID, a.RecipientID, []store.LinkState{store.LinkPending}, store.LinkEnabled,
			at, "queue", "enabled on delivery")
		if err != nil {
			return fmt.Errorf("enable links on delivery: %w", err)
		}
		evs = append(evs, e...)
	}
	if a.State != store.StateQueued {
		if err := dropIfFinal(ctx, tx, msgID); err != nil {
			return err
		}
	}
	return addEvents(ctx, tx, evs...)
}

// dropIfFinal drops the message's bytes when no recipient of it is
// queued or held. The caller holds the message's row lock, taken before
// any other: final attempts on its recipients take turns here, so of two
// last attempts that commit together the second sees the first's state
// and drops the bytes.
func dropIfFinal(ctx context.Context, tx pgx.Tx, msgID string) error {
	var live bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM recipients WHERE message_id = $1
		AND state IN ('queued', 'held'))`, msgID).Scan(&live); err != nil {
		return err
	}
	if live {
		return nil // another recipient still needs the bytes
	}
	if _, err := tx.Exec(ctx, "UPDATE recipients SET prefix = NULL, content_id = NULL WHERE message_id = $1", msgID); err != nil {
		return fmt.Errorf("drop prefixes: %w", err)
	}
	if _, err := tx.Exec(ctx, "DELETE FROM contents WHERE message_id = $1", msgID); err != nil {
		return fmt.Errorf("drop contents: %w", err)
	}
	return nil
}

// AddEvent appends e to its message's audit trail. The message (and the
// recipient, when e names one) must exist.
func (s *Store) AddEvent(ctx context.Context, e store.Event) error {
	if e.Kind == "" {
		return fmt.Errorf("store/postgres: add event to %s: empty kind", e.MessageID)
	}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if err := exists(ctx, tx, e.MessageID, e.RecipientID); err != nil {
			return err
		}
		if e.Time.IsZero() {
			e.Time = time.Now()
		}
		return addEvents(ctx, tx, laneEvent{Event: e})
	})
	if err != nil {
		return fmt.Errorf("store/postgres: add %s event to %s: %w", e.Kind, e.MessageID, err)
	}
	return nil
}
