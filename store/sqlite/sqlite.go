// Package sqlite is certgate's embedded store: store.Store on one SQLite
// file (modernc.org/sqlite, no cgo) in WAL mode with synchronous=FULL.
//
// Every write goes through one writer goroutine that owns the only write
// connection and commits concurrent requests together (group commit), so
// many SMTP sessions share each fsync. Reads use a separate pool, which WAL
// lets run alongside the writer, and a background connection copies the
// WAL back into the database file so commits do not wait for that.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/certgate/certgate/store"
	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// ErrClosed is returned by writes submitted after Close.
var ErrClosed = errors.New("store/sqlite: closed")

// Options tune a Store. The zero value is a sensible default.
type Options struct {
	// MaxBatch bounds how many write requests share one transaction.
	// Default 512.
	MaxBatch int
	// MaxBatchBytes bounds the message bytes (contents and prefixes) one
	// transaction collects before it commits, so a wave of large mails
	// does not make every caller in a batch wait for one huge write.
	// Default 8 MiB.
	MaxBatchBytes int
	// ReadConns is the size of the read pool. Default 4.
	ReadConns int
	// BusyTimeout is how long a connection waits for a lock held by
	// another process (an operator's sqlite3 shell, a backup). Default 5s.
	BusyTimeout time.Duration
	// PageSize is the SQLite page size for a new database; an existing
	// file keeps its own. Default 16 KiB: a 20 KB body then spans two
	// pages instead of six, and the writer makes a third of the write
	// system calls it makes with SQLite's 4 KiB.
	PageSize int
	// Logger receives what the store cannot return to a caller, such as
	// a failed background checkpoint. Default slog.Default().
	Logger *slog.Logger

	// beforeBatch lets this package's tests hold the writer still while
	// they line requests up, to make batching deterministic.
	beforeBatch func()
	// checkpointBytes overrides the checkpoint threshold in tests.
	checkpointBytes int
}

func (o *Options) setDefaults() {
	if o.MaxBatch <= 0 {
		o.MaxBatch = 512
	}
	if o.MaxBatchBytes <= 0 {
		o.MaxBatchBytes = 8 << 20
	}
	if o.ReadConns <= 0 {
		o.ReadConns = 4
	}
	if o.BusyTimeout <= 0 {
		o.BusyTimeout = 5 * time.Second
	}
	if o.PageSize <= 0 {
		o.PageSize = 16 << 10
	}
	if o.checkpointBytes <= 0 {
		o.checkpointBytes = checkpointBytes
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Stats counts the writer's work since Open. Requests/Commits is the mean
// group-commit batch size.
type Stats struct {
	Commits  uint64 // transactions committed (one WAL fsync each)
	Requests uint64 // write requests answered from committed transactions
}

// Store is a store.Store backed by one SQLite file.
type Store struct {
	rdb *sql.DB // read pool, query_only
	wdb *sql.DB // the write connection and the checkpointer's
	w   *writer
	ck  *checkpointer

	// mu orders submissions against Close: senders hold it shared while
	// they hand a request to the writer, Close takes it exclusively to
	// close the queue, so no request can be sent on a closed channel or
	// be left behind unanswered.
	mu     sync.RWMutex
	closed bool

	commits  atomic.Uint64
	requests atomic.Uint64

	closeOnce sync.Once
	closeErr  error
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the database at path, checks it (PRAGMA
// quick_check; a damaged file gives a *CorruptError), migrates its schema
// and starts the writer. The directory must exist; the files are made or
// kept 0600.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	opts.setDefaults()
	if path == "" || strings.ContainsAny(path, "?#") {
		// The driver splits its DSN at '?', so such a path would be cut.
		return nil, fmt.Errorf("store/sqlite: unusable database path %q", path)
	}
	if err := protectFiles(path, opts.Logger); err != nil {
		return nil, fmt.Errorf("store/sqlite: open %s: %w", path, err)
	}
	q := url.Values{}
	q.Add("_pragma", "busy_timeout("+strconv.FormatInt(opts.BusyTimeout.Milliseconds(), 10)+")")
	q.Add("_pragma", "foreign_keys(1)")
	// FULL makes every commit fsync the WAL: nothing is acknowledged
	// before it would survive a power cut, not only a process crash.
	q.Add("_pragma", "synchronous(FULL)")
	// Each request's savepoint copies the pages it first touches into a
	// sub-journal; on disk that was most of the writer's syscalls.
	q.Add("_pragma", "temp_store(MEMORY)")

	wdb, err := sql.Open("sqlite", path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("store/sqlite: open %s: %w", path, err)
	}
	// Two connections: the writer's and the checkpointer's.
	wdb.SetMaxOpenConns(2)
	wdb.SetMaxIdleConns(2)
	wdb.SetConnMaxLifetime(0)
	wdb.SetConnMaxIdleTime(0)
	conn, err := wdb.Conn(ctx)
	if err != nil {
		wdb.Close()
		return nil, fmt.Errorf("store/sqlite: open %s: %w", path, asCorrupt(path, err))
	}
	fail := func(err error) (*Store, error) {
		conn.Close()
		wdb.Close()
		return nil, fmt.Errorf("store/sqlite: open %s: %w", path, asCorrupt(path, err))
	}
	// page_size only takes on a database that has no pages yet, and only
	// before it switches to WAL, hence here and in this order.
	if _, err := conn.ExecContext(ctx, "PRAGMA page_size = "+strconv.Itoa(opts.PageSize)); err != nil {
		return fail(err)
	}
	var mode string
	if err := conn.QueryRowContext(ctx, "PRAGMA journal_mode = WAL").Scan(&mode); err != nil {
		return fail(err)
	}
	if !strings.EqualFold(mode, "wal") {
		// Some file systems (network mounts) cannot do WAL; refusing is
		// better than silently running with other durability rules.
		return fail(fmt.Errorf("journal_mode is %q, want wal", mode))
	}
	// Before anything writes: serving from a damaged file would accept
	// mail that may never be found again.
	if err := quickCheck(ctx, conn, path); err != nil {
		return fail(err)
	}
	if err := migrate(ctx, conn); err != nil {
		return fail(err)
	}
	backstop := backstopPages(opts.checkpointBytes, opts.PageSize)
	if _, err := conn.ExecContext(ctx, "PRAGMA wal_autocheckpoint = "+strconv.Itoa(backstop)); err != nil {
		return fail(err)
	}
	// After a burst the WAL file keeps its size unless told otherwise.
	if _, err := conn.ExecContext(ctx, "PRAGMA journal_size_limit = "+strconv.Itoa(2*backstop*opts.PageSize)); err != nil {
		return fail(err)
	}
	ckconn, err := wdb.Conn(ctx)
	if err != nil {
		return fail(err)
	}
	ck := newCheckpointer(ckconn, opts.checkpointBytes, opts.Logger)
	fail = func(err error) (*Store, error) {
		ckconn.Close()
		conn.Close()
		wdb.Close()
		return nil, fmt.Errorf("store/sqlite: open %s: %w", path, asCorrupt(path, err))
	}

	rq := cloneValues(q)
	rq.Add("_pragma", "query_only(1)")
	rdb, err := sql.Open("sqlite", path+"?"+rq.Encode())
	if err != nil {
		return fail(err)
	}
	rdb.SetMaxOpenConns(opts.ReadConns)
	rdb.SetMaxIdleConns(opts.ReadConns)

	s := &Store{rdb: rdb, wdb: wdb, ck: ck}
	s.w, err = newWriter(ctx, s, conn, opts)
	if err != nil {
		rdb.Close()
		return fail(err)
	}
	go s.ck.loop()
	go s.w.loop()
	return s, nil
}

func cloneValues(v url.Values) url.Values {
	c := url.Values{}
	for k, vs := range v {
		c[k] = append([]string(nil), vs...)
	}
	return c
}

// Stats reports how many transactions and requests the writer committed.
func (s *Store) Stats() Stats {
	return Stats{Commits: s.commits.Load(), Requests: s.requests.Load()}
}

// Close stops accepting writes, commits every write already submitted, and
// closes the database. It is safe to call more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		close(s.w.reqs)
		s.mu.Unlock()
		<-s.w.done
		s.closeErr = errors.Join(s.w.close(), s.ck.stop(), s.wdb.Close(), s.rdb.Close())
	})
	return s.closeErr
}
