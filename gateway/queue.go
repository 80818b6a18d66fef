package gateway

import (
	"container/heap"
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/metrics"
	"github.com/certgate/certgate/policy"
	"github.com/certgate/certgate/store"
)

// Bouncer hears what became of a recipient: a permanent failure, which it
// turns into a delivery status notification to the envelope sender, or a
// delivery.
type Bouncer interface {
	Bounce(ctx context.Context, p store.Pending, res Result, original []byte) error
	// EnablesOnDelivery says whether the tenant's links turn on when a
	// copy is delivered; the store does it with the delivery record.
	EnablesOnDelivery(tenant string) bool
}

// Queue is the runner: it keeps every pending recipient in memory (no
// bodies), waits for each one's next attempt, routes it to its provider's
// lane, and runs up to the lane's connection limit of workers that deliver
// at the lane's rate, transactional mail first.
type Queue struct {
	store   store.Store
	policy  *policy.Policy
	router  *Router
	dialer  *Dialer
	bouncer Bouncer
	metrics *metrics.Metrics
	log     *slog.Logger
	now     func() time.Time

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	sched schedHeap
	lanes map[string]*lane
	wake  chan struct{}
	count int // recipients held by the queue in any stage

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
func NewQueue(st store.Store, pol *policy.Policy, router *Router, dialer *Dialer, m *metrics.Metrics, log *slog.Logger) *Queue {
	q := &Queue{store: st, policy: pol, router: router, dialer: dialer, metrics: m, log: log, now: time.Now,
		lanes: map[string]*lane{}, wake: make(chan struct{}, 1), freshBudget: defaultFreshBudget}
	return q
}

// SetBouncer sets where permanent failures go (the relay, which builds DSNs).
func (q *Queue) SetBouncer(b Bouncer) { q.bouncer = b }

// item is one recipient in the queue.
type item struct {
	p       store.Pending
	class   config.Class
	dest    *Destination
	lane    *lane
	gauge   string // provider label it is counted under in the queued gauge
	readyAt time.Time

	// prefix and body are the copy's bytes when the queue got them with
	// the recipient (AddAccepted), so the first attempt need not read
	// them back from the store; nil otherwise, and after that attempt.
	prefix, body []byte
}

// Start loads pending recipients from the store and starts scheduling.
func (q *Queue) Start(ctx context.Context) error {
	q.ctx, q.cancel = context.WithCancel(ctx)
	n := 0
	err := q.store.Pending(ctx, func(p store.Pending) error {
		q.add(p)
		n++
		return nil
	})
	if err != nil {
		return err
	}
	q.log.Info("queue started", "pending", n)
	q.wg.Add(1)
	go q.scheduler()
	return nil
}

// Add queues recipients that the store has just made durable.
func (q *Queue) Add(ps ...store.Pending) {
	for _, p := range ps {
		q.add(p)
	}
}

// AddAccepted queues recipients just made durable together with their
// copies' bytes (prefix then body, as store.Data would return them): fresh
// mail usually leaves within milliseconds, and reading back what the
// store just wrote costs as much as writing it. Bytes over freshBudget are
// not kept; those copies are read from the store as usual.
func (q *Queue) AddAccepted(ps []store.Pending, prefixes, bodies [][]byte) {
	for i, p := range ps {
		it := q.newItem(p)
		if n := int64(len(prefixes[i]) + len(bodies[i])); q.heldBytes.Add(n) <= q.freshBudget {
			it.prefix, it.body = prefixes[i], bodies[i]
		} else {
			q.heldBytes.Add(-n)
		}
		q.enter(it)
	}
}

func (q *Queue) add(p store.Pending) { q.enter(q.newItem(p)) }

func (q *Queue) newItem(p store.Pending) *item {
	class, ok := config.ParseClass(p.Class)
	if !ok {
		class = config.ClassBulk
	}
	return &item{p: p, class: class, gauge: "unrouted"}
}

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
	class := it.class
	q.mu.Lock()
	q.count++
	q.mu.Unlock()
	q.metrics.Queued.WithLabelValues(it.gauge, string(class)).Inc()
	q.schedule(it)
}

// schedule puts an item in the waiting heap, or routes it now when due.
func (q *Queue) schedule(it *item) {
	if !it.p.NextAttempt.After(q.now()) {
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
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		q.mu.Lock()
		var due []*item
		now := q.now()
		for len(q.sched) > 0 && !q.sched[0].p.NextAttempt.After(now) {
			due = append(due, heap.Pop(&q.sched).(*item))
		}
		wait := time.Hour
		if len(q.sched) > 0 {
			wait = q.sched[0].p.NextAttempt.Sub(now)
		}
		q.mu.Unlock()
		for _, it := range due {
			q.route(it)
		}
		timer.Reset(wait)
		select {
		case <-q.ctx.Done():
			return
		case <-q.wake:
		case <-timer.C:
		}
	}
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
			var perm permanentError
			res := Result{Network: true, Text: err.Error()}
			if errors.As(err, &perm) {
				res = Result{Code: 550, Enhanced: "5.1.2", Text: err.Error()}
			}
			q.finish(it, "none", res, nil)
			return
		}
		var mx []string
		if dest.MX {
			mx = dest.Hosts
		}
		pl := q.policy.Match(it.p.Domain, mx)
		it.dest = dest
		q.enqueueLane(it, pl)
	}()
}

func (q *Queue) enqueueLane(it *item, pl *policy.Lane) {
	q.mu.Lock()
	l := q.lanes[pl.Key()]
	if l == nil {
		l = &lane{q: q, pl: pl, arrived: make(chan struct{}), open: map[string]int{}}
		l.ready[0].init()
		l.ready[1].init()
		q.lanes[pl.Key()] = l
	}
	it.lane = l
	it.readyAt = q.now()
	l.ready[classIndex(it.class)].push(it)
	close(l.arrived) // wake idle workers
	l.arrived = make(chan struct{})
	spawn := l.workers < pl.ConnectionLimit() && l.workers < l.size() && (l.workers < l.capped || !q.now().Before(l.capUntil))
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

func classIndex(c config.Class) int {
	if c == config.ClassTransactional {
		return 0
	}
	return 1
}

// connectionIdleTime is how long a worker keeps its connection open for
// more mail after its lane runs dry (Postfix's connection cache keeps 2s):
// long enough to ride out the gaps of a wave, short enough not to hog the
// receiver.
const connectionIdleTime = 2 * time.Second

// lane is the runtime side of a policy lane: ready items and workers.
type lane struct {
	q       *Queue
	pl      *policy.Lane
	ready   [2]destQueues // [0] transactional, [1] bulk
	workers int
	arrived chan struct{}  // closed and replaced when an item arrives
	open    map[string]int // connections the workers hold, by destination key
	// After a receiver refused a connection while others to it worked,
	// the lane opens no more than it had until capUntil (Postfix's
	// negative concurrency feedback): one refusal, not one per arrival.
	capped   int
	capUntil time.Time
}

func (l *lane) size() int { return l.ready[0].n + l.ready[1].n }

// pop takes the most urgent item, preferring the destination the worker
// already has a connection to within that class. Called with q.mu held.
func (l *lane) pop(preferKey string) *item {
	for i := range l.ready {
		if it := l.ready[i].pop(preferKey); it != nil {
			return it
		}
	}
	return nil
}

// awaitWork returns true when the lane has work for this worker. A worker
// holding a connection waits up to connectionIdleTime for more before it
// gives up its place; false means the worker has left the lane.
func (l *lane) awaitWork(hasConn bool) bool {
	q := l.q
	var timer *time.Timer
	for {
		q.mu.Lock()
		if q.ctx.Err() == nil && l.size() > 0 {
			q.mu.Unlock()
			return true
		}
		if q.ctx.Err() != nil || !hasConn {
			l.workers--
			q.mu.Unlock()
			return false
		}
		arrived := l.arrived
		q.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(connectionIdleTime)
			defer timer.Stop()
		}
		select {
		case <-arrived:
		case <-q.ctx.Done():
		case <-timer.C:
			hasConn = false // idle long enough: leave on the next check
		}
	}
}

// leave gives up the worker's place in the lane.
func (l *lane) leave() {
	l.q.mu.Lock()
	l.workers--
	l.q.mu.Unlock()
}

// takeDest removes every ready item bound for one destination. Called
// with q.mu held.
func (l *lane) takeDest(key string) []*item {
	var out []*item
	for i := range l.ready {
		out = append(out, l.ready[i].take(key)...)
	}
	return out
}

// work is one connection's worth of delivery in a lane: wait for the rate,
// take the most urgent item, deliver it on a reused connection if it goes to
// the same place, and stop when the lane is empty.
func (l *lane) work() {
	q := l.q
	defer q.wg.Done()
	var conn *Conn
	// hold changes the connection this worker holds, so that the lane
	// knows which destinations it has working connections to.
	hold := func(c *Conn) {
		q.mu.Lock()
		if conn != nil {
			l.open[conn.Dest.Key]--
		}
		if c != nil {
			l.open[c.Dest.Key]++
		}
		q.mu.Unlock()
		conn = c
	}
	defer func() {
		if conn != nil {
			conn.Close()
			hold(nil)
		}
	}()
	for {
		if !l.awaitWork(conn != nil) {
			return
		}
		if _, err := l.pl.Wait(q.ctx); err != nil {
			l.leave()
			return
		}
		prefer := ""
		if conn != nil {
			prefer = conn.Dest.Key
		}
		q.mu.Lock()
		it := l.pop(prefer)
		q.mu.Unlock()
		if it == nil {
			continue // another worker took it; wait for more or leave
		}
		q.metrics.ShapingWait.WithLabelValues(l.pl.Name(), string(it.class)).Observe(q.now().Sub(it.readyAt).Seconds())

		// A slow lane's rate can keep a connection idle longer than a
		// receiver waits; such a connection is not worth trying.
		if conn != nil && (conn.Dest.Key != it.dest.Key || conn.Sent >= l.pl.MaxDeliveriesPerConnection() ||
			time.Since(conn.LastUsed) > connectionIdleTime) {
			conn.Close()
			hold(nil)
		}
		if conn == nil {
			c, res := q.dialer.Dial(q.ctx, it.dest)
			if c == nil && q.ctx.Err() != nil {
				q.requeueOnStop(it)
				l.leave()
				return
			}
			if c == nil {
				q.mu.Lock()
				live := l.open[it.dest.Key] > 0
				var same []*item
				if live {
					// Another worker's connection to the destination works:
					// the receiver refused one connection more than it takes,
					// or one of its hosts failed. That is no attempt at this
					// message: it goes back, and this worker leaves the lane
					// to the connections that work.
					l.ready[classIndex(it.class)].push(it)
					l.capped, l.capUntil = l.workers-1, q.now().Add(time.Minute)
					close(l.arrived)
					l.arrived = make(chan struct{})
				} else {
					// The destination is down for everything queued to it:
					// defer the lot now instead of spending a rate slot on each.
					same = l.takeDest(it.dest.Key)
				}
				q.mu.Unlock()
				if live {
					l.leave()
					return
				}
				for _, other := range append(same, it) {
					q.finish(other, l.pl.Name(), res, nil)
				}
				continue
			}
			hold(c)
			q.metrics.ConnectionsOpened.WithLabelValues(l.pl.Name(), boolLabel(conn.TLS)).Inc()
		}
		// data is the copy when read from the store; fresh copies go
		// out as the prefix and body they were accepted with.
		var data []byte
		prefix, body := q.takeData(it)
		var err error
		if body == nil {
			data, err = q.store.Data(q.ctx, it.p.RecipientID)
			prefix, body = nil, data
		}
		if err != nil && q.ctx.Err() != nil {
			q.requeueOnStop(it)
			l.leave()
			return
		}
		if err != nil {
			q.log.Error("queue: reading message data", "id", it.p.MessageID, "rcpt", it.p.Address, "err", err)
			q.finish(it, l.pl.Name(), Result{Network: true, Text: "local: message data unavailable"}, nil)
			continue
		}
		start := time.Now()
		res := conn.Send(it.p.MailFrom, it.p.Address, prefix, body)
		if res.Stale {
			// The server dropped the connection while it sat idle: that
			// is no attempt at this message, so go again on a fresh one.
			conn.c.Close()
			hold(nil)
			c, dres := q.dialer.Dial(q.ctx, it.dest)
			if c == nil {
				q.finish(it, l.pl.Name(), dres, nil)
				continue
			}
			hold(c)
			q.metrics.ConnectionsOpened.WithLabelValues(l.pl.Name(), boolLabel(conn.TLS)).Inc()
			res = conn.Send(it.p.MailFrom, it.p.Address, prefix, body)
		}
		q.metrics.DeliveryDuration.WithLabelValues(l.pl.Name()).Observe(time.Since(start).Seconds())
		if res.Network || res.Code == 421 {
			conn.c.Close() // RFC 5321 3.8: 421 means the server is closing
			hold(nil)
		}
		l.pl.Observe(res.Code, res.Enhanced, res.Text)
		q.finish(it, l.pl.Name(), res, data)
	}
}

// finish records an attempt's outcome and moves the item on: gone when
// delivered or bounced, back to the heap when deferred.
func (q *Queue) finish(it *item, provider string, res Result, data []byte) {
	q.dropData(it)
	now := q.now()
	outcome := policy.Classify(res.Code, res.Network)
	attempts := it.p.Attempts + 1
	a := store.Attempt{RecipientID: it.p.RecipientID, MessageID: it.p.MessageID, Time: now, Provider: provider,
		Host: res.Host, Code: res.Code, Reply: res.Detail()}
	result := "delivered"
	switch outcome {
	case policy.Delivered:
		a.State = store.StateDelivered
		a.EnableLinks = q.bouncer != nil && q.bouncer.EnablesOnDelivery(it.p.Tenant)
	case policy.Bounced:
		a.State, result = store.StateBounced, "bounced"
	default:
		next, giveUp := q.policy.NextAttempt(attempts, it.p.ReceivedAt, now)
		if giveUp {
			a.State, result = store.StateBounced, "bounced"
			a.Reply = "gave up after " + now.Sub(it.p.ReceivedAt).Round(time.Second).String() + "; last: " + res.String()
			res.GaveUp = "no delivery in " + now.Sub(it.p.ReceivedAt).Round(time.Second).String()
		} else {
			a.State, a.NextAttempt, result = store.StateQueued, next, "deferred"
		}
	}
	q.metrics.DeliveryAttempts.WithLabelValues(provider, result, metrics.ReplyClass(res.Code)).Inc()
	if a.State == store.StateBounced && q.bouncer != nil && it.p.MailFrom != "" {
		// Before the attempt is recorded: the store may then drop the body
		// whose headers the DSN quotes.
		if data == nil {
			data, _ = q.store.Data(context.Background(), it.p.RecipientID)
		}
		if err := q.bouncer.Bounce(context.Background(), it.p, res, data); err != nil {
			// Recording a bounce whose DSN was lost would leave the sender
			// unaware: keep the recipient and try again later.
			q.log.Error("queue: generating DSN; recipient deferred", "id", it.p.MessageID, "rcpt", it.p.Address, "err", err)
			a.State, a.NextAttempt, result = store.StateQueued, now.Add(time.Minute), "deferred"
			a.Reply = "DSN could not be generated; last: " + res.String()
		}
	}
	q.record(a, it)
	lat := now.Sub(it.p.ReceivedAt)
	q.log.Info("delivery", "id", it.p.MessageID, "rcpt", it.p.Address, "provider", provider, "host", res.Host,
		"result", result, "reply", res.String(), "attempt", attempts, "class", string(it.class), "age", lat.Round(time.Millisecond))
	if a.State == store.StateQueued {
		it.p.Attempts, it.p.NextAttempt = attempts, a.NextAttempt
		q.regauge(it, provider)
		q.schedule(it)
		return
	}
	if a.State == store.StateDelivered {
		q.metrics.DeliveryLatency.WithLabelValues(provider, string(it.class)).Observe(lat.Seconds())
	}
	q.metrics.Queued.WithLabelValues(it.gauge, string(it.class)).Dec()
	q.mu.Lock()
	q.count--
	q.mu.Unlock()
}

// requeueOnStop drops an item picked up as the queue stopped: it was not
// attempted, and the store still lists it for the next start.
// record writes an attempt's outcome, retrying while the store fails (a
// full disk, say): until it lands the store still lists the copy as
// queued, and a restart would send it again or bounce it twice. The
// worker waits meanwhile, which slows its lane as it should. It is
// written even while shutting down, since the attempt happened; only a
// store that keeps failing through shutdown leaves the copy queued, to be
// sent again (a duplicate, never a loss).
func (q *Queue) record(a store.Attempt, it *item) {
	wait := 100 * time.Millisecond
	for {
		err := q.store.RecordAttempt(context.Background(), a)
		if err == nil || errors.Is(err, store.ErrNotFound) {
			return
		}
		q.log.Error("queue: recording attempt; retrying", "id", it.p.MessageID, "rcpt", it.p.Address, "err", err, "in", wait)
		select {
		case <-q.ctx.Done():
			if err := q.store.RecordAttempt(context.Background(), a); err != nil {
				q.log.Error("queue: attempt not recorded; the copy stays queued", "id", it.p.MessageID, "rcpt", it.p.Address, "err", err)
			}
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

func (q *Queue) requeueOnStop(it *item) {
	q.dropData(it)
	q.metrics.Queued.WithLabelValues(it.gauge, string(it.class)).Dec()
	q.mu.Lock()
	q.count--
	q.mu.Unlock()
}

// Len is the number of recipients the queue holds, in any stage.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.count
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

func boolLabel(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// destQueues holds one class's ready items as a FIFO per destination, with
// the destinations in round-robin order, so that a worker can keep its
// connection busy while no destination starves.
type destQueues struct {
	byKey map[string]*fifo
	order []string
	next  int
	n     int
}

type fifo struct {
	items []*item
	head  int
}

func (d *destQueues) init() { d.byKey = map[string]*fifo{} }

func (d *destQueues) push(it *item) {
	f := d.byKey[it.dest.Key]
	if f == nil {
		f = &fifo{}
		d.byKey[it.dest.Key] = f
		d.order = append(d.order, it.dest.Key)
	}
	f.items = append(f.items, it)
	d.n++
}

// take removes and returns all items queued for key.
func (d *destQueues) take(key string) []*item {
	f := d.byKey[key]
	if f == nil {
		return nil
	}
	items := f.items[f.head:]
	d.n -= len(items)
	d.drop(key)
	return items
}

func (d *destQueues) drop(key string) {
	delete(d.byKey, key)
	for i, k := range d.order {
		if k == key {
			d.order = append(d.order[:i], d.order[i+1:]...)
			break
		}
	}
}

func (d *destQueues) pop(prefer string) *item {
	if d.n == 0 {
		return nil
	}
	key := prefer
	if f := d.byKey[key]; f == nil {
		d.next %= len(d.order)
		key = d.order[d.next]
		d.next++
	}
	f := d.byKey[key]
	it := f.items[f.head]
	f.items[f.head] = nil
	f.head++
	d.n--
	if f.head == len(f.items) {
		d.drop(key)
	} else if f.head > 1024 && f.head*2 > len(f.items) {
		f.items = append([]*item(nil), f.items[f.head:]...)
		f.head = 0
	}
	return it
}

// schedHeap orders waiting items by their next attempt.
type schedHeap []*item

func (h schedHeap) Len() int           { return len(h) }
func (h schedHeap) Less(i, j int) bool { return h[i].p.NextAttempt.Before(h[j].p.NextAttempt) }
func (h schedHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *schedHeap) Push(x any)        { *h = append(*h, x.(*item)) }
func (h *schedHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return it
}
