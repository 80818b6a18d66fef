// Package cluster makes a certgate node one of several that share one
// store (PostgreSQL) and behave as one gateway: the node's heartbeat, the
// queued work it claims when another node falls silent, and the jobs that
// one node runs at a time (the webhook dispatcher, each seed mailbox's
// watcher).
//
// A node holds what it accepts or releases for as long as its heartbeat
// lives; the store refuses its attempt records for anything else. When a
// node's heartbeat lapses (it died, or lost PostgreSQL for longer than the
// lease), the others claim its due copies, a batch at a time, as they poll
// for them. No message waits on a notification that may be lost: a node
// that was away reloads its claims and catches up on its next poll.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/certgate/certgate/clock"
	"github.com/certgate/certgate/store"
)

// Store is what a member needs of the shared store.
type Store interface {
	store.Cluster
	Pending(ctx context.Context, fn func(store.Pending) error) error
}

// Queue is the node's delivery queue: a cache of the work it claimed.
type Queue interface {
	Add(ps ...store.Pending)
	// Reconcile keeps, of what the queue held before it called load,
	// only what load lists, and adds what load lists that it lacks.
	Reconcile(load func() ([]store.Pending, error)) error
}

// Options is what a Member is built from.
type Options struct {
	Store Store
	Queue Queue
	// Lease is how long a silent node keeps its claimed work and its
	// named leases (cluster.lease); 30 s when 0.
	Lease time.Duration
	// Batch bounds the copies one claim takes; 500 when 0.
	Batch int
	Clock clock.Clock // nil: the wall clock
	Log   *slog.Logger
	// OnClaim, when set, hears how many copies each claim took.
	OnClaim func(n int)
}

// DefaultLease is cluster.lease's default.
const DefaultLease = 30 * time.Second

// Member is this node's membership of the cluster.
type Member struct {
	o    Options
	live atomic.Int64

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// The one-node jobs stop before the heartbeat does (StopJobs): a
	// node shutting down lets its jobs go while it still delivers.
	jobs     context.Context
	stopJobs context.CancelFunc
	jobsWG   sync.WaitGroup
}

// New builds a member; Join makes it one.
func New(o Options) *Member {
	if o.Lease <= 0 {
		o.Lease = DefaultLease
	}
	if o.Batch <= 0 {
		o.Batch = 500
	}
	if o.Clock == nil {
		o.Clock = clock.Real
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	m := &Member{o: o}
	m.live.Store(1)
	return m
}

// beat is how often the heartbeat is renewed: three times a lease, so
// that one slow or lost round does not let it lapse.
func (m *Member) beat() time.Duration { return m.o.Lease / 3 }

// poll is how often the node looks for work no live node holds: a node's
// death costs its mail at most the lease and one poll.
func (m *Member) poll() time.Duration {
	return min(max(m.o.Lease/6, 100*time.Millisecond), 5*time.Second)
}

// Join makes the first heartbeat. When another live process holds the
// node's name (a restart that came quicker than the old process's lease
// ran out, or two nodes given one name), it waits up to twice the lease
// for that heartbeat to lapse, and then gives up.
func (m *Member) Join(ctx context.Context) error {
	deadline := m.o.Clock.Now().Add(2 * m.o.Lease)
	for {
		now := m.o.Clock.Now()
		live, _, err := m.o.Store.Heartbeat(ctx, now, now.Add(m.o.Lease))
		if err == nil {
			m.live.Store(int64(live))
			return nil
		}
		if !errors.Is(err, store.ErrNodeInUse) {
			return fmt.Errorf("cluster: joining: %w", err)
		}
		if !now.Before(deadline) {
			return fmt.Errorf("cluster: another live process has this node's name (cluster.node must be unique): %w", err)
		}
		m.o.Log.Warn("cluster: this node's name has a live heartbeat from another process; waiting for it to lapse", "lease", m.o.Lease)
		if !clock.Sleep(m.o.Clock, m.poll(), ctx.Done()) {
			return ctx.Err()
		}
	}
}

// Start runs the heartbeat until Stop: right after Join, so that a queue
// loading a large backlog never lets the lease lapse.
func (m *Member) Start(ctx context.Context) {
	m.ctx, m.cancel = context.WithCancel(ctx)
	m.jobs, m.stopJobs = context.WithCancel(m.ctx)
	m.wg.Add(1)
	go m.every(&m.wg, m.ctx, m.beat(), m.heartbeat)
}

// StartClaims claims the work no live node holds, once the queue runs,
// until StopJobs: a node shutting down takes no more.
func (m *Member) StartClaims() {
	m.jobsWG.Add(1)
	go m.every(&m.jobsWG, m.jobs, m.poll(), m.claim)
}

// every runs fn at once and then each d until ctx ends.
func (m *Member) every(wg *sync.WaitGroup, ctx context.Context, d time.Duration, fn func()) {
	defer wg.Done()
	for {
		fn()
		if !clock.Sleep(m.o.Clock, d, ctx.Done()) {
			return
		}
	}
}

// heartbeat renews the node's lease. A lapse found on the way (the node
// was away from PostgreSQL for longer than the lease) means others may
// hold some of its copies now: the queue keeps only what the store still
// says is this node's.
func (m *Member) heartbeat() {
	now := m.o.Clock.Now()
	live, lapsed, err := m.o.Store.Heartbeat(m.ctx, now, now.Add(m.o.Lease))
	if err != nil {
		if m.ctx.Err() == nil {
			m.o.Log.Error("cluster: heartbeat failed; other nodes take this node's work once its lease ends", "err", err, "lease", m.o.Lease)
		}
		return
	}
	m.live.Store(int64(live))
	if !lapsed {
		return
	}
	m.o.Log.Error("cluster: this node's heartbeat had lapsed; reloading the work it still holds", "lease", m.o.Lease)
	err = m.o.Queue.Reconcile(func() ([]store.Pending, error) {
		var held []store.Pending
		err := m.o.Store.Pending(m.ctx, func(p store.Pending) error { held = append(held, p); return nil })
		return held, err
	})
	if err != nil {
		m.o.Log.Error("cluster: reloading claims", "err", err)
	}
}

// maxBatches bounds the claims of one poll, so that a large backlog is
// taken over a few polls, as this node gets through it.
const maxBatches = 20

// claim takes the copies due by the next poll that no live node holds.
func (m *Member) claim() {
	for range maxBatches {
		now := m.o.Clock.Now()
		got, err := m.o.Store.Claim(m.jobs, now, now.Add(m.poll()), m.o.Batch)
		if err != nil {
			if m.jobs.Err() == nil {
				m.o.Log.Error("cluster: claiming work", "err", err)
			}
			return
		}
		if len(got) > 0 {
			m.o.Log.Info("cluster: claimed work no live node held", "copies", len(got))
			m.o.Queue.Add(got...)
		}
		if m.o.OnClaim != nil {
			m.o.OnClaim(len(got))
		}
		if len(got) < m.o.Batch {
			return
		}
	}
}

// LiveNodes is how many nodes were alive at the last heartbeat, this one
// included: the share of a limit a node falls back to is limit/LiveNodes.
func (m *Member) LiveNodes() int { return int(max(m.live.Load(), 1)) }

// Exclusive runs job whenever this node holds the named lease, which one
// node at a time does: it tries for the lease each third of a lease, and
// cancels job's context when it cannot renew it in time (another node
// will take over once it lapses). job must return when its context ends.
func (m *Member) Exclusive(name string, job func(ctx context.Context)) {
	m.jobsWG.Add(1)
	go func() {
		defer m.jobsWG.Done()
		var stop func()    // ends the running job and waits for it; nil when none runs
		var held time.Time // until when the lease is ours
		end := func() {
			if stop != nil {
				stop()
				stop = nil
			}
		}
		defer end()
		for {
			now := m.o.Clock.Now()
			// A call that hangs (PostgreSQL out of reach) must not keep
			// the job running past the lease: it gets a beat at most.
			ctx, cancel := context.WithTimeout(m.jobs, m.beat())
			ok, err := m.o.Store.TryLease(ctx, name, now, now.Add(m.o.Lease))
			cancel()
			if err != nil {
				now = m.o.Clock.Now()
			}
			switch {
			case err != nil && m.jobs.Err() != nil:
				return
			case err != nil:
				m.o.Log.Error("cluster: renewing a lease", "lease", name, "err", err)
				if stop != nil && !now.Before(held.Add(-m.beat())) {
					// Stop before the lease runs out, so that two nodes
					// never run the job at once.
					m.o.Log.Warn("cluster: stopping a job whose lease could not be renewed", "lease", name)
					end()
				}
			case ok:
				held = now.Add(m.o.Lease)
				if stop == nil {
					m.o.Log.Info("cluster: this node runs a job of the cluster", "lease", name)
					stop = m.run(job)
				}
			default:
				end() // another node holds it
			}
			if !clock.Sleep(m.o.Clock, m.beat(), m.jobs.Done()) {
				return
			}
		}
	}()
}

// run starts job and returns what ends it and waits for it to return.
func (m *Member) run(job func(ctx context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(m.jobs)
	done := make(chan struct{})
	go func() { defer close(done); job(ctx) }()
	return func() { cancel(); <-done }
}

// StopJobs ends the one-node jobs and waits for them, leaving the
// heartbeat and the claiming to Stop: at shutdown, the jobs go first and
// the heartbeat lives on while deliveries in flight are recorded.
func (m *Member) StopJobs() {
	if m.stopJobs == nil {
		return
	}
	m.stopJobs()
	m.jobsWG.Wait()
}

// Stop ends the heartbeat, the claiming and the jobs, and waits for them.
func (m *Member) Stop() {
	if m.cancel == nil {
		return
	}
	m.StopJobs()
	m.cancel()
	m.wg.Wait()
}

// Leave hands this node's queued work and leases to the others at once,
// for a graceful shutdown: call it after Stop, once the queue has
// stopped and no attempt is in flight.
func (m *Member) Leave(ctx context.Context) error { return m.o.Store.Leave(ctx) }
