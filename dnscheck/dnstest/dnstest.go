// Package dnstest runs a DNS server on loopback, UDP and TCP on one port,
// answering from a table of records, for tests of code that asks DNS:
// zones that are right, wrong, missing, slow (answered only when the test
// ends, past any client timeout), DNSSEC-validated, or truncated over UDP.
package dnstest

import (
	"net"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// zoneServer is an authoritative-and-recursive stand-in on loopback,
// serving UDP and TCP on one port from a table of records.
// Server is the loopback DNS server.
type Server struct {
	// Addr is its host:port, UDP and TCP.
	Addr string

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

// New starts a server answering from zone, zone-file lines, and stops it
// when the test ends.
func New(t testing.TB, zone ...string) *Server {
	t.Helper()
	z := &Server{records: map[string][]dns.RR{}, release: make(chan struct{}), queries: map[string]int{}}
	z.Add(t, zone...)
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
	z.Addr = udp.LocalAddr().String()
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

// Slow makes the names, and every name under them, answer only when the
// test ends: past any client timeout.
func (z *Server) Slow(names ...string) { z.set(&z.slow, names) }

// Signed makes answers under the zones carry AD to a query with DO.
func (z *Server) Signed(zones ...string) { z.set(&z.signed, zones) }

// Truncate makes UDP answers under the names truncated, so that clients
// ask again over TCP.
func (z *Server) Truncate(names ...string) { z.set(&z.truncate, names) }

func (z *Server) set(field *[]string, names []string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	*field = append(*field, names...)
}

// Add parses zone-file lines (RFC 1035 5.1) into the table.
func (z *Server) Add(t testing.TB, lines ...string) {
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

// ServeDNS answers from the table, following CNAMEs within it.
func (z *Server) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
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

// Count is how many queries for name and qtype ("TXT") the server had.
func (z *Server) Count(name, qtype string) int {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.queries[dns.CanonicalName(name)+" "+qtype]
}
