package sim

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// outcome sends one message on a fresh connection and says how it went:
// "250", an SMTP code, or "network" when no reply came.
func outcome(addr, to string, timeout time.Duration) string {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return "dial: " + err.Error()
	}
	c := smtp.NewClient(nc)
	c.CommandTimeout, c.SubmissionTimeout = timeout, timeout
	defer c.Close()
	if err = c.Hello("relay.issuer.example"); err == nil {
		err = sendOn(c, "bounce@issuer.example", []string{to}, message("faults", strings.Repeat("body line\r\n", 100)))
	}
	var se *smtp.SMTPError
	switch {
	case err == nil:
		return "250"
	case errors.As(err, &se):
		return fmt.Sprint(se.Code)
	}
	return "network"
}

func TestFaultsAtEachPoint(t *testing.T) {
	stall := 5 * time.Second
	for _, tc := range []struct {
		name   string
		faults Faults
		want   string // outcome
		stored int
		count  func(FaultStats) int
	}{
		{"greeting 421", Faults{Greeting421: 1}, "421", 0, func(f FaultStats) int { return f.Greeting421 }},
		{"greeting stall", Faults{GreetingStall: 1}, "network", 0, func(f FaultStats) int { return f.GreetingStall }},
		{"rcpt 421", Faults{Rcpt421: 1}, "421", 0, func(f FaultStats) int { return f.Rcpt421 }},
		{"rcpt 451", Faults{Rcpt451: 1}, "451", 0, func(f FaultStats) int { return f.Rcpt451 }},
		{"rcpt 452", Faults{Rcpt452: 1}, "452", 0, func(f FaultStats) int { return f.Rcpt452 }},
		{"rcpt 550", Faults{Rcpt550: 1}, "550", 0, func(f FaultStats) int { return f.Rcpt550 }},
		{"rcpt stall", Faults{RcptStall: 1}, "network", 0, func(f FaultStats) int { return f.RcptStall }},
		{"data 451", Faults{Data451: 1}, "451", 0, func(f FaultStats) int { return f.Data451 }},
		{"data 550", Faults{Data550: 1}, "550", 0, func(f FaultStats) int { return f.Data550 }},
		{"drop mid-data", Faults{DropMidData: 1}, "network", 0, func(f FaultStats) int { return f.DropMidData }},
		{"drop after data", Faults{DropAfterData: 1}, "network", 1, func(f FaultStats) int { return f.DropAfterData }},
		{"stall after data", Faults{StallAfterData: 1}, "network", 1, func(f FaultStats) int { return f.StallAfterData }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.faults.Stall = stall
			p, err := Start(Options{Name: "gmail", Faults: tc.faults})
			if err != nil {
				t.Fatal(err)
			}
			if got := outcome(p.Addr(), "a@gmail.com", time.Second); got != tc.want {
				t.Errorf("outcome %s, want %s", got, tc.want)
			}
			st := p.Stats()
			if n := tc.count(st.Faults); n != 1 {
				t.Errorf("fault counted %d times, want 1: %v", n, st.Faults)
			}
			if st.Received != tc.stored || st.Faults.Unknown() != tc.stored {
				t.Errorf("stored %d, unknown outcome %d; want %d", st.Received, st.Faults.Unknown(), tc.stored)
			}
			if st.Rejected != 0 {
				t.Errorf("faults counted as %d rejections", st.Rejected)
			}
			// A stall must not hold Close for its whole length.
			start := time.Now()
			p.Close()
			if d := time.Since(start); d > stall/2 {
				t.Errorf("Close took %v with a stall in progress", d)
			}
		})
	}
}

func TestFaultsAreDeterministic(t *testing.T) {
	faults := Faults{Seed: 7, Rcpt421: 0.1, Rcpt451: 0.1, Rcpt452: 0.05, Rcpt550: 0.05,
		Data451: 0.1, Data550: 0.05, DropMidData: 0.05, DropAfterData: 0.05}
	run := func(f Faults) ([]string, FaultStats) {
		p := start(t, Options{Name: "gmail", Faults: f})
		var got []string
		for i := range 60 {
			// Each recipient comes back three times, as retries do.
			got = append(got, outcome(p.Addr(), fmt.Sprintf("u%d@gmail.com", i%20), 5*time.Second))
		}
		return got, p.Stats().Faults
	}
	a, sa := run(faults)
	b, sb := run(faults)
	if strings.Join(a, " ") != strings.Join(b, " ") || sa != sb {
		t.Fatalf("same seed, different runs:\n%v %v\n%v %v", a, sa, b, sb)
	}
	kinds := map[string]int{}
	for _, o := range a {
		kinds[o]++
	}
	if len(kinds) < 5 || kinds["250"] < 20 {
		t.Fatalf("outcomes %v: want a mix of faults and deliveries", kinds)
	}
	faults.Seed++
	if c, _ := run(faults); strings.Join(a, " ") == strings.Join(c, " ") {
		t.Fatal("another seed drew the same faults")
	}
}

func TestFaultProportions(t *testing.T) {
	f := Faults{Seed: 1, Rcpt451: 0.2, Rcpt550: 0.05}
	n451, n550 := 0, 0
	for i := range 10000 {
		switch f.pick("rcpt", f.rcptChances(), fmt.Sprintf("r%d", i), 0) {
		case fRcpt451:
			n451++
		case fRcpt550:
			n550++
		}
	}
	if n451 < 1800 || n451 > 2200 || n550 < 400 || n550 > 600 {
		t.Fatalf("451 %d and 550 %d of 10000, want about 2000 and 500", n451, n550)
	}
}

func TestGreylistingByTriplet(t *testing.T) {
	delay := 600 * time.Millisecond
	p := start(t, Options{Name: "gmail", Faults: Faults{Greylist: delay}})
	rcpt := func(local, from, to string) error {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
		nc, err := d.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		c := smtp.NewClient(nc)
		defer c.Close()
		if err := c.Hello("relay.issuer.example"); err != nil {
			t.Fatal(err)
		}
		if err := c.Mail(from, nil); err != nil {
			t.Fatal(err)
		}
		return c.Rcpt(to, nil)
	}
	greylisted := smtp.EnhancedCode{4, 7, 1}
	wantCode(t, rcpt("127.0.0.1", "a@issuer.example", "x@gmail.com"), 451, greylisted)
	first := time.Now()                                                                // no earlier than the sim saw the triplet
	wantCode(t, rcpt("127.0.0.1", "a@issuer.example", "x@gmail.com"), 451, greylisted) // too soon
	time.Sleep(delay - time.Since(first))
	// Each element of the triplet makes a new one.
	wantCode(t, rcpt("127.0.0.2", "a@issuer.example", "x@gmail.com"), 451, greylisted)
	wantCode(t, rcpt("127.0.0.1", "b@issuer.example", "x@gmail.com"), 451, greylisted)
	wantCode(t, rcpt("127.0.0.1", "a@issuer.example", "y@gmail.com"), 451, greylisted)
	for range 2 { // passed, and remembered
		if err := rcpt("127.0.0.1", "a@issuer.example", "X@gmail.com"); err != nil {
			t.Fatalf("retry after the delay: %v", err)
		}
	}
	if f := p.Stats().Faults; f.Greylisted != 5 || f.GreylistPassed != 1 {
		t.Fatalf("greylisted %d, passed %d; want 5 and 1", f.Greylisted, f.GreylistPassed)
	}
	p.Reset()
	wantCode(t, rcpt("127.0.0.1", "a@issuer.example", "x@gmail.com"), 451, greylisted)
}

func TestTLSBreak(t *testing.T) {
	server, client := selfSigned(t, gmailMX)
	p := start(t, Options{Name: "gmail", MXHost: gmailMX, TLS: server, Faults: Faults{TLSBreak: 1}})
	_, err := dial(p.Addr(), "relay.issuer.example", client)
	var se *smtp.SMTPError
	if err == nil || errors.As(err, &se) {
		t.Fatalf("STARTTLS on a broken provider: %v, want a failed handshake", err)
	}
	// Without STARTTLS the provider delivers.
	if err := send(t, p.Addr(), []string{"a@gmail.com"}, message("plain", "x")); err != nil {
		t.Fatal(err)
	}
	if st := p.Stats(); st.Faults.TLSBroken != 1 || st.Received != 1 {
		t.Fatalf("TLS broken %d, received %d; want 1 and 1", st.Faults.TLSBroken, st.Received)
	}
}

func TestFaultsChecked(t *testing.T) {
	server, _ := selfSigned(t, gmailMX)
	for _, o := range []Options{
		{Faults: Faults{Rcpt451: 1.5}},
		{Faults: Faults{Data451: -0.1}},
		{Faults: Faults{Rcpt451: 0.6, Rcpt550: 0.6}},
		{Faults: Faults{TLSBreak: 0.5}},
		{TLS: server, Faults: Faults{Greylist: -time.Second}},
	} {
		if p, err := Start(o); err == nil {
			p.Close()
			t.Errorf("Start accepted %+v", o.Faults)
		}
	}
}
