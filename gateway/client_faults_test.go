package gateway

import (
	"context"
	"net"
	"testing"
	"time"

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
	dest := &Destination{Key: "k", Hosts: []string{"mx.example"}, TLS: TLSOpportunistic}
	dest.Port, _ = net.LookupPort("tcp", port)
	return d, dest
}

// delivery.connect_timeout bounds the greeting whether or not the route
// uses TLS: a server that accepts and says nothing must not hold a lane's
// worker for the command timeout (5 minutes by default).
func TestGreetingStallBoundedByConnectTimeout(t *testing.T) {
	for _, mode := range []TLSMode{TLSOpportunistic, TLSNone} {
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
	dest.TLS = TLSRequired
	if c, res := d.Dial(context.Background(), dest); c != nil || !res.Network {
		t.Fatalf("required: conn %v, %+v; want a deferral", c != nil, res)
	}
}
