package store

import (
	"context"
	"time"
)

// Idempotency keeps the answers of API calls made with an Idempotency-Key
// header, so that a retried call returns the first answer instead of
// acting twice. Keys are the caller's (the API scopes them by token).
type Idempotency interface {
	// ReserveKey claims key for a call whose body hashes to bodyHash,
	// until expires, atomically: of two calls with one key, exactly one
	// gets Claimed. A key already claimed and not expired at now is
	// returned as stored (Claimed false), with its Response nil while the
	// call that claimed it is still under way; an expired one is claimed
	// anew.
	ReserveKey(ctx context.Context, key string, bodyHash [32]byte, now, expires time.Time) (IdempotentCall, error)
	// RememberKey stores the answer of the call that claimed key.
	RememberKey(ctx context.Context, key string, status int, response []byte) error
	// ForgetKey drops a claim whose call did nothing (it failed before
	// acting), so that a retry may try again; an unknown key is no error.
	ForgetKey(ctx context.Context, key string) error
	// DeleteExpiredKeys deletes keys that expired before before, at most
	// limit, and reports how many.
	DeleteExpiredKeys(ctx context.Context, before time.Time, limit int) (int, error)
}

// IdempotentCall is a key as stored.
type IdempotentCall struct {
	Claimed  bool     // this call holds the key now
	BodyHash [32]byte // the body of the call that claimed it
	Status   int      // its answer's HTTP status; 0 while it is under way
	Response []byte   // its answer's body; nil while it is under way
	Expires  time.Time
}
