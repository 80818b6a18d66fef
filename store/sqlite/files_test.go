package sqlite

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// The spool holds certificates, download links and tokens: its files are
// the certgate user's alone, whatever the umask and however they came.
func TestStoreFilesAreOwnerOnly(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	dir := t.TempDir()
	os.Chmod(dir, 0o755) // a data_dir made beforehand, readable by all

	path := filepath.Join(dir, "certgate.db")
	s, err := Open(context.Background(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	enqueueN(t, s, "m", 3) // so that the WAL and its index exist
	checkModes := func(when string) {
		t.Helper()
		for _, name := range []string{path, path + "-wal", path + "-shm"} {
			fi, err := os.Stat(name)
			if err != nil {
				t.Fatalf("%s: %v", when, err)
			}
			if m := fi.Mode().Perm(); m != 0o600 {
				t.Errorf("%s: %s is %04o, want 0600", when, filepath.Base(name), m)
			}
		}
	}
	checkModes("new database")
	s.Close()

	// A database an older certgate (or a copy) left readable by all.
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if _, err := os.Stat(path + suffix); err == nil {
			os.Chmod(path+suffix, 0o644)
		}
	}
	s, err = Open(context.Background(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	enqueueN(t, s, "n", 1)
	checkModes("reopened")
}
