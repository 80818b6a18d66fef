package postgres

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/certgate/certgate/internal/testpg"
	"github.com/jackc/pgx/v5"
)

// memSource is a Source of a few rows held in the test.
type memSource struct {
	cols   map[string][]string
	rows   map[string][][]any
	last   map[string]int64
	failAt string // Rows of this table fails after its first row
}

func (m *memSource) Tables(context.Context) ([]string, error) {
	var t []string
	for k := range m.cols {
		t = append(t, k)
	}
	return t, nil
}
func (m *memSource) Columns(_ context.Context, t string) ([]string, error) { return m.cols[t], nil }
func (m *memSource) Count(_ context.Context, t string) (int64, error) {
	return int64(len(m.rows[t])), nil
}
func (m *memSource) LastID(_ context.Context, t, _ string) (int64, error) { return m.last[t], nil }
func (m *memSource) Rows(_ context.Context, t string, cols []string) (Rows, error) {
	r := &memRows{fail: t == m.failAt}
	for _, row := range m.rows[t] {
		var out []any
		for _, c := range cols {
			out = append(out, row[slices.Index(m.cols[t], c)])
		}
		r.rows = append(r.rows, out)
	}
	return r, nil
}

type memRows struct {
	rows [][]any
	i    int
	fail bool
	err  error
}

func (r *memRows) Next() bool {
	if r.fail && r.i == 1 {
		r.err = errors.New("disk read failed")
		return false
	}
	r.i++
	return r.i <= len(r.rows)
}
func (r *memRows) Values() ([]any, error) { return r.rows[r.i-1], nil }
func (r *memRows) Err() error             { return r.err }
func (r *memRows) Close() error           { return nil }

func oneMessage() *memSource {
	msg := []any{"m1", "t", "", "", "", "", "bulk", int64(1), "", "", int64(5)}
	return &memSource{
		cols: map[string][]string{
			"messages": {"id", "tenant", "mail_from", "header_from", "message_id", "subject", "class", "size", "client_addr", "auth_user", "received_at"},
			"events":   {"id", "message_id", "recipient_id", "time", "kind", "actor", "detail", "count", "lane"},
			// lane_states.state as SQLite may keep it, a blob in a text column
			"lane_states": {"lane", "state", "updated_at"},
		},
		rows: map[string][][]any{
			"messages":    {msg},
			"events":      {{int64(7), "m1", int64(0), int64(5), "accepted", "a", "", int64(1), ""}, {int64(9), "m1", int64(0), int64(6), "note", "a", "", int64(1), ""}},
			"lane_states": {{"gmail", []byte(`{"paused":true}`), int64(5)}},
		},
		last: map[string]int64{"events": 40},
	}
}

func count(t *testing.T, dsn, table string) int64 {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int64
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestMigrateReportsVersions(t *testing.T) {
	srv := testpg.Start(t)
	dsn := srv.NewDB(t)
	ctx := context.Background()
	if from, to, err := Migrate(ctx, dsn); err != nil || from != 0 || to != len(migrations) {
		t.Fatalf("Migrate of a new database = %d, %d, %v", from, to, err)
	}
	if from, to, err := Migrate(ctx, dsn); err != nil || from != to || to != len(migrations) {
		t.Fatalf("Migrate again = %d, %d, %v", from, to, err)
	}
	if _, _, err := Migrate(ctx, "postgres://u:s3cret-pw@[::1"); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("Migrate of a bad DSN: %v", err)
	}
}

// Copy keeps ids, puts the event sequence past the source's last id,
// turns blobs into text where PostgreSQL keeps text, and refuses a
// database with rows; a failure halfway leaves every table empty.
func TestCopyFromSource(t *testing.T) {
	srv := testpg.Start(t)
	ctx := context.Background()

	failing := oneMessage()
	failing.failAt = "events"
	dsn := srv.NewDB(t)
	if _, err := Copy(ctx, dsn, failing); err == nil || !strings.Contains(err.Error(), "disk read failed") {
		t.Fatalf("Copy with a failing source: %v", err)
	}
	if n := count(t, dsn, "messages"); n != 0 {
		t.Fatalf("a failed copy left %d messages", n)
	}

	counts, err := Copy(ctx, dsn, oneMessage())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"messages": 1, "events": 2, "lane_states": 1}
	for _, c := range counts {
		if c.Rows != want[c.Table] {
			t.Errorf("table %s: %d rows copied, want %d", c.Table, c.Rows, want[c.Table])
		}
	}
	s, err := Open(ctx, dsn, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	evs, err := s.EventsAfter(ctx, 0, 10)
	if err != nil || len(evs) != 2 || evs[0].ID != 7 || evs[1].ID != 9 {
		t.Fatalf("EventsAfter = %+v, %v", evs, err)
	}
	var next int64
	if err := s.pool.QueryRow(ctx, "SELECT nextval(pg_get_serial_sequence('events', 'id'))").Scan(&next); err != nil || next != 41 {
		t.Errorf("the next event id is %d (%v), want 41: above every id the source gave", next, err)
	}
	var state string
	if err := s.pool.QueryRow(ctx, "SELECT state FROM lane_states").Scan(&state); err != nil || state != `{"paused":true}` {
		t.Errorf("lane state = %q, %v", state, err)
	}

	if _, err := Copy(ctx, dsn, oneMessage()); !errors.Is(err, ErrNotEmpty) || !strings.Contains(err.Error(), "messages") {
		t.Errorf("Copy into a database with rows: %v, want ErrNotEmpty naming messages", err)
	}

	unknown := oneMessage()
	unknown.cols["messages"] = append(unknown.cols["messages"], "shoe_size")
	if _, err := Copy(ctx, srv.NewDB(t), unknown); err == nil || !strings.Contains(err.Error(), "shoe_size") {
		t.Errorf("Copy of a column PostgreSQL lacks: %v", err)
	}
}

func TestRedactDSN(t *testing.T) {
	dsn := "postgres://certgate:p%40ss%2Fword@db.example/q"
	err := RedactDSN(errors.New("cannot use "+dsn+": bad password p@ss/word"), dsn)
	if strings.Contains(err.Error(), "ss/word") || strings.Contains(err.Error(), "ss%2Fword") {
		t.Errorf("RedactDSN left the secret: %v", err)
	}
}
