package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/certgate/certgate/store"
)

// The methods below are not written yet: each answers errNotYet, and the
// conformance tests that need them are named in postgres_test.go.

// UseLink is not implemented yet.
func (s *Store) UseLink(ctx context.Context, id int64, now time.Time, actor, detail string) (store.LinkUse, error) {
	return store.LinkUse{}, fmt.Errorf("store/postgres: use link %d: %w", id, errNotYet)
}

// RefuseLink is not implemented yet.
func (s *Store) RefuseLink(ctx context.Context, id int64, r store.LinkRefusal, actor string) (bool, error) {
	return false, fmt.Errorf("store/postgres: refuse link %d: %w", id, errNotYet)
}

// SetLinkState is not implemented yet.
func (s *Store) SetLinkState(ctx context.Context, messageID string, recipientID int64, from []store.LinkState, to store.LinkState, actor, detail string) (int, error) {
	return 0, fmt.Errorf("store/postgres: set link state: %w", errNotYet)
}

// Release is not implemented yet.
func (s *Store) Release(ctx context.Context, messageID string, now time.Time, actor, detail string) ([]store.Pending, error) {
	return nil, fmt.Errorf("store/postgres: release %s: %w", messageID, errNotYet)
}

var _ store.Store = (*Store)(nil)
