package store

import (
	"context"
	"log/slog"
	"time"
)

// Retention is how long the store keeps what is done with; zero keeps it
// for ever.
type Retention struct {
	// Events are audit-trail events, by their time.
	Events time.Duration
	// Messages are messages with nothing left to send (no recipient
	// queued or held), by the time they were received, each with its
	// recipients, links and events.
	Messages time.Duration
}

// Pruner is what a Sweeper needs of a store.
type Pruner interface {
	DeleteEvents(ctx context.Context, before time.Time, limit int) (int, error)
	DeleteMessages(ctx context.Context, before time.Time, limit int) (int, error)
}

// keyPruner is the part of Idempotency a Sweeper uses when the store
// keeps idempotency keys: it deletes the expired ones at every sweep.
type keyPruner interface {
	DeleteExpiredKeys(ctx context.Context, before time.Time, limit int) (int, error)
}

// SweepOptions tune a Sweeper. Now and Sleep are its clock (the store
// imports no clock package): clock.Clock's Now and clock.Sleep fit.
type SweepOptions struct {
	Every time.Duration // between sweeps; default 10m
	Batch int           // rows per transaction; default 1000
	Now   func() time.Time
	// Sleep waits d or until stop is closed, and reports whether d passed.
	Sleep func(d time.Duration, stop <-chan struct{}) bool
	Log   *slog.Logger
}

// Sweeper enforces a Retention: at Start and then every Every it deletes
// what is older than the retention allows, in transactions of at most
// Batch rows, so that other writes go on between them.
type Sweeper struct {
	st   Pruner
	ret  Retention
	opts SweepOptions
	stop chan struct{}
	done chan struct{} // made by Start
}

// NewSweeper builds a sweeper; nothing runs before Start.
func NewSweeper(st Pruner, r Retention, opts SweepOptions) *Sweeper {
	if opts.Every <= 0 {
		opts.Every = 10 * time.Minute
	}
	if opts.Batch <= 0 {
		opts.Batch = 1000
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Sleep == nil {
		opts.Sleep = func(d time.Duration, stop <-chan struct{}) bool {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-t.C:
				return true
			case <-stop:
				return false
			}
		}
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	return &Sweeper{st: st, ret: r, opts: opts, stop: make(chan struct{})}
}

// Start sweeps now and then every Every until Stop. A retention of zero
// for both kinds starts nothing.
func (s *Sweeper) Start() {
	s.done = make(chan struct{})
	if _, keys := s.st.(keyPruner); s.ret.Events <= 0 && s.ret.Messages <= 0 && !keys {
		close(s.done)
		return
	}
	go func() {
		defer close(s.done)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			select {
			case <-s.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		for {
			if _, _, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
				s.opts.Log.Warn("store: retention sweep failed; trying again at the next", "err", err, "next_in", s.opts.Every)
			}
			if !s.opts.Sleep(s.opts.Every, s.stop) {
				return
			}
		}
	}()
}

// Stop ends the sweeps, cutting one in progress between two transactions,
// and waits for the sweeper to finish. Call it once, after Start or
// instead of it.
func (s *Sweeper) Stop() {
	close(s.stop)
	if s.done != nil {
		<-s.done
	}
}

// Sweep deletes, once, everything older than the retention allows, events
// first (so that a message's events go in bounded batches, not all with
// it), and reports how many events and messages it deleted (the events
// that went with their messages are not counted).
func (s *Sweeper) Sweep(ctx context.Context) (events, messages int, err error) {
	now := s.opts.Now()
	if s.ret.Events > 0 {
		if events, err = s.drain(ctx, s.st.DeleteEvents, now.Add(-s.ret.Events)); err != nil {
			return events, 0, err
		}
	}
	if s.ret.Messages > 0 {
		messages, err = s.drain(ctx, s.st.DeleteMessages, now.Add(-s.ret.Messages))
	}
	if kp, ok := s.st.(keyPruner); ok && err == nil {
		// Idempotency keys carry their own expiry: whatever the retention.
		var keys int
		keys, err = s.drain(ctx, kp.DeleteExpiredKeys, now)
		if keys > 0 {
			s.opts.Log.Info("store: expired idempotency keys deleted", "keys", keys)
		}
	}
	if events+messages > 0 {
		s.opts.Log.Info("store: retention sweep", "events", events, "messages", messages)
	}
	return events, messages, err
}

func (s *Sweeper) drain(ctx context.Context, del func(context.Context, time.Time, int) (int, error), before time.Time) (int, error) {
	total := 0
	for {
		n, err := del(ctx, before, s.opts.Batch)
		total += n
		if err != nil || n < s.opts.Batch {
			return total, err
		}
	}
}
