package api

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/quarantine"
)

// FuzzAPIFront puts any Authorization header, X-Forwarded-For values and
// peer address through the API's front: ClientAddress, then Require for
// the read scope. A request reaches the handler only with exactly
// "Bearer " and a configured token that holds the scope (or admin), and as
// that token, seeing its tenants and no others; 401 for anything else that is not a token, 403 for a token
// without the scope. The client address changes only when the peer is a
// trusted proxy, and then to the rightmost hop that is not a trusted proxy,
// all hops right of it being well-formed trusted proxies: never to a hop
// the client wrote itself beyond one it could not, and always to an
// address the gate can parse again.
func FuzzAPIFront(f *testing.F) {
	f.Add("Bearer helpdesk-token-0123456789", "203.0.113.9", "", "127.0.0.1:5000")
	f.Add("Bearer ops-token-0123456789abcdef", "198.51.100.1, 203.0.113.9, 10.1.2.3", "10.0.0.1", "127.0.0.1:5000")
	f.Add("Bearer release-token-0123456789ab", "", "", "[::1]:80")
	f.Add("bearer helpdesk-token-0123456789", "garbage", "10.1.1.1", "10.9.9.9:1")
	f.Add("Bearer  helpdesk-token-0123456789", "::ffff:10.0.0.1, fe80::1%eth0", "", "[::ffff:127.0.0.1]:8080")
	f.Add("Basic aGVscGRlc2s6eA==", "203.0.113.9", "", "192.0.2.7:5000")
	trusted := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("::1/128"), netip.MustParsePrefix("10.0.0.0/8")}
	isTrusted := func(a netip.Addr) bool {
		for _, p := range trusted {
			if p.Contains(a.Unmap()) {
				return true
			}
		}
		return false
	}
	secrets := frontTokens
	var reached bool
	var seenAddr, seenName string
	var seenScope config.Scope
	var seenTenants quarantine.Tenants
	h := ClientAddress(trusted, testTokens(secrets).Require(config.ScopeRead, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached, seenAddr = true, r.RemoteAddr
		seenName, seenScope, seenTenants = Caller(r)
	})))

	f.Fuzz(func(t *testing.T, auth, xff1, xff2, peer string) {
		reached, seenAddr, seenName, seenScope, seenTenants = false, "", "", "", quarantine.Tenants{}
		r := httptest.NewRequest("GET", "/api/v1/messages", nil)
		r.RemoteAddr = peer
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		for _, v := range []string{xff1, xff2} {
			if v != "" {
				r.Header.Add("X-Forwarded-For", v)
			}
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)

		secret, isBearer := strings.CutPrefix(auth, "Bearer ")
		cfg, known := secrets[secret]
		switch {
		case !isBearer || !known:
			if reached || w.Code != http.StatusUnauthorized {
				t.Fatalf("%q: status %d, reached %v", auth, w.Code, reached)
			}
			return
		case !cfg.HasScope(config.ScopeRead):
			if reached || w.Code != http.StatusForbidden {
				t.Fatalf("%q without the scope: status %d, reached %v", auth, w.Code, reached)
			}
			return
		}
		if !reached || seenName != cfg.Name || seenScope != map[bool]config.Scope{true: config.ScopeRead, false: config.ScopeAdmin}[cfg.Scopes[0] == config.ScopeRead] {
			t.Fatalf("%q: status %d, reached %v as %q/%q", auth, w.Code, reached, seenName, seenScope)
		}
		for _, tenant := range []string{"issuer", "reseller", "other", "*", ""} {
			if want := cfg.SeesEveryTenant() || slices.Contains(cfg.Tenants, tenant); seenTenants.Has(tenant) != want {
				t.Fatalf("%q: sees tenant %q: %v, want %v", auth, tenant, !want, want)
			}
		}

		p, err := netip.ParseAddrPort(peer)
		if err != nil || !isTrusted(p.Addr()) {
			if seenAddr != peer {
				t.Fatalf("peer %q is no trusted proxy but the client became %q", peer, seenAddr)
			}
			return
		}
		var hops []string
		for _, v := range []string{xff1, xff2} {
			if v != "" {
				hops = append(hops, strings.Split(v, ",")...)
			}
		}
		if seenAddr == peer {
			// No hop qualified: scanning from the right, every hop is a
			// trusted proxy until the first garbled one or the end.
			for i := len(hops) - 1; i >= 0; i-- {
				a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
				if err != nil {
					return
				}
				if !isTrusted(a) {
					t.Fatalf("hops %q: the untrusted %s was passed over", hops, a)
				}
			}
			return
		}
		got, err := netip.ParseAddrPort(seenAddr)
		if err != nil || got.Port() != 0 || isTrusted(got.Addr()) || got.Addr().Is4In6() {
			t.Fatalf("hops %q: client %q", hops, seenAddr)
		}
		for i := len(hops) - 1; i >= 0; i-- {
			a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
			if err != nil {
				t.Fatalf("hops %q: went past the garbled %q to %s", hops, hops[i], got)
			}
			if a.Unmap() == got.Addr() {
				return
			}
			if !isTrusted(a) {
				t.Fatalf("hops %q: chose %s over the nearer untrusted %s", hops, got, a)
			}
		}
		t.Fatalf("hops %q: client %s is none of them", hops, got)
	})
}
