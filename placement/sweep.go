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
// seen until then. Each seed mailbox has its own sweep, run with its
// watchers (RunSeed).
func (w *Watcher) sweep(ctx context.Context, m config.SeedMailbox) {
	for {
		if !clock.Sleep(w.o.Clock, w.sweepEvery(), ctx.Done()) {
			return
		}
		if err := w.sweepSeed(ctx, m); err != nil && ctx.Err() == nil {
			w.log.Warn("seed deadline sweep", "seed", m.Name, "err", err)
		}
	}
}

// SweepOnce closes every placement past its deadline now, seed by seed.
func (w *Watcher) SweepOnce(ctx context.Context) error {
	for _, m := range w.o.Seeds.Mailboxes {
		if err := w.sweepSeed(ctx, m); err != nil {
			return err
		}
	}
	return nil
}

// sweepSeed closes one seed mailbox's placements past their deadline. A
// copy still pending is missing only once both folders were looked at
// after its deadline, and no other folder of the mailbox holds it (a
// user's rule, an archive: "other:<folder>"); while the mailbox is out
// of reach its copies wait, so an outage never reads as missing mail.
func (w *Watcher) sweepSeed(ctx context.Context, m config.SeedMailbox) error {
	deadline := w.o.Seeds.Deadline.D()
	for {
		due, err := w.o.Book.DuePlacements(ctx, m.Name, w.o.Clock.Now().Add(-deadline), sweepBatch)
		if err != nil || len(due) == 0 {
			return err
		}
		var closing, pending []store.Placement
		for _, p := range due {
			switch {
			case !w.looked(m.Name, p.DeliveredAt.Add(deadline)):
				// Out of reach since before its deadline: a move would
				// go unseen, and the copy could not be deleted.
			case p.Folder != store.FolderPending:
				closing = append(closing, p)
			default:
				pending = append(pending, p)
			}
		}
		if len(pending) > 0 {
			found := w.searchElsewhere(ctx, m, pending)
			for _, p := range pending {
				if f, ok := found[p.RecipientID]; ok {
					p.Folder, p.Mailbox, p.UIDValidity, p.UID = f.Folder, f.Mailbox, f.UIDValidity, f.UID
				}
				closing = append(closing, p)
			}
		}
		if w.o.Seeds.After != config.SeedKeep {
			w.deleteFound(ctx, closing)
		}
		for _, p := range closing {
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
		// A batch that closed nothing is waiting for the mailbox: next sweep.
		if len(due) < sweepBatch || len(closing) == 0 {
			return nil
		}
	}
}

// Bounds on the search for copies filed outside the watched folders.
const (
	maxElsewhereCopies  = 50 // pending copies of one seed searched for in one sweep
	maxElsewhereFolders = 50 // folders searched
)

// searchElsewhere looks for pending copies in the seed mailbox's other
// folders by their tracking header, and records those it finds as
// "other:<folder>". It returns them by recipient id; errors are logged:
// the copies are then missing, as far as certgate can tell.
func (w *Watcher) searchElsewhere(ctx context.Context, m config.SeedMailbox, pending []store.Placement) map[int64]store.Found {
	if len(pending) > maxElsewhereCopies {
		pending = pending[:maxElsewhereCopies]
	}
	ctx, cancel := context.WithTimeout(ctx, deleteTimeout)
	defer cancel()
	c, err := w.o.Connect(ctx, m, nil)
	if err != nil {
		w.log.Warn("seed copies not searched for in other folders", "seed", m.Name, "err", err)
		return nil
	}
	defer c.Close()
	defer context.AfterFunc(ctx, func() { c.Close() })()
	folders, err := otherFolders(c, m.Junk)
	if err != nil {
		w.log.Warn("seed copies not searched for in other folders", "seed", m.Name, "err", err)
		return nil
	}
	out := map[int64]store.Found{}
	for _, name := range folders {
		sel, err := c.Select(name, &imap.SelectOptions{ReadOnly: true}).Wait()
		if err != nil {
			continue // not selectable after all
		}
		for _, p := range pending {
			if _, done := out[p.RecipientID]; done {
				continue
			}
			data, err := c.UIDSearch(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{
				{Key: store.TrackingHeader, Value: p.TrackingID}}}, nil).Wait()
			if err != nil {
				w.log.Warn("seed copies not searched for in other folders", "seed", m.Name, "folder", name, "err", err)
				return out
			}
			uid, ok := lowestUID(data.All)
			if !ok {
				continue
			}
			f := store.Found{Folder: "other:" + name, Mailbox: name, UIDValidity: sel.UIDValidity, UID: uint32(uid),
				DetectedAt: w.o.Clock.Now()}
			if _, err := w.o.Book.RecordFound(ctx, p.RecipientID, f); err != nil {
				w.log.Warn("seed copy found elsewhere not recorded", "seed", m.Name, "err", err)
				continue
			}
			out[p.RecipientID] = f
			p.Folder = f.Folder
			w.log.Info("placement", "seed", p.Seed, "message", p.MessageID, "tenant", p.Tenant, "provider", p.Provider,
				"folder", f.Folder, "delivered", p.DeliveredAt)
			if w.o.Observer != nil {
				w.o.Observer.Placed(p, "")
			}
		}
	}
	return out
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
	// Gmail only takes a label off for an expunge (its default IMAP
	// setting): the copy would stay in All Mail. Moved to Trash, it goes
	// after 30 days.
	trash := ""
	if c.Caps().Has("X-GM-EXT-1") {
		if trash, err = specialFolder(c, imap.MailboxAttrTrash); err != nil {
			return err
		}
	}
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
		if err := deleteUIDs(c, uids, trash); err != nil {
			return fmt.Errorf("%s: %w", mailbox, err)
		}
	}
	return c.Logout().Wait()
}

// deleteUIDs removes the copies: moved to trash when given (RFC 6851),
// else marked \Deleted and expunged, only them with UIDPLUS (RFC 4315
// 2.1); without it, EXPUNGE removes every message marked \Deleted, which
// in a seed mailbox is ours to remove anyway.
func deleteUIDs(c *imapclient.Client, uids imap.UIDSet, trash string) error {
	if trash != "" && c.Caps().Has(imap.CapMove) {
		if _, err := c.Move(uids, trash).Wait(); err != nil {
			return fmt.Errorf("UID MOVE to %s: %w", trash, err)
		}
		return nil
	}
	flags := &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}
	if err := c.Store(uids, flags, nil).Close(); err != nil {
		return fmt.Errorf("UID STORE: %w", err)
	}
	if c.Caps().Has(imap.CapUIDPlus) || c.Caps().Has(imap.CapIMAP4rev2) {
		return c.UIDExpunge(uids).Close()
	}
	return c.Expunge().Close()
}
