package testredis

import (
	"os"
	"path/filepath"
	"testing"
)

// The private server answers on loopback, saves nothing in its
// directory, and is gone after Stop.
func TestServer(t *testing.T) {
	s := New(t)
	if err := ping(s.Addr); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := ping(s.Addr); err == nil {
		t.Fatal("redis-server still answers after Stop")
	}
	for _, f := range []string{"dump.rdb", "appendonly.aof", "appendonlydir"} {
		if _, err := os.Stat(filepath.Join(s.Dir, f)); err == nil {
			t.Errorf("%s written: persistence is on", f)
		}
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}
