package gateway

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"
)

func TestAuthRefusedDuringTransaction(t *testing.T) {
	e := newEnv(t, envOptions{trusted: []string{"127.0.0.0/8"}})
	r := e.raw()
	r.cmd("MAIL FROM:<certificados@ca.example>", "250")
	r.cmd("AUTH PLAIN "+b64("\x00app\x00"+testPassword), "503 5.5.1")
	r.cmd("AUTH PLAIN !!!notbase64", "454") // go-smtp's own reply to bad base64
	r.cmd("RSET", "250")
	r.cmd("AUTH PLAIN "+b64("garbage-without-nuls"), "501 5.5.2")
}

// Shutdown does not wait for ever on an idle client: at the deadline its
// session is closed.
func TestShutdownClosesIdleSessions(t *testing.T) {
	e := newEnv(t, envOptions{})
	r := e.raw() // connected, idle
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	e.server.Shutdown(ctx)
	r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := r.r.ReadString('\n')
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("the idle session is still open after shutdown (%v)", err)
	}

}

func TestAuthThrottleCountsIPv6PerNetwork(t *testing.T) {
	a := newAuthThrottle(time.Second, 2, time.Hour)
	now := time.Now()
	a.failed(netip.MustParseAddr("2001:db8:1:2::1"), now)
	if d := a.failed(netip.MustParseAddr("2001:db8:1:2:ffff::9"), now); d != 2*time.Second {
		t.Fatalf("second failure from the same /64 paused %v, want 2s", d)
	}
	if _, ok := a.allowed(netip.MustParseAddr("2001:db8:1:2::77"), now); ok {
		t.Fatal("the /64 may try again past its budget")
	}
	if suspect, ok := a.allowed(netip.MustParseAddr("2001:db8:1:3::1"), now); suspect || !ok {
		t.Fatalf("another /64: suspect %v, allowed %v", suspect, ok)
	}
	if d := a.failed(netip.MustParseAddr("2001:db8:1:3::1"), now); d != time.Second {
		t.Fatalf("first failure from another /64 paused %v, want 1s", d)
	}
	if _, ok := a.allowed(netip.MustParseAddr("2001:db8:1:2::1"), now.Add(time.Hour+time.Second)); !ok {
		t.Fatal("the /64 is still refused a window after its last failure")
	}
}

// An address refused busySuspect times for want of a bcrypt slot is
// suspect, as one that has failed is, until busyMemory passes.
func TestAuthThrottleBusyMakesSuspect(t *testing.T) {
	a := newAuthThrottle(0, 5, time.Hour)
	now := time.Now()
	ip := netip.MustParseAddr("192.0.2.1")
	for i := 0; i < busySuspect; i++ {
		if suspect, _ := a.allowed(ip, now); suspect {
			t.Fatalf("suspect after %d refusals for want of a slot", i)
		}
		a.busy(ip, now)
	}
	if suspect, ok := a.allowed(ip, now); !suspect || !ok {
		t.Fatalf("after %d: suspect %v, allowed %v; want both", busySuspect, suspect, ok)
	}
	if suspect, _ := a.allowed(ip, now.Add(busyMemory+time.Second)); suspect {
		t.Fatal("still suspect once busyMemory has passed")
	}
}

// A freed bcrypt slot goes to a clean client before a suspect that waited
// longer, and suspects never take the last slot.
func TestHashSlotsServeCleanFirst(t *testing.T) {
	h := newHashSlots(2)
	suspect, clean := make(chan struct{}), make(chan struct{})
	h.running = 2
	h.queue = [2][]chan struct{}{{clean}, {suspect}}
	closed := func(c chan struct{}) bool {
		select {
		case <-c:
			return true
		default:
			return false
		}
	}
	h.release()
	if !closed(clean) || closed(suspect) {
		t.Fatal("the freed slot did not go to the clean client")
	}
	h.release()
	if closed(suspect) {
		t.Fatal("a suspect took the last free slot")
	}
	h.release()
	if !closed(suspect) || h.running != 1 {
		t.Fatalf("the suspect still waits with no slot taken (running %d)", h.running)
	}
}

// Connections are counted per /24 of IPv4 and per /64 of IPv6.
func TestNetworkOf(t *testing.T) {
	for addr, want := range map[string]string{
		"192.0.2.77":          "192.0.2.0/24",
		"2001:db8:1:2:3::4":   "2001:db8:1:2::/64",
		"::ffff:192.0.2.77":   "192.0.2.0/24",
		"2001:db8:1:2:ffff::": "2001:db8:1:2::/64",
	} {
		if got := networkOf(netip.MustParseAddr(addr)); got.String() != want {
			t.Errorf("networkOf(%s) = %s, want %s", addr, got, want)
		}
	}
}
