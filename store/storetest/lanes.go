package storetest

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/certgate/certgate/store"
)

// testLaneStates: lane states round-trip, a save replaces a lane's state
// and leaves the others.
func testLaneStates(t *testing.T, s store.Store) {
	if c, ok := s.(*closeOnce); ok {
		s = c.Store
	}
	ls, ok := s.(store.LaneStates)
	if !ok {
		t.Fatalf("%T does not implement store.LaneStates", s)
	}
	ctx := context.Background()
	if got, err := ls.LaneStates(ctx); err != nil || len(got) != 0 {
		t.Fatalf("LaneStates of a new store = %v, %v; want none", got, err)
	}
	if err := ls.SaveLaneStates(ctx, map[string][]byte{"gmail": []byte(`{"factor":0.5}`), "default/a.example": []byte(`{"paused":true}`)}); err != nil {
		t.Fatal(err)
	}
	if err := ls.SaveLaneStates(ctx, map[string][]byte{"gmail": []byte(`{"factor":1}`), "default/b.example": []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	// nil deletes; deleting what is not there is no error.
	if err := ls.SaveLaneStates(ctx, map[string][]byte{"default/b.example": nil, "default/c.example": nil}); err != nil {
		t.Fatal(err)
	}
	got, err := ls.LaneStates(ctx)
	want := map[string][]byte{"gmail": []byte(`{"factor":1}`), "default/a.example": []byte(`{"paused":true}`)}
	if err != nil || !maps.EqualFunc(got, want, func(a, b []byte) bool { return string(a) == string(b) }) {
		t.Fatalf("LaneStates = %q, %v; want %q", got, err, want)
	}
}

// testLaneEvents: an event about a lane joins the event log in id order,
// with its lane and no message or tenant.
func testLaneEvents(t *testing.T, s store.Store) {
	if c, ok := s.(*closeOnce); ok {
		s = c.Store
	}
	ls := s.(store.LaneStates)
	ctx := context.Background()
	before := eventsAfter(t, s, 0, 1000)
	var last int64
	if len(before) > 0 {
		last = before[len(before)-1].ID
	}
	at := base.Add(time.Hour)
	if err := ls.AddLaneEvent(ctx, "gmail", store.Event{Time: at, Kind: "lane_changed", Actor: "policy", Detail: "gmail: slowed"}); err != nil {
		t.Fatal(err)
	}
	got := eventsAfter(t, s, last, 10)
	if len(got) != 1 {
		t.Fatalf("events after %d: %+v, want the lane's", last, got)
	}
	e := got[0]
	if e.Lane != "gmail" || e.MessageID != "" || e.Tenant != "" || e.Kind != "lane_changed" || e.Actor != "policy" ||
		e.Detail != "gmail: slowed" || !e.Time.Equal(at) || e.ID <= last {
		t.Fatalf("lane event %+v", e)
	}
}
