package sqlite

import (
	"context"
	"errors"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
)

// An export reads every table's rows as stored, without changing the
// file, and refuses a spool a running store holds open.
func TestExport(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "certgate.db")
	s, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ids := enqueueN(t, s, "exp", 3)
	if runtime.GOOS == "linux" {
		if _, err := OpenExport(ctx, path); !errors.Is(err, ErrInUse) {
			t.Errorf("OpenExport of a spool in use: %v, want ErrInUse", err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	e, err := OpenExport(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	tables, err := e.Tables(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"messages", "recipients", "events", "idempotency_keys"} {
		if !slices.Contains(tables, want) {
			t.Errorf("Tables = %v, missing %s", tables, want)
		}
	}
	if slices.Contains(tables, "schema_version") || slices.Contains(tables, "sqlite_sequence") {
		t.Errorf("Tables = %v lists bookkeeping tables", tables)
	}
	cols, err := e.Columns(ctx, "messages")
	if err != nil || len(cols) != 11 || cols[0] != "id" || cols[10] != "received_at" {
		t.Errorf("Columns(messages) = %v, %v", cols, err)
	}
	if n, err := e.Count(ctx, "messages"); n != 3 || err != nil {
		t.Errorf("Count(messages) = %d, %v", n, err)
	}
	if n, err := e.LastID(ctx, "events", "id"); n != 3 || err != nil {
		t.Errorf("LastID(events) = %d, %v", n, err)
	}
	rows, err := e.Rows(ctx, "messages", []string{"id", "size"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		v, _ := rows.Values()
		id, ok := v[0].(string)
		if _, isInt := v[1].(int64); !ok || !isInt {
			t.Errorf("row %v: want a string and an int64", v)
		}
		got = append(got, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()
	slices.Sort(got)
	if !slices.Equal(got, ids) {
		t.Errorf("ids read %v, want %v", got, ids)
	}
}
