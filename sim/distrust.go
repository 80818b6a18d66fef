package sim

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/emersion/go-smtp"
)

// Distrust makes a provider a receiver that distrusts a sender who pushes
// too hard, as Outlook.com does with a sending IP of poor reputation: above
// a rate it refuses recipients with "451 4.7.650 ... rate limited due to IP
// reputation", and while it is pushed it files what it still accepts in
// junk. It trusts again after a calm period.
//
// Arrivals are the RCPT commands to hosted domains, refused ones included,
// counted for the whole provider (every sender and connection together) on
// the provider's clock (Options.Now). A sender who keeps pushing stays
// refused; one who slows down below the rate gets through at once, into
// junk until the calm period has passed.
type Distrust struct {
	// ThrottleAbove is the rate, in recipients per second, above which
	// RCPT is refused: an arrival is refused when more than ThrottleAbove ×
	// Window arrivals (this one included) fall in the Window ending with
	// it. It must be positive, and ThrottleAbove × Window at least 1.
	ThrottleAbove float64
	// Window is the window the rate is measured over; default one second.
	Window time.Duration
	// Calm is how long the rate must stay at or below ThrottleAbove (no
	// refused arrival) for the provider to stop being pushed; default ten
	// minutes. A push starts with the first refusal and ends Calm after
	// the last one.
	Calm time.Duration
	// Reply is the RCPT reply above the rate. nil is Outlook.com's "451
	// 4.7.650 The mail server [client IP] has been temporarily rate limited
	// due to IP reputation. ... (S775)"; a 421 also closes the connection.
	// Its code must be 400 or above.
	Reply *smtp.SMTPError
	// BulkOnly junks, while pushed, only the copies that look bulk
	// (Precedence: bulk, list or junk; a List-Id or List-Unsubscribe
	// field); otherwise every copy accepted while pushed goes to junk.
	BulkOnly bool
}

const (
	defaultDistrustWindow = time.Second
	defaultDistrustCalm   = 10 * time.Minute
	// maxDistrustWindow caps the arrivals one window holds, which the
	// provider keeps in memory.
	maxDistrustWindow = 100_000
)

// withDefaults checks d and fills in its defaults.
func (d Distrust) withDefaults() (Distrust, error) {
	if !(d.ThrottleAbove > 0) || math.IsInf(d.ThrottleAbove, 0) {
		return d, fmt.Errorf("Distrust.ThrottleAbove %v is not a positive rate", d.ThrottleAbove)
	}
	if d.Window < 0 || d.Calm < 0 {
		return d, errors.New("Distrust: negative Window or Calm")
	}
	if d.Window == 0 {
		d.Window = defaultDistrustWindow
	}
	if d.Calm == 0 {
		d.Calm = defaultDistrustCalm
	}
	switch n := d.limit(); {
	case n < 1:
		return d, fmt.Errorf("Distrust: a window of %v holds no message at %g/s", d.Window, d.ThrottleAbove)
	case n >= maxDistrustWindow:
		return d, fmt.Errorf("Distrust: a window of %v holds %d messages at %g/s, more than %d", d.Window, n, d.ThrottleAbove, maxDistrustWindow)
	}
	if d.Reply != nil && d.Reply.Code < 400 {
		return d, fmt.Errorf("Distrust.Reply %d does not refuse", d.Reply.Code)
	}
	return d, nil
}

// limit is how many arrivals a window may hold without being above the
// rate (a hair of slack keeps 0.7 × 10 s at 7).
func (d *Distrust) limit() int {
	return int(math.Floor(d.ThrottleAbove*d.Window.Seconds() + 1e-9))
}

// distrustState is what Distrust remembers; guarded by Provider.mu.
type distrustState struct {
	// ring holds the newest arrivals, at most limit+1 of them: when it is
	// full and its oldest is inside the window, the rate is above. Its
	// size is fixed, so a flood cannot grow it.
	ring     []time.Time
	next     int // where the next arrival goes
	held     int // arrivals in ring
	pushed   bool
	since    time.Time // the first refusal of this push, or when the last push ended
	lastOver time.Time // the last refusal
}

func newDistrustState(d *Distrust) distrustState {
	if d == nil {
		return distrustState{}
	}
	return distrustState{ring: make([]time.Time, d.limit()+1)}
}

// arrive records an arrival at t and says whether it is above the rate.
func (s *distrustState) arrive(t time.Time, window time.Duration) bool {
	s.ring[s.next] = t
	s.next = (s.next + 1) % len(s.ring)
	if s.held < len(s.ring) {
		s.held++
	}
	// Full, the oldest is the slot the next arrival will take.
	return s.held == len(s.ring) && t.Sub(s.ring[s.next]) < window
}

// settle ends the push when calm has passed since its last refusal by t.
func (s *distrustState) settle(t time.Time, calm time.Duration) {
	if end := s.lastOver.Add(calm); s.pushed && !t.Before(end) {
		s.pushed, s.since = false, end
	}
}

// distrustRcpt counts one RCPT's arrival and returns the reply refusing
// it, or nil.
func (s *session) distrustRcpt() *smtp.SMTPError {
	p := s.p
	d := p.opts.Distrust
	if d == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.now()
	st := &p.distrust
	st.settle(t, d.Calm)
	if !st.arrive(t, d.Window) {
		return nil
	}
	st.lastOver = t
	if !st.pushed {
		st.pushed, st.since = true, t
		p.log.Debug("distrust: pushed", "at", t)
	}
	p.stats.Throttled++
	p.notify()
	if d.Reply != nil {
		return d.Reply
	}
	return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 650}, Message: "The mail server [" + s.clientIP() +
		"] has been temporarily rate limited due to IP reputation. For e-mail delivery information, see https://aka.ms/postmaster (S775)"}
}

// pushedAt says whether the provider is pushed at t. Call with p.mu held.
func (p *Provider) pushedAt(t time.Time) bool {
	if p.opts.Distrust == nil {
		return false
	}
	p.distrust.settle(t, p.opts.Distrust.Calm)
	return p.distrust.pushed
}

// Distrusted reports Options.Distrust's state by the provider's clock:
// whether the provider is pushed and since when (the first refusal of the
// push). When it is not pushed, since is when the last push ended (Calm
// after its last refusal), or the zero time if there was none.
func (p *Provider) Distrusted() (pushed bool, since time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pushed = p.pushedAt(p.now())
	return pushed, p.distrust.since
}
