package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"slices"
	"strings"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/quarantine"
)

// apiToken is a bearer token as certgate keeps it: only its SHA-256. Tokens
// are long random strings, so a fast hash is enough; what matters is that
// the configured secret is not kept and the comparison is constant time.
type apiToken struct {
	hash [32]byte
	cfg  config.APIToken
}

func loadTokens(cfg []config.APIToken) ([]apiToken, error) {
	var out []apiToken
	for _, t := range cfg {
		secret, err := t.Token()
		if err != nil {
			return nil, fmt.Errorf("api token %s: %w", t.Name, err)
		}
		if len(secret) < 16 {
			return nil, fmt.Errorf("api token %s: shorter than 16 characters", t.Name)
		}
		out = append(out, apiToken{hash: sha256.Sum256([]byte(secret)), cfg: t})
	}
	return out, nil
}

// authenticate finds the token presented in the Authorization header. Every
// configured token is compared, so the time taken does not depend on which
// one matched.
func authenticate(tokens []apiToken, r *http.Request) *apiToken {
	auth := r.Header.Get("Authorization")
	secret, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok || secret == "" {
		return nil
	}
	sum := sha256.Sum256([]byte(secret))
	var found *apiToken
	for i := range tokens {
		if subtle.ConstantTimeCompare(sum[:], tokens[i].hash[:]) == 1 {
			found = &tokens[i]
		}
	}
	return found
}

type tokenKey struct{}

// caller returns the name of the token that authenticated r and the scope
// it used (admin when it holds no narrower one).
func caller(r *http.Request) (name string, scope config.Scope) {
	if c, ok := r.Context().Value(tokenKey{}).(callerInfo); ok {
		return c.name, c.scope
	}
	return "", ""
}

type callerInfo struct {
	name  string
	scope config.Scope
}

// requireScope guards an API handler: 401 without a valid token, 403 when
// the token lacks the scope (admin holds every scope).
func requireScope(tokens []apiToken, scope config.Scope, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t := authenticate(tokens, r)
		if t == nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="certgate"`)
			quarantine.WriteError(w, http.StatusUnauthorized, "unauthorized", "a valid bearer token is required")
			return
		}
		if !t.cfg.HasScope(scope) {
			quarantine.WriteError(w, http.StatusForbidden, "forbidden", fmt.Sprintf("token %q lacks the %q scope", t.cfg.Name, scope))
			return
		}
		used := scope
		if !slices.Contains(t.cfg.Scopes, scope) {
			used = config.ScopeAdmin
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), tokenKey{}, callerInfo{t.cfg.Name, used})))
	})
}

// clientAddress makes r.RemoteAddr the real client's when the request came
// through a trusted reverse proxy: the rightmost X-Forwarded-For entry that
// is not itself a trusted proxy (entries further left are the client's own
// word and could be forged).
func clientAddress(trusted []netip.Prefix, next http.Handler) http.Handler {
	if len(trusted) == 0 {
		return next
	}
	isTrusted := func(a netip.Addr) bool {
		for _, p := range trusted {
			if p.Contains(a.Unmap()) {
				return true
			}
		}
		return false
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peer, err := netip.ParseAddrPort(r.RemoteAddr)
		if err == nil && isTrusted(peer.Addr()) {
			hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
			for i := len(hops) - 1; i >= 0; i-- {
				a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
				if err != nil {
					break // a garbled hop: trust nothing further left
				}
				if !isTrusted(a) {
					r2 := r.Clone(r.Context())
					r2.RemoteAddr = netip.AddrPortFrom(a.Unmap(), 0).String()
					r = r2
					break
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// newRouter assembles the HTTP surface: metrics and health for operations,
// the API for the helpdesk and the issuer's systems.
func newRouter(d *daemon, tokens []apiToken) http.Handler {
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
	quarantine.NewAPI(d.store, d.desk, caller, d.log).Register(mux, func(scope config.Scope, h http.Handler) http.Handler {
		return requireScope(tokens, scope, h)
	})
	// The download gate is public: the token in the path is the credential.
	d.gate.Register(mux)
	// Profiling a live relay under load is how throughput problems are
	// found; it reveals internals, so it takes the admin scope.
	mux.Handle("GET /debug/pprof/", requireScope(tokens, config.ScopeAdmin, http.HandlerFunc(pprof.Index)))
	mux.Handle("GET /debug/pprof/profile", requireScope(tokens, config.ScopeAdmin, http.HandlerFunc(pprof.Profile)))
	mux.Handle("GET /debug/pprof/trace", requireScope(tokens, config.ScopeAdmin, http.HandlerFunc(pprof.Trace)))
	mux.Handle("GET /debug/pprof/symbol", requireScope(tokens, config.ScopeAdmin, http.HandlerFunc(pprof.Symbol)))
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		quarantine.WriteError(w, http.StatusNotFound, "not_found", "no such API endpoint: "+r.Method+" "+r.URL.Path)
	})
	return mux
}
