package policy

import (
	"math"
	"time"
)

// NextAttempt says when to try a temporarily failed message again.
// attempts is the number of attempts made so far (at least 1; smaller
// values count as 1), received is when the message was accepted and now is
// when the last attempt failed.
//
// The delay is schedule[min(attempts-1, len-1)] (the last step repeats),
// moved by a uniform random fraction of up to ±jitter of itself, so that
// messages deferred together in a wave do not all retry in the same second.
//
// giveUp is true, and next the zero time, once now-received has reached
// max_age: the message then bounces. When the next delay would land after
// received+max_age, the last attempt is moved to exactly received+max_age
// rather than dropped, so every message is tried for its whole max_age; the
// failure of that attempt gives up. (RFC 5321 section 4.5.4.1 suggests
// retrying at least 30 minutes apart and giving up after 4-5 days; both are
// configurable here.)
func (p *Policy) NextAttempt(attempts int, received, now time.Time) (next time.Time, giveUp bool) {
	deadline := received.Add(p.maxAge)
	if !now.Before(deadline) {
		return time.Time{}, true
	}
	i := min(max(attempts, 1)-1, len(p.schedule)-1)
	next = now.Add(p.jittered(p.schedule[i]))
	if next.After(deadline) {
		next = deadline
	}
	return next, false
}

// jittered moves d by up to ±jitter of itself, uniformly.
func (p *Policy) jittered(d time.Duration) time.Duration {
	if p.jitter == 0 {
		return d
	}
	f := 1 + p.jitter*(2*p.rnd()-1)
	return time.Duration(math.Round(float64(d) * f))
}
