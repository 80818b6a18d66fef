package postgres

import (
	"context"
	"encoding/json"
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

// storedRefusal is a LinkRefusal in links.refusals_recent's JSON, as
// store/sqlite writes it (time in Unix nanoseconds).
type storedRefusal struct {
	Time      int64  `json:"t"`
	Reason    string `json:"r"`
	Client    string `json:"c"`
	UserAgent string `json:"a"`
}

func decodeRefusals(s string) ([]store.LinkRefusal, error) {
	var in []storedRefusal
	if err := json.Unmarshal([]byte(s), &in); err != nil {
		return nil, err
	}
	if len(in) == 0 {
		return nil, nil
	}
	out := make([]store.LinkRefusal, len(in))
	for i, r := range in {
		out[i] = store.LinkRefusal{Time: fromNanos(r.Time), Reason: r.Reason, Client: r.Client, UserAgent: r.UserAgent}
	}
	return out, nil
}
