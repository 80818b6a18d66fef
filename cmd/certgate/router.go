package main

import (
	"errors"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/certgate/certgate/api"
	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/console"
	"github.com/certgate/certgate/kit"
)

// newRouter assembles the HTTP surface of http.listen: metrics and health
// for operations, the API for the helpdesk and the issuer's systems,
// profiling for admins, and, when public is set (no http.gate_listen), the
// pages recipients open.
func newRouter(d *daemon, tokens *api.Tokens, public bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", d.metrics.Handler())
	mux.HandleFunc("GET /healthz", healthz)
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-d.ready:
			w.Write([]byte("ready\n"))
		default:
			http.Error(w, "starting\n", http.StatusServiceUnavailable)
		}
	})
	deps := api.Deps{Store: d.store, Desk: d.desk, Tokens: tokens, Log: d.log}
	if d.policy != nil && d.queue != nil {
		lc := laneControl{p: d.policy, q: d.queue, providers: namedProviders(d.cfg), log: d.log}
		if d.lanes != nil {
			lc.news = d.lanes.news
		}
		deps.Lanes = lc
	}
	if d.placements != nil {
		deps.Placement = api.Placement{Reader: d.placements, Tester: d.placementTester(), Seeds: d.cfg.Seeds.Mailboxes,
			MaxBytes: d.cfg.SMTP.MaxMessageBytes}
	}
	if d.kits != nil {
		deps.Kit = func(tenant, l, accept string) (any, bool) {
			k, err := d.kits.Kit(tenant, kit.Negotiate(l, accept))
			return k, err == nil
		}
	}
	if d.dns != nil {
		deps.DNS = d.dns
	}
	if d.relay != nil && d.compose != nil {
		deps.Send = d.sending()
	}
	api.New(deps).Register(mux)
	newConsole(d, deps).Register(mux)
	if public {
		registerPublic(mux, d)
	}
	// Profiling a live relay under load is how throughput problems are
	// found; it reveals internals, so it takes the admin scope.
	mux.Handle("GET /debug/pprof/", tokens.Require(config.ScopeAdmin, http.HandlerFunc(pprof.Index)))
	mux.Handle("GET /debug/pprof/profile", tokens.Require(config.ScopeAdmin, http.HandlerFunc(pprof.Profile)))
	mux.Handle("GET /debug/pprof/trace", tokens.Require(config.ScopeAdmin, http.HandlerFunc(pprof.Trace)))
	mux.Handle("GET /debug/pprof/symbol", tokens.Require(config.ScopeAdmin, http.HandlerFunc(pprof.Symbol)))
	return mux
}

// newConsole is the helpdesk console over what the API calls; it stays on
// http.listen, never on the public listener.
func newConsole(d *daemon, deps api.Deps) *console.Console {
	o := console.Options{Store: d.store, Desk: d.desk, Tokens: deps.Tokens, Lanes: deps.Lanes, Log: d.log}
	if d.placements != nil {
		o.Placements = d.placements
	}
	if cfg := d.cfg; cfg != nil {
		o.SecureCookie = strings.HasPrefix(cfg.HTTP.PublicURL, "https://")
		o.IdleTimeout, o.MaxAge, o.MaxSessions = cfg.Console.IdleTimeout.D(), cfg.Console.MaxAge.D(), cfg.Console.MaxSessions
	}
	o.SessionKey = d.consoleKey
	return console.New(o)
}

// newPublicRouter is http.gate_listen's surface: the public pages and a
// health check for the proxy in front, nothing an outsider should not see.
func newPublicRouter(d *daemon) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", healthz)
	registerPublic(mux, d)
	return mux
}

// registerPublic adds the pages recipients open from their mail: the
// download gate, where the token in the path is the credential; and the
// allowlisting kit, which shows only what receivers see anyway.
func registerPublic(mux *http.ServeMux, d *daemon) {
	d.gate.Register(mux)
	if d.kits != nil {
		mux.Handle("GET /kit/{tenant}", kit.PageHandler(d.kits.Kit, d.log))
	}
}

func healthz(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) }

// newHTTPServer serves h behind the client-address rule of
// http.trusted_proxies, with bounds on slow clients.
func newHTTPServer(cfg *config.Config, h http.Handler) *http.Server {
	return &http.Server{Handler: api.ClientAddress(cfg.HTTP.Proxies(), h), ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: time.Minute, WriteTimeout: time.Minute, IdleTimeout: 2 * time.Minute}
}

// serveHTTP serves srv on l until it is shut down.
func (d *daemon) serveHTTP(srv *http.Server, l net.Listener) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("http listener stopped", "addr", l.Addr(), "err", err)
		}
	}()
}
