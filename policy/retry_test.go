package policy

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/certgate/certgate/config"
)

func durs(ds ...time.Duration) []config.Duration {
	out := make([]config.Duration, len(ds))
	for i, d := range ds {
		out[i] = config.Duration(d)
	}
	return out
}

func TestNextAttemptSchedule(t *testing.T) {
	p, _ := newTestPolicy(t, nil, config.Retry{
		Schedule: durs(time.Minute, 5*time.Minute, 15*time.Minute),
		MaxAge:   config.Duration(24 * time.Hour),
	})
	recv := epoch
	now := recv.Add(time.Hour)
	for attempts, want := range map[int]time.Duration{
		-3: time.Minute, 0: time.Minute, 1: time.Minute, 2: 5 * time.Minute,
		3: 15 * time.Minute, 4: 15 * time.Minute, 100: 15 * time.Minute,
	} {
		next, giveUp := p.NextAttempt(attempts, recv, now)
		if giveUp || next.Sub(now) != want {
			t.Errorf("attempts %d: next in %v, giveUp %v; want %v", attempts, next.Sub(now), giveUp, want)
		}
	}
}

func TestNextAttemptJitterBounds(t *testing.T) {
	p, _ := newTestPolicy(t, nil, config.Retry{
		Schedule: durs(10 * time.Minute),
		MaxAge:   config.Duration(24 * time.Hour),
		Jitter:   0.2,
	})
	now := epoch
	for _, tc := range []struct {
		u    float64
		want time.Duration
	}{
		{0, 8 * time.Minute},
		{0.5, 10 * time.Minute},
		{0.75, 11 * time.Minute},
	} {
		p.rnd = func() float64 { return tc.u }
		if next, _ := p.NextAttempt(1, now, now); next.Sub(now) != tc.want {
			t.Errorf("u=%v: delay %v, want %v", tc.u, next.Sub(now), tc.want)
		}
	}

	r := rand.New(rand.NewPCG(1, 2))
	p.rnd = r.Float64
	lo, hi := 10*time.Minute, 10*time.Minute
	for range 10000 {
		next, giveUp := p.NextAttempt(1, now, now)
		d := next.Sub(now)
		if giveUp || d < 8*time.Minute || d > 12*time.Minute {
			t.Fatalf("delay %v (giveUp %v) outside 10m±20%%", d, giveUp)
		}
		lo, hi = min(lo, d), max(hi, d)
	}
	// Uniform: the draws reach close to both ends.
	if lo > 8*time.Minute+10*time.Second || hi < 12*time.Minute-10*time.Second {
		t.Errorf("jitter spread %v..%v does not cover ±20%%", lo, hi)
	}
}

func TestNextAttemptGiveUp(t *testing.T) {
	p, _ := newTestPolicy(t, nil, config.Retry{
		Schedule: durs(10 * time.Minute),
		MaxAge:   config.Duration(time.Hour),
	})
	recv := epoch

	next, giveUp := p.NextAttempt(3, recv, recv.Add(30*time.Minute))
	if giveUp || !next.Equal(recv.Add(40*time.Minute)) {
		t.Fatalf("well within max age: %v %v", next, giveUp)
	}
	// The next step would pass max age: one last attempt exactly at max age.
	next, giveUp = p.NextAttempt(5, recv, recv.Add(55*time.Minute))
	if giveUp || !next.Equal(recv.Add(time.Hour)) {
		t.Fatalf("near max age: next %v (+%v), giveUp %v", next, next.Sub(recv), giveUp)
	}
	// That attempt failing gives up.
	for _, age := range []time.Duration{time.Hour, time.Hour + time.Second, 48 * time.Hour} {
		next, giveUp = p.NextAttempt(6, recv, recv.Add(age))
		if !giveUp || !next.IsZero() {
			t.Fatalf("age %v: next %v, giveUp %v", age, next, giveUp)
		}
	}
}
