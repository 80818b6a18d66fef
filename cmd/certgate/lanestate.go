package main

import (
	"context"
	"encoding/json"
	"log/slog"
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
}

func newLaneKeeper(p *policy.Policy, st store.LaneStates, log *slog.Logger) *laneKeeper {
	return &laneKeeper{p: p, st: st, log: log, saved: map[string]uint64{}, news: newLaneJournal(st, log)}
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
		t := time.NewTicker(laneSaveEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
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
		moved = append(moved, l)
	}
	if err := s.st.SaveLaneStates(ctx, changed); err != nil {
		return err
	}
	for k, v := range versions {
		s.saved[k] = v
	}
	for _, l := range moved {
		s.news.note(ctx, l, "policy")
	}
	return nil
}
