package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// Export reads a spool for a copy into another store (certgate store
// copy): read-only, and in one read transaction, so that every table is
// read as of the same commit and the counts match the rows.
type Export struct {
	path string
	tx   *sql.Tx
	done func()
}

// ErrInUse says that a process has the database open: a running certgate
// would go on accepting mail into the file being copied, and that mail
// would not be in the copy.
var ErrInUse = errors.New("the database is open in another process (a running certgate?); stop it first")

// OpenExport opens the spool at path for reading, never creating or
// changing it. It refuses a file another process has open (where that
// can be seen: on Linux), and a schema older or newer than this binary's,
// whose tables would not be the ones a copy expects.
func OpenExport(ctx context.Context, path string) (*Export, error) {
	// Before our own connection takes its lock on the same byte.
	busy, err := inUse(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if busy {
		return nil, fmt.Errorf("%s: %w", path, ErrInUse)
	}
	db, done, err := openReadOnly(path)
	if err != nil {
		return nil, err
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		done()
		return nil, fmt.Errorf("%s: %w", path, asCorrupt(path, err))
	}
	e := &Export{path: path, tx: tx, done: done}
	var version int
	if err := tx.QueryRowContext(ctx, "SELECT version FROM schema_version").Scan(&version); err != nil {
		e.Close()
		return nil, fmt.Errorf("%s: reading the schema version (is it certgate's spool?): %w", path, asCorrupt(path, err))
	}
	if version != len(migrations) {
		e.Close()
		return nil, fmt.Errorf("%s: schema version %d, and this certgate's is %d: start and stop the certgate that matches this binary on it first, so that it migrates", path, version, len(migrations))
	}
	return e, nil
}

// Close ends the read transaction and closes the database.
func (e *Export) Close() error {
	err := e.tx.Rollback()
	e.done()
	return err
}

// Tables lists the spool's tables, but for SQLite's own and the schema
// version, so that a copy can refuse one it does not know of rather
// than leave its rows behind.
func (e *Export) Tables(ctx context.Context) ([]string, error) {
	return e.strings(ctx, `SELECT name FROM sqlite_schema WHERE type = 'table'
		AND name NOT LIKE 'sqlite\_%' ESCAPE '\' AND name != 'schema_version' ORDER BY name`)
}

// Columns lists table's columns in their order; none for a table the
// spool does not have.
func (e *Export) Columns(ctx context.Context, table string) ([]string, error) {
	return e.strings(ctx, "SELECT name FROM pragma_table_info(?) ORDER BY cid", table)
}

func (e *Export) strings(ctx context.Context, query string, args ...any) ([]string, error) {
	rows, err := e.tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, e.wrap(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, e.wrap(err)
		}
		out = append(out, s)
	}
	return out, e.wrap(rows.Err())
}

// Count is how many rows table has.
func (e *Export) Count(ctx context.Context, table string) (int64, error) {
	var n int64
	err := e.tx.QueryRowContext(ctx, "SELECT count(*) FROM "+quote(table)).Scan(&n)
	return n, e.wrap(err)
}

// LastID is the highest value column (an integer key) of table has
// given: its largest, or for an AUTOINCREMENT table (events) the largest
// it ever gave, deleted rows' too, so that a copy never gives those
// again.
func (e *Export) LastID(ctx context.Context, table, column string) (int64, error) {
	var n int64
	err := e.tx.QueryRowContext(ctx, `SELECT max(
		(SELECT COALESCE(max(`+quote(column)+`), 0) FROM `+quote(table)+`),
		COALESCE((SELECT seq FROM sqlite_sequence WHERE name = ?), 0))`, table).Scan(&n)
	return n, e.wrap(err)
}

// Rows streams table's rows, columns cols in that order, one row in
// memory at a time. Values are as SQLite keeps them: int64, float64,
// string, []byte or nil. Close it before the next call on e.
func (e *Export) Rows(ctx context.Context, table string, cols []string) (*Rows, error) {
	if len(cols) == 0 {
		return nil, fmt.Errorf("%s: no columns to read from %s", e.path, table)
	}
	q := make([]string, len(cols))
	for i, c := range cols {
		q[i] = quote(c)
	}
	rows, err := e.tx.QueryContext(ctx, "SELECT "+strings.Join(q, ", ")+" FROM "+quote(table))
	if err != nil {
		return nil, e.wrap(err)
	}
	return &Rows{e: e, rows: rows, vals: make([]any, len(cols)), ptrs: make([]any, len(cols))}, nil
}

// Rows is a table's rows as Export.Rows reads them; its methods are those
// of pgx's CopyFromSource, and Close.
type Rows struct {
	e    *Export
	rows *sql.Rows
	vals []any
	ptrs []any
	err  error
}

// Next moves to the next row; false at the end or on an error (Err).
func (r *Rows) Next() bool {
	if r.err != nil || !r.rows.Next() {
		return false
	}
	for i := range r.vals {
		r.ptrs[i] = &r.vals[i]
	}
	// database/sql copies []byte into an *any, so a row's values stay
	// valid after Next.
	if err := r.rows.Scan(r.ptrs...); err != nil {
		r.err = r.e.wrap(err)
		return false
	}
	return true
}

// Values returns the current row's values; the slice is reused by Next.
func (r *Rows) Values() ([]any, error) { return r.vals, r.err }

// Err is the error that ended the rows, if any.
func (r *Rows) Err() error {
	if r.err != nil {
		return r.err
	}
	return r.e.wrap(r.rows.Err())
}

// Close frees the rows.
func (r *Rows) Close() error { return r.rows.Close() }

func (e *Export) wrap(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", e.path, asCorrupt(e.path, err))
}

// quote makes name an SQL identifier.
func quote(name string) string { return `"` + strings.ReplaceAll(name, `"`, `""`) + `"` }
