// Package store owns certgate's durable state: messages, their per-recipient
// delivery records, the bytes to deliver and the audit trail of events. The
// Store interface is the contract; store/sqlite is the embedded default and
// store/storetest is the conformance suite every backend must pass.
package store

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound is returned when a message or recipient does not exist.
var ErrNotFound = errors.New("store: not found")

// State is where one recipient's copy stands.
type State string

const (
	StateQueued    State = "queued"    // waiting for its next attempt (new or deferred)
	StateHeld      State = "held"      // kept in certgate's quarantine until released
	StateDelivered State = "delivered" // the receiving MX answered 2xx
	StateBounced   State = "bounced"   // permanently failed (5xx or max age)
)

// Message is one accepted submission.
type Message struct {
	ID         string    // certgate's queue id, unique, sortable by time
	Tenant     string    // tenant name from the configuration
	MailFrom   string    // envelope sender; "" is the null sender (DSNs)
	HeaderFrom string    // address in the From header
	MessageID  string    // the Message-ID header, without angle brackets
	Subject    string    // decoded Subject, for the helpdesk
	Class      string    // "bulk" or "transactional"
	Size       int64     // octets of the prepared content
	ClientAddr string    // submitting client's IP address
	AuthUser   string    // SMTP AUTH identity, "" for trusted networks
	ReceivedAt time.Time // when certgate accepted it
	// Submitter and Note are written into the "accepted" event alone:
	// who submitted, when not "smtp:<AuthUser>@<ClientAddr>" (an API
	// caller), and what the event's detail adds (how it came in).
	Submitter string
	Note      string
	// Idempotency, when set, is the answer of the API call that sent the
	// message, to store under the Idempotency-Key that call claimed
	// (Idempotency.ReserveKey) in Enqueue's transaction: the message and
	// its key's answer become durable together or not at all. It is
	// written, never read back (reads leave it nil).
	Idempotency *IdempotentAnswer
}

// NewRecipient is one recipient of a message being enqueued.
type NewRecipient struct {
	Address    string
	TrackingID string // unique id carried in the copy's tracking header
	// Prefix is this copy's own header lines (CRLF-terminated), written before
	// Contents[Content] when delivering.
	Prefix  []byte
	Content int   // index into the contents passed to Enqueue
	State   State // StateQueued or StateHeld
	// NextAttempt is when a queued copy is first due. A held copy has
	// none until it is released: this field is then ignored.
	NextAttempt time.Time
	// Links are the gated download links written into this copy, stored
	// with it in the same transaction.
	Links []NewLink
	// Seed names the seed mailbox this copy goes to ("" for a customer's
	// copy): Enqueue makes its Placement, its links never become enabled
	// (not on delivery, not on release), and it is not a customer delivery.
	Seed string
	// SeedProvider is the seed mailbox's provider: its placement's
	// Provider until a delivery names the lane that took it.
	SeedProvider string
}

// LinkState is where a gated download link stands.
type LinkState string

const (
	LinkPending LinkState = "pending" // not yet usable: waits for delivery or release
	LinkEnabled LinkState = "enabled" // the gate forwards a human to the URL
	LinkUsed    LinkState = "used"    // every use spent
	LinkExpired LinkState = "expired" // past its time to live
	LinkRevoked LinkState = "revoked" // turned off by the helpdesk or an admin
)

// NewLink is a gated link created while preparing a recipient's copy. Only
// the hash of its token is kept: the token itself is in the mail alone.
type NewLink struct {
	TokenHash [32]byte  // SHA-256 of the token, unique across the store
	URL       string    // the issuer's original download URL
	State     LinkState // LinkPending or LinkEnabled
	MaxUses   int       // 0 for unlimited
	ExpiresAt time.Time // the zero time for never
}

// Link is a gated link as stored.
type Link struct {
	ID          int64
	TokenHash   [32]byte
	MessageID   string
	RecipientID int64
	Tenant      string
	URL         string
	State       LinkState
	Uses        int
	MaxUses     int
	ExpiresAt   time.Time
	CreatedAt   time.Time
	UpdatedAt   time.Time
	Refusals    LinkRefusals
}

// LinkRefusal is one press of a link's button that the gate turned away.
type LinkRefusal struct {
	Time      time.Time
	Reason    string // the gate's (scanner, no_form, too_fast, stale_form) or UseLink's Why
	Client    string // the client's address
	UserAgent string
}

// LinkRefusals is what a link keeps of its refused presses: counts and
// the latest few, never a row each, so that anyone holding a link cannot
// fill the disk by pressing its button (CountRefusal has the rules).
type LinkRefusals struct {
	Count     int64         // refusals since the link was made
	Noticed   int64         // Count when the last link_refused event was recorded
	NoticedAt time.Time     // when that was; zero before the first
	Recent    []LinkRefusal // the latest, oldest first, at most RecentRefusals
}

// Recipient is the delivery record of one recipient's copy.
type Recipient struct {
	ID          int64
	MessageID   string
	Address     string
	Domain      string // lower-cased domain of Address
	TrackingID  string
	State       State
	Attempts    int
	NextAttempt time.Time
	Provider    string // lane of the last attempt
	LastCode    int    // last SMTP reply code, 0 before any reply
	LastReply   string // last reply text, with enhanced code
	UpdatedAt   time.Time
	Seed        string // the seed mailbox's name for a seed copy, else ""
}

// Pending is what the queue runner keeps in memory for a recipient that
// still needs an attempt: everything but the bytes.
type Pending struct {
	RecipientID int64
	MessageID   string
	Tenant      string
	MailFrom    string
	Address     string
	Domain      string
	Class       string
	Size        int64
	Attempts    int
	NextAttempt time.Time
	ReceivedAt  time.Time
	Seed        string // the seed mailbox's name for a seed copy, else ""
}

// Attempt is the outcome of one delivery attempt for one recipient.
type Attempt struct {
	RecipientID int64
	MessageID   string
	Tenant      string // the message's; backends need not store it, rules on attempts may need it
	Time        time.Time
	State       State     // StateQueued (deferred), StateDelivered or StateBounced
	NextAttempt time.Time // when State is StateQueued
	Provider    string
	Host        string // the host that answered, "" if none did
	Code        int    // SMTP reply code, 0 for network errors
	Reply       string // reply text with enhanced code, or the network error
	// EnableLinks, with StateDelivered, moves the recipient's pending links
	// to enabled in the same transaction (links.enable: on_delivery), so a
	// delivered copy can never be left with links that wait for nothing.
	EnableLinks bool
}

// Event is one line of a message's audit trail.
type Event struct {
	ID          int64
	MessageID   string
	RecipientID int64 // 0 for events about the whole message
	Time        time.Time
	Kind        string // accepted, delivered, deferred, bounced, dsn, released, link_used, link_refused, link_<state>, ...
	Actor       string // who: "smtp:app@192.0.2.1", "queue", "api:helpdesk@192.0.2.9"
	Detail      string // human-readable detail
	// Count is how many occurrences the event stands for: 1, or for a
	// link_refused event the refusals since the link's previous one.
	// AddEvent stores 0 as 1.
	Count int64
}

// EventRecord is an event as the event log yields it to consumers that
// follow the whole log (webhooks): the event with its message's tenant and,
// for a recipient's event, that recipient's address.
type EventRecord struct {
	Event
	Tenant    string // the message's tenant
	Recipient string // the recipient's address; "" for events about the whole message
	Seed      string // the seed mailbox when the recipient is a seed copy
	// Lane names the delivery lane of an event about a lane (lane_changed,
	// LaneStates.AddLaneEvent) as the API does (gmail, default:<domain>);
	// MessageID and Tenant are "" then.
	Lane string
}

// MessageView is a message with everything known about it.
type MessageView struct {
	Message    Message
	Recipients []Recipient
	Links      []Link
	Events     []Event
	// OlderEvents, from MessagePage, is the Before of the page of events
	// older than Events; 0 when Events reaches the first.
	OlderEvents int64
}

// EventPage picks a page of a message's events for MessagePage: the
// newest Limit of those whose ids are below Before (0 for the newest).
type EventPage struct {
	Before int64
	Limit  int // default DefaultEventPage, at most MaxEventPage
}

// Page sizes of MessagePage.
const (
	DefaultEventPage = 100
	MaxEventPage     = 1000
)

// Clamped is p with the limit MessagePage takes: DefaultEventPage when it
// is not positive, at most MaxEventPage.
func (p EventPage) Clamped() EventPage {
	if p.Limit <= 0 {
		p.Limit = DefaultEventPage
	}
	p.Limit = min(p.Limit, MaxEventPage)
	return p
}

// LinkUse is the outcome of spending one use of a link.
type LinkUse struct {
	Link Link   // after the use (or the refusal)
	OK   bool   // a use was counted: forward to Link.URL
	Why  string // when refused: the link's state, "no uses left" or "expired"
}

// Query selects messages for search; zero fields do not filter, and the
// filters given must all hold.
type Query struct {
	// ID selects that one message: with Tenants, a lookup that answers
	// alike for an unknown id and another tenant's.
	ID     string
	Tenant string
	// Tenants keeps the messages of these tenants only. It is a filter of
	// the query itself, so pages stay full and After stays right. The list
	// comes from the configuration (a few names), so a backend may bind
	// each name.
	Tenants   []string
	Recipient string // exact address, case-insensitive domain
	// MessageID is the Message-ID header, exact, without angle brackets.
	MessageID string
	// Subject selects messages whose subject contains it, without regard
	// to the case of ASCII letters (other letters match as written).
	Subject string
	// State selects messages with at least one recipient in this state;
	// with Recipient, that recipient must be in it.
	State State
	Since time.Time // received at or after
	Until time.Time // received before
	// After is the page token: the last message id of the previous page.
	// Ids sort by time, so the next page has the ids below it.
	After string
	Limit int // at most this many, newest first (default 50, max 500)
}

// Store is the durable state behind certgate. Implementations must make every
// write durable (fsync or equivalent) before returning nil, and should share
// that cost across concurrent callers (group commit).
type Store interface {
	// Enqueue stores a message, its contents and its recipients, and an
	// "accepted" event, atomically. It returns the recipients' ids in order.
	// With m.Idempotency set it also answers that key in the same
	// transaction, as Idempotency's contract says; a backend that does
	// not implement Idempotency fails such a message.
	Enqueue(ctx context.Context, m Message, contents [][]byte, rcpts []NewRecipient) ([]int64, error)
	// Pending calls fn for every recipient in StateQueued, in no set order.
	Pending(ctx context.Context, fn func(Pending) error) error
	// Data returns the bytes to deliver for one recipient: its prefix, then its content.
	Data(ctx context.Context, recipientID int64) ([]byte, error)
	// RecordAttempt updates the recipient, counts the attempt and adds an
	// event. Once no recipient of the message is queued or held, the
	// message's contents may be dropped.
	RecordAttempt(ctx context.Context, a Attempt) error
	// AddEvent appends to a message's audit trail.
	AddEvent(ctx context.Context, e Event) error
	// Message returns a message with its recipients, links and events
	// (oldest first). A message's events are not bounded: views served to
	// others use MessagePage.
	Message(ctx context.Context, id string) (*MessageView, error)
	// MessagePage is Message with one page of the message's events: the
	// newest p.Limit with ids below p.Before, oldest first (by time, then
	// id), and in OlderEvents the Before of the next page back. Limits
	// outside 1 to MaxEventPage are taken as DefaultEventPage and
	// MaxEventPage.
	MessagePage(ctx context.Context, id string, p EventPage) (*MessageView, error)
	// Search returns messages matching q, newest (highest id) first.
	Search(ctx context.Context, q Query) ([]Message, error)

	// LinkByToken returns the link whose token hashes to hash. Lookup is by
	// hash, so its time says nothing about how much of a token was right.
	LinkByToken(ctx context.Context, hash [32]byte) (*Link, error)
	// UseLink spends one use of an enabled, unexpired link with uses left,
	// atomically, and records a "link_used" event with the link's
	// recipient, the actor and the detail. A pending or enabled link at or
	// past its expiry (now >= ExpiresAt) becomes expired and is refused
	// with Why "expired"; one whose last use is spent becomes used. Any
	// other refusal changes nothing: Why is the link's state, or "no uses
	// left" for an enabled link whose uses were spent before it was moved
	// back to enabled. A refusal records no event: the caller counts it
	// with RefuseLink. The returned Link is as stored after the call. An
	// unknown id is ErrNotFound.
	UseLink(ctx context.Context, id int64, now time.Time, actor, detail string) (LinkUse, error)
	// RefuseLink counts a refused press of link id as CountRefusal says,
	// atomically, and records a "link_refused" event (the link's
	// recipient, the actor, RefusalDetail, Count) only when CountRefusal
	// says one is due, so that a flood of presses updates the link and
	// adds no rows. It reports whether it recorded the event. An unknown
	// id is ErrNotFound.
	RefuseLink(ctx context.Context, id int64, r LinkRefusal, actor string) (bool, error)
	// SetLinkState moves links and records a "link_<state>" event each:
	// all links of a message (recipientID 0) or of one recipient, from any
	// of the states in from (for example pending -> enabled on delivery or
	// release, or any -> revoked); an empty from means any state. A link
	// already in state to does not move, and a seed copy's link never
	// moves to enabled. Uses and expiry stay as they are. It returns how
	// many moved; an unknown message, or a recipient not of that message,
	// is ErrNotFound.
	SetLinkState(ctx context.Context, messageID string, recipientID int64, from []LinkState, to LinkState, actor, detail string) (int, error)
	// Release marks a message safe: held recipients become queued (due
	// now), pending links become enabled ("link_enabled" events; a seed
	// copy's stay pending), and a "released" event is recorded with the
	// actor, even when there was nothing to change (release is
	// idempotent). It returns the
	// recipients it queued, as Pending yields them, in recipient order.
	// An unknown message is ErrNotFound.
	Release(ctx context.Context, messageID string, now time.Time, actor, detail string) ([]Pending, error)

	// EventsAfter returns at most limit (which must be positive) events
	// with ids above afterID, in id order, each with its message's tenant
	// and its recipient's address. A backend may return fewer than limit
	// when more are there; only an empty result means none are.
	// Ids only grow and are never reused: an event committed after a call
	// returns has an id above every id that call returned, so a reader
	// that resumes after the last id it saw misses nothing. (A backend
	// whose transactions may commit out of id order, such as PostgreSQL
	// with a sequence, must order event inserts or hold back the ids
	// that an open transaction may still fill in.)
	EventsAfter(ctx context.Context, afterID int64, limit int) ([]EventRecord, error)
	// Cursor returns the event id stored under name by SetCursor, or 0
	// for a name never set.
	Cursor(ctx context.Context, name string) (int64, error)
	// SetCursor durably stores id (not negative) under name (not empty),
	// a consumer's position in the event log, replacing any earlier value.
	SetCursor(ctx context.Context, name string, id int64) error

	// DeleteEvents deletes at most limit (positive) events whose time is
	// before before, oldest first, in one transaction, and returns how
	// many it deleted. Deleting never lets an id come back: an event
	// added later has an id above every id the log ever held, so the
	// promise of EventsAfter stands.
	DeleteEvents(ctx context.Context, before time.Time, limit int) (int, error)
	// DeleteMessages deletes at most limit (positive) messages received
	// before before that have nothing left to send (no recipient queued
	// or held), oldest first, each with its recipients, contents, links
	// and events, in one transaction, and returns how many it deleted.
	DeleteMessages(ctx context.Context, before time.Time, limit int) (int, error)

	// Close flushes pending writes and releases resources.
	Close() error
}
