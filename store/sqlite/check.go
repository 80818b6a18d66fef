package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"strings"

	sqlite3 "modernc.org/sqlite"
)

// CorruptError says that SQLite found the database file damaged: a
// consistency check reported problems, or the file is not a database.
// Nothing should write to such a file before someone has looked at it.
type CorruptError struct {
	Path     string
	Problems []string // what SQLite reported, the first few
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("database %s is damaged: %s", e.Path, strings.Join(e.Problems, "; "))
}

// maxProblems bounds what a check reports: the first problems say enough,
// and a badly damaged file can yield thousands.
const maxProblems = 10

// quickCheck runs PRAGMA quick_check, which reads every page and checks
// the b-trees' structure in time linear in the file's size, but not that
// indexes match their tables (integrity_check, which Check runs, does).
func quickCheck(ctx context.Context, conn *sql.Conn, path string) error {
	return runCheck(ctx, conn, path, "quick_check")
}

func runCheck(ctx context.Context, q interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}, path, pragma string) error {
	rows, err := q.QueryContext(ctx, fmt.Sprintf("PRAGMA %s(%d)", pragma, maxProblems))
	if err != nil {
		return asCorrupt(path, err)
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return asCorrupt(path, err)
		}
		if line != "ok" {
			problems = append(problems, line)
		}
	}
	if err := rows.Err(); err != nil {
		return asCorrupt(path, err)
	}
	if len(problems) > 0 {
		return &CorruptError{Path: path, Problems: problems}
	}
	return nil
}

// SQLite's result codes for a damaged file (sqlite3.h).
const (
	sqliteCorrupt = 11 // SQLITE_CORRUPT
	sqliteNotADB  = 26 // SQLITE_NOTADB
)

// asCorrupt turns SQLite's "database disk image is malformed" and "file is
// not a database" into a *CorruptError; other errors stay as they are.
func asCorrupt(path string, err error) error {
	var se *sqlite3.Error
	if errors.As(err, &se) && (se.Code()&0xff == sqliteCorrupt || se.Code()&0xff == sqliteNotADB) {
		return &CorruptError{Path: path, Problems: []string{se.Error()}}
	}
	return err
}

// Check runs SQLite's full PRAGMA integrity_check on the database at path:
// nil when it is sound, a *CorruptError when it is damaged, another error
// when it cannot be read. It opens the file read-only, never creates it,
// and may run while certgate serves from it (the check then sees the last
// commit before it started). On a large spool it takes a while: it reads
// every page and every index.
func Check(ctx context.Context, path string) error {
	db, done, err := openReadOnly(path)
	if err != nil {
		return err
	}
	defer done()
	return runCheck(ctx, db, path, "integrity_check")
}

// openReadOnly opens the database at path read-only on one connection,
// never creating it. done closes it and gives the -wal and -shm files it
// made the database's owner: a read-only connection still makes them
// when they are missing, and run as root it must not leave them root's.
func openReadOnly(path string) (db *sql.DB, done func(), err error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("%s is not a regular file", path)
	}
	made := missingFiles(path+"-wal", path+"-shm")
	db, err = sql.Open("sqlite", "file:"+(&url.URL{Path: path}).EscapedPath()+"?mode=ro")
	if err != nil {
		return nil, nil, err
	}
	db.SetMaxOpenConns(1)
	return db, func() {
		db.Close()
		giveOwner(made, fi)
	}, nil
}

func missingFiles(names ...string) []string {
	var out []string
	for _, n := range names {
		if _, err := os.Lstat(n); errors.Is(err, fs.ErrNotExist) {
			out = append(out, n)
		}
	}
	return out
}
