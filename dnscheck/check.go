package dnscheck

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"blitiri.com.ar/go/spf"
	"github.com/miekg/dns"
	"golang.org/x/net/publicsuffix"

	"github.com/certgate/certgate/clock"
	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/gateway/signer"
)

// Status is a row's verdict. Only Fail makes the check fail; Advice is
// something worth doing that no receiver requires.
type Status string

const (
	Pass   Status = "pass"
	Warn   Status = "warn"
	Fail   Status = "fail"
	Advice Status = "advice"
)

// The checks, as rows and metric labels name them.
const (
	CheckSPF       = "spf"
	CheckSPFHelo   = "spf-helo"
	CheckDKIM      = "dkim"
	CheckDMARC     = "dmarc"
	CheckAlignment = "alignment"
	CheckPTR       = "ptr"
	CheckHelo      = "helo"
	CheckMX        = "mx"
	CheckMTASTS    = "mta-sts"
	CheckTLSRPT    = "tls-rpt"
	CheckDNSSEC    = "dnssec"
)

// Row is one check of one domain, key or address.
type Row struct {
	// Tenant whose domain or key the row is about; "" for the sending
	// addresses and the HELO name, which every tenant shares.
	Tenant string `json:"tenant,omitempty"`
	// Domain is the domain, or the address for ptr and helo.
	Domain string `json:"domain"`
	Check  string `json:"check"`
	// Subject narrows the row: the selector of a dkim row.
	Subject string `json:"subject,omitempty"`
	Status  Status `json:"status"`
	Detail  string `json:"detail"`
	// Publish is the record to publish, as a zone-file line, for a
	// failure (and for advice and warnings that have one).
	Publish string `json:"publish,omitempty"`
}

// Report is one run of the check.
type Report struct {
	Time     time.Time `json:"time"`
	Resolver string    `json:"resolver"`
	Rows     []Row     `json:"rows"`
	// Bulk says, per From domain, which of the bulk-sender requirements
	// of Gmail, Yahoo and Microsoft the DNS meets.
	Bulk []Bulk `json:"bulk_senders"`
}

// Count is the number of rows with status s.
func (r *Report) Count(s Status) int {
	n := 0
	for _, row := range r.Rows {
		if row.Status == s {
			n++
		}
	}
	return n
}

// ForTenants is the report with only the rows and summaries of tenants
// has accepts, and the shared rows (addresses, HELO name).
func (r *Report) ForTenants(has func(tenant string) bool) *Report {
	out := &Report{Time: r.Time, Resolver: r.Resolver, Rows: []Row{}, Bulk: []Bulk{}}
	for _, row := range r.Rows {
		if row.Tenant == "" || has(row.Tenant) {
			out.Rows = append(out.Rows, row)
		}
	}
	for _, b := range r.Bulk {
		if has(b.Tenant) {
			out.Bulk = append(out.Bulk, b)
		}
	}
	return out
}

// Checker runs the checks over one resolver.
type Checker struct {
	Resolver *Resolver
	Clock    clock.Clock // clock.Real when nil
}

// Run checks every input and returns the report; lookups that fail make
// their rows fail, so Run itself never fails. ctx bounds the whole run.
func (c *Checker) Run(ctx context.Context, in Inputs) *Report {
	clk := c.Clock
	if clk == nil {
		clk = clock.Real
	}
	r := &run{ctx: ctx, res: c.Resolver, in: in, clk: clk, status: map[[2]string]Status{}, dmarc: map[string]*DMARCRecord{}}
	for _, k := range in.Keys {
		r.dkim(k)
	}
	for _, d := range in.Domains {
		r.spf(d)
		r.dmarcCheck(d)
		r.alignment(d)
		r.mx(d)
		r.advice(d)
	}
	r.helo()
	for _, ip := range in.Addresses {
		r.ptr(ip)
	}
	return &Report{Time: clk.Now().UTC(), Resolver: c.Resolver.Addr, Rows: r.sorted(), Bulk: r.bulk()}
}

// run is the state of one Run.
type run struct {
	ctx    context.Context
	res    *Resolver
	in     Inputs
	clk    clock.Clock
	rows   []Row
	status map[[2]string]Status // domain, check (worst of its rows)
	dmarc  map[string]*DMARCRecord
	keyOK  map[KeyID]bool
}

func (r *run) add(row Row) {
	r.rows = append(r.rows, row)
	k := [2]string{row.Domain, row.Check}
	if old, ok := r.status[k]; !ok || rank(row.Status) > rank(old) {
		r.status[k] = row.Status
	}
}

// rank orders statuses from best to worst.
func rank(s Status) int {
	return map[Status]int{Pass: 0, Advice: 1, Warn: 2, Fail: 3}[s]
}

// sorted groups the rows by domain: the From domains in configuration
// order, then key domains, the HELO name and the addresses.
func (r *run) sorted() []Row {
	var order []string
	for _, d := range r.in.Domains {
		order = append(order, d.Name)
	}
	pos := func(d string) int {
		if i := slices.Index(order, d); i >= 0 {
			return i
		}
		order = append(order, d)
		return len(order) - 1
	}
	for _, row := range r.rows {
		pos(row.Domain)
	}
	checks := []string{CheckSPF, CheckSPFHelo, CheckDKIM, CheckDMARC, CheckAlignment, CheckMX, CheckPTR, CheckHelo, CheckMTASTS, CheckTLSRPT, CheckDNSSEC}
	out := append([]Row{}, r.rows...)
	slices.SortStableFunc(out, func(a, b Row) int {
		if d := pos(a.Domain) - pos(b.Domain); d != 0 {
			return d
		}
		return slices.Index(checks, a.Check) - slices.Index(checks, b.Check)
	})
	return out
}

// lookupErr describes a failed lookup for a row: not found, or why not.
func lookupErr(err error) (notFound bool, why string) {
	if err == nil {
		return false, ""
	}
	var de *net.DNSError
	if errors.As(err, &de) {
		if de.IsNotFound {
			return true, "no record"
		}
		if de.IsTimeout {
			return false, "the resolver did not answer in time"
		}
		return false, de.Err
	}
	return false, err.Error()
}

// orgDomain is d's organizational domain (RFC 7489 3.2: the public suffix
// list), or d when it has none.
func orgDomain(d string) string {
	if o, err := publicsuffix.EffectiveTLDPlusOne(d); err == nil {
		return o
	}
	return d
}

// ---- SPF (RFC 7208) ----

// spf evaluates check_host() (RFC 7208 4) for every sending address with
// the domain as MAIL FROM, as a receiver would, with the library's
// limits of 10 DNS-querying terms and 2 void lookups (RFC 7208 4.6.4).
func (r *run) spf(d Domain) {
	row := Row{Tenant: d.Tenant, Domain: d.Name, Check: CheckSPF}
	r.spfRow(&row, d.Name, "postmaster@"+d.Name, Fail)
	r.add(row)
}

// helo checks the HELO identity (RFC 7208 2.3), which receivers evaluate
// for certgate's DSNs: they go out with the null sender.
func (r *run) helo() {
	if r.in.Hostname == "" {
		return
	}
	row := Row{Domain: r.in.Hostname, Check: CheckSPFHelo}
	r.spfRow(&row, r.in.Hostname, "", Warn)
	if row.Status != Pass {
		row.Detail += " (DSNs certgate sends have an empty MAIL FROM, so receivers check SPF on the HELO name)"
	}
	r.add(row)
}

// spfRow fills row with the SPF results of every address for domain; a
// result other than pass gets status bad.
func (r *run) spfRow(row *Row, domain, sender string, bad Status) {
	if len(r.in.Addresses) == 0 {
		row.Status, row.Detail = Warn, "delivery.source_addresses is empty: set it to the addresses receivers see, so that SPF can be checked"
		return
	}
	var results []string
	var unauthorized []netip.Addr
	row.Status = Pass
	for _, ip := range r.in.Addresses {
		res, err := spf.CheckHostWithSender(net.IP(ip.AsSlice()), r.in.Hostname, sender,
			spf.WithResolver(r.res), spf.WithContext(r.ctx))
		s := fmt.Sprintf("%s %s", ip, res)
		switch res {
		case spf.Pass:
		case spf.TempError:
			_, why := lookupErr(err)
			s += " (" + why + ")"
			row.Status = bad
		case spf.PermError:
			s += fmt.Sprintf(" (%v)", err)
			if errors.Is(err, spf.ErrLookupLimitReached) || errors.Is(err, spf.ErrVoidLookupLimitReached) {
				s += ": more than 10 DNS-querying terms, or 2 void lookups (RFC 7208 4.6.4); replace includes with ip4:/ip6: terms"
			}
			row.Status = bad
			unauthorized = append(unauthorized, ip)
		default: // none, neutral, softfail, fail
			row.Status = bad
			unauthorized = append(unauthorized, ip)
		}
		results = append(results, s)
	}
	row.Detail = strings.Join(results, "; ")
	if len(unauthorized) > 0 {
		existing := r.spfRecord(domain)
		if existing == "" {
			row.Detail += "; no SPF record"
		} else {
			row.Detail += "; record: " + existing
		}
		row.Publish = signer.ZoneTXT(domain+".", spfFix(existing, unauthorized))
	}
}

// spfRecord is domain's SPF record as published, "" when none (or when
// the lookup fails: the row already says why).
func (r *run) spfRecord(domain string) string {
	txts, _ := r.res.LookupTXT(r.ctx, domain)
	for _, t := range txts {
		if l := strings.ToLower(t); l == "v=spf1" || strings.HasPrefix(l, "v=spf1 ") {
			return t
		}
	}
	return ""
}

// spfFix is the SPF record that authorizes ips: the published one with
// ip4:/ip6: terms added after its version (they cost no DNS lookup), or
// a new one ending in ~all.
func spfFix(existing string, ips []netip.Addr) string {
	var terms []string
	for _, ip := range ips {
		t := "ip4:" + ip.String()
		if ip.Is6() {
			t = "ip6:" + ip.String()
		}
		if !slices.Contains(strings.Fields(existing), t) {
			terms = append(terms, t)
		}
	}
	if existing == "" {
		return "v=spf1 " + strings.Join(terms, " ") + " ~all"
	}
	fields := strings.Fields(existing)
	return strings.Join(slices.Concat(fields[:1], terms, fields[1:]), " ")
}

// ---- DKIM (RFC 6376 3.6.1, RFC 8301, RFC 8463) ----

func (r *run) dkim(k Key) {
	if r.keyOK == nil {
		r.keyOK = map[KeyID]bool{}
	}
	row := Row{Tenant: k.Tenant, Domain: k.Domain, Check: CheckDKIM, Subject: k.Selector}
	var lookupFailed bool
	row.Status, row.Detail, lookupFailed = r.dkimVerdict(k)
	if row.Status == Fail && !lookupFailed {
		row.Publish = signer.ZoneTXT(k.Name()+".", k.Record)
	}
	r.keyOK[k.KeyID] = row.Status != Fail
	r.add(row)
}

// dkimVerdict judges k's record; lookupFailed says that DNS did not
// answer, when publishing is not the fix.
func (r *run) dkimVerdict(k Key) (_ Status, _ string, lookupFailed bool) {
	name := k.Name()
	txts, err := r.res.LookupTXT(r.ctx, name)
	if err != nil {
		if nf, why := lookupErr(err); nf {
			return Fail, "no TXT record at " + name, false
		} else {
			return Fail, name + ": lookup failed: " + why, true
		}
	}
	if len(txts) > 1 {
		return Fail, fmt.Sprintf("%d TXT records at %s: verifiers may read any one (RFC 6376 3.6.2.2); keep only this key's", len(txts), name), false
	}
	got, err := ParseDKIMRecord(txts[0])
	if err != nil {
		return Fail, name + " does not parse: " + err.Error(), false
	}
	want, err := ParseDKIMRecord(k.Record)
	if err != nil {
		return Fail, "the loaded key's own record does not parse: " + err.Error(), false
	}
	switch {
	case len(got.PublicKey) == 0:
		return Fail, name + " has an empty p=: the key is revoked (RFC 6376 3.6.1)", false
	case got.KeyType != want.KeyType:
		return Fail, fmt.Sprintf("%s has k=%s but the loaded key is %s", name, got.KeyType, want.KeyType), false
	case !bytes.Equal(got.PublicKey, want.PublicKey):
		return Fail, name + " publishes another public key than the loaded one (an old key, or a rotation not yet published)", false
	}
	desc := fmt.Sprintf("%s matches the loaded key (%s, %d bits)", name, k.Algorithm, k.Bits)
	switch {
	case k.Algorithm == signer.AlgRSASHA256 && k.Bits < config.MinRSABits:
		return Fail, desc + fmt.Sprintf(": under %d bits receivers ignore the signature (RFC 8301 3.2); make a new key with `certgate dkim keygen`", config.MinRSABits), false
	case k.Algorithm == signer.AlgRSASHA256 && k.Bits < config.RecommendedRSABits:
		return Warn, desc + fmt.Sprintf(": use %d bits or more (RFC 8301 3.2); make a new key with `certgate dkim keygen`", config.RecommendedRSABits), false
	case got.Testing():
		return Warn, desc + ", but t=y (testing): receivers may treat the signatures as absent; remove t=y", false
	}
	return Pass, desc, false
}

// ---- DMARC (RFC 7489 6.6.3) ----

// dmarcCheck finds the domain's DMARC record: at _dmarc.<domain>, else at
// its organizational domain (RFC 7489 6.6.3 steps 2-3).
func (r *run) dmarcCheck(d Domain) {
	row := Row{Tenant: d.Tenant, Domain: d.Name, Check: CheckDMARC}
	org := orgDomain(d.Name)
	suggest := signer.ZoneTXT("_dmarc."+org+".", "v=DMARC1; p=none; rua=mailto:dmarc-reports@"+org)
	rec, at, err := r.findDMARC(d.Name)
	if errors.Is(err, errNoDMARC) && org != d.Name {
		rec, at, err = r.findDMARC(org)
	}
	switch {
	case errors.Is(err, errNoDMARC):
		row.Status, row.Detail, row.Publish = Fail, "no DMARC record at _dmarc."+d.Name+orIfOrg(d.Name, org)+
			": Gmail, Yahoo and Microsoft require one from bulk senders; start with p=none and read the reports", suggest
	case err != nil:
		row.Status, row.Detail = Fail, err.Error()
		if !strings.Contains(err.Error(), "lookup failed") {
			row.Publish = suggest
		}
	default:
		r.dmarc[d.Name] = rec
		policy := rec.Policy
		if at != d.Name {
			policy = rec.SubdomainPolicy // RFC 7489 6.6.3 step 5: sp= for a subdomain's mail
		}
		row.Status = Pass
		row.Detail = fmt.Sprintf("_dmarc.%s: policy %s (p=%s sp=%s) adkim=%s aspf=%s pct=%d rua=%s",
			at, policy, rec.Policy, rec.SubdomainPolicy, rec.ADKIM, rec.ASPF, rec.Percent, strings.Join(rec.RUA, ","))
		if len(rec.RUA) == 0 {
			row.Status = Warn
			row.Detail += ": without rua= nobody receives the aggregate reports that show what fails where"
		}
	}
	r.add(row)
}

func orIfOrg(d, org string) string {
	if d == org {
		return ""
	}
	return " nor at _dmarc." + org
}

var errNoDMARC = errors.New("no DMARC record")

// findDMARC reads _dmarc.<domain>: records not starting with v=DMARC1 are
// discarded, and more than one left means none (RFC 7489 6.6.3 step 4...).
func (r *run) findDMARC(domain string) (*DMARCRecord, string, error) {
	name := "_dmarc." + domain
	txts, err := r.res.LookupTXT(r.ctx, name)
	if err != nil {
		if nf, why := lookupErr(err); nf {
			return nil, domain, errNoDMARC
		} else {
			return nil, domain, fmt.Errorf("%s: lookup failed: %s", name, why)
		}
	}
	var recs []string
	for _, t := range txts {
		if v, _, _ := strings.Cut(t, ";"); strings.EqualFold(strings.ReplaceAll(v, " ", ""), "v=DMARC1") {
			recs = append(recs, t)
		}
	}
	switch len(recs) {
	case 0:
		return nil, domain, errNoDMARC
	case 1:
		rec, err := ParseDMARCRecord(recs[0])
		if err != nil {
			return nil, domain, fmt.Errorf("%s does not parse: %v", name, err)
		}
		return rec, domain, nil
	}
	return nil, domain, fmt.Errorf("%d DMARC records at %s: receivers then apply none (RFC 7489 6.6.3); keep one", len(recs), name)
}

// ---- alignment (RFC 7489 3.1) ----

// alignment says whether mail from d would pass DMARC as certgate sends
// it: a signature by one of d's signers, published and aligned under
// adkim, or SPF for the envelope domain (d itself) aligned under aspf.
func (r *run) alignment(d Domain) {
	row := Row{Tenant: d.Tenant, Domain: d.Name, Check: CheckAlignment}
	adkim, aspf := "r", "r"
	if rec := r.dmarc[d.Name]; rec != nil {
		adkim, aspf = rec.ADKIM, rec.ASPF
	}
	var dkimOK, notAligned, unpublished []string
	for _, s := range d.Signers {
		aligned := s.Domain == d.Name || adkim == "r" && orgDomain(s.Domain) == orgDomain(d.Name)
		switch {
		case !aligned:
			notAligned = append(notAligned, "d="+s.Domain)
		case !r.keyOK[s]:
			unpublished = append(unpublished, s.Name())
		default:
			dkimOK = append(dkimOK, "d="+s.Domain+" s="+s.Selector)
		}
	}
	// A domain with two keys (RSA and Ed25519) is named once per key,
	// by its selector; a domain is not aligned twice.
	notAligned = slices.Compact(slices.Sorted(slices.Values(notAligned)))
	// The envelope domain is d itself, aligned under both modes.
	spfOK := r.status[[2]string{d.Name, CheckSPF}] == Pass
	var parts []string
	if len(dkimOK) > 0 {
		parts = append(parts, fmt.Sprintf("DKIM %s aligned (adkim=%s)", strings.Join(dkimOK, ", "), adkim))
	}
	if spfOK {
		parts = append(parts, fmt.Sprintf("SPF for the envelope domain %s aligned (aspf=%s)", d.Name, aspf))
	}
	switch {
	case len(dkimOK) > 0:
		row.Status = Pass
	case spfOK:
		row.Status = Warn
		parts = append(parts, "no aligned DKIM: DMARC rests on SPF alone, which forwarding breaks")
	default:
		row.Status = Fail
		parts = append(parts, "neither aligned DKIM nor aligned SPF passes: receivers fail DMARC for this domain")
	}
	if len(notAligned) > 0 {
		parts = append(parts, fmt.Sprintf("%s not aligned under adkim=s: sign with a key for d=%s, or publish adkim=r", strings.Join(notAligned, ","), d.Name))
	}
	if len(unpublished) > 0 {
		parts = append(parts, "publish the dkim record of "+strings.Join(unpublished, ", "))
	}
	if len(d.Signers) == 0 {
		parts = append(parts, "certgate has no DKIM key aligned with it")
	}
	row.Detail = strings.Join(parts, "; ")
	r.add(row)
}

// ---- reverse DNS and HELO ----

// ptr checks the address's PTR, that the name resolves back to it
// (forward-confirmed reverse DNS), and how it compares with the HELO
// name; then that the HELO name resolves to the address.
func (r *run) ptr(ip netip.Addr) {
	rev, _ := dns.ReverseAddr(ip.String())
	host := dns.Fqdn(r.in.Hostname)
	row := Row{Domain: ip.String(), Check: CheckPTR}
	names, err := r.res.LookupAddr(r.ctx, ip.String())
	switch nf, why := lookupErr(err); {
	case err != nil && nf:
		row.Status, row.Detail = Fail, "no PTR record: Gmail and Yahoo require reverse DNS from bulk senders (ask whoever runs the address block)"
		row.Publish = rev + " IN PTR " + host
	case err != nil:
		row.Status, row.Detail = Fail, "PTR lookup failed: "+why
	default:
		confirmed := r.confirmed(names, ip)
		switch {
		case len(confirmed) == 0:
			row.Status = Fail
			row.Detail = fmt.Sprintf("PTR %s does not resolve back to %s (no forward-confirmed reverse DNS)", strings.Join(names, ","), ip)
			row.Publish = fmt.Sprintf("%s IN %s %s", names[0], addrType(ip), ip)
		case !slices.ContainsFunc(confirmed, func(n string) bool { return strings.EqualFold(n, host) }):
			row.Status = Warn
			row.Detail = fmt.Sprintf("PTR %s resolves back to %s, but the HELO name is %s: make them one name", strings.Join(confirmed, ","), ip, r.in.Hostname)
			row.Publish = rev + " IN PTR " + host
		default:
			row.Status, row.Detail = Pass, fmt.Sprintf("PTR %s resolves back to %s and is the HELO name", host, ip)
		}
	}
	r.add(row)
	if r.in.Hostname == "" {
		return
	}
	row = Row{Domain: ip.String(), Check: CheckHelo}
	if slices.Contains(r.confirmed([]string{host}, ip), host) {
		row.Status, row.Detail = Pass, fmt.Sprintf("the HELO name %s resolves to %s", r.in.Hostname, ip)
	} else {
		row.Status = Warn
		row.Detail = fmt.Sprintf("the HELO name %s does not resolve to %s; receivers score a HELO name that does not resolve to the client (RFC 5321 4.1.4)", r.in.Hostname, ip)
		row.Publish = fmt.Sprintf("%s IN %s %s", host, addrType(ip), ip)
	}
	r.add(row)
}

// confirmed are the names (at most 5 tried) whose addresses include ip.
func (r *run) confirmed(names []string, ip netip.Addr) []string {
	var out []string
	for _, n := range names[:min(len(names), 5)] {
		addrs, _ := r.res.LookupIPAddr(r.ctx, n)
		for _, a := range addrs {
			if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == ip {
				out = append(out, n)
				break
			}
		}
	}
	return out
}

func addrType(ip netip.Addr) string {
	if ip.Is4() {
		return "A"
	}
	return "AAAA"
}

// ---- MX of the envelope domain ----

// mx checks that DSNs and replies to the envelope sender can come back.
func (r *run) mx(d Domain) {
	row := Row{Tenant: d.Tenant, Domain: d.Name, Check: CheckMX}
	suggest := fmt.Sprintf("%s. IN MX 10 mx.%s.  ; the host that receives %s's mail", d.Name, d.Name, d.Name)
	mxs, err := r.res.LookupMX(r.ctx, d.Name)
	nf, why := lookupErr(err)
	switch {
	case err != nil && !nf:
		row.Status, row.Detail = Fail, "MX lookup failed: "+why
	case err != nil:
		// RFC 5321 5.1: without MX the domain's address is the implicit MX.
		if addrs, aerr := r.res.LookupIPAddr(r.ctx, d.Name); aerr == nil && len(addrs) > 0 {
			row.Status, row.Detail = Warn, "no MX: DSNs go to the domain's own address (implicit MX, RFC 5321 5.1), which must accept mail"
		} else {
			row.Status, row.Detail = Fail, "no MX and no address: DSNs and replies to the envelope sender are lost"
		}
		row.Publish = suggest
	case len(mxs) == 1 && mxs[0].Host == ".":
		row.Status, row.Detail, row.Publish = Fail, "null MX (RFC 7505): the domain accepts no mail, so DSNs for certgate's mail are refused", suggest
	default:
		var hosts []string
		for _, m := range mxs {
			hosts = append(hosts, fmt.Sprintf("%d %s", m.Pref, m.Host))
		}
		row.Status, row.Detail = Pass, "MX "+strings.Join(hosts, ", ")
	}
	r.add(row)
}

// ---- advice: MTA-STS, TLS-RPT, DNSSEC ----

func (r *run) advice(d Domain) {
	tagged := func(name, version string) (string, bool) {
		txts, _ := r.res.LookupTXT(r.ctx, name)
		for _, t := range txts {
			if strings.HasPrefix(strings.ReplaceAll(t, " ", ""), "v="+version) {
				return t, true
			}
		}
		return "", false
	}
	row := Row{Tenant: d.Tenant, Domain: d.Name, Check: CheckMTASTS}
	// RFC 8461 3.1: the TXT record announces a policy served at
	// https://mta-sts.<domain>/.well-known/mta-sts.txt (3.2).
	if t, ok := tagged("_mta-sts."+d.Name, "STSv1"); ok {
		row.Status, row.Detail = Pass, "_mta-sts."+d.Name+": "+t
	} else {
		row.Status = Advice
		row.Detail = "no MTA-STS: senders of DSNs and replies to " + d.Name + " may deliver without verified TLS; publish the record and a policy at https://mta-sts." + d.Name + "/.well-known/mta-sts.txt (RFC 8461)"
		row.Publish = signer.ZoneTXT("_mta-sts."+d.Name+".", "v=STSv1; id="+r.now())
	}
	r.add(row)
	row = Row{Tenant: d.Tenant, Domain: d.Name, Check: CheckTLSRPT}
	// RFC 8460 3: where senders report TLS failures delivering to d.
	if t, ok := tagged("_smtp._tls."+d.Name, "TLSRPTv1"); ok {
		row.Status, row.Detail = Pass, "_smtp._tls."+d.Name+": "+t
	} else {
		row.Status = Advice
		row.Detail = "no TLS-RPT: nobody hears of TLS failures delivering to " + d.Name + " (RFC 8460)"
		row.Publish = signer.ZoneTXT("_smtp._tls."+d.Name+".", "v=TLSRPTv1; rua=mailto:tls-reports@"+orgDomain(d.Name))
	}
	r.add(row)
	row = Row{Tenant: d.Tenant, Domain: d.Name, Check: CheckDNSSEC}
	switch ad, err := r.res.Authenticated(r.ctx, d.Name); {
	case err != nil:
		_, why := lookupErr(err)
		row.Status, row.Detail = Advice, "could not ask about DNSSEC: "+why
	case ad:
		row.Status, row.Detail = Pass, "the resolver validated the zone with DNSSEC (AD bit)"
	default:
		row.Status = Advice
		row.Detail = "no DNSSEC-validated answer (no AD bit): sign the zone and publish its DS at the registrar, or use a validating resolver; DANE and a forged-answer-proof DKIM need it"
	}
	r.add(row)
}

// now is an MTA-STS policy id made from the time of the run.
func (r *run) now() string { return r.clk.Now().UTC().Format("20060102T150405") }
