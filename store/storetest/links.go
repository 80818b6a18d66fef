package storetest

import (
	"context"
	"crypto/sha256"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/certgate/certgate/store"
)

// token returns a hash no other test uses.
func token(label string) [32]byte {
	return sha256.Sum256([]byte(newID("token-" + label)))
}

func newLink(label string, state store.LinkState, maxUses int, expires time.Time) store.NewLink {
	return store.NewLink{
		TokenHash: token(label),
		URL:       "https://issuer.example/download/" + label + "?cert=42&fmt=p12",
		State:     state,
		MaxUses:   maxUses,
		ExpiresAt: expires,
	}
}

// withLinks enqueues one message whose recipients carry the given links,
// all recipients in state st, and returns the message id, the recipient ids
// and the stored links in the order given.
func withLinks(t *testing.T, s store.Store, st store.State, links ...[]store.NewLink) (string, []int64, []store.Link) {
	t.Helper()
	id := newID("links")
	var rs []store.NewRecipient
	for i, ls := range links {
		r := rcpt(id, "user"+string(rune('a'+i))+"@Example.COM", 0, st)
		r.Links = ls
		rs = append(rs, r)
	}
	ids := enqueue(t, s, message(id), [][]byte{[]byte("Subject: links\r\n\r\nbody\r\n")}, rs)
	var out []store.Link
	for _, ls := range links {
		for _, nl := range ls {
			out = append(out, linkByToken(t, s, nl.TokenHash))
		}
	}
	return id, ids, out
}

func linkByToken(t *testing.T, s store.Store, hash [32]byte) store.Link {
	t.Helper()
	l, err := s.LinkByToken(context.Background(), hash)
	if err != nil {
		t.Fatalf("LinkByToken(%x): %v", hash[:4], err)
	}
	return *l
}

func useLink(t *testing.T, s store.Store, id int64, now time.Time, actor, detail string) store.LinkUse {
	t.Helper()
	u, err := s.UseLink(context.Background(), id, now, actor, detail)
	if err != nil {
		t.Fatalf("UseLink(%d): %v", id, err)
	}
	return u
}

func setLinks(t *testing.T, s store.Store, msg string, rid int64, from []store.LinkState, to store.LinkState) int {
	t.Helper()
	n, err := s.SetLinkState(context.Background(), msg, rid, from, to, "api:helpdesk@192.0.2.9", "ticket 4711")
	if err != nil {
		t.Fatalf("SetLinkState(%s, %d, %v, %s): %v", msg, rid, from, to, err)
	}
	return n
}

// checkUse compares a use's outcome and the link it returns.
func checkUse(t *testing.T, u store.LinkUse, ok bool, why string, state store.LinkState, uses int) {
	t.Helper()
	if u.OK != ok || u.Why != why || u.Link.State != state || u.Link.Uses != uses {
		t.Errorf("UseLink = OK %v Why %q state %s uses %d; want OK %v Why %q state %s uses %d",
			u.OK, u.Why, u.Link.State, u.Link.Uses, ok, why, state, uses)
	}
}

func sameLink(a, b store.Link) bool {
	return a.ID == b.ID && a.TokenHash == b.TokenHash && a.MessageID == b.MessageID && a.RecipientID == b.RecipientID &&
		a.Tenant == b.Tenant && a.URL == b.URL && a.State == b.State && a.Uses == b.Uses && a.MaxUses == b.MaxUses &&
		a.ExpiresAt.Equal(b.ExpiresAt) && a.CreatedAt.Equal(b.CreatedAt) && a.UpdatedAt.Equal(b.UpdatedAt) &&
		sameRefusals(a.Refusals, b.Refusals)
}

func sameRefusals(a, b store.LinkRefusals) bool {
	if a.Count != b.Count || a.Noticed != b.Noticed || !a.NoticedAt.Equal(b.NoticedAt) || len(a.Recent) != len(b.Recent) {
		return false
	}
	for i, r := range a.Recent {
		o := b.Recent[i]
		if !r.Time.Equal(o.Time) || r.Reason != o.Reason || r.Client != o.Client || r.UserAgent != o.UserAgent {
			return false
		}
	}
	return true
}

func testLinksStored(t *testing.T, s store.Store) {
	expires := base.Add(72 * time.Hour)
	nls := [][]store.NewLink{
		{newLink("a1", store.LinkPending, 3, expires), newLink("a2", store.LinkEnabled, 0, time.Time{})},
		nil,
		{newLink("c1", store.LinkEnabled, 1, expires)},
	}
	id, ids, _ := withLinks(t, s, store.StateQueued, nls...)
	v := view(t, s, id)
	if len(v.Links) != 3 {
		t.Fatalf("view has %d links, want 3: %+v", len(v.Links), v.Links)
	}
	owners := []int64{ids[0], ids[0], ids[2]}
	want := []store.NewLink{nls[0][0], nls[0][1], nls[2][0]}
	for i, l := range v.Links {
		w := want[i]
		if i > 0 && l.ID <= v.Links[i-1].ID {
			t.Errorf("links not in id order: %d after %d", l.ID, v.Links[i-1].ID)
		}
		if l.ID == 0 || l.TokenHash != w.TokenHash || l.MessageID != id || l.RecipientID != owners[i] ||
			l.Tenant != "issuer" || l.URL != w.URL || l.State != w.State || l.Uses != 0 ||
			l.MaxUses != w.MaxUses || !l.ExpiresAt.Equal(w.ExpiresAt) {
			t.Errorf("link %d = %+v\nwant %+v of recipient %d", i, l, w, owners[i])
		}
		if l.CreatedAt.IsZero() || l.UpdatedAt.IsZero() {
			t.Errorf("link %d has zero CreatedAt or UpdatedAt: %+v", i, l)
		}
	}
	if !v.Links[1].ExpiresAt.IsZero() {
		t.Errorf("link without expiry came back with ExpiresAt %v", v.Links[1].ExpiresAt)
	}
	// Storing links writes no events of their own.
	if len(v.Events) != 1 {
		t.Errorf("events = %+v, want only accepted", v.Events)
	}
	// A message without links has none in its view.
	plain, _ := simple(t, s, "nolinks", store.StateQueued)
	if v := view(t, s, plain); len(v.Links) != 0 {
		t.Errorf("message without links has links %+v", v.Links)
	}
}

func testLinkByToken(t *testing.T, s store.Store) {
	nl := newLink("bytoken", store.LinkPending, 2, base.Add(time.Hour))
	id, _, _ := withLinks(t, s, store.StateHeld, []store.NewLink{nl})
	got := linkByToken(t, s, nl.TokenHash)
	inView := view(t, s, id).Links[0]
	if !sameLink(got, inView) {
		t.Errorf("LinkByToken = %+v\nview has %+v", got, inView)
	}
	if _, err := s.LinkByToken(context.Background(), token("unknown")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("LinkByToken(unknown) error = %v, want ErrNotFound", err)
	}
}

func testDuplicateTokenHash(t *testing.T, s store.Store) {
	nl := newLink("dup", store.LinkEnabled, 1, time.Time{})
	first, _, _ := withLinks(t, s, store.StateQueued, []store.NewLink{nl})

	// Across messages.
	id := newID("duptoken")
	r := rcpt(id, "x@example.com", 0, store.StateQueued)
	r.Links = []store.NewLink{newLink("fresh", store.LinkEnabled, 1, time.Time{}), nl}
	if _, err := s.Enqueue(context.Background(), message(id), [][]byte{[]byte("x")}, []store.NewRecipient{r}); err == nil {
		t.Fatalf("Enqueue reusing another message's token hash succeeded")
	}
	if _, err := s.Message(context.Background(), id); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Message of the refused enqueue: %v, want ErrNotFound (no partial rows)", err)
	}
	if _, err := s.LinkByToken(context.Background(), r.Links[0].TokenHash); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the refused enqueue's other link was kept: %v", err)
	}
	if l := linkByToken(t, s, nl.TokenHash); l.MessageID != first {
		t.Errorf("token now belongs to %s, want %s", l.MessageID, first)
	}

	// Within one message, across its recipients.
	id2 := newID("duptoken")
	shared := newLink("shared", store.LinkEnabled, 1, time.Time{})
	a, b := rcpt(id2, "a@example.com", 0, store.StateQueued), rcpt(id2, "b@example.com", 0, store.StateQueued)
	a.Links, b.Links = []store.NewLink{shared}, []store.NewLink{shared}
	if _, err := s.Enqueue(context.Background(), message(id2), [][]byte{[]byte("x")}, []store.NewRecipient{a, b}); err == nil {
		t.Fatalf("Enqueue with one token hash on two recipients succeeded")
	}
	if _, err := s.Message(context.Background(), id2); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Message of the refused enqueue: %v, want ErrNotFound", err)
	}
}

func testInvalidLinks(t *testing.T, s store.Store) {
	id := newID("badlink")
	for name, nl := range map[string]store.NewLink{
		"state used":        newLink("used", store.LinkUsed, 1, time.Time{}),
		"state revoked":     newLink("revoked", store.LinkRevoked, 1, time.Time{}),
		"empty state":       newLink("empty", "", 1, time.Time{}),
		"negative max uses": newLink("negative", store.LinkEnabled, -1, time.Time{}),
	} {
		r := rcpt(id, "a@example.com", 0, store.StateQueued)
		r.Links = []store.NewLink{nl}
		if _, err := s.Enqueue(context.Background(), message(id), [][]byte{[]byte("x")}, []store.NewRecipient{r}); err == nil {
			t.Errorf("Enqueue with a link of %s succeeded", name)
		}
	}
	if _, err := s.Message(context.Background(), id); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Message after refused enqueues: %v, want ErrNotFound", err)
	}
}

func testUseLinkUntilUsed(t *testing.T, s store.Store) {
	id, ids, links := withLinks(t, s, store.StateQueued,
		[]store.NewLink{newLink("twice", store.LinkEnabled, 2, base.Add(time.Hour))})
	l := links[0]
	t1, t2, t3 := base.Add(time.Minute), base.Add(2*time.Minute), base.Add(3*time.Minute)

	u := useLink(t, s, l.ID, t1, "gate:198.51.100.7", "POST /d/…")
	checkUse(t, u, true, "", store.LinkEnabled, 1)
	if !u.Link.UpdatedAt.Equal(t1) || !sameLink(u.Link, linkByToken(t, s, l.TokenHash)) {
		t.Errorf("returned link %+v differs from the stored one or has not UpdatedAt %v", u.Link, t1)
	}
	u = useLink(t, s, l.ID, t2, "gate:198.51.100.7", "second")
	checkUse(t, u, true, "", store.LinkUsed, 2)
	u = useLink(t, s, l.ID, t3, "gate:203.0.113.5", "third")
	checkUse(t, u, false, string(store.LinkUsed), store.LinkUsed, 2)
	if !u.Link.UpdatedAt.Equal(t2) {
		t.Errorf("a refusal changed UpdatedAt to %v, want %v", u.Link.UpdatedAt, t2)
	}
	if got := linkByToken(t, s, l.TokenHash); got.State != store.LinkUsed || got.Uses != 2 {
		t.Errorf("stored link after three uses = %+v", got)
	}

	// A refusal is the caller's to count (RefuseLink): UseLink records
	// only uses.
	v := view(t, s, id)
	used, refused := eventsOf(v, "link_used"), eventsOf(v, "link_refused")
	if len(used) != 2 || len(refused) != 0 {
		t.Fatalf("events = %+v, want 2 link_used and no link_refused", v.Events)
	}
	if e := used[0]; e.RecipientID != ids[0] || e.Actor != "gate:198.51.100.7" || e.Detail != "POST /d/…" || !e.Time.Equal(t1) || e.Count != 1 {
		t.Errorf("link_used event = %+v", e)
	}
}

func testUseLinkUnlimited(t *testing.T, s store.Store) {
	_, _, links := withLinks(t, s, store.StateQueued,
		[]store.NewLink{newLink("unlimited", store.LinkEnabled, 0, time.Time{})})
	for i := 1; i <= 5; i++ {
		// No expiry: even a use far in the future is fine.
		u := useLink(t, s, links[0].ID, base.Add(time.Duration(i)*24*365*time.Hour), "gate", "")
		checkUse(t, u, true, "", store.LinkEnabled, i)
	}
}

func testUseLinkConcurrent(t *testing.T, s store.Store) {
	id, _, links := withLinks(t, s, store.StateQueued,
		[]store.NewLink{newLink("race", store.LinkEnabled, 3, base.Add(time.Hour))})
	const callers = 20
	var wg sync.WaitGroup
	uses := make([]store.LinkUse, callers)
	errs := make([]error, callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			uses[i], errs[i] = s.UseLink(context.Background(), links[0].ID, base.Add(time.Minute), "gate", "race")
		}()
	}
	wg.Wait()
	ok := 0
	for i := range callers {
		if errs[i] != nil {
			t.Fatalf("UseLink: %v", errs[i])
		}
		if uses[i].OK {
			ok++
		} else if uses[i].Why != string(store.LinkUsed) {
			t.Errorf("refusal with Why %q, want %q", uses[i].Why, store.LinkUsed)
		}
	}
	if ok != 3 {
		t.Errorf("%d of %d concurrent uses succeeded on a link of 3 uses", ok, callers)
	}
	if l := linkByToken(t, s, links[0].TokenHash); l.Uses != 3 || l.State != store.LinkUsed {
		t.Errorf("link after the race = %+v, want 3 uses and state used", l)
	}
	v := view(t, s, id)
	if u, r := len(eventsOf(v, "link_used")), len(eventsOf(v, "link_refused")); u != 3 || r != 0 {
		t.Errorf("%d link_used and %d link_refused events, want 3 and 0", u, r)
	}
}

func testUseLinkExpiry(t *testing.T, s store.Store) {
	expires := base.Add(time.Hour)
	id, _, links := withLinks(t, s, store.StateQueued, []store.NewLink{
		newLink("expiring", store.LinkEnabled, 5, expires),
		newLink("pending-expiring", store.LinkPending, 5, expires),
		newLink("revoked-expiring", store.LinkEnabled, 5, expires),
	})
	enabled, pending, revoked := links[0], links[1], links[2]

	checkUse(t, useLink(t, s, enabled.ID, expires.Add(-time.Microsecond), "gate", ""), true, "", store.LinkEnabled, 1)
	u := useLink(t, s, enabled.ID, expires, "gate", "at expiry")
	checkUse(t, u, false, "expired", store.LinkExpired, 1)
	if !u.Link.UpdatedAt.Equal(expires) {
		t.Errorf("expired link's UpdatedAt = %v, want %v", u.Link.UpdatedAt, expires)
	}
	// Once expired it stays so, even for a clock that runs behind.
	checkUse(t, useLink(t, s, enabled.ID, base, "gate", ""), false, "expired", store.LinkExpired, 1)
	if l := linkByToken(t, s, enabled.TokenHash); l.State != store.LinkExpired {
		t.Errorf("stored link after expiry = %+v", l)
	}

	// A pending link past its expiry can never be used: it expires too.
	checkUse(t, useLink(t, s, pending.ID, base, "gate", ""), false, "pending", store.LinkPending, 0)
	checkUse(t, useLink(t, s, pending.ID, expires.Add(time.Second), "gate", ""), false, "expired", store.LinkExpired, 0)

	// A revoked link stays revoked: the helpdesk's word stands.
	if n, err := s.SetLinkState(context.Background(), id, 0, []store.LinkState{store.LinkEnabled}, store.LinkRevoked, "api:helpdesk", ""); err != nil || n != 1 {
		t.Fatalf("SetLinkState(enabled -> revoked) = %d, %v; want 1", n, err)
	}
	checkUse(t, useLink(t, s, revoked.ID, expires.Add(time.Second), "gate", ""), false, "revoked", store.LinkRevoked, 0)

	if n := len(eventsOf(view(t, s, id), "link_refused")); n != 0 {
		t.Errorf("%d link_refused events from UseLink, want none", n)
	}
}

func testUseLinkRefusals(t *testing.T, s store.Store) {
	id, ids, links := withLinks(t, s, store.StateHeld,
		[]store.NewLink{newLink("pending", store.LinkPending, 1, time.Time{})},
		[]store.NewLink{newLink("revoke", store.LinkEnabled, 1, time.Time{})})
	now := base.Add(time.Minute)
	u := useLink(t, s, links[0].ID, now, "gate:198.51.100.7", "scanner?")
	checkUse(t, u, false, "pending", store.LinkPending, 0)
	if !sameLink(u.Link, links[0]) {
		t.Errorf("a refused use changed the link: %+v, was %+v", u.Link, links[0])
	}
	if n := setLinks(t, s, id, ids[1], nil, store.LinkRevoked); n != 1 {
		t.Fatalf("revoked %d links, want 1", n)
	}
	checkUse(t, useLink(t, s, links[1].ID, now, "gate", ""), false, "revoked", store.LinkRevoked, 0)
	if refused := eventsOf(view(t, s, id), "link_refused"); len(refused) != 0 {
		t.Errorf("link_refused events from UseLink = %+v, want none", refused)
	}
	if _, err := s.UseLink(context.Background(), 1<<40, now, "gate", ""); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("UseLink(unknown) error = %v, want ErrNotFound", err)
	}
}

func testUseLinkReenabled(t *testing.T, s store.Store) {
	id, _, links := withLinks(t, s, store.StateQueued,
		[]store.NewLink{newLink("reenable", store.LinkEnabled, 1, time.Time{})})
	checkUse(t, useLink(t, s, links[0].ID, base, "gate", ""), true, "", store.LinkUsed, 1)
	if n := setLinks(t, s, id, 0, []store.LinkState{store.LinkUsed}, store.LinkEnabled); n != 1 {
		t.Fatalf("re-enabled %d links, want 1", n)
	}
	// Moving a link gives no uses back.
	checkUse(t, useLink(t, s, links[0].ID, base, "gate", ""), false, "no uses left", store.LinkEnabled, 1)
}

func testSetLinkState(t *testing.T, s store.Store) {
	id, ids, links := withLinks(t, s, store.StateQueued,
		[]store.NewLink{newLink("r0a", store.LinkPending, 1, time.Time{}), newLink("r0b", store.LinkEnabled, 1, time.Time{})},
		[]store.NewLink{newLink("r1a", store.LinkPending, 1, time.Time{})},
		nil)
	pendingOnly := []store.LinkState{store.LinkPending}

	// One recipient's pending links.
	if n := setLinks(t, s, id, ids[0], pendingOnly, store.LinkEnabled); n != 1 {
		t.Errorf("enabled %d pending links of recipient 0, want 1", n)
	}
	if n := setLinks(t, s, id, ids[0], pendingOnly, store.LinkEnabled); n != 0 {
		t.Errorf("enabled %d pending links of recipient 0 a second time, want 0", n)
	}
	// A recipient without links.
	if n := setLinks(t, s, id, ids[2], nil, store.LinkRevoked); n != 0 {
		t.Errorf("moved %d links of a recipient without links", n)
	}
	// The whole message, from a state none is in.
	if n := setLinks(t, s, id, 0, []store.LinkState{store.LinkUsed, store.LinkExpired}, store.LinkRevoked); n != 0 {
		t.Errorf("revoked %d used or expired links, want 0", n)
	}
	// The whole message, from any state: a link already revoked stays put.
	if n := setLinks(t, s, id, ids[1], nil, store.LinkRevoked); n != 1 {
		t.Errorf("revoked %d links of recipient 1, want 1", n)
	}
	if n := setLinks(t, s, id, 0, nil, store.LinkRevoked); n != 2 {
		t.Errorf("revoked %d links of the message, want 2 (one was revoked already)", n)
	}
	if n := setLinks(t, s, id, 0, nil, store.LinkRevoked); n != 0 {
		t.Errorf("revoked %d links a second time, want 0", n)
	}
	// From a list of states.
	if n := setLinks(t, s, id, 0, []store.LinkState{store.LinkPending, store.LinkRevoked}, store.LinkEnabled); n != 3 {
		t.Errorf("enabled %d pending or revoked links, want 3", n)
	}

	v := view(t, s, id)
	for _, l := range v.Links {
		if l.State != store.LinkEnabled || l.Uses != 0 {
			t.Errorf("link %d after the moves = %+v, want enabled with no uses", l.ID, l)
		}
	}
	enabled, revoked := eventsOf(v, "link_enabled"), eventsOf(v, "link_revoked")
	if len(enabled) != 4 || len(revoked) != 3 {
		t.Fatalf("events = %+v, want 4 link_enabled and 3 link_revoked", v.Events)
	}
	if e := enabled[0]; e.RecipientID != ids[0] || e.Actor != "api:helpdesk@192.0.2.9" || e.Detail != "ticket 4711" || e.Time.IsZero() {
		t.Errorf("link_enabled event = %+v", e)
	}
	perRecipient := map[int64]int{}
	for _, e := range revoked {
		perRecipient[e.RecipientID]++
	}
	if perRecipient[ids[0]] != 2 || perRecipient[ids[1]] != 1 {
		t.Errorf("link_revoked events per recipient = %v, want 2 for %d and 1 for %d", perRecipient, ids[0], ids[1])
	}
	// Moved links work at the gate.
	checkUse(t, useLink(t, s, links[0].ID, base, "gate", ""), true, "", store.LinkUsed, 1)
}

func testSetLinkStateNotFound(t *testing.T, s store.Store) {
	ctx := context.Background()
	if _, err := s.SetLinkState(ctx, "no-such-message", 0, nil, store.LinkRevoked, "api", ""); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("SetLinkState(unknown message) error = %v, want ErrNotFound", err)
	}
	id, _, _ := withLinks(t, s, store.StateQueued, []store.NewLink{newLink("nf", store.LinkPending, 1, time.Time{})})
	_, other := simple(t, s, "nf-other", store.StateQueued)
	if _, err := s.SetLinkState(ctx, id, other[0], nil, store.LinkRevoked, "api", ""); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("SetLinkState with another message's recipient error = %v, want ErrNotFound", err)
	}
	if _, err := s.SetLinkState(ctx, id, 0, nil, "gone", "api", ""); err == nil {
		t.Errorf("SetLinkState to an unknown state succeeded")
	}
	if v := view(t, s, id); v.Links[0].State != store.LinkPending || len(v.Events) != 1 {
		t.Errorf("refused SetLinkState calls changed the message: %+v", v)
	}
}

func testRelease(t *testing.T, s store.Store) {
	id := newID("release")
	m := message(id)
	rs := []store.NewRecipient{
		rcpt(id, "held1@Example.COM", 0, store.StateHeld),
		rcpt(id, "queued@example.com", 0, store.StateQueued),
		rcpt(id, "held2@example.org", 0, store.StateHeld),
	}
	rs[0].Links = []store.NewLink{newLink("rel0", store.LinkPending, 1, time.Time{})}
	rs[1].Links = []store.NewLink{newLink("rel1", store.LinkPending, 1, time.Time{}), newLink("rel1r", store.LinkEnabled, 1, time.Time{})}
	rs[2].Links = []store.NewLink{newLink("rel2", store.LinkPending, 1, time.Time{})}
	ids := enqueue(t, s, m, [][]byte{[]byte("x")}, rs)
	if n := setLinks(t, s, id, ids[2], nil, store.LinkRevoked); n != 1 {
		t.Fatalf("revoked %d links, want 1", n)
	}

	now := base.Add(time.Hour)
	got, err := s.Release(context.Background(), id, now, "api:helpdesk@192.0.2.9", "false positive, ticket 4711")
	if err != nil {
		t.Fatalf("Release: %v", err)
	}
	if len(got) != 2 {
		t.Fatalf("Release returned %d pendings, want 2: %+v", len(got), got)
	}
	p := pending(t, s)
	for i, ri := range []int{0, 2} {
		want := store.Pending{
			RecipientID: ids[ri], MessageID: id, Tenant: m.Tenant, MailFrom: m.MailFrom,
			Address: rs[ri].Address, Domain: domain(rs[ri].Address), Class: m.Class, Size: m.Size,
			NextAttempt: now, ReceivedAt: m.ReceivedAt,
		}
		if !samePending(got[i], want) {
			t.Errorf("Release pending %d = %+v\nwant %+v", i, got[i], want)
		}
		if !samePending(p[ids[ri]], want) {
			t.Errorf("Pending after Release = %+v\nwant %+v", p[ids[ri]], want)
		}
	}
	v := view(t, s, id)
	for i, r := range v.Recipients {
		if r.State != store.StateQueued {
			t.Errorf("recipient %d after Release is %s, want queued", i, r.State)
		}
	}
	if r := v.Recipients[0]; !r.NextAttempt.Equal(now) || !r.UpdatedAt.Equal(now) {
		t.Errorf("released recipient = %+v, want next attempt and update at %v", r, now)
	}
	if r := v.Recipients[1]; !r.NextAttempt.Equal(rs[1].NextAttempt) {
		t.Errorf("the queued recipient's next attempt moved to %v", r.NextAttempt)
	}
	wantLinks := []store.LinkState{store.LinkEnabled, store.LinkEnabled, store.LinkEnabled, store.LinkRevoked}
	for i, l := range v.Links {
		if l.State != wantLinks[i] {
			t.Errorf("link %d after Release is %s, want %s", i, l.State, wantLinks[i])
		}
	}
	rel := eventsOf(v, "released")
	if len(rel) != 1 || rel[0].RecipientID != 0 || rel[0].Actor != "api:helpdesk@192.0.2.9" ||
		rel[0].Detail != "false positive, ticket 4711" || !rel[0].Time.Equal(now) {
		t.Errorf("released events = %+v", rel)
	}
	enabled := eventsOf(v, "link_enabled")
	if len(enabled) != 2 || enabled[0].RecipientID != ids[0] || enabled[1].RecipientID != ids[1] ||
		enabled[0].Actor != "api:helpdesk@192.0.2.9" {
		t.Errorf("link_enabled events = %+v, want one each for recipients %d and %d", enabled, ids[0], ids[1])
	}
	// The links released work.
	checkUse(t, useLink(t, s, v.Links[0].ID, now, "gate", ""), true, "", store.LinkUsed, 1)
}

func testReleaseIdempotent(t *testing.T, s store.Store) {
	id, _, _ := withLinks(t, s, store.StateHeld, []store.NewLink{newLink("idem", store.LinkPending, 1, time.Time{})})
	first, err := s.Release(context.Background(), id, base.Add(time.Hour), "api:helpdesk", "first")
	if err != nil || len(first) != 1 {
		t.Fatalf("first Release = %+v, %v; want one pending", first, err)
	}
	before := view(t, s, id)
	second, err := s.Release(context.Background(), id, base.Add(2*time.Hour), "api:admin", "second")
	if err != nil {
		t.Fatalf("second Release: %v", err)
	}
	if len(second) != 0 {
		t.Errorf("second Release returned %+v, want nothing to queue", second)
	}
	after := view(t, s, id)
	if r := after.Recipients[0]; r.State != store.StateQueued || !r.NextAttempt.Equal(base.Add(time.Hour)) {
		t.Errorf("second Release changed the recipient: %+v", r)
	}
	if !sameLink(after.Links[0], before.Links[0]) {
		t.Errorf("second Release changed the link: %+v, was %+v", after.Links[0], before.Links[0])
	}
	rel := eventsOf(after, "released")
	if len(rel) != 2 || rel[1].Actor != "api:admin" || rel[1].Detail != "second" {
		t.Errorf("released events = %+v, want both releases with their actors", rel)
	}
	if n := len(eventsOf(after, "link_enabled")); n != 1 {
		t.Errorf("%d link_enabled events after two releases, want 1", n)
	}
	// A message that never was held can be released too: it only records who asked.
	plain, _ := simple(t, s, "nothing-held", store.StateQueued)
	if got, err := s.Release(context.Background(), plain, base, "api:helpdesk", ""); err != nil || len(got) != 0 {
		t.Errorf("Release of a message with nothing held = %+v, %v", got, err)
	}
	if n := len(eventsOf(view(t, s, plain), "released")); n != 1 {
		t.Errorf("%d released events, want 1", n)
	}
}

func testReleaseNotFound(t *testing.T, s store.Store) {
	if _, err := s.Release(context.Background(), "no-such-message", base, "api", ""); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Release(unknown) error = %v, want ErrNotFound", err)
	}
}

func testHeldNoNextAttempt(t *testing.T, s store.Store) {
	id, ids := simple(t, s, "held-next", store.StateHeld, store.StateQueued) // rcpt sets NextAttempt on both
	v := view(t, s, id)
	if r := v.Recipients[0]; !r.NextAttempt.IsZero() {
		t.Errorf("held recipient has next attempt %v, want none", r.NextAttempt)
	}
	if r := v.Recipients[1]; r.NextAttempt.IsZero() {
		t.Errorf("queued recipient lost its next attempt")
	}
	if _, ok := pending(t, s)[ids[0]]; ok {
		t.Errorf("held recipient is pending")
	}
}

// testRecordAttemptEnablesLinks: a delivery recorded with EnableLinks turns
// that recipient's pending links on in the same write; a deferral does not.
func testRecordAttemptEnablesLinks(t *testing.T, s store.Store) {
	id, ids, _ := withLinks(t, s, store.StateQueued,
		[]store.NewLink{newLink("del0", store.LinkPending, 3, time.Time{})},
		[]store.NewLink{newLink("del1", store.LinkPending, 3, time.Time{})})
	ctx := context.Background()
	if err := s.RecordAttempt(ctx, store.Attempt{RecipientID: ids[1], MessageID: id, Time: base.Add(time.Minute),
		State: store.StateQueued, NextAttempt: base.Add(time.Hour), Code: 451, Reply: "4.7.1 later", EnableLinks: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordAttempt(ctx, store.Attempt{RecipientID: ids[0], MessageID: id, Time: base.Add(2 * time.Minute),
		State: store.StateDelivered, Code: 250, Reply: "2.0.0 ok", Host: "mx.example", EnableLinks: true}); err != nil {
		t.Fatal(err)
	}
	v := view(t, s, id)
	states := map[int64]store.LinkState{}
	for _, l := range v.Links {
		states[l.RecipientID] = l.State
	}
	if states[ids[0]] != store.LinkEnabled || states[ids[1]] != store.LinkPending {
		t.Fatalf("links after a delivery and a deferral with EnableLinks: %v", states)
	}
	if n := len(eventsOf(v, "link_enabled")); n != 1 {
		t.Fatalf("%d link_enabled events, want 1", n)
	}
}
