package delivery

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/certgate/certgate/clock"
	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/membudget"
	"github.com/certgate/certgate/metrics"
	"github.com/certgate/certgate/policy"
	"github.com/certgate/certgate/sim"
	"github.com/certgate/certgate/store"
	"github.com/certgate/certgate/store/sqlite"
)

// qenv is a queue on loopback: SQLite, the queue and simulated receivers
// found through a static DNS table. Copies go straight into the store and
// the queue, as the gateway's relay hands them over.
type qenv struct {
	t        *testing.T
	clock    *clock.Fake // nil: the wall clock
	store    *sqlite.Store
	queue    *Queue
	policy   *policy.Policy
	metrics  *metrics.Metrics
	sims     map[string]*sim.Provider
	attempts chan store.Attempt // every attempt, once recorded
	stopped  bool
}

type qopts struct {
	sims        []sim.Options     // default: google (empresa.example, gmail.com) and issuer (ca.example)
	providers   []config.Provider // lanes; default unlimited ones per sim
	retry       config.Retry      // default: one step of a minute, max age an hour
	fakeClock   bool              // the queue, its lanes and router run on a fake clock
	sinkDown    bool              // the receivers' hosts point at a closed port
	freshBudget int64
	memory      *membudget.Budget
	wrapStore   func(Store) Store
	dbPath      string // reuse a database (restart tests)
}

var epoch = time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC)

func defaultSims() []sim.Options {
	return []sim.Options{
		// empresa.example is a Google Workspace domain, matched by its MX
		// to the unthrottled lane; gmail.com is the built-in gmail lane's.
		{Name: "google", Domains: []string{"empresa.example", "gmail.com"}, MXHost: "gmail-smtp-in.l.google.com"},
		{Name: "issuer", Domains: []string{"ca.example"}, MXHost: "mx.ca.example"},
	}
}

func newQEnv(t *testing.T, o qopts) *qenv {
	t.Helper()
	if o.sims == nil {
		o.sims = defaultSims()
	}
	if len(o.retry.Schedule) == 0 {
		o.retry = config.Retry{Schedule: []config.Duration{config.Duration(time.Minute)}, MaxAge: config.Duration(time.Hour)}
	}
	if o.dbPath == "" {
		o.dbPath = filepath.Join(t.TempDir(), "certgate.db")
	}
	e := &qenv{t: t, sims: map[string]*sim.Provider{}, attempts: make(chan store.Attempt, 10000), metrics: metrics.New()}
	sims, port, err := sim.StartGroup(o.sims)
	if err != nil {
		t.Fatal(err)
	}
	resolver := StaticResolver{MX: map[string][]string{}, Hosts: map[string][]string{}}
	for i, s := range sims {
		t.Cleanup(func() { s.Close() })
		e.sims[s.Name()] = s
		ip, _, _ := net.SplitHostPort(s.Addr())
		for _, d := range o.sims[i].Domains {
			resolver.MX[d] = []string{s.MXHost()}
		}
		resolver.Hosts[s.MXHost()] = []string{ip}
		if o.providers == nil {
			// Unthrottled lanes: shaping is policy's test; these are about outcomes.
			o.providers = append(o.providers, config.Provider{Name: s.Name(), MXSuffixes: []string{s.MXHost()}})
		}
	}
	if o.sinkDown {
		l, _ := net.Listen("tcp", "127.0.0.1:0")
		port = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	var clk clock.Clock = clock.Real
	if o.fakeClock {
		e.clock = clock.NewFake(epoch)
		clk = e.clock
	}
	pol := policy.New(config.ResolveProviders(o.providers), o.retry, policy.Options{Clock: clk})
	e.policy = pol
	if e.store, err = sqlite.Open(context.Background(), o.dbPath, sqlite.Options{}); err != nil {
		t.Fatal(err)
	}
	var st Store = e.store
	if o.wrapStore != nil {
		st = o.wrapStore(st)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	e.queue = NewQueue(Options{Store: st, Policy: pol, Router: NewRouter(mxEverywhere, port, resolver, clk),
		Dialer: &Dialer{Hostname: "relay.ca.example", Resolver: resolver, Clock: clk,
			ConnectTimeout: 5 * time.Second, CommandTimeout: 10 * time.Second, DataTimeout: 10 * time.Second},
		Hostname: "relay.ca.example", Metrics: e.metrics, Log: log, Clock: clk, FreshBudget: o.freshBudget, Memory: o.memory,
		Recorded: func(a store.Attempt) { e.attempts <- a }})
	if err := e.queue.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.stop)
	return e
}

// stop stops the queue and closes the store, as the daemon does; safe to
// call twice.
func (e *qenv) stop() {
	if e.stopped {
		return
	}
	e.stopped = true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e.queue.Stop(ctx)
	e.store.Close()
}

// now is the queue's time.
func (e *qenv) now() time.Time {
	if e.clock != nil {
		return e.clock.Now()
	}
	return time.Now()
}

// enqueue spools a message of tenant issuer from the sender to rcpts and
// hands its copies to the queue, as the relay does; it returns the
// message id.
func (e *qenv) enqueue(from string, rcpts []string, class config.Class, data []byte) string {
	e.t.Helper()
	return e.enqueueAs("issuer", from, rcpts, class, data)
}

// enqueueAs is enqueue for another tenant.
func (e *qenv) enqueueAs(tenant, from string, rcpts []string, class config.Class, data []byte) string {
	e.t.Helper()
	now := e.now()
	m := store.Message{ID: store.NewMessageID(now), Tenant: tenant, MailFrom: from, HeaderFrom: from,
		MessageID: "test@ca.example", Class: string(class), Size: int64(len(data)), ReceivedAt: now}
	var nr []store.NewRecipient
	for _, r := range rcpts {
		nr = append(nr, store.NewCopy(r, store.StateQueued, now))
	}
	contents := [][]byte{data}
	ids, err := e.store.Enqueue(context.Background(), m, contents, nr)
	if err != nil {
		e.t.Fatal(err)
	}
	e.queue.AddAccepted(store.QueuedCopies(m, contents, nr, ids))
	return m.ID
}

// waitAttempts returns the next n attempts the queue records.
func (e *qenv) waitAttempts(n int) []store.Attempt {
	e.t.Helper()
	var out []store.Attempt
	timeout := time.After(20 * time.Second)
	for len(out) < n {
		select {
		case a := <-e.attempts:
			out = append(out, a)
		case <-timeout:
			e.t.Fatalf("%d attempts recorded, waited for %d", len(out), n)
		}
	}
	return out
}

// waitLen waits until the queue holds at most n recipients.
func (e *qenv) waitLen(n int) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.queue.WaitLen(ctx, n); err != nil {
		e.t.Fatalf("the queue still holds %d recipients, waited for %d", e.queue.Len(), n)
	}
}

// advance moves the fake clock by d once the queue waits on as many
// timers as it should (its scheduler's and, when want > 1, others).
func (e *qenv) advance(d time.Duration, want int) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.clock.WaitTimers(ctx, want); err != nil {
		e.t.Fatalf("the queue never waited on %d timers (%d): %v", want, e.clock.Timers(), err)
	}
	e.clock.Advance(d)
}

// sample is one of the shared sample certificate mails.
func sample(t *testing.T, name string) []byte {
	t.Helper()
	b, err := sim.SampleMail(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// view is the store's view of a message.
func (e *qenv) view(id string) *store.MessageView {
	e.t.Helper()
	v, err := e.store.Message(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return v
}
