package postgres

import (
	"errors"
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// RedactDSN returns err with the connection string dsn, and the password
// in it, taken out of its text: pgx's errors may quote either, and
// certgate prints and logs errors. errors.Is and As still see err.
func RedactDSN(err error, dsn string) error {
	if err == nil || dsn == "" {
		return err
	}
	secrets := []string{dsn}
	if cfg, perr := pgconn.ParseConfig(dsn); perr == nil && cfg.Password != "" {
		p := cfg.Password
		secrets = append(secrets, p, url.QueryEscape(p), url.PathEscape(p))
	}
	text := err.Error()
	for _, s := range secrets {
		text = strings.ReplaceAll(text, s, "[redacted]")
	}
	return &redacted{text: text, err: err}
}

type redacted struct {
	text string
	err  error
}

func (r *redacted) Error() string { return r.text }
func (r *redacted) Unwrap() error { return r.err }

// errBadDSN replaces pgx's parse error, which quotes the DSN.
var errBadDSN = errors.New("store/postgres: the DSN does not parse")
