package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/store"
	"github.com/certgate/certgate/store/postgres"
	"github.com/certgate/certgate/store/sqlite"
)

// cmdStore runs the store commands: check, migrate and copy.
func cmdStore(args []string, stdout io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "check":
			return cmdStoreCheck(args[1:], stdout)
		case "migrate":
			return cmdStoreMigrate(args[1:], stdout)
		case "copy":
			return cmdStoreCopy(args[1:], stdout)
		}
		if isHelp(args[0]) {
			fmt.Fprint(stdout, commandUsage("store"))
			return nil
		}
	}
	return usageError{errors.New("usage: certgate store check|migrate|copy; certgate store --help lists their flags")}
}

// cmdStoreCheck runs "certgate store check": SQLite's full integrity
// check of the spool, read-only, with the daemon running or not.
func cmdStoreCheck(args []string, stdout io.Writer) error {
	fs := newFlags("store check", stdout)
	path := fs.String("config", "/etc/certgate/certgate.yaml", "configuration file (its data_dir holds the database)")
	db := fs.String("db", "", "database file to check instead of the configuration's (a copy, a recovered file)")
	if err := fs.Parse(args); err != nil {
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

// cmdStoreMigrate runs "certgate store migrate": the PostgreSQL schema's
// migrations, ahead of a rolling upgrade of the nodes, which would
// otherwise run them at start.
func cmdStoreMigrate(args []string, stdout io.Writer) error {
	fs := newFlags("store migrate", stdout)
	path := fs.String("config", "/etc/certgate/certgate.yaml", "configuration file (its storage names the database)")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	if cfg.Storage.Driver != "postgres" {
		fmt.Fprintf(stdout, "storage driver %s: certgate serve migrates the spool in %s at start; nothing to do\n", cfg.Storage.Driver, cfg.DataDir)
		return nil
	}
	dsn, err := cfg.Storage.DSN()
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	from, to, err := postgres.Migrate(ctx, dsn)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "PostgreSQL schema version: %d before, %d now\n", from, to)
	return nil
}

// cmdStoreCopy runs "certgate store copy": a single node's SQLite spool
// into an empty PostgreSQL database, in one transaction. The DSN comes
// from a file or the environment, never the command line, where ps and
// shell histories would show its password.
func cmdStoreCopy(args []string, stdout io.Writer) error {
	fs := newFlags("store copy", stdout)
	from := fs.String("from-sqlite", "", "the SQLite spool to copy (data_dir/certgate.db), with certgate stopped")
	dsnFile := fs.String("to-dsn-file", "", "file holding the PostgreSQL connection string")
	dsnEnv := fs.String("to-dsn-env", "", "environment variable holding the PostgreSQL connection string")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	switch {
	case fs.NArg() > 0:
		// Not quoted: it may be a DSN, password and all.
		return usageError{errors.New("unexpected argument; the DSN is never given on the command line: use --to-dsn-file or --to-dsn-env")}
	case *from == "":
		return usageError{errors.New("--from-sqlite is required")}
	case (*dsnFile == "") == (*dsnEnv == ""):
		return usageError{errors.New("give one of --to-dsn-file and --to-dsn-env")}
	}
	dsn, err := config.ReadSecret(*dsnFile, *dsnEnv)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	counts, err := copySpool(ctx, *from, dsn)
	if err != nil {
		return err
	}
	var total int64
	for _, c := range counts {
		fmt.Fprintf(stdout, "%-18s %d\n", c.Table, c.Rows)
		total += c.Rows
	}
	fmt.Fprintf(stdout, "copied %d rows from %s into PostgreSQL; set storage.driver: postgres and start certgate\n", total, *from)
	return nil
}

// copySpool copies the spool at path into the empty database dsn names.
func copySpool(ctx context.Context, path, dsn string) ([]postgres.TableCount, error) {
	exp, err := sqlite.OpenExport(ctx, path)
	if err != nil {
		return nil, err
	}
	defer exp.Close()
	return postgres.Copy(ctx, dsn, spool{exp})
}

// spool is sqlite.Export as postgres.Copy reads it.
type spool struct{ *sqlite.Export }

func (s spool) Rows(ctx context.Context, table string, cols []string) (postgres.Rows, error) {
	r, err := s.Export.Rows(ctx, table, cols)
	if err != nil {
		return nil, err // not a nil *sqlite.Rows in a non-nil interface
	}
	return r, nil
}

// openStore opens the store the configuration names: the SQLite spool in
// data_dir, or PostgreSQL.
func openStore(ctx context.Context, cfg *config.Config) (store.Store, error) {
	switch cfg.Storage.Driver {
	case "", "sqlite":
	case "postgres":
		dsn, err := cfg.Storage.DSN()
		if err != nil {
			return nil, fmt.Errorf("storage: %w", err)
		}
		var opts postgres.Options
		if cfg.Cluster != nil {
			opts.Node = cfg.Cluster.Node // what this node accepts is leased to it
		}
		st, err := postgres.Open(ctx, dsn, opts)
		if err != nil {
			return nil, fmt.Errorf("opening the PostgreSQL store: %w", postgres.RedactDSN(err, dsn))
		}
		return st, nil
	default:
		return nil, fmt.Errorf("storage driver %q is not available in this build", cfg.Storage.Driver)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("data_dir: %w", err)
	}
	st, err := sqlite.Open(ctx, storePath(cfg), sqlite.Options{})
	if ce := (*sqlite.CorruptError)(nil); errors.As(err, &ce) {
		return nil, errors.New(corruptAdvice(ce, cfg.Path))
	}
	if err != nil {
		return nil, fmt.Errorf("opening the store: %w", err)
	}
	return st, nil
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
