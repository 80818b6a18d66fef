package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// batch is a transaction sent whole, in one round trip: pgx sends a
// batch without BEGIN as one pipeline ended by a single Sync, and
// PostgreSQL runs the statements before a Sync as one implicit
// transaction that commits at the Sync, or rolls back entirely when any
// statement fails (pgx's Conn.SendBatch and pgconn's Pipeline docs; the
// extended query protocol in PostgreSQL's docs). Nothing waits on
// certgate between two statements, and the transaction's locks are held
// only while the server runs it and commits.
//
// Each statement still takes its own snapshot (READ COMMITTED), but a
// statement cannot use what an earlier one returned: what it needs of
// an earlier write it derives in SQL, and a condition that must fail the
// whole transaction is a guard (see guard).
type batch struct {
	b     pgx.Batch
	items []batchItem
}

type batchItem struct {
	what string              // for the error, "insert message"
	scan func(pgx.Row) error // reads the row the statement returns; nil: none read
	fail error               // what a failed guard means; nil: not a guard
}

// queue adds a statement whose result is not read.
func (b *batch) queue(what, sql string, args ...any) {
	b.b.Queue(sql, args...)
	b.items = append(b.items, batchItem{what: what})
}

// queueRow adds a statement returning one row, read by scan.
func (b *batch) queueRow(what string, scan func(pgx.Row) error, sql string, args ...any) {
	b.b.Queue(sql, args...)
	b.items = append(b.items, batchItem{what: what, scan: scan})
}

// queueGuard adds guard(update): the transaction fails with fail unless
// update changes a row.
func (b *batch) queueGuard(what string, fail error, update string, args ...any) {
	b.b.Queue(guard(update), args...)
	b.items = append(b.items, batchItem{what: what, fail: fail})
}

// guard makes update (without RETURNING) fail when it changes no row,
// failing the batch's whole transaction: 1 / count(*) over its returned
// rows divides by zero. An aggregate over a data-modifying CTE is not
// folded at planning, so the division happens only after the update ran.
func guard(update string) string {
	return "WITH guarded AS (" + update + " RETURNING 1) SELECT 1 / count(*) FROM guarded"
}

// errGuard is PostgreSQL's division_by_zero, a failed guard.
const errGuard = "22012"

// run sends b and reads its results in order. The first statement that
// fails ends the transaction (PostgreSQL skips the rest to the Sync and
// rolls back); its error is returned, a failed guard's as its fail. A
// scan error on a statement that succeeded does not stop the others: the
// transaction commits all the same, so scans must not fail on rows the
// statements return.
func (s *Store) run(ctx context.Context, b *batch) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.use(func() error {
		br := s.pool.SendBatch(ctx, &b.b)
		err := readBatch(br, b.items)
		if cerr := br.Close(); err == nil && cerr != nil {
			err = cerr
		}
		return err
	})
}

func readBatch(br pgx.BatchResults, items []batchItem) error {
	for _, it := range items {
		var err error
		if it.scan != nil {
			err = it.scan(br.QueryRow())
		} else {
			_, err = br.Exec()
		}
		if err == nil {
			continue
		}
		if pe := (*pgconn.PgError)(nil); it.fail != nil && errors.As(err, &pe) && pe.Code == errGuard {
			return it.fail
		}
		return fmt.Errorf("%s: %w", it.what, err)
	}
	return nil
}
