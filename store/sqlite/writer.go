package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// A request is one caller's write, run by the writer inside a batch.
type request struct {
	run   func(w *writer, now time.Time) error
	bytes int // message bytes it writes, to bound a batch's size

	// state settles the race between a caller giving up (ctx done) and
	// the writer picking the request up: exactly one of them wins the
	// swap away from waiting. A caller that loses waits for the outcome,
	// so a context error always means nothing was written.
	state atomic.Int32
	done  chan error // buffered: the writer never blocks answering
}

const (
	waiting int32 = iota
	claimed
	abandoned
)

// writer owns the write connection and its prepared statements. Only its
// goroutine touches them after newWriter returns.
type writer struct {
	s        *Store
	conn     *sql.Conn
	reqs     chan *request
	done     chan struct{}
	maxBatch int
	maxBytes int

	// beforeBatch, when set by a test, runs after the first request of a
	// batch is taken and before the rest are drained.
	beforeBatch func()

	begin, commit, rollback              *sql.Stmt
	savepoint, release, rollbackTo       *sql.Stmt
	insMessage, insContent, insRecipient *sql.Stmt
	insEvent, updAttempt, messageExists  *sql.Stmt
	recipientOf, hasLive, clearPrefixes  *sql.Stmt
	dropContents                         *sql.Stmt
	insLink, linkByID, linksOf           *sql.Stmt
	updLink, heldOf, releaseHeld         *sql.Stmt
	setCursor, insCounted, updRefusals   *sql.Stmt
	delEvents, delMessages               *sql.Stmt
	insPlacement, deliverPlacement       *sql.Stmt
	placementOf, updPlacement            *sql.Stmt
	seedsOf, setSeedFolder               *sql.Stmt
	setLaneState, delLaneState           *sql.Stmt
	insLaneEvent, answerIdem             *sql.Stmt
	stmts                                []*sql.Stmt
}

func newWriter(ctx context.Context, s *Store, conn *sql.Conn, opts Options) (*writer, error) {
	w := &writer{
		s:        s,
		conn:     conn,
		reqs:     make(chan *request, opts.MaxBatch),
		done:     make(chan struct{}),
		maxBatch: opts.MaxBatch,
		maxBytes: opts.MaxBatchBytes,

		beforeBatch: opts.beforeBatch,
	}
	for _, p := range []struct {
		stmt  **sql.Stmt
		query string
	}{
		// IMMEDIATE takes the write lock at BEGIN, so a batch never fails
		// halfway on a lock upgrade against another process.
		{&w.begin, "BEGIN IMMEDIATE"},
		{&w.commit, "COMMIT"},
		{&w.rollback, "ROLLBACK"},
		{&w.savepoint, "SAVEPOINT req"},
		{&w.release, "RELEASE req"},
		{&w.rollbackTo, "ROLLBACK TO req"},
		{&w.insMessage, `INSERT INTO messages (id, tenant, mail_from, header_from, message_id,
			subject, class, size, client_addr, auth_user, received_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`},
		{&w.insContent, "INSERT INTO contents (message_id, data) VALUES (?, ?)"},
		{&w.insRecipient, `INSERT INTO recipients (message_id, address, domain, address_key,
			tracking_id, prefix, content_id, state, next_attempt, updated_at, seed)
			VALUES (?, ?, ?, ?, NULLIF(?, ''), ?, ?, ?, ?, ?, ?)`},
		{&w.insEvent, `INSERT INTO events (message_id, recipient_id, time, kind, actor, detail)
			VALUES (?, ?, ?, ?, ?, ?)`},
		{&w.updAttempt, `UPDATE recipients SET state = ?, attempts = attempts + 1,
			next_attempt = ?, provider = ?, last_code = ?, last_reply = ?, updated_at = ?
			WHERE id = ? AND (? = '' OR message_id = ?) RETURNING message_id, seed`},
		{&w.messageExists, "SELECT 1 FROM messages WHERE id = ?"},
		{&w.recipientOf, "SELECT 1 FROM recipients WHERE id = ? AND message_id = ?"},
		{&w.hasLive, `SELECT 1 FROM recipients WHERE message_id = ?
			AND state IN ('queued', 'held') LIMIT 1`},
		{&w.clearPrefixes, "UPDATE recipients SET prefix = NULL, content_id = NULL WHERE message_id = ?"},
		{&w.dropContents, "DELETE FROM contents WHERE message_id = ?"},
		{&w.insLink, `INSERT INTO links (token_hash, message_id, recipient_id, tenant, url,
			state, max_uses, expires_at, created_at, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`},
		{&w.linkByID, "SELECT " + linkColumns + " FROM links WHERE id = ?"},
		{&w.linksOf, "SELECT " + linkColumns + " FROM links WHERE message_id = ? ORDER BY id"},
		{&w.updLink, "UPDATE links SET state = ?, uses = ?, updated_at = ? WHERE id = ?"},
		{&w.heldOf, "SELECT " + pendingColumns + ` FROM recipients r JOIN messages m ON m.id = r.message_id
			WHERE r.message_id = ? AND r.state = 'held' ORDER BY r.id`},
		{&w.releaseHeld, `UPDATE recipients SET state = 'queued', next_attempt = ?, updated_at = ?
			WHERE message_id = ? AND state = 'held'`},
		{&w.insCounted, `INSERT INTO events (message_id, recipient_id, time, kind, actor, detail, count)
			VALUES (?, ?, ?, ?, ?, ?, ?)`},
		{&w.updRefusals, `UPDATE links SET refusals = ?, refusals_noticed = ?, refusals_noticed_at = ?,
			refusals_recent = ? WHERE id = ?`},
		{&w.delEvents, `DELETE FROM events WHERE id IN
			(SELECT id FROM events WHERE time < ? ORDER BY time LIMIT ?)`},
		// Finished messages; foreign keys take their rows in other tables.
		{&w.delMessages, `DELETE FROM messages WHERE id IN
			(SELECT id FROM messages m WHERE received_at < ? AND NOT EXISTS
				(SELECT 1 FROM recipients r WHERE r.message_id = m.id AND r.state IN ('queued', 'held'))
			ORDER BY received_at LIMIT ?)`},
		{&w.insPlacement, `INSERT INTO placements (recipient_id, message_id, tenant, seed, address,
			header, class, folder, at, provider) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`},
		{&w.deliverPlacement, `UPDATE placements SET delivered_at = ?, at = ?, provider = ?
			WHERE recipient_id = ?`},
		{&w.placementOf, placementFrom + " WHERE p.recipient_id = ?"},
		{&w.updPlacement, `UPDATE placements SET folder = ?, arrived_at = ?, detected_at = ?, verdicts = ?,
			mailbox = ?, uid_validity = ?, uid = ?, moves = ?, closed_at = ?, provider = ? WHERE recipient_id = ?`},
		{&w.seedsOf, "SELECT id FROM recipients WHERE message_id = ? AND seed != ''"},
		{&w.insLaneEvent, `INSERT INTO events (message_id, recipient_id, time, kind, actor, detail, lane)
			VALUES (NULL, 0, ?, ?, ?, ?, ?)`},
		{&w.setLaneState, `INSERT INTO lane_states (lane, state, updated_at) VALUES (?, ?, ?)
			ON CONFLICT (lane) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at`},
		{&w.delLaneState, "DELETE FROM lane_states WHERE lane = ?"},
		{&w.answerIdem, `UPDATE idempotency_keys SET status = ?, response = ?, expires_at = ?
			WHERE key = ? AND body_hash = ? AND status = 0`},
		{&w.setSeedFolder, `INSERT INTO seed_folders (seed, mailbox, uid_validity, last_uid, updated_at)
			VALUES (?, ?, ?, ?, ?) ON CONFLICT (seed, mailbox) DO UPDATE SET uid_validity = excluded.uid_validity,
			last_uid = excluded.last_uid, updated_at = excluded.updated_at`},
		{&w.setCursor, `INSERT INTO cursors (name, event_id, updated_at) VALUES (?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET event_id = excluded.event_id, updated_at = excluded.updated_at`},
	} {
		st, err := conn.PrepareContext(ctx, p.query)
		if err != nil {
			w.closeStmts()
			return nil, fmt.Errorf("prepare %q: %w", p.query, err)
		}
		*p.stmt = st
		w.stmts = append(w.stmts, st)
	}
	return w, nil
}

// close releases the statements and the connection; the loop must be done.
func (w *writer) close() error {
	return errors.Join(w.closeStmts(), w.conn.Close())
}

func (w *writer) closeStmts() error {
	var errs []error
	for _, st := range w.stmts {
		errs = append(errs, st.Close())
	}
	return errors.Join(errs...)
}

// submit hands r to the writer and waits for its outcome or ctx.
func (s *Store) submit(ctx context.Context, r *request) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r.done = make(chan error, 1)
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	select {
	case s.w.reqs <- r:
		s.mu.RUnlock()
	case <-ctx.Done():
		s.mu.RUnlock()
		return ctx.Err()
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		if r.state.CompareAndSwap(waiting, abandoned) {
			return ctx.Err()
		}
		// The writer already runs it: its outcome is at most one commit
		// away, and reporting failure for a write that lands would make
		// an SMTP client resend a message we keep.
		return <-r.done
	}
}

// loop is the writer goroutine: take one request, add whatever else is
// already waiting, run them all in one transaction, repeat. Batches grow
// by themselves while a commit's fsync is in flight, which is exactly
// when concurrent callers pile up.
func (w *writer) loop() {
	defer close(w.done)
	batch := make([]*request, 0, w.maxBatch)
	for first := range w.reqs {
		if w.beforeBatch != nil {
			w.beforeBatch()
		}
		batch = append(batch[:0], first)
		size := first.bytes
	drain:
		for len(batch) < w.maxBatch && size < w.maxBytes {
			select {
			case r, ok := <-w.reqs:
				if !ok {
					break drain
				}
				batch = append(batch, r)
				size += r.bytes
			default:
				break drain
			}
		}
		w.runBatch(batch)
		clear(batch) // let answered requests be collected
	}
}

// runBatch runs every request in its own savepoint inside one transaction,
// so a failing request (a duplicate id, say) is undone alone, and commits
// once. Callers are answered only after the commit is durable.
func (w *writer) runBatch(batch []*request) {
	live := batch[:0]
	for _, r := range batch {
		if r.state.CompareAndSwap(waiting, claimed) {
			live = append(live, r)
		}
	}
	if len(live) == 0 {
		return
	}
	answerAll := func(err error) {
		for _, r := range live {
			r.done <- err
		}
	}
	// The transaction must not depend on any caller's context: one
	// caller leaving must not roll back the others' writes.
	ctx := context.Background()
	if _, err := w.begin.ExecContext(ctx); err != nil {
		answerAll(fmt.Errorf("store/sqlite: begin: %w", err))
		return
	}
	now := time.Now()
	errs := make([]error, len(live))
	for i, r := range live {
		if _, err := w.savepoint.ExecContext(ctx); err != nil {
			w.abort(live, fmt.Errorf("store/sqlite: savepoint: %w", err))
			return
		}
		errs[i] = runSafely(r, w, now)
		if errs[i] == nil {
			if _, err := w.release.ExecContext(ctx); err != nil {
				w.abort(live, fmt.Errorf("store/sqlite: release savepoint: %w", err))
				return
			}
			continue
		}
		// Some errors (disk full, I/O) make SQLite roll back the whole
		// transaction. Then the savepoint is gone, ROLLBACK TO fails,
		// and the batch must fail as a whole: going on would run later
		// requests in autocommit mode, outside the one commit.
		if _, err := w.rollbackTo.ExecContext(ctx); err != nil {
			w.abort(live, fmt.Errorf("store/sqlite: transaction lost after %w", errs[i]))
			return
		}
		if _, err := w.release.ExecContext(ctx); err != nil {
			w.abort(live, fmt.Errorf("store/sqlite: release savepoint: %w", err))
			return
		}
	}
	if _, err := w.commit.ExecContext(ctx); err != nil {
		w.abort(live, fmt.Errorf("store/sqlite: commit: %w", err))
		return
	}
	w.s.commits.Add(1)
	w.s.requests.Add(uint64(len(live)))
	bytes := 0
	for _, r := range live {
		bytes += r.bytes
	}
	w.s.ck.committed(bytes)
	for i, r := range live {
		r.done <- errs[i]
	}
}

// runSafely turns a panic in a request into that request's error: the
// writer goroutine serves every SMTP session, and a bug in one write must
// not leave all of them waiting forever.
func runSafely(r *request, w *writer, now time.Time) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("store/sqlite: write panicked: %v", p)
		}
	}()
	return r.run(w, now)
}

// abort rolls the batch back and fails every request in it.
func (w *writer) abort(live []*request, err error) {
	// ROLLBACK fails harmlessly when SQLite already rolled back.
	w.rollback.ExecContext(context.Background())
	for _, r := range live {
		r.done <- err
	}
}
