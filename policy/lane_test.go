package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certgate/certgate/clock"
	"github.com/certgate/certgate/config"
)

// TestLimiterAccuracy drives a lane with several concurrent waiters on a
// virtual clock for five minutes and counts the messages started.
func TestLimiterAccuracy(t *testing.T) {
	for _, tc := range []struct {
		perMinute int
		workers   int
	}{
		{600, 8}, {600, 1}, {250, 5}, {7, 3}, {3000, 16},
	} {
		t.Run(fmt.Sprintf("%d_per_min_%d_waiters", tc.perMinute, tc.workers), func(t *testing.T) {
			rate := float64(tc.perMinute) / 60
			l, _ := testLane(rate)
			horizon := epoch.Add(5 * time.Minute)

			var mu sync.Mutex
			var starts []time.Time
			var wg sync.WaitGroup
			for range tc.workers {
				wg.Go(func() {
					for {
						start, _, err := l.wait(context.Background())
						if err != nil {
							t.Error(err)
							return
						}
						if !start.Before(horizon) {
							return
						}
						mu.Lock()
						starts = append(starts, start)
						mu.Unlock()
					}
				})
			}
			wg.Wait()

			want := rate * 300
			got := float64(len(starts))
			if math.Abs(got-want) > 1 || math.Abs(got-want) > 0.03*want {
				t.Fatalf("%d messages started in 5 minutes, want %.0f", len(starts), want)
			}
			// Smooth spacing (burst 1): consecutive starts exactly one interval apart.
			slices.SortFunc(starts, func(a, b time.Time) int { return a.Compare(b) })
			iv := intervalFor(rate)
			for i := 1; i < len(starts); i++ {
				if d := starts[i].Sub(starts[i-1]); d != iv {
					t.Fatalf("start %d is %v after the previous, want %v", i, d, iv)
				}
			}
		})
	}
}

func TestLimiterNoBurstAfterIdle(t *testing.T) {
	l, clk := testLane(1)
	ctx := context.Background()
	if w, _ := l.Wait(ctx); w != 0 {
		t.Fatalf("first wait %v", w)
	}
	clk.advance(time.Hour)
	if w, _ := l.Wait(ctx); w != 0 {
		t.Fatalf("wait after idle %v", w)
	}
	if w, _ := l.Wait(ctx); w != time.Second {
		t.Fatalf("second message after idle waited %v, want 1s: idle time must not build a burst", w)
	}
	clk.advance(300 * time.Millisecond)
	if w, _ := l.Wait(ctx); w != 700*time.Millisecond {
		t.Fatalf("wait %v, want 700ms", w)
	}
}

func TestUnlimitedNeverWaits(t *testing.T) {
	l, clk := testLane(math.Inf(1))
	for range 1000 {
		if w, err := l.Wait(context.Background()); w != 0 || err != nil {
			t.Fatalf("unlimited lane waited %v, %v", w, err)
		}
	}
	if !clk.now().Equal(epoch) {
		t.Fatal("unlimited lane slept")
	}
}

func TestSetRate(t *testing.T) {
	l, _ := testLane(1)
	ctx := context.Background()
	l.Wait(ctx)
	l.SetRate(10) // the slot already reserved (1s) stays; spacing after it is 100ms
	if w, _ := l.Wait(ctx); w != time.Second {
		t.Fatalf("wait %v", w)
	}
	if w, _ := l.Wait(ctx); w != 100*time.Millisecond {
		t.Fatalf("wait at 10/s: %v", w)
	}
	l.SetRate(math.Inf(1))
	if w, _ := l.Wait(ctx); w != 0 || !math.IsInf(l.Rate(), 1) {
		t.Fatalf("unlimited after SetRate: %v", w)
	}
	for _, bad := range []float64{0, -5, math.NaN()} {
		l.SetRate(bad)
		if l.Rate() != MinRate {
			t.Errorf("SetRate(%v) -> %v, want MinRate", bad, l.Rate())
		}
	}
}

func TestWaitCancelGivesSlotBack(t *testing.T) {
	clk := clock.NewFake(epoch)
	p := New(config.ResolveProviders(nil), config.DefaultRetry(), Options{Clock: clk})
	l := p.Match("slow.example", nil)
	l.SetRate(1.0 / 60)
	if w, err := l.Wait(context.Background()); w != 0 || err != nil {
		t.Fatalf("first wait %v %v", w, err)
	}
	tat := tatOf(t, l)

	// The deadline falls before the slot: fail at once, slot returned.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // before the 60s slot
	_, err := l.Wait(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("deadline: %v", err)
	}
	// Cancelled while sleeping: slot returned.
	ctx, cancel = context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		_, err := l.Wait(ctx)
		done <- err
	}()
	waitTimers(t, clk, 1) // the waiter sleeps
	if next, _ := clk.Next(); !next.Equal(epoch.Add(time.Minute)) {
		t.Fatalf("the waiter sleeps until %v, want the slot a minute on", next.Sub(epoch))
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancel: %v", err)
	}
	// Already cancelled: nothing reserved.
	if _, err := l.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled ctx: %v", err)
	}
	if got := tatOf(t, l); !got.Equal(tat) {
		t.Fatalf("slots not given back: tat moved by %v", got.Sub(tat))
	}
	if clk.Timers() != 0 {
		t.Fatalf("%d timers left behind", clk.Timers())
	}
}

// TestWaitOnInjectedClock runs concurrent waiters on a clock.Fake: each
// sleeps on a timer of the injected clock until its slot, and the test
// moves the clock from one timer to the next. (Exact spacing under
// concurrency is TestLimiterAccuracy's, on the auto-advancing clock: a
// relative timer set while another waiter moves the clock lands late.)
func TestWaitOnInjectedClock(t *testing.T) {
	clk := clock.NewFake(epoch)
	p := New(config.ResolveProviders([]config.Provider{{Name: "fast", Domains: []string{"fast.example"},
		MaxMessageRate: config.Rate{Count: 2000, Period: time.Second}}}), config.DefaultRetry(), Options{Clock: clk})
	l := p.Match("fast.example", nil)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var last time.Time
	for range 4 {
		wg.Go(func() {
			for range 5 {
				start, w, err := l.wait(context.Background())
				if now := clk.Now(); err != nil || w < 0 || now.Before(start) {
					t.Errorf("wait %v %v: woke at %v for the slot at %v", w, err, now.Sub(epoch), start.Sub(epoch))
				}
				mu.Lock()
				if start.After(last) {
					last = start
				}
				mu.Unlock()
			}
		})
	}
	ctx, stop := context.WithCancel(t.Context())
	go func() { wg.Wait(); stop() }()
	for clk.WaitTimers(ctx, 1) == nil {
		if next, ok := clk.Next(); ok {
			clk.Advance(next.Sub(clk.Now()))
		}
	}
	wg.Wait()
	// 20 messages at least 500µs apart.
	if want := epoch.Add(19 * 500 * time.Microsecond); last.Before(want) {
		t.Fatalf("the last message started %v in, want at least %v", last.Sub(epoch), want.Sub(epoch))
	}
}

// The sleep is measured from the clock's time when it starts, so time that
// passed since the slot was reserved is not slept again.
func TestSleepUntilIsAbsolute(t *testing.T) {
	clk := clock.NewFake(epoch)
	s := clockSource{clk}
	slot := epoch.Add(5 * time.Second)
	clk.Advance(3 * time.Second)
	done := make(chan error, 1)
	go func() { done <- s.sleepUntil(context.Background(), slot) }()
	waitTimers(t, clk, 1)
	if next, _ := clk.Next(); !next.Equal(slot) {
		t.Fatalf("sleeps until %v, want %v", next.Sub(epoch), slot.Sub(epoch))
	}
	clk.Advance(2 * time.Second)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// A slot in the past: no timer, no wait.
	if err := s.sleepUntil(context.Background(), epoch); err != nil || clk.Timers() != 0 {
		t.Fatalf("past slot: %v, %d timers", err, clk.Timers())
	}
}

// observe is a reply from a receiver to the lane, as the queue feeds it.
func observe(l *Lane, code int, enhanced, text string) Reaction {
	return l.React(code, enhanced, text, "issuer")
}

// The generic rules reproduce what lanes always did: a 421/451 4.7.x
// halves the rate, once per burst, for five minutes; now the rate climbs
// back a quarter at a time, every five minutes, instead of jumping back.
func TestThrottleAndRecovery(t *testing.T) {
	l, clk := testLane(10)

	// Replies that are not throttling leave the rate alone.
	for _, r := range []struct {
		code int
		enh  string
	}{
		{250, "2.0.0"}, {550, "5.7.1"}, {421, "4.4.2"}, {451, "4.3.0"}, {450, "4.7.1"}, {421, ""}, {554, "4.7.1"},
	} {
		observe(l, r.code, r.enh, "")
		if l.Rate() != 10 {
			t.Fatalf("React(%d, %q) changed the rate to %v", r.code, r.enh, l.Rate())
		}
	}

	if re := observe(l, 421, "4.7.28", "slow down"); re.Rule != "throttled" || !re.Acted || re.Defer {
		t.Fatalf("reaction to 421 4.7.28: %+v", re)
	}
	if !approx(l.Rate(), 5) || l.State().Name != "slowed" {
		t.Fatalf("after 421 4.7.28: %v, %+v", l.Rate(), l.State())
	}
	// The same burst, on other connections: no further cut.
	clk.advance(10 * time.Second)
	observe(l, 421, "4.7.28", "")
	observe(l, 421, "4.7.28", "")
	if !approx(l.Rate(), 5) {
		t.Fatalf("one burst cut twice: %v", l.Rate())
	}
	// The spacing follows the rate.
	l.Wait(context.Background())
	if w, _ := l.Wait(context.Background()); w != 200*time.Millisecond {
		t.Fatalf("spacing while halved: %v", w)
	}
	// Still throttled a minute later: cut again (multiplicative decrease).
	clk.advance(time.Minute)
	observe(l, 451, "4.7.650", "")
	if !approx(l.Rate(), 2.5) {
		t.Fatalf("second cut: %v", l.Rate())
	}
	// Five minutes from the last throttling reply the slowdown ends; then
	// a quarter of the configured rate comes back every five minutes.
	for _, step := range []struct {
		after time.Duration
		want  float64
	}{
		{5*time.Minute - time.Second, 2.5}, {time.Second, 2.5}, {5 * time.Minute, 5}, {5 * time.Minute, 7.5}, {4 * time.Minute, 7.5},
		{time.Minute, 10}, {time.Hour, 10},
	} {
		clk.advance(step.after)
		if !approx(l.Rate(), step.want) {
			t.Fatalf("%v later: rate %v, want %v", step.after, l.Rate(), step.want)
		}
	}
	if st := l.State(); st.Name != "normal" || st.Reason == "" {
		t.Errorf("after recovery: %+v, want normal with the last reason kept", st)
	}
	l.Wait(context.Background())
	if w, _ := l.Wait(context.Background()); w != 100*time.Millisecond {
		t.Fatalf("spacing after recovery: %v", w)
	}
}

func TestThrottleFloorAndSetRate(t *testing.T) {
	l, clk := testLane(1.5 / 60)
	for range 10 {
		observe(l, 421, "4.7.0", "")
		clk.advance(time.Minute)
	}
	if !approx(l.Rate(), MinRate) {
		t.Fatalf("below the floor: %v/min", l.Rate()*60)
	}

	slow, clk := testLane(1.0 / 86400) // configured 1/day stays 1/day
	observe(slow, 421, "4.7.0", "")
	clk.advance(time.Minute)
	observe(slow, 421, "4.7.0", "")
	if !approx(slow.Rate(), 1.0/86400) {
		t.Fatalf("a cut changed a rate below the floor: %v", slow.Rate())
	}

	unl, _ := testLane(math.Inf(1))
	observe(unl, 421, "4.7.28", "")
	if !math.IsInf(unl.Rate(), 1) {
		t.Fatalf("unlimited lane slowed to %v", unl.Rate())
	}

	l, clk = testLane(10)
	observe(l, 421, "4.7.28", "")
	l.SetRate(20) // the slowdown is a share of the new rate
	if !approx(l.Rate(), 10) {
		t.Fatalf("SetRate during a slowdown: %v", l.Rate())
	}
	clk.advance(5*time.Minute + 2*5*time.Minute)
	if !approx(l.Rate(), 20) {
		t.Fatalf("after the recovery: %v", l.Rate())
	}
}

// The lanes' rules run on the clock given in Options, and a provider's
// built-in rules come before the generic ones.
func TestRulesOnInjectedClock(t *testing.T) {
	clk := clock.NewFake(epoch)
	p := New(config.ResolveProviders(nil), config.DefaultRetry(), Options{Clock: clk})
	l := p.Match("gmail.com", nil)
	if re := observe(l, 421, "4.7.28", "rate limited"); re.Rule != "gmail-rate-limit" || !re.Acted {
		t.Fatalf("reaction: %+v", re)
	}
	if !approx(l.Rate(), 5) {
		t.Fatalf("after 421 4.7.28: %v", l.Rate())
	}
	clk.Advance(10*time.Minute - time.Second) // gmail-rate-limit holds ten minutes
	if !approx(l.Rate(), 5) {
		t.Fatalf("restored early: %v", l.Rate())
	}
	clk.Advance(time.Second + 5*time.Minute)
	if !approx(l.Rate(), 7.5) {
		t.Fatalf("a step after the slowdown: %v", l.Rate())
	}
}

// TestConcurrentUse exercises every entry point at once; run with -race.
func TestConcurrentUse(t *testing.T) {
	p, _ := newTestPolicy(t, []config.Provider{{Name: "gmail", MaxMessageRate: perMin(6000)}}, config.DefaultRetry())
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := range 200 {
				domain := fmt.Sprintf("d%d.example", (w*7+i)%13)
				if i%3 == 0 {
					domain = "gmail.com"
				}
				l := p.Match(domain, []string{"mx." + domain})
				if _, err := l.Wait(ctx); err != nil {
					t.Error(err)
					return
				}
				switch i % 10 {
				case 1:
					observe(l, 421, "4.7.28", "")
				case 2:
					l.SetRate(float64(1 + i%5))
				case 3:
					_ = p.Lanes()
				case 4:
					_ = l.Rate()
				case 5:
					p.NextAttempt(i%8+1, epoch, epoch.Add(time.Duration(i)*time.Minute))
				}
			}
		})
	}
	wg.Wait()
	if n := len(p.Lanes()); n != 14 {
		t.Fatalf("%d lanes, want 13 catch-all + gmail", n)
	}
}

// Greylisting answers 451 4.7.1 like some throttling does, but it asks for
// a later retry of one message: the lane keeps its rate.
func TestGreylistingIsNotThrottling(t *testing.T) {
	l, _ := testLane(10)
	observe(l, 451, "4.7.1", "Greylisted, see https://postgrey.schweikert.ch/help/ca.example")
	observe(l, 451, "4.7.1", "Try again later (graylisting in action)")
	if l.Rate() != 10 {
		t.Fatalf("greylisting slowed the lane to %v", l.Rate())
	}
	observe(l, 451, "4.7.1", "Too many messages, slow down")
	if !approx(l.Rate(), 5) {
		t.Fatalf("a 451 4.7.1 without greylisting left the rate at %v, want halved", l.Rate())
	}
}

// Seed copies going to junk slow the provider's lane: once enough of the
// latest are known and the inbox's share is under the threshold, the
// lane acts once, with an alert, and counts afresh. A Gmail tab is inbox.
func TestPlacementRule(t *testing.T) {
	clk := clock.NewFake(epoch)
	p := New(config.ResolveProviders([]config.Provider{{Name: "gmail", Placement: &config.PlacementRule{
		Window: 10, MinSample: 4, Below: 0.5, Action: config.ActionSlow, Factor: 0.5, For: config.Duration(30 * time.Minute)}}}),
		config.DefaultRetry(), Options{Clock: clk})
	l, ok := p.ProviderLane("gmail")
	if !ok {
		t.Fatal("no gmail lane")
	}
	if _, ok := p.ProviderLane("nowhere"); ok {
		t.Fatal("a lane for a provider that does not exist")
	}
	for i, folder := range []string{"inbox", "junk", "tab:promotions"} {
		if re := l.ObservePlacement(folder); re.Acted {
			t.Fatalf("acted after %d copies, under the minimum sample", i+1)
		}
	}
	// 2 of 4 in the inbox: not under half.
	if re := l.ObservePlacement("missing"); re.Acted {
		t.Fatal("acted at exactly the threshold")
	}
	// 2 of 5.
	re := l.ObservePlacement("junk")
	if !re.Acted || !re.Alert || re.Rule != "placement" || !approx(l.Rate(), 5) {
		t.Fatalf("after 2 of 5 in the inbox: %+v, rate %v; want slowed to 5 with an alert", re, l.Rate())
	}
	if st := l.State(); st.Name != "slowed" || !strings.Contains(st.Reason, "40%") {
		t.Errorf("state %+v", st)
	}
	// The count starts afresh: three more junk copies do not act again.
	for range 3 {
		if re := l.ObservePlacement("junk"); re.Acted {
			t.Fatal("acted again before a fresh sample")
		}
	}
	clk.Advance(time.Minute)
	if re := l.ObservePlacement("junk"); !re.Acted || !approx(l.Rate(), 2.5) {
		t.Fatalf("a fresh bad sample: %+v, rate %v; want a second cut to 2.5", re, l.Rate())
	}
}

// A lane's state survives a restart: what its rules and operators made of
// it is restored into a fresh policy, and ends when it would have.
func TestSnapshotRestore(t *testing.T) {
	clk := clock.NewFake(epoch)
	newPolicy := func() *Policy {
		return New(config.ResolveProviders(nil), config.DefaultRetry(), Options{Clock: clk})
	}
	p := newPolicy()
	gmail := p.Match("gmail.com", nil)
	gmail.React(421, "4.7.28", "slow down", "issuer")                                // slowed for 10m
	gmail.React(550, "5.7.26", "unauthenticated", "issuer")                          // issuer's bulk held for 1h
	p.Match("corp.example", nil).Pause("moving the MX")                              // a catch-all lane paused
	p.Match("yahoo.com", nil).Override(1, epoch.Add(2*time.Hour), "a careful start") // overridden
	saved := map[string]Snapshot{}
	for _, l := range p.Lanes() {
		snap, v := l.Snapshot()
		if v == 0 {
			continue
		}
		raw, err := json.Marshal(snap)
		if err != nil {
			t.Fatal(err)
		}
		var back Snapshot
		if err := json.Unmarshal(raw, &back); err != nil {
			t.Fatal(err)
		}
		saved[l.Key()] = back
	}
	if len(saved) != 3 {
		t.Fatalf("%d lanes changed, want gmail, default/corp.example and yahoo: %v", len(saved), saved)
	}

	clk.Advance(time.Minute) // the restart
	q := newPolicy()
	for key, snap := range saved {
		l, ok := q.LaneByKey(key)
		if !ok {
			t.Fatalf("no lane %s after the restart", key)
		}
		l.Restore(snap)
	}
	g, _ := q.LaneByKey("gmail")
	if !approx(g.Rate(), 5) {
		t.Errorf("gmail after the restart: %v, want still halved", g.Rate())
	}
	if held, until := g.Suspended(false, "issuer"); !held || !until.Equal(epoch.Add(time.Hour)) {
		t.Errorf("issuer's bulk after the restart: held %v until %v, want held until %v", held, until, epoch.Add(time.Hour))
	}
	if held, _ := g.Suspended(true, "issuer"); held {
		t.Error("issuer's transactional mail held")
	}
	if st := q.Match("corp.example", nil).State(); st.Name != "paused" {
		t.Errorf("corp.example's lane after the restart: %+v, want paused", st)
	}
	if y := q.Match("yahoo.com", nil); !approx(y.Rate(), 1) {
		t.Errorf("yahoo after the restart: %v, want the override", y.Rate())
	}
	clk.Advance(time.Hour)
	if held, _ := g.Suspended(false, "issuer"); held {
		t.Error("the suspension outlived its hour after the restart")
	}
	if _, ok := q.LaneByKey("no-such-provider"); ok {
		t.Error("a lane for a provider the configuration does not have")
	}
}

// Warm-up: each day the lane sends at most that day's bulk; the rest is
// held until the next day begins in the schedule's zone; transactional
// mail is never held; after the last day only the rate applies.
func TestWarmup(t *testing.T) {
	loc, err := time.LoadLocation("America/Argentina/Buenos_Aires")
	if err != nil {
		t.Skip("no time zone data:", err)
	}
	start := time.Date(2026, 12, 1, 0, 0, 0, 0, loc)
	clk := clock.NewFake(start.Add(9 * time.Hour))
	p := New(config.ResolveProviders([]config.Provider{{Name: "gmail", Warmup: &config.Warmup{
		Start: "2026-12-01", Timezone: "America/Argentina/Buenos_Aires", Schedule: []int{2, 3}}}}),
		config.DefaultRetry(), Options{Clock: clk})
	l, _ := p.ProviderLane("gmail")
	for i := range 2 {
		if held, _ := l.Suspended(false, "issuer"); held {
			t.Fatalf("bulk %d of day 0 held", i+1)
		}
		l.TakeBulk("issuer")
	}
	held, until := l.Suspended(false, "issuer")
	if !held || !until.Equal(start.AddDate(0, 0, 1)) {
		t.Fatalf("after day 0's 2: held %v until %v, want held until midnight in Buenos Aires %v", held, until, start.AddDate(0, 0, 1))
	}
	if held, _ := l.Suspended(true, "issuer"); held {
		t.Fatal("transactional mail held by warm-up")
	}
	if st := l.State(); st.Name != "warming" || st.WarmupLeft != 0 {
		t.Fatalf("state %+v, want warming with nothing left today", st)
	}
	// A restart keeps today's count.
	snap, _ := l.Snapshot()
	q := New(config.ResolveProviders([]config.Provider{{Name: "gmail", Warmup: &config.Warmup{
		Start: "2026-12-01", Timezone: "America/Argentina/Buenos_Aires", Schedule: []int{2, 3}}}}),
		config.DefaultRetry(), Options{Clock: clk})
	l, _ = q.ProviderLane("gmail")
	l.Restore(snap)
	if held, _ := l.Suspended(false, "issuer"); !held {
		t.Fatal("a restart forgot today's warm-up count")
	}
	clk.Advance(15 * time.Hour) // day 1 in Buenos Aires: 3 more
	for i := range 3 {
		if held, _ := l.Suspended(false, "issuer"); held {
			t.Fatalf("bulk %d of day 1 held", i+1)
		}
		l.TakeBulk("issuer")
	}
	if held, _ := l.Suspended(false, "issuer"); !held {
		t.Fatal("day 1's cap of 3 let a fourth go")
	}
	clk.Advance(24 * time.Hour) // past the schedule: the rate alone
	if held, _ := l.Suspended(false, "issuer"); held || l.State().Name != "normal" {
		t.Fatalf("after the schedule: held %v, state %+v", held, l.State())
	}
}

// Where a clock change skips midnight (Chile, Cuba), warm-up days still
// count dates: never a negative day, never a day that ended before it
// began (a worker would spin on it).
func TestWarmupAcrossSkippedMidnights(t *testing.T) {
	for _, c := range []struct {
		zone, start string
		at          time.Time
	}{
		{"America/Santiago", "2026-09-06", time.Date(2026, 9, 6, 2, 30, 0, 0, time.UTC)}, // 23:30 the evening before
		{"America/Havana", "2027-03-01", time.Date(2027, 3, 14, 4, 30, 0, 0, time.UTC)},  // 23:30, midnight skipped next
		{"America/Santiago", "2026-09-01", time.Date(2026, 9, 6, 3, 30, 0, 0, time.UTC)}, // the skipped hour itself
		{"UTC", "2026-12-01", time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)},            // before the start
	} {
		loc, err := time.LoadLocation(c.zone)
		if err != nil {
			t.Skip("no time zone data:", err)
		}
		cw := config.Warmup{Start: c.start, Timezone: c.zone, Schedule: []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}}
		start, _ := cw.Begins()
		w := &warmup{start: start, loc: loc, schedule: cw.Schedule}
		day, end := w.day(c.at)
		if day < 0 || !end.After(c.at) {
			t.Errorf("%s from %s at %s: day %d ending %s", c.zone, c.start, c.at.In(loc), day, end.In(loc))
		}
	}
}

// A multi-line reply is matched as one line, so greylisting said on its
// second line is still greylisting.
func TestMultiLineReply(t *testing.T) {
	l, _ := testLane(10)
	if re := observe(l, 451, "4.7.1", "Please try again later\n4.7.1 Greylisted for 5 minutes"); re.Rule != "greylisting" {
		t.Fatalf("multi-line greylisting taken by %q", re.Rule)
	}
	if l.Rate() != 10 {
		t.Fatalf("greylisting slowed the lane to %v", l.Rate())
	}
}

// Resuming lifts what the rules decided: a misfired suspension does not
// hold the lane for its whole time.
func TestResumeLiftsRules(t *testing.T) {
	clk := clock.NewFake(epoch)
	p := New(config.ResolveProviders(nil), config.DefaultRetry(), Options{Clock: clk})
	g := p.Match("gmail.com", nil)
	g.React(550, "5.7.26", "unauthenticated", "issuer")
	g.React(421, "4.7.28", "slow down", "issuer")
	if held, _ := g.Suspended(false, "issuer"); !held || !approx(g.Rate(), 5) {
		t.Fatal("the rules did not act")
	}
	g.Resume("DNS fixed")
	if held, _ := g.Suspended(false, "issuer"); held || !approx(g.Rate(), 10) || g.State().Name != "normal" {
		t.Fatalf("after resume: %+v", g.State())
	}
}

// A threshold counts matches within its window; a per-tenant rule counts
// each tenant's apart, so three tenants' single failures suspend nobody.
func TestThresholds(t *testing.T) {
	clk := clock.NewFake(epoch)
	p := New(config.ResolveProviders([]config.Provider{{Name: "gmail", Rules: []config.ReplyRule{
		{Name: "auth", Match: `^550 5\.7\.26 `, Action: config.ActionSuspend, PerTenant: true, For: config.Duration(time.Hour),
			Threshold: config.Threshold{Count: 2, Window: time.Minute}},
		{Name: "busy", Match: `^421 4\.7\.0 `, Action: config.ActionSlow, Factor: 0.5, For: config.Duration(time.Hour),
			Threshold: config.Threshold{Count: 3, Window: time.Minute}}}}}),
		config.DefaultRetry(), Options{Clock: clk})
	g, _ := p.ProviderLane("gmail")
	for _, tenant := range []string{"a", "b", "c"} {
		if re := g.React(550, "5.7.26", "unauthenticated", tenant); re.Acted {
			t.Fatalf("one failure of tenant %s acted", tenant)
		}
	}
	if re := g.React(550, "5.7.26", "unauthenticated", "a"); !re.Acted {
		t.Fatal("tenant a's second failure within the minute did not act")
	}
	if held, _ := g.Suspended(false, "a"); !held {
		t.Fatal("tenant a not held")
	}
	if held, _ := g.Suspended(false, "b"); held {
		t.Fatal("tenant b held for a's failures")
	}
	// Three within a minute act; spread wider, they do not.
	g.React(421, "4.7.0", "busy", "a")
	clk.Advance(45 * time.Second)
	g.React(421, "4.7.0", "busy", "a")
	clk.Advance(30 * time.Second)
	if re := g.React(421, "4.7.0", "busy", "a"); re.Acted {
		t.Fatal("three matches over 75 s acted on a 3/1m threshold")
	}
	if re := g.React(421, "4.7.0", "busy", "b"); !re.Acted || !approx(g.Rate(), 5) {
		t.Fatalf("three matches within a minute: %+v, rate %v", re, g.Rate())
	}
}

// A tenant's own warm-up holds that tenant's bulk on each covered
// provider's lane, counted per lane; another tenant's bulk, the tenant's
// transactional mail and uncovered providers pass it by; a restart keeps
// the count.
func TestTenantWarmup(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC))
	newPolicy := func() *Policy {
		return New(config.ResolveProviders(nil), config.DefaultRetry(), Options{Clock: clk,
			TenantWarmups: map[string]*config.Warmup{"newco": {Start: "2026-12-01", Timezone: "UTC", Schedule: []int{2, 4},
				Providers: []string{"gmail", "yahoo"}}}})
	}
	p := newPolicy()
	g, _ := p.ProviderLane("gmail")
	y, _ := p.ProviderLane("yahoo")
	o, _ := p.ProviderLane("outlook")
	for i := range 2 {
		if held, _ := g.Suspended(false, "newco"); held {
			t.Fatalf("newco's bulk %d of day 0 held at gmail", i+1)
		}
		g.TakeBulk("newco")
	}
	held, until := g.Suspended(false, "newco")
	if !held || !until.Equal(time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("newco past its cap at gmail: held %v until %v, want held until midnight", held, until)
	}
	for _, c := range []struct {
		lane          *Lane
		tenant        string
		transactional bool
	}{{g, "issuer", false}, {g, "newco", true}, {y, "newco", false}, {o, "newco", false}} {
		if held, _ := c.lane.Suspended(c.transactional, c.tenant); held {
			t.Errorf("%s's mail (transactional %v) held at %s by newco's warm-up at gmail", c.tenant, c.transactional, c.lane.Key())
		}
	}
	if st := g.State(); st.Name != "normal" {
		t.Errorf("a tenant's warm-up put the whole lane in state %q", st.Name)
	}
	if w := g.TenantWarmups()["newco"]; w.Left != 0 || w.Day != 0 {
		t.Errorf("newco's warm-up at gmail: %+v", w)
	}
	if o.TenantWarmups() != nil {
		t.Errorf("outlook is not covered, yet shows %v", o.TenantWarmups())
	}
	snap, _ := g.Snapshot()
	g2, _ := newPolicy().ProviderLane("gmail")
	g2.Restore(snap)
	if held, _ := g2.Suspended(false, "newco"); !held {
		t.Fatal("a restart forgot newco's count at gmail")
	}
	clk.Advance(24 * time.Hour)
	if w := g2.TenantWarmups()["newco"]; w.Left != 4 || w.Day != 1 {
		t.Errorf("day 1: %+v, want 4 left", w)
	}
	clk.Advance(24 * time.Hour)
	if held, _ := g2.Suspended(false, "newco"); held || len(g2.TenantWarmups()) != 0 {
		t.Error("after its schedule newco is still warming")
	}
}

// A slot a worker reserved but had no message for is given back: the
// next message starts when that one would have, not an interval later.
func TestUnusedSlotGivenBack(t *testing.T) {
	l, _ := testLane(10)
	first, _, err := l.WaitSlot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_ = first // used
	unused, _, err := l.WaitSlot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	unused.Unused()
	start, _, err := l.wait(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if want := epoch.Add(100 * time.Millisecond); !start.Equal(want) {
		t.Fatalf("the next message starts at %v, want %v: the unused slot was not given back", start, want)
	}
	var none Slot
	none.Unused() // an unlimited lane's empty slot: nothing to give back
}
