package sqlite

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
)

// storeFiles are the database file and those SQLite keeps beside it.
var storeFiles = []string{"", "-wal", "-shm", "-journal"}

// protectFiles makes the store's files the owner's alone (0600). A new
// database file is created so before SQLite opens it, since SQLite gives
// its -wal and -shm files the database file's mode and would otherwise
// make all three 0644. Files an older certgate (or a copy) left readable
// by others lose those permissions, and the log says so.
func protectFiles(path string, log *slog.Logger) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		return f.Close()
	}
	if !errors.Is(err, fs.ErrExist) {
		return err
	}
	for _, suffix := range storeFiles {
		name := path + suffix
		fi, err := os.Stat(name)
		if err != nil || fi.Mode().Perm()&0o077 == 0 {
			continue
		}
		if err := os.Chmod(name, fi.Mode().Perm()&0o700); err != nil {
			return err
		}
		log.Warn("store/sqlite: took group and other permissions away from a store file", "file", name,
			"was", fmt.Sprintf("%04o", fi.Mode().Perm()), "now", fmt.Sprintf("%04o", fi.Mode().Perm()&0o700))
	}
	return nil
}
