package sim

import (
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// The server answers from its zone over UDP and TCP alike: records,
// CNAMEs, NXDOMAIN and empty answers with the zone's SOA, refusals
// outside its zones, and a record too big for plain UDP truncated there
// and whole over TCP.
func TestDNS(t *testing.T) {
	long := strings.Repeat("k", 250)
	d, err := StartDNS(
		"ca.example. 3600 IN SOA ns.ca.example. hostmaster.ca.example. 1 7200 900 1209600 300",
		"ca.example. 300 IN MX 10 mx.ca.example.",
		"mx.ca.example. 300 IN A 127.0.0.14",
		"www.ca.example. 300 IN CNAME mx.ca.example.",
		"s1._domainkey.ca.example. 300 IN TXT \"v=DKIM1; k=rsa; p="+long+"\" \""+long+"\" \""+long+"\"",
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if _, err := StartDNS("not a record"); err == nil {
		t.Error("a bad zone line was taken")
	}

	for _, network := range []string{"udp", "tcp"} {
		ask := func(name string, qtype uint16) *dns.Msg {
			t.Helper()
			q := new(dns.Msg)
			q.SetQuestion(name, qtype)
			r, _, err := (&dns.Client{Net: network}).Exchange(q, d.Addr())
			if err != nil {
				t.Fatalf("%s %s over %s: %v", name, dns.TypeToString[qtype], network, err)
			}
			return r
		}
		negative := func(r *dns.Msg, rcode int) {
			t.Helper()
			if r.Rcode != rcode || len(r.Answer) != 0 || len(r.Ns) != 1 || r.Ns[0].Header().Rrtype != dns.TypeSOA || !r.Authoritative {
				t.Errorf("over %s: want %s, no answer, the SOA, AA; got\n%v", network, dns.RcodeToString[rcode], r)
			}
		}
		if r := ask("MX.CA.example.", dns.TypeA); len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "127.0.0.14" || !r.Authoritative {
			t.Errorf("A over %s: %v", network, r)
		}
		if r := ask("www.ca.example.", dns.TypeA); len(r.Answer) != 2 || r.Answer[1].(*dns.A).A.String() != "127.0.0.14" {
			t.Errorf("A through a CNAME over %s: %v", network, r)
		}
		negative(ask("nope.ca.example.", dns.TypeA), dns.RcodeNameError)
		negative(ask("mx.ca.example.", dns.TypeTXT), dns.RcodeSuccess)
		negative(ask("_domainkey.ca.example.", dns.TypeTXT), dns.RcodeSuccess) // empty non-terminal
		if r := ask("gmail.com.", dns.TypeMX); r.Rcode != dns.RcodeRefused {
			t.Errorf("outside the zone over %s: %v", network, r)
		}
		r := ask("s1._domainkey.ca.example.", dns.TypeTXT)
		switch network {
		case "udp":
			if !r.Truncated {
				t.Errorf("a %d-byte answer over plain UDP is not truncated", r.Len())
			}
		case "tcp":
			if r.Truncated || len(r.Answer) != 1 || strings.Join(r.Answer[0].(*dns.TXT).Txt, "") != "v=DKIM1; k=rsa; p="+long+long+long {
				t.Errorf("the long TXT over TCP: %v", r)
			}
		}
	}
	if n := d.Queries(); n != 14 {
		t.Errorf("%d queries counted, want 14", n)
	}
}
