package demo

import (
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/certgate/certgate/sim"
)

// The demo's zone publishes every DKIM key as the receivers' lookup has
// it, an MX with an address for each From domain, and the PTR of the
// sending address to the HELO name.
func TestDNSZone(t *testing.T) {
	keys, err := makeKeys(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	names, err := sim.StartDNS(dnsZone(keys)...)
	if err != nil {
		t.Fatal(err)
	}
	defer names.Close()
	ask := func(name string, qtype uint16) []dns.RR {
		t.Helper()
		q := new(dns.Msg)
		q.SetQuestion(dns.Fqdn(name), qtype)
		q.SetEdns0(4096, false)
		r, _, err := new(dns.Client).Exchange(q, names.Addr())
		if err != nil || r.Rcode != dns.RcodeSuccess {
			t.Fatalf("%s %s: %v %v", name, dns.TypeToString[qtype], r, err)
		}
		return r.Answer
	}
	for name, want := range keys.txt {
		if got := ask(name, dns.TypeTXT); len(got) != 1 || strings.Join(got[0].(*dns.TXT).Txt, "") != want[0] {
			t.Errorf("%s: %v; want %s", name, got, want[0])
		}
	}
	for _, d := range tenantDomains() {
		for _, d := range d {
			mx := ask(d, dns.TypeMX)
			if len(mx) != 1 || len(ask(mx[0].(*dns.MX).Mx, dns.TypeA)) != 1 {
				t.Errorf("%s: MX %v has no address", d, mx)
			}
		}
	}
	if got := ask("1.0.0.127.in-addr.arpa", dns.TypePTR); len(got) != 1 || got[0].(*dns.PTR).Ptr != heloName+"." {
		t.Errorf("PTR of %s: %v; want %s", sendingAddress, got, heloName)
	}
}

// The section counts the rows, names the problems, and says per receiver
// whether every From domain meets its bulk-sender requirements; a daemon
// that asked another resolver is called out.
func TestDNSSummary(t *testing.T) {
	var rep dnsReport
	rep.Resolver = "127.0.0.1:53"
	for _, s := range []string{"pass", "pass", "advice", "advice", "fail"} {
		rep.Rows = append(rep.Rows, dnsRow{Domain: "ca.example", Check: map[string]string{"pass": "spf", "advice": "dnssec", "fail": "ptr"}[s], Status: s, Detail: "x"})
	}
	for _, rc := range []string{"gmail", "yahoo", "microsoft"} {
		for _, d := range []string{"ca.example", "ac.example"} {
			b := bulkVerdict{Domain: d, Receiver: rc, Met: rc == "microsoft" || d == "ac.example"}
			if !b.Met {
				b.Missing = []string{"ptr"}
			}
			rep.Bulk = append(rep.Bulk, b)
		}
	}
	got := strings.Join(dnsSummary(rep, "127.0.0.1:5353", 7, "/tmp/c.yaml"), "\n")
	for _, want := range []string{
		"the daemon asked 127.0.0.1:53, NOT the demo's DNS server 127.0.0.1:5353",
		"  2 From domains: 2 passed, 0 warnings, 1 failed, 2 advice (dnssec: worth doing",
		"    FAIL ca.example ptr: x\n",
		"  bulk senders: Gmail NOT met (ca.example lacks ptr), Yahoo NOT met (ca.example lacks ptr), Microsoft met\n",
		"certgate dns check --config /tmp/c.yaml",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the DNS section lacks %q:\n%s", want, got)
		}
	}
}
