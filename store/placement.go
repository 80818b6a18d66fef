package store

import (
	"context"
	"encoding/json"
	"time"
)

// Folder classes of a seed copy: where the receiver filed it.
const (
	FolderPending = "pending" // delivered or on its way, not found yet
	FolderInbox   = "inbox"
	FolderJunk    = "junk"
	FolderMissing = "missing" // not found by the seeds' deadline
	// "tab:<name>" (a Gmail category) and "other:<folder>" complete the set.
)

// Placement is where one seed copy landed: a recipient whose Seed is set.
// The row is made by Enqueue with the recipient, in FolderPending, and
// follows the copy until its deadline closes it.
type Placement struct {
	RecipientID int64
	MessageID   string // certgate's message id
	Tenant      string
	Seed        string // the seed mailbox's name
	Address     string // the seed's address (the recipient's)
	TrackingID  string
	Header      string // the message's Message-ID header, for the fallback match
	Class       string // the message's class
	Folder      string // FolderPending, FolderInbox, FolderJunk, "tab:<name>", "other:<folder>", FolderMissing
	// Provider is the lane the copy was delivered (or bounced) through;
	// before that, the seed's configured provider (NewRecipient.SeedProvider).
	Provider string
	// DeliveredAt is when the receiver answered 2xx: zero before.
	DeliveredAt time.Time
	ArrivedAt   time.Time // the receiver's INTERNALDATE, zero until found
	DetectedAt  time.Time // when certgate found it, zero until found
	// Verdicts are the receiver's, as the placement package reads them
	// from the copy's header (JSON, opaque to the store); nil until found.
	Verdicts json.RawMessage
	// Where the copy sits now, so that it can be deleted at its deadline.
	Mailbox     string
	UIDValidity uint32
	UID         uint32
	Moves       []Move // changes of folder after it was first found, oldest first
	ClosedAt    time.Time
}

// Move is a seed copy's change of folder after it was first found (a
// filter's second look: inbox to junk, or back).
type Move struct {
	From, To string    // folder classes
	At       time.Time // when certgate saw it
}

// MaxMoves bounds the moves kept per copy: a mailbox rule that bounces a
// copy between folders must not grow its row without end.
const MaxMoves = 16

// Found is what the watcher saw of a seed copy in a mailbox.
type Found struct {
	Folder      string
	Mailbox     string
	UIDValidity uint32
	UID         uint32
	ArrivedAt   time.Time
	DetectedAt  time.Time
	Verdicts    json.RawMessage // nil keeps those recorded before
}

// PlacementQuery selects placements; zero fields do not filter.
type PlacementQuery struct {
	Tenants   []string // as Query.Tenants
	Provider  string
	Seed      string
	MessageID string
	Since     time.Time // delivered (or, if not delivered, accepted) at or after
	Limit     int       // newest first; default 50, at most 500
}

// PlacementCount is how many seed copies of a provider are in a folder.
type PlacementCount struct {
	Provider, Folder string
	Count            int64
}

// Placements is the seed side of the store. Backends implement it beside
// Store; the watcher, the API and the metrics use it.
type Placements interface {
	// PlacementByTracking returns the seed copy whose tracking id is tid,
	// or ErrNotFound (also for a recipient that is not a seed copy).
	PlacementByTracking(ctx context.Context, tid string) (*Placement, error)
	// PlacementByHeader returns the newest seed copy to address (compared
	// without case: receivers rewrite it) whose message has the
	// Message-ID header header, or ErrNotFound.
	PlacementByHeader(ctx context.Context, header, address string) (*Placement, error)
	// RecordFound stores where a seed copy was found and records a
	// "placement" event on its message: the first find, or a move when
	// the folder class differs from the one recorded (kept in Moves, at
	// most MaxMoves). The same folder again only updates the location. A
	// find in another folder seen no later than the one recorded (its
	// DetectedAt not after the placement's last find or move) is stale, a
	// look that raced a move, and changes nothing (see ApplyFound). It
	// returns the folder class the copy had when the class changed
	// (FolderPending for a first find), "" when it did not. A closed
	// placement is left alone ("", nil). An unknown id is ErrNotFound.
	RecordFound(ctx context.Context, recipientID int64, f Found) (from string, err error)
	// DuePlacements returns at most limit open placements of seed (every
	// seed for "") delivered at or before deliveredBefore, oldest delivery
	// first. (A seed copy that bounces never gets here: RecordAttempt
	// closes it as missing.)
	DuePlacements(ctx context.Context, seed string, deliveredBefore time.Time, limit int) ([]Placement, error)
	// ClosePlacement closes a placement at now: one still pending becomes
	// FolderMissing and gets a "placement" event. Closing twice is a no-op.
	ClosePlacement(ctx context.Context, recipientID int64, now time.Time) error
	// Placements returns placements matching q, newest first.
	Placements(ctx context.Context, q PlacementQuery) ([]Placement, error)
	// PlacementCounts counts the placements matching q (Limit ignored)
	// by provider and folder class.
	PlacementCounts(ctx context.Context, q PlacementQuery) ([]PlacementCount, error)

	// SeedFolder returns the watcher's position in one folder of a seed
	// mailbox: the UIDVALIDITY it saw and the highest UID it has read;
	// zeros for a folder never seen.
	SeedFolder(ctx context.Context, seed, mailbox string) (uidValidity, lastUID uint32, err error)
	// SetSeedFolder durably stores that position.
	SetSeedFolder(ctx context.Context, seed, mailbox string, uidValidity, lastUID uint32) error
}
