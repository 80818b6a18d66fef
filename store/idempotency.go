package store

import (
	"context"
	"errors"
	"time"
)

// ErrKeyNotClaimed is Enqueue's error for a message whose Idempotency
// names a key that is not claimed, unanswered, with its BodyHash.
var ErrKeyNotClaimed = errors.New("store: idempotency key not claimed by this call")

// Idempotency keeps the answers of API calls made with an Idempotency-Key
// header, so that a retried call returns the first answer instead of
// acting twice. Keys are the caller's (the API scopes them by token).
//
// A call claims its key with ReserveKey before it acts. If it acts (sends
// a message), its answer is stored by the Enqueue of that message
// (Message.Idempotency), in the same transaction, and the key then
// expires at the answer's Expires: a message made durable always has its
// key's answer, and a key's answer always its message. Enqueue fails
// with ErrKeyNotClaimed, storing nothing, unless the key is claimed with
// the answer's BodyHash and not answered, so a key is answered once even
// if its claim lapsed and was claimed again. If the call does not act,
// ForgetKey frees the key.
type Idempotency interface {
	// ReserveKey claims key for a call whose body hashes to bodyHash,
	// until expires, atomically: of two calls with one key, exactly one
	// gets Claimed. A key already claimed and not expired at now is
	// returned as stored (Claimed false), with its Response nil while the
	// call that claimed it is still under way; an expired one is claimed
	// anew.
	ReserveKey(ctx context.Context, key string, bodyHash [32]byte, now, expires time.Time) (IdempotentCall, error)
	// ForgetKey drops a claim that has no answer (its call failed before
	// acting), so that a retry may try again; an unknown or answered key
	// is no error and stays as it is.
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

// IdempotentAnswer is the answer of a call that claimed Key, stored with
// the message it sent (Message.Idempotency).
type IdempotentAnswer struct {
	Key      string   // as claimed with ReserveKey
	BodyHash [32]byte // as claimed: the claim must be this call's
	Status   int      // the answer's HTTP status, not 0
	Response []byte   // the answer's body, replayed as it is
	Expires  time.Time
}
