// Package redislimit is a policy.Limiter kept in Redis, so that the lanes
// of one key on several certgate nodes share one rate and one set of
// connection slots (issue 14). Every operation is one Lua script, run
// atomically by Redis (EVALSHA, with EVAL when the server does not have
// the script yet), or a single command.
//
// # Rates
//
// The rate is LocalLimiter's GCRA with a burst of one: key's theoretical
// arrival time (TAT) lives in the hash certgate:lim:<key>:tat, and a
// reservation takes max(now, TAT) and moves the TAT one interval past it.
// now is the caller's clock reading, as the Limiter interface has it, not
// Redis's TIME: lanes on a fake clock stay on it, and every node's own
// sleep ends on the clock it reserved with. The cost is that clock skew
// between nodes (NTP keeps it to milliseconds) shifts a node's slots by
// that much in real time; consecutive starts are still one interval apart
// on the TAT's line, so no node takes a slot another took. Times are kept
// as whole seconds and nanoseconds (Lua's numbers are doubles, exact to
// 2^53, which Unix nanoseconds are not), so reservations come back to the
// nanosecond, as LocalLimiter's do. A TAT key expires (PEXPIRE) once the
// TAT is past by TATGrace: an idle key costs nothing, and a late node
// still finds it for that long. Cancel puts the TAT back to the
// reservation's start only while it is still the reservation's Next.
//
// # Connection slots
//
// The slots of a key are leases: the sorted set certgate:lim:<key>:conn
// holds one member per slot, a holder id (this Limiter's, unique per
// process, then a counter: one per slot), scored by the lease's expiry in
// Unix milliseconds. Acquire drops expired members and adds one when
// fewer than limit remain; Release removes one of this Limiter's own;
// Held counts the unexpired. A background refresh extends this Limiter's
// leases every Refresh (a third of the lease by default), so a slot held
// for a connection's whole life stays held, while the slots of a node
// that died (or lost Redis) free themselves one lease after its last
// refresh. A lease that expired while its holder still had the
// connection (a pause longer than the lease) is added back at the next
// refresh even if that briefly exceeds the limit: the count stays honest
// about the connections that exist. Lease expiry is read on the Limiter's
// clock (Options.Now); with nodes' clocks within a second of each other
// and the default 30s lease refreshed every 10s, a live lease is never
// taken for dead.
//
// Keys are bounded: a lane key longer than MaxKey bytes is replaced by its
// SHA-256. No operation scans the keyspace.
//
// # Outages
//
// A Limiter returns Redis's errors. Failover wraps it so that a node that
// loses Redis keeps delivering on its share of each limit (the limit
// divided by the live nodes) until Redis answers again.
package redislimit

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certgate/certgate/policy"
)

// Defaults of Options.
const (
	DefaultPrefix  = "certgate:lim:"
	DefaultLease   = 30 * time.Second
	DefaultTimeout = 2 * time.Second
	// TATGrace is how long a TAT key outlives its TAT.
	TATGrace = time.Minute
	// MaxKey is the longest lane key used as it is in a Redis key.
	MaxKey = 128
)

// Options tune a Limiter; the zero value takes every default.
type Options struct {
	// Prefix starts every Redis key; default DefaultPrefix.
	Prefix string
	// Lease is how long a connection slot stays held without a refresh;
	// default DefaultLease.
	Lease time.Duration
	// Refresh is how often the background refresh extends this
	// Limiter's leases; default Lease/3. Negative: no background refresh
	// (the caller calls Refresh).
	Refresh time.Duration
	// Timeout bounds each call to Redis; default DefaultTimeout.
	Timeout time.Duration
	// Now is the clock leases are read on; default time.Now.
	Now func() time.Time
	// Holder names this process in lease members; default host, pid and
	// random bytes. Two Limiters must never share one.
	Holder string
	// OnRefreshError hears the background refresh's failures; nil
	// ignores them (the leases then expire, which is the safe side).
	OnRefreshError func(error)
}

// Limiter is a policy.Limiter in Redis. Close it to stop its refresh and
// give back its slots.
type Limiter struct {
	rdb     redis.UniversalClient
	o       Options
	counter atomic.Uint64

	mu   sync.Mutex
	held map[string][]string // key's lease members this Limiter holds

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

var _ policy.Limiter = (*Limiter)(nil)

// New returns a Limiter on rdb (a *redis.Client or a ClusterClient)
// and starts its lease refresh unless o.Refresh is negative.
func New(rdb redis.UniversalClient, o Options) *Limiter {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.Lease <= 0 {
		o.Lease = DefaultLease
	}
	if o.Refresh == 0 {
		o.Refresh = o.Lease / 3
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Holder == "" {
		o.Holder = defaultHolder()
	}
	l := &Limiter{rdb: rdb, o: o, held: map[string][]string{}, stop: make(chan struct{}), done: make(chan struct{})}
	if o.Refresh > 0 {
		go l.refreshLoop()
	} else {
		close(l.done)
	}
	return l
}

func defaultHolder() string {
	host, _ := os.Hostname()
	if len(host) > 64 {
		host = host[:64]
	}
	var b [8]byte
	rand.Read(b[:])
	return fmt.Sprintf("%s:%d:%x", host, os.Getpid(), b)
}

// redisKey is key's Redis key of one kind ("tat", "conn").
func (l *Limiter) redisKey(key, kind string) string {
	if len(key) > MaxKey {
		sum := sha256.Sum256([]byte(key))
		key = "sha256:" + hex.EncodeToString(sum[:])
	}
	return l.o.Prefix + key + ":" + kind
}

// reserveScript: KEYS[1] the TAT hash; ARGV now (s, ns), interval (s, ns),
// grace (ms). Returns start (s, ns) and the new TAT (s, ns).
var reserveScript = redis.NewScript(`
local s, n = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('HMGET', KEYS[1], 's', 'n')
if t[1] and t[2] then
  local ts, tn = tonumber(t[1]), tonumber(t[2])
  if ts > s or (ts == s and tn > n) then s, n = ts, tn end
end
local ns, nn = s + tonumber(ARGV[3]), n + tonumber(ARGV[4])
if nn >= 1000000000 then ns, nn = ns + 1, nn - 1000000000 end
redis.call('HSET', KEYS[1], 's', string.format('%d', ns), 'n', string.format('%d', nn))
local ttl = (ns - tonumber(ARGV[1])) * 1000 + math.ceil((nn - tonumber(ARGV[2])) / 1000000) + tonumber(ARGV[5])
if ttl < 1 then ttl = 1 end
redis.call('PEXPIRE', KEYS[1], string.format('%d', ttl))
return {s, n, ns, nn}
`)

// cancelScript: KEYS[1] the TAT hash; ARGV the reservation's Next (s, ns)
// and Start (s, ns). Puts the TAT back to Start while it is Next.
var cancelScript = redis.NewScript(`
local t = redis.call('HMGET', KEYS[1], 's', 'n')
if t[1] and t[2] and tonumber(t[1]) == tonumber(ARGV[1]) and tonumber(t[2]) == tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 's', ARGV[3], 'n', ARGV[4])
  return 1
end
return 0
`)

// acquireScript: KEYS[1] the lease set; ARGV now (ms), expiry (ms), limit,
// member, the set's TTL (ms). Drops expired leases, then adds member when
// fewer than limit remain.
var acquireScript = redis.NewScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
`)

// refreshScript: KEYS[1] the lease set; ARGV expiry (ms), the set's TTL
// (ms), then members. Sets each member's expiry, adding any that expired.
var refreshScript = redis.NewScript(`
for i = 3, #ARGV do redis.call('ZADD', KEYS[1], ARGV[1], ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return #ARGV - 2
`)

func split(t time.Time) (int64, int64) { return t.Unix(), int64(t.Nanosecond()) }

func i64(v int64) string { return strconv.FormatInt(v, 10) }

func ms(t time.Time) string { return i64(t.UnixMilli()) }

func (l *Limiter) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, l.o.Timeout)
}

// Reserve implements policy.Limiter.
func (l *Limiter) Reserve(ctx context.Context, key string, interval time.Duration, now time.Time) (policy.Reservation, error) {
	interval = max(interval, 0)
	ctx, cancel := l.ctx(ctx)
	defer cancel()
	s, n := split(now)
	v, err := reserveScript.Run(ctx, l.rdb, []string{l.redisKey(key, "tat")},
		i64(s), i64(n), i64(int64(interval/time.Second)), i64(int64(interval%time.Second)), i64(TATGrace.Milliseconds())).Int64Slice()
	if err != nil {
		return policy.Reservation{}, fmt.Errorf("redislimit: reserve %s: %w", key, err)
	}
	if len(v) != 4 {
		return policy.Reservation{}, fmt.Errorf("redislimit: reserve %s: %d values from the script", key, len(v))
	}
	start, next := time.Unix(v[0], v[1]), time.Unix(v[2], v[3])
	if start.Equal(now) {
		start = now // keep the caller's location and monotonic reading
	}
	return policy.Reservation{Start: start.In(now.Location()), Next: next.In(now.Location())}, nil
}

// Cancel implements policy.Limiter.
func (l *Limiter) Cancel(ctx context.Context, key string, r policy.Reservation) error {
	if !r.Next.After(r.Start) {
		return nil
	}
	ctx, cancel := l.ctx(ctx)
	defer cancel()
	ns, nn := split(r.Next)
	ss, sn := split(r.Start)
	if err := cancelScript.Run(ctx, l.rdb, []string{l.redisKey(key, "tat")}, i64(ns), i64(nn), i64(ss), i64(sn)).Err(); err != nil {
		return fmt.Errorf("redislimit: cancel %s: %w", key, err)
	}
	return nil
}

// Acquire implements policy.Limiter.
func (l *Limiter) Acquire(ctx context.Context, key string, limit int) (bool, error) {
	if limit <= 0 {
		return false, nil
	}
	ctx, cancel := l.ctx(ctx)
	defer cancel()
	member := l.o.Holder + ":" + strconv.FormatUint(l.counter.Add(1), 10)
	now := l.o.Now()
	got, err := acquireScript.Run(ctx, l.rdb, []string{l.redisKey(key, "conn")},
		ms(now), ms(now.Add(l.o.Lease)), strconv.Itoa(limit), member, i64(l.setTTL().Milliseconds())).Int64()
	if err != nil {
		// Had the script run, the lease expires unrefreshed.
		return false, fmt.Errorf("redislimit: acquire %s: %w", key, err)
	}
	if got != 1 {
		return false, nil
	}
	l.mu.Lock()
	l.held[key] = append(l.held[key], member)
	l.mu.Unlock()
	return true, nil
}

// setTTL is how long a lease set outlives its last add or refresh: twice
// the lease, so a set whose holders all died goes away.
func (l *Limiter) setTTL() time.Duration { return 2 * l.o.Lease }

// Release implements policy.Limiter. Releasing a slot this Limiter does
// not hold does nothing. When Redis does not hear it, the slot comes back
// when its lease expires.
func (l *Limiter) Release(ctx context.Context, key string) error {
	l.mu.Lock()
	members := l.held[key]
	if len(members) == 0 {
		l.mu.Unlock()
		return nil
	}
	member := members[len(members)-1]
	if len(members) == 1 {
		delete(l.held, key)
	} else {
		l.held[key] = members[:len(members)-1]
	}
	l.mu.Unlock()
	ctx, cancel := l.ctx(ctx)
	defer cancel()
	if err := l.rdb.ZRem(ctx, l.redisKey(key, "conn"), member).Err(); err != nil {
		return fmt.Errorf("redislimit: release %s: %w", key, err)
	}
	return nil
}

// Held implements policy.Limiter: the unexpired leases of every holder.
func (l *Limiter) Held(ctx context.Context, key string) (int, error) {
	ctx, cancel := l.ctx(ctx)
	defer cancel()
	n, err := l.rdb.ZCount(ctx, l.redisKey(key, "conn"), "("+ms(l.o.Now()), "+inf").Result()
	if err != nil {
		return 0, fmt.Errorf("redislimit: held %s: %w", key, err)
	}
	return int(n), nil
}

// Refresh extends every lease this Limiter holds to a full lease from
// now, adding back any that expired. The background refresh calls it; a
// Limiter made with a negative Options.Refresh relies on its caller.
func (l *Limiter) Refresh(ctx context.Context) error {
	// Held across the calls, so that a Release either comes before the
	// snapshot (its member is not refreshed) or after the refresh (its
	// ZREM wins): a released lease is never added back.
	l.mu.Lock()
	defer l.mu.Unlock()
	expiry := ms(l.o.Now().Add(l.o.Lease))
	var errs []error
	for key, members := range l.held {
		args := append([]any{expiry, i64(l.setTTL().Milliseconds())}, toAny(members)...)
		c, cancel := l.ctx(ctx)
		err := refreshScript.Run(c, l.rdb, []string{l.redisKey(key, "conn")}, args...).Err()
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("redislimit: refresh %s: %w", key, err))
		}
	}
	return errors.Join(errs...)
}

func toAny(s []string) []any {
	a := make([]any, len(s))
	for i, v := range s {
		a[i] = v
	}
	return a
}

func (l *Limiter) refreshLoop() {
	defer close(l.done)
	t := time.NewTicker(l.o.Refresh)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			if err := l.Refresh(context.Background()); err != nil && l.o.OnRefreshError != nil {
				l.o.OnRefreshError(err)
			}
		}
	}
}

// Close stops the refresh and gives back every slot this Limiter holds.
// A slot Redis does not hear about comes back when its lease expires.
func (l *Limiter) Close(ctx context.Context) error {
	l.once.Do(func() { close(l.stop) })
	<-l.done
	l.mu.Lock()
	held := l.held
	l.held = map[string][]string{}
	l.mu.Unlock()
	var errs []error
	for key, members := range held {
		c, cancel := l.ctx(ctx)
		if err := l.rdb.ZRem(c, l.redisKey(key, "conn"), toAny(members)...).Err(); err != nil {
			errs = append(errs, fmt.Errorf("redislimit: close %s: %w", key, err))
		}
		cancel()
	}
	return errors.Join(errs...)
}
