package store

import (
	"context"
	"errors"
	"time"
)

// ErrLeaseLost is what RecordAttempt answers a node of a cluster for a
// recipient it no longer holds: its heartbeat lapsed and another node
// claimed the copy. The attempt is not recorded; the holder's is.
var ErrLeaseLost = errors.New("store: the recipient is leased to another node")

// ErrNodeInUse is what Heartbeat answers when another live process
// heartbeats under the same node name: two processes sharing a name
// would each take the other's claims for their own.
var ErrNodeInUse = errors.New("store: the node name is in use by another live process")

// Cluster is what a store shared by several nodes offers them (the store
// is then opened with the node's name). Work is claimed, not loaded: a
// node holds the queued recipients it accepted, released or claimed, for
// as long as its heartbeat is alive, and records attempts only for those
// (RecordAttempt answers ErrLeaseLost otherwise). When a node's
// heartbeat lapses, its queued recipients are free for the others to
// claim. Pending yields only the node's own claims.
//
// Times are the node's clock readings: nodes keep their clocks in step
// (NTP) to well within the lease.
type Cluster interface {
	// Heartbeat records that this node is alive until until, and returns
	// how many nodes are alive at now (this one included), and whether
	// this node's previous heartbeat had already lapsed before now, in
	// which case other nodes may have claimed its work: the node then
	// forgets what it holds in memory and reloads its claims with
	// Pending. ErrNodeInUse means another process holds the name.
	Heartbeat(ctx context.Context, now, until time.Time) (live int, lapsed bool, err error)
	// Claim leases to this node at most limit queued recipients due by
	// due that no live node holds (never claimed, or held by a node whose
	// heartbeat lapsed before now), soonest due first, and returns them as
	// Pending yields them. Nodes claiming at once never get the same
	// recipient.
	Claim(ctx context.Context, now, due time.Time, limit int) ([]Pending, error)
	// Leave gives back this node's queued recipients and ends its
	// heartbeat, so that the others claim them at once: for a graceful
	// shutdown, once no attempt is in flight.
	Leave(ctx context.Context) error
	// TryLease takes the named lease (a job that one node runs at a time:
	// the webhook dispatcher, a seed mailbox's watcher) until until, or
	// extends it, unless another node holds it past now; it reports
	// whether this node holds it.
	TryLease(ctx context.Context, name string, now, until time.Time) (bool, error)
	// DropLease gives the named lease back if this node holds it.
	DropLease(ctx context.Context, name string) error
	// Nodes lists every node that ever heartbeat, by name.
	Nodes(ctx context.Context) ([]Node, error)
	// Leases lists the named leases, by name.
	Leases(ctx context.Context) ([]Lease, error)
}

// Lease is a named lease and the node holding it.
type Lease struct {
	Name  string
	Node  string
	Until time.Time
}

// Node is one member of a cluster as its heartbeats describe it.
type Node struct {
	Name       string
	StartedAt  time.Time // when the process now holding the name started
	AliveUntil time.Time // its heartbeat's end
	Queued     int       // queued recipients it holds
}
