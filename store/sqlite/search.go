package sqlite

import (
	"context"
	"fmt"
	"strings"

	"github.com/certgate/certgate/store"
)

// Search returns the messages matching q, newest (highest id) first.
//
// How each filter finds its rows: an id is one primary key lookup; a
// recipient address goes through the recipients_address index to the few
// messages it names, and so does a state other than delivered through
// recipients_state; everything else walks messages backwards from the page
// token through the primary key and stops once the page is full, which is
// quick wherever matches are common (a tenant's mail, a day, delivered
// mail) and a scan where they are rare.
func (s *Store) Search(ctx context.Context, q store.Query) ([]store.Message, error) {
	query, args := searchSQL(q)
	rows, err := s.rdb.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("store/sqlite: search: %w", err)
	}
	defer rows.Close()
	var out []store.Message
	for rows.Next() {
		var m store.Message
		var received int64
		if err := rows.Scan(&m.ID, &m.Tenant, &m.MailFrom, &m.HeaderFrom, &m.MessageID, &m.Subject,
			&m.Class, &m.Size, &m.ClientAddr, &m.AuthUser, &received); err != nil {
			return nil, fmt.Errorf("store/sqlite: search: %w", err)
		}
		m.ReceivedAt = store.FromNanos(received)
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store/sqlite: search: %w", err)
	}
	return out, nil
}

// likeEscaper makes a LIKE pattern match its text literally.
var likeEscaper = strings.NewReplacer(`\`, `\\`, "%", `\%`, "_", `\_`)

// searchSQL builds the query for q and its arguments.
func searchSQL(q store.Query) (string, []any) {
	var where []string
	var args []any
	add := func(cond string, vals ...any) {
		where = append(where, cond)
		args = append(args, vals...)
	}
	if q.ID != "" {
		add("m.id = ?", q.ID)
	}
	if q.Tenant != "" {
		add("m.tenant = ?", q.Tenant)
	}
	if len(q.Tenants) > 0 {
		names := make([]any, len(q.Tenants))
		for i, t := range q.Tenants {
			names[i] = t
		}
		add("m.tenant IN (?"+strings.Repeat(", ?", len(q.Tenants)-1)+")", names...)
	}
	switch {
	case q.Recipient != "" && q.State != "":
		add("m.id IN (SELECT message_id FROM recipients WHERE address_key = ? AND state = ?)",
			store.AddressKey(q.Recipient), string(q.State))
	case q.Recipient != "":
		add("m.id IN (SELECT message_id FROM recipients WHERE address_key = ?)", store.AddressKey(q.Recipient))
	case q.State == store.StateDelivered:
		// Most of the history is delivered: walking messages newest first
		// fills a page soon. Without statistics SQLite would probe by
		// state, reading every delivered recipient for each message.
		add(`EXISTS (SELECT 1 FROM recipients r INDEXED BY recipients_message
			WHERE r.message_id = m.id AND r.state = ?)`, string(q.State))
	case q.State != "":
		// Held, queued and bounced recipients are few next to the
		// history: start from them.
		add("m.id IN (SELECT message_id FROM recipients WHERE state = ?)", string(q.State))
	}
	if q.MessageID != "" {
		add("m.message_id = ?", q.MessageID)
	}
	if q.Subject != "" {
		add(`m.subject LIKE ? ESCAPE '\'`, "%"+likeEscaper.Replace(q.Subject)+"%")
	}
	if !q.Since.IsZero() {
		add("m.received_at >= ?", store.Nanos(q.Since))
	}
	if !q.Until.IsZero() {
		add("m.received_at < ?", store.Nanos(q.Until))
	}
	if q.After != "" {
		add("m.id < ?", q.After)
	}
	limit := store.PageLimit(q.Limit)
	var b strings.Builder
	b.WriteString(`SELECT m.id, m.tenant, m.mail_from, m.header_from, m.message_id, m.subject,
		m.class, m.size, m.client_addr, m.auth_user, m.received_at
		FROM messages m`)
	if len(where) > 0 {
		b.WriteString(" WHERE ")
		b.WriteString(strings.Join(where, " AND "))
	}
	b.WriteString(" ORDER BY m.id DESC LIMIT ?")
	args = append(args, limit)
	return b.String(), args
}
