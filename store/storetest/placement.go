package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/certgate/certgate/store"
)

// placementsOf is the store's seed side; a backend without one fails.
func placementsOf(t *testing.T, s store.Store) store.Placements {
	t.Helper()
	if c, ok := s.(*closeOnce); ok {
		s = c.Store
	}
	p, ok := s.(store.Placements)
	if !ok {
		t.Fatalf("%T does not implement store.Placements", s)
	}
	return p
}

// seedRcpt is a seed copy of message id, queued.
func seedRcpt(id, seed, addr string) store.NewRecipient {
	r := rcpt(id, addr, 0, store.StateQueued)
	r.Seed, r.SeedProvider = seed, "seedlane"
	return r
}

// seeded enqueues a message of tenant received at received with one
// customer's copy and seed copies to the seeds, named seed-<i> at
// seed<i>@gmail.example, and returns its id and recipient ids.
func seeded(t *testing.T, s store.Store, tenant string, received time.Time, seeds int) (string, []int64) {
	t.Helper()
	id := newID("seeded")
	m := message(id)
	m.Tenant, m.ReceivedAt = tenant, received
	rs := []store.NewRecipient{rcpt(id, "customer@example.com", 0, store.StateQueued)}
	for i := range seeds {
		rs = append(rs, seedRcpt(id, fmt.Sprintf("seed-%d", i), fmt.Sprintf("seed%d@gmail.example", i)))
	}
	return id, enqueue(t, s, m, [][]byte{[]byte("Subject: seeded\r\n\r\nbody\r\n")}, rs)
}

func byTracking(t *testing.T, p store.Placements, tid string) store.Placement {
	t.Helper()
	pl, err := p.PlacementByTracking(context.Background(), tid)
	if err != nil {
		t.Fatalf("PlacementByTracking(%s): %v", tid, err)
	}
	return *pl
}

// placementOf reads recipient rid's placement through its tracking id.
func placementOf(t *testing.T, s store.Store, p store.Placements, msg string, rid int64) store.Placement {
	t.Helper()
	for _, r := range view(t, s, msg).Recipients {
		if r.ID == rid {
			return byTracking(t, p, r.TrackingID)
		}
	}
	t.Fatalf("no recipient %d in %s", rid, msg)
	return store.Placement{}
}

func deliver(t *testing.T, s store.Store, msg string, rid int64, at time.Time, provider string) {
	t.Helper()
	record(t, s, store.Attempt{RecipientID: rid, MessageID: msg, Time: at, State: store.StateDelivered,
		Provider: provider, Code: 250, Reply: "2.0.0 ok", EnableLinks: true})
}

// found records f and reports whether the folder class changed.
func found(t *testing.T, p store.Placements, rid int64, f store.Found) bool {
	t.Helper()
	return foundFrom(t, p, rid, f) != ""
}

// foundFrom records f and returns the folder class the copy had before a
// change ("" for none).
func foundFrom(t *testing.T, p store.Placements, rid int64, f store.Found) string {
	t.Helper()
	from, err := p.RecordFound(context.Background(), rid, f)
	if err != nil {
		t.Fatalf("RecordFound(%d, %s): %v", rid, f.Folder, err)
	}
	return from
}

func closePlacement(t *testing.T, p store.Placements, rid int64, now time.Time) {
	t.Helper()
	if err := p.ClosePlacement(context.Background(), rid, now); err != nil {
		t.Fatalf("ClosePlacement(%d): %v", rid, err)
	}
}

// samePlacement compares placements field by field: times by instant,
// verdicts as JSON values (a backend may store them reformatted).
func samePlacement(a, b store.Placement) bool {
	times := func(p *store.Placement) []time.Time {
		ts := []time.Time{p.DeliveredAt, p.ArrivedAt, p.DetectedAt, p.ClosedAt}
		p.DeliveredAt, p.ArrivedAt, p.DetectedAt, p.ClosedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
		return ts
	}
	ta, tb := times(&a), times(&b)
	for i := range ta {
		if !ta[i].Equal(tb[i]) {
			return false
		}
	}
	if !sameJSON(a.Verdicts, b.Verdicts) || len(a.Moves) != len(b.Moves) {
		return false
	}
	for i := range a.Moves {
		ma, mb := a.Moves[i], b.Moves[i]
		if ma.From != mb.From || ma.To != mb.To || !ma.At.Equal(mb.At) {
			return false
		}
	}
	a.Verdicts, b.Verdicts, a.Moves, b.Moves = nil, nil, nil, nil
	return reflect.DeepEqual(a, b)
}

func sameJSON(a, b json.RawMessage) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	var va, vb any
	return json.Unmarshal(a, &va) == nil && json.Unmarshal(b, &vb) == nil && reflect.DeepEqual(va, vb)
}

func recipientIDs(ps []store.Placement) []int64 {
	var out []int64
	for _, pl := range ps {
		out = append(out, pl.RecipientID)
	}
	return out
}

// placementEvents are the "placement" events of a message.
func placementEvents(t *testing.T, s store.Store, msg string) []store.Event {
	t.Helper()
	return eventsOf(view(t, s, msg), "placement")
}

// testSeedCopiesPending: Enqueue makes a pending placement for each seed
// copy, and nothing for a customer's; Seed is read back everywhere.
func testSeedCopiesPending(t *testing.T, s store.Store) {
	p := placementsOf(t, s)
	ctx := context.Background()
	id := newID("seeds")
	m := message(id)
	m.Class = "bulk"
	rs := []store.NewRecipient{
		rcpt(id, "customer@example.com", 0, store.StateQueued),
		seedRcpt(id, "gmail-1", "Seed1@Gmail.example"),
		seedRcpt(id, "outlook-1", "seed@outlook.example"),
	}
	rs[2].State = store.StateHeld
	ids := enqueue(t, s, m, [][]byte{[]byte("x")}, rs)

	v := view(t, s, id)
	page, err := s.MessagePage(ctx, id, store.EventPage{})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range rs {
		if v.Recipients[i].Seed != r.Seed || page.Recipients[i].Seed != r.Seed {
			t.Errorf("recipient %d has seed %q in Message, %q in MessagePage; want %q", i,
				v.Recipients[i].Seed, page.Recipients[i].Seed, r.Seed)
		}
	}
	pend := pending(t, s)
	if pend[ids[0]].Seed != "" || pend[ids[1]].Seed != "gmail-1" {
		t.Errorf("Pending seeds = %q, %q; want \"\" and gmail-1", pend[ids[0]].Seed, pend[ids[1]].Seed)
	}

	for i := 1; i < 3; i++ {
		want := store.Placement{RecipientID: ids[i], MessageID: id, Tenant: m.Tenant, Seed: rs[i].Seed,
			Address: rs[i].Address, TrackingID: rs[i].TrackingID, Header: m.MessageID, Class: "bulk",
			Folder: store.FolderPending, Provider: "seedlane"} // the seed's provider, until delivered
		if got := byTracking(t, p, rs[i].TrackingID); !samePlacement(got, want) {
			t.Errorf("placement of %s = %+v\nwant %+v", rs[i].Seed, got, want)
		}
		// Receivers may change the address's case.
		got, err := p.PlacementByHeader(ctx, m.MessageID, strings.ToUpper(rs[i].Address))
		if err != nil || !samePlacement(*got, want) {
			t.Errorf("PlacementByHeader(%s) = %+v, %v\nwant %+v", rs[i].Address, got, err, want)
		}
	}
	if _, err := p.PlacementByTracking(ctx, rs[0].TrackingID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("PlacementByTracking of a customer's copy: %v, want ErrNotFound", err)
	}
	if _, err := p.PlacementByTracking(ctx, "no-such-tracking-id"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("PlacementByTracking(unknown): %v, want ErrNotFound", err)
	}
	for _, addr := range []string{rs[0].Address, "other@gmail.example"} {
		if _, err := p.PlacementByHeader(ctx, m.MessageID, addr); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("PlacementByHeader(%s): %v, want ErrNotFound", addr, err)
		}
	}

	// A message sent again with the same header: the newest copy matches.
	again := newID("seeds-again")
	m2 := message(again)
	m2.MessageID = m.MessageID
	ids2 := enqueue(t, s, m2, [][]byte{[]byte("x")}, []store.NewRecipient{seedRcpt(again, "gmail-1", rs[1].Address)})
	if got, err := p.PlacementByHeader(ctx, m.MessageID, rs[1].Address); err != nil || got.RecipientID != ids2[0] {
		t.Errorf("PlacementByHeader with two copies = %+v, %v; want recipient %d", got, err, ids2[0])
	}
}

// testPlacementDelivered: a seed copy's delivery sets its placement's
// DeliveredAt and Provider; a deferral does not.
func testPlacementDelivered(t *testing.T, s store.Store) {
	p := placementsOf(t, s)
	id, ids := seeded(t, s, "issuer", base, 1)
	record(t, s, store.Attempt{RecipientID: ids[1], MessageID: id, Time: base.Add(time.Minute), State: store.StateQueued,
		NextAttempt: base.Add(2 * time.Minute), Provider: "gmail", Code: 421, Reply: "4.7.0 try later"})
	if pl := placementOf(t, s, p, id, ids[1]); !pl.DeliveredAt.IsZero() || pl.Provider != "seedlane" {
		t.Errorf("placement after a deferral = %+v, want not delivered, the seed's provider", pl)
	}
	at := base.Add(3 * time.Minute)
	deliver(t, s, id, ids[1], at, "gmail")
	deliver(t, s, id, ids[0], at, "gmail")
	pl := placementOf(t, s, p, id, ids[1])
	if !pl.DeliveredAt.Equal(at) || pl.Provider != "gmail" || pl.Folder != store.FolderPending || !pl.ClosedAt.IsZero() {
		t.Errorf("placement after delivery = %+v, want delivered at %v via gmail, pending", pl, at)
	}
	if ps, err := p.Placements(context.Background(), store.PlacementQuery{}); err != nil || len(ps) != 1 {
		t.Errorf("Placements after delivering both copies = %d, %v; want the seed copy's only", len(ps), err)
	}
}

// testPlacementBounced: a seed copy that bounces is missing at once, with
// a placement event, since only delivered copies reach a deadline.
func testPlacementBounced(t *testing.T, s store.Store) {
	p := placementsOf(t, s)
	id, ids := seeded(t, s, "issuer", base, 1)
	at := base.Add(time.Minute)
	record(t, s, store.Attempt{RecipientID: ids[1], MessageID: id, Time: at, State: store.StateBounced,
		Provider: "gmail", Code: 550, Reply: "5.1.1 no such user"})
	pl := placementOf(t, s, p, id, ids[1])
	if pl.Folder != store.FolderMissing || !pl.ClosedAt.Equal(at) || pl.Provider != "gmail" {
		t.Errorf("placement after a bounce = %+v, want missing via gmail, closed at %v", pl, at)
	}
	evs := placementEvents(t, s, id)
	if len(evs) != 1 || !strings.Contains(evs[0].Detail, "bounced") {
		t.Errorf("placement events after a bounce = %+v, want one saying it bounced", evs)
	}
	// The event log says whose copy it was, so that webhooks can tell
	// certgate's seed copies from customers' deliveries.
	log, err := s.EventsAfter(context.Background(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, e := range log {
		if e.MessageID == id && e.RecipientID == ids[1] {
			seen++
			if e.Seed != "seed-0" {
				t.Errorf("event %s of the seed copy: Seed %q, want seed-0", e.Kind, e.Seed)
			}
		}
	}
	if seen == 0 {
		t.Error("no event of the seed copy in the log")
	}
}

// testSeedLinksNeverEnabled: delivery, release and SetLinkState enable a
// customer's links and never a seed copy's in the same message.
func testSeedLinksNeverEnabled(t *testing.T, s store.Store) {
	ctx := context.Background()
	mk := func(label string, st store.State) (string, []int64) {
		id := newID(label)
		rs := []store.NewRecipient{rcpt(id, "customer@example.com", 0, st), seedRcpt(id, "gmail-1", "seed@gmail.example")}
		rs[1].State = st
		for i := range rs {
			rs[i].Links = []store.NewLink{newLink(fmt.Sprintf("%s-%d", label, i), store.LinkPending, 1, time.Time{})}
		}
		return id, enqueue(t, s, message(id), [][]byte{[]byte("x")}, rs)
	}
	check := func(how, id string, ids []int64) {
		t.Helper()
		v := view(t, s, id)
		var states []store.LinkState
		for _, l := range v.Links {
			states = append(states, l.State)
		}
		if !reflect.DeepEqual(states, []store.LinkState{store.LinkEnabled, store.LinkPending}) {
			t.Errorf("%s: links are %v, want the customer's enabled, the seed's pending", how, states)
		}
		for _, e := range eventsOf(v, "link_enabled") {
			if e.RecipientID == ids[1] {
				t.Errorf("%s: link_enabled event for the seed copy: %+v", how, e)
			}
		}
	}

	id, ids := mk("seedlinks-delivery", store.StateQueued)
	deliver(t, s, id, ids[0], base, "gmail")
	deliver(t, s, id, ids[1], base, "gmail")
	check("delivery", id, ids)

	id, ids = mk("seedlinks-release", store.StateHeld)
	got, err := s.Release(ctx, id, base, "api:helpdesk@192.0.2.9", "ok")
	if err != nil {
		t.Fatalf("Release: %v", err)
	}
	if len(got) != 2 || got[1].RecipientID != ids[1] || got[1].Seed != "gmail-1" {
		t.Errorf("Release = %+v, want both copies queued, the seed copy with its seed", got)
	}
	check("release", id, ids)

	id, ids = mk("seedlinks-set", store.StateQueued)
	if n := setLinks(t, s, id, ids[1], nil, store.LinkEnabled); n != 0 {
		t.Errorf("SetLinkState(seed copy, enabled) moved %d links", n)
	}
	if n := setLinks(t, s, id, 0, nil, store.LinkEnabled); n != 1 {
		t.Errorf("SetLinkState(message, enabled) moved %d links, want the customer's", n)
	}
	check("SetLinkState", id, ids)
	// Only enabling is kept from a seed copy's links.
	if n := setLinks(t, s, id, ids[1], nil, store.LinkRevoked); n != 1 {
		t.Errorf("SetLinkState(seed copy, revoked) moved %d links, want 1", n)
	}
}

// testRecordFound: the first find, the same folder again, a move, and a
// closed placement left alone.
func testRecordFound(t *testing.T, s store.Store) {
	p := placementsOf(t, s)
	ctx := context.Background()
	id, ids := seeded(t, s, "issuer", base, 1)
	rid := ids[1]
	delivered := base.Add(time.Minute)
	deliver(t, s, id, rid, delivered, "gmail")
	want := placementOf(t, s, p, id, rid)

	first := store.Found{Folder: store.FolderJunk, Mailbox: "[Gmail]/Spam", UIDValidity: 7, UID: 42,
		ArrivedAt: delivered.Add(2 * time.Second), DetectedAt: delivered.Add(3 * time.Second),
		Verdicts: json.RawMessage(`{"spf":"pass","dkim":"pass"}`)}
	if !found(t, p, rid, first) {
		t.Error("first find reported no change")
	}
	want.Folder, want.Mailbox, want.UIDValidity, want.UID = first.Folder, first.Mailbox, 7, 42
	want.ArrivedAt, want.DetectedAt, want.Verdicts = first.ArrivedAt, first.DetectedAt, first.Verdicts
	if got := placementOf(t, s, p, id, rid); !samePlacement(got, want) || got.Moves != nil {
		t.Errorf("after the first find = %+v\nwant %+v", got, want)
	}
	evs := placementEvents(t, s, id)
	if len(evs) != 1 || evs[0].RecipientID != rid || evs[0].Actor != "placement" || !evs[0].Time.Equal(first.DetectedAt) ||
		!strings.Contains(evs[0].Detail, "seed-0") || !strings.Contains(evs[0].Detail, "junk") {
		t.Fatalf("placement events after the first find = %+v", evs)
	}

	// The same folder again: only the location (and verdicts given) change.
	again := store.Found{Folder: store.FolderJunk, Mailbox: "[Gmail]/Spam", UIDValidity: 8, UID: 3,
		ArrivedAt: base.Add(time.Hour), DetectedAt: base.Add(time.Hour)}
	if found(t, p, rid, again) {
		t.Error("the same folder again reported a change")
	}
	want.UIDValidity, want.UID = 8, 3
	if got := placementOf(t, s, p, id, rid); !samePlacement(got, want) {
		t.Errorf("after the same folder again = %+v\nwant %+v", got, want)
	}
	again.Verdicts = json.RawMessage(`{"spf":"fail"}`)
	found(t, p, rid, again)
	want.Verdicts = again.Verdicts
	if got := placementOf(t, s, p, id, rid); !samePlacement(got, want) {
		t.Errorf("after new verdicts = %+v\nwant %+v", got, want)
	}
	if evs := placementEvents(t, s, id); len(evs) != 1 {
		t.Errorf("the same folder again recorded events: %+v", evs)
	}

	// A move to the inbox.
	// A look that raced the move below: seen in the inbox before the
	// junk find was recorded. It must not count as a move.
	stale := store.Found{Folder: store.FolderInbox, Mailbox: "INBOX", UIDValidity: 1, UID: 98, DetectedAt: first.DetectedAt}
	if from := foundFrom(t, p, rid, stale); from != "" {
		t.Errorf("a stale find in another folder moved the copy from %q", from)
	}
	if got := placementOf(t, s, p, id, rid); got.Folder != store.FolderJunk || got.UID == 98 {
		t.Errorf("after a stale find: %+v, want junk where it was", got)
	}
	moved := store.Found{Folder: store.FolderInbox, Mailbox: "INBOX", UIDValidity: 1, UID: 99, DetectedAt: base.Add(2 * time.Hour)}
	if from := foundFrom(t, p, rid, moved); from != store.FolderJunk {
		t.Errorf("a move reported from %q, want junk", from)
		t.Error("a move reported no change")
	}
	want.Folder, want.Mailbox, want.UIDValidity, want.UID = store.FolderInbox, "INBOX", 1, 99
	want.Moves = []store.Move{{From: store.FolderJunk, To: store.FolderInbox, At: moved.DetectedAt}}
	if got := placementOf(t, s, p, id, rid); !samePlacement(got, want) {
		t.Errorf("after a move = %+v\nwant %+v", got, want)
	}
	evs = placementEvents(t, s, id)
	if len(evs) != 2 || !evs[1].Time.Equal(moved.DetectedAt) || !strings.Contains(evs[1].Detail, "junk -> inbox") {
		t.Errorf("placement events after a move = %+v", evs)
	}

	// Closed: nothing changes any more.
	closePlacement(t, p, rid, base.Add(3*time.Hour))
	want.ClosedAt = base.Add(3 * time.Hour)
	if found(t, p, rid, store.Found{Folder: store.FolderJunk, Mailbox: "Spam", UID: 1, DetectedAt: base.Add(4 * time.Hour)}) {
		t.Error("a find after closing reported a change")
	}
	if got := placementOf(t, s, p, id, rid); !samePlacement(got, want) {
		t.Errorf("after a find once closed = %+v\nwant %+v", got, want)
	}
	if evs := placementEvents(t, s, id); len(evs) != 2 {
		t.Errorf("events after closing a found copy and finding it again: %+v", evs)
	}

	// The webhook layer follows the event log: the event is there with the address.
	var seen bool
	for _, e := range eventsAfter(t, s, 0, 1000) {
		if e.Kind == "placement" && e.RecipientID == rid {
			seen = seen || e.Recipient == "seed0@gmail.example" && e.Tenant == "issuer"
		}
	}
	if !seen {
		t.Error("no placement event with its recipient and tenant in EventsAfter")
	}

	for _, bad := range []int64{ids[0], 1 << 40} {
		if _, err := p.RecordFound(ctx, bad, moved); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("RecordFound(%d), not a seed copy: %v, want ErrNotFound", bad, err)
		}
	}
	if _, err := p.RecordFound(ctx, rid, store.Found{Folder: store.FolderPending}); err == nil {
		t.Error("RecordFound in the pending folder succeeded")
	}
}

// testMaxMoves: a copy bounced between folders keeps its latest MaxMoves.
func testMaxMoves(t *testing.T, s store.Store) {
	p := placementsOf(t, s)
	id, ids := seeded(t, s, "issuer", base, 1)
	rid := ids[1]
	found(t, p, rid, store.Found{Folder: store.FolderInbox, Mailbox: "INBOX", DetectedAt: base})
	folders := []string{store.FolderJunk, store.FolderInbox}
	const n = store.MaxMoves + 3
	for i := 1; i <= n; i++ {
		found(t, p, rid, store.Found{Folder: folders[(i-1)%2], Mailbox: "x", DetectedAt: base.Add(time.Duration(i) * time.Minute)})
	}
	pl := placementOf(t, s, p, id, rid)
	if len(pl.Moves) != store.MaxMoves {
		t.Fatalf("%d moves kept after %d, want %d", len(pl.Moves), n, store.MaxMoves)
	}
	for j, mv := range pl.Moves {
		i := n - store.MaxMoves + 1 + j // the oldest moves went
		if mv.To != folders[(i-1)%2] || mv.From != folders[i%2] || !mv.At.Equal(base.Add(time.Duration(i)*time.Minute)) {
			t.Errorf("move %d = %+v, want move %d", j, mv, i)
		}
	}
	if evs := placementEvents(t, s, id); len(evs) != n+1 {
		t.Errorf("%d placement events, want one per find and move: %d", len(evs), n+1)
	}
}

// testDuePlacements: open, delivered placements by delivery, oldest first.
func testDuePlacements(t *testing.T, s store.Store) {
	p := placementsOf(t, s)
	ctx := context.Background()
	id, ids := seeded(t, s, "issuer", base, 5)
	at := func(m int) time.Time { return base.Add(time.Duration(m) * time.Minute) }
	deliver(t, s, id, ids[1], at(3), "gmail")
	deliver(t, s, id, ids[2], at(1), "gmail")
	deliver(t, s, id, ids[3], at(2), "outlook")
	deliver(t, s, id, ids[4], at(0), "gmail") // closed below
	// ids[5] is never delivered.
	found(t, p, ids[3], store.Found{Folder: store.FolderInbox, Mailbox: "INBOX", DetectedAt: at(2)})
	closePlacement(t, p, ids[4], at(4))

	due := func(before time.Time, limit int) []int64 {
		t.Helper()
		ps, err := p.DuePlacements(ctx, "", before, limit)
		if err != nil {
			t.Fatalf("DuePlacements(%v, %d): %v", before, limit, err)
		}
		return recipientIDs(ps)
	}
	// One seed's: seed-2 is ids[3]'s.
	if ps, err := p.DuePlacements(ctx, "seed-2", at(10), 10); err != nil || !reflect.DeepEqual(recipientIDs(ps), []int64{ids[3]}) {
		t.Errorf("DuePlacements of seed-2 = %v, %v; want %d alone", recipientIDs(ps), err, ids[3])
	}
	for _, c := range []struct {
		before time.Time
		limit  int
		want   []int64
	}{
		{at(2), 10, []int64{ids[2], ids[3]}}, // at or before; found but open is due
		{at(10), 10, []int64{ids[2], ids[3], ids[1]}},
		{at(10), 2, []int64{ids[2], ids[3]}},
		{at(0), 10, nil},
	} {
		if got := due(c.before, c.limit); !reflect.DeepEqual(got, c.want) {
			t.Errorf("DuePlacements(%v, %d) = %v, want %v", c.before, c.limit, got, c.want)
		}
	}
}

// testClosePlacement: a pending copy becomes missing with an event; a
// found one keeps its folder; closing twice changes nothing.
func testClosePlacement(t *testing.T, s store.Store) {
	p := placementsOf(t, s)
	ctx := context.Background()
	id, ids := seeded(t, s, "issuer", base, 2)
	deliver(t, s, id, ids[1], base, "gmail")
	deliver(t, s, id, ids[2], base, "gmail")
	found(t, p, ids[2], store.Found{Folder: store.FolderInbox, Mailbox: "INBOX", DetectedAt: base.Add(time.Second)})

	deadline := base.Add(15 * time.Minute)
	closePlacement(t, p, ids[1], deadline)
	closePlacement(t, p, ids[2], deadline)
	closePlacement(t, p, ids[1], deadline.Add(time.Hour))
	missing, inbox := placementOf(t, s, p, id, ids[1]), placementOf(t, s, p, id, ids[2])
	if missing.Folder != store.FolderMissing || !missing.ClosedAt.Equal(deadline) {
		t.Errorf("closed pending copy = %+v, want missing, closed at %v", missing, deadline)
	}
	if inbox.Folder != store.FolderInbox || !inbox.ClosedAt.Equal(deadline) {
		t.Errorf("closed found copy = %+v, want inbox, closed at %v", inbox, deadline)
	}
	evs := placementEvents(t, s, id)
	if len(evs) != 2 {
		t.Fatalf("placement events = %+v, want the find and one missing", evs)
	}
	if e := evs[1]; e.RecipientID != ids[1] || !e.Time.Equal(deadline) || !strings.Contains(e.Detail, "missing") {
		t.Errorf("missing event = %+v", e)
	}
	if err := p.ClosePlacement(ctx, 1<<40, deadline); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ClosePlacement(unknown): %v, want ErrNotFound", err)
	}
}

// testPlacementsQuery: filters, order and limits of Placements and
// PlacementCounts, the tenants filter included.
func testPlacementsQuery(t *testing.T, s store.Store) {
	p := placementsOf(t, s)
	ctx := context.Background()
	hour := func(h int) time.Time { return base.Add(time.Duration(h) * time.Hour) }
	// Accepted at hour 0 (a: 2 seeds, b: 1 seed, c: 1 seed); delivered later.
	a, aIDs := seeded(t, s, "ca", hour(0), 2)
	b, bIDs := seeded(t, s, "ca", hour(0), 1)
	c, cIDs := seeded(t, s, "other", hour(0), 1)
	deliver(t, s, a, aIDs[1], hour(1), "gmail")
	deliver(t, s, a, aIDs[2], hour(3), "outlook")
	deliver(t, s, c, cIDs[1], hour(2), "gmail")
	found(t, p, aIDs[1], store.Found{Folder: store.FolderJunk, Mailbox: "Spam", DetectedAt: hour(1)})
	found(t, p, cIDs[1], store.Found{Folder: store.FolderInbox, Mailbox: "INBOX", DetectedAt: hour(2)})
	// b's copy is not delivered: it sorts and filters by its acceptance.

	ids := func(q store.PlacementQuery) []int64 {
		t.Helper()
		ps, err := p.Placements(ctx, q)
		if err != nil {
			t.Fatalf("Placements(%+v): %v", q, err)
		}
		return recipientIDs(ps)
	}
	for _, tc := range []struct {
		q    store.PlacementQuery
		want []int64
	}{
		{store.PlacementQuery{}, []int64{aIDs[2], cIDs[1], aIDs[1], bIDs[1]}},
		{store.PlacementQuery{Limit: 2}, []int64{aIDs[2], cIDs[1]}},
		{store.PlacementQuery{Tenants: []string{"ca"}}, []int64{aIDs[2], aIDs[1], bIDs[1]}},
		{store.PlacementQuery{Tenants: []string{"other", "ca"}, Provider: "gmail"}, []int64{cIDs[1], aIDs[1]}},
		{store.PlacementQuery{Tenants: []string{"nobody"}}, nil},
		{store.PlacementQuery{Seed: "seed-1"}, []int64{aIDs[2]}},
		{store.PlacementQuery{MessageID: a}, []int64{aIDs[2], aIDs[1]}},
		{store.PlacementQuery{MessageID: b}, []int64{bIDs[1]}},
		{store.PlacementQuery{Since: hour(1)}, []int64{aIDs[2], cIDs[1], aIDs[1]}},
		{store.PlacementQuery{Since: hour(2), Provider: "gmail"}, []int64{cIDs[1]}},
	} {
		if got := ids(tc.q); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Placements(%+v) = %v, want %v", tc.q, got, tc.want)
		}
	}

	counts := func(q store.PlacementQuery) map[string]int64 {
		t.Helper()
		cs, err := p.PlacementCounts(ctx, q)
		if err != nil {
			t.Fatalf("PlacementCounts(%+v): %v", q, err)
		}
		out := map[string]int64{}
		for _, c := range cs {
			out[c.Provider+"/"+c.Folder] = c.Count
		}
		return out
	}
	for _, tc := range []struct {
		q    store.PlacementQuery
		want map[string]int64
	}{
		{store.PlacementQuery{Limit: 1}, map[string]int64{"gmail/junk": 1, "gmail/inbox": 1, "outlook/pending": 1, "seedlane/pending": 1}},
		{store.PlacementQuery{Tenants: []string{"ca"}}, map[string]int64{"gmail/junk": 1, "outlook/pending": 1, "seedlane/pending": 1}},
		{store.PlacementQuery{Provider: "gmail"}, map[string]int64{"gmail/junk": 1, "gmail/inbox": 1}},
		{store.PlacementQuery{Since: hour(2)}, map[string]int64{"gmail/inbox": 1, "outlook/pending": 1}},
		{store.PlacementQuery{Tenants: []string{"nobody"}}, map[string]int64{}},
	} {
		if got := counts(tc.q); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("PlacementCounts(%+v) = %v, want %v", tc.q, got, tc.want)
		}
	}

	// More than a page: 50 by default, at most 500.
	many := newID("many")
	var rs []store.NewRecipient
	for i := range 501 {
		rs = append(rs, seedRcpt(many, "bulk-seed", fmt.Sprintf("s%d@gmail.example", i)))
	}
	enqueue(t, s, message(many), [][]byte{[]byte("x")}, rs)
	for _, c := range []struct{ limit, want int }{{0, 50}, {-1, 50}, {1000, 500}} {
		if got := ids(store.PlacementQuery{Seed: "bulk-seed", Limit: c.limit}); len(got) != c.want {
			t.Errorf("Placements(limit %d) = %d placements, want %d", c.limit, len(got), c.want)
		}
	}
	if got := counts(store.PlacementQuery{Seed: "bulk-seed"}); got["seedlane/pending"] != 501 {
		t.Errorf("PlacementCounts of 501 copies = %v", got)
	}
}

// testSeedFolder: zeros for a folder never seen, then what was stored.
func testSeedFolder(t *testing.T, s store.Store) {
	p := placementsOf(t, s)
	ctx := context.Background()
	get := func(seed, mailbox string) [2]uint32 {
		t.Helper()
		v, u, err := p.SeedFolder(ctx, seed, mailbox)
		if err != nil {
			t.Fatalf("SeedFolder(%s, %s): %v", seed, mailbox, err)
		}
		return [2]uint32{v, u}
	}
	set := func(seed, mailbox string, v, u uint32) {
		t.Helper()
		if err := p.SetSeedFolder(ctx, seed, mailbox, v, u); err != nil {
			t.Fatalf("SetSeedFolder(%s, %s): %v", seed, mailbox, err)
		}
	}
	if got := get("gmail-1", "INBOX"); got != [2]uint32{} {
		t.Errorf("SeedFolder never set = %v, want zeros", got)
	}
	set("gmail-1", "INBOX", 1, 10)
	set("gmail-1", "[Gmail]/Spam", 4000000000, 4294967295) // the whole uint32 range
	set("gmail-1", "INBOX", 2, 11)
	for _, c := range []struct {
		seed, mailbox string
		want          [2]uint32
	}{
		{"gmail-1", "INBOX", [2]uint32{2, 11}},
		{"gmail-1", "[Gmail]/Spam", [2]uint32{4000000000, 4294967295}},
		{"gmail-2", "INBOX", [2]uint32{}},
	} {
		if got := get(c.seed, c.mailbox); got != c.want {
			t.Errorf("SeedFolder(%s, %s) = %v, want %v", c.seed, c.mailbox, got, c.want)
		}
	}
}

// testDeletePlacements: retention takes a finished message's placements
// with it and leaves those of a message still held.
func testDeletePlacements(t *testing.T, s store.Store) {
	p := placementsOf(t, s)
	ctx := context.Background()
	old := base.Add(-100 * 24 * time.Hour)
	gone, ids := seeded(t, s, "issuer", old, 1)
	deliver(t, s, gone, ids[0], old, "gmail")
	deliver(t, s, gone, ids[1], old, "gmail")
	tid := placementOf(t, s, p, gone, ids[1]).TrackingID
	held := newID("held-seed")
	hm := message(held)
	hm.ReceivedAt = old
	hr := seedRcpt(held, "gmail-1", "seed@gmail.example")
	hr.State = store.StateHeld
	enqueue(t, s, hm, [][]byte{[]byte("x")}, []store.NewRecipient{hr})

	if n, err := s.DeleteMessages(ctx, base, 10); err != nil || n != 1 {
		t.Fatalf("DeleteMessages = %d, %v; want the delivered one", n, err)
	}
	if _, err := p.PlacementByTracking(ctx, tid); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("PlacementByTracking after its message was deleted: %v", err)
	}
	ps, err := p.Placements(ctx, store.PlacementQuery{})
	if err != nil || len(ps) != 1 || ps[0].MessageID != held {
		t.Errorf("Placements after retention = %+v, %v; want the held message's only", ps, err)
	}
	if cs, err := p.PlacementCounts(ctx, store.PlacementQuery{}); err != nil || len(cs) != 1 || cs[0].Count != 1 {
		t.Errorf("PlacementCounts after retention = %+v, %v", cs, err)
	}
}
