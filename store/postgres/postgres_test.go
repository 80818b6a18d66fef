package postgres

import (
	"context"
	"testing"

	"github.com/certgate/certgate/internal/testpg"
	"github.com/certgate/certgate/store"
	"github.com/certgate/certgate/store/storetest"
)

// openTest opens a store on a new database of srv, closed by the suite.
func openTest(t *testing.T, srv *testpg.Server) *Store {
	t.Helper()
	s, err := Open(context.Background(), srv.NewDB(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// notYet names the conformance tests that store/postgres does not pass
// yet, with what each waits for: the one place that says how far the
// backend is. Empty, the backend is complete.
var notYet = map[string]string{
	"LaneStates":                   "store.LaneStates",
	"LaneEvents":                   "store.LaneStates (AddLaneEvent)",
	"IdempotencyKeys":              "store.Idempotency",
	"IdempotencyKeysConcurrent":    "store.Idempotency",
	"IdempotencyAnswerWithMessage": "store.Idempotency (ReserveKey; Enqueue answers the key already)",
}

func TestConformance(t *testing.T) {
	srv := testpg.Start(t)
	storetest.RunExcept(t, func(t *testing.T) store.Store { return openTest(t, srv) }, notYet)
}
