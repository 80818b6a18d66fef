//go:build unix

package sqlite

import (
	"io/fs"
	"os"
	"syscall"
)

// giveOwner gives the files in names that exist the owner and group of
// like, when this process may (root). Files made by a check run as root
// would otherwise lock the certgate user out of its own database.
func giveOwner(names []string, like fs.FileInfo) {
	st, ok := like.Sys().(*syscall.Stat_t)
	if !ok || os.Geteuid() != 0 {
		return
	}
	for _, n := range names {
		os.Lchown(n, int(st.Uid), int(st.Gid)) // fails only for a file not made
	}
}
