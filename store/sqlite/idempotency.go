package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/certgate/certgate/store"
)

var _ store.Idempotency = (*Store)(nil)

// ReserveKey claims key in the writer: one goroutine runs every write, so
// the read and the claim that follows it cannot interleave with another
// caller's.
func (s *Store) ReserveKey(ctx context.Context, key string, bodyHash [32]byte, now, expires time.Time) (store.IdempotentCall, error) {
	var out store.IdempotentCall
	req := &request{run: func(w *writer, _ time.Time) error {
		out = store.IdempotentCall{}
		var hash, resp []byte
		var status int
		var exp int64
		err := w.conn.QueryRowContext(context.Background(),
			"SELECT body_hash, status, response, expires_at FROM idempotency_keys WHERE key = ?", key).Scan(&hash, &status, &resp, &exp)
		switch {
		case err == nil && exp > store.Nanos(now):
			copy(out.BodyHash[:], hash)
			out.Status, out.Response, out.Expires = status, resp, store.FromNanos(exp)
			if status != 0 && out.Response == nil {
				out.Response = []byte{}
			}
			return nil
		case err != nil && !errors.Is(err, sql.ErrNoRows):
			return err
		}
		// New, or expired: claimed by this call.
		if _, err := w.conn.ExecContext(context.Background(), `INSERT INTO idempotency_keys (key, body_hash, status, response, expires_at)
			VALUES (?, ?, 0, NULL, ?) ON CONFLICT (key) DO UPDATE SET body_hash = excluded.body_hash, status = 0,
			response = NULL, expires_at = excluded.expires_at`, key, bodyHash[:], store.Nanos(expires)); err != nil {
			return err
		}
		out = store.IdempotentCall{Claimed: true, BodyHash: bodyHash, Expires: expires}
		return nil
	}}
	if err := s.submit(ctx, req); err != nil {
		return store.IdempotentCall{}, fmt.Errorf("store/sqlite: reserve idempotency key: %w", err)
	}
	return out, nil
}

// answerKey stores a message's idempotency answer, inside its Enqueue:
// only over this call's claim, never over another body's or an answer.
func (w *writer) answerKey(a *store.IdempotentAnswer) error {
	response := a.Response
	if response == nil {
		response = []byte{}
	}
	res, err := w.answerIdem.Exec(a.Status, response, store.Nanos(a.Expires), a.Key, a.BodyHash[:])
	if err != nil {
		return fmt.Errorf("answer idempotency key: %w", err)
	}
	n, err := res.RowsAffected()
	if err == nil && n != 1 {
		err = store.ErrKeyNotClaimed
	}
	return err
}

// ForgetKey drops a claim whose call did nothing.
func (s *Store) ForgetKey(ctx context.Context, key string) error {
	req := &request{run: func(w *writer, _ time.Time) error {
		_, err := w.conn.ExecContext(context.Background(), "DELETE FROM idempotency_keys WHERE key = ? AND status = 0", key)
		return err
	}}
	if err := s.submit(ctx, req); err != nil {
		return fmt.Errorf("store/sqlite: forget idempotency key: %w", err)
	}
	return nil
}

// DeleteExpiredKeys deletes keys expired before before, at most limit.
func (s *Store) DeleteExpiredKeys(ctx context.Context, before time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, fmt.Errorf("store/sqlite: delete idempotency keys: limit %d is not positive", limit)
	}
	var n int64
	req := &request{run: func(w *writer, _ time.Time) error {
		res, err := w.conn.ExecContext(context.Background(), `DELETE FROM idempotency_keys WHERE key IN
			(SELECT key FROM idempotency_keys WHERE expires_at < ? ORDER BY expires_at LIMIT ?)`, store.Nanos(before), limit)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	}}
	if err := s.submit(ctx, req); err != nil {
		return 0, fmt.Errorf("store/sqlite: delete idempotency keys: %w", err)
	}
	return int(n), nil
}
