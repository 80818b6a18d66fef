package delivery

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/sim"
)

// faultyMX starts a simulated MX for mx.example with faults and a dialer
// that reaches it.
func faultyMX(t *testing.T, f sim.Faults) (*Dialer, *Destination) {
	t.Helper()
	c, err := sim.SelfSigned("mx.example")
	if err != nil {
		t.Fatal(err)
	}
	p, err := sim.Start(sim.Options{Name: "faulty", MXHost: "mx.example", TLS: c.ServerConfig(), Faults: f})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	host, port, _ := net.SplitHostPort(p.Addr())
	d := testDialer(map[string][]string{"mx.example": {host}})
	dest := &Destination{Key: "k", Hosts: []string{"mx.example"}, TLS: config.TLSOpportunistic}
	dest.Port, _ = net.LookupPort("tcp", port)
	return d, dest
}

// delivery.connect_timeout bounds the greeting whether or not the route
// uses TLS: a server that accepts and says nothing must not hold a lane's
// worker for the command timeout (5 minutes by default).
func TestGreetingStallBoundedByConnectTimeout(t *testing.T) {
	for _, mode := range []config.TLSMode{config.TLSOpportunistic, config.TLSNone} {
		d, dest := faultyMX(t, sim.Faults{GreetingStall: 1, Stall: time.Minute})
		d.ConnectTimeout, d.CommandTimeout = 300*time.Millisecond, 10*time.Second
		dest.TLS = mode
		start := time.Now()
		c, res := d.Dial(context.Background(), dest)
		if c != nil {
			c.Close()
			t.Fatalf("%s: connected to a server that never greeted", mode)
		}
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("%s: waited %v for a greeting; connect timeout is %v", mode, took.Round(time.Millisecond), d.ConnectTimeout)
		}
		if !res.Network {
			t.Errorf("%s: %+v, want a network failure", mode, res)
		}
	}
}

// A handshake that breaks after the server agreed to STARTTLS sends an
// opportunistic route on in plaintext and defers a route that requires TLS.
func TestBrokenHandshake(t *testing.T) {
	d, dest := faultyMX(t, sim.Faults{TLSBreak: 1})
	c, res := d.Dial(context.Background(), dest)
	if c == nil {
		t.Fatalf("opportunistic: %+v, want a plaintext session", res)
	}
	if c.TLS {
		t.Fatal("TLS reported on a broken handshake")
	}
	if r := c.Send("a@ca.example", "b@x.example", plainMsg); r.Code != 250 {
		t.Fatalf("send in plaintext after the broken handshake: %v", r)
	}
	c.Close()
	dest.TLS = config.TLSRequired
	if c, res := d.Dial(context.Background(), dest); c != nil || !res.Network {
		t.Fatalf("required: conn %v, %+v; want a deferral", c != nil, res)
	}
}

// A refusal at the greeting keeps its enhanced status code, with or without
// STARTTLS: "421 4.7.0" is how receivers say they throttle a sender.
func TestGreetingRefusalKeepsEnhancedCode(t *testing.T) {
	for _, mode := range []config.TLSMode{config.TLSOpportunistic, config.TLSNone} {
		d, dest := faultyMX(t, sim.Faults{Greeting421: 1})
		dest.TLS = mode
		c, res := d.Dial(context.Background(), dest)
		if c != nil {
			c.Close()
			t.Fatalf("%s: connected through a 421 greeting", mode)
		}
		if res.Code != 421 || res.Enhanced != "4.3.2" || res.Text != "service not available, closing transmission channel" || !res.Network {
			t.Errorf("%s: %+v, want 421 4.3.2 and the text, as a network failure", mode, res)
		}
	}
}

func TestReplyError(t *testing.T) {
	for _, tc := range []struct {
		code     int
		text     string
		enhanced string
		msg      string
	}{
		{421, "4.7.0 too many connections", "4.7.0", "too many connections"},
		{554, "5.7.1 no\n5.7.1 service", "5.7.1", "no\nservice"},
		{421, "mx.example busy", "", "mx.example busy"},
		{421, "5.7.1 class differs", "", "5.7.1 class differs"},
		{421, "4.x.0 not a code", "", "4.x.0 not a code"},
	} {
		r := resultOf("mx.example", replyError(tc.code, tc.text))
		if r.Enhanced != tc.enhanced || r.Text != tc.msg {
			t.Errorf("%d %q: enhanced %q text %q, want %q %q", tc.code, tc.text, r.Enhanced, r.Text, tc.enhanced, tc.msg)
		}
	}
}

// One broken handshake costs a minute of plaintext, not an hour: failures
// in a row back off up to an hour, and a handshake that works forgets them.
func TestBrokenHandshakeMemory(t *testing.T) {
	d, dest := faultyMX(t, sim.Faults{TLSBreak: 1})
	memory := func() tlsMemory {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.noTLS["mx.example"]
	}
	for _, want := range []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute} {
		c, res := d.Dial(context.Background(), dest)
		if c == nil || c.TLS {
			t.Fatalf("broken handshake: conn %v, %+v; want a plaintext session", c != nil, res)
		}
		c.Close()
		if got := time.Until(memory().until); got > want || got < want-10*time.Second {
			t.Fatalf("after %d failure(s) in a row, plaintext for %v; want %v", memory().fails, got.Round(time.Second), want)
		}
		m := memory()
		d.mu.Lock()
		d.noTLS["mx.example"] = tlsMemory{fails: m.fails} // as if the time had passed
		d.mu.Unlock()
	}
	for range 20 {
		d.markTLSBroken("mx.example")
	}
	if got := time.Until(memory().until); got > noTLSMemory {
		t.Fatalf("plaintext for %v, more than %v", got, noTLSMemory)
	}

	// The host's TLS works again (another sim on the same address).
	c, err := sim.SelfSigned("mx.example")
	if err != nil {
		t.Fatal(err)
	}
	good, err := sim.Start(sim.Options{Name: "good", MXHost: "mx.example", TLS: c.ServerConfig()})
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	_, port, _ := net.SplitHostPort(good.Addr())
	fixed := *dest
	fixed.Port, _ = net.LookupPort("tcp", port)
	d.mu.Lock()
	d.noTLS["mx.example"] = tlsMemory{fails: 20}
	d.mu.Unlock()
	conn, res := d.Dial(context.Background(), &fixed)
	if conn == nil || !conn.TLS {
		t.Fatalf("working TLS: conn %v, %+v; want a TLS session", conn != nil, res)
	}
	conn.Close()
	if m := memory(); m.fails != 0 {
		t.Fatalf("a working handshake left %d failures remembered", m.fails)
	}
}
