package sim

import (
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// Faults make a provider behave like the broken and hostile receivers a
// relay meets on the Internet, so that tests can check that no message is
// lost, stuck or bounced wrongly. The zero value injects nothing.
//
// Each probability is the chance, in [0, 1], that its fault happens at the
// point it belongs to; at one point at most one fault happens, so the
// probabilities of a point must add up to 1 at most. Draws are
// deterministic: they depend on Seed and on what is drawn for (the
// connection's number, or the envelope and how often the provider has seen
// it), not on the order in which concurrent sessions get there, so a run is
// repeatable recipient by recipient.
type Faults struct {
	Seed uint64

	// At the greeting, drawn per connection.
	Greeting421   float64 // "421 4.3.2" instead of the greeting, then closed
	GreetingStall float64 // no greeting for Stall, then closed

	// TLSBreak is the chance, per connection, that STARTTLS is accepted and
	// the handshake then broken: the client reads garbage instead of the
	// server's hello and the connection is closed. It needs Options.TLS.
	TLSBreak float64

	// At RCPT, drawn per envelope sender and recipient.
	Rcpt421   float64 // "421 4.7.0", then closed (RFC 5321 3.8)
	Rcpt451   float64 // "451 4.3.0" local error
	Rcpt452   float64 // "452 4.2.2" mailbox full
	Rcpt550   float64 // "550 5.1.1" no such user: the copy must bounce
	RcptStall float64 // no reply for Stall, then closed

	// At DATA, drawn per envelope (sender and recipients).
	Data451        float64 // the whole body read, then "451 4.3.0"; not stored
	Data550        float64 // the whole body read, then "550 5.7.1"; not stored
	DropMidData    float64 // part of the body read, then closed without a reply; not stored
	DropAfterData  float64 // stored, then closed before the reply: the client cannot know
	StallAfterData float64 // stored, then no reply for Stall and closed: the client cannot know

	// Stall is how long a stall lasts (Close ends it early). The default,
	// 11 minutes, outlasts every timeout RFC 5321 4.5.3.2 gives a client.
	Stall time.Duration

	// Greylist, when positive, greylists every (client IP, sender,
	// recipient) triplet at RCPT (RFC 6647 2.4): the first try and every
	// retry within Greylist of it get "451 4.7.1"; from then on the
	// triplet passes.
	Greylist time.Duration
}

// FaultStats count the faults injected since Start or the last Reset. Faults
// are not counted in Stats.Rejected.
type FaultStats struct {
	Greeting421, GreetingStall, TLSBroken         int
	Rcpt421, Rcpt451, Rcpt452, Rcpt550, RcptStall int
	Data451, Data550, DropMidData                 int
	DropAfterData, StallAfterData                 int
	Greylisted                                    int // 451 replies to triplets still in their delay
	GreylistPassed                                int // triplets let through after their delay
}

// Unknown is the number of copies stored while the client was left without
// a reply: the one case where a careful client delivers twice (RFC 5321
// 4.5.3.2.6 asks for a long DATA timeout to make it rare).
func (f FaultStats) Unknown() int { return f.DropAfterData + f.StallAfterData }

// Permanent is the number of 5xx replies injected: each one bounces the
// recipient (or recipients) of its transaction.
func (f FaultStats) Permanent() int { return f.Rcpt550 + f.Data550 }

// String lists the faults injected, leaving out those that never were:
// "rcpt 451 3, greylisted 16 (passed 8)", or "none".
func (f FaultStats) String() string {
	var parts []string
	for _, c := range []struct {
		name string
		n    int
	}{
		{"greeting 421", f.Greeting421}, {"greeting stall", f.GreetingStall}, {"TLS broken", f.TLSBroken},
		{"rcpt 421", f.Rcpt421}, {"rcpt 451", f.Rcpt451}, {"rcpt 452", f.Rcpt452}, {"rcpt 550", f.Rcpt550},
		{"rcpt stall", f.RcptStall}, {"data 451", f.Data451}, {"data 550", f.Data550},
		{"drop mid-data", f.DropMidData}, {"drop after data", f.DropAfterData}, {"stall after data", f.StallAfterData},
	} {
		if c.n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", c.name, c.n))
		}
	}
	if f.Greylisted > 0 || f.GreylistPassed > 0 {
		parts = append(parts, fmt.Sprintf("greylisted %d (passed %d)", f.Greylisted, f.GreylistPassed))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

const defaultStall = 11 * time.Minute

// midDataBytes is how much of the body DropMidData reads: less than any
// signed message's header, so the connection drops inside the transfer.
const midDataBytes = 256

var (
	errFault421Greeting = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "service not available, closing transmission channel"}
	errFault421         = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "too many errors, closing transmission channel"}
	errFault451         = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "local error in processing, try again later"}
	errFault452         = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "mailbox full, try again later"}
	errFault550         = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user here"}
	errFaultData550     = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "message refused by content policy"}
	errGreylisted       = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "greylisted, try again later"}
	// errHungUp is returned to go-smtp after the sim closed the connection
	// itself; nobody reads it.
	errHungUp = errors.New("sim: connection closed by fault")
)

// fault names one injected fault; each has a counter in FaultStats.
type fault int

const (
	noFault fault = iota
	fGreeting421
	fGreetingStall
	fTLSBroken
	fRcpt421
	fRcpt451
	fRcpt452
	fRcpt550
	fRcptStall
	fData451
	fData550
	fDropMidData
	fDropAfterData
	fStallAfterData
)

func (f *FaultStats) counter(k fault) *int {
	switch k {
	case fGreeting421:
		return &f.Greeting421
	case fGreetingStall:
		return &f.GreetingStall
	case fTLSBroken:
		return &f.TLSBroken
	case fRcpt421:
		return &f.Rcpt421
	case fRcpt451:
		return &f.Rcpt451
	case fRcpt452:
		return &f.Rcpt452
	case fRcpt550:
		return &f.Rcpt550
	case fRcptStall:
		return &f.RcptStall
	case fData451:
		return &f.Data451
	case fData550:
		return &f.Data550
	case fDropMidData:
		return &f.DropMidData
	case fDropAfterData:
		return &f.DropAfterData
	case fStallAfterData:
		return &f.StallAfterData
	}
	return nil
}

// chance is one fault of a point and its probability.
type chance struct {
	p float64
	k fault
}

// The points where faults are drawn, in the order the chances are laid out
// on [0, 1).
func (f *Faults) greetingChances() []chance {
	return []chance{{f.Greeting421, fGreeting421}, {f.GreetingStall, fGreetingStall}}
}

func (f *Faults) rcptChances() []chance {
	return []chance{{f.Rcpt421, fRcpt421}, {f.Rcpt451, fRcpt451}, {f.Rcpt452, fRcpt452}, {f.Rcpt550, fRcpt550}, {f.RcptStall, fRcptStall}}
}

func (f *Faults) dataChances() []chance {
	return []chance{{f.Data451, fData451}, {f.Data550, fData550}, {f.DropMidData, fDropMidData},
		{f.DropAfterData, fDropAfterData}, {f.StallAfterData, fStallAfterData}}
}

func (f *Faults) tlsChances() []chance { return []chance{{f.TLSBreak, fTLSBroken}} }

// check reports a probability outside [0, 1], a point whose faults add up
// to more than 1, or TLSBreak without TLS to break.
func (f *Faults) check(hasTLS bool) error {
	for _, point := range [][]chance{f.greetingChances(), f.rcptChances(), f.dataChances(), f.tlsChances()} {
		sum := 0.0
		for _, c := range point {
			if !(c.p >= 0 && c.p <= 1) {
				return fmt.Errorf("fault probability %v is not in [0, 1]", c.p)
			}
			sum += c.p
		}
		if sum > 1+1e-9 {
			return fmt.Errorf("fault probabilities of one point add up to %v, more than 1", sum)
		}
	}
	if f.TLSBreak > 0 && !hasTLS {
		return errors.New("Faults.TLSBreak needs Options.TLS")
	}
	if f.Stall < 0 || f.Greylist < 0 {
		return errors.New("negative Faults.Stall or Faults.Greylist")
	}
	return nil
}

func anyChance(chances []chance) bool {
	for _, c := range chances {
		if c.p > 0 {
			return true
		}
	}
	return false
}

// pick draws a fault for the n-th time (from 0) that key reaches point.
func (f *Faults) pick(point string, chances []chance, key string, n int) fault {
	if !anyChance(chances) {
		return noFault
	}
	h := fnv.New64a()
	fmt.Fprintf(h, "%s\x00%s\x00%d", point, key, n)
	u := rand.New(rand.NewPCG(f.Seed, h.Sum64())).Float64()
	for _, c := range chances {
		if u < c.p {
			return c.k
		}
		u -= c.p
	}
	return noFault
}

func (f *Faults) stall() time.Duration {
	if f.Stall > 0 {
		return f.Stall
	}
	return defaultStall
}

// faultState is a provider's memory for drawing faults. Guarded by p.mu.
type faultState struct {
	seen map[string]int           // draws so far per point and key
	grey map[greyTriplet]greySeen // greylisting
}

type greyTriplet struct{ ip, from, rcpt string }

type greySeen struct {
	first  time.Time
	passed bool
}

func newFaultState() faultState {
	return faultState{seen: map[string]int{}, grey: map[greyTriplet]greySeen{}}
}

// draw picks the fault for this visit of key at point and counts it.
func (p *Provider) draw(point string, chances []chance, key string) fault {
	if !anyChance(chances) {
		return noFault // a provider without faults keeps no memory for them
	}
	f := &p.opts.Faults
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.faults.seen[point+"\x00"+key]
	p.faults.seen[point+"\x00"+key] = n + 1
	k := f.pick(point, chances, key, n)
	if c := p.stats.Faults.counter(k); c != nil {
		*c++
	}
	return k
}

// greylisted applies RFC 6647 greylisting to one triplet and counts it.
func (p *Provider) greylisted(ip, from, rcpt string) bool {
	delay := p.opts.Faults.Greylist
	if delay <= 0 {
		return false
	}
	t := greyTriplet{ip, strings.ToLower(from), strings.ToLower(rcpt)}
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	g, ok := p.faults.grey[t]
	switch {
	case !ok:
		p.faults.grey[t] = greySeen{first: now}
	case g.passed:
		return false
	case now.Sub(g.first) >= delay:
		g.passed = true
		p.faults.grey[t] = g
		p.stats.Faults.GreylistPassed++
		return false
	}
	p.stats.Faults.Greylisted++
	return true
}

// hangUp waits for d (or until the provider closes), then closes the raw
// connection without a word: a stalled receiver as the client sees it.
func (p *Provider) hangUp(c net.Conn, d time.Duration) {
	if d > 0 {
		p.waitUntil(func() bool { return p.closing }, d)
	}
	c.Close()
}

// greetingFault runs in admit with p.mu held; true means the connection was
// taken over by a fault and must not reach go-smtp.
func (p *Provider) greetingFault(c net.Conn, seq int) bool {
	f := &p.opts.Faults
	k := f.pick("greeting", f.greetingChances(), "", seq)
	if k == noFault {
		return false
	}
	*p.stats.Faults.counter(k)++
	p.refusals.Add(1)
	go func() {
		defer p.refusals.Done()
		if k == fGreeting421 {
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, replyLine(errFault421Greeting))
			c.Close()
			return
		}
		p.hangUp(c, f.stall())
	}()
	return true
}

// breakTLS runs when a client starts the TLS handshake on c: for a doomed
// connection it sends garbage instead of a server hello and closes.
func (p *Provider) breakTLS(c *conn) bool {
	f := &p.opts.Faults
	if f.TLSBreak == 0 {
		return false
	}
	p.mu.Lock()
	k := f.pick("tls", f.tlsChances(), "", c.seq)
	if k != noFault {
		p.stats.Faults.TLSBroken++
	}
	p.mu.Unlock()
	if k == noFault {
		return false
	}
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c.Conn, "this is not TLS\r\n")
	c.Close()
	return true
}

// rcptFault draws the fault for one RCPT and acts it out; nil means none.
func (s *session) rcptFault(to string) error {
	p := s.p
	switch p.draw("rcpt", p.opts.Faults.rcptChances(), s.from+"\x00"+strings.ToLower(to)) {
	case fRcpt421:
		return s.reply(errFault421)
	case fRcpt451:
		return errFault451
	case fRcpt452:
		return errFault452
	case fRcpt550:
		return errFault550
	case fRcptStall:
		p.hangUp(s.conn, p.opts.Faults.stall())
		return errHungUp
	}
	if ip := s.clientIP(); p.greylisted(ip, s.from, to) {
		return errGreylisted
	}
	return nil
}

// dataFault draws the fault for one transaction's DATA.
func (s *session) dataFault() fault {
	return s.p.draw("data", s.p.opts.Faults.dataChances(), s.from+"\x00"+strings.ToLower(strings.Join(s.rcpts, ",")))
}

func (s *session) clientIP() string {
	if s.conn == nil {
		return ""
	}
	host, _, _ := net.SplitHostPort(s.conn.RemoteAddr().String())
	return host
}
