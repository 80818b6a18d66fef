package storetest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/certgate/certgate/store"
)

func search(t *testing.T, s store.Store, q store.Query) []store.Message {
	t.Helper()
	ms, err := s.Search(context.Background(), q)
	if err != nil {
		t.Fatalf("Search(%+v): %v", q, err)
	}
	return ms
}

// searchIDs returns the ids Search finds, in its order.
func searchIDs(t *testing.T, s store.Store, q store.Query) []string {
	t.Helper()
	var ids []string
	for _, m := range search(t, s, q) {
		ids = append(ids, m.ID)
	}
	return ids
}

// newestFirst returns ids in the order Search must give them.
func newestFirst(ids ...string) []string {
	out := slices.Clone(ids)
	slices.Sort(out)
	slices.Reverse(out)
	return out
}

func checkIDs(t *testing.T, q store.Query, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("Search(%+v) = %v\nwant %v", q, got, want)
	}
}

// enqueueTo enqueues one message of tenant with the given recipients, all
// queued, received at received.
func enqueueTo(t *testing.T, s store.Store, tenant string, received time.Time, addrs ...string) string {
	t.Helper()
	id := newID("search")
	m := message(id)
	m.Tenant = tenant
	m.ReceivedAt = received
	var rs []store.NewRecipient
	for _, a := range addrs {
		rs = append(rs, rcpt(id, a, 0, store.StateQueued))
	}
	enqueue(t, s, m, [][]byte{[]byte("x")}, rs)
	return id
}

func testSearchTenant(t *testing.T, s store.Store) {
	a1 := enqueueTo(t, s, "alpha", base, "a@example.com")
	b1 := enqueueTo(t, s, "beta", base, "a@example.com")
	a2 := enqueueTo(t, s, "alpha", base, "b@example.com")

	q := store.Query{Tenant: "alpha"}
	checkIDs(t, q, searchIDs(t, s, q), newestFirst(a1, a2))
	q = store.Query{Tenant: "gamma"}
	checkIDs(t, q, searchIDs(t, s, q), nil)
	q = store.Query{}
	checkIDs(t, q, searchIDs(t, s, q), newestFirst(a1, b1, a2))

	// Search returns whole messages.
	ms := search(t, s, store.Query{Tenant: "beta"})
	want := message(b1)
	want.Tenant = "beta"
	if len(ms) != 1 {
		t.Fatalf("Search(beta) = %+v", ms)
	}
	got := ms[0]
	if !got.ReceivedAt.Equal(want.ReceivedAt) {
		t.Errorf("ReceivedAt = %v, want %v", got.ReceivedAt, want.ReceivedAt)
	}
	got.ReceivedAt, want.ReceivedAt = time.Time{}, time.Time{}
	if got != want {
		t.Errorf("Search result = %+v\nwant %+v", got, want)
	}
}

func testSearchRecipient(t *testing.T, s store.Store) {
	alice := enqueueTo(t, s, "issuer", base, "Alice@Example.COM", "bob@example.com")
	odd := enqueueTo(t, s, "issuer", base, "odd@name@Tricky.Example")
	alice2 := enqueueTo(t, s, "other", base, "Alice@example.com")
	enqueueTo(t, s, "issuer", base, "alice@example.com") // another mailbox: the local part is exact

	for _, c := range []struct {
		q    store.Query
		want []string
	}{
		{store.Query{Recipient: "Alice@Example.COM"}, newestFirst(alice, alice2)},
		{store.Query{Recipient: "Alice@example.com"}, newestFirst(alice, alice2)},
		{store.Query{Recipient: "Alice@EXAMPLE.com", Tenant: "issuer"}, []string{alice}},
		{store.Query{Recipient: "ALICE@example.com"}, nil},
		{store.Query{Recipient: "bob@Example.Com"}, []string{alice}},
		{store.Query{Recipient: "odd@name@tricky.example"}, []string{odd}},
		{store.Query{Recipient: "name@Tricky.Example"}, nil},
		{store.Query{Recipient: "Alice"}, nil},
		{store.Query{Recipient: "nobody@example.com"}, nil},
	} {
		checkIDs(t, c.q, searchIDs(t, s, c.q), c.want)
	}
}

func testSearchState(t *testing.T, s store.Store) {
	held := newID("search") // the prefix of enqueueTo: ids compare alike in any collation
	rs := []store.NewRecipient{
		rcpt(held, "held@example.com", 0, store.StateHeld),
		rcpt(held, "queued@example.com", 0, store.StateQueued),
	}
	enqueue(t, s, message(held), [][]byte{[]byte("x")}, rs)
	queued := enqueueTo(t, s, "issuer", base, "queued@example.com")
	delivered := enqueueTo(t, s, "issuer", base, "done@example.com", "queued@example.com")
	rid := view(t, s, delivered).Recipients[0].ID
	record(t, s, store.Attempt{RecipientID: rid, MessageID: delivered, Time: base, State: store.StateDelivered, Code: 250, Reply: "2.0.0 ok"})

	for _, c := range []struct {
		q    store.Query
		want []string
	}{
		{store.Query{State: store.StateHeld}, []string{held}},
		{store.Query{State: store.StateQueued}, newestFirst(held, queued, delivered)},
		{store.Query{State: store.StateDelivered}, []string{delivered}},
		{store.Query{State: store.StateBounced}, nil},
		{store.Query{State: store.StateHeld, Tenant: "other"}, nil},
		// With an address, it is that recipient that must be in the state.
		{store.Query{State: store.StateHeld, Recipient: "held@Example.com"}, []string{held}},
		{store.Query{State: store.StateHeld, Recipient: "queued@example.com"}, nil},
		{store.Query{State: store.StateDelivered, Recipient: "queued@example.com"}, nil},
		{store.Query{State: store.StateQueued, Recipient: "queued@example.com"}, newestFirst(held, queued, delivered)},
	} {
		checkIDs(t, c.q, searchIDs(t, s, c.q), c.want)
	}

	if _, err := s.Release(context.Background(), held, base.Add(time.Hour), "api:helpdesk", ""); err != nil {
		t.Fatalf("Release: %v", err)
	}
	q := store.Query{State: store.StateHeld}
	checkIDs(t, q, searchIDs(t, s, q), nil)
}

func testSearchTime(t *testing.T, s store.Store) {
	m0 := enqueueTo(t, s, "issuer", base, "a@example.com")
	m1 := enqueueTo(t, s, "issuer", base.Add(time.Hour), "a@example.com")
	m2 := enqueueTo(t, s, "issuer", base.Add(2*time.Hour), "a@example.com")
	for _, c := range []struct {
		q    store.Query
		want []string
	}{
		{store.Query{Since: base.Add(time.Hour)}, newestFirst(m1, m2)},
		{store.Query{Since: base.Add(time.Hour + time.Microsecond)}, []string{m2}},
		{store.Query{Until: base.Add(time.Hour)}, []string{m0}},
		{store.Query{Until: base.Add(time.Hour + time.Microsecond)}, newestFirst(m0, m1)},
		{store.Query{Since: base.Add(time.Hour), Until: base.Add(2 * time.Hour)}, []string{m1}},
		{store.Query{Since: base.Add(3 * time.Hour)}, nil},
		{store.Query{Since: base, Until: base}, nil},
	} {
		checkIDs(t, c.q, searchIDs(t, s, c.q), c.want)
	}
}

// testSearchHeaders finds mail by what the helpdesk is told on the phone:
// the subject, in part and in any case, and the Message-ID header, whole.
func testSearchHeaders(t *testing.T, s store.Store) {
	enqueueWith := func(subject, messageID string) string {
		t.Helper()
		id := newID("search")
		m := message(id)
		m.Subject, m.MessageID = subject, messageID
		enqueue(t, s, m, [][]byte{[]byte("x")}, []store.NewRecipient{rcpt(id, "a@example.com", 0, store.StateQueued)})
		return id
	}
	cert := enqueueWith("Su Certificado está listo", "20261123.abc@ca.example")
	voucher := enqueueWith("Voucher 50% off_now", "voucher-1@ca.example")
	other := enqueueWith("Código de verificación", "otp-9@ca.example")
	for _, c := range []struct {
		q    store.Query
		want []string
	}{
		{store.Query{Subject: "certificado"}, []string{cert}},
		{store.Query{Subject: "CERTIFICADO está"}, []string{cert}},
		{store.Query{Subject: "certificado ESTÁ"}, nil}, // only ASCII letters fold
		{store.Query{Subject: "está listo"}, []string{cert}},
		{store.Query{Subject: " "}, newestFirst(cert, voucher, other)},
		// Wildcards of the backend's pattern language match literally.
		{store.Query{Subject: "50%"}, []string{voucher}},
		{store.Query{Subject: "%"}, []string{voucher}},
		{store.Query{Subject: "f_n"}, []string{voucher}},
		{store.Query{Subject: "_"}, []string{voucher}},
		{store.Query{Subject: `\`}, nil},
		{store.Query{Subject: "certificado", Tenant: "other"}, nil},
		{store.Query{MessageID: "20261123.abc@ca.example"}, []string{cert}},
		{store.Query{MessageID: "20261123.ABC@ca.example"}, nil},
		{store.Query{MessageID: "20261123"}, nil},
		{store.Query{MessageID: "otp-9@ca.example", Subject: "código"}, []string{other}},
		{store.Query{MessageID: "otp-9@ca.example", Subject: "voucher"}, nil},
	} {
		checkIDs(t, c.q, searchIDs(t, s, c.q), c.want)
	}
}

// enqueueMany enqueues n one-recipient messages of tenant from a few
// goroutines and returns their ids.
func enqueueMany(t *testing.T, s store.Store, tenant string, n int) []string {
	t.Helper()
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	const workers = 16
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				id := newID("page")
				m := message(id)
				m.Tenant = tenant
				_, errs[i] = s.Enqueue(context.Background(), m, [][]byte{[]byte("x")},
					[]store.NewRecipient{rcpt(id, fmt.Sprintf("p%d@example.com", i), 0, store.StateQueued)})
				ids[i] = id
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("Enqueue: %v", err)
		}
	}
	return ids
}

func testSearchPaging(t *testing.T, s store.Store) {
	ids := enqueueMany(t, s, "paged", 120)
	enqueueTo(t, s, "unpaged", base, "x@example.com")

	q := store.Query{Tenant: "paged", Limit: 50}
	got, sizes := pages(t, s, q)
	if !slices.Equal(sizes, []int{50, 50, 20, 0}) {
		t.Errorf("page sizes = %v, want [50 50 20 0]", sizes)
	}
	// Newest first, each message once, none missing.
	checkIDs(t, q, got, newestFirst(ids...))
}

// pages follows q's pages (After the last id of each) until an empty one,
// and returns the ids in order and each page's size.
func pages(t *testing.T, s store.Store, q store.Query) (ids []string, sizes []int) {
	t.Helper()
	for range 20 {
		page := searchIDs(t, s, q)
		sizes = append(sizes, len(page))
		if len(page) == 0 {
			break
		}
		ids = append(ids, page...)
		q.After = page[len(page)-1]
	}
	return ids, sizes
}

// testSearchTenants: a tenant set filters in the query itself, so a
// caller that may see some tenants gets full pages of their mail only,
// and an id of another tenant is not told apart from an unknown one.
func testSearchTenants(t *testing.T, s store.Store) {
	byTenant := map[string][]string{}
	var held []string
	for i := range 30 {
		// Interleaved, so that filtering after the page would leave
		// pages short.
		tenant := []string{"alpha", "beta", "gamma"}[i%3]
		id := newID("search")
		m := message(id)
		m.Tenant = tenant
		state := store.StateQueued
		if i%2 == 0 {
			state = store.StateHeld
			if tenant == "alpha" {
				held = append(held, id)
			}
		}
		enqueue(t, s, m, [][]byte{[]byte("x")}, []store.NewRecipient{rcpt(id, "same@example.com", 0, state)})
		byTenant[tenant] = append(byTenant[tenant], id)
	}
	alpha, beta, gamma := byTenant["alpha"], byTenant["beta"], byTenant["gamma"]
	alphaGamma := slices.Concat(alpha, gamma)

	for _, c := range []struct {
		q    store.Query
		want []string
	}{
		{store.Query{Tenants: []string{"alpha", "gamma"}}, newestFirst(alphaGamma...)},
		{store.Query{Tenants: []string{"beta"}}, newestFirst(beta...)},
		{store.Query{Tenants: []string{"delta"}}, nil},
		{store.Query{Tenant: "alpha", Tenants: []string{"alpha", "gamma"}}, newestFirst(alpha...)},
		{store.Query{Tenant: "beta", Tenants: []string{"alpha", "gamma"}}, nil},
		{store.Query{Recipient: "same@example.com", Tenants: []string{"gamma"}}, newestFirst(gamma...)},
		{store.Query{State: store.StateHeld, Tenants: []string{"alpha"}}, newestFirst(held...)},
		{store.Query{ID: alpha[0]}, []string{alpha[0]}},
		{store.Query{ID: alpha[0], Tenants: []string{"beta", "alpha"}}, []string{alpha[0]}},
		{store.Query{ID: alpha[0], Tenants: []string{"beta"}}, nil},
		{store.Query{ID: alpha[0], Tenant: "beta"}, nil},
		{store.Query{ID: "no-such-message"}, nil},
	} {
		checkIDs(t, c.q, searchIDs(t, s, c.q), c.want)
	}

	// Page boundaries: full pages of the set's mail, none of the others'.
	for _, q := range []store.Query{
		{Tenants: []string{"alpha", "gamma"}, Limit: 7},
		{Tenants: []string{"alpha", "gamma"}, Recipient: "same@example.com", Limit: 7},
	} {
		got, sizes := pages(t, s, q)
		if !slices.Equal(sizes, []int{7, 7, 6, 0}) {
			t.Errorf("Search(%+v) page sizes = %v, want [7 7 6 0]", q, sizes)
		}
		checkIDs(t, q, got, newestFirst(alphaGamma...))
	}
}

func testSearchLimits(t *testing.T, s store.Store) {
	ids := newestFirst(enqueueMany(t, s, "limits", 501)...)
	for _, c := range []struct {
		limit, want int
	}{
		{0, 50},
		{-1, 50},
		{7, 7},
		{500, 500},
		{501, 500},
		{100000, 500},
	} {
		q := store.Query{Tenant: "limits", Limit: c.limit}
		got := searchIDs(t, s, q)
		checkIDs(t, q, got, ids[:c.want])
	}
}
