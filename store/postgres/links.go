package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/certgate/certgate/store"
	"github.com/jackc/pgx/v5"
)

// LinkByToken returns the link stored under hash, or store.ErrNotFound.
func (s *Store) LinkByToken(ctx context.Context, hash [32]byte) (*store.Link, error) {
	var l store.Link
	err := s.use(func() error {
		var err error
		l, err = scanLink(s.pool.QueryRow(ctx, "SELECT "+linkColumns+" FROM links WHERE token_hash = $1", hash[:]))
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("store/postgres: link by token: %w", store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("store/postgres: link by token: %w", err)
	}
	return &l, nil
}
