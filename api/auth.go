package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/quarantine"
)

// Tokens are the configured bearer tokens as certgate keeps them: only
// their SHA-256. Tokens are long random strings, so a fast hash is enough;
// what matters is that the configured secret is not kept and the
// comparison is constant time.
type Tokens struct {
	list []token
}

type token struct {
	hash    [32]byte
	cfg     config.APIToken
	tenants quarantine.Tenants
}

func newToken(secret string, cfg config.APIToken) token {
	tenants := quarantine.OnlyTenants(cfg.Tenants...)
	if cfg.SeesEveryTenant() {
		tenants = quarantine.AllTenants()
	}
	return token{hash: sha256.Sum256([]byte(secret)), cfg: cfg, tenants: tenants}
}

// LoadTokens reads every token's secret and keeps its hash; config has
// checked that each can be read and is long enough, and filled in the
// tenants each sees. A token with none sees nothing.
func LoadTokens(cfg []config.APIToken) (*Tokens, error) {
	ts := &Tokens{}
	for _, t := range cfg {
		secret, err := t.Token()
		if err != nil {
			return nil, fmt.Errorf("api token %s: %w", t.Name, err)
		}
		ts.list = append(ts.list, newToken(secret, t))
	}
	return ts, nil
}

// authenticate finds the token presented in the Authorization header.
func (ts *Tokens) authenticate(r *http.Request) *token {
	secret, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return nil
	}
	return ts.find(secret)
}

// find is the token whose secret this is. Every configured token is
// compared, so the time taken does not depend on which one matched.
func (ts *Tokens) find(secret string) *token {
	if secret == "" {
		return nil
	}
	sum := sha256.Sum256([]byte(secret))
	var found *token
	for i := range ts.list {
		if subtle.ConstantTimeCompare(sum[:], ts.list[i].hash[:]) == 1 {
			found = &ts.list[i]
		}
	}
	return found
}

// Identity is who a token is: its name, its scopes, and the tenants
// whose mail it sees. The console signs a person in as one.
type Identity struct {
	Name    string
	Scopes  []config.Scope
	Tenants quarantine.Tenants
	hash    [32]byte
}

func (t *token) identity() Identity {
	return Identity{Name: t.cfg.Name, Scopes: t.cfg.Scopes, Tenants: t.tenants, hash: t.hash}
}

// Lookup finds the token whose secret this is, as the API does for a
// bearer token; false for none.
func (ts *Tokens) Lookup(secret string) (Identity, bool) {
	t := ts.find(secret)
	if t == nil {
		return Identity{}, false
	}
	return t.identity(), true
}

// Named is the configured token called name (config keeps names
// unique); false when there is none. A session kept in the browser
// finds its token again this way, so a token taken out of the
// configuration ends its sessions.
func (ts *Tokens) Named(name string) (Identity, bool) {
	for i := range ts.list {
		if ts.list[i].cfg.Name == name {
			return ts.list[i].identity(), true
		}
	}
	return Identity{}, false
}

// SecretDigest is the SHA-256 of the token's secret: state kept outside
// certgate can be bound to the secret through it, so that a new secret
// under the same name does not inherit it. Never log it.
func (id Identity) SecretDigest() [32]byte { return id.hash }

// Has reports whether the identity holds scope (admin holds every one).
func (id Identity) Has(scope config.Scope) bool {
	return config.APIToken{Scopes: id.Scopes}.HasScope(scope)
}

// Used is the scope a request that needs scope uses: scope itself, or
// admin when the identity holds no narrower one (for metrics and audit).
func (id Identity) Used(scope config.Scope) config.Scope {
	if slices.Contains(id.Scopes, scope) {
		return scope
	}
	return config.ScopeAdmin
}

// Require guards h: 401 without a valid token, 403 when the token lacks
// scope (admin holds every scope). h finds the caller with Caller, and
// must keep to the caller's tenants.
func (ts *Tokens) Require(scope config.Scope, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t := ts.authenticate(r)
		if t == nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="certgate"`)
			writeError(w, http.StatusUnauthorized, "unauthorized", "a valid bearer token is required")
			return
		}
		if !t.cfg.HasScope(scope) {
			writeError(w, http.StatusForbidden, "forbidden", fmt.Sprintf("token %q lacks the %q scope", t.cfg.Name, scope))
			return
		}
		used := Identity{Scopes: t.cfg.Scopes}.Used(scope)
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, caller{t.cfg.Name, used, t.tenants})))
	})
}

type callerKey struct{}

type caller struct {
	name    string
	scope   config.Scope
	tenants quarantine.Tenants
}

// Caller returns the name of the token that Require let r through with,
// the scope it used (admin when it holds no narrower one), and the
// tenants whose mail it sees (none when Require did not run).
func Caller(r *http.Request) (name string, scope config.Scope, tenants quarantine.Tenants) {
	c, _ := r.Context().Value(callerKey{}).(caller)
	return c.name, c.scope, c.tenants
}
