package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/store/sqlite"
)

// cmdStore runs "certgate store check": SQLite's full integrity check of
// the spool, read-only, with the daemon running or not.
func cmdStore(args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "check" {
		if len(args) > 0 && isHelp(args[0]) {
			fmt.Fprint(stdout, commandUsage("store"))
			return nil
		}
		return usageError{errors.New("usage: certgate store check [--config FILE | --db FILE]")}
	}
	fs := newFlags("store check", stdout)
	path := fs.String("config", "/etc/certgate/certgate.yaml", "configuration file (its data_dir holds the database)")
	db := fs.String("db", "", "database file to check instead of the configuration's (a copy, a recovered file)")
	if err := fs.Parse(args[1:]); err != nil {
		return usageError{err}
	}
	file := *db
	if file == "" {
		cfg, err := config.Load(*path)
		if err != nil {
			return err
		}
		file = storePath(cfg)
	}
	fmt.Fprintf(stdout, "checking %s (PRAGMA integrity_check; this reads the whole file)\n", file)
	if err := sqlite.Check(context.Background(), file); err != nil {
		var ce *sqlite.CorruptError
		if errors.As(err, &ce) {
			return errors.New(corruptAdvice(ce, *path))
		}
		return err
	}
	fmt.Fprintf(stdout, "%s: ok\n", file)
	return nil
}

// storePath is the SQLite database in data_dir.
func storePath(cfg *config.Config) string { return filepath.Join(cfg.DataDir, "certgate.db") }

// corruptAdvice says what SQLite found and what the operator does next,
// for serve (which refuses to start) and store check alike.
func corruptAdvice(ce *sqlite.CorruptError, configPath string) string {
	if configPath == "" {
		configPath = "/etc/certgate/certgate.yaml"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "the database %s is damaged; certgate will not serve from it, so that no mail is accepted into a file that may lose it.\n", ce.Path)
	b.WriteString("SQLite found:\n")
	for _, p := range ce.Problems {
		fmt.Fprintf(&b, "  %s\n", p)
	}
	base := filepath.Base(ce.Path)
	dir := filepath.Dir(ce.Path)
	fmt.Fprintf(&b, `What to do, with certgate stopped:
  1. Copy %[1]s and its -wal and -shm files, as they are, out of %[2]s.
  2. certgate store check --config %[3]s
     reads the whole file and lists every problem (read-only).
  3. Restore the newest backup of %[2]s; or, without one, salvage what
     SQLite can still read, and check the result:
       sqlite3 %[4]s .recover | sqlite3 %[5]s
       certgate store check --db %[5]s
     then put it in place of %[1]s, owned by certgate's user, with the
     old -wal and -shm files removed.
     Mail acknowledged after the backup, or in pages .recover cannot read,
     is lost: the log's msg=accepted lines name each message and sender.
See "Crashes, stopping and a failing disk" in docs/architecture.md.`,
		base, dir, configPath, ce.Path, filepath.Join(dir, "recovered.db"))
	return b.String()
}
