package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/certgate/certgate/store"
	"github.com/jackc/pgx/v5"
)

var _ store.Idempotency = (*Store)(nil)

// ReserveKey claims key with one statement: the insert, or the update of
// an expired claim, wins for exactly one of racing callers on any node
// (ON CONFLICT waits for a racing insert's commit and locks the row it
// finds). Whoever does not win reads the row it then holds locked.
func (s *Store) ReserveKey(ctx context.Context, key string, bodyHash [32]byte, now, expires time.Time) (store.IdempotentCall, error) {
	var out store.IdempotentCall
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var claimed bool
		err := tx.QueryRow(ctx, `INSERT INTO idempotency_keys (key, body_hash, status, response, expires_at)
			VALUES ($1, $2, 0, NULL, $3)
			ON CONFLICT (key) DO UPDATE SET body_hash = excluded.body_hash, status = 0,
				response = NULL, expires_at = excluded.expires_at
			WHERE idempotency_keys.expires_at <= $4
			RETURNING true`, []byte(key), bodyHash[:], store.Nanos(expires), store.Nanos(now)).Scan(&claimed)
		if err == nil {
			out = store.IdempotentCall{Claimed: true, BodyHash: bodyHash, Expires: expires}
			return nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		// Held by another call, and locked by the statement above.
		var hash, resp []byte
		var exp int64
		out = store.IdempotentCall{}
		if err := tx.QueryRow(ctx, "SELECT body_hash, status, response, expires_at FROM idempotency_keys WHERE key = $1",
			[]byte(key)).Scan(&hash, &out.Status, &resp, &exp); err != nil {
			return err
		}
		copy(out.BodyHash[:], hash)
		out.Response, out.Expires = resp, store.FromNanos(exp)
		if out.Status != 0 && out.Response == nil {
			out.Response = []byte{}
		}
		return nil
	})
	if err != nil {
		return store.IdempotentCall{}, fmt.Errorf("store/postgres: reserve idempotency key: %w", err)
	}
	return out, nil
}

// ForgetKey drops a claim whose call did nothing.
func (s *Store) ForgetKey(ctx context.Context, key string) error {
	err := s.tx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "DELETE FROM idempotency_keys WHERE key = $1 AND status = 0", []byte(key))
		return err
	})
	if err != nil {
		return fmt.Errorf("store/postgres: forget idempotency key: %w", err)
	}
	return nil
}

// DeleteExpiredKeys deletes keys expired before before, at most limit.
func (s *Store) DeleteExpiredKeys(ctx context.Context, before time.Time, limit int) (int, error) {
	return s.delete(ctx, "idempotency keys", `DELETE FROM idempotency_keys WHERE key IN
		(SELECT key FROM idempotency_keys WHERE expires_at < $1 ORDER BY expires_at LIMIT $2)`, before, limit)
}
