package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// The rules of Placements.RecordFound and ClosePlacement, for every
// backend: the backend reads the placement, applies one of these and
// writes back what changed, with the event when there is one.

// CheckFound checks the arguments of RecordFound: a folder class where a
// copy can be found, and verdicts that are JSON (they are served as such).
func CheckFound(f Found) error {
	switch f.Folder {
	case "", FolderPending, FolderMissing:
		return fmt.Errorf("found: folder %q is not where a copy is found", f.Folder)
	}
	if f.Verdicts != nil && !json.Valid(f.Verdicts) {
		return errors.New("found: verdicts are not JSON")
	}
	return nil
}

// ApplyFound applies f to the open placement p. It returns the detail of
// the "placement" event it calls for, "" when the folder class is the one
// recorded (then only the location, and verdicts given, change).
func ApplyFound(p *Placement, f Found) string {
	if p.Folder != FolderPending && p.Folder != f.Folder && !f.DetectedAt.After(lastSeen(p)) {
		// Another connection saw the copy later, elsewhere: this look
		// raced a move, and must not undo it.
		return ""
	}
	p.Mailbox, p.UIDValidity, p.UID = f.Mailbox, f.UIDValidity, f.UID
	if f.Verdicts != nil {
		p.Verdicts = f.Verdicts
	}
	switch p.Folder {
	case f.Folder:
		return ""
	case FolderPending:
		p.Folder, p.ArrivedAt, p.DetectedAt = f.Folder, f.ArrivedAt, f.DetectedAt
		return firstFoundDetail(p)
	}
	detail := fmt.Sprintf("%s: %s -> %s", p.Seed, p.Folder, f.Folder)
	p.Moves = append(p.Moves, Move{From: p.Folder, To: f.Folder, At: f.DetectedAt})
	if len(p.Moves) > MaxMoves {
		p.Moves = p.Moves[len(p.Moves)-MaxMoves:]
	}
	p.Folder = f.Folder
	return detail
}

// firstFoundDetail is e.g. "gmail-1: junk (arrived 2026-12-05T10:00:01Z,
// 1.2s after delivery)".
func firstFoundDetail(p *Placement) string {
	if p.ArrivedAt.IsZero() {
		return p.Seed + ": " + p.Folder
	}
	arrived := "arrived " + p.ArrivedAt.UTC().Format(time.RFC3339)
	if !p.DeliveredAt.IsZero() {
		// INTERNALDATE has whole seconds: a copy may seem to arrive
		// before the receiver's 2xx.
		if d := p.ArrivedAt.Sub(p.DeliveredAt); d >= 0 {
			arrived += ", " + roughly(d) + " after delivery"
		} else {
			arrived += ", " + roughly(-d) + " before delivery"
		}
	}
	return fmt.Sprintf("%s: %s (%s)", p.Seed, p.Folder, arrived)
}

// ClosePlacementAt closes the placement p at now, unless it is closed:
// one still pending becomes FolderMissing. It reports whether p changed,
// and the detail of the "placement" event it calls for ("" for none).
func ClosePlacementAt(p *Placement, now time.Time) (changed bool, detail string) {
	if !p.ClosedAt.IsZero() {
		return false, ""
	}
	p.ClosedAt = now
	if p.Folder != FolderPending {
		return true, ""
	}
	p.Folder = FolderMissing
	if p.DeliveredAt.IsZero() {
		return true, p.Seed + ": missing (never delivered)"
	}
	return true, fmt.Sprintf("%s: missing (not found %s after delivery)", p.Seed, roughly(now.Sub(p.DeliveredAt)))
}

// roughly is d as an audit line shows it: tenths of a second under a
// minute, whole seconds above.
func roughly(d time.Duration) string {
	if d < time.Minute {
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// lastSeen is when the placement's folder was last established: its last
// move, else its first find.
func lastSeen(p *Placement) time.Time {
	if n := len(p.Moves); n > 0 {
		return p.Moves[n-1].At
	}
	return p.DetectedAt
}
