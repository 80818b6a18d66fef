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
	"UseLinkUntilUsed":              "UseLink",
	"UseLinkUnlimited":              "UseLink",
	"UseLinkConcurrent":             "UseLink",
	"UseLinkExpiry":                 "UseLink",
	"UseLinkRefusals":               "UseLink",
	"UseLinkReenabledAfterUsed":     "UseLink",
	"SetLinkState":                  "SetLinkState",
	"SetLinkStateNotFound":          "SetLinkState",
	"RecordAttemptEnablesLinks":     "SetLinkState (RecordAttempt's EnableLinks)",
	"Release":                       "Release",
	"ReleaseIsIdempotent":           "Release",
	"ReleaseNotFound":               "Release",
	"SearchState":                   "Release (the test releases a held message)",
	"EventsAfter":                   "Release (the test releases a message)",
	"RefuseLink":                    "RefuseLink",
	"DeleteMessages":                "UseLink (the test uses a link)",
	"SeedCopiesArePending":          "store.Placements",
	"SeedPlacementDelivered":        "store.Placements",
	"SeedPlacementBounced":          "store.Placements; RecordAttempt closing a bounced seed copy",
	"SeedLinksNeverEnabled":         "store.Placements, Release, SetLinkState",
	"RecordFound":                   "store.Placements",
	"RecordFoundKeepsMaxMoves":      "store.Placements",
	"DuePlacements":                 "store.Placements",
	"ClosePlacement":                "store.Placements",
	"PlacementsQuery":               "store.Placements",
	"SeedFolder":                    "store.Placements",
	"DeleteMessagesTakesPlacements": "store.Placements",
	"LaneStates":                    "store.LaneStates",
	"LaneEvents":                    "store.LaneStates (AddLaneEvent)",
	"IdempotencyKeys":               "store.Idempotency",
	"IdempotencyKeysConcurrent":     "store.Idempotency",
	"IdempotencyAnswerWithMessage":  "store.Idempotency (ReserveKey; Enqueue answers the key already)",
}

func TestConformance(t *testing.T) {
	srv := testpg.Start(t)
	storetest.RunExcept(t, func(t *testing.T) store.Store { return openTest(t, srv) }, notYet)
}
