package delivery

import (
	"bufio"
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/sim"
)

func startSim(t *testing.T, opts sim.Options) (*sim.Provider, *Dialer, *Destination) {
	t.Helper()
	opts.Domains = []string{"gmail.com"}
	p, err := sim.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	host, port, _ := net.SplitHostPort(p.Addr())
	portN, _ := strconv.Atoi(port)
	// The certificate from testCerts is for relay.ca.example: the MX is
	// named so, and the static table points the name at the sim.
	res := StaticResolver{Hosts: map[string][]string{"relay.ca.example": {host}}}
	d := &Dialer{Hostname: "out.ca.example", Resolver: res, ConnectTimeout: 5 * time.Second, CommandTimeout: 5 * time.Second, DataTimeout: 5 * time.Second}
	return p, d, &Destination{Key: "k", Hosts: []string{"relay.ca.example"}, Port: portN}
}

var plainMsg = []byte("From: <a@ca.example>\r\nTo: <b@gmail.com>\r\nSubject: hi\r\n\r\nbody\r\n")

func TestDeliverTLSRequiredVerified(t *testing.T) {
	serverTLS, clientTLS := sim.TLSPair("relay.ca.example")
	p, d, dest := startSim(t, sim.Options{TLS: serverTLS})
	dest.TLS, dest.RootCAs = config.TLSRequired, clientTLS.RootCAs
	c, res := d.Dial(context.Background(), dest)
	if c == nil {
		t.Fatalf("dial: %v", res)
	}
	defer c.Close()
	if !c.TLS {
		t.Fatal("not TLS")
	}
	for i := 0; i < 3; i++ { // one connection, three transactions
		if r := c.Send("a@ca.example", "b@gmail.com", plainMsg); r.Code != 250 {
			t.Fatalf("send %d: %v", i, r)
		}
	}
	m := p.Messages()
	if len(m) != 3 || !m[0].TLS || m[0].EHLO != "out.ca.example" {
		t.Fatalf("sim saw %d messages, TLS %v, EHLO %q", len(m), len(m) > 0 && m[0].TLS, m[0].EHLO)
	}
	if st := p.Stats(); st.DeliveriesPerConnectionMax != 3 {
		t.Fatalf("deliveries per connection %d, want 3", st.DeliveriesPerConnectionMax)
	}
}

func TestDeliverTLSRequiredRefusesUnverifiedOrMissing(t *testing.T) {
	serverTLS, _ := sim.TLSPair("relay.ca.example")
	_, d, dest := startSim(t, sim.Options{TLS: serverTLS})
	dest.TLS = config.TLSRequired // system roots: the test certificate does not verify
	if c, res := d.Dial(context.Background(), dest); c != nil || !res.Network {
		t.Fatalf("unverifiable certificate accepted under tls: required (%v)", res)
	}
	_, d2, dest2 := startSim(t, sim.Options{})
	dest2.TLS = config.TLSRequired
	c, res := d2.Dial(context.Background(), dest2)
	if c != nil || !strings.Contains(res.Text, "does not offer STARTTLS") {
		t.Fatalf("plaintext MX accepted under tls: required (%v)", res)
	}
}

func TestDeliverOpportunisticFallsBackToPlaintext(t *testing.T) {
	// A server that offers STARTTLS and then breaks the handshake.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go brokenTLSServer(c)
		}
	}()
	host, port, _ := net.SplitHostPort(l.Addr().String())
	portN, _ := strconv.Atoi(port)
	d := &Dialer{Hostname: "out.ca.example", Resolver: StaticResolver{Hosts: map[string][]string{"mx.broken.example": {host}}},
		ConnectTimeout: 5 * time.Second, CommandTimeout: 5 * time.Second, DataTimeout: 5 * time.Second}
	dest := &Destination{Key: "k", Hosts: []string{"mx.broken.example"}, Port: portN, TLS: config.TLSOpportunistic}
	c, res := d.Dial(context.Background(), dest)
	if c == nil {
		t.Fatalf("no plaintext fallback: %v", res)
	}
	defer c.Close()
	if c.TLS {
		t.Fatal("TLS claimed on a broken handshake")
	}
	if r := c.Send("a@ca.example", "b@gmail.com", plainMsg); r.Code != 250 {
		t.Fatalf("send: %v", r)
	}
	if !d.tlsBroken("mx.broken.example") {
		t.Fatal("the broken STARTTLS was not remembered")
	}
}

// brokenTLSServer speaks just enough SMTP: it offers STARTTLS, answers 220
// and then sends garbage instead of a TLS handshake; on a plaintext session
// it accepts one message.
func brokenTLSServer(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	w := func(s string) { c.Write([]byte(s + "\r\n")) }
	w("220 mx.broken.example ESMTP")
	inData := false
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if inData {
			if line == ".\r\n" {
				inData = false
				w("250 2.0.0 queued")
			}
			continue
		}
		cmd := strings.ToUpper(strings.TrimSpace(line))
		switch {
		case strings.HasPrefix(cmd, "EHLO"):
			w("250-mx.broken.example")
			w("250-8BITMIME")
			w("250 STARTTLS")
		case cmd == "STARTTLS":
			w("220 2.0.0 go ahead")
			c.Write([]byte("this is not TLS\r\n"))
			return
		case cmd == "DATA":
			inData = true
			w("354 go ahead")
		case cmd == "QUIT":
			w("221 bye")
			return
		default:
			w("250 2.0.0 ok")
		}
	}
}

func TestDialTriesNextMX(t *testing.T) {
	p, d, dest := startSim(t, sim.Options{})
	_, port, _ := net.SplitHostPort(p.Addr())
	// The first MX refuses connections (nothing listens on 127.0.0.9 at the port).
	d.Resolver = StaticResolver{Hosts: map[string][]string{"mx1.example": {"127.0.0.9"}, "relay.ca.example": {"127.0.0.1"}}}
	dest.Hosts = []string{"mx1.example", "relay.ca.example"}
	dest.Port, _ = strconv.Atoi(port)
	c, res := d.Dial(context.Background(), dest)
	if c == nil {
		t.Fatalf("dial: %v", res)
	}
	defer c.Close()
	if c.Host != "relay.ca.example" {
		t.Fatalf("connected to %s", c.Host)
	}
}

func FuzzReadReply(f *testing.F) {
	for _, s := range []string{"250 ok\r\n", "250-a\r\n250-STARTTLS\r\n250 SIZE 1\r\n", "421\r\n", "xyz\r\n", "25\r\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		code, text, err := readReply(bufio.NewReader(strings.NewReader(s)))
		if err == nil && (code < 200 || code > 599 || strings.ContainsAny(text, "\r\x00")) {
			t.Fatalf("readReply(%q) = %d %q", s, code, text)
		}
	})
}

// A connection the server closed while it sat in the pool fails at MAIL;
// that is reported as stale, not as an attempt at the message.
func TestStaleReusedConnection(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dropped := make(chan struct{})
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer func() { c.Close(); close(dropped) }()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(c)
		w := func(s string) { c.Write([]byte(s + "\r\n")) }
		w("220 mx.example ESMTP")
		inData := false
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			switch {
			case inData && line == ".\r\n":
				w("250 2.0.0 queued")
				return // then drop the connection, as an idle timeout would
			case inData:
			case strings.HasPrefix(strings.ToUpper(line), "EHLO"):
				w("250 mx.example")
			case strings.HasPrefix(strings.ToUpper(line), "DATA"):
				inData = true
				w("354 go ahead")
			default:
				w("250 2.0.0 ok")
			}
		}
	}()
	host, port, _ := net.SplitHostPort(l.Addr().String())
	portN, _ := strconv.Atoi(port)
	d := &Dialer{Hostname: "out.ca.example", Resolver: StaticResolver{Hosts: map[string][]string{"mx.example": {host}}},
		ConnectTimeout: 5 * time.Second, CommandTimeout: 5 * time.Second, DataTimeout: 5 * time.Second}
	c, res := d.Dial(context.Background(), &Destination{Key: "k", Hosts: []string{"mx.example"}, Port: portN, TLS: config.TLSNone})
	if c == nil {
		t.Fatal(res)
	}
	defer c.Close()
	if r := c.Send("a@ca.example", "b@x.example", plainMsg); r.Code != 250 {
		t.Fatalf("first send: %v", r)
	}
	<-dropped
	if r := c.Send("a@ca.example", "c@x.example", plainMsg); !r.Stale || !r.Network {
		t.Fatalf("second send on a dropped connection: %+v, want stale", r)
	}
}
