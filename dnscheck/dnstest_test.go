package dnscheck

import (
	"context"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// zoneServer is an authoritative-and-recursive stand-in on loopback,
// serving UDP and TCP on one port from a table of records.
type zoneServer struct {
	addr string

	mu      sync.Mutex
	records map[string][]dns.RR // canonical owner name -> records
	// slow are names (and everything under them) whose queries are
	// answered only when the test ends: past any client timeout.
	slow []string
	// signed are zones whose answers carry AD to a DO query.
	signed []string
	// truncate are names whose UDP answers are truncated, so the client
	// must retry over TCP.
	truncate []string
	release  chan struct{}
	queries  map[string]int // "name type" -> count
}

func newZoneServer(t *testing.T, zone ...string) *zoneServer {
	t.Helper()
	z := &zoneServer{records: map[string][]dns.RR{}, release: make(chan struct{}), queries: map[string]int{}}
	z.add(t, zone...)
	var udp net.PacketConn
	var tcp net.Listener
	for try := 0; ; try++ {
		var err error
		if udp, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if tcp, err = net.Listen("tcp", udp.LocalAddr().String()); err == nil {
			break
		}
		udp.Close()
		if try == 10 {
			t.Fatalf("no port free for both UDP and TCP: %v", err)
		}
	}
	z.addr = udp.LocalAddr().String()
	var started sync.WaitGroup
	started.Add(2)
	servers := []*dns.Server{
		{PacketConn: udp, Handler: z, NotifyStartedFunc: started.Done},
		{Listener: tcp, Handler: z, NotifyStartedFunc: started.Done},
	}
	for _, s := range servers {
		go s.ActivateAndServe()
	}
	started.Wait()
	t.Cleanup(func() {
		for _, s := range servers {
			s.Shutdown()
		}
	})
	t.Cleanup(func() { close(z.release) }) // runs first: slow handlers return
	return z
}

// add parses zone-file lines (RFC 1035 5.1) into the table.
func (z *zoneServer) add(t testing.TB, lines ...string) {
	t.Helper()
	z.mu.Lock()
	defer z.mu.Unlock()
	for _, l := range lines {
		rr, err := dns.NewRR(l)
		if err != nil {
			t.Fatalf("zone line %q: %v", l, err)
		}
		n := dns.CanonicalName(rr.Header().Name)
		z.records[n] = append(z.records[n], rr)
	}
}

func under(name string, zones []string) bool {
	for _, zn := range zones {
		if dns.IsSubDomain(dns.CanonicalName(zn), name) {
			return true
		}
	}
	return false
}

func (z *zoneServer) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(q)
	m.RecursionAvailable = true
	if len(q.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		w.WriteMsg(m)
		return
	}
	qn, qt := dns.CanonicalName(q.Question[0].Name), q.Question[0].Qtype
	z.mu.Lock()
	z.queries[qn+" "+dns.TypeToString[qt]]++
	slow, trunc := under(qn, z.slow), under(qn, z.truncate)
	ad := under(qn, z.signed) && q.IsEdns0() != nil && q.IsEdns0().Do()
	z.mu.Unlock()
	if slow {
		<-z.release
		return
	}
	if trunc && w.LocalAddr().Network() == "udp" {
		m.Truncated = true
		w.WriteMsg(m)
		return
	}
	z.mu.Lock()
	name := qn
	for hops := 0; hops < 20; hops++ {
		rrs, exists := z.records[name]
		if !exists {
			if name == qn {
				m.Rcode = dns.RcodeNameError
			}
			break
		}
		var cname *dns.CNAME
		for _, rr := range rrs {
			if c, ok := rr.(*dns.CNAME); ok && qt != dns.TypeCNAME {
				cname = c
			}
			if rr.Header().Rrtype == qt {
				m.Answer = append(m.Answer, dns.Copy(rr))
			}
		}
		if cname == nil {
			break
		}
		m.Answer = append(m.Answer, dns.Copy(cname))
		name = dns.CanonicalName(cname.Target)
	}
	z.mu.Unlock()
	m.AuthenticatedData = ad
	w.WriteMsg(m)
}

func (z *zoneServer) resolver(timeout time.Duration) *Resolver {
	return &Resolver{Addr: z.addr, Timeout: timeout}
}

func (z *zoneServer) count(name, qtype string) int {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.queries[dns.CanonicalName(name)+" "+qtype]
}

func TestResolverBounds(t *testing.T) {
	var many []string
	for i := 0; i < MaxRecords+20; i++ {
		many = append(many, "many.example. 300 IN TXT \"r"+strings.Repeat("x", i)+"\"")
	}
	z := newZoneServer(t, many...)
	big := `big.example. 300 IN TXT` + strings.Repeat(` "`+strings.Repeat("b", 255)+`"`, MaxTXTBytes/255+1)
	z.add(t, big,
		"tc.example. 300 IN TXT \"over tcp\"",
		"c0.example. 300 IN CNAME c1.example.",
	)
	for i := 1; i <= MaxCNAMEs+1; i++ {
		z.add(t, "c"+strconv.Itoa(i)+".example. 300 IN CNAME c"+strconv.Itoa(i+1)+".example.")
	}
	z.add(t, "c"+strconv.Itoa(MaxCNAMEs+2)+".example. 300 IN TXT \"end\"",
		"short.example. 300 IN CNAME target.other.example.",
		"target.other.example. 300 IN TXT \"followed\"",
		"target.other.example. 300 IN A 192.0.2.9",
		"stray.example. 300 IN TXT \"mine\"")
	z.truncate = []string{"tc.example", "big.example"}
	z.slow = []string{"slow.example"}
	r := z.resolver(time.Second)
	ctx := context.Background()

	got, err := r.LookupTXT(ctx, "many.example")
	if err != nil || len(got) != MaxRecords {
		t.Errorf("many: %d records, %v; want the first %d", len(got), err, MaxRecords)
	}
	if _, err := r.LookupTXT(ctx, "big.example"); err == nil || !strings.Contains(err.Error(), "bytes") {
		t.Errorf("big TXT: %v, want refused", err)
	}
	if got, err := r.LookupTXT(ctx, "tc.example"); err != nil || len(got) != 1 || got[0] != "over tcp" {
		t.Errorf("truncated over UDP: %q, %v; want the TCP answer", got, err)
	}
	if z.count("tc.example", "TXT") != 2 {
		t.Errorf("tc.example asked %d times, want UDP then TCP", z.count("tc.example", "TXT"))
	}
	if _, err := r.LookupTXT(ctx, "c0.example"); err == nil || !strings.Contains(err.Error(), "CNAME chain") {
		t.Errorf("long CNAME chain: %v, want refused", err)
	}
	if got, err := r.LookupTXT(ctx, "short.example"); err != nil || len(got) != 1 || got[0] != "followed" {
		t.Errorf("CNAME: %q, %v", got, err)
	}
	if got, err := r.LookupIPAddr(ctx, "short.example"); err != nil || len(got) != 1 || got[0].IP.String() != "192.0.2.9" {
		t.Errorf("A through CNAME: %v, %v", got, err)
	}
	var de *net.DNSError
	if _, err := r.LookupTXT(ctx, "nothing.example"); !asDNSError(err, &de) || !de.IsNotFound {
		t.Errorf("NXDOMAIN: %v, want IsNotFound", err)
	}
	if _, err := r.LookupMX(ctx, "stray.example"); !asDNSError(err, &de) || !de.IsNotFound {
		t.Errorf("no MX at an existing name: %v, want IsNotFound", err)
	}
	r.Timeout = 50 * time.Millisecond
	if _, err := r.LookupTXT(ctx, "slow.example"); !asDNSError(err, &de) || !de.IsTimeout || !de.Temporary() {
		t.Errorf("slow: %v, want a temporary timeout", err)
	}
}

func asDNSError(err error, de **net.DNSError) bool {
	e, ok := err.(*net.DNSError)
	*de = e
	return ok
}

func TestSystemResolver(t *testing.T) {
	addr, err := SystemResolver()
	if err != nil {
		t.Skipf("no usable /etc/resolv.conf here: %v", err)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		t.Errorf("SystemResolver = %q: %v", addr, err)
	}
}
