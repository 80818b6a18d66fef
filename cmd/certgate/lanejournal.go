package main

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/certgate/certgate/policy"
	"github.com/certgate/certgate/store"
)

// laneJournal writes a lane_changed event on the audit trail (and so to
// every-tenant webhooks) each time a lane becomes something else: another
// state, another rate (each step of a climb back), another reason. Rules
// change lanes on the mail path, where no event is written: the lane
// keeper notes them within a second, as "policy"; an operator's change is
// noted at once, with the operator.
type laneJournal struct {
	st  store.LaneStates
	log *slog.Logger

	mu   sync.Mutex
	last map[string]string // lane key -> what was last written of it
}

func newLaneJournal(st store.LaneStates, log *slog.Logger) *laneJournal {
	return &laneJournal{st: st, log: log, last: map[string]string{}}
}

// note writes l's state as an event if it differs from the last one
// written; actor is who changed it.
func (j *laneJournal) note(ctx context.Context, l *policy.Lane, actor string) {
	if j == nil {
		return
	}
	detail := describeLane(l)
	j.mu.Lock()
	same := j.last[l.Key()] == detail
	j.last[l.Key()] = detail
	j.mu.Unlock()
	if same {
		return
	}
	if err := j.st.AddLaneEvent(ctx, laneName(l.Key()), store.Event{Kind: "lane_changed", Actor: actor, Detail: detail}); err != nil {
		j.log.Error("lane event not written", "lane", l.Key(), "err", err)
	}
}

// heard takes l's state as written: another node of a cluster changed it
// and wrote its event.
func (j *laneJournal) heard(l *policy.Lane) {
	if j == nil {
		return
	}
	detail := describeLane(l)
	j.mu.Lock()
	j.last[l.Key()] = detail
	j.mu.Unlock()
}

// describeLane is a lane_changed event's detail: the lane's state now.
func describeLane(l *policy.Lane) string {
	st := l.State()
	detail := laneName(l.Key()) + ": " + st.Name + ", " + rateText(st.Rate)
	if st.Rate != st.Configured {
		detail += " (configured " + rateText(st.Configured) + ")"
	}
	if !st.Until.IsZero() {
		detail += " until " + st.Until.UTC().Format(time.RFC3339)
	}
	if st.Reason != "" {
		detail += "; " + st.Reason
	}
	return detail
}

func rateText(perSecond float64) string {
	if math.IsInf(perSecond, 1) {
		return "unlimited"
	}
	return fmt.Sprintf("%.4g/min", perSecond*60)
}
