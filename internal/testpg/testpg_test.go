package testpg

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestStart starts a cluster, makes two databases and checks that each is
// its own and that the server runs with the settings the tests rely on.
func TestStart(t *testing.T) {
	s := Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b := s.NewDB(t), s.NewDB(t)
	if a == b {
		t.Fatalf("two databases share a DSN: %s", a)
	}
	for _, dsn := range []string{a, b} {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatalf("connect %s: %v", dsn, err)
		}
		var fsync, listen string
		if err := conn.QueryRow(ctx, "SELECT current_setting('fsync'), current_setting('listen_addresses')").Scan(&fsync, &listen); err != nil {
			t.Fatal(err)
		}
		if fsync != "off" || listen != "127.0.0.1" {
			t.Errorf("fsync=%s listen_addresses=%s, want off and 127.0.0.1", fsync, listen)
		}
		if _, err := conn.Exec(ctx, "CREATE TABLE t (x int)"); err != nil {
			t.Errorf("create table in %s: %v", dsn, err)
		}
		conn.Close(ctx)
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("second stop: %v", err)
	}
}
