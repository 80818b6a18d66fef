package redislimit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certgate/certgate/policy"
)

// DefaultRetry is how often a degraded Failover probes Redis.
const DefaultRetry = time.Second

// maxShareInterval bounds a scaled interval as lanes bound theirs (about
// ten years), so that interval × live nodes cannot overflow.
const maxShareInterval = 10 * 365 * 24 * time.Hour

// FailoverOptions tune a Failover.
type FailoverOptions struct {
	// LiveNodes is the number of live nodes (the daemon reads it from the
	// nodes' heartbeats); values below 1 are taken as 1. It is called on
	// every call made in fallback, so it must be cheap: a cached count.
	// Required.
	LiveNodes func() int
	// Retry is the least time between two probes of a Redis found
	// unreachable; default DefaultRetry.
	Retry time.Duration
	// Now is the clock probes are timed on; default time.Now.
	Now func() time.Time
	// Logger hears the transitions; default slog.Default().
	Logger *slog.Logger
	// OnChange, when set, hears every transition (true: into fallback),
	// in order, for the daemon's gauge. It may call Degraded and
	// Fallbacks; it must not call the Failover's Limiter methods.
	OnChange func(degraded bool)
}

// Failover is a policy.Limiter that keeps delivering when Redis is
// unreachable (issue 14). Every call goes to the primary (the Redis
// Limiter); when that fails because Redis cannot be reached, the
// Failover falls back to a LocalLimiter of its own holding this node's
// share of each limit: the rate divided by the live nodes (the interval
// multiplied by them) and floor(connection limit / live nodes)
// connection slots, counting the slots Redis granted this node before the
// outage. The share is at least one slot, so transactional mail never
// stops: that is the one case where a node may use the whole limit (a
// limit of 1 on N nodes allows N connections in fallback).
//
// In fallback it probes Redis at most once per Retry, with the call that
// finds a probe due, and returns to Redis when a probe succeeds. Slots and
// reservations go back to whichever limiter granted them. A caller's own
// cancelled or expired context is not an outage: its error is returned.
type Failover struct {
	primary   policy.Limiter
	local     *policy.LocalLimiter
	o         FailoverOptions
	fallbacks atomic.Uint64

	// change serializes transitions with their OnChange calls, so the
	// hook hears them in the order they happened.
	change sync.Mutex

	mu        sync.Mutex
	degraded  bool
	since     time.Time // when the current outage was found
	nextProbe time.Time
	// remote counts key's slots the primary granted and this Failover
	// has not released; local's own count is the locally granted ones.
	remote map[string]int
	// localTAT is key's local theoretical arrival time while a local
	// reservation may still be cancelled: a Cancel whose Next is it is
	// the local limiter's, and the first Redis reservation after an
	// outage starts no earlier, so this node's pending local slots are
	// not doubled by Redis's (whose TAT the outage left behind).
	localTAT map[string]time.Time
}

var _ policy.Limiter = (*Failover)(nil)

// NewFailover returns a Failover over primary. It panics when
// o.LiveNodes is nil: without it the fallback would take every limit
// whole on every node.
func NewFailover(primary policy.Limiter, o FailoverOptions) *Failover {
	if o.LiveNodes == nil {
		panic("redislimit: NewFailover without LiveNodes")
	}
	if o.Retry <= 0 {
		o.Retry = DefaultRetry
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Failover{
		primary:  primary,
		local:    policy.NewLocalLimiter(),
		o:        o,
		remote:   map[string]int{},
		localTAT: map[string]time.Time{},
	}
}

// Degraded reports whether the Failover is in fallback.
func (f *Failover) Degraded() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.degraded
}

// Fallbacks is the number of times the Failover went into fallback.
func (f *Failover) Fallbacks() uint64 { return f.fallbacks.Load() }

func (f *Failover) live() int { return max(f.o.LiveNodes(), 1) }

// route says whether a call goes to the primary: always while healthy;
// in fallback only the one call that claims a due probe (probe true).
func (f *Failover) route() (primary, probe bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.degraded {
		return true, false
	}
	now := f.o.Now()
	if now.Before(f.nextProbe) {
		return false, false
	}
	f.nextProbe = now.Add(f.o.Retry)
	return true, true
}

// settle takes what a primary call said about Redis and reports whether
// the call must fall back to the local limiter.
func (f *Failover) settle(ctx context.Context, err error, probe bool) bool {
	if err == nil {
		if probe {
			f.recover()
		}
		return false
	}
	if !unreachable(ctx, err) {
		return false
	}
	f.fail(err)
	return true
}

func (f *Failover) fail(err error) {
	f.change.Lock()
	defer f.change.Unlock()
	f.mu.Lock()
	now := f.o.Now()
	f.nextProbe = now.Add(f.o.Retry)
	if f.degraded {
		f.mu.Unlock()
		return
	}
	f.degraded, f.since = true, now
	f.fallbacks.Add(1)
	f.mu.Unlock()
	n := f.live()
	f.o.Logger.Warn("cluster limiter: Redis unreachable, this node falls back to its share of each limit",
		"err", err, "live_nodes", n, "share", fmt.Sprintf("1/%d", n), "retry", f.o.Retry)
	if f.o.OnChange != nil {
		f.o.OnChange(true)
	}
}

func (f *Failover) recover() {
	f.change.Lock()
	defer f.change.Unlock()
	f.mu.Lock()
	if !f.degraded {
		f.mu.Unlock()
		return
	}
	f.degraded = false
	down := f.o.Now().Sub(f.since)
	f.mu.Unlock()
	f.o.Logger.Info("cluster limiter: Redis reachable again, limits are the cluster's again", "after", down)
	if f.o.OnChange != nil {
		f.o.OnChange(false)
	}
}

// shareInterval is interval × n, bounded.
func shareInterval(interval time.Duration, n int) time.Duration {
	if interval <= 0 {
		return interval
	}
	if interval >= maxShareInterval/time.Duration(n) {
		return max(interval, maxShareInterval)
	}
	return interval * time.Duration(n)
}

// Reserve implements policy.Limiter.
func (f *Failover) Reserve(ctx context.Context, key string, interval time.Duration, now time.Time) (policy.Reservation, error) {
	if toPrimary, probe := f.route(); toPrimary {
		at := now
		f.mu.Lock()
		if t, ok := f.localTAT[key]; ok && t.After(at) {
			at = t
		}
		f.mu.Unlock()
		r, err := f.primary.Reserve(ctx, key, interval, at)
		if !f.settle(ctx, err, probe) {
			if err == nil {
				f.mu.Lock()
				delete(f.localTAT, key)
				f.mu.Unlock()
			}
			return r, err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	r, _ := f.local.Reserve(ctx, key, shareInterval(interval, f.live()), now)
	f.localTAT[key] = r.Next
	return r, nil
}

// Cancel implements policy.Limiter. A Redis reservation cancelled while
// Redis is away stays used, which costs at most one interval.
func (f *Failover) Cancel(ctx context.Context, key string, r policy.Reservation) error {
	f.mu.Lock()
	if t, ok := f.localTAT[key]; ok && t.Equal(r.Next) && r.Next.After(r.Start) {
		f.local.Cancel(ctx, key, r)
		f.localTAT[key] = r.Start // the local TAT now: an earlier local reservation may go next
		f.mu.Unlock()
		return nil
	}
	f.mu.Unlock()
	toPrimary, probe := f.route()
	if !toPrimary {
		return nil
	}
	err := f.primary.Cancel(ctx, key, r)
	if f.settle(ctx, err, probe) {
		return nil
	}
	return err
}

// Acquire implements policy.Limiter.
func (f *Failover) Acquire(ctx context.Context, key string, limit int) (bool, error) {
	if limit <= 0 {
		return false, nil
	}
	if toPrimary, probe := f.route(); toPrimary {
		ok, err := f.primary.Acquire(ctx, key, limit)
		if !f.settle(ctx, err, probe) {
			if ok && err == nil {
				f.mu.Lock()
				f.remote[key]++
				f.mu.Unlock()
			}
			return ok, err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	// The slots Redis granted this node are still its connections.
	share := max(limit/f.live(), 1) - f.remote[key]
	ok, _ := f.local.Acquire(ctx, key, share)
	return ok, nil
}

// Release implements policy.Limiter. It gives back a locally granted slot
// first (Redis never counted those), then one Redis granted; when Redis
// does not hear that, its lease expires by itself, so the error is not
// the caller's.
func (f *Failover) Release(ctx context.Context, key string) error {
	f.mu.Lock()
	if n, _ := f.local.Held(ctx, key); n > 0 {
		f.local.Release(ctx, key)
		f.mu.Unlock()
		return nil
	}
	if f.remote[key] == 0 {
		f.mu.Unlock()
		return nil
	}
	if f.remote[key]--; f.remote[key] == 0 {
		delete(f.remote, key)
	}
	f.mu.Unlock()
	// Even in fallback: the primary must forget the lease, or its
	// refresh would bring it back once Redis returns.
	err := f.primary.Release(ctx, key)
	if err != nil && unreachable(ctx, err) {
		f.fail(err)
		return nil
	}
	return err
}

// Held implements policy.Limiter: the cluster's count from Redis; in
// fallback this node's own (the slots Redis granted it and the local
// ones), the count its share is held to.
func (f *Failover) Held(ctx context.Context, key string) (int, error) {
	if toPrimary, probe := f.route(); toPrimary {
		n, err := f.primary.Held(ctx, key)
		if !f.settle(ctx, err, probe) {
			return n, err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	n, _ := f.local.Held(ctx, key)
	return n + f.remote[key], nil
}

// unreachable reports whether err from a call made with ctx means Redis
// cannot be reached or cannot serve: network errors and timeouts, a
// closed or exhausted pool, a server still loading its data, without its
// master, read-only, busy, out of memory, or refusing the password. Not the end of the caller's own ctx, and not an answer
// Redis gave about the request (a script error): those are returned.
func unreachable(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil {
		return false
	}
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), // the Limiter's own Timeout
		errors.As(err, &ne),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, redis.ErrClosed), errors.Is(err, redis.ErrPoolTimeout), errors.Is(err, redis.ErrPoolExhausted):
		return true
	}
	// READONLY: a replica after a failover; BUSY: a script runs long;
	// OOM: no memory for the keys; NOAUTH, WRONGPASS: a password changed.
	// Each leaves the limits unserved: the lanes must keep going.
	for _, p := range []string{"LOADING", "MASTERDOWN", "CLUSTERDOWN", "READONLY", "BUSY", "OOM", "NOAUTH", "WRONGPASS"} {
		if redis.HasErrorPrefix(err, p) {
			return true
		}
	}
	return false
}
