package delivery

import (
	"slices"
	"time"

	"github.com/certgate/certgate/clock"
	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/policy"
)

// connectionIdleTime is how long a worker keeps its connection open for
// more mail after its lane runs dry (Postfix's connection cache keeps 2s):
// long enough to ride out the gaps of a wave, short enough not to hog the
// receiver. A connection idle longer than that is not reused either.
const connectionIdleTime = 2 * time.Second

// lane is the runtime side of a policy lane: ready items and workers. Each
// worker holds one of the lane's connection slots (policy.Lane.AcquireConn)
// for as long as it runs, and at most one connection.
type lane struct {
	q       *Queue
	pl      *policy.Lane
	ready   [2]tenantQueues // [0] transactional, [1] bulk
	workers int
	arrived chan struct{}  // closed and replaced when an item arrives
	open    map[string]int // connections the workers hold, by destination key
	wakeDue time.Time      // when a suspension holding ready items ends; zero: none awaited
}

func newLane(q *Queue, pl *policy.Lane) *lane {
	l := &lane{q: q, pl: pl, arrived: make(chan struct{}), open: map[string]int{}}
	l.ready[0].init()
	l.ready[1].init()
	return l
}

func classIndex(c config.Class) int {
	if c == config.ClassTransactional {
		return 0
	}
	return 1
}

// push makes an item ready and wakes idle workers. Called with q.mu held.
func (l *lane) push(it *item) {
	l.ready[classIndex(it.class)].push(it)
	close(l.arrived)
	l.arrived = make(chan struct{})
}

// pop takes the most urgent item that may go now, preferring the
// destination the worker already has a connection to within that class.
// Items a lane rule suspends stay where they are. Called with q.mu held.
func (l *lane) pop(preferKey string) *item {
	for i := range l.ready {
		if it := l.ready[i].pop(preferKey, l.held(i)); it != nil {
			if i == 1 {
				l.pl.TakeBulk(it.p.Tenant) // under q.mu: workers cannot pass a warm-up cap together
			}
			return it
		}
	}
	return nil
}

// available counts the ready items that may go now. Called with q.mu held.
func (l *lane) available() int {
	n := 0
	for i := range l.ready {
		n += l.ready[i].count(l.held(i))
	}
	return n
}

// held reports, for class i, whether a tenant's ready items are held by a
// suspension of the lane's rules; a suspension holding items arms the
// wake-up at its end. Called with q.mu held.
func (l *lane) held(i int) func(tenant string) bool {
	return func(tenant string) bool {
		held, until := l.pl.Suspended(i == 0, tenant)
		if held && !until.IsZero() { // zero: paused, until Queue.Wake
			l.wakeAt(until)
		}
		return held
	}
}

// wakeAt makes the lane look for work again at t, when a suspension that
// holds ready items ends: nothing else would, since nothing arrives.
// Called with q.mu held.
func (l *lane) wakeAt(t time.Time) {
	if !l.wakeDue.IsZero() && !l.wakeDue.After(t) {
		return
	}
	l.wakeDue = t
	q := l.q
	// Never at once: a suspension whose end is already past would have
	// the wake-up find it held again, for ever.
	d := max(t.Sub(q.clock.Now()), 100*time.Millisecond)
	timer := q.clock.NewTimer(d)
	q.wg.Add(1)
	go func() {
		defer q.wg.Done()
		defer timer.Stop()
		select {
		case <-timer.C():
		case <-q.ctx.Done():
			return
		}
		q.mu.Lock()
		if l.wakeDue.Equal(t) {
			l.wakeDue = time.Time{}
		}
		spawn := l.wake()
		q.mu.Unlock()
		l.spawn(spawn)
	}()
}

// wake tells idle workers to look again, and reserves slots for as many
// new workers as there is work that may go; the caller starts them with
// spawn once q.mu is released. Called with q.mu held.
func (l *lane) wake() (spawn int) {
	close(l.arrived)
	l.arrived = make(chan struct{})
	if l.q.ctx.Err() != nil {
		return 0 // shutting down: Stop may be waiting for the workers already
	}
	for l.workers < l.available() && l.pl.AcquireConn() {
		l.workers++
		spawn++
	}
	l.q.wg.Add(spawn) // now, under q.mu: Stop is not yet waiting, or saw ctx end first
	return spawn
}

// spawn starts n workers whose slots (and wait group places) wake reserved.
func (l *lane) spawn(n int) {
	for range n {
		go l.work()
	}
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

// quit gives up a worker's place and its connection slot. Called with
// q.mu held, so that a worker arriving item never finds the slot taken by
// a worker that is gone.
func (l *lane) quit() {
	l.workers--
	l.pl.ReleaseConn()
}

// awaitWork returns true when the lane has work for this worker. A worker
// holding a connection waits up to connectionIdleTime for more before it
// gives up its place; false means the worker has left the lane.
func (l *lane) awaitWork(hasConn bool) bool {
	q := l.q
	var timer clock.Timer
	for {
		q.mu.Lock()
		if q.ctx.Err() == nil && l.available() > 0 {
			q.mu.Unlock()
			return true
		}
		if q.ctx.Err() != nil || !hasConn {
			l.quit()
			q.mu.Unlock()
			return false
		}
		arrived := l.arrived
		q.mu.Unlock()
		if timer == nil {
			timer = q.clock.NewTimer(connectionIdleTime)
			defer timer.Stop()
		}
		select {
		case <-arrived:
		case <-q.ctx.Done():
		case <-timer.C():
			hasConn = false // idle long enough: leave on the next check
		}
	}
}

// tenantQueues holds one class's ready items per tenant, the tenants in
// round-robin order: within a lane and a class, a tenant with a wave
// queued takes one turn in as many as there are tenants waiting, so
// another tenant's one-time code waits for one copy of the wave, not for
// the wave.
type tenantQueues struct {
	byTenant map[string]*destQueues
	order    []string
	next     int
	n        int
}

func (q *tenantQueues) init() { q.byTenant = map[string]*destQueues{} }

func (q *tenantQueues) push(it *item) {
	d := q.byTenant[it.p.Tenant]
	if d == nil {
		d = &destQueues{}
		d.init()
		q.byTenant[it.p.Tenant] = d
		q.order = append(q.order, it.p.Tenant)
	}
	d.push(it)
	q.n++
}

// pop takes the next tenant's turn, preferring the destination prefer
// within it; tenants held are passed over, keeping their items.
func (q *tenantQueues) pop(prefer string, held func(tenant string) bool) *item {
	for range len(q.order) {
		q.next %= len(q.order)
		tenant := q.order[q.next]
		if held(tenant) {
			q.next++
			continue
		}
		d := q.byTenant[tenant]
		it := d.pop(prefer)
		q.n--
		if d.n == 0 {
			q.drop(tenant) // the next tenant now sits at q.next
		} else {
			q.next++
		}
		return it
	}
	return nil
}

// count is how many items the tenants not held have.
func (q *tenantQueues) count(held func(tenant string) bool) int {
	n := 0
	for _, tenant := range q.order {
		if !held(tenant) {
			n += q.byTenant[tenant].n
		}
	}
	return n
}

// take removes and returns every tenant's items queued for key.
func (q *tenantQueues) take(key string) []*item {
	var out []*item
	for _, tenant := range slices.Clone(q.order) {
		d := q.byTenant[tenant]
		items := d.take(key)
		q.n -= len(items)
		out = append(out, items...)
		if d.n == 0 {
			q.drop(tenant)
		}
	}
	return out
}

func (q *tenantQueues) drop(tenant string) {
	delete(q.byTenant, tenant)
	i := slices.Index(q.order, tenant)
	q.order = slices.Delete(q.order, i, i+1)
	if i < q.next {
		q.next--
	}
}

// destQueues holds one tenant's ready items of a class as a FIFO per
// destination, with the destinations in round-robin order, so that a
// worker can keep its connection busy while no destination starves.
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
