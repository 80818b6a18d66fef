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

// Restart brings a stopped server back on the same address; a running
// one is not started twice.
func TestRestart(t *testing.T) {
	s := New(t)
	addr := s.Addr
	if err := s.Restart(); err == nil {
		t.Fatal("Restart of a running server did not fail")
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := ping(addr); err == nil {
		t.Fatal("redis-server still answers after Stop")
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if s.Addr != addr {
		t.Fatalf("restarted on %s, was %s", s.Addr, addr)
	}
	if err := ping(addr); err != nil {
		t.Fatalf("no answer after Restart: %v", err)
	}
}
