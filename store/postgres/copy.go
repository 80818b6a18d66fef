package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Migrate brings the schema of the database dsn names to the newest this
// binary knows, as Open does, and reports the version before and after
// (0 for a database certgate never used). Its errors never quote dsn.
func Migrate(ctx context.Context, dsn string) (from, to int, err error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return 0, 0, errBadDSN
	}
	cfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return 0, 0, RedactDSN(fmt.Errorf("store/postgres: %w", err), dsn)
	}
	defer pool.Close()
	if from, err = schemaVersion(ctx, pool); err == nil {
		if err = migrate(ctx, pool); err == nil {
			to, err = schemaVersion(ctx, pool)
		}
	}
	if err != nil {
		return 0, 0, RedactDSN(fmt.Errorf("store/postgres: %w", err), dsn)
	}
	return from, to, nil
}

func schemaVersion(ctx context.Context, pool *pgxpool.Pool) (int, error) {
	var exists bool
	if err := pool.QueryRow(ctx, "SELECT to_regclass('schema_migrations') IS NOT NULL").Scan(&exists); err != nil || !exists {
		return 0, err
	}
	var v int
	err := pool.QueryRow(ctx, "SELECT COALESCE(max(version), 0) FROM schema_migrations").Scan(&v)
	return v, err
}

// copyTables are the tables Copy fills, each after those its foreign keys
// name.
var copyTables = []string{
	"messages", "contents", "recipients", "events", "links", "cursors",
	"placements", "seed_folders", "lane_states", "idempotency_keys",
}

// Source is the spool Copy reads: store/sqlite's Export. Each call sees
// the same snapshot.
type Source interface {
	// Tables lists the source's tables (not its bookkeeping ones).
	Tables(ctx context.Context) ([]string, error)
	// Columns lists a table's columns.
	Columns(ctx context.Context, table string) ([]string, error)
	// Count is how many rows a table has.
	Count(ctx context.Context, table string) (int64, error)
	// LastID is the highest id an integer key column has given, deleted
	// rows' included where the source knows them.
	LastID(ctx context.Context, table, column string) (int64, error)
	// Rows streams a table's rows, columns cols in that order.
	Rows(ctx context.Context, table string, cols []string) (Rows, error)
}

// Rows is a table's rows as a Source streams them: int64, float64,
// string, []byte or nil values.
type Rows interface {
	Next() bool
	Values() ([]any, error) // the current row; may be reused by Next
	Err() error
	Close() error
}

// TableCount is how many rows Copy moved into a table.
type TableCount struct {
	Table string
	Rows  int64
}

// ErrNotEmpty is Copy's refusal of a database that already has rows: the
// copy would mix two queues, and its ids could meet ids already there.
var ErrNotEmpty = errors.New("the PostgreSQL database is not empty")

// Copy moves a spool into the empty database dsn names: every table, ids
// kept, each identity sequence set past the highest id the source gave
// (so event ids keep growing, as EventsAfter promises), in one
// transaction, so that a failure leaves the tables empty. It migrates
// the schema first. A column only PostgreSQL has keeps its default; a
// table or column only the source has is refused, since its data would
// be left behind. It checks every table's count against the source's and
// returns them. Its errors never quote dsn.
func Copy(ctx context.Context, dsn string, src Source) ([]TableCount, error) {
	if _, _, err := Migrate(ctx, dsn); err != nil {
		return nil, err
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, errBadDSN
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, RedactDSN(fmt.Errorf("store/postgres: %w", err), dsn)
	}
	defer conn.Close(context.Background())
	var counts []TableCount
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		var err error
		counts, err = copyAll(ctx, tx, src)
		return err
	})
	if err != nil {
		return nil, RedactDSN(fmt.Errorf("store/postgres: copy: %w", err), dsn)
	}
	return counts, nil
}

func copyAll(ctx context.Context, tx pgx.Tx, src Source) ([]TableCount, error) {
	tables, err := src.Tables(ctx)
	if err != nil {
		return nil, err
	}
	for _, t := range tables {
		if !slices.Contains(copyTables, t) {
			return nil, fmt.Errorf("the source has a table %s that this certgate does not copy; nothing was copied", t)
		}
	}
	// Writers wait until the copy commits (readers do not), so that no
	// certgate node can slip a row in between the check and the copy.
	ids := make([]string, len(copyTables))
	for i, t := range copyTables {
		ids[i] = pgx.Identifier{t}.Sanitize()
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE "+strings.Join(ids, ", ")+" IN EXCLUSIVE MODE"); err != nil {
		return nil, fmt.Errorf("lock the tables: %w", err)
	}
	for i, t := range copyTables {
		var full bool
		if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM "+ids[i]+")").Scan(&full); err != nil {
			return nil, fmt.Errorf("%s: %w", t, err)
		}
		if full {
			return nil, fmt.Errorf("%w: table %s has rows; store copy only fills a database no certgate has used", ErrNotEmpty, t)
		}
	}
	counts := make([]TableCount, 0, len(copyTables))
	for _, t := range copyTables {
		n, err := copyTable(ctx, tx, src, t)
		if err != nil {
			return nil, fmt.Errorf("table %s: %w", t, err)
		}
		counts = append(counts, TableCount{Table: t, Rows: n})
	}
	return counts, nil
}

// column is a PostgreSQL column as information_schema describes it.
type column struct {
	name, dataType string
	identity       bool
}

func copyTable(ctx context.Context, tx pgx.Tx, src Source, table string) (int64, error) {
	pgCols, err := columns(ctx, tx, table)
	if err != nil {
		return 0, err
	}
	srcCols, err := src.Columns(ctx, table)
	if err != nil {
		return 0, err
	}
	if len(srcCols) == 0 {
		return 0, nil // a table the source's schema does not have: nothing to move
	}
	var cols, types []string
	var idents []string
	for _, c := range pgCols {
		if !slices.Contains(srcCols, c.name) {
			continue // PostgreSQL's alone: its default
		}
		cols = append(cols, c.name)
		types = append(types, c.dataType)
		if c.identity {
			idents = append(idents, c.name)
		}
	}
	for _, c := range srcCols {
		if !slices.Contains(cols, c) {
			return 0, fmt.Errorf("the source has a column %s that PostgreSQL's schema lacks; nothing was copied", c)
		}
	}
	want, err := src.Count(ctx, table)
	if err != nil {
		return 0, err
	}
	rows, err := src.Rows(ctx, table, cols)
	if err != nil {
		return 0, err
	}
	n, err := tx.CopyFrom(ctx, pgx.Identifier{table}, cols, &converter{Rows: rows, cols: cols, types: types})
	rows.Close()
	if err != nil {
		return 0, err
	}
	var got int64
	if err := tx.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{table}.Sanitize()).Scan(&got); err != nil {
		return 0, err
	}
	if n != want || got != want {
		return 0, fmt.Errorf("the source has %d rows, %d were copied and PostgreSQL counts %d; nothing was copied", want, n, got)
	}
	for _, c := range idents {
		last, err := src.LastID(ctx, table, c)
		if err != nil {
			return 0, err
		}
		if last <= 0 {
			continue // the sequence's start is right
		}
		if _, err := tx.Exec(ctx, "SELECT setval(pg_get_serial_sequence($1, $2), $3)",
			pgx.Identifier{table}.Sanitize(), c, last); err != nil {
			return 0, fmt.Errorf("set the sequence of %s: %w", c, err)
		}
	}
	return n, nil
}

// columns lists table's columns in the current schema, in their order.
func columns(ctx context.Context, tx pgx.Tx, table string) ([]column, error) {
	rows, err := tx.Query(ctx, `SELECT column_name, data_type, is_identity = 'YES'
		FROM information_schema.columns
		WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position`, table)
	if err != nil {
		return nil, err
	}
	cols, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (column, error) {
		var c column
		err := r.Scan(&c.name, &c.dataType, &c.identity)
		return c, err
	})
	if err == nil && len(cols) == 0 {
		err = errors.New("not in PostgreSQL's schema")
	}
	return cols, err
}

// converter feeds a Source's rows to CopyFrom, turning SQLite's loose
// types into what each PostgreSQL column takes: SQLite may keep text in a
// blob column and the reverse, and PostgreSQL's text holds neither NUL
// bytes nor invalid UTF-8, which are refused here with the column and
// row rather than by the server with neither.
type converter struct {
	Rows
	cols, types []string
	row         int64
}

func (c *converter) Next() bool {
	c.row++
	return c.Rows.Next()
}

func (c *converter) Values() ([]any, error) {
	vals, err := c.Rows.Values()
	if err != nil {
		return nil, err
	}
	for i, v := range vals {
		switch c.types[i] {
		case "bytea":
			if s, ok := v.(string); ok {
				vals[i] = []byte(s)
			}
		case "text":
			if b, ok := v.([]byte); ok {
				v = string(b)
				vals[i] = v
			}
			if s, ok := v.(string); ok && (strings.IndexByte(s, 0) >= 0 || !utf8.ValidString(s)) {
				// The value itself is not quoted: it may be a secret.
				return nil, fmt.Errorf("column %s of row %d holds a NUL byte or invalid UTF-8, which PostgreSQL's text cannot store", c.cols[i], c.row)
			}
		}
	}
	return vals, nil
}
