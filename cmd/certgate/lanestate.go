package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"reflect"
	"time"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/policy"
	"github.com/certgate/certgate/store"
)

// laneSaveEvery is how often changed lane states are written: a restart
// loses at most this much of a lane's history, never a suspension's
// existence for longer.
const laneSaveEvery = time.Second

// laneKeeper keeps the lanes' states in the store: loaded at start,
// before any delivery, so a restart resumes a slowdown, a suspension or
// a pause; saved when they change.
type laneKeeper struct {
	p     *policy.Policy
	st    store.LaneStates
	log   *slog.Logger
	saved map[string]uint64 // lane key -> version last saved
	news  *laneJournal      // lane_changed events of what the rules changed
	stop  context.CancelFunc
	done  chan struct{}

	// In a cluster, the keeper also follows what the other nodes save
	// (follow): seen is each lane's stored state as this node last
	// wrote or read it, and wake tells the queue when a lane changed
	// by another node may let held mail go.
	follow bool
	seen   map[string][]byte
	wake   func(key string)
	every  time.Duration
	// base is each lane's state as the store has it from this node (saved
	// or taken on): what this node sent since is the difference, added to
	// another node's counts when it takes on their state.
	base map[string]policy.Snapshot
}

func newLaneKeeper(p *policy.Policy, st store.LaneStates, log *slog.Logger) *laneKeeper {
	return &laneKeeper{p: p, st: st, log: log, saved: map[string]uint64{}, news: newLaneJournal(st, log),
		seen: map[string][]byte{}, base: map[string]policy.Snapshot{}, every: laneSaveEvery}
}

// clusterLaneEvery is how often a node of a cluster saves its lanes'
// changes and reads the others': a change made on one node (a receiver's
// 4.7.x, an operator's pause) is acted on by every node within a second.
const clusterLaneEvery = 500 * time.Millisecond

// followCluster makes the keeper share lane states with the other nodes
// of a cluster through the store, the states' source of truth: a small
// table read every half second, which needs no other service to be up.
func (s *laneKeeper) followCluster(wake func(key string)) {
	s.follow, s.wake, s.every = true, wake, clusterLaneEvery
}

// load restores every stored lane state.
func (s *laneKeeper) load(ctx context.Context) error {
	states, err := s.st.LaneStates(ctx)
	if err != nil {
		return err
	}
	for key, raw := range states {
		var snap policy.Snapshot
		if err := json.Unmarshal(raw, &snap); err != nil {
			s.log.Warn("lane state unreadable; the lane starts as configured", "lane", key, "err", err)
			continue
		}
		l, ok := s.p.LaneByKey(key)
		if !ok {
			continue // a provider the configuration no longer has
		}
		l.Restore(snap)
		_, s.saved[key] = l.Snapshot()
		s.seen[key], s.base[key] = raw, snap
		s.news.note(ctx, l, "restart") // what it resumes as, once
		if st := l.State(); st.Name != "normal" {
			s.log.Info("lane state restored", "lane", key, "state", st.Name, "rate", st.Rate, "until", st.Until, "reason", st.Reason)
		}
	}
	return nil
}

// start saves changed states every laneSaveEvery until stop.
func (s *laneKeeper) start() {
	ctx, cancel := context.WithCancel(context.Background())
	s.stop, s.done = cancel, make(chan struct{})
	go func() {
		defer close(s.done)
		t := time.NewTicker(s.every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				// In a cluster, take on what the others saved first: this
				// node's save then writes their state with its own
				// counts added, instead of over it.
				if s.follow {
					if err := s.refresh(ctx); err != nil && ctx.Err() == nil {
						s.log.Error("reading the cluster's lane states", "err", err)
					}
				}
				if err := s.save(ctx); err != nil && ctx.Err() == nil {
					s.log.Error("saving lane states", "err", err)
				}
			}
		}
	}()
}

// shutdown stops the saver and saves what changed last.
func (s *laneKeeper) shutdown(ctx context.Context) {
	if s.stop != nil {
		s.stop()
		<-s.done
	}
	// The shutdown's own time may be spent by now: the last save gets a
	// few seconds of its own, or the last second of changes is lost.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := s.save(ctx); err != nil {
		s.log.Error("saving lane states", "err", err)
	}
}

// save writes the states that changed since they were last written.
func (s *laneKeeper) save(ctx context.Context) error {
	changed := map[string][]byte{}
	versions := map[string]uint64{}
	snaps := map[string]policy.Snapshot{}
	var moved []*policy.Lane
	for _, l := range s.p.Lanes() {
		snap, v := l.Snapshot()
		saved, known := s.saved[l.Key()]
		if known && saved == v || !known && v == 0 {
			continue // unchanged, or never changed: the configuration says it all
		}
		var raw []byte // nil: delete the stored state
		// A catch-all lane is one recipient domain's: once at rest its row
		// goes, or every domain ever written to would keep one.
		if l.Name() != config.CatchAllProvider || !l.AtRest(snap) {
			var err error
			if raw, err = json.Marshal(snap); err != nil {
				return err
			}
		}
		changed[l.Key()], versions[l.Key()] = raw, v
		if raw != nil {
			snaps[l.Key()] = snap
		}
		moved = append(moved, l)
	}
	if err := s.st.SaveLaneStates(ctx, changed); err != nil {
		return err
	}
	for k, v := range versions {
		s.saved[k] = v
		s.seen[k], s.base[k] = changed[k], snaps[k]
	}
	for _, l := range moved {
		s.news.note(ctx, l, "policy")
	}
	return nil
}

// refresh takes on what other nodes saved: a lane whose stored state is
// not the one this node last wrote or read restores the stored state, with
// the warm-up sends this node counted since its last save added. The node
// that made a change announced it (lane_changed); the others only act on
// it.
func (s *laneKeeper) refresh(ctx context.Context) error {
	states, err := s.st.LaneStates(ctx)
	if err != nil {
		return err
	}
	// A catch-all lane's row goes once the lane is at rest (see save):
	// gone from the store, it is at rest on every node.
	for key, raw := range s.seen {
		if _, ok := states[key]; !ok && raw != nil {
			states[key] = nil
		}
	}
	for key, raw := range states {
		if bytes.Equal(s.seen[key], raw) {
			continue
		}
		l, ok := s.p.LaneByKey(key)
		if !ok {
			continue
		}
		var snap policy.Snapshot // at rest, for a row that went
		if raw != nil {
			if err := json.Unmarshal(raw, &snap); err != nil {
				s.log.Warn("lane state unreadable; kept this node's", "lane", key, "err", err)
				s.seen[key] = raw
				continue
			}
		}
		// A three-way merge with what the store had from this node: what
		// this node changed since wins, field by field, the rest is the
		// other's, and the warm-up counts add up.
		local, v := l.Snapshot()
		changedHere := v != s.saved[key]
		taken := snap
		if changedHere {
			taken = mergeLaneStates(snap, local, s.base[key])
		}
		l.Restore(taken)
		if !changedHere {
			_, s.saved[key] = l.Snapshot()
		} // else: still unsaved, so that this tick's save writes the sum
		s.seen[key], s.base[key] = raw, snap
		s.news.heard(l) // announced by the node that made it
		if s.wake != nil {
			s.wake(key)
		}
	}
	return nil
}

// mergeLaneStates is remote with what local changed since base: each field
// local changed is local's (an operator's pause here, a slowdown a reply
// caused here), the others remote's; the warm-up counts are added.
func mergeLaneStates(remote, local, base policy.Snapshot) policy.Snapshot {
	merged := remote
	m, l, b := reflect.ValueOf(&merged).Elem(), reflect.ValueOf(local), reflect.ValueOf(base)
	for i := range m.NumField() {
		if !reflect.DeepEqual(l.Field(i).Interface(), b.Field(i).Interface()) {
			m.Field(i).Set(l.Field(i))
		}
	}
	// The counts: remote's, plus what this node sent since base.
	merged.WarmDay, merged.WarmSent, merged.TenantWarm = remote.WarmDay, remote.WarmSent, remote.TenantWarm
	return addWarmCounts(merged, local, base)
}

// addWarmCounts is remote with the warm-up sends local counted since base
// added to its counts, the lane's and each tenant's, day by day: a day
// the others have not started yet is local's; a day they are past is
// theirs.
func addWarmCounts(remote, local, base policy.Snapshot) policy.Snapshot {
	remote.WarmDay, remote.WarmSent = addWarm(remote.WarmDay, remote.WarmSent, local.WarmDay, local.WarmSent, base.WarmDay, base.WarmSent)
	if len(local.TenantWarm) == 0 {
		return remote
	}
	merged := maps.Clone(remote.TenantWarm)
	if merged == nil {
		merged = maps.Clone(local.TenantWarm)
		clear(merged)
	}
	for tenant, l := range local.TenantWarm {
		r, b := merged[tenant], base.TenantWarm[tenant]
		r.Day, r.Sent = addWarm(r.Day, r.Sent, l.Day, l.Sent, b.Day, b.Sent)
		merged[tenant] = r
	}
	remote.TenantWarm = merged
	return remote
}

// addWarm is one warm-up count of addWarmCounts: remote's (rDay, rSent)
// with local's sends since base.
func addWarm(rDay, rSent, lDay, lSent, bDay, bSent int) (int, int) {
	switch {
	case lDay > rDay:
		return lDay, lSent
	case lDay < rDay:
		return rDay, rSent
	}
	d := lSent
	if bDay == lDay {
		d -= bSent
	}
	return rDay, rSent + max(d, 0)
}
