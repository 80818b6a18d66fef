package storetest

import (
	"context"
	"maps"
	"testing"

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
	if err := ls.SaveLaneStates(ctx, map[string][]byte{"gmail": []byte(`{"factor":1}`)}); err != nil {
		t.Fatal(err)
	}
	got, err := ls.LaneStates(ctx)
	want := map[string][]byte{"gmail": []byte(`{"factor":1}`), "default/a.example": []byte(`{"paused":true}`)}
	if err != nil || !maps.EqualFunc(got, want, func(a, b []byte) bool { return string(a) == string(b) }) {
		t.Fatalf("LaneStates = %q, %v; want %q", got, err, want)
	}
}
