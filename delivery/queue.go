package delivery

import (
	"container/heap"
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/certgate/certgate/clock"
	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/membudget"
	"github.com/certgate/certgate/metrics"
	"github.com/certgate/certgate/policy"
	"github.com/certgate/certgate/store"
)

// Store is what the queue needs of the durable state: the recipients to
// load at start, each copy's bytes, a record of every attempt, and, for
// DSNs, a way to spool new mail and note it in the audit trail.
type Store interface {
	Pending(ctx context.Context, fn func(store.Pending) error) error
	Data(ctx context.Context, recipientID int64) ([]byte, error)
	RecordAttempt(ctx context.Context, a store.Attempt) error
	Enqueue(ctx context.Context, m store.Message, contents [][]byte, rcpts []store.NewRecipient) ([]int64, error)
	AddEvent(ctx context.Context, e store.Event) error
}

// Options is what a Queue is built from.
type Options struct {
	Store  Store
	Policy *policy.Policy
	Router *Router
	Dialer *Dialer
	// Hostname reports DSNs (Reporting-MTA) and names their Message-ID.
	Hostname string
	Sealer   Sealer // signs DSNs; nil sends them unsigned
	Metrics  *metrics.Metrics
	Log      *slog.Logger
	Clock    clock.Clock // nil: the wall clock
	// FreshBudget bounds the bytes of just-accepted copies the queue keeps
	// in memory (see AddAccepted); 0 is defaultFreshBudget.
	FreshBudget int64
	// Memory, when set, is the server-wide budget of mail held in memory
	// (smtp.memory_budget): a copy read from the store waits for room in
	// it before it is read, and holds it until its attempt ends.
	Memory *membudget.Budget
	// Recorded, when set, hears every attempt once the store has it: for
	// feedback that follows deliveries, and for tests that wait for them.
	Recorded func(store.Attempt)
}

// Queue is the runner: it keeps every pending recipient in memory (no
// bodies), waits for each one's next attempt, routes it to its provider's
// lane, and runs as many workers per lane as the lane's policy lets open
// connections, delivering at the lane's rate, transactional mail first.
type Queue struct {
	store    Store
	policy   *policy.Policy
	router   *Router
	dialer   *Dialer
	hostname string
	sealer   Sealer
	metrics  *metrics.Metrics
	log      *slog.Logger
	clock    clock.Clock
	recorded func(store.Attempt)
	memory   *membudget.Budget
	// largeRead admits one read of a large copy at a time (see readCopy).
	largeRead chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	sched schedHeap
	// labelled is closed once the recipients Start loaded for later are
	// counted under their lanes (labelWaiting).
	labelled chan struct{}
	lanes    map[string]*lane
	wake     chan struct{}
	count    int             // recipients held by the queue in any stage
	byTenant map[string]int  // count, by tenant
	byID     map[int64]*item // the items, by recipient
	// lost are items another node of a cluster claimed while this one's
	// heartbeat had lapsed (see Reconcile): dropped when a worker takes
	// them, unattempted.
	lost    map[int64]bool
	changed chan struct{} // closed and replaced when count changes

	// heldBytes is what items carry of their contents (see AddAccepted),
	// kept under freshBudget.
	heldBytes   atomic.Int64
	freshBudget int64
}

// defaultFreshBudget bounds the contents the queue keeps in memory for
// mail it was just handed: at 1,200 messages a second of 20 KB, delivered
// 12 to 40 ms after acceptance, about 1 MB is in flight; a backlog (a dead
// MX, a slow lane) fills the budget and then reads from the store.
const defaultFreshBudget = 16 << 20

// NewQueue builds a queue runner; Start loads the store's pending recipients.
func NewQueue(o Options) *Queue {
	q := &Queue{store: o.Store, policy: o.Policy, router: o.Router, dialer: o.Dialer, hostname: o.Hostname, sealer: o.Sealer,
		metrics: o.Metrics, log: o.Log, clock: o.Clock, recorded: o.Recorded, freshBudget: o.FreshBudget, memory: o.Memory,
		lanes: map[string]*lane{}, wake: make(chan struct{}, 1), largeRead: make(chan struct{}, 1), changed: make(chan struct{}), labelled: make(chan struct{}),
		byTenant: map[string]int{}, byID: map[int64]*item{}, lost: map[int64]bool{}}
	if q.clock == nil {
		q.clock = clock.Real
	}
	if q.freshBudget == 0 {
		q.freshBudget = defaultFreshBudget
	}
	return q
}

// item is one recipient in the queue.
type item struct {
	p       store.Pending
	class   config.Class
	dest    *Destination
	lane    *lane
	gauge   string // provider label it is counted under in the queued gauge
	readyAt time.Time
	heapIdx int // its place in the waiting heap, -1 when not in it

	// prefix and body are the copy's bytes when the queue got them with
	// the recipient (AddAccepted), so the first attempt need not read
	// them back from the store; nil otherwise, and after that attempt.
	prefix, body []byte
}

// Start loads pending recipients from the store and starts scheduling.
func (q *Queue) Start(ctx context.Context) error {
	q.ctx, q.cancel = context.WithCancel(ctx)
	n := 0
	waiting := map[string][]*item{} // by domain: those not due yet
	now := q.clock.Now()
	err := q.store.Pending(ctx, func(p store.Pending) error {
		it := q.newItem(p)
		if p.NextAttempt.After(now) {
			waiting[p.Domain] = append(waiting[p.Domain], it)
		}
		q.enter(it)
		n++
		return nil
	})
	if err != nil {
		return err
	}
	q.log.Info("queue started", "pending", n)
	q.wg.Add(2)
	go q.scheduler()
	go q.labelWaiting(waiting)
	return nil
}

// labelWaiting counts recipients loaded for a later attempt under their
// lane's provider at once, not as unrouted until that attempt, which after
// a restart may be hours away: one route lookup per domain, a few at a
// time. An item that leaves the heap meanwhile is labelled by its route.
func (q *Queue) labelWaiting(waiting map[string][]*item) {
	defer q.wg.Done()
	defer close(q.labelled)
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	defer wg.Wait()
	for domain, items := range waiting {
		select {
		case sem <- struct{}{}:
		case <-q.ctx.Done():
			return
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			ctx, cancel := context.WithTimeout(q.ctx, 30*time.Second)
			defer cancel()
			dest, err := q.router.Resolve(ctx, domain)
			if err != nil {
				return // its attempt will say why
			}
			label := q.laneFor(domain, dest).Name()
			q.mu.Lock()
			defer q.mu.Unlock()
			for _, it := range items {
				if it.heapIdx >= 0 && it.gauge == unrouted {
					q.regauge(it, label)
				}
			}
		}()
	}
}

// Add queues recipients that the store has made durable (released ones,
// or claimed by this node of a cluster). One the queue holds already is
// not added twice.
func (q *Queue) Add(ps ...store.Pending) {
	for _, p := range ps {
		q.mu.Lock()
		_, have := q.byID[p.RecipientID]
		// This node holds it (again): a worker must not drop it as lost.
		delete(q.lost, p.RecipientID)
		q.mu.Unlock()
		if !have {
			q.enter(q.newItem(p))
		}
	}
}

// Reconcile makes the queue hold what the store says this node of a
// cluster holds, after its heartbeat lapsed and other nodes may have
// claimed some of its copies: load reads that from the store. Of the
// items held before load was called, those it does not list leave:
// those waiting for a later attempt at once; those due, routed or in a
// lane when a worker takes them; one in an attempt when the store
// refuses its record. Items that came in meanwhile (accepted, released)
// are this node's and stay.
func (q *Queue) Reconcile(load func() ([]store.Pending, error)) error {
	q.mu.Lock()
	before := make(map[int64]bool, len(q.byID))
	for id := range q.byID {
		before[id] = true
	}
	q.mu.Unlock()
	held, err := load()
	if err != nil {
		return err
	}
	// What load lists that the queue held before is still here, or was
	// finished meanwhile (its record landed): either way, not to add.
	var missing []store.Pending
	for _, p := range held {
		if before[p.RecipientID] {
			delete(before, p.RecipientID)
		} else {
			missing = append(missing, p)
		}
	}
	var gone []*item
	q.mu.Lock()
	for id := range before {
		it := q.byID[id]
		switch {
		case it == nil: // done with meanwhile
		case it.heapIdx >= 0:
			heap.Remove(&q.sched, it.heapIdx)
			gone = append(gone, it)
		default:
			q.lost[id] = true
		}
	}
	q.mu.Unlock()
	for _, it := range gone {
		q.leave(it)
	}
	q.Add(missing...)
	return nil
}

// dropLost reports whether it is one Reconcile found lost, and if so lets
// it go.
func (q *Queue) dropLost(it *item) bool {
	q.mu.Lock()
	lost := q.lost[it.p.RecipientID]
	q.mu.Unlock()
	if lost {
		q.leave(it)
	}
	return lost
}

// AddAccepted queues copies just made durable together with their bytes:
// fresh mail usually leaves within milliseconds, and reading back what the
// store just wrote costs as much as writing it. Bytes over the fresh
// budget are not kept; those copies are read from the store as usual. So
// are all while the memory budget is over half used: the fresh budget is
// not in it, and must not add to a flood's peak.
func (q *Queue) AddAccepted(copies []store.Copy) {
	keep := !q.memoryPressed()
	for _, c := range copies {
		it := q.newItem(c.Pending)
		if keep {
			if n := int64(len(c.Prefix) + len(c.Body)); q.heldBytes.Add(n) <= q.freshBudget {
				it.prefix, it.body = c.Prefix, c.Body
			} else {
				q.heldBytes.Add(-n)
			}
		}
		q.enter(it)
	}
}

// memoryPressed reports whether the memory budget is over half used, or
// a delivery waits for room in it.
func (q *Queue) memoryPressed() bool {
	limit := q.memory.Limit() // 0 when there is no budget
	used, _ := q.memory.InUse()
	return limit > 0 && (used > limit/2 || q.memory.Waiting() > 0)
}

func (q *Queue) newItem(p store.Pending) *item {
	class, ok := config.ParseClass(p.Class)
	if !ok {
		class = config.ClassBulk // a mislabelled message never jumps the queue
	}
	return &item{p: p, class: class, gauge: unrouted, heapIdx: -1}
}

// unrouted is the gauge's provider label for an item not matched to a
// lane yet.
const unrouted = "unrouted"

// takeData returns the copy's bytes the item carries, if any, and lets go
// of them: whatever the attempt's outcome, a later one reads the store.
func (q *Queue) takeData(it *item) (prefix, body []byte) {
	prefix, body = it.prefix, it.body
	q.dropData(it)
	return prefix, body
}

func (q *Queue) dropData(it *item) {
	if it.body != nil {
		q.heldBytes.Add(-int64(len(it.prefix) + len(it.body)))
		it.prefix, it.body = nil, nil
	}
}

func (q *Queue) enter(it *item) {
	q.mu.Lock()
	q.setCount(it, +1)
	q.mu.Unlock()
	q.metrics.Queued.WithLabelValues(it.gauge, string(it.class)).Inc()
	q.schedule(it)
}

// leave forgets an item that is done with (delivered, bounced) or dropped
// at shutdown.
func (q *Queue) leave(it *item) {
	q.dropData(it)
	q.metrics.Queued.WithLabelValues(it.gauge, string(it.class)).Dec()
	q.mu.Lock()
	q.setCount(it, -1)
	q.mu.Unlock()
}

// setCount counts it in or out, and wakes WaitLen. Called with q.mu held.
func (q *Queue) setCount(it *item, delta int) {
	q.count += delta
	if q.byTenant[it.p.Tenant] += delta; q.byTenant[it.p.Tenant] <= 0 {
		delete(q.byTenant, it.p.Tenant)
	}
	if delta > 0 {
		q.byID[it.p.RecipientID] = it
	} else if q.byID[it.p.RecipientID] == it {
		delete(q.byID, it.p.RecipientID)
		delete(q.lost, it.p.RecipientID)
	}
	close(q.changed)
	q.changed = make(chan struct{})
}

// schedule puts an item in the waiting heap, or routes it now when due.
func (q *Queue) schedule(it *item) {
	if !it.p.NextAttempt.After(q.clock.Now()) {
		q.route(it)
		return
	}
	q.mu.Lock()
	heap.Push(&q.sched, it)
	first := q.sched[0] == it
	q.mu.Unlock()
	if first {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
}

// scheduler moves items whose time has come into their lanes.
func (q *Queue) scheduler() {
	defer q.wg.Done()
	timer := q.clock.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		due, next, wait := q.popDue()
		for _, it := range due {
			q.route(it)
		}
		timer.Stop()
		timer.Reset(wait)
		// A timer counts from when it is armed: where the clock reached
		// the next item's time since popDue looked (a pause, a test's
		// fake clock), the timer would fire late; look again instead.
		if !next.IsZero() && !q.clock.Now().Before(next) {
			continue
		}
		select {
		case <-q.ctx.Done():
			return
		case <-q.wake:
		case <-timer.C():
		}
	}
}

// popDue takes the items due now off the heap, and says when the next one
// is due (zero: none) and how long until then.
func (q *Queue) popDue() (due []*item, next time.Time, wait time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.clock.Now()
	for len(q.sched) > 0 && !q.sched[0].p.NextAttempt.After(now) {
		due = append(due, heap.Pop(&q.sched).(*item))
	}
	wait = time.Hour
	if len(q.sched) > 0 {
		next = q.sched[0].p.NextAttempt
		wait = next.Sub(now)
	}
	return due, next, wait
}

// route resolves the recipient's destination and lane. Lookups that miss the
// router's cache run on their own goroutine so DNS never stalls the queue.
func (q *Queue) route(it *item) {
	if q.ctx.Err() != nil {
		return // shutting down; the store still has it
	}
	q.wg.Add(1)
	go func() {
		defer q.wg.Done()
		ctx, cancel := context.WithTimeout(q.ctx, 30*time.Second)
		defer cancel()
		dest, err := q.router.Resolve(ctx, it.p.Domain)
		if err != nil && q.ctx.Err() != nil {
			return // cut short by shutdown: no attempt; the store still has it
		}
		if err != nil {
			res := Result{Network: true, Text: err.Error()}
			var perm permanentError
			if errors.As(err, &perm) {
				res = Result{Code: 550, Enhanced: "5.1.2", Text: err.Error()}
			}
			q.finish(it, "none", res, nil)
			return
		}
		it.dest = dest
		q.enqueueLane(it, q.laneFor(it.p.Domain, dest))
	}()
}

// laneFor is policy's lane for mail to domain going to dest.
func (q *Queue) laneFor(domain string, dest *Destination) *policy.Lane {
	var mx []string
	if dest.MX {
		mx = dest.Hosts
	}
	return q.policy.Match(domain, mx)
}

// enqueueLane makes the item ready in its lane and starts a worker when
// the lane has more ready items than workers and its policy lets one
// more connection open.
func (q *Queue) enqueueLane(it *item, pl *policy.Lane) {
	q.mu.Lock()
	l := q.lanes[pl.Key()]
	if l == nil {
		l = newLane(q, pl)
		q.lanes[pl.Key()] = l
	}
	it.lane = l
	it.readyAt = q.clock.Now()
	l.push(it)
	// Only work that may go now: held mail starts no worker (available
	// arms the wake-up at the hold's end instead).
	spawn := l.workers < l.available() && pl.AcquireConn()
	if spawn {
		l.workers++
	}
	q.regauge(it, pl.Name()) // under q.mu: finish may already hold the item
	q.mu.Unlock()
	if spawn {
		q.wg.Add(1)
		go l.work()
	}
}

func (q *Queue) regauge(it *item, label string) {
	if it.gauge == label {
		return
	}
	q.metrics.Queued.WithLabelValues(it.gauge, string(it.class)).Dec()
	q.metrics.Queued.WithLabelValues(label, string(it.class)).Inc()
	it.gauge = label
}

// Wake makes the lane of key look for work again: after an operator
// resumes it or changes its rate, mail it held may go at once.
func (q *Queue) Wake(key string) {
	q.mu.Lock()
	l := q.lanes[key]
	var n int
	if l != nil {
		n = l.wake()
	}
	q.mu.Unlock()
	if l != nil {
		l.spawn(n)
	}
}

// Hold says what holds a recipient that is due now in its lane, and the
// lane's key; false when nothing does, or when it is not in a lane (it
// waits for its next attempt, for its route, or is being tried).
func (q *Queue) Hold(recipientID int64) (laneKey string, h policy.Hold, held bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	it := q.byID[recipientID]
	if it == nil || it.lane == nil || it.heapIdx >= 0 {
		return "", policy.Hold{}, false
	}
	h, held = it.lane.pl.Holds(it.class == config.ClassTransactional, it.p.Tenant)
	return it.lane.pl.Key(), h, held
}

// Ready counts the items of a lane that are due now, by class and tenant
// (those a suspension holds included): what the lanes API shows.
func (q *Queue) Ready(key string) map[config.Class]map[string]int {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := map[config.Class]map[string]int{}
	l := q.lanes[key]
	if l == nil {
		return out
	}
	for i, class := range []config.Class{config.ClassTransactional, config.ClassBulk} {
		for tenant, d := range l.ready[i].byTenant {
			if out[class] == nil {
				out[class] = map[string]int{}
			}
			out[class][tenant] = d.n
		}
	}
	return out
}

// Oldest is when the oldest recipient the queue holds was accepted, by
// the provider it is counted under and its class: waiting for a retry or
// due now (those in an attempt left out). A scan of every item, for
// metrics scraped every few seconds.
func (q *Queue) Oldest() map[[2]string]time.Time {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := map[[2]string]time.Time{}
	note := func(it *item) {
		k := [2]string{it.gauge, string(it.class)}
		if t, ok := out[k]; !ok || it.p.ReceivedAt.Before(t) {
			out[k] = it.p.ReceivedAt
		}
	}
	for _, it := range q.sched {
		note(it)
	}
	for _, l := range q.lanes {
		for i := range l.ready {
			for _, d := range l.ready[i].byTenant {
				for _, f := range d.byKey {
					for _, it := range f.items[f.head:] {
						note(it)
					}
				}
			}
		}
	}
	return out
}

// HeldBytes is what the queue holds in memory of just-accepted copies;
// it falls back to 0 once they are all attempted.
func (q *Queue) HeldBytes() int64 { return q.heldBytes.Load() }

// Len is the number of recipients the queue holds, in any stage.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.count
}

// Queued is the number of a tenant's recipients the queue holds (held
// mail waits in the store, not here), for its max_queued quota.
func (q *Queue) Queued(tenant string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.byTenant[tenant]
}

// WaitLen blocks until the queue holds n recipients or fewer, or ctx ends.
func (q *Queue) WaitLen(ctx context.Context, n int) error {
	for {
		q.mu.Lock()
		count, changed := q.count, q.changed
		q.mu.Unlock()
		if count <= n {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Stop stops taking new work and waits until ctx ends for in-flight
// deliveries to finish; what is not attempted stays in the store.
func (q *Queue) Stop(ctx context.Context) error {
	if q.cancel == nil {
		return nil
	}
	q.cancel()
	done := make(chan struct{})
	go func() { q.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// schedHeap orders waiting items by their next attempt.
type schedHeap []*item

func (h schedHeap) Len() int           { return len(h) }
func (h schedHeap) Less(i, j int) bool { return h[i].p.NextAttempt.Before(h[j].p.NextAttempt) }
func (h schedHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx, h[j].heapIdx = i, j
}
func (h *schedHeap) Push(x any) {
	it := x.(*item)
	it.heapIdx = len(*h)
	*h = append(*h, it)
}
func (h *schedHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	it.heapIdx = -1
	return it
}
