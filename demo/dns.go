package demo

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/certgate/certgate/gateway/signer"
	"github.com/certgate/certgate/sim"
)

// heloName is certgate's hostname in the demo: its HELO name, and the
// name the PTR of its sending address gives.
const heloName = "relay.ca.example"

// sendingAddress is delivery.source_addresses in the demo: what the
// simulated receivers see the mail come from.
const sendingAddress = "127.0.0.1"

// issuerDomains are the issuer tenant's From domains; the portal tenant
// has portalDomain.
var issuerDomains = []string{"ca.example", "certs.example", "ac.example"}

// tenantDomains are the From domains by tenant.
func tenantDomains() map[string][]string {
	return map[string][]string{"issuer": issuerDomains, "portal": {portalDomain}}
}

// dnsZone is what the demo's domains publish, as the issuer's DNS admin
// would once certgate's self-check had said what: for each From domain
// SPF authorizing the sending address, DMARC (quarantine, with reports)
// and an MX (the issuer's, that receives the DSNs); each DKIM key's
// record; SPF for the HELO name, and forward-confirmed reverse DNS for
// the sending address. MTA-STS, TLS-RPT and DNSSEC are left out, as most
// domains leave them: the check advises them, and no receiver requires
// them.
func dnsZone(keys dkimKeys) []string {
	spf := fmt.Sprintf("v=spf1 ip4:%s -all", sendingAddress)
	var zone []string
	rr := func(format string, a ...any) { zone = append(zone, fmt.Sprintf(format, a...)) }
	issuer := providers[slices.IndexFunc(providers, func(p provider) bool { return p.name == "issuer" })]
	for _, d := range issuerDomains { // the zones: the portal's domain is under certs.example
		rr("%s. 3600 IN SOA ns1.%s. hostmaster.%s. 2026120101 7200 900 1209600 300", d, d, d)
		rr("%s. 3600 IN NS ns1.%s.", d, d)
		rr("ns1.%s. 3600 IN A %s", d, sendingAddress)
	}
	for _, d := range append(slices.Clone(issuerDomains), portalDomain) {
		mx := issuer.domains[d]
		if mx == "" {
			mx = issuer.domains[d[strings.IndexByte(d, '.')+1:]] // the portal's mail goes to certs.example's MX
		}
		rr("%s. 3600 IN MX 10 %s.", d, mx)
		zone = append(zone, signer.ZoneTXT(d+".", spf), signer.ZoneTXT("_dmarc."+d+".", "v=DMARC1; p=quarantine; rua=mailto:dmarc-reports@"+d))
	}
	for _, mx := range issuer.domains {
		rr("%s. 3600 IN A %s", mx, issuer.ip)
	}
	zone = append(zone, keys.zone...)
	rr("%s. 3600 IN A %s", heloName, sendingAddress)
	zone = append(zone, signer.ZoneTXT(heloName+".", spf))
	rr("0.0.127.in-addr.arpa. 3600 IN SOA localhost. hostmaster.ca.example. 1 7200 900 1209600 300")
	rr("1.0.0.127.in-addr.arpa. 3600 IN PTR %s.", heloName)
	return zone
}

// dnsReport is GET /api/v1/dns, as far as the demo reads it.
type dnsReport struct {
	Resolver string        `json:"resolver"`
	Rows     []dnsRow      `json:"rows"`
	Bulk     []bulkVerdict `json:"bulk_senders"`
}

// dnsRow is one check of one domain, key or address.
type dnsRow struct {
	Domain  string `json:"domain"`
	Check   string `json:"check"`
	Subject string `json:"subject"` // a dkim row's selector
	Status  string `json:"status"`  // pass, warn, fail, advice
	Detail  string `json:"detail"`
}

// bulkVerdict is where one From domain stands against one receiver's
// bulk-sender requirements.
type bulkVerdict struct {
	Domain   string   `json:"domain"`
	Receiver string   `json:"receiver"` // gmail, yahoo, microsoft
	Met      bool     `json:"met"`
	Missing  []string `json:"missing"`
}

// getDNS asks the API for the daemon's last DNS self-check.
func getDNS(base, token string) (dnsReport, error) {
	var rep dnsReport
	err := getAPI(&http.Client{Timeout: 10 * time.Second}, base, "/api/v1/dns", token, &rep)
	return rep, err
}

// bulkReceivers are the receivers of the bulk-sender summary, by the
// name the report gives them.
var bulkReceivers = []struct{ name, brand string }{{"gmail", "Gmail"}, {"yahoo", "Yahoo"}, {"microsoft", "Microsoft"}}

// maxDNSProblems is how many warnings and failures the summary names; the
// table has them all.
const maxDNSProblems = 3

// printDNS shows what the daemon's DNS self-check found in the demo's
// zone, served by names.
func printDNS(out printer, base, token, cfgPath string, names *sim.DNS) {
	rep, err := getDNS(base, token)
	if err != nil {
		out("\nDNS self-check: %v", err)
		return
	}
	for _, l := range dnsSummary(rep, names.Addr(), names.Queries(), cfgPath) {
		out("%s", l)
	}
}

// dnsSummary is the DNS section: which resolver the daemon asked (the
// demo's DNS server at server, asked queries times, or not), the counts
// by status, the first warnings and failures, whether each receiver's
// bulk-sender requirements are met for every From domain, and how to see
// the whole table.
func dnsSummary(rep dnsReport, server string, queries int, cfgPath string) []string {
	asked := fmt.Sprintf("the daemon read the demo's zone from %s as receivers would (%d queries)", rep.Resolver, queries)
	if rep.Resolver != server {
		asked = fmt.Sprintf("the daemon asked %s, NOT the demo's DNS server %s", rep.Resolver, server)
	}
	lines := []string{"\nDNS self-check (GET /api/v1/dns): " + asked}
	count := map[string]int{}
	var advice, problems, domains []string
	for _, b := range rep.Bulk {
		if !slices.Contains(domains, b.Domain) {
			domains = append(domains, b.Domain)
		}
	}
	for _, r := range rep.Rows {
		count[r.Status]++
		switch r.Status {
		case "advice":
			if !slices.Contains(advice, r.Check) {
				advice = append(advice, r.Check)
			}
		case "warn", "fail":
			problems = append(problems, fmt.Sprintf("    %s %s %s: %s", strings.ToUpper(r.Status), r.Domain, strings.TrimSpace(r.Check+" "+r.Subject), r.Detail))
		}
	}
	counts := fmt.Sprintf("  %d From domains: %d passed, %d warnings, %d failed, %d advice", len(domains), count["pass"], count["warn"], count["fail"], count["advice"])
	if len(advice) > 0 {
		counts += " (" + strings.Join(advice, ", ") + ": worth doing, required by no receiver)"
	}
	lines = append(lines, counts)
	if len(problems) > maxDNSProblems {
		problems = append(problems[:maxDNSProblems], fmt.Sprintf("    and %d more", len(problems)-maxDNSProblems))
	}
	lines = append(lines, problems...)
	var verdicts []string
	for _, rc := range bulkReceivers {
		var missing []string
		n := 0
		for _, b := range rep.Bulk {
			if b.Receiver != rc.name {
				continue
			}
			n++
			if !b.Met {
				missing = append(missing, b.Domain+" lacks "+strings.Join(b.Missing, "+"))
			}
		}
		switch {
		case n == 0:
			verdicts = append(verdicts, rc.brand+" not judged")
		case len(missing) == 0:
			verdicts = append(verdicts, rc.brand+" met")
		default:
			verdicts = append(verdicts, rc.brand+" NOT met ("+strings.Join(missing, ", ")+")")
		}
	}
	lines = append(lines, "  bulk senders: "+strings.Join(verdicts, ", "))
	lines = append(lines, fmt.Sprintf("  the table and the records to publish: certgate dns check --config %s (with --keep, while the demo's DNS server runs)", cfgPath))
	return lines
}
