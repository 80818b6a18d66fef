package main

import (
	"net/http"
	"net/http/pprof"

	"github.com/certgate/certgate/api"
	"github.com/certgate/certgate/config"
)

// newRouter assembles the HTTP surface: metrics and health for operations,
// the API for the helpdesk and the issuer's systems, the download gate for
// recipients, profiling for admins.
func newRouter(d *daemon, tokens *api.Tokens) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", d.metrics.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-d.ready:
			w.Write([]byte("ready\n"))
		default:
			http.Error(w, "starting\n", http.StatusServiceUnavailable)
		}
	})
	api.New(api.Deps{Store: d.store, Desk: d.desk, Tokens: tokens, Log: d.log}).Register(mux)
	// The download gate is public: the token in the path is the credential.
	d.gate.Register(mux)
	// Profiling a live relay under load is how throughput problems are
	// found; it reveals internals, so it takes the admin scope.
	mux.Handle("GET /debug/pprof/", tokens.Require(config.ScopeAdmin, http.HandlerFunc(pprof.Index)))
	mux.Handle("GET /debug/pprof/profile", tokens.Require(config.ScopeAdmin, http.HandlerFunc(pprof.Profile)))
	mux.Handle("GET /debug/pprof/trace", tokens.Require(config.ScopeAdmin, http.HandlerFunc(pprof.Trace)))
	mux.Handle("GET /debug/pprof/symbol", tokens.Require(config.ScopeAdmin, http.HandlerFunc(pprof.Symbol)))
	return mux
}
