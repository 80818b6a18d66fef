// Package storetest is the conformance suite for store.Store: every backend
// (SQLite, PostgreSQL) runs the same Run from its own tests, so callers can
// rely on the contract rather than on one implementation.
//
// Times in the suite are whole microseconds, the finest PostgreSQL keeps; a
// backend must return them unchanged.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certgate/certgate/store"
)

// Run runs the suite. open must return a new, empty store for each call,
// which also implements store.Placements; Run closes every store it opens.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	RunExcept(t, open, nil)
}

// RunExcept is Run for a backend still being written: each test named in
// notYet is skipped with its reason, so the gap shows in every run (go
// test -v lists them as SKIP). A name that is not a test of the suite
// fails, so that the list cannot outlive what it names.
func RunExcept(t *testing.T, open func(t *testing.T) store.Store, notYet map[string]string) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"EnqueueAndRead", testEnqueueAndRead},
		{"AcceptedActorWithoutAuth", testActorWithoutAuth},
		{"Data", testData},
		{"Pending", testPending},
		{"PendingStopsOnError", testPendingStops},
		{"HeldIsNotPending", testHeldNotPending},
		{"Deferred", testDeferred},
		{"DeliveredAndBounced", testFinal},
		{"ContentsDroppedWhenFinal", testContentsDropped},
		{"HeldKeepsContents", testHeldKeepsContents},
		{"AddEvent", testAddEvent},
		{"NotFound", testNotFound},
		{"DuplicateMessageID", testDuplicateMessage},
		{"DuplicateTrackingIDLeavesNothing", testDuplicateTracking},
		{"InvalidEnqueue", testInvalidEnqueue},
		{"ConcurrentEnqueue", testConcurrentEnqueue},
		{"CanceledContext", testCanceled},
		{"WriteAfterClose", testWriteAfterClose},

		{"LinksStoredAndInView", testLinksStored},
		{"LinkByToken", testLinkByToken},
		{"DuplicateTokenHashLeavesNothing", testDuplicateTokenHash},
		{"InvalidLinks", testInvalidLinks},
		{"UseLinkUntilUsed", testUseLinkUntilUsed},
		{"UseLinkUnlimited", testUseLinkUnlimited},
		{"UseLinkConcurrent", testUseLinkConcurrent},
		{"UseLinkExpiry", testUseLinkExpiry},
		{"UseLinkRefusals", testUseLinkRefusals},
		{"UseLinkReenabledAfterUsed", testUseLinkReenabled},
		{"SetLinkState", testSetLinkState},
		{"RecordAttemptEnablesLinks", testRecordAttemptEnablesLinks},
		{"SetLinkStateNotFound", testSetLinkStateNotFound},
		{"Release", testRelease},
		{"ReleaseIsIdempotent", testReleaseIdempotent},
		{"ReleaseNotFound", testReleaseNotFound},
		{"HeldHasNoNextAttempt", testHeldNoNextAttempt},

		{"SearchTenant", testSearchTenant},
		{"SearchTenants", testSearchTenants},
		{"SearchRecipient", testSearchRecipient},
		{"SearchState", testSearchState},
		{"SearchTime", testSearchTime},
		{"SearchHeaders", testSearchHeaders},
		{"SearchPaging", testSearchPaging},
		{"SearchLimits", testSearchLimits},

		{"EventsAfter", testEventsAfter},
		{"EventsAfterWhileWriting", testEventsAfterWhileWriting},
		{"Cursor", testCursor},

		{"RefuseLink", testRefuseLink},
		{"AddEventCount", testAddEventCount},
		{"MessagePage", testMessagePage},
		{"DeleteEvents", testDeleteEvents},
		{"DeleteMessages", testDeleteMessages},
		{"IDsNeverGoBack", testIDsNeverGoBack},

		{"SeedCopiesArePending", testSeedCopiesPending},
		{"SeedPlacementDelivered", testPlacementDelivered},
		{"SeedPlacementBounced", testPlacementBounced},
		{"LaneStates", testLaneStates},
		{"IdempotencyKeys", testIdempotencyKeys},
		{"IdempotencyKeysConcurrent", testIdempotencyConcurrent},
		{"IdempotencyAnswerWithMessage", testIdempotencyAnswerWithMessage},
		{"LaneEvents", testLaneEvents},
		{"SeedLinksNeverEnabled", testSeedLinksNeverEnabled},
		{"RecordFound", testRecordFound},
		{"RecordFoundKeepsMaxMoves", testMaxMoves},
		{"DuePlacements", testDuePlacements},
		{"ClosePlacement", testClosePlacement},
		{"PlacementsQuery", testPlacementsQuery},
		{"SeedFolder", testSeedFolder},
		{"DeleteMessagesTakesPlacements", testDeletePlacements},
	}
	known := make(map[string]bool, len(tests))
	for _, tc := range tests {
		known[tc.name] = true
	}
	for name := range notYet {
		if !known[name] {
			t.Errorf("RunExcept: %q is not a test of the suite", name)
		}
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if why, ok := notYet[tc.name]; ok {
				t.Skipf("not yet: %s", why)
			}
			s := &closeOnce{Store: open(t)}
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tc.fn(t, s)
		})
	}
}

// closeOnce lets a test close its store early without the cleanup closing
// it again: the contract does not promise that a second Close is harmless.
type closeOnce struct {
	store.Store
	once sync.Once
	err  error
}

func (c *closeOnce) Close() error {
	c.once.Do(func() { c.err = c.Store.Close() })
	return c.err
}

var seq atomic.Int64

// base is a fixed instant in whole microseconds.
var base = time.Date(2026, 3, 14, 9, 26, 53, 589793000, time.UTC)

// newID returns a message id unique within the test binary run.
func newID(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, time.Now().UnixNano(), seq.Add(1))
}

func message(id string) store.Message {
	return store.Message{
		ID:         id,
		Tenant:     "issuer",
		MailFrom:   "bounces@issuer.example",
		HeaderFrom: "certs@issuer.example",
		MessageID:  id + "@relay.issuer.example",
		Subject:    "Your certificate is ready",
		Class:      "transactional",
		Size:       1234,
		ClientAddr: "192.0.2.1",
		AuthUser:   "app",
		ReceivedAt: base,
	}
}

func rcpt(id, addr string, content int, state store.State) store.NewRecipient {
	return store.NewRecipient{
		Address:     addr,
		TrackingID:  id + "/" + addr,
		Prefix:      []byte("X-Certgate-Tracking: " + id + "/" + addr + "\r\n"),
		Content:     content,
		State:       state,
		NextAttempt: base.Add(time.Minute),
	}
}

func enqueue(t *testing.T, s store.Store, m store.Message, contents [][]byte, rcpts []store.NewRecipient) []int64 {
	t.Helper()
	ids, err := s.Enqueue(context.Background(), m, contents, rcpts)
	if err != nil {
		t.Fatalf("Enqueue(%s): %v", m.ID, err)
	}
	if len(ids) != len(rcpts) {
		t.Fatalf("Enqueue(%s) returned %d ids for %d recipients", m.ID, len(ids), len(rcpts))
	}
	return ids
}

// simple enqueues a message with the given recipients, all sharing one content.
func simple(t *testing.T, s store.Store, prefix string, states ...store.State) (string, []int64) {
	t.Helper()
	id := newID(prefix)
	var rs []store.NewRecipient
	for i, st := range states {
		rs = append(rs, rcpt(id, fmt.Sprintf("user%d@Example.COM", i), 0, st))
	}
	return id, enqueue(t, s, message(id), [][]byte{[]byte("Subject: hi\r\n\r\nbody\r\n")}, rs)
}

func view(t *testing.T, s store.Store, id string) *store.MessageView {
	t.Helper()
	v, err := s.Message(context.Background(), id)
	if err != nil {
		t.Fatalf("Message(%s): %v", id, err)
	}
	return v
}

func pending(t *testing.T, s store.Store) map[int64]store.Pending {
	t.Helper()
	out := map[int64]store.Pending{}
	err := s.Pending(context.Background(), func(p store.Pending) error {
		if _, dup := out[p.RecipientID]; dup {
			t.Errorf("Pending yielded recipient %d twice", p.RecipientID)
		}
		out[p.RecipientID] = p
		return nil
	})
	if err != nil {
		t.Fatalf("Pending: %v", err)
	}
	return out
}

func record(t *testing.T, s store.Store, a store.Attempt) {
	t.Helper()
	if err := s.RecordAttempt(context.Background(), a); err != nil {
		t.Fatalf("RecordAttempt(%d, %s): %v", a.RecipientID, a.State, err)
	}
}

func eventsOf(v *store.MessageView, kind string) []store.Event {
	var out []store.Event
	for _, e := range v.Events {
		if e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

func testEnqueueAndRead(t *testing.T, s store.Store) {
	id := newID("read")
	m := message(id)
	contents := [][]byte{[]byte("A"), []byte("B")}
	rs := []store.NewRecipient{
		rcpt(id, "Alice@Example.COM", 0, store.StateQueued),
		rcpt(id, "bob@sub.example.org", 1, store.StateHeld),
		rcpt(id, "odd@name@Tricky.Example", 0, store.StateQueued),
	}
	rs[1].NextAttempt = time.Time{}
	ids := enqueue(t, s, m, contents, rs)
	for i := 1; i < len(ids); i++ {
		if ids[i] == ids[i-1] || ids[i] == 0 {
			t.Fatalf("recipient ids not distinct and non-zero: %v", ids)
		}
	}

	v := view(t, s, id)
	if got := v.Message; got.ID != m.ID || got.Tenant != m.Tenant || got.MailFrom != m.MailFrom ||
		got.HeaderFrom != m.HeaderFrom || got.MessageID != m.MessageID || got.Subject != m.Subject ||
		got.Class != m.Class || got.Size != m.Size || got.ClientAddr != m.ClientAddr ||
		got.AuthUser != m.AuthUser || !got.ReceivedAt.Equal(m.ReceivedAt) {
		t.Errorf("Message = %+v\nwant %+v", got, m)
	}
	if len(v.Recipients) != len(rs) {
		t.Fatalf("got %d recipients, want %d", len(v.Recipients), len(rs))
	}
	wantDomain := []string{"example.com", "sub.example.org", "tricky.example"}
	for i, r := range v.Recipients {
		w := rs[i]
		if r.ID != ids[i] || r.MessageID != id || r.Address != w.Address || r.Domain != wantDomain[i] ||
			r.TrackingID != w.TrackingID || r.State != w.State || r.Attempts != 0 ||
			!r.NextAttempt.Equal(w.NextAttempt) || r.Provider != "" || r.LastCode != 0 || r.LastReply != "" {
			t.Errorf("recipient %d = %+v\nwant address %s domain %s state %s next %v id %d",
				i, r, w.Address, wantDomain[i], w.State, w.NextAttempt, ids[i])
		}
		if r.UpdatedAt.IsZero() {
			t.Errorf("recipient %d has zero UpdatedAt", i)
		}
	}
	acc := eventsOf(v, "accepted")
	if len(acc) != 1 || len(v.Events) != 1 {
		t.Fatalf("events = %+v, want exactly one accepted", v.Events)
	}
	e := acc[0]
	if e.MessageID != id || e.RecipientID != 0 || e.Actor != "smtp:app@192.0.2.1" || e.Time.IsZero() || e.ID == 0 {
		t.Errorf("accepted event = %+v", e)
	}
	if !strings.Contains(e.Detail, "3 recipients") || !strings.Contains(e.Detail, "transactional") {
		t.Errorf("accepted detail %q lacks the recipient count or the class", e.Detail)
	}
}

func testActorWithoutAuth(t *testing.T, s store.Store) {
	id := newID("noauth")
	m := message(id)
	m.AuthUser = ""
	m.Class = "bulk"
	enqueue(t, s, m, [][]byte{[]byte("x")}, []store.NewRecipient{rcpt(id, "a@example.com", 0, store.StateQueued)})
	acc := eventsOf(view(t, s, id), "accepted")
	if len(acc) != 1 || acc[0].Actor != "smtp:192.0.2.1" {
		t.Fatalf("accepted events = %+v, want actor smtp:192.0.2.1", acc)
	}
	if !strings.Contains(acc[0].Detail, "1 recipient") || !strings.Contains(acc[0].Detail, "bulk") {
		t.Errorf("accepted detail %q lacks the recipient count or the class", acc[0].Detail)
	}
}

func testData(t *testing.T, s store.Store) {
	id := newID("data")
	shared := bytes.Repeat([]byte("shared body line\r\n"), 2000) // > 32 KiB
	other := []byte("Subject: other\r\n\r\nother body\r\n")
	rs := []store.NewRecipient{
		rcpt(id, "a@example.com", 0, store.StateQueued),
		rcpt(id, "b@example.com", 0, store.StateQueued),
		rcpt(id, "c@example.net", 1, store.StateHeld),
	}
	rs[1].Prefix = nil // no prefix of its own is allowed
	ids := enqueue(t, s, message(id), [][]byte{shared, other}, rs)
	want := [][]byte{
		append(append([]byte{}, rs[0].Prefix...), shared...),
		shared,
		append(append([]byte{}, rs[2].Prefix...), other...),
	}
	for i, rid := range ids {
		got, err := s.Data(context.Background(), rid)
		if err != nil {
			t.Fatalf("Data(%d): %v", rid, err)
		}
		if !bytes.Equal(got, want[i]) {
			t.Errorf("Data(recipient %d) = %d bytes %.60q..., want %d bytes %.60q...", i, len(got), got, len(want[i]), want[i])
		}
	}
	// The returned slice is the caller's: changing it must not change the store.
	got, _ := s.Data(context.Background(), ids[0])
	got[0] ^= 0xff
	again, _ := s.Data(context.Background(), ids[0])
	if !bytes.Equal(again, want[0]) {
		t.Errorf("Data returned memory the store still uses")
	}
}

func testPending(t *testing.T, s store.Store) {
	id := newID("pending")
	m := message(id)
	m.Class = "bulk"
	m.Tenant = "reseller"
	rs := []store.NewRecipient{
		rcpt(id, "q1@Example.com", 0, store.StateQueued),
		rcpt(id, "h@example.com", 0, store.StateHeld),
		rcpt(id, "q2@example.org", 0, store.StateQueued),
	}
	rs[2].NextAttempt = base.Add(5 * time.Minute)
	ids := enqueue(t, s, m, [][]byte{[]byte("x")}, rs)

	p := pending(t, s)
	if len(p) != 2 {
		t.Fatalf("Pending yielded %d recipients, want 2: %+v", len(p), p)
	}
	for _, i := range []int{0, 2} {
		got, ok := p[ids[i]]
		if !ok {
			t.Fatalf("recipient %d (%s) not pending", ids[i], rs[i].Address)
		}
		want := store.Pending{
			RecipientID: ids[i], MessageID: id, Tenant: "reseller", MailFrom: m.MailFrom,
			Address: rs[i].Address, Domain: domain(rs[i].Address), Class: "bulk", Size: m.Size,
			Attempts: 0, NextAttempt: rs[i].NextAttempt, ReceivedAt: m.ReceivedAt,
		}
		if !samePending(got, want) {
			t.Errorf("Pending = %+v\nwant      %+v", got, want)
		}
	}
}

func domain(addr string) string {
	return strings.ToLower(addr[strings.LastIndexByte(addr, '@')+1:])
}

func samePending(a, b store.Pending) bool {
	ta, tb := a.NextAttempt, b.NextAttempt
	ra, rb := a.ReceivedAt, b.ReceivedAt
	a.NextAttempt, b.NextAttempt, a.ReceivedAt, b.ReceivedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	return a == b && ta.Equal(tb) && ra.Equal(rb)
}

func testPendingStops(t *testing.T, s store.Store) {
	simple(t, s, "stop", store.StateQueued, store.StateQueued, store.StateQueued)
	stop := errors.New("enough")
	calls := 0
	err := s.Pending(context.Background(), func(store.Pending) error {
		calls++
		return stop
	})
	if !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("Pending returned %v after %d calls, want fn's error after 1", err, calls)
	}
}

func testHeldNotPending(t *testing.T, s store.Store) {
	_, ids := simple(t, s, "held", store.StateHeld, store.StateHeld)
	p := pending(t, s)
	for _, rid := range ids {
		if _, ok := p[rid]; ok {
			t.Errorf("held recipient %d is pending", rid)
		}
	}
}

func testDeferred(t *testing.T, s store.Store) {
	id, ids := simple(t, s, "defer", store.StateQueued)
	at := base.Add(2 * time.Minute)
	next := base.Add(7 * time.Minute)
	record(t, s, store.Attempt{
		RecipientID: ids[0], MessageID: id, Time: at, State: store.StateQueued, NextAttempt: next,
		Provider: "gmail", Host: "gmail-smtp-in.l.google.com", Code: 421, Reply: "4.7.28 rate limited",
	})
	p, ok := pending(t, s)[ids[0]]
	if !ok {
		t.Fatalf("deferred recipient is no longer pending")
	}
	if p.Attempts != 1 || !p.NextAttempt.Equal(next) {
		t.Errorf("Pending after deferral: attempts %d next %v, want 1 and %v", p.Attempts, p.NextAttempt, next)
	}
	v := view(t, s, id)
	r := v.Recipients[0]
	if r.State != store.StateQueued || r.Attempts != 1 || !r.NextAttempt.Equal(next) || r.Provider != "gmail" ||
		r.LastCode != 421 || r.LastReply != "4.7.28 rate limited" || !r.UpdatedAt.Equal(at) {
		t.Errorf("recipient after deferral = %+v", r)
	}
	ev := eventsOf(v, "deferred")
	if len(ev) != 1 {
		t.Fatalf("events = %+v, want one deferred", v.Events)
	}
	checkAttemptEvent(t, ev[0], ids[0], "gmail-smtp-in.l.google.com", "4.7.28 rate limited", "421")

	// A second deferral counts again.
	record(t, s, store.Attempt{
		RecipientID: ids[0], MessageID: id, Time: at.Add(time.Minute), State: store.StateQueued,
		NextAttempt: next.Add(time.Hour), Provider: "gmail", Reply: "dial tcp: connection refused",
	})
	if p := pending(t, s)[ids[0]]; p.Attempts != 2 || !p.NextAttempt.Equal(next.Add(time.Hour)) {
		t.Errorf("Pending after second deferral: %+v", p)
	}
	if _, err := s.Data(context.Background(), ids[0]); err != nil {
		t.Errorf("Data of a deferred recipient: %v", err)
	}
}

func checkAttemptEvent(t *testing.T, e store.Event, rid int64, host, reply, code string) {
	t.Helper()
	if e.Actor != "queue" || e.RecipientID != rid {
		t.Errorf("%s event = %+v, want actor queue and recipient %d", e.Kind, e, rid)
	}
	for _, s := range []string{host, reply, code} {
		if !strings.Contains(e.Detail, s) {
			t.Errorf("%s event detail %q lacks %q", e.Kind, e.Detail, s)
		}
	}
}

func testFinal(t *testing.T, s store.Store) {
	id, ids := simple(t, s, "final", store.StateQueued, store.StateQueued, store.StateQueued)
	record(t, s, store.Attempt{
		RecipientID: ids[0], MessageID: id, Time: base.Add(time.Minute), State: store.StateDelivered,
		Provider: "outlook", Host: "mx1.example.com", Code: 250, Reply: "2.0.0 ok queued as 12345",
	})
	record(t, s, store.Attempt{
		RecipientID: ids[1], MessageID: id, Time: base.Add(2 * time.Minute), State: store.StateBounced,
		Provider: "outlook", Host: "mx2.example.com", Code: 550, Reply: "5.1.1 user unknown",
	})
	p := pending(t, s)
	if _, ok := p[ids[0]]; ok {
		t.Errorf("delivered recipient still pending")
	}
	if _, ok := p[ids[1]]; ok {
		t.Errorf("bounced recipient still pending")
	}
	if _, ok := p[ids[2]]; !ok {
		t.Errorf("untouched recipient not pending")
	}
	v := view(t, s, id)
	if r := v.Recipients[0]; r.State != store.StateDelivered || r.Attempts != 1 || r.LastCode != 250 || r.Provider != "outlook" {
		t.Errorf("delivered recipient = %+v", r)
	}
	if r := v.Recipients[1]; r.State != store.StateBounced || r.Attempts != 1 || r.LastCode != 550 || r.LastReply != "5.1.1 user unknown" {
		t.Errorf("bounced recipient = %+v", r)
	}
	if ev := eventsOf(v, "delivered"); len(ev) != 1 {
		t.Errorf("events = %+v, want one delivered", v.Events)
	} else {
		checkAttemptEvent(t, ev[0], ids[0], "mx1.example.com", "2.0.0 ok queued as 12345", "250")
	}
	if ev := eventsOf(v, "bounced"); len(ev) != 1 {
		t.Errorf("events = %+v, want one bounced", v.Events)
	} else {
		checkAttemptEvent(t, ev[0], ids[1], "mx2.example.com", "5.1.1 user unknown", "550")
	}
	// Events come oldest first.
	for i := 1; i < len(v.Events); i++ {
		if v.Events[i].Time.Before(v.Events[i-1].Time) {
			t.Errorf("events out of order: %+v", v.Events)
		}
	}
	// The MessageID of an attempt may be left out: the recipient id is enough.
	if err := s.RecordAttempt(context.Background(), store.Attempt{
		RecipientID: ids[2], Time: base.Add(3 * time.Minute), State: store.StateDelivered, Code: 250, Reply: "2.0.0 ok",
	}); err != nil {
		t.Fatalf("RecordAttempt without MessageID: %v", err)
	}
	if r := view(t, s, id).Recipients[2]; r.State != store.StateDelivered {
		t.Errorf("recipient after attempt without MessageID = %+v", r)
	}
}

func testContentsDropped(t *testing.T, s store.Store) {
	id, ids := simple(t, s, "drop", store.StateQueued, store.StateQueued)
	record(t, s, store.Attempt{RecipientID: ids[0], MessageID: id, Time: base, State: store.StateDelivered, Code: 250, Reply: "2.0.0 ok"})
	if _, err := s.Data(context.Background(), ids[1]); err != nil {
		t.Fatalf("Data of the still queued recipient after its sibling's delivery: %v", err)
	}
	record(t, s, store.Attempt{RecipientID: ids[1], MessageID: id, Time: base, State: store.StateBounced, Code: 550, Reply: "5.1.1 no"})
	for _, rid := range ids {
		if data, err := s.Data(context.Background(), rid); err == nil {
			t.Errorf("Data(%d) after every recipient is final = %q, want an error", rid, data)
		}
	}
	// The record of what happened stays.
	v := view(t, s, id)
	if len(v.Recipients) != 2 || len(v.Events) != 3 {
		t.Errorf("after dropping contents: %d recipients, %d events; want 2 and 3", len(v.Recipients), len(v.Events))
	}
}

func testHeldKeepsContents(t *testing.T, s store.Store) {
	id, ids := simple(t, s, "heldkeep", store.StateQueued, store.StateHeld)
	record(t, s, store.Attempt{RecipientID: ids[0], MessageID: id, Time: base, State: store.StateDelivered, Code: 250, Reply: "2.0.0 ok"})
	if _, err := s.Data(context.Background(), ids[1]); err != nil {
		t.Fatalf("Data of a held recipient after its sibling's delivery: %v", err)
	}
}

func testAddEvent(t *testing.T, s store.Store) {
	id, ids := simple(t, s, "event", store.StateHeld)
	e := store.Event{
		MessageID: id, RecipientID: ids[0], Time: base.Add(time.Hour), Kind: "released",
		Actor: "api:helpdesk@192.0.2.9", Detail: "released by ticket 4711",
	}
	if err := s.AddEvent(context.Background(), e); err != nil {
		t.Fatalf("AddEvent: %v", err)
	}
	msgEvent := store.Event{MessageID: id, Time: base.Add(2 * time.Hour), Kind: "note", Actor: "api:ops", Detail: "whole message"}
	if err := s.AddEvent(context.Background(), msgEvent); err != nil {
		t.Fatalf("AddEvent for the whole message: %v", err)
	}
	v := view(t, s, id)
	if len(v.Events) != 3 {
		t.Fatalf("events = %+v, want accepted, released, note", v.Events)
	}
	got := v.Events[1]
	if got.Kind != e.Kind || got.Actor != e.Actor || got.Detail != e.Detail || got.RecipientID != e.RecipientID ||
		got.MessageID != id || !got.Time.Equal(e.Time) || got.ID == 0 {
		t.Errorf("event = %+v\nwant %+v", got, e)
	}
	if v.Events[2].Kind != "note" || v.Events[2].RecipientID != 0 {
		t.Errorf("message event = %+v", v.Events[2])
	}
}

func testNotFound(t *testing.T, s store.Store) {
	ctx := context.Background()
	if _, err := s.Message(ctx, "no-such-message"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Message(unknown) error = %v, want ErrNotFound", err)
	}
	if _, err := s.Data(ctx, 1<<40); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Data(unknown) error = %v, want ErrNotFound", err)
	}
	err := s.RecordAttempt(ctx, store.Attempt{RecipientID: 1 << 40, MessageID: "nope", Time: base, State: store.StateDelivered})
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("RecordAttempt(unknown) error = %v, want ErrNotFound", err)
	}
	if err := s.AddEvent(ctx, store.Event{MessageID: "no-such-message", Time: base, Kind: "note", Actor: "test"}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("AddEvent(unknown message) error = %v, want ErrNotFound", err)
	}
	// A recipient id that belongs to another message is not found either.
	id, ids := simple(t, s, "nf", store.StateQueued)
	other, _ := simple(t, s, "nf", store.StateQueued)
	if err := s.RecordAttempt(ctx, store.Attempt{RecipientID: ids[0], MessageID: other, Time: base, State: store.StateDelivered}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("RecordAttempt with a foreign message id error = %v, want ErrNotFound", err)
	}
	if err := s.AddEvent(ctx, store.Event{MessageID: other, RecipientID: ids[0], Time: base, Kind: "note", Actor: "test"}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("AddEvent with a foreign recipient error = %v, want ErrNotFound", err)
	}
	if r := view(t, s, id).Recipients[0]; r.State != store.StateQueued || r.Attempts != 0 {
		t.Errorf("recipient changed by a refused attempt: %+v", r)
	}
}

func testDuplicateMessage(t *testing.T, s store.Store) {
	id, ids := simple(t, s, "dup", store.StateQueued)
	_, err := s.Enqueue(context.Background(), message(id), [][]byte{[]byte("second")},
		[]store.NewRecipient{rcpt(id+"-again", "x@example.com", 0, store.StateQueued)})
	if err == nil {
		t.Fatalf("second Enqueue with the same message id succeeded")
	}
	v := view(t, s, id)
	if len(v.Recipients) != 1 || v.Recipients[0].ID != ids[0] || len(v.Events) != 1 {
		t.Errorf("after a refused duplicate: %d recipients, %d events; want the original 1 and 1", len(v.Recipients), len(v.Events))
	}
	data, err := s.Data(context.Background(), ids[0])
	if err != nil || !bytes.HasSuffix(data, []byte("body\r\n")) {
		t.Errorf("original data after a refused duplicate = %q, %v", data, err)
	}
	for _, p := range pending(t, s) {
		if p.Address == "x@example.com" {
			t.Errorf("the refused duplicate's recipient is pending: %+v", p)
		}
	}
}

func testDuplicateTracking(t *testing.T, s store.Store) {
	first, _ := simple(t, s, "trk", store.StateQueued)
	id := newID("trk")
	rs := []store.NewRecipient{
		rcpt(id, "fresh@example.com", 0, store.StateQueued),
		rcpt(first, "user0@Example.COM", 0, store.StateQueued), // first's tracking id
	}
	if _, err := s.Enqueue(context.Background(), message(id), [][]byte{[]byte("x")}, rs); err == nil {
		t.Fatalf("Enqueue with a tracking id already in use succeeded")
	}
	if _, err := s.Message(context.Background(), id); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Message of the refused enqueue: error %v, want ErrNotFound (no partial rows)", err)
	}
	for _, p := range pending(t, s) {
		if p.MessageID == id {
			t.Errorf("recipient of the refused enqueue is pending: %+v", p)
		}
	}
	// The id stays usable: nothing of the failed attempt blocks a retry.
	rs[1] = rcpt(id, "other@example.com", 0, store.StateQueued)
	enqueue(t, s, message(id), [][]byte{[]byte("x")}, rs)
}

func testInvalidEnqueue(t *testing.T, s store.Store) {
	ctx := context.Background()
	id := newID("invalid")
	cases := map[string][]store.NewRecipient{
		"content index out of range": {rcpt(id, "a@example.com", 1, store.StateQueued)},
		"final state":                {rcpt(id, "a@example.com", 0, store.StateDelivered)},
	}
	for name, rs := range cases {
		if _, err := s.Enqueue(ctx, message(id), [][]byte{[]byte("x")}, rs); err == nil {
			t.Errorf("Enqueue with %s succeeded", name)
		}
	}
	if _, err := s.Message(ctx, id); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Message after refused enqueues: %v, want ErrNotFound", err)
	}
}

func testConcurrentEnqueue(t *testing.T, s store.Store) {
	const workers, each = 50, 8
	type sent struct {
		id  string
		ids []int64
	}
	results := make(chan sent, workers*each)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := newID(fmt.Sprintf("conc%d", w))
				rs := []store.NewRecipient{
					rcpt(id, fmt.Sprintf("a%d@example.com", i), 0, store.StateQueued),
					rcpt(id, fmt.Sprintf("b%d@example.net", i), 0, store.StateQueued),
				}
				ids, err := s.Enqueue(context.Background(), message(id), [][]byte{[]byte("body of " + id)}, rs)
				if err != nil {
					errs <- err
					return
				}
				results <- sent{id, ids}
			}
		}()
	}
	wg.Wait()
	close(results)
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent Enqueue: %v", err)
	}
	p := pending(t, s)
	n := 0
	for r := range results {
		n++
		v := view(t, s, r.id)
		if len(v.Recipients) != 2 || len(eventsOf(v, "accepted")) != 1 {
			t.Errorf("message %s: %d recipients, events %+v", r.id, len(v.Recipients), v.Events)
		}
		for _, rid := range r.ids {
			if _, ok := p[rid]; !ok {
				t.Errorf("recipient %d of %s not pending", rid, r.id)
			}
			data, err := s.Data(context.Background(), rid)
			if err != nil || !bytes.HasSuffix(data, []byte("body of "+r.id)) {
				t.Errorf("Data(%d) of %s = %q, %v", rid, r.id, data, err)
			}
		}
	}
	if n != workers*each {
		t.Errorf("%d messages enqueued, want %d", n, workers*each)
	}
	if len(p) != 2*workers*each {
		t.Errorf("%d recipients pending, want %d", len(p), 2*workers*each)
	}
}

func testCanceled(t *testing.T, s store.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	id := newID("canceled")
	_, err := s.Enqueue(ctx, message(id), [][]byte{[]byte("x")}, []store.NewRecipient{rcpt(id, "a@example.com", 0, store.StateQueued)})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Enqueue with a canceled context: %v, want context.Canceled", err)
	}
	if _, err := s.Message(context.Background(), id); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Message after a canceled Enqueue: %v, want ErrNotFound", err)
	}
}

func testWriteAfterClose(t *testing.T, s store.Store) {
	id, _ := simple(t, s, "closed", store.StateQueued)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := s.Enqueue(context.Background(), message(id+"-after"), [][]byte{[]byte("x")},
		[]store.NewRecipient{rcpt(id+"-after", "a@example.com", 0, store.StateQueued)}); err == nil {
		t.Errorf("Enqueue after Close succeeded")
	}
}
