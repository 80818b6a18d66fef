package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/certgate/certgate/api"
	"github.com/certgate/certgate/compose"
	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/delivery"
	"github.com/certgate/certgate/dnscheck"
	"github.com/certgate/certgate/gateway"
	"github.com/certgate/certgate/gateway/signer"
	"github.com/certgate/certgate/kit"
	"github.com/certgate/certgate/membudget"
	"github.com/certgate/certgate/metrics"
	"github.com/certgate/certgate/placement"
	"github.com/certgate/certgate/policy"
	"github.com/certgate/certgate/quarantine"
	"github.com/certgate/certgate/store"
	"github.com/certgate/certgate/webhook"
)

// daemon is one running certgate: store, queue, SMTP and HTTP.
type daemon struct {
	cfg     *config.Config
	log     *slog.Logger
	metrics *metrics.Metrics
	store   store.Store
	queue   *delivery.Queue
	policy  *policy.Policy
	lanes   *laneKeeper // nil with a store that keeps no lane states
	prep    *gateway.Preparer
	gate    *quarantine.Gate
	desk    *quarantine.Desk
	hooks   *webhook.Dispatcher // a node alone's; a cluster's job makes its own
	// webhookEndpoints are the configured endpoints, for the dispatchers.
	webhookEndpoints []webhook.Endpoint
	sweeper          *store.Sweeper
	smtp             *gateway.Server
	http             *http.Server
	gateWeb          *http.Server // http.gate_listen's; nil without it
	dir              *gateway.Directory
	relay            *gateway.Relay
	kits             *kit.Directory // the allowlisting kits, from cfg and the keys in force
	compose          *compose.Templates
	// consoleKey seals console sessions in their cookies
	// (console.session_key_file); nil keeps them in memory.
	consoleKey []byte

	dns     *dnscheck.Monitor // nil without a resolver
	stopDNS func()

	cluster *clusterNode // nil when the node is alone

	placements  store.Placements   // nil without seed mailboxes
	watcher     *placement.Watcher // likewise
	stopWatcher context.CancelFunc

	smtpAddrs []net.Addr
	httpAddr  net.Addr
	gateAddr  net.Addr // http.gate_listen's; nil without it
	wg        sync.WaitGroup
	ready     chan struct{}
	stopOnce  sync.Once // shutdown runs once, however often it is called
}

type daemonOptions struct {
	// Resolver replaces DNS (and any static_dns table) when set.
	Resolver delivery.Resolver
}

// newDaemon builds every part from a validated configuration; nothing
// listens yet.
func newDaemon(ctx context.Context, cfg *config.Config, log *slog.Logger, opts daemonOptions) (_ *daemon, err error) {
	d := &daemon{cfg: cfg, log: log, metrics: metrics.New(), ready: make(chan struct{}), kits: kit.NewDirectory(cfg)}
	if d.store, err = openStore(ctx, cfg); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			d.store.Close()
		}
	}()
	limiter, err := d.buildClusterLimits()
	if err != nil {
		return nil, err
	}
	if err := d.buildMailPath(opts.Resolver, limiter); err != nil {
		return nil, err
	}
	if err := d.buildSeeds(); err != nil {
		return nil, err
	}
	if ls, ok := d.store.(store.LaneStates); ok {
		d.lanes = newLaneKeeper(d.policy, ls, log)
	}
	if err := d.buildMember(); err != nil {
		return nil, err
	}
	d.buildDNSCheck()
	if err := d.buildHTTP(); err != nil {
		return nil, err
	}
	return d, nil
}

// buildMailPath wires submission to delivery: the preparer that signs, the
// queue that delivers, the relay between them, and the SMTP server in
// front. resolver, when set, replaces DNS; limiter, when set, holds the
// limits lanes share with other nodes.
func (d *daemon) buildMailPath(resolver delivery.Resolver, limiter policy.Limiter) error {
	cfg := d.cfg
	keys, err := loadKeys(cfg, d.log)
	if err != nil {
		return err
	}
	if resolver == nil {
		resolver = configuredResolver(cfg.Delivery)
	}
	routes, err := deliveryRoutes(cfg.Delivery)
	if err != nil {
		return err
	}
	d.prep = gateway.NewPreparer(cfg.Hostname, signer.New(keys), d.metrics)
	d.policy = policy.New(config.ResolveProviders(cfg.Providers), cfg.Delivery.Retry, policy.Options{Rules: cfg.Rules, TenantWarmups: tenantWarmups(cfg), Limiter: limiter})
	d.metrics.Registry.MustRegister(laneCollector{d.policy})
	// One budget for the mail held in memory: what submissions read and
	// prepare, and what deliveries read back from the store.
	memory := membudget.New(cfg.SMTP.MailBudget())
	d.queue = delivery.NewQueue(delivery.Options{
		// Links turn on with the delivery record, as their tenant says.
		Store:  quarantine.EnableOnDelivery(d.store, cfg.Tenants),
		Policy: d.policy,
		Router: delivery.NewRouter(routes, cfg.Delivery.MXPort, resolver, nil),
		Dialer: &delivery.Dialer{Hostname: cfg.Hostname, Resolver: resolver,
			ConnectTimeout: cfg.Delivery.ConnectTimeout.D(), CommandTimeout: cfg.Delivery.CommandTimeout.D(),
			DataTimeout: cfg.Delivery.DataTimeout.D()},
		Hostname: cfg.Hostname,
		Sealer:   d.prep,
		Memory:   memory,
		Metrics:  d.metrics,
		Log:      d.log,
	})
	d.metrics.Registry.MustRegister(queueAge{d.queue})
	dir, err := gateway.NewDirectory(cfg.Tenants, cfg.HTTP.PublicURL)
	if err != nil {
		return err
	}
	d.dir = dir
	d.relay = gateway.NewRelay(d.prep, d.store, d.queue, d.metrics, d.log)
	d.relay.SetLimits(memory, d.queue.Queued)
	tlsConf, err := smtpTLS(cfg.SMTP.TLS)
	if err != nil {
		return err
	}
	d.smtp = gateway.NewServer(gateway.ServerConfig{
		Hostname: cfg.Hostname, TLS: tlsConf, MaxMessageBytes: cfg.SMTP.MaxMessageBytes, MaxRecipients: cfg.SMTP.MaxRecipients,
		MaxConnections: cfg.SMTP.MaxConnections, MaxConnectionsPerIP: cfg.SMTP.MaxConnectionsPerIP,
		MaxConnectionsPerNetwork: cfg.SMTP.MaxConnectionsPerNetwork, TrustedReserve: cfg.SMTP.TrustedReserve,
		ReadTimeout: cfg.SMTP.ReadTimeout.D(), WriteTimeout: cfg.SMTP.WriteTimeout.D(),
		PreAuthTimeout: cfg.SMTP.PreAuthTimeout.D(), MaxSessionWithoutMail: cfg.SMTP.MaxSessionWithoutMail.D(),
		AuthFailureDelay: cfg.SMTP.AuthFailureDelay.D(), AuthFailureLimit: cfg.SMTP.AuthFailureLimit,
		AuthFailureWindow: cfg.SMTP.AuthFailureWindow.D(), AuthConcurrency: cfg.SMTP.AuthConcurrency,
		Queued: d.queue.Queued, Memory: memory,
	}, dir, d.relay, d.metrics, d.log)
	return nil
}

// configuredResolver is delivery.static_dns when set, else the system's DNS.
func configuredResolver(cfg config.Delivery) delivery.Resolver {
	if cfg.StaticDNS != nil {
		return delivery.StaticResolver{MX: cfg.StaticDNS.MX, Hosts: cfg.StaticDNS.Hosts}
	}
	return net.DefaultResolver
}

// smtpTLS loads the submission listener's certificate; nil without one.
func smtpTLS(c config.TLS) (*tls.Config, error) {
	if c.CertFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("smtp.tls: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// buildHTTP wires the HTTP side: the gate, the helpdesk's desk and API,
// the webhooks, metrics and health.
func (d *daemon) buildHTTP() error {
	cfg := d.cfg
	tokens, err := api.LoadTokens(cfg.API.Tokens)
	if err != nil {
		return err
	}
	if d.compose, err = loadTemplates(cfg); err != nil {
		return err
	}
	gopts := gateOptions(cfg)
	if f := cfg.Gate.FormKeyFile; f != "" {
		key, err := config.ReadSecret(f, "")
		if err != nil {
			return fmt.Errorf("gate.form_key_file: %w", err)
		}
		gopts.Key = []byte(key)
	}
	d.gate = quarantine.NewGate(d.store, gopts, d.metrics, d.log)
	if f := cfg.Console.SessionKeyFile; f != "" {
		key, err := config.ReadSecret(f, "")
		if err != nil {
			return fmt.Errorf("console.session_key_file: %w", err)
		}
		d.consoleKey = []byte(key)
	}
	d.desk = quarantine.NewDesk(d.store, d.queue, d.metrics)
	if d.webhookEndpoints, err = webhook.Endpoints(cfg.Webhooks); err != nil {
		return err
	}
	d.hooks = webhook.New(d.store, d.webhookEndpoints, webhook.Options{}, d.log)
	d.sweeper = d.newSweeper()
	d.http = newHTTPServer(cfg, newRouter(d, tokens, cfg.HTTP.GateListen == ""))
	if cfg.HTTP.GateListen != "" {
		d.gateWeb = newHTTPServer(cfg, newPublicRouter(d))
	}
	return nil
}

// newSweeper deletes what retention lets go, every sweep_interval.
func (d *daemon) newSweeper() *store.Sweeper {
	r := d.cfg.Retention
	return store.NewSweeper(d.store, store.Retention{Events: r.Events.D(), Messages: r.DeliveredMessages.D()},
		store.SweepOptions{Every: r.SweepInterval.D(), Log: d.log})
}

// start opens the listeners (so that a port in use fails at once), loads
// the queue and serves.
func (d *daemon) start(ctx context.Context) error {
	var ls []net.Listener
	for _, addr := range d.cfg.SMTP.Listen {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			closeAll(ls)
			return fmt.Errorf("smtp.listen %s: %w", addr, err)
		}
		ls = append(ls, l)
		d.smtpAddrs = append(d.smtpAddrs, l.Addr())
	}
	hl, err := net.Listen("tcp", d.cfg.HTTP.Listen)
	if err != nil {
		closeAll(ls)
		return fmt.Errorf("http.listen %s: %w", d.cfg.HTTP.Listen, err)
	}
	d.httpAddr = hl.Addr()
	web := []net.Listener{hl}
	var gl net.Listener
	if d.gateWeb != nil {
		if gl, err = net.Listen("tcp", d.cfg.HTTP.GateListen); err != nil {
			closeAll(append(ls, hl))
			return fmt.Errorf("http.gate_listen %s: %w", d.cfg.HTTP.GateListen, err)
		}
		d.gateAddr = gl.Addr()
		web = append(web, gl)
	}
	if err := d.desk.CountHeld(ctx); err != nil {
		closeAll(append(ls, web...))
		return err
	}
	// Lanes resume what they were before the first delivery.
	if d.lanes != nil {
		if err := d.lanes.load(ctx); err != nil {
			closeAll(append(ls, web...))
			return fmt.Errorf("loading lane states: %w", err)
		}
	}
	// A node of a cluster beats once before it loads the work it holds.
	if err := d.join(ctx); err != nil {
		closeAll(append(ls, web...))
		return err
	}
	if err := d.queue.Start(ctx); err != nil {
		closeAll(append(ls, web...))
		return err
	}
	if err := d.startClusterJobs(ctx); err != nil {
		d.queue.Stop(ctx)
		closeAll(append(ls, web...))
		return err
	}
	for _, l := range ls {
		d.wg.Add(1)
		go func(l net.Listener) {
			defer d.wg.Done()
			if err := d.smtp.Serve(l); err != nil {
				d.log.Error("smtp listener stopped", "addr", l.Addr(), "err", err)
			}
		}(l)
	}
	d.serveHTTP(d.http, hl)
	attrs := []any{"smtp", d.smtpAddrs, "http", d.httpAddr, "hostname", d.cfg.Hostname}
	if gl != nil {
		d.serveHTTP(d.gateWeb, gl)
		attrs = append(attrs, "gate", d.gateAddr)
	}
	d.startDNSCheck()
	if d.lanes != nil {
		d.lanes.start()
	}
	close(d.ready)
	d.log.Info("certgate started", attrs...)
	return nil
}

// shutdown stops intake and deliveries together, each with its own share of
// the time: SMTP sessions get a third of it (then are closed), deliveries in
// flight the rest, and only then is the store closed, so that every
// delivery made is also recorded. Whatever is cut short is retried at the
// next start.
func (d *daemon) shutdown(ctx context.Context) { d.stopOnce.Do(func() { d.stop(ctx) }) }

// stop is shutdown's work, done once.
func (d *daemon) stop(ctx context.Context) {
	d.log.Info("certgate shutting down")
	if d.stopWatcher != nil {
		d.stopWatcher()
	}
	d.stopDNSCheck()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(30 * time.Second)
	}
	smtpCtx, cancel := context.WithTimeout(ctx, time.Until(deadline)/3)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		if err := d.smtp.Shutdown(smtpCtx); err != nil {
			d.log.Warn("smtp sessions still open at the deadline were closed", "err", err)
		}
	}()
	queueStopped := true
	go func() {
		defer wg.Done()
		if err := d.queue.Stop(ctx); err != nil {
			queueStopped = false
			d.log.Error("deliveries still in flight at the deadline; they will be retried, and may be delivered twice", "err", err)
		}
	}()
	go func() {
		defer wg.Done()
		if d.cluster != nil {
			d.cluster.member.StopJobs() // the webhooks' job stops its dispatcher
			return
		}
		if err := d.hooks.Stop(ctx); err != nil {
			d.log.Warn("webhook notices still in flight at the deadline; they will be sent again", "err", err)
		}
	}()
	wg.Wait()
	for _, srv := range []*http.Server{d.http, d.gateWeb} {
		if srv != nil && srv.Shutdown(ctx) != nil {
			srv.Close()
		}
	}
	d.wg.Wait()
	d.sweeper.Stop()
	if d.lanes != nil {
		d.lanes.shutdown(ctx)
	}
	if !queueStopped {
		// Give the stragglers' attempt records a last moment to land.
		time.Sleep(time.Second)
	}
	d.leaveCluster(ctx, queueStopped)
	if err := d.store.Close(); err != nil {
		d.log.Error("store close", "err", err)
	}
	d.log.Info("certgate stopped")
}

// gateOptions tells the gate about each tenant and about scanners.
func gateOptions(cfg *config.Config) quarantine.GateOptions {
	o := quarantine.GateOptions{Tenants: map[string]quarantine.TenantPage{}, ScannerAgents: cfg.Gate.ScannerUserAgents,
		MinHumanDelay: cfg.Gate.MinHumanDelay.D(), ScannerNets: cfg.Gate.Networks()}
	for _, t := range cfg.Tenants {
		o.Tenants[t.Name] = quarantine.TenantPage{DisplayName: t.DisplayName, SupportEmail: t.Support.Email,
			SupportPhone: t.Support.Phone, SupportURL: t.Support.URL}
	}
	return o
}

// loadKeys parses every DKIM key once, so signing never touches the files,
// and hands RSA keys to OpenSSL as dkim_engine says.
func loadKeys(cfg *config.Config, log *slog.Logger) ([]*signer.Key, error) {
	var keys []*signer.Key
	for _, k := range cfg.DKIM {
		key, err := signer.LoadKey(k.Domain, k.Selector, k.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("dkim key %s/%s: %w", k.Domain, k.Selector, err)
		}
		if cfg.DKIMEngine != config.DKIMEngineGo {
			if err := key.UseOpenSSL(); err != nil {
				if cfg.DKIMEngine == config.DKIMEngineOpenSSL {
					return nil, fmt.Errorf("dkim key %s/%s: dkim_engine openssl: %w", k.Domain, k.Selector, err)
				}
				log.Warn("dkim: signing RSA with Go", "key", key.String(), "reason", err)
			}
		}
		log.Info("dkim key loaded", "key", key.String(), "engine", key.Engine)
		keys = append(keys, key)
	}
	return keys, nil
}

// reloadKeys re-reads the configuration file and swaps the DKIM keys, the
// part of the configuration operators rotate while mail flows. A file with
// problems changes nothing.
func (d *daemon) reloadKeys(path string) error {
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	logWarnings(d.log, cfg)
	keys, err := loadKeys(cfg, d.log)
	if err != nil {
		return err
	}
	d.prep.SetSigner(signer.New(keys))
	// The kits state the selectors now signing; the rest of the
	// configuration is not reloaded.
	kitCfg := *d.cfg
	kitCfg.DKIM = cfg.DKIM
	d.kits.Set(&kitCfg)
	d.log.Info("dkim keys reloaded", "keys", len(keys))
	return nil
}

func closeAll(ls []net.Listener) {
	for _, l := range ls {
		l.Close()
	}
}
