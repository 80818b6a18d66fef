package delivery

import (
	"bufio"
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certgate/certgate/config"
)

// scriptedMX serves each connection with h on 127.0.0.1 and returns its port.
func scriptedMX(t *testing.T, ip string, port int, h func(c net.Conn)) (int, error) {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		return 0, err
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				h(c)
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// smtpScript answers EHLO with exts, STARTTLS with starttls, and accepts
// mail otherwise.
func smtpScript(greeting string, exts []string, starttls string) func(net.Conn) {
	return func(c net.Conn) {
		r := bufio.NewReader(c)
		w := func(s string) { c.Write([]byte(s + "\r\n")) }
		w(greeting)
		if !strings.HasPrefix(greeting, "220") {
			return
		}
		inData := false
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			u := strings.ToUpper(strings.TrimSpace(line))
			switch {
			case inData:
				if line == ".\r\n" {
					inData = false
					w("250 2.0.0 queued")
				}
			case strings.HasPrefix(u, "EHLO"):
				for _, e := range exts {
					w("250-" + e)
				}
				w("250 mx.example")
			case u == "STARTTLS":
				w(starttls)
			case u == "DATA":
				inData = true
				w("354 go ahead")
			case u == "QUIT":
				w("221 bye")
				return
			default:
				w("250 2.0.0 ok")
			}
		}
	}
}

func testDialer(hosts map[string][]string) *Dialer {
	return &Dialer{Hostname: "out.ca.example", Resolver: StaticResolver{Hosts: hosts},
		ConnectTimeout: 5 * time.Second, CommandTimeout: 5 * time.Second, DataTimeout: 5 * time.Second}
}

// mxEverywhere is the default route: every domain through its MX hosts.
var mxEverywhere = []Route{{Domains: []string{"*"}, MX: true, TLS: config.TLSOpportunistic}}

// Connections are shared by destination key: a route that demands TLS or
// its own login must never ride on a connection made for another route.
func TestDestinationKeySeparatesRoutes(t *testing.T) {
	res := StaticResolver{MX: map[string][]string{"secure.example": {"aspmx.l.google.com"}, "other.example": {"aspmx.l.google.com"}}}
	r := NewRouter([]Route{
		{Domains: []string{"secure.example"}, MX: true, TLS: config.TLSRequired},
		{Domains: []string{"*"}, MX: true, TLS: config.TLSOpportunistic},
	}, 25, res, nil)
	a, err1 := r.Resolve(context.Background(), "secure.example")
	b, err2 := r.Resolve(context.Background(), "other.example")
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if a.Key == b.Key {
		t.Fatalf("tls: required and opportunistic routes share the key %q", a.Key)
	}
}

func TestConnectFailureDoesNotDisableTLS(t *testing.T) {
	d := testDialer(map[string][]string{"mx.example": {"127.0.0.1"}})
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := l.Addr().(*net.TCPAddr).Port
	l.Close()
	if c, _ := d.Dial(context.Background(), &Destination{Key: "k", Hosts: []string{"mx.example"}, Port: closed, TLS: config.TLSOpportunistic}); c != nil {
		t.Fatal("connected to a closed port")
	}
	if d.tlsBroken("mx.example") {
		t.Fatal("a refused connection marked the host's STARTTLS as broken")
	}
}

func TestStartTLSRefusedGoesOnInPlaintextOnlyWhenOpportunistic(t *testing.T) {
	for _, reply := range []string{"454 4.7.0 TLS not available", "502 5.5.1 not implemented"} {
		port, err := scriptedMX(t, "127.0.0.1", 0, smtpScript("220 mx.example ESMTP", []string{"STARTTLS"}, reply))
		if err != nil {
			t.Fatal(err)
		}
		d := testDialer(map[string][]string{"mx.example": {"127.0.0.1"}})
		dest := &Destination{Key: "k", Hosts: []string{"mx.example"}, Port: port, TLS: config.TLSOpportunistic}
		c, res := d.Dial(context.Background(), dest)
		if c == nil {
			t.Fatalf("STARTTLS answered %q: opportunistic route did not go on in plaintext: %v", reply, res)
		}
		if r := c.Send("a@ca.example", "b@x.example", plainMsg); r.Code != 250 {
			t.Fatalf("send after %q: %v", reply, r)
		}
		c.Close()
		dest.TLS = config.TLSRequired
		if c, res := d.Dial(context.Background(), dest); c != nil || !res.Network {
			t.Fatalf("STARTTLS answered %q: required route got conn %v, result %+v (want a deferral)", reply, c != nil, res)
		}
	}
}

func TestFiveXXGreetingTriesTheNextMXAndNeverBounces(t *testing.T) {
	var port int
	var err error
	for i := 0; i < 10; i++ { // the same port on two loopback addresses
		if port, err = scriptedMX(t, "127.0.0.1", 0, smtpScript("554 5.7.1 no service here", nil, "")); err != nil {
			t.Fatal(err)
		}
		if _, err = scriptedMX(t, "127.0.0.2", port, smtpScript("220 mx2.example ESMTP", nil, "")); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	d := testDialer(map[string][]string{"mx1.example": {"127.0.0.1"}, "mx2.example": {"127.0.0.2"}})
	c, res := d.Dial(context.Background(), &Destination{Key: "k", Hosts: []string{"mx1.example", "mx2.example"}, Port: port, TLS: config.TLSNone})
	if c == nil || c.Host != "mx2.example" {
		t.Fatalf("5xx greeting on mx1 stopped the dial: %+v", res)
	}
	c.Close()
	// With only the refusing host, the failure defers: it is about the
	// session, not about any message.
	if c, res := d.Dial(context.Background(), &Destination{Key: "k", Hosts: []string{"mx1.example"}, Port: port, TLS: config.TLSNone}); c != nil || !res.Network || res.Code != 554 {
		t.Fatalf("all hosts 5xx: conn %v, result %+v; want a Network (deferring) result with the 554", c != nil, res)
	}
}

func TestDataWriteHasADeadline(t *testing.T) {
	stalled := make(chan struct{}) // the receiver stalls until the test ends
	defer close(stalled)
	port, err := scriptedMX(t, "127.0.0.1", 0, func(c net.Conn) {
		r := bufio.NewReader(c)
		w := func(s string) { c.Write([]byte(s + "\r\n")) }
		w("220 mx.example ESMTP")
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			switch u := strings.ToUpper(line); {
			case strings.HasPrefix(u, "EHLO"):
				w("250 mx.example")
			case strings.HasPrefix(u, "DATA"):
				w("354 go ahead")
				<-stalled // and read nothing more
				return
			default:
				w("250 ok")
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	d := testDialer(map[string][]string{"mx.example": {"127.0.0.1"}})
	d.DataTimeout = 500 * time.Millisecond
	c, res := d.Dial(context.Background(), &Destination{Key: "k", Hosts: []string{"mx.example"}, Port: port, TLS: config.TLSNone})
	if c == nil {
		t.Fatal(res)
	}
	big := []byte(strings.Repeat(strings.Repeat("x", 70)+"\r\n", 1<<19)) // 37 MB: more than the socket buffers
	done := make(chan Result, 1)
	go func() { done <- c.Send("a@ca.example", "b@x.example", big) }()
	select {
	case r := <-done:
		if !r.Network {
			t.Fatalf("a receiver that stopped reading: %+v, want a network failure", r)
		}
		c.Close() // already dropped by Send: must not block on QUIT
	case <-time.After(60 * time.Second): // far above the 500 ms deadline, for a loaded CI
		c.nc.Close() // unblock Send before the test ends, so it does not race
		<-done
		t.Fatal("Send was still blocked writing DATA to a receiver that stopped reading")
	}
}

// countingResolver counts MX lookups and holds each until release is
// closed, so that concurrent resolutions meet one lookup in flight.
type countingResolver struct {
	StaticResolver
	calls   atomic.Int64
	release chan struct{}
}

func (c *countingResolver) LookupMX(ctx context.Context, d string) ([]*net.MX, error) {
	c.calls.Add(1)
	<-c.release
	return c.StaticResolver.LookupMX(ctx, d)
}

// A wave of recipients at one domain shares one MX lookup.
func TestResolveSharesOneLookupPerDomain(t *testing.T) {
	res := &countingResolver{StaticResolver: StaticResolver{MX: map[string][]string{"wave.example": {"mx.wave.example"}}},
		release: make(chan struct{})}
	r := NewRouter(mxEverywhere, 25, res, nil)
	var started, wg sync.WaitGroup
	for i := 0; i < 200; i++ {
		wg.Add(1)
		started.Add(1)
		go func() {
			defer wg.Done()
			started.Done()
			if _, err := r.Resolve(context.Background(), "wave.example"); err != nil {
				t.Error(err)
			}
		}()
	}
	// Every resolution has started while the first lookup is held: the
	// others wait for it, or find its answer cached.
	started.Wait()
	close(res.release)
	wg.Wait()
	if n := res.calls.Load(); n != 1 {
		t.Fatalf("%d MX lookups for one domain, want 1", n)
	}
}

type flakyHostResolver struct{ StaticResolver }

func (flakyHostResolver) LookupMX(_ context.Context, d string) ([]*net.MX, error) {
	return nil, &net.DNSError{Err: "no such host", Name: d, IsNotFound: true}
}
func (flakyHostResolver) LookupHost(_ context.Context, h string) ([]string, error) {
	return nil, &net.DNSError{Err: "server misbehaving", Name: h, IsTemporary: true}
}

func TestImplicitMXLookupFailureIsTemporary(t *testing.T) {
	r := NewRouter(mxEverywhere, 25, flakyHostResolver{}, nil)
	_, err := r.Resolve(context.Background(), "nomx.example")
	var perm permanentError
	if err == nil || errors.As(err, &perm) {
		t.Fatalf("SERVFAIL on the implicit MX: %v, want a temporary error", err)
	}
}

func TestDSNLinesStayWithin998Octets(t *testing.T) {
	dsn := buildDSN(dsnInput{ReportingMTA: "relay.ca.example", QueueID: "q", OriginalID: "o", Sender: "a@ca.example",
		Recipient: "b@x.example", Status: "5.0.0", Diagnostic: "550 " + strings.Repeat("x", 1500), Now: time.Now(),
		Original: []byte("From: a@ca.example\r\n\r\nbody\r\n")})
	for _, line := range strings.Split(string(dsn), "\r\n") {
		if len(line) > 998 {
			t.Fatalf("DSN line of %d octets", len(line))
		}
	}
}

func TestReadReplyRefusesEndlessLines(t *testing.T) {
	long := "250 " + strings.Repeat("x", 10000) + "\r\n"
	if _, _, err := readReply(bufio.NewReader(strings.NewReader(long))); err == nil {
		t.Fatal("a 10,000-octet reply line was read")
	}
}
