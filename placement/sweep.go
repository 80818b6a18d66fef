package placement

import (
	"context"
	"fmt"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/certgate/certgate/clock"
	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/store"
)

// sweepBatch bounds the placements closed in one pass.
const sweepBatch = 500

// deleteTimeout bounds the deletions in one seed mailbox.
const deleteTimeout = 2 * time.Minute

// sweepEvery is how often deadlines are looked at: a tenth of the
// deadline, between 5 s and a minute.
func (w *Watcher) sweepEvery() time.Duration {
	return min(max(w.o.Seeds.Deadline.D()/10, 5*time.Second), time.Minute)
}

// sweep closes seed copies whose deadline has passed: one never found is
// missing; one found is deleted from its mailbox (after: delete), so seed
// mailboxes never fill up. Watching stops at the deadline, so a move is
// seen until then.
func (w *Watcher) sweep(ctx context.Context) {
	for {
		if !clock.Sleep(w.o.Clock, w.sweepEvery(), ctx.Done()) {
			return
		}
		if err := w.SweepOnce(ctx); err != nil && ctx.Err() == nil {
			w.log.Warn("seed deadline sweep", "err", err)
		}
	}
}

// SweepOnce closes every placement past its deadline now.
func (w *Watcher) SweepOnce(ctx context.Context) error {
	for {
		due, err := w.o.Book.DuePlacements(ctx, w.o.Clock.Now().Add(-w.o.Seeds.Deadline.D()), sweepBatch)
		if err != nil || len(due) == 0 {
			return err
		}
		if w.o.Seeds.After != config.SeedKeep {
			w.deleteFound(ctx, due)
		}
		for _, p := range due {
			if err := w.o.Book.ClosePlacement(ctx, p.RecipientID, w.o.Clock.Now()); err != nil {
				return err
			}
			if p.Folder == store.FolderPending {
				p.Folder = store.FolderMissing
				w.log.Warn("placement", "seed", p.Seed, "message", p.MessageID, "tenant", p.Tenant,
					"provider", p.Provider, "folder", p.Folder, "delivered", p.DeliveredAt)
				if w.o.Observer != nil {
					w.o.Observer.Placed(p, "")
				}
			}
		}
		if len(due) < sweepBatch {
			return nil
		}
	}
}

// deleteFound deletes the found copies among due from their mailboxes,
// one connection per seed mailbox. A copy that cannot be deleted stays
// (logged): its placement is closed anyway, so a broken mailbox cannot
// keep deadlines open.
func (w *Watcher) deleteFound(ctx context.Context, due []store.Placement) {
	where := map[string]map[string][]store.Placement{} // seed -> mailbox -> copies
	for _, p := range due {
		if p.Folder == store.FolderPending || p.UID == 0 {
			continue
		}
		if where[p.Seed] == nil {
			where[p.Seed] = map[string][]store.Placement{}
		}
		where[p.Seed][p.Mailbox] = append(where[p.Seed][p.Mailbox], p)
	}
	for _, m := range w.o.Seeds.Mailboxes {
		if len(where[m.Name]) == 0 {
			continue
		}
		if err := w.deleteIn(ctx, m, where[m.Name]); err != nil {
			w.log.Warn("seed copies not deleted", "seed", m.Name, "err", err)
		}
	}
}

func (w *Watcher) deleteIn(ctx context.Context, m config.SeedMailbox, byMailbox map[string][]store.Placement) error {
	ctx, cancel := context.WithTimeout(ctx, deleteTimeout)
	defer cancel()
	c, err := w.o.Connect(ctx, m, nil)
	if err != nil {
		return err
	}
	defer c.Close()
	// go-imap waits for answers without a deadline: the context's end
	// closes the connection, so a stalled server cannot hold shutdown.
	defer context.AfterFunc(ctx, func() { c.Close() })()
	for mailbox, copies := range byMailbox {
		sel, err := c.Select(mailbox, nil).Wait()
		if err != nil {
			return fmt.Errorf("SELECT %s: %w", mailbox, err)
		}
		var uids imap.UIDSet
		for _, p := range copies {
			// Another UIDVALIDITY: these UIDs name other messages now.
			if p.UIDValidity == sel.UIDValidity {
				uids.AddNum(imap.UID(p.UID))
			}
		}
		if len(uids) == 0 {
			continue
		}
		if err := deleteUIDs(c, uids); err != nil {
			return fmt.Errorf("%s: %w", mailbox, err)
		}
	}
	return c.Logout().Wait()
}

// deleteUIDs marks the copies \Deleted and expunges them: only them with
// UIDPLUS (RFC 4315 2.1); without it, EXPUNGE removes every message
// marked \Deleted, which in a seed mailbox is ours to remove anyway.
func deleteUIDs(c *imapclient.Client, uids imap.UIDSet) error {
	flags := &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}
	if err := c.Store(uids, flags, nil).Close(); err != nil {
		return fmt.Errorf("UID STORE: %w", err)
	}
	if c.Caps().Has(imap.CapUIDPlus) || c.Caps().Has(imap.CapIMAP4rev2) {
		return c.UIDExpunge(uids).Close()
	}
	return c.Expunge().Close()
}
