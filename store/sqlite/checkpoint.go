package sqlite

import (
	"context"
	"database/sql"
	"log/slog"
)

// A checkpoint copies committed pages from the WAL back into the database
// file and fsyncs it. SQLite would do that inside the commit that crosses
// wal_autocheckpoint, on the writer goroutine, holding up every caller
// waiting on the next batch. The checkpointer does it on its own
// connection instead, in parallel with the writer; WAL lets both proceed.
//
// The writer's own auto-checkpoint stays on at a multiple of the threshold,
// as a backstop should this goroutine fall behind.
const (
	checkpointBytes = 16 << 20 // committed message bytes between checkpoints
	// or this many commits: a commit rewrites every page it touches, about
	// ten 16 KB pages (150 KB of WAL) for a few small messages, so counting
	// message bytes alone let the WAL reach tens of MB under small mail.
	checkpointCommits  = 64
	backstopMultiplier = 4
)

// backstopPages is the writer's wal_autocheckpoint for a threshold.
func backstopPages(thresholdBytes, pageSize int) int {
	return backstopMultiplier * thresholdBytes / pageSize
}

type checkpointer struct {
	conn      *sql.Conn
	threshold int           // bytes, checkpointBytes but for tests
	kick      chan struct{} // capacity 1: kicks while busy coalesce
	done      chan struct{}
	log       *slog.Logger

	// Counted by the writer goroutine only.
	bytes, commits int
}

func newCheckpointer(conn *sql.Conn, threshold int, log *slog.Logger) *checkpointer {
	return &checkpointer{conn: conn, threshold: threshold, kick: make(chan struct{}, 1), done: make(chan struct{}), log: log}
}

// committed is called by the writer after each commit; it wakes the loop
// once enough has been written since the last wake-up.
func (c *checkpointer) committed(bytes int) {
	c.bytes += bytes
	c.commits++
	if c.bytes < c.threshold && c.commits < checkpointCommits {
		return
	}
	c.bytes, c.commits = 0, 0
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *checkpointer) loop() {
	defer close(c.done)
	for range c.kick {
		// PASSIVE never waits for readers or the writer: it copies what
		// it can, and the WAL restarts from its beginning once a
		// checkpoint has caught up and no reader still needs old frames.
		if _, err := c.conn.ExecContext(context.Background(), "PRAGMA wal_checkpoint(PASSIVE)"); err != nil {
			c.log.Warn("store/sqlite: checkpoint failed", "err", err)
		}
	}
}

// stop ends the loop and releases the connection; the writer must be done.
func (c *checkpointer) stop() error {
	close(c.kick)
	<-c.done
	return c.conn.Close()
}
