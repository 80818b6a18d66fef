package gateway

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/delivery"
	"github.com/certgate/certgate/gateway/signer"
	"github.com/certgate/certgate/membudget"
	"github.com/certgate/certgate/metrics"
	"github.com/certgate/certgate/policy"
	"github.com/certgate/certgate/quarantine"
	"github.com/certgate/certgate/sim"
	"github.com/certgate/certgate/store"
	"github.com/certgate/certgate/store/sqlite"
)

const testPassword = "correct horse battery staple"

// testEnv is a whole relay on loopback: submission server, SQLite store,
// queue and delivery to simulated providers.
type testEnv struct {
	t        *testing.T
	dir      string
	addr     string // submission address
	relay    *Relay
	queue    *delivery.Queue
	server   *Server
	store    *sqlite.Store
	metrics  *metrics.Metrics
	sims     map[string]*sim.Provider
	txt      map[string][]string
	tlsConf  *tls.Config // client side: trusts the server's certificate
	attempts *attemptLog // every attempt the queue recorded
	stopOnce bool
}

type envOptions struct {
	trusted      []string          // tenant trusted networks
	providers    []config.Provider // policy overrides
	retry        config.Retry
	maxRcpts     int
	maxBytes     int64
	perIP        int
	respond      func(from, rcpt string) *smtp.SMTPError // scripted receiver replies (mailbox provider "inbox")
	dir          string                                  // reuse a data dir (restart tests)
	keys         []*signer.Key                           // reuse keys (restart tests)
	sinkDown     bool                                    // route recipient mail to a closed port
	links        config.Links
	defaultClass string
	freshBudget  int64                         // queue's in-memory budget for fresh copies; 0: the default
	queueStore   func(store.Store) store.Store // wraps the store the queue sees
	tenants      []config.Tenant               // more tenants, after "issuer"
	issuer       func(*config.Tenant)          // changes tenant issuer
	memoryBudget int64                         // smtp.memory_budget; 0: none
	extraKeys    []*signer.Key                 // more DKIM keys, after the default ones
	seeds        []config.SeedMailbox          // seeds.mailboxes
}

func newEnv(t *testing.T, o envOptions) *testEnv {
	t.Helper()
	e := &testEnv{t: t, dir: o.dir, sims: map[string]*sim.Provider{}, txt: map[string][]string{}}
	if e.dir == "" {
		e.dir = t.TempDir()
	}
	keys := o.keys
	if keys == nil {
		for _, d := range []string{"ca.example", "certs.example", "ac.example"} {
			k, _, err := signer.Generate("rsa2048", d, "s2026")
			if err != nil {
				t.Fatal(err)
			}
			keys = append(keys, k)
		}
		k, _, err := signer.Generate("ed25519", "ca.example", "e2026")
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	keys = append(keys, o.extraKeys...)
	for _, k := range keys {
		name, value := k.DNSRecord()
		e.txt[strings.TrimSuffix(name, ".")] = []string{value}
	}
	lookupTXT := func(domain string) ([]string, error) {
		if v, ok := e.txt[strings.TrimSuffix(domain, ".")]; ok {
			return v, nil
		}
		return nil, &net.DNSError{Err: "no such host", Name: domain, IsNotFound: true}
	}
	respond := o.respond
	sims, port, err := sim.StartGroup([]sim.Options{
		{Name: "google", Domains: []string{"gmail.com", "empresa.example"}, MXHost: "gmail-smtp-in.l.google.com", LookupTXT: lookupTXT,
			Respond: func(from, rcpt string) *smtp.SMTPError {
				if respond != nil {
					return respond(from, rcpt)
				}
				return nil
			}},
		{Name: "issuer", Domains: []string{"ca.example", "certs.example", "ac.example"}, MXHost: "mx.ca.example", LookupTXT: lookupTXT},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sims {
		e.sims[s.Name()] = s
	}
	t.Cleanup(func() {
		for _, s := range sims {
			s.Close()
		}
	})
	mxPort := port
	if o.sinkDown {
		l, _ := net.Listen("tcp", "127.0.0.11:0")
		mxPort = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	resolver := delivery.StaticResolver{
		MX: map[string][]string{"gmail.com": {"gmail-smtp-in.l.google.com"}, "empresa.example": {"aspmx.l.google.com"},
			"ca.example": {"mx.ca.example"}, "certs.example": {"mx.ca.example"}, "ac.example": {"mx.ca.example"}},
		Hosts: map[string][]string{"gmail-smtp-in.l.google.com": {sims[0].Addr()[:strings.LastIndexByte(sims[0].Addr(), ':')]},
			"aspmx.l.google.com": {sims[0].Addr()[:strings.LastIndexByte(sims[0].Addr(), ':')]},
			"mx.ca.example":      {sims[1].Addr()[:strings.LastIndexByte(sims[1].Addr(), ':')]}},
	}
	if o.sinkDown {
		resolver.Hosts["gmail-smtp-in.l.google.com"] = []string{"127.0.0.11"}
		resolver.Hosts["aspmx.l.google.com"] = []string{"127.0.0.11"}
	}

	retry := o.retry
	if len(retry.Schedule) == 0 {
		retry = config.Retry{Schedule: []config.Duration{config.Duration(50 * time.Millisecond)}, MaxAge: config.Duration(time.Hour)}
	}
	hash, _ := bcrypt.GenerateFromPassword([]byte(testPassword), bcrypt.MinCost)
	serverTLS, clientTLS := sim.TLSPair("relay.ca.example")
	e.tlsConf = clientTLS
	cfg := ServerConfig{Hostname: "relay.ca.example", TLS: serverTLS, MaxMessageBytes: 1 << 20, MaxRecipients: 50,
		MaxConnections: 100, MaxConnectionsPerIP: 50, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second,
		AuthFailureDelay: time.Millisecond}
	if o.maxRcpts > 0 {
		cfg.MaxRecipients = o.maxRcpts
	}
	if o.maxBytes > 0 {
		cfg.MaxMessageBytes = o.maxBytes
	}
	if o.perIP > 0 {
		cfg.MaxConnectionsPerIP = o.perIP
	}
	if o.memoryBudget > 0 {
		cfg.Memory = membudget.New(o.memoryBudget)
	}
	e.attempts = newAttemptLog()
	issuer := config.Tenant{Name: "issuer", FromDomains: []string{"ca.example", "certs.example", "ac.example", "nokey.example"},
		Users: []config.User{{Username: "app", PasswordHash: string(hash)}}, TrustedNetworks: o.trusted,
		DefaultClass: config.Class(o.defaultClass), Links: o.links}
	if o.issuer != nil {
		o.issuer(&issuer)
	}
	parts := buildRelay(t, relaySpec{
		dbPath: filepath.Join(e.dir, "certgate.db"), resolver: resolver, mxPort: mxPort,
		providers: o.providers, retry: retry, timeout: 10 * time.Second,
		tenants: append([]config.Tenant{issuer}, o.tenants...),
		keys:    keys, server: cfg, freshBudget: o.freshBudget, queueStore: o.queueStore,
		recorded: e.attempts.add, seeds: o.seeds,
		log: testLog(""),
	})
	e.store, e.metrics, e.queue, e.relay, e.server = parts.store, parts.metrics, parts.queue, parts.relay, parts.server
	e.addr = startRelay(t, e.queue, e.server)
	t.Cleanup(e.stop)
	return e
}

// relaySpec is what the whole test relays differ in.
type relaySpec struct {
	dbPath      string
	resolver    delivery.StaticResolver
	mxPort      int
	providers   []config.Provider
	retry       config.Retry
	timeout     time.Duration // connect, command and data timeouts of delivery
	tenants     []config.Tenant
	keys        []*signer.Key
	server      ServerConfig
	freshBudget int64
	queueStore  func(store.Store) store.Store
	recorded    func(store.Attempt)
	seeds       []config.SeedMailbox
	log         *slog.Logger
}

// relayParts is a whole relay: submission server, store, queue.
type relayParts struct {
	store   *sqlite.Store
	metrics *metrics.Metrics
	queue   *delivery.Queue
	relay   *Relay
	server  *Server
}

// buildRelay wires a relay the way the daemon does, on a fresh or reused
// SQLite file; nothing runs yet (startRelay starts it).
func buildRelay(t *testing.T, s relaySpec) relayParts {
	t.Helper()
	st, err := sqlite.Open(context.Background(), s.dbPath, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range s.tenants {
		if s.tenants[i].DefaultClass == "" {
			s.tenants[i].DefaultClass = config.ClassBulk
		}
	}
	pol := policy.New(config.ResolveProviders(s.providers), s.retry, policy.Options{})
	p := relayParts{store: st, metrics: metrics.New()}
	qst := quarantine.EnableOnDelivery(st, s.tenants)
	if s.queueStore != nil {
		qst = s.queueStore(qst)
	}
	prep := NewPreparer(s.server.Hostname, signer.New(s.keys), p.metrics)
	prep.SetSeeds(NewSeeds(s.seeds))
	p.queue = delivery.NewQueue(delivery.Options{Store: qst, Policy: pol,
		Router: delivery.NewRouter([]delivery.Route{{Domains: []string{"*"}, MX: true, TLS: config.TLSOpportunistic}}, s.mxPort, s.resolver, nil),
		Dialer: &delivery.Dialer{Hostname: s.server.Hostname, Resolver: s.resolver,
			ConnectTimeout: min(s.timeout, 5*time.Second), CommandTimeout: s.timeout, DataTimeout: s.timeout},
		Hostname: s.server.Hostname, Sealer: prep, Metrics: p.metrics, Log: s.log,
		FreshBudget: s.freshBudget, Recorded: s.recorded})
	dir, err := NewDirectory(s.tenants, "https://gate.ca.example")
	if err != nil {
		t.Fatal(err)
	}
	p.relay = NewRelay(prep, st, p.queue, p.metrics, s.log)
	s.server.Queued = p.queue.Queued
	p.server = NewServer(s.server, dir, p.relay, p.metrics, s.log)
	return p
}

// testLog discards logs, unless -v (and, when env is set, that variable
// too) asks for them.
func testLog(env string) *slog.Logger {
	if testing.Verbose() && (env == "" || os.Getenv(env) != "") {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startRelay starts the queue, then the submission server on a loopback
// port, and returns that port's address.
func startRelay(t *testing.T, q *delivery.Queue, s *Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	go s.Serve(l)
	return l.Addr().String()
}

// stop shuts the relay down as the daemon does; safe to call twice.
func (e *testEnv) stop() {
	if e.stopOnce {
		return
	}
	e.stopOnce = true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e.server.Shutdown(ctx)
	e.queue.Stop(ctx)
	e.store.Close()
}

// sample reads one of the shared sample certificate mails.
func sample(t *testing.T, name string) []byte {
	t.Helper()
	b, err := sim.SampleMail(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// attemptLog keeps every attempt the queue recorded, so that a test waits
// for the one it needs rather than poll the store.
type attemptLog struct {
	mu      sync.Mutex
	all     []store.Attempt
	changed chan struct{}
}

func newAttemptLog() *attemptLog { return &attemptLog{changed: make(chan struct{})} }

func (l *attemptLog) add(a store.Attempt) {
	l.mu.Lock()
	l.all = append(l.all, a)
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

// wait returns the attempts recorded so far once cond holds of them, or
// fails the test after d.
func (l *attemptLog) wait(t *testing.T, what string, d time.Duration, cond func([]store.Attempt) bool) []store.Attempt {
	t.Helper()
	timeout := time.After(d)
	for {
		l.mu.Lock()
		all, changed := slices.Clone(l.all), l.changed
		l.mu.Unlock()
		if cond(all) {
			return all
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("timed out waiting for %s (%d attempts recorded)", what, len(all))
		}
	}
}

// waitFinal waits until every recipient of message id has a final
// outcome recorded (delivered or bounced), and returns how many did.
func (l *attemptLog) waitFinal(t *testing.T, id string, rcpts int) {
	t.Helper()
	l.wait(t, "message "+id+" delivered or bounced", 10*time.Second, func(all []store.Attempt) bool {
		n := 0
		for _, a := range all {
			if a.MessageID == id && (a.State == store.StateDelivered || a.State == store.StateBounced) {
				n++
			}
		}
		return n >= rcpts
	})
}

// waitDrained waits until the queue holds nothing.
func waitDrained(t *testing.T, q *delivery.Queue) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := q.WaitLen(ctx, 0); err != nil {
		t.Fatalf("the queue still holds %d recipients", q.Len())
	}
}
