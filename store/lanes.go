package store

import "context"

// LaneStates keeps each delivery lane's state across restarts: what the
// policy says of it (a slowdown, a suspension, a pause, an override),
// opaque to the store. The store is the state's source of truth; the
// lanes in memory are a cache of it.
type LaneStates interface {
	// SaveLaneStates durably stores the states given, by lane key,
	// replacing earlier ones, in one transaction; a nil state deletes the
	// lane's (a lane at rest needs none).
	SaveLaneStates(ctx context.Context, states map[string][]byte) error
	// LaneStates returns every lane's stored state, by lane key.
	LaneStates(ctx context.Context) (map[string][]byte, error)
	// AddLaneEvent appends an event about a lane (kind lane_changed: what
	// it became, who or what changed it) to the event log EventsAfter
	// follows, with no message: webhooks for every tenant hear it.
	AddLaneEvent(ctx context.Context, lane string, e Event) error
}
