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

// Final reports whether no further attempt will be made.
func (s State) Final() bool { return s == StateDelivered || s == StateBounced }

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
}

// NewRecipient is one recipient of a message being enqueued.
type NewRecipient struct {
	Address    string
	TrackingID string // unique id carried in the copy's tracking header
	// Prefix is this copy's own header lines (CRLF-terminated), written before
	// Contents[Content] when delivering.
	Prefix      []byte
	Content     int // index into the contents passed to Enqueue
	State       State
	NextAttempt time.Time
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
}

// Attempt is the outcome of one delivery attempt for one recipient.
type Attempt struct {
	RecipientID int64
	MessageID   string
	Time        time.Time
	State       State     // StateQueued (deferred), StateDelivered or StateBounced
	NextAttempt time.Time // when State is StateQueued
	Provider    string
	Host        string // the host that answered, "" if none did
	Code        int    // SMTP reply code, 0 for network errors
	Reply       string // reply text with enhanced code, or the network error
}

// Event is one line of a message's audit trail.
type Event struct {
	ID          int64
	MessageID   string
	RecipientID int64 // 0 for events about the whole message
	Time        time.Time
	Kind        string // accepted, delivered, deferred, bounced, dsn, released, ...
	Actor       string // who: "smtp:app@192.0.2.1", "queue", "api:helpdesk@192.0.2.9"
	Detail      string // human-readable detail
}

// MessageView is a message with everything known about it.
type MessageView struct {
	Message    Message
	Recipients []Recipient
	Events     []Event
}

// Store is the durable state behind certgate. Implementations must make every
// write durable (fsync or equivalent) before returning nil, and should share
// that cost across concurrent callers (group commit).
type Store interface {
	// Enqueue stores a message, its contents and its recipients, and an
	// "accepted" event, atomically. It returns the recipients' ids in order.
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
	// Message returns a message with its recipients and events (oldest first).
	Message(ctx context.Context, id string) (*MessageView, error)
	// Close flushes pending writes and releases resources.
	Close() error
}
