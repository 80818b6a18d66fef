package delivery

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/store"
)

// One tenant's wave does not hold up another tenant's mail of the same
// class in the same lane: tenants take turns.
func TestTenantsTakeTurnsInALane(t *testing.T) {
	e := newQEnv(t, qopts{providers: []config.Provider{{Name: "google", MXSuffixes: []string{".google.com"},
		MaxMessageRate: config.Rate{Count: 20, Period: time.Second}, ConnectionLimit: 1}}})
	token := sample(t, "04-pt-token-transactional.eml")
	for i := range 60 {
		e.enqueueAs("big", "emissao@ac.example", []string{fmt.Sprintf("wave%02d@empresa.example", i)}, config.ClassTransactional, token)
	}
	queued := time.Now()
	e.enqueueAs("small", "codes@certs.example", []string{"otp@empresa.example"}, config.ClassTransactional, token)
	e.waitAttempts(61)
	ahead := 0 // copies of the wave that left after the code was queued, before it
	for _, m := range e.sims["google"].Messages() {
		if m.To == "otp@empresa.example" {
			break
		}
		if m.Received.After(queued) {
			ahead++
		}
	}
	// The copy already taken when the code arrived, then the code on the
	// next turn: never the rest of the wave.
	if ahead > 2 {
		t.Fatalf("the other tenant's code went out after %d more copies of the wave", ahead)
	}
}

func fairItem(tenant, dest string, n int) *item {
	return &item{p: store.Pending{Tenant: tenant, Address: fmt.Sprintf("%s%d", tenant, n)}, dest: &Destination{Key: dest}}
}

// tenantQueues serves tenants in turn, each its destinations in turn,
// preferring the destination of the connection a worker holds.
func TestTenantQueuesRoundRobin(t *testing.T) {
	var q tenantQueues
	q.init()
	for i := range 4 {
		q.push(fairItem("a", "mx1", i))
	}
	q.push(fairItem("b", "mx2", 0))
	q.push(fairItem("c", "mx1", 0))
	none := func(string) bool { return false }
	var got []string
	for it := q.pop("mx1", none); it != nil; it = q.pop("mx1", none) {
		got = append(got, it.p.Address)
	}
	if s := strings.Join(got, " "); s != "a0 b0 c0 a1 a2 a3" {
		t.Fatalf("served %s", s)
	}
	q.push(fairItem("a", "mx1", 9))
	q.push(fairItem("b", "mx1", 9))
	q.push(fairItem("b", "mx2", 8))
	if taken := q.take("mx1"); len(taken) != 2 || q.n != 1 {
		t.Fatalf("take mx1: %d taken, %d left; want 2 and 1", len(taken), q.n)
	}
	if it := q.pop("", none); it == nil || it.p.Address != "b8" || q.pop("", none) != nil {
		t.Fatalf("after take: %v", it)
	}
}

// A tenant held by a suspension is passed over and keeps its items; the
// others are served in turn.
func TestTenantQueuesPassOverHeldTenants(t *testing.T) {
	var q tenantQueues
	q.init()
	for i := range 2 {
		q.push(fairItem("a", "mx1", i))
		q.push(fairItem("b", "mx1", i))
	}
	heldA := func(tenant string) bool { return tenant == "a" }
	if n := q.count(heldA); n != 2 {
		t.Fatalf("%d items may go with a held, want b's 2", n)
	}
	var got []string
	for it := q.pop("", heldA); it != nil; it = q.pop("", heldA) {
		got = append(got, it.p.Address)
	}
	if s := strings.Join(got, " "); s != "b0 b1" || q.n != 2 {
		t.Fatalf("served %s with a held (%d left), want b0 b1 and a's 2 kept", s, q.n)
	}
	if it := q.pop("", func(string) bool { return false }); it == nil || it.p.Address != "a0" {
		t.Fatalf("after the hold: %v, want a0", it)
	}
}
