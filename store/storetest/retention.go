package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/certgate/certgate/store"
)

func refuseLink(t *testing.T, s store.Store, id int64, r store.LinkRefusal, actor string) bool {
	t.Helper()
	noticed, err := s.RefuseLink(context.Background(), id, r, actor)
	if err != nil {
		t.Fatalf("RefuseLink(%d): %v", id, err)
	}
	return noticed
}

// testRefuseLink: refused presses are counted on the link with the latest
// few kept, and make one link_refused event per link at most every
// RefusalNoticeEvery, which counts the refusals since the one before.
func testRefuseLink(t *testing.T, s store.Store) {
	id, ids, links := withLinks(t, s, store.StateQueued,
		[]store.NewLink{newLink("flooded", store.LinkEnabled, 3, time.Time{})},
		[]store.NewLink{newLink("quiet", store.LinkEnabled, 3, time.Time{})})
	flooded, quiet := links[0], links[1]
	longUA := strings.Repeat("Mozilla/5.0 ", 30) + "Ü"
	press := func(i int, at time.Time) store.LinkRefusal {
		return store.LinkRefusal{Time: at, Reason: "too_fast", Client: fmt.Sprintf("192.0.2.%d", i%250), UserAgent: longUA}
	}
	const n = 250
	for i := range n {
		noticed := refuseLink(t, s, flooded.ID, press(i, base.Add(time.Duration(i)*time.Second)), fmt.Sprintf("browser:192.0.2.%d", i%250))
		if noticed != (i == 0) {
			t.Fatalf("refusal %d within the first minutes recorded an event: %v", i, noticed)
		}
	}
	l := linkByToken(t, s, flooded.TokenHash)
	rf := l.Refusals
	if rf.Count != n || rf.Noticed != 1 || !rf.NoticedAt.Equal(base) || len(rf.Recent) != store.RecentRefusals {
		t.Fatalf("refusals after %d = count %d, noticed %d at %v, %d recent; want %d, 1 at %v, %d", n, rf.Count, rf.Noticed,
			rf.NoticedAt, len(rf.Recent), n, base, store.RecentRefusals)
	}
	for i, r := range rf.Recent {
		want := press(n-store.RecentRefusals+i, base.Add(time.Duration(n-store.RecentRefusals+i)*time.Second))
		if !r.Time.Equal(want.Time) || r.Reason != "too_fast" || r.Client != want.Client || len(r.UserAgent) > 120 ||
			!strings.HasPrefix(longUA, r.UserAgent) || len(r.UserAgent) < 100 {
			t.Errorf("recent refusal %d = %+v, want %+v cut to 120 bytes", i, r, want)
		}
	}
	if l.Uses != 0 || l.State != store.LinkEnabled {
		t.Errorf("refusals changed the link's uses or state: %+v", l)
	}

	// The next event, an hour after the first, counts every refusal since.
	later := base.Add(store.RefusalNoticeEvery)
	if !refuseLink(t, s, flooded.ID, store.LinkRefusal{Time: later, Reason: "scanner", Client: "198.51.100.7", UserAgent: "HeadlessChrome"}, "scanner:198.51.100.7") {
		t.Fatalf("no event %s after the first", store.RefusalNoticeEvery)
	}
	// Another link has its own count and window.
	if !refuseLink(t, s, quiet.ID, store.LinkRefusal{Time: base.Add(time.Minute), Reason: "used"}, "browser:192.0.2.9") {
		t.Fatal("a link's first refusal recorded no event")
	}
	refused := eventsOf(view(t, s, id), "link_refused")
	if len(refused) != 3 {
		t.Fatalf("%d link_refused events for %d refusals, want 3: %+v", len(refused), n+2, refused)
	}
	first, quietEv, second := refused[0], refused[1], refused[2]
	if first.RecipientID != ids[0] || first.Count != 1 || first.Detail != "too_fast" || first.Actor != "browser:192.0.2.0" || !first.Time.Equal(base) {
		t.Errorf("first link_refused event = %+v", first)
	}
	if second.Count != n || !strings.HasPrefix(second.Detail, "scanner") || !strings.Contains(second.Detail, fmt.Sprint(n)) ||
		second.Actor != "scanner:198.51.100.7" || !second.Time.Equal(later) {
		t.Errorf("second link_refused event = %+v, want count %d and a detail starting with the reason", second, n)
	}
	if quietEv.RecipientID != ids[1] || quietEv.Count != 1 || quietEv.Detail != "used" {
		t.Errorf("other link's event = %+v", quietEv)
	}
	if _, err := s.RefuseLink(context.Background(), 1<<40, store.LinkRefusal{Time: base, Reason: "x"}, "gate"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("RefuseLink(unknown) error = %v, want ErrNotFound", err)
	}
}

// testAddEventCount: an event keeps its count; none given is one.
func testAddEventCount(t *testing.T, s store.Store) {
	id, _ := simple(t, s, "count", store.StateQueued)
	ctx := context.Background()
	for _, c := range []int64{0, 7} {
		if err := s.AddEvent(ctx, store.Event{MessageID: id, Time: base, Kind: "note", Actor: "test", Count: c}); err != nil {
			t.Fatal(err)
		}
	}
	notes := eventsOf(view(t, s, id), "note")
	if len(notes) != 2 || notes[0].Count != 1 || notes[1].Count != 7 {
		t.Errorf("counts of notes = %+v, want 1 and 7", notes)
	}
	if acc := eventsOf(view(t, s, id), "accepted"); len(acc) != 1 || acc[0].Count != 1 {
		t.Errorf("accepted event = %+v, want count 1", acc)
	}
}

// testMessagePage walks a message's events back from the newest, a page at
// a time, each page oldest first, with the same message, recipients and
// links as Message.
func testMessagePage(t *testing.T, s store.Store) {
	ctx := context.Background()
	id, _ := simple(t, s, "page", store.StateQueued)
	const notes = 23
	for i := range notes {
		if err := s.AddEvent(ctx, store.Event{MessageID: id, Time: base.Add(time.Duration(i) * time.Second), Kind: "note",
			Actor: "test", Detail: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	full := view(t, s, id)
	var walked []store.Event
	before := int64(0)
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("more than 5 pages of 5 for 24 events")
		}
		v, err := s.MessagePage(ctx, id, store.EventPage{Before: before, Limit: 5})
		if err != nil {
			t.Fatalf("MessagePage: %v", err)
		}
		if v.Message != full.Message || len(v.Recipients) != len(full.Recipients) || len(v.Links) != len(full.Links) {
			t.Fatalf("page's message differs from Message's: %+v", v)
		}
		if len(v.Events) > 5 || (v.OlderEvents != 0 && len(v.Events) != 5) {
			t.Fatalf("page of %d events, older %d", len(v.Events), v.OlderEvents)
		}
		for i := 1; i < len(v.Events); i++ {
			if v.Events[i].Time.Before(v.Events[i-1].Time) {
				t.Errorf("page not oldest first: %+v", v.Events)
			}
		}
		walked = append(v.Events, walked...)
		if v.OlderEvents == 0 {
			break
		}
		before = v.OlderEvents
	}
	if len(walked) != len(full.Events) {
		t.Fatalf("the pages hold %d events, the message %d", len(walked), len(full.Events))
	}
	for i := range walked {
		if walked[i].ID != full.Events[i].ID {
			t.Fatalf("event %d of the pages is %d, of Message %d", i, walked[i].ID, full.Events[i].ID)
		}
	}
	// Limits outside the range are the default and the maximum.
	for _, limit := range []int{0, -1, store.MaxEventPage + 1} {
		v, err := s.MessagePage(ctx, id, store.EventPage{Limit: limit})
		if err != nil || len(v.Events) != notes+1 || v.OlderEvents != 0 {
			t.Errorf("MessagePage with limit %d = %d events, older %d, %v", limit, len(v.Events), v.OlderEvents, err)
		}
	}
	if _, err := s.MessagePage(ctx, "no-such-message", store.EventPage{}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("MessagePage(unknown) error = %v, want ErrNotFound", err)
	}
}

// testDeleteEvents deletes old events in batches, oldest first, and keeps
// the rest.
func testDeleteEvents(t *testing.T, s store.Store) {
	ctx := context.Background()
	id, _ := simple(t, s, "old-events", store.StateQueued)
	for i := range 10 {
		if err := s.AddEvent(ctx, store.Event{MessageID: id, Time: base.Add(time.Duration(i) * time.Hour), Kind: "note", Actor: "test"}); err != nil {
			t.Fatal(err)
		}
	}
	// The accepted event (at base) and notes 0 to 5 are old; 6 to 9 stay.
	cutoff := base.Add(6 * time.Hour)
	if n, err := s.DeleteEvents(ctx, cutoff, 4); err != nil || n != 4 {
		t.Fatalf("DeleteEvents(limit 4) = %d, %v; want 4", n, err)
	}
	if n, err := s.DeleteEvents(ctx, cutoff, 4); err != nil || n != 3 {
		t.Fatalf("second DeleteEvents = %d, %v; want the 3 old ones left", n, err)
	}
	if n, err := s.DeleteEvents(ctx, cutoff, 4); err != nil || n != 0 {
		t.Fatalf("third DeleteEvents = %d, %v; want 0", n, err)
	}
	v := view(t, s, id)
	if len(v.Events) != 4 {
		t.Fatalf("events after the sweep = %+v, want the 4 recent notes", v.Events)
	}
	for _, e := range v.Events {
		if e.Time.Before(cutoff) {
			t.Errorf("event %+v before the cutoff is left", e)
		}
	}
	if len(v.Recipients) != 1 {
		t.Errorf("DeleteEvents took recipients: %+v", v.Recipients)
	}
	if _, err := s.DeleteEvents(ctx, cutoff, 0); err == nil {
		t.Error("DeleteEvents with limit 0 succeeded")
	}
}

// testDeleteMessages deletes only finished messages received before the
// cutoff, with everything of theirs.
func testDeleteMessages(t *testing.T, s store.Store) {
	ctx := context.Background()
	old := base.Add(-100 * 24 * time.Hour)
	mk := func(prefix string, received time.Time, state store.State) (string, int64) {
		id := newID(prefix)
		m := message(id)
		m.ReceivedAt = received
		rids := enqueue(t, s, m, [][]byte{[]byte("body")}, []store.NewRecipient{rcpt(id, "a@example.com", 0, store.StateQueued)})
		if state != store.StateQueued {
			record(t, s, store.Attempt{RecipientID: rids[0], MessageID: id, Time: received, State: state, Code: 250, Reply: "2.0.0 ok"})
		}
		return id, rids[0]
	}
	delivered, _ := mk("old-delivered", old, store.StateDelivered)
	bounced, _ := mk("old-bounced", old.Add(time.Minute), store.StateBounced)
	queued, _ := mk("old-queued", old, store.StateQueued)
	heldID := newID("old-held")
	hm := message(heldID)
	hm.ReceivedAt = old
	enqueue(t, s, hm, [][]byte{[]byte("x")}, []store.NewRecipient{rcpt(heldID, "h@example.com", 0, store.StateHeld)})
	linked, _, links := withLinks(t, s, store.StateQueued, []store.NewLink{newLink("old-link", store.LinkEnabled, 1, time.Time{})})
	recent, _ := mk("recent-delivered", base, store.StateDelivered)

	cutoff := base.Add(-90 * 24 * time.Hour)
	if n, err := s.DeleteMessages(ctx, cutoff, 1); err != nil || n != 1 {
		t.Fatalf("DeleteMessages(limit 1) = %d, %v", n, err)
	}
	if n, err := s.DeleteMessages(ctx, cutoff, 10); err != nil || n != 1 {
		t.Fatalf("second DeleteMessages = %d, %v; want the other finished one", n, err)
	}
	for _, gone := range []string{delivered, bounced} {
		if _, err := s.Message(ctx, gone); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Message(%s) after its deletion: %v", gone, err)
		}
		for _, e := range eventsAfter(t, s, 0, 1000) {
			if e.MessageID == gone {
				t.Errorf("event %+v of a deleted message is left", e)
			}
		}
	}
	for _, kept := range []string{queued, heldID, recent, linked} {
		if _, err := s.Message(ctx, kept); err != nil {
			t.Errorf("Message(%s), not finished or recent: %v", kept, err)
		}
	}
	if got := linkByToken(t, s, links[0].TokenHash); got.ID != links[0].ID {
		t.Errorf("a queued message's link is gone: %+v", got)
	}
	// A finished message's links go with it.
	useLink(t, s, links[0].ID, base, "gate", "")
	v := view(t, s, linked)
	record(t, s, store.Attempt{RecipientID: v.Recipients[0].ID, MessageID: linked, State: store.StateDelivered, Code: 250, Reply: "ok"})
	if n, err := s.DeleteMessages(ctx, time.Now().Add(time.Hour), 10); err != nil || n != 2 {
		t.Fatalf("DeleteMessages(everything finished) = %d, %v; want 2", n, err)
	}
	if _, err := s.LinkByToken(ctx, links[0].TokenHash); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("LinkByToken of a deleted message's link: %v", err)
	}
	if _, err := s.DeleteMessages(ctx, cutoff, 0); err == nil {
		t.Error("DeleteMessages with limit 0 succeeded")
	}
}

// testIDsNeverGoBack deletes the newest events, by age and with their
// message, and checks that the next event's id is above every id the log
// ever held: a consumer's cursor stays a valid place to resume.
func testIDsNeverGoBack(t *testing.T, s store.Store) {
	ctx := context.Background()
	id, _ := simple(t, s, "top", store.StateQueued)
	for range 3 {
		if err := s.AddEvent(ctx, store.Event{MessageID: id, Time: base, Kind: "note", Actor: "test"}); err != nil {
			t.Fatal(err)
		}
	}
	top := lastEventID(t, s)
	if _, err := s.DeleteEvents(ctx, time.Now().Add(time.Hour), 1000); err != nil {
		t.Fatal(err)
	}
	if got := eventsAfter(t, s, 0, 1000); len(got) != 0 {
		t.Fatalf("events left after deleting every one: %+v", got)
	}
	if err := s.AddEvent(ctx, store.Event{MessageID: id, Time: base, Kind: "note", Actor: "test"}); err != nil {
		t.Fatal(err)
	}
	next := lastEventID(t, s)
	if next <= top {
		t.Fatalf("after deleting every event up to %d, a new event has id %d", top, next)
	}

	// The newest events going with their message.
	done, rids := simple(t, s, "top-done", store.StateQueued)
	record(t, s, store.Attempt{RecipientID: rids[0], MessageID: done, State: store.StateDelivered, Code: 250, Reply: "ok"})
	top = lastEventID(t, s)
	if n, err := s.DeleteMessages(ctx, time.Now().Add(time.Hour), 1000); err != nil || n != 1 {
		t.Fatalf("DeleteMessages = %d, %v; want 1", n, err)
	}
	if last := lastEventID(t, s); last >= top {
		t.Fatalf("the deleted message's events are left: last id %d", last)
	}
	_, _ = simple(t, s, "top-after", store.StateQueued)
	if next := lastEventID(t, s); next <= top {
		t.Fatalf("after deleting the message holding event %d, a new event has id %d", top, next)
	}
}
