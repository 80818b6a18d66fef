package sqlite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/certgate/certgate/store"
	"github.com/certgate/certgate/store/storetest"
)

func openTest(t *testing.T, opts Options) *Store {
	t.Helper()
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "certgate.db"), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openTest(t, Options{}) })
}

// The suite again with tiny batches, so requests of one test land in
// different transactions and savepoint boundaries are crossed more often.
func TestConformanceSmallBatches(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openTest(t, Options{MaxBatch: 2, MaxBatchBytes: 1}) })
}

func TestPragmas(t *testing.T) {
	s := openTest(t, Options{})
	defer s.Close()
	ctx := context.Background()
	for _, c := range []struct{ pragma, want string }{
		{"journal_mode", "wal"},
		{"synchronous", "2"}, // FULL
		{"foreign_keys", "1"},
		{"busy_timeout", "5000"},
		{"temp_store", "2"}, // MEMORY
		{"page_size", "16384"},
		{"wal_autocheckpoint", fmt.Sprint(backstopPages(checkpointBytes, 16384))},
	} {
		var got string
		if err := s.w.conn.QueryRowContext(ctx, "PRAGMA "+c.pragma).Scan(&got); err != nil {
			t.Fatalf("PRAGMA %s: %v", c.pragma, err)
		}
		if got != c.want {
			t.Errorf("write connection: PRAGMA %s = %s, want %s", c.pragma, got, c.want)
		}
	}
	var qo string
	if err := s.rdb.QueryRowContext(ctx, "PRAGMA query_only").Scan(&qo); err != nil || qo != "1" {
		t.Errorf("read pool query_only = %q, %v; want 1", qo, err)
	}
}

// TestWALStaysBounded writes far more than the checkpoint thresholds and
// checks that the WAL file does not grow with it. Under continuous writes a
// background checkpoint never quite catches up, so it is the writer's
// backstop checkpoint that lets the WAL start over; the background one
// makes that backstop cheap.
func TestWALStaysBounded(t *testing.T) {
	// Thresholds scaled down 64 times (256 KiB, backstop at 1 MiB), so
	// the 10 MiB written stand for 640.
	const threshold = checkpointBytes / 64
	path := filepath.Join(t.TempDir(), "certgate.db")
	s, err := Open(context.Background(), path, Options{checkpointBytes: threshold})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	body := make([]byte, 16<<10)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for w := range 32 {
		wg.Go(func() {
			for i := range 20 {
				id := fmt.Sprintf("wal-%d-%d", w, i)
				_, err := s.Enqueue(context.Background(), store.Message{ID: id}, [][]byte{body},
					[]store.NewRecipient{{Address: "a@example.com", TrackingID: id, State: store.StateQueued}})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	fi, err := os.Stat(path + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	// What a batch and the frames appended while the backstop runs add
	// must keep the WAL well below the 10 MiB written.
	if limit := int64(4 * backstopMultiplier * threshold); fi.Size() > limit {
		t.Errorf("WAL is %d bytes after writing 10 MiB, want at most %d", fi.Size(), limit)
	}
	t.Logf("WAL is %d bytes after writing 10 MiB", fi.Size())
}

func TestReopenKeepsDataAndSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "certgate.db")
	ctx := context.Background()
	s, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ids := enqueueN(t, s, "reopen", 1)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(ctx, path, Options{})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	if _, err := s.Message(ctx, ids[0]); err != nil {
		t.Fatalf("after reopen: %v", err)
	}
	var v int
	if err := s.rdb.QueryRowContext(ctx, "SELECT version FROM schema_version").Scan(&v); err != nil || v != len(migrations) {
		t.Fatalf("schema_version = %d, %v; want %d", v, err, len(migrations))
	}
}

func TestRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "certgate.db")
	ctx := context.Background()
	s, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.w.conn.ExecContext(ctx, "UPDATE schema_version SET version = 999"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err := Open(ctx, path, Options{}); err == nil {
		s.Close()
		t.Fatal("Open accepted a database from a newer schema")
	}
}

// enqueueN enqueues n one-recipient messages concurrently and returns their ids.
func enqueueN(t *testing.T, s *Store, prefix string, n int) []string {
	t.Helper()
	ids, err := tryEnqueueN(s, prefix, n)
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func tryEnqueueN(s *Store, prefix string, n int) ([]string, error) {
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		ids[i] = fmt.Sprintf("%s-%d", prefix, i)
		wg.Go(func() { errs[i] = enqueueOne(s, ids[i]) })
	}
	wg.Wait()
	return ids, errors.Join(errs...)
}

func enqueueOne(s *Store, id string) error {
	_, err := s.Enqueue(context.Background(), store.Message{ID: id, Class: "bulk", ReceivedAt: time.Now()},
		[][]byte{[]byte("body " + id)},
		[]store.NewRecipient{{Address: "r@example.com", TrackingID: id, Content: 0, State: store.StateQueued}})
	return err
}

// holdWriter returns Options whose writer stops before its first batch until
// release is called, and a wait that returns once the writer holds its first
// request and n more are queued behind it.
func holdWriter(opts Options) (Options, func(s *Store, n int), func()) {
	gate := make(chan struct{})
	held := make(chan struct{})
	var once sync.Once
	first := true
	opts.beforeBatch = func() {
		if first { // only the writer goroutine runs this
			first = false
			close(held)
			<-gate
		}
	}
	wait := func(s *Store, n int) {
		<-held
		for len(s.w.reqs) < n {
			time.Sleep(time.Millisecond)
		}
	}
	return opts, wait, func() { once.Do(func() { close(gate) }) }
}

// TestGroupCommit proves that concurrent writes share a transaction: with
// the writer held while 100 requests queue up, they all commit at once.
func TestGroupCommit(t *testing.T) {
	opts, wait, release := holdWriter(Options{})
	s := openTest(t, opts)
	defer s.Close()
	defer release()

	const n = 100
	type result struct {
		ids []string
		err error
	}
	done := make(chan result)
	go func() {
		ids, err := tryEnqueueN(s, "gc", n)
		done <- result{ids, err}
	}()
	wait(s, n-1) // the writer holds the first
	release()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	ids := r.ids

	st := s.Stats()
	if st.Requests != n || st.Commits != 1 {
		t.Fatalf("Stats = %+v, want %d requests in 1 commit", st, n)
	}
	for _, id := range ids {
		if _, err := s.Message(context.Background(), id); err != nil {
			t.Fatal(err)
		}
	}
}

func TestGroupCommitRespectsMaxBatch(t *testing.T) {
	opts, wait, release := holdWriter(Options{MaxBatch: 10})
	s := openTest(t, opts)
	defer s.Close()
	defer release()

	done := make(chan error)
	go func() {
		_, err := tryEnqueueN(s, "mb", 11)
		done <- err
	}()
	wait(s, 10)
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Eleven requests with room for ten per transaction: exactly two commits.
	if st := s.Stats(); st.Requests != 11 || st.Commits != 2 {
		t.Fatalf("Stats = %+v, want 11 requests in 2 commits", st)
	}
}

// TestSavepointIsolation puts a failing request in the middle of one batch:
// it alone fails, its partial rows vanish, and the others commit.
func TestSavepointIsolation(t *testing.T) {
	s0 := openTest(t, Options{})
	if err := enqueueOne(s0, "taken"); err != nil {
		t.Fatal(err)
	}
	path := s0.path(t)
	s0.Close()

	opts, wait, release := holdWriter(Options{})
	s, err := Open(context.Background(), path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	defer release()

	ids := []string{"ok-1", "ok-2", "bad", "ok-3", "ok-4"}
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Go(func() {
			if id == "bad" {
				// The second recipient reuses the tracking id of "taken",
				// so the request fails after its message, contents and
				// first recipient rows were written.
				_, errs[i] = s.Enqueue(context.Background(), store.Message{ID: id, Class: "bulk"},
					[][]byte{[]byte("x")},
					[]store.NewRecipient{
						{Address: "a@example.com", TrackingID: "bad-a", State: store.StateQueued},
						{Address: "b@example.com", TrackingID: "taken", State: store.StateQueued},
					})
				return
			}
			errs[i] = enqueueOne(s, id)
		})
		wait(s, i) // keep the order: the first is held, the rest queue up
	}
	release()
	wg.Wait()
	for i, id := range ids {
		if id == "bad" {
			if errs[i] == nil {
				t.Errorf("enqueue with a duplicate tracking id succeeded")
			}
			continue
		}
		if errs[i] != nil {
			t.Errorf("enqueue %s: %v", id, errs[i])
		}
		if _, err := s.Message(context.Background(), id); err != nil {
			t.Errorf("Message(%s): %v", id, err)
		}
	}
	if st := s.Stats(); st.Commits != 1 || st.Requests != uint64(len(ids)) {
		t.Errorf("Stats = %+v, want %d requests in 1 commit", st, len(ids))
	}
	if _, err := s.Message(context.Background(), "bad"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Message(bad) = %v, want ErrNotFound", err)
	}
	for _, table := range []string{"messages WHERE id", "contents WHERE message_id", "recipients WHERE message_id", "events WHERE message_id"} {
		var n int
		if err := s.rdb.QueryRow("SELECT count(*) FROM " + table + " = 'bad'").Scan(&n); err != nil || n != 0 {
			t.Errorf("%s = 'bad': %d rows, %v; the failed request's rows leaked", table, n, err)
		}
	}
}

func (s *Store) path(t *testing.T) string {
	t.Helper()
	var seq int
	var name, file string
	if err := s.rdb.QueryRow("PRAGMA database_list").Scan(&seq, &name, &file); err != nil {
		t.Fatal(err)
	}
	return file
}

// TestCanceledWaiterNotWritten checks the promise behind submit: a caller
// whose context ends before the writer takes its request gets an error and
// the request is never run.
func TestCanceledWaiterNotWritten(t *testing.T) {
	opts, wait, release := holdWriter(Options{})
	s := openTest(t, opts)
	defer s.Close()
	defer release()

	go enqueueOne(s, "first") // held by the writer
	wait(s, 0)

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error)
	go func() {
		_, err := s.Enqueue(ctx, store.Message{ID: "late", Class: "bulk"}, [][]byte{[]byte("x")},
			[]store.NewRecipient{{Address: "a@example.com", TrackingID: "late", State: store.StateQueued}})
		errc <- err
	}()
	wait(s, 1)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled Enqueue: %v, want context.Canceled", err)
	}
	release()
	// Wait for "first" to land, then check "late" did not.
	for {
		if _, err := s.Message(context.Background(), "first"); err == nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Requests != 1 {
		t.Errorf("Stats = %+v, want only the first request run", st)
	}
}

func TestCloseDrainsQueue(t *testing.T) {
	opts, wait, release := holdWriter(Options{})
	s := openTest(t, opts)
	const n = 50
	errs := make(chan error, n)
	for i := range n {
		go func() { errs <- enqueueOne(s, fmt.Sprintf("drain-%d", i)) }()
	}
	wait(s, n-1)
	closed := make(chan error)
	go func() { closed <- s.Close() }()
	time.Sleep(10 * time.Millisecond)
	release()
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	for range n {
		if err := <-errs; err != nil {
			t.Errorf("enqueue during Close: %v", err)
		}
	}
	if st := s.Stats(); st.Requests != n {
		t.Errorf("Stats after Close = %+v, want all %d requests committed", st, n)
	}
	if err := enqueueOne(s, "after"); !errors.Is(err, ErrClosed) {
		t.Errorf("Enqueue after Close: %v, want ErrClosed", err)
	}
}

// TestPanickingRequest checks that a bug in one write fails that write only:
// the writer goroutine lives on and serves the next caller.
func TestPanickingRequest(t *testing.T) {
	s := openTest(t, Options{})
	defer s.Close()
	err := s.submit(context.Background(), &request{run: func(*writer, time.Time) error { panic("boom") }})
	if err == nil {
		t.Fatal("panicking request reported success")
	}
	if err := enqueueOne(s, "after-panic"); err != nil {
		t.Fatalf("enqueue after a panicking request: %v", err)
	}
}
