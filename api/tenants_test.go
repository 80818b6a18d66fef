package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/store"
)

// Two tenants, ca and certs, and tokens that see one or both: what a
// token of ca may do to certs' mail is what it may do to mail that does
// not exist.
const (
	caRead    = "ca-read-token-0123456789"
	caRelease = "ca-release-token-0123456"
	caAdmin   = "ca-admin-token-012345678"
	allTokens = "all-tenants-token-01234"
)

func newTenantsEnv(t *testing.T) *apiEnv {
	t.Helper()
	ca := []string{"ca"}
	return newAPIEnvWith(t, map[string]config.APIToken{
		caRead:    {Name: "ca-portal", Scopes: []config.Scope{config.ScopeRead}, Tenants: ca},
		caRelease: {Name: "ca-helpdesk", Scopes: []config.Scope{config.ScopeRead, config.ScopeRelease}, Tenants: ca},
		caAdmin:   {Name: "ca-ops", Scopes: []config.Scope{config.ScopeAdmin}, Tenants: ca},
		allTokens: {Name: "helpdesk", Scopes: []config.Scope{config.ScopeRead, config.ScopeRelease}, Tenants: []string{config.EveryTenant}},
	})
}

// answer is a response as a client sees it, with the id it asked about
// written as ID, so that two answers about two ids compare.
func (e *apiEnv) answer(secret, method, path, body, id string) string {
	e.t.Helper()
	resp := e.doAs(secret, method, path, body)
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return fmt.Sprintf("%d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), strings.ReplaceAll(string(raw), id, "ID"))
}

// stored is what the store holds of message id: its recipients' states,
// its links' states and how many events it has.
func (e *apiEnv) stored(id string) string {
	e.t.Helper()
	v, err := e.st.Message(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	var b strings.Builder
	for _, r := range v.Recipients {
		fmt.Fprintf(&b, "%s=%s ", r.Address, r.State)
	}
	for _, l := range v.Links {
		fmt.Fprintf(&b, "link%d=%s ", l.ID, l.State)
	}
	fmt.Fprintf(&b, "events=%d", len(v.Events))
	return b.String()
}

type searchPage struct {
	Messages []apiSummary `json:"messages"`
	Next     string       `json:"next"`
}

// searchAll follows the pages of a search as secret and returns the ids
// and each page's size.
func (e *apiEnv) searchAll(secret, query string) (ids []string, sizes []int) {
	e.t.Helper()
	after := ""
	for range 20 {
		var page searchPage
		if code := e.callAs(secret, "GET", "/api/v1/messages?"+query+"&after="+after, "", &page); code != 200 {
			e.t.Fatalf("search %s: %d", query, code)
		}
		sizes = append(sizes, len(page.Messages))
		for _, m := range page.Messages {
			ids = append(ids, m.ID)
		}
		if page.Next == "" {
			break
		}
		after = page.Next
	}
	return ids, sizes
}

func TestAPITokenSeesOnlyItsTenants(t *testing.T) {
	e := newTenantsEnv(t)
	var ca, certs []string
	for i := range 6 {
		ca = append(ca, e.enqueueFor("ca", 2*i, "ana@empresa.example", store.StateHeld, store.LinkPending))
		certs = append(certs, e.enqueueFor("certs", 2*i+1, "ana@empresa.example", store.StateHeld, store.LinkPending))
	}
	slices.Reverse(ca) // newest first, as search answers
	unknown := "06h0000000000000000000099"

	for _, tok := range []string{caRead, caAdmin} { // admin does not widen tenants
		// Another tenant's message is an unknown one: same status, same body.
		if got, want := e.answer(tok, "GET", "/api/v1/messages/"+certs[0], "", certs[0]),
			e.answer(tok, "GET", "/api/v1/messages/"+unknown, "", unknown); got != want || !strings.HasPrefix(got, "404 ") {
			t.Errorf("%s: another tenant's message answers %q, an unknown one %q", tok, got, want)
		}
		if code := e.callAs(tok, "GET", "/api/v1/messages/"+ca[0], "", nil); code != 200 {
			t.Errorf("%s: its own tenant's message: %d", tok, code)
		}
		// Searches never return it, and pages stay full: the filter is in
		// the query, not applied to a page after the fact.
		for _, q := range []string{"limit=2", "limit=2&recipient=ana@empresa.example", "limit=2&state=held"} {
			ids, sizes := e.searchAll(tok, q)
			if !slices.Equal(ids, ca) || !slices.Equal(sizes, []int{2, 2, 2, 0}) {
				t.Errorf("%s: search %s found %v in pages of %v, want %v in [2 2 2 0]", tok, q, ids, sizes, ca)
			}
		}
		if ids, _ := e.searchAll(tok, "tenant=certs"); len(ids) != 0 {
			t.Errorf("%s: search for tenant certs found %v", tok, ids)
		}
	}

	// "*" sees both.
	if ids, _ := e.searchAll(allTokens, "recipient=ana@empresa.example"); len(ids) != 12 {
		t.Errorf(`"*" found %d messages, want 12`, len(ids))
	}
	if code := e.callAs(allTokens, "GET", "/api/v1/messages/"+certs[0], "", nil); code != 200 {
		t.Errorf(`"*" reading certs' message: %d`, code)
	}
}

func TestAPIReleaseAndRevokeTouchOnlyTheTokensTenants(t *testing.T) {
	e := newTenantsEnv(t)
	ca := e.enqueueFor("ca", 1, "ana@empresa.example", store.StateHeld, store.LinkPending)
	certs := e.enqueueFor("certs", 2, "ana@empresa.example", store.StateHeld, store.LinkPending)
	before := e.stored(certs)
	unknown := "06h0000000000000000000099"

	// By recipient: ca's copy is released, certs' stays held.
	var out struct {
		Released []releaseResult `json:"released"`
		NotFound []string        `json:"not_found"`
	}
	if code := e.callAs(caRelease, "POST", "/api/v1/release", `{"recipient": "ana@empresa.example"}`, &out); code != 200 ||
		len(out.Released) != 1 || out.Released[0].ID != ca {
		t.Errorf("release by recipient as ca: %d %+v, want only %s", code, out, ca)
	}
	if code := e.callAs(caRelease, "POST", "/api/v1/release", `{"recipient": "ana@empresa.example", "tenant": "certs"}`, &out); code != 200 || len(out.Released) != 0 {
		t.Errorf("release by recipient for tenant certs as ca: %d %+v", code, out)
	}
	// By id: certs' id is not found, as an unknown id is not.
	if code := e.callAs(caRelease, "POST", "/api/v1/release", `{"ids": ["`+certs+`", "`+unknown+`"]}`, &out); code != 200 ||
		len(out.Released) != 0 || !slices.Equal(out.NotFound, []string{certs, unknown}) {
		t.Errorf("release by ids as ca: %d %+v", code, out)
	}

	// One message, and its links: 404 as for an unknown id.
	for _, c := range []struct{ path, body string }{
		{"/release", ""},
		{"/release", `{"reason": "customer called"}`},
		{"/links/revoke", ""},
		// With a recipient: not "no such recipient", which would tell
		// that the message exists.
		{"/links/revoke", `{"recipient": "ana@empresa.example"}`},
		{"/links/revoke", `{"recipient": "nadie@empresa.example"}`},
	} {
		for _, tok := range []string{caRelease, caAdmin} {
			got := e.answer(tok, "POST", "/api/v1/messages/"+certs+c.path, c.body, certs)
			want := e.answer(tok, "POST", "/api/v1/messages/"+unknown+c.path, c.body, unknown)
			if got != want || !strings.HasPrefix(got, "404 ") {
				t.Errorf("%s %s %s on certs' message: %q; on an unknown one: %q", tok, c.path, c.body, got, want)
			}
		}
	}
	if after := e.stored(certs); after != before {
		t.Errorf("certs' message changed: %s, was %s", after, before)
	}

	// "*" reaches certs' mail.
	if code := e.callAs(allTokens, "POST", "/api/v1/release", `{"recipient": "ana@empresa.example"}`, &out); code != 200 || len(out.Released) != 2 {
		t.Errorf(`release by recipient as "*": %d %+v, want both`, code, out)
	}
	var rev map[string]any
	if code := e.callAs(allTokens, "POST", "/api/v1/messages/"+certs+"/links/revoke", "", &rev); code != 200 || rev["revoked"] != float64(1) {
		t.Errorf(`revoke as "*": %d %v`, code, rev)
	}
	if got := e.stored(certs); !strings.Contains(got, "ana@empresa.example=queued") || !strings.Contains(got, "=revoked") {
		t.Errorf(`certs' message after "*" released it and revoked its links: %s`, got)
	}
}

// A token whose tenants were never set (built in code, not loaded) sees
// nothing: the zero value fails closed.
func TestAPITokenWithoutTenantsSeesNothing(t *testing.T) {
	const secret = "no-tenants-token-012345"
	e := newAPIEnvWith(t, map[string]config.APIToken{
		secret: {Name: "bare", Scopes: []config.Scope{config.ScopeAdmin}}})
	id := e.enqueue(1, "ana@empresa.example", store.StateHeld, store.LinkPending)
	if ids, _ := e.searchAll(secret, "limit=5"); len(ids) != 0 {
		t.Errorf("search found %v", ids)
	}
	for _, c := range []struct{ method, path string }{
		{"GET", "/api/v1/messages/" + id},
		{"POST", "/api/v1/messages/" + id + "/release"},
		{"POST", "/api/v1/messages/" + id + "/links/revoke"},
	} {
		if code := e.callAs(secret, c.method, c.path, "", nil); code != http.StatusNotFound {
			t.Errorf("%s %s: %d, want 404", c.method, c.path, code)
		}
	}
}
