package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// corrupt writes garbage over the first page of table's b-tree in the
// database file at path (closed, so fully checkpointed), as a failing disk
// or a stray write would.
func corrupt(t *testing.T, path, table string) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	var root, pageSize int64
	if err := db.QueryRow("SELECT rootpage FROM sqlite_schema WHERE name = ?", table).Scan(&root); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow("PRAGMA page_size").Scan(&pageSize); err != nil {
		t.Fatal(err)
	}
	db.Close()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte(strings.Repeat("\xa5\x5a", 64)), (root-1)*pageSize); err != nil {
		t.Fatal(err)
	}
}

// newCorruptDB makes a database with some mail, closes it and damages it.
func newCorruptDB(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "certgate.db")
	s, err := Open(context.Background(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	enqueueN(t, s, "m", 20)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	corrupt(t, path, "recipients")
	return path
}

// A damaged database is refused at Open, with what SQLite found, rather
// than served until a query trips over it, mail accepted meanwhile.
func TestOpenRefusesCorruptDatabase(t *testing.T) {
	path := newCorruptDB(t)
	s, err := Open(context.Background(), path, Options{})
	if err == nil {
		s.Close()
		t.Fatal("a corrupt database opened")
	}
	var ce *CorruptError
	if !errors.As(err, &ce) {
		t.Fatalf("error %v (%T), want a *CorruptError", err, err)
	}
	if ce.Path != path || len(ce.Problems) == 0 {
		t.Fatalf("CorruptError %+v", ce)
	}
	if err := Check(context.Background(), path); !errors.As(err, &ce) || len(ce.Problems) == 0 {
		t.Fatalf("Check: %v, want a *CorruptError", err)
	}
}

// A file that is not a database at all (a header overwritten, the wrong
// file) is corruption too, not an I/O error to retry.
func TestOpenRefusesAFileThatIsNoDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "certgate.db")
	if err := os.WriteFile(path, []byte(strings.Repeat("not a database, a log file\n", 4096)), 0o600); err != nil {
		t.Fatal(err)
	}
	var ce *CorruptError
	if _, err := Open(context.Background(), path, Options{}); !errors.As(err, &ce) {
		t.Fatalf("Open: %v, want a *CorruptError", err)
	}
	if err := Check(context.Background(), path); !errors.As(err, &ce) {
		t.Fatalf("Check: %v, want a *CorruptError", err)
	}
}

// Check reads and never writes: a healthy database is reported sound,
// also while a store has it open, and a missing one is not created.
func TestCheck(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "certgate.db")
	s, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	enqueueN(t, s, "m", 20)
	if err := Check(ctx, path); err != nil {
		t.Fatalf("Check beside a running store: %v", err)
	}
	s.Close()
	if err := Check(ctx, path); err != nil {
		t.Fatalf("Check of a closed store: %v", err)
	}
	missing := filepath.Join(t.TempDir(), "none.db")
	if err := Check(ctx, missing); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Check of a missing file: %v", err)
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("Check created the database it was asked to check")
	}
}
