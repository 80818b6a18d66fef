package delivery

import (
	"github.com/certgate/certgate/clock"
)

// worker is one connection's worth of delivery in a lane: it waits for
// the lane's rate, takes the most urgent item, delivers it on the
// connection it holds when that goes to the same place, and leaves when
// the lane is empty.
type worker struct {
	l    *lane
	q    *Queue
	conn *Conn
}

// step is what a stage of delivering one item leaves the worker to do.
type step int

const (
	carryOn   step = iota // go on with this item
	nextItem              // this item is dealt with; take the next
	leaveLane             // the worker has left the lane
)

func (l *lane) work() {
	q := l.q
	defer q.wg.Done()
	w := &worker{l: l, q: q}
	defer w.hold(nil)
	for w.deliverNext() != leaveLane {
	}
}

// deliverNext waits for the lane's rate and delivers its most urgent item.
func (w *worker) deliverNext() step {
	l, q := w.l, w.q
	if !l.awaitWork(w.conn != nil) {
		return leaveLane
	}
	slot, _, err := l.pl.WaitSlot(q.ctx)
	if err != nil {
		if q.ctx.Err() == nil {
			// Only a shared limiter fails: the lane's next arrival
			// starts a worker again.
			q.log.Error("queue: waiting for the lane's rate", "lane", l.pl.Key(), "err", err)
		}
		w.quit()
		return leaveLane
	}
	it := w.take()
	if it == nil || q.dropLost(it) {
		slot.Unused()
		return nextItem // another worker (or node) took it; wait for more or leave
	}
	q.metrics.ShapingWait.WithLabelValues(l.pl.Name(), string(it.class)).Observe(q.clock.Now().Sub(it.readyAt).Seconds())
	if s := w.connect(it); s != carryOn {
		return s
	}
	return w.deliver(it)
}

// take pops the most urgent item, preferring the held connection's
// destination.
func (w *worker) take() *item {
	prefer := ""
	if w.conn != nil {
		prefer = w.conn.Dest.Key
	}
	w.q.mu.Lock()
	defer w.q.mu.Unlock()
	return w.l.pop(prefer)
}

// connect makes sure the worker holds a usable connection to the item's
// destination. When it cannot, it deals with the item: deferred with
// everything else queued to a dead destination, put back when only this
// one connection was refused, or dropped at shutdown.
func (w *worker) connect(it *item) step {
	q, l := w.q, w.l
	// A slow lane's rate can keep a connection idle longer than a
	// receiver waits; such a connection is not worth trying.
	if c := w.conn; c != nil && (c.Dest.Key != it.dest.Key || l.pl.ConnectionSpent(c.Sent) ||
		clock.Since(q.clock, c.LastUsed) > connectionIdleTime) {
		w.hold(nil)
	}
	if w.conn != nil {
		return carryOn
	}
	c, res := q.dialer.Dial(q.ctx, it.dest)
	if c != nil {
		w.hold(c)
		q.metrics.ConnectionsOpened.WithLabelValues(l.pl.Name(), boolLabel(c.TLS)).Inc()
		return carryOn
	}
	if q.ctx.Err() != nil {
		q.leave(it) // not attempted: the store lists it for the next start
		w.quit()
		return leaveLane
	}
	q.mu.Lock()
	if l.open[it.dest.Key] > 0 {
		// Another worker's connection to the destination works: the
		// receiver refused one connection more than it takes, or one of
		// its hosts failed. That is no attempt at this message: it goes
		// back, the lane opens no more connections for a while, and this
		// worker leaves the lane to the connections that work.
		l.push(it)
		l.pl.ConnRefused()
		l.quit()
		q.mu.Unlock()
		return leaveLane
	}
	// A reply at connect time (a 421 at the greeting, a block list's 554)
	// is news for the lane's rules like any other, and may say to retry
	// a 5xx rather than bounce.
	if res.Code != 0 {
		q.mu.Unlock()
		q.react(l.pl, it, &res)
		q.mu.Lock()
	}
	// The destination is down for everything queued to it: defer the lot
	// now instead of spending a rate slot on each.
	same := l.takeDest(it.dest.Key)
	q.mu.Unlock()
	for _, other := range append(same, it) {
		q.finish(other, l.pl.Name(), res, nil)
	}
	return nextItem
}

// deliver sends the item on the held connection and records the outcome.
func (w *worker) deliver(it *item) step {
	q, l := w.q, w.l
	// data is the copy when read from the store; fresh copies go out as
	// the prefix and body they were accepted with.
	var data []byte
	prefix, body := q.takeData(it)
	if body == nil {
		held, err := q.holdForRead(it.p.Size)
		if err != nil {
			q.leave(it)
			w.quit()
			return leaveLane
		}
		defer q.memory.Release(held)
		if data, err = q.readCopy(it); err != nil {
			if q.ctx.Err() != nil {
				q.leave(it)
				w.quit()
				return leaveLane
			}
			q.metrics.StoreErrors.WithLabelValues("read_copy").Inc()
			q.log.Error("queue: reading message data", "id", it.p.MessageID, "rcpt", it.p.Address, "err", err)
			q.finish(it, l.pl.Name(), Result{Network: true, Text: "local: message data unavailable"}, nil)
			return nextItem
		}
		prefix, body = nil, data
	}
	start := q.clock.Now()
	res := w.conn.Send(it.p.MailFrom, it.p.Address, prefix, body)
	if res.Stale {
		// The server dropped the connection while it sat idle: that is
		// no attempt at this message, so go again on a fresh one.
		w.drop()
		c, dres := q.dialer.Dial(q.ctx, it.dest)
		if c == nil {
			q.finish(it, l.pl.Name(), dres, data)
			return nextItem
		}
		w.hold(c)
		q.metrics.ConnectionsOpened.WithLabelValues(l.pl.Name(), boolLabel(c.TLS)).Inc()
		res = w.conn.Send(it.p.MailFrom, it.p.Address, prefix, body)
	}
	q.metrics.DeliveryDuration.WithLabelValues(l.pl.Name()).Observe(q.clock.Now().Sub(start).Seconds())
	if res.Network || res.Code == 421 {
		w.drop() // RFC 5321 3.8: 421 means the server is closing
	}
	q.react(l.pl, it, &res)
	q.finish(it, l.pl.Name(), res, data)
	return nextItem
}

// hold changes the connection this worker holds, closing the one it had
// politely, so that the lane knows which destinations it has working
// connections to.
func (w *worker) hold(c *Conn) {
	if w.conn != nil {
		w.conn.Close()
	}
	w.set(c)
}

// drop closes the held connection without QUIT: it failed, or the server
// is closing it.
func (w *worker) drop() {
	if w.conn != nil {
		w.conn.c.Close()
	}
	w.set(nil)
}

func (w *worker) set(c *Conn) {
	w.q.mu.Lock()
	if w.conn != nil {
		w.l.open[w.conn.Dest.Key]--
	}
	if c != nil {
		w.l.open[c.Dest.Key]++
	}
	w.q.mu.Unlock()
	w.conn = c
}

// quit leaves the lane.
func (w *worker) quit() {
	w.q.mu.Lock()
	w.l.quit()
	w.q.mu.Unlock()
}

func boolLabel(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// readCopies is how many times a copy read from the store is in memory
// while it is read: in SQLite's buffer, in the driver's copy, in ours.
const readCopies = 3

// copyOverhead covers what a copy adds to its message's size: the trace
// and signature header fields, gated links' longer URLs.
const copyOverhead = 64 << 10

// holdForRead waits for room in the memory budget for a copy of a message
// of size bytes read from the store, and returns what it took (0 without
// a budget). It fails only when the queue stops.
func (q *Queue) holdForRead(size int64) (int64, error) {
	if q.memory == nil {
		return 0, nil
	}
	n := readCopies * (max(size, 0) + copyOverhead)
	if err := q.memory.Reserve(q.ctx, n); err != nil {
		return 0, err
	}
	return n, nil
}

// largeCopy is the size from which copies are read from the store one at
// a time: SQLite assembles such a value in C memory of its size, outside
// Go's heap and its memory limit, so four readers at once added four
// 20 MB buffers to a flood's peak.
const largeCopy = 1 << 20

// readCopy reads the item's copy from the store.
func (q *Queue) readCopy(it *item) ([]byte, error) {
	if it.p.Size >= largeCopy {
		select {
		case q.largeRead <- struct{}{}:
			defer func() { <-q.largeRead }()
		case <-q.ctx.Done():
			return nil, q.ctx.Err()
		}
	}
	return q.store.Data(q.ctx, it.p.RecipientID)
}
