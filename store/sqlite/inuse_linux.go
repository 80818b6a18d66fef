//go:build linux

package sqlite

import (
	"errors"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// shmDMS is the byte of the -shm file every connection to a database in
// WAL mode holds a shared lock on while it is open (SQLite's os_unix.c,
// UNIX_SHM_DMS): a lock there means the database is in use.
const shmDMS = 128

// inUse reports whether a connection holds the database at path open. It
// asks with an open file description lock, which sees the record locks
// SQLite takes in this process as in others. Its closing the -shm file
// drops this process's own record locks on it, which is why it runs
// before this process opens the database.
func inUse(path string) (bool, error) {
	f, err := os.Open(path + "-shm")
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil // no connection: the last to close removes it
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: shmDMS, Len: 1}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_GETLK, &lk); err != nil {
		return false, err
	}
	return lk.Type != unix.F_UNLCK, nil
}
