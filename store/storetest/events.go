package storetest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/certgate/certgate/store"
)

// eventsAfter walks the log from after to its end in pages of page.
func eventsAfter(t *testing.T, s store.Store, after int64, page int) []store.EventRecord {
	t.Helper()
	var out []store.EventRecord
	for {
		got, err := s.EventsAfter(context.Background(), after, page)
		if err != nil {
			t.Fatalf("EventsAfter(%d, %d): %v", after, page, err)
		}
		if len(got) > page {
			t.Fatalf("EventsAfter(%d, %d) returned %d events", after, page, len(got))
		}
		if len(got) == 0 {
			return out
		}
		for _, e := range got {
			if e.ID <= after {
				t.Fatalf("EventsAfter(%d, %d) returned event %d, not after %d (out of order?)", after, page, e.ID, after)
			}
			after = e.ID
		}
		out = append(out, got...)
	}
}

// lastEventID is the id of the newest event, 0 for an empty log.
func lastEventID(t *testing.T, s store.Store) int64 {
	t.Helper()
	all := eventsAfter(t, s, 0, 1000)
	if len(all) == 0 {
		return 0
	}
	return all[len(all)-1].ID
}

func testEventsAfter(t *testing.T, s store.Store) {
	ctx := context.Background()
	start := lastEventID(t, s)

	m1, r1 := simple(t, s, "log", store.StateQueued, store.StateQueued)
	record(t, s, store.Attempt{RecipientID: r1[0], MessageID: m1, Time: base.Add(time.Minute), State: store.StateDelivered,
		Provider: "gmail", Host: "mx.example.com", Code: 250, Reply: "2.0.0 ok"})
	record(t, s, store.Attempt{RecipientID: r1[1], MessageID: m1, Time: base.Add(2 * time.Minute), State: store.StateBounced,
		Provider: "gmail", Host: "mx.example.com", Code: 550, Reply: "5.1.1 no such user"})
	note := store.Event{MessageID: m1, Time: base.Add(3 * time.Minute), Kind: "note", Actor: "api:ops", Detail: "whole message"}
	if err := s.AddEvent(ctx, note); err != nil {
		t.Fatalf("AddEvent: %v", err)
	}
	m2 := newID("log-other")
	msg := message(m2)
	msg.Tenant = "other"
	r2 := enqueue(t, s, msg, [][]byte{[]byte("x")}, []store.NewRecipient{rcpt(m2, "Held@Example.NET", 0, store.StateHeld)})
	if _, err := s.Release(ctx, m2, base.Add(4*time.Minute), "api:helpdesk@192.0.2.9", "released: ticket 1"); err != nil {
		t.Fatalf("Release: %v", err)
	}

	got := eventsAfter(t, s, start, 100)
	want := []struct {
		msg, tenant, kind, rcpt string
		rid                     int64
	}{
		{m1, "issuer", "accepted", "", 0},
		{m1, "issuer", "delivered", "user0@Example.COM", r1[0]},
		{m1, "issuer", "bounced", "user1@Example.COM", r1[1]},
		{m1, "issuer", "note", "", 0},
		{m2, "other", "accepted", "", 0},
		{m2, "other", "released", "", 0},
	}
	if len(got) != len(want) {
		t.Fatalf("EventsAfter(%d) = %d events %+v, want %d", start, len(got), got, len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.MessageID != w.msg || g.Tenant != w.tenant || g.Kind != w.kind || g.Recipient != w.rcpt || g.RecipientID != w.rid {
			t.Errorf("event %d = %+v, want message %s, tenant %s, kind %s, recipient %q (%d)", i, g, w.msg, w.tenant, w.kind, w.rcpt, w.rid)
		}
	}

	// Each record carries the event exactly as the message's view has it.
	views := map[string]*store.MessageView{m1: view(t, s, m1), m2: view(t, s, m2)}
	byID := map[int64]store.Event{}
	for _, v := range views {
		for _, e := range v.Events {
			byID[e.ID] = e
		}
	}
	for _, g := range got {
		e, ok := byID[g.ID]
		if !ok {
			t.Errorf("event %d (%s) is not in its message's view", g.ID, g.Kind)
			continue
		}
		if e.MessageID != g.MessageID || e.RecipientID != g.RecipientID || !e.Time.Equal(g.Time) ||
			e.Kind != g.Kind || e.Actor != g.Actor || e.Detail != g.Detail {
			t.Errorf("EventsAfter has %+v, the view has %+v", g.Event, e)
		}
	}
	if g := got[3]; !g.Time.Equal(note.Time) || g.Actor != note.Actor || g.Detail != note.Detail {
		t.Errorf("note event = %+v, want %+v", g.Event, note)
	}
	if g := got[5]; g.Actor != "api:helpdesk@192.0.2.9" || !g.Time.Equal(base.Add(4*time.Minute)) {
		t.Errorf("released event = %+v", g.Event)
	}

	// Pages: small ones give the same events, in the same order.
	paged := eventsAfter(t, s, start, 2)
	if len(paged) != len(got) {
		t.Fatalf("in pages of 2: %d events, want %d", len(paged), len(got))
	}
	for i := range got {
		if paged[i].ID != got[i].ID {
			t.Errorf("in pages of 2, event %d has id %d, want %d", i, paged[i].ID, got[i].ID)
		}
	}
	page, err := s.EventsAfter(ctx, got[1].ID, 3)
	if err != nil || len(page) != 3 || page[0].ID != got[2].ID || page[2].ID != got[4].ID {
		t.Errorf("EventsAfter(second id, 3) = %+v, %v; want events 3 to 5", page, err)
	}

	// The end of the log is empty, and a new event appears after it.
	last := got[len(got)-1].ID
	if rest, err := s.EventsAfter(ctx, last, 10); err != nil || len(rest) != 0 {
		t.Errorf("EventsAfter(last) = %+v, %v; want none", rest, err)
	}
	if err := s.AddEvent(ctx, store.Event{MessageID: m2, RecipientID: r2[0], Kind: "note", Actor: "api:ops"}); err != nil {
		t.Fatalf("AddEvent: %v", err)
	}
	rest, err := s.EventsAfter(ctx, last, 10)
	if err != nil || len(rest) != 1 || rest[0].Kind != "note" || rest[0].Recipient != "Held@Example.NET" || rest[0].Tenant != "other" {
		t.Errorf("EventsAfter(last) after a new event = %+v, %v", rest, err)
	}

	for _, limit := range []int{0, -1} {
		if _, err := s.EventsAfter(ctx, 0, limit); err == nil {
			t.Errorf("EventsAfter with limit %d succeeded", limit)
		}
	}
}

// testEventsAfterWhileWriting tails the log while many writers add to it:
// a reader that resumes after the last id it saw must see every event,
// each once, in id order.
func testEventsAfterWhileWriting(t *testing.T, s store.Store) {
	const workers, each = 8, 10
	start := lastEventID(t, s)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := newID(fmt.Sprintf("tail%d", w))
				ids, err := s.Enqueue(context.Background(), message(id), [][]byte{[]byte("x")},
					[]store.NewRecipient{rcpt(id, fmt.Sprintf("a%d@example.com", i), 0, store.StateQueued)})
				if err == nil {
					err = s.RecordAttempt(context.Background(), store.Attempt{RecipientID: ids[0], MessageID: id,
						State: store.StateDelivered, Code: 250, Reply: "2.0.0 ok"})
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	var seen []int64
	after := start
	finished := false
	for {
		page, err := s.EventsAfter(context.Background(), after, 7)
		if err != nil {
			t.Fatalf("EventsAfter while writing: %v", err)
		}
		for _, e := range page {
			if e.ID <= after {
				t.Fatalf("event %d after %d", e.ID, after)
			}
			after = e.ID
			seen = append(seen, e.ID)
		}
		if len(page) > 0 {
			continue
		}
		if finished {
			break
		}
		select {
		case <-done:
			finished = true // one more pass reads what the last commit added
		default:
			time.Sleep(time.Millisecond)
		}
	}
	close(errs)
	for err := range errs {
		t.Fatalf("writing while tailing: %v", err)
	}
	all := eventsAfter(t, s, start, 1000)
	if len(all) != 2*workers*each {
		t.Errorf("%d events written, want %d", len(all), 2*workers*each)
	}
	if len(seen) != len(all) {
		t.Fatalf("the tailing reader saw %d events, the log holds %d", len(seen), len(all))
	}
	for i := range all {
		if seen[i] != all[i].ID {
			t.Fatalf("the tailing reader's event %d is %d, the log's is %d", i, seen[i], all[i].ID)
		}
	}
}

func testCursor(t *testing.T, s store.Store) {
	ctx := context.Background()
	get := func(name string) int64 {
		t.Helper()
		id, err := s.Cursor(ctx, name)
		if err != nil {
			t.Fatalf("Cursor(%q): %v", name, err)
		}
		return id
	}
	set := func(name string, id int64) {
		t.Helper()
		if err := s.SetCursor(ctx, name, id); err != nil {
			t.Fatalf("SetCursor(%q, %d): %v", name, id, err)
		}
	}
	if got := get("webhook:never"); got != 0 {
		t.Errorf("Cursor of an unknown name = %d, want 0", got)
	}
	set("webhook:crm", 5)
	if got := get("webhook:crm"); got != 5 {
		t.Errorf("Cursor after SetCursor(5) = %d", got)
	}
	set("webhook:crm", 1<<40)
	if got := get("webhook:crm"); got != 1<<40 {
		t.Errorf("Cursor after SetCursor(1<<40) = %d", got)
	}
	// Set replaces, also backwards (an operator replaying events).
	set("webhook:crm", 3)
	set("webhook:siem", 7)
	if a, b := get("webhook:crm"), get("webhook:siem"); a != 3 || b != 7 {
		t.Errorf("cursors = %d, %d; want 3, 7", a, b)
	}
	set("webhook:siem", 0)
	if got := get("webhook:siem"); got != 0 {
		t.Errorf("Cursor after SetCursor(0) = %d", got)
	}
	if err := s.SetCursor(ctx, "", 1); err == nil {
		t.Errorf("SetCursor with an empty name succeeded")
	}
	if err := s.SetCursor(ctx, "webhook:crm", -1); err == nil {
		t.Errorf("SetCursor with a negative id succeeded")
	}
	if got := get("webhook:crm"); got != 3 {
		t.Errorf("Cursor after refused sets = %d, want 3", got)
	}

	// Concurrent setters of different names all land.
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.SetCursor(ctx, fmt.Sprintf("conc-%d", i), int64(100+i)); err != nil {
				t.Errorf("SetCursor: %v", err)
			}
		}()
	}
	wg.Wait()
	for i := range 20 {
		if got := get(fmt.Sprintf("conc-%d", i)); got != int64(100+i) {
			t.Errorf("Cursor(conc-%d) = %d, want %d", i, got, 100+i)
		}
	}

	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.SetCursor(canceled, "webhook:crm", 9); err == nil {
		t.Errorf("SetCursor with a canceled context succeeded")
	}
	if got := get("webhook:crm"); got != 3 {
		t.Errorf("Cursor after a canceled SetCursor = %d, want 3", got)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.SetCursor(ctx, "webhook:crm", 10); err == nil {
		t.Errorf("SetCursor after Close succeeded")
	}
}
