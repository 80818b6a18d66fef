package sim

import (
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/miekg/dns"
)

// DNS is a small authoritative DNS server on loopback, UDP and TCP on one
// 127.0.0.1 port, answering from zone-file lines: what the demo's
// domains publish, so that certgate's DNS self-check reads them as a
// receiver would. Each SOA line makes its owner a zone apex; names in no
// zone are refused, as an authoritative server does. Negative answers
// carry the zone's SOA (RFC 2308): NXDOMAIN for a name that does not
// exist, an empty answer for one that exists (or has names below it) but
// has no records of the type asked. CNAMEs are followed within the
// table; wildcards and DNSSEC are not served.
type DNS struct {
	addr    string
	servers []*dns.Server

	mu      sync.Mutex
	records map[string][]dns.RR // canonical owner name -> records
	zones   []string            // canonical apexes, from the SOA lines
	queries int
}

// ednsSize is the UDP payload the server advertises (DNS flag day 2020).
const ednsSize = 1232

// StartDNS parses zone, zone-file lines (RFC 1035 5.1, one record each,
// with absolute names), and starts serving them.
func StartDNS(zone ...string) (*DNS, error) {
	d := &DNS{records: map[string][]dns.RR{}}
	if err := d.Add(zone...); err != nil {
		return nil, err
	}
	udp, tcp, err := listenUDPAndTCP()
	if err != nil {
		return nil, err
	}
	d.addr = udp.LocalAddr().String()
	var started sync.WaitGroup
	started.Add(2)
	d.servers = []*dns.Server{
		{PacketConn: udp, Handler: d, NotifyStartedFunc: started.Done},
		{Listener: tcp, Handler: d, NotifyStartedFunc: started.Done},
	}
	for _, s := range d.servers {
		go s.ActivateAndServe()
	}
	started.Wait()
	return d, nil
}

// listenUDPAndTCP finds a 127.0.0.1 port free for both UDP and TCP.
func listenUDPAndTCP() (net.PacketConn, net.Listener, error) {
	for try := 0; ; try++ {
		udp, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, err
		}
		tcp, err := net.Listen("tcp", udp.LocalAddr().String())
		if err == nil {
			return udp, tcp, nil
		}
		udp.Close()
		if try == 10 {
			return nil, nil, fmt.Errorf("no port free for both UDP and TCP: %w", err)
		}
	}
}

// Addr is the server's host:port, UDP and TCP.
func (d *DNS) Addr() string { return d.addr }

// Queries counts the questions the server was asked.
func (d *DNS) Queries() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.queries
}

// Add parses zone-file lines into the table.
func (d *DNS) Add(lines ...string) error {
	rrs := make([]dns.RR, 0, len(lines))
	for _, l := range lines {
		rr, err := dns.NewRR(l)
		if err != nil {
			return fmt.Errorf("zone line %q: %w", l, err)
		}
		if rr == nil {
			return fmt.Errorf("zone line %q holds no record", l)
		}
		rrs = append(rrs, rr)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, rr := range rrs {
		n := dns.CanonicalName(rr.Header().Name)
		d.records[n] = append(d.records[n], rr)
		if rr.Header().Rrtype == dns.TypeSOA {
			d.zones = append(d.zones, n)
		}
	}
	return nil
}

// Close stops serving.
func (d *DNS) Close() error {
	var errs []error
	for _, s := range d.servers {
		errs = append(errs, s.Shutdown())
	}
	return errors.Join(errs...)
}

// ServeDNS answers one query from the table.
func (d *DNS) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(q)
	if len(q.Question) != 1 || q.Opcode != dns.OpcodeQuery {
		m.Rcode = dns.RcodeFormatError
		w.WriteMsg(m)
		return
	}
	d.mu.Lock()
	d.queries++
	d.answer(m, dns.CanonicalName(q.Question[0].Name), q.Question[0].Qtype)
	d.mu.Unlock()
	size := dns.MinMsgSize
	if opt := q.IsEdns0(); opt != nil {
		size = max(int(opt.UDPSize()), dns.MinMsgSize)
		m.SetEdns0(ednsSize, false)
	}
	if w.LocalAddr().Network() == "udp" {
		m.Truncate(size) // sets TC when it cuts: the client asks again over TCP
	}
	w.WriteMsg(m)
}

// answer fills m for name and qtype, following CNAMEs; d.mu is held.
func (d *DNS) answer(m *dns.Msg, name string, qtype uint16) {
	apex, ok := d.zoneOf(name)
	if !ok {
		m.Rcode = dns.RcodeRefused
		return
	}
	m.Authoritative = true
	for hops := 0; hops < 8; hops++ {
		rrs := d.records[name]
		var cname *dns.CNAME
		for _, rr := range rrs {
			if c, ok := rr.(*dns.CNAME); ok && qtype != dns.TypeCNAME {
				cname = c
			} else if rr.Header().Rrtype == qtype {
				m.Answer = append(m.Answer, dns.Copy(rr))
			}
		}
		if cname == nil {
			if len(rrs) == 0 && !d.hasBelow(name) {
				m.Rcode = dns.RcodeNameError
			}
			break
		}
		m.Answer = append(m.Answer, dns.Copy(cname))
		name = dns.CanonicalName(cname.Target)
		if apex, ok = d.zoneOf(name); !ok {
			return // out of zone: the client follows it elsewhere
		}
	}
	if len(m.Answer) == 0 || m.Rcode == dns.RcodeNameError || m.Answer[len(m.Answer)-1].Header().Rrtype == dns.TypeCNAME {
		for _, rr := range d.records[apex] {
			if rr.Header().Rrtype == dns.TypeSOA {
				m.Ns = append(m.Ns, dns.Copy(rr))
			}
		}
	}
}

// zoneOf is the closest apex above name; with no SOA in the table, every
// name is served, from the root.
func (d *DNS) zoneOf(name string) (string, bool) {
	if len(d.zones) == 0 {
		return ".", true
	}
	best := ""
	for _, z := range d.zones {
		if dns.IsSubDomain(z, name) && len(z) > len(best) {
			best = z
		}
	}
	return best, best != ""
}

// hasBelow says whether a name under name has records: name is then an
// empty non-terminal, which exists (RFC 8020).
func (d *DNS) hasBelow(name string) bool {
	for n := range d.records {
		if n != name && dns.IsSubDomain(name, n) {
			return true
		}
	}
	return false
}
