package dnscheck

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certgate/certgate/clock"
	"github.com/certgate/certgate/dnscheck/dnstest"
	"github.com/certgate/certgate/gateway/signer"
)

// Real keys, made once: good.example's RSA 2048 and Ed25519 keys,
// bad.example's loaded key and the other one its DNS publishes,
// relaxed.example's key, and an RSA 1024 key.
var (
	keysOnce                                      sync.Once
	keysErr                                       error
	rsaKey, edKey, badLoaded, badPublished, relax *signer.Key
	rsa1024                                       *signer.Key
	rsaPEM                                        []byte
)

var (
	ip1     = netip.MustParseAddr("192.0.2.1")
	ip6     = netip.MustParseAddr("2001:db8::1")
	ip2     = netip.MustParseAddr("192.0.2.2") // PTR confirmed, not the HELO name
	ip3     = netip.MustParseAddr("192.0.2.3") // PTR not confirmed
	ipNoPTR = netip.MustParseAddr("192.0.2.4")

	testStart = time.Date(2026, 12, 1, 9, 30, 0, 0, time.UTC)
)

func testKeys(t *testing.T) {
	t.Helper()
	keysOnce.Do(func() {
		gen := func(alg, domain, sel string) *signer.Key {
			k, _, err := signer.Generate(alg, domain, sel)
			if err != nil && keysErr == nil {
				keysErr = err
			}
			return k
		}
		var err error
		if rsaKey, rsaPEM, err = signer.Generate("rsa2048", "good.example", "s1"); err != nil {
			keysErr = err
			return
		}
		edKey = gen("ed25519", "good.example", "e1")
		badLoaded = gen("ed25519", "bad.example", "s1")
		badPublished = gen("ed25519", "bad.example", "s1")
		relax = gen("ed25519", "relaxed.example", "s1")
		priv, err := rsa.GenerateKey(rand.Reader, 1024)
		if err != nil {
			keysErr = err
			return
		}
		der, _ := x509.MarshalPKCS8PrivateKey(priv)
		rsa1024, err = signer.ParseKey("weak.example", "w1", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
		if err != nil {
			keysErr = err
		}
	})
	if keysErr != nil {
		t.Fatal(keysErr)
	}
}

func id(k *signer.Key) KeyID { return KeyID{k.Domain, k.Selector} }

// keyAt is k loaded under another domain and selector.
func keyAt(k *signer.Key, domain, selector string) Key {
	out := KeyOf("odd", k)
	out.KeyID = KeyID{domain, selector}
	return out
}

func pubB64(k *signer.Key) string {
	_, v := k.DNSRecord()
	_, p, _ := strings.Cut(v, "p=")
	return p
}

// testZone is right for good.example and wrong in its own way for each
// other domain.
func testZone(t *testing.T) *dnstest.Server {
	testKeys(t)
	spfLoop := "v=spf1"
	var loop []string
	for i := 1; i <= 11; i++ {
		spfLoop += fmt.Sprintf(" a:h%d.loop.example", i)
		loop = append(loop, fmt.Sprintf("h%d.loop.example. 300 IN A 198.51.100.%d", i, i))
	}
	z := dnstest.New(t, append(loop,
		// good.example: everything right.
		`good.example. 300 IN TXT "v=spf1 ip4:192.0.2.1 ip6:2001:db8::1 -all"`,
		`good.example. 300 IN TXT "google-site-verification=abc"`,
		`good.example. 300 IN MX 10 mx.good.example.`,
		`mx.good.example. 300 IN A 192.0.2.10`,
		`_dmarc.good.example. 300 IN TXT "v=DMARC1; p=reject; sp=quarantine; adkim=s; rua=mailto:dmarc@good.example"`,
		rsaKey.ZoneRecord(),
		edKey.ZoneRecord(),
		`_mta-sts.good.example. 300 IN TXT "v=STSv1; id=20261201"`,
		`_smtp._tls.good.example. 300 IN TXT "v=TLSRPTv1; rua=mailto:tls@good.example"`,
		`good.example. 300 IN SOA ns.good.example. host.good.example. 1 3600 600 86400 300`,
		`relay.good.example. 300 IN A 192.0.2.1`,
		`relay.good.example. 300 IN AAAA 2001:db8::1`,
		`relay.good.example. 300 IN TXT "v=spf1 a -all"`,
		`1.2.0.192.in-addr.arpa. 300 IN PTR relay.good.example.`,
		`1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. 300 IN PTR relay.good.example.`,
		`2.2.0.192.in-addr.arpa. 300 IN PTR other.good.example.`,
		`other.good.example. 300 IN A 192.0.2.2`,
		`3.2.0.192.in-addr.arpa. 300 IN PTR fake.good.example.`,
		`fake.good.example. 300 IN A 192.0.2.99`,
		// sub.good.example: DMARC from good.example (adkim=s), signed
		// with good.example's key, no SPF of its own.
		`sub.good.example. 300 IN MX 10 mx.good.example.`,
		// relaxed.example: SPF passes, its key is not published, DMARC
		// p=none without rua, no MX but an address.
		`relaxed.example. 300 IN TXT "v=spf1 ip4:192.0.2.1 -all"`,
		`_dmarc.relaxed.example. 300 IN TXT "v=DMARC1; p=none"`,
		`relaxed.example. 300 IN A 192.0.2.20`,
		// mail.relaxed.example: signed by its parent's key, published.
		strings.Replace(relax.ZoneRecord(), "s1._domainkey.relaxed.example.", "s1._domainkey.relaxed.example.", 1),
		`mail.relaxed.example. 300 IN MX 10 mx.good.example.`,
		// bad.example: another address in SPF, another key, no DMARC,
		// null MX.
		`bad.example. 300 IN TXT "v=spf1 ip4:198.51.100.7 -all"`,
		`bad.example. 300 IN MX 0 .`,
		badPublished.ZoneRecord(),
		// odd.example: no SPF, no MX, no address, a DMARC record that
		// does not parse, and broken key records.
		`_dmarc.odd.example. 300 IN TXT "v=DMARC1; p=bogus"`,
		`s1._domainkey.odd.example. 300 IN TXT "v=DKIM1; k=rsa; p="`,
		`e1._domainkey.odd.example. 300 IN TXT "v=DKIM1; k=rsa; p=`+pubB64(edKey)+`"`,
		`t1._domainkey.odd.example. 300 IN TXT "v=DKIM1; t=y; k=ed25519; p=`+pubB64(edKey)+`"`,
		`d1._domainkey.odd.example. 300 IN TXT "v=DKIM1; p=AAAA"`,
		`d1._domainkey.odd.example. 300 IN TXT "v=DKIM1; p=BBBB"`,
		`x1._domainkey.odd.example. 300 IN TXT "v=DKIM1; p=not*base64"`,
		`t5._domainkey.odd.example. 300 IN TXT "v=DKIM1; k=rsa; p=AAAA"`,
		// loop.example: SPF over the lookup limit (RFC 7208 4.6.4), and
		// two DMARC records.
		`loop.example. 300 IN TXT "`+spfLoop+` -all"`,
		`_dmarc.loop.example. 300 IN TXT "v=DMARC1; p=none"`,
		`_dmarc.loop.example. 300 IN TXT "v=DMARC1; p=reject"`,
		// cname.example: the key record through a CNAME, as providers do.
		`s1._domainkey.cname.example. 300 IN CNAME s1.keys.provider.example.`,
		strings.Replace(rsaKey.ZoneRecord(), "s1._domainkey.good.example.", "s1.keys.provider.example.", 1),
		// weak.example: a 1024-bit key.
		rsa1024.ZoneRecord(),
	)...)
	z.Signed("good.example")
	z.Slow("slow.example")
	return z
}

func runCheck(t *testing.T, z *dnstest.Server, timeout time.Duration, in Inputs) *Report {
	t.Helper()
	c := &Checker{Resolver: resolverOf(z, timeout), Clock: clock.NewFake(testStart)}
	return c.Run(context.Background(), in)
}

func table(rep *Report) string {
	var buf bytes.Buffer
	rep.WriteTable(&buf)
	return buf.String()
}

// want finds a row and checks its status, that its detail holds detail,
// and that its record to publish holds publish (none when publish is "").
func want(t *testing.T, rep *Report, domain, check, subject string, status Status, detail, publish string) {
	t.Helper()
	for _, r := range rep.Rows {
		if r.Domain != domain || r.Check != check || r.Subject != subject {
			continue
		}
		if r.Status != status || !strings.Contains(r.Detail, detail) || (publish == "") != (r.Publish == "") || !strings.Contains(r.Publish, publish) {
			t.Errorf("%s %s %s: %s %q, publish %q\nwant %s with %q, publish %q", domain, check, subject, r.Status, r.Detail, r.Publish, status, detail, publish)
		}
		return
	}
	t.Errorf("no row %s %s %s in\n%s", domain, check, subject, table(rep))
}

func goodInputs() Inputs {
	return Inputs{Hostname: "relay.good.example", Addresses: []netip.Addr{ip1, ip6}, TLS: true,
		Domains: []Domain{{Name: "good.example", Tenant: "good", Signers: []KeyID{id(rsaKey), id(edKey)}}},
		Keys:    []Key{KeyOf("good", rsaKey), KeyOf("good", edKey)}}
}

func TestGoodDomainPassesEverything(t *testing.T) {
	z := testZone(t)
	rep := runCheck(t, z, 2*time.Second, goodInputs())
	for _, r := range rep.Rows {
		if r.Status != Pass || r.Publish != "" {
			t.Errorf("%s %s %s: %s %s %s", r.Domain, r.Check, r.Subject, r.Status, r.Detail, r.Publish)
		}
	}
	want(t, rep, "good.example", CheckSPF, "", Pass, "192.0.2.1 pass; 2001:db8::1 pass", "")
	want(t, rep, "good.example", CheckDKIM, "s1", Pass, "matches the loaded key (rsa-sha256, 2048 bits)", "")
	want(t, rep, "good.example", CheckDKIM, "e1", Pass, "(ed25519-sha256, 256 bits)", "")
	want(t, rep, "good.example", CheckDMARC, "", Pass, "policy reject (p=reject sp=quarantine) adkim=s aspf=r pct=100 rua=mailto:dmarc@good.example", "")
	want(t, rep, "good.example", CheckAlignment, "", Pass, "DKIM d=good.example s=s1, d=good.example s=e1 aligned (adkim=s); SPF for the envelope domain good.example aligned (aspf=r)", "")
	want(t, rep, "good.example", CheckMX, "", Pass, "MX 10 mx.good.example", "")
	want(t, rep, "good.example", CheckMTASTS, "", Pass, "v=STSv1", "")
	want(t, rep, "good.example", CheckTLSRPT, "", Pass, "v=TLSRPTv1", "")
	want(t, rep, "good.example", CheckDNSSEC, "", Pass, "AD bit", "")
	want(t, rep, "relay.good.example", CheckSPFHelo, "", Pass, "192.0.2.1 pass", "")
	want(t, rep, "192.0.2.1", CheckPTR, "", Pass, "is the HELO name", "")
	want(t, rep, "2001:db8::1", CheckPTR, "", Pass, "is the HELO name", "")
	want(t, rep, "192.0.2.1", CheckHelo, "", Pass, "resolves to 192.0.2.1", "")
	for _, b := range rep.Bulk {
		if !b.Met || len(b.Missing) != 0 {
			t.Errorf("bulk %s %s: not met, missing %v", b.Domain, b.Receiver, b.Missing)
		}
	}
	if len(rep.Bulk) != 3 || rep.Count(Fail) != 0 || !rep.Time.Equal(testStart) {
		t.Errorf("bulk %v, %d failures, time %v", rep.Bulk, rep.Count(Fail), rep.Time)
	}
}

func TestFailures(t *testing.T) {
	z := testZone(t)
	in := Inputs{Hostname: "relay.good.example", Addresses: []netip.Addr{ip1}, TLS: true,
		Domains: []Domain{
			{Name: "bad.example", Tenant: "bad", Signers: []KeyID{id(badLoaded)}},
			{Name: "odd.example", Tenant: "odd"},
			{Name: "loop.example", Tenant: "odd"},
			{Name: "sub.good.example", Tenant: "good", Signers: []KeyID{id(rsaKey)}},
			{Name: "relaxed.example", Tenant: "relaxed", Signers: []KeyID{{"relaxed.example", "missing"}}},
			{Name: "mail.relaxed.example", Tenant: "relaxed", Signers: []KeyID{id(relax)}},
		},
		Keys: []Key{
			KeyOf("good", rsaKey), KeyOf("bad", badLoaded), KeyOf("relaxed", relax),
			{KeyID: KeyID{"relaxed.example", "missing"}, Tenant: "relaxed", Algorithm: signer.AlgEd25519SHA256, Bits: 256, Record: "v=DKIM1; k=ed25519; p=" + pubB64(relax)},
			keyAt(rsaKey, "odd.example", "s1"), keyAt(edKey, "odd.example", "e1"), keyAt(edKey, "odd.example", "t1"),
			keyAt(rsaKey, "odd.example", "d1"), keyAt(rsaKey, "odd.example", "x1"),
			{KeyID: KeyID{"odd.example", "t5"}, Tenant: "odd", Algorithm: signer.AlgRSASHA256, Bits: 512, Record: "v=DKIM1; k=rsa; p=AAAA"},
			keyAt(rsaKey, "cname.example", "s1"), KeyOf("weak", rsa1024),
		}}
	rep := runCheck(t, z, 2*time.Second, in)

	// SPF: another address, none, over the lookup limit.
	want(t, rep, "bad.example", CheckSPF, "", Fail, "192.0.2.1 fail; record: v=spf1 ip4:198.51.100.7 -all",
		`bad.example. IN TXT "v=spf1 ip4:192.0.2.1 ip4:198.51.100.7 -all"`)
	want(t, rep, "odd.example", CheckSPF, "", Fail, "192.0.2.1 none; no SPF record", `odd.example. IN TXT "v=spf1 ip4:192.0.2.1 ~all"`)
	want(t, rep, "loop.example", CheckSPF, "", Fail, "192.0.2.1 permerror (lookup limit reached): more than 10 DNS-querying terms", `loop.example. IN TXT "v=spf1 ip4:192.0.2.1 a:h1.loop.example`)
	want(t, rep, "relaxed.example", CheckSPF, "", Pass, "192.0.2.1 pass", "")

	// DKIM: every way a key record can be wrong.
	want(t, rep, "bad.example", CheckDKIM, "s1", Fail, "publishes another public key than the loaded one", badLoaded.ZoneRecord())
	want(t, rep, "relaxed.example", CheckDKIM, "missing", Fail, "no TXT record at missing._domainkey.relaxed.example", `missing._domainkey.relaxed.example. IN TXT "v=DKIM1; k=ed25519; p=`)
	want(t, rep, "odd.example", CheckDKIM, "s1", Fail, "empty p=: the key is revoked", "s1._domainkey.odd.example. IN TXT")
	want(t, rep, "odd.example", CheckDKIM, "e1", Fail, "has k=rsa but the loaded key is ed25519", "e1._domainkey.odd.example. IN TXT")
	want(t, rep, "odd.example", CheckDKIM, "t1", Warn, "t=y (testing)", "")
	want(t, rep, "odd.example", CheckDKIM, "d1", Fail, "2 TXT records at d1._domainkey.odd.example", "d1._domainkey.odd.example. IN TXT")
	want(t, rep, "odd.example", CheckDKIM, "x1", Fail, "does not parse: p= is not base64", "x1._domainkey.odd.example. IN TXT")
	want(t, rep, "odd.example", CheckDKIM, "t5", Fail, "under 1024 bits receivers ignore the signature", `t5._domainkey.odd.example. IN TXT "v=DKIM1; k=rsa; p=AAAA"`)
	want(t, rep, "weak.example", CheckDKIM, "w1", Warn, "(rsa-sha256, 1024 bits): use 2048 bits or more", "")
	want(t, rep, "cname.example", CheckDKIM, "s1", Pass, "matches the loaded key", "")

	// DMARC: none, unparsable, two records, from the organizational
	// domain, without rua.
	want(t, rep, "bad.example", CheckDMARC, "", Fail, "no DMARC record at _dmarc.bad.example:", `_dmarc.bad.example. IN TXT "v=DMARC1; p=none; rua=mailto:dmarc-reports@bad.example"`)
	want(t, rep, "odd.example", CheckDMARC, "", Fail, "_dmarc.odd.example does not parse: p=bogus is not a valid value", `_dmarc.odd.example. IN TXT "v=DMARC1; p=none;`)
	want(t, rep, "loop.example", CheckDMARC, "", Fail, "2 DMARC records at _dmarc.loop.example", "_dmarc.loop.example. IN TXT")
	want(t, rep, "sub.good.example", CheckDMARC, "", Pass, "_dmarc.good.example: policy quarantine (p=reject sp=quarantine) adkim=s", "")
	want(t, rep, "relaxed.example", CheckDMARC, "", Warn, "without rua=", "")

	// Alignment: strict mode against a parent key, SPF alone, relaxed
	// DKIM from a parent, nothing at all.
	want(t, rep, "sub.good.example", CheckAlignment, "", Fail, "d=good.example not aligned under adkim=s: sign with a key for d=sub.good.example, or publish adkim=r", "")
	want(t, rep, "relaxed.example", CheckAlignment, "", Warn, "SPF for the envelope domain relaxed.example aligned (aspf=r); no aligned DKIM", "")
	want(t, rep, "mail.relaxed.example", CheckAlignment, "", Pass, "DKIM d=relaxed.example s=s1 aligned (adkim=r)", "")
	want(t, rep, "bad.example", CheckAlignment, "", Fail, "neither aligned DKIM nor aligned SPF passes: receivers fail DMARC for this domain; publish the dkim record of s1._domainkey.bad.example", "")
	want(t, rep, "odd.example", CheckAlignment, "", Fail, "certgate has no DKIM key aligned with it", "")

	// MX: null, none at all, implicit.
	want(t, rep, "bad.example", CheckMX, "", Fail, "null MX (RFC 7505)", "bad.example. IN MX 10 mx.bad.example.")
	want(t, rep, "odd.example", CheckMX, "", Fail, "no MX and no address", "odd.example. IN MX 10 mx.odd.example.")
	want(t, rep, "relaxed.example", CheckMX, "", Warn, "implicit MX", "relaxed.example. IN MX 10")

	// Advice, with the records to publish.
	want(t, rep, "bad.example", CheckMTASTS, "", Advice, "no MTA-STS", `_mta-sts.bad.example. IN TXT "v=STSv1; id=20261201T093000"`)
	want(t, rep, "bad.example", CheckTLSRPT, "", Advice, "no TLS-RPT", `_smtp._tls.bad.example. IN TXT "v=TLSRPTv1; rua=mailto:tls-reports@bad.example"`)
	want(t, rep, "bad.example", CheckDNSSEC, "", Advice, "no DNSSEC-validated answer", "")

	for _, b := range rep.Bulk {
		switch {
		case b.Domain == "bad.example" && b.Receiver == "gmail":
			if b.Met || strings.Join(b.Missing, ",") != "spf,dkim,dmarc,aligned" {
				t.Errorf("bad.example at gmail: met %v, missing %v", b.Met, b.Missing)
			}
		case b.Domain == "mail.relaxed.example" && b.Receiver == "microsoft":
			if b.Met || strings.Join(b.Missing, ",") != "spf" {
				t.Errorf("mail.relaxed.example at microsoft: met %v, missing %v", b.Met, b.Missing)
			}
		}
	}
	// Every failure says what to publish, except where no record can fix
	// it (alignment names the records of other rows).
	for _, r := range rep.Rows {
		if r.Status == Fail && r.Publish == "" && r.Check != CheckAlignment {
			t.Errorf("%s %s %s fails without a record to publish: %s", r.Domain, r.Check, r.Subject, r.Detail)
		}
	}
}

func TestReverseDNSAndHelo(t *testing.T) {
	z := testZone(t)
	rep := runCheck(t, z, 2*time.Second, Inputs{Hostname: "relay.good.example", Addresses: []netip.Addr{ip2, ip3, ipNoPTR}})
	want(t, rep, "192.0.2.2", CheckPTR, "", Warn, "PTR other.good.example. resolves back to 192.0.2.2, but the HELO name is relay.good.example",
		"2.2.0.192.in-addr.arpa. IN PTR relay.good.example.")
	want(t, rep, "192.0.2.3", CheckPTR, "", Fail, "does not resolve back to 192.0.2.3", "fake.good.example. IN A 192.0.2.3")
	want(t, rep, "192.0.2.4", CheckPTR, "", Fail, "no PTR record", "4.2.0.192.in-addr.arpa. IN PTR relay.good.example.")
	want(t, rep, "192.0.2.2", CheckHelo, "", Warn, "does not resolve to 192.0.2.2", "relay.good.example. IN A 192.0.2.2")
	want(t, rep, "relay.good.example", CheckSPFHelo, "", Warn, "192.0.2.2 fail", `relay.good.example. IN TXT "v=spf1 ip4:192.0.2.2 ip4:192.0.2.3 ip4:192.0.2.4 a -all"`)

	// Without sending addresses nothing can be held against SPF or PTR.
	rep = runCheck(t, z, 2*time.Second, Inputs{Hostname: "relay.good.example", Domains: []Domain{{Name: "good.example"}}})
	want(t, rep, "good.example", CheckSPF, "", Warn, "delivery.source_addresses is empty", "")
	for _, b := range rep.Bulk {
		if b.Met {
			t.Errorf("%s at %s met without sending addresses", b.Domain, b.Receiver)
		}
	}
}

// A resolver that never answers makes every check of the domain fail
// with the reason, within the injected timeout.
func TestSlowResolverFails(t *testing.T) {
	z := testZone(t)
	rep := runCheck(t, z, 50*time.Millisecond, Inputs{Hostname: "relay.slow.example", Addresses: []netip.Addr{ip1},
		Domains: []Domain{{Name: "slow.example", Signers: []KeyID{{"slow.example", "s1"}}}},
		Keys:    []Key{keyAt(rsaKey, "slow.example", "s1")}})
	want(t, rep, "slow.example", CheckSPF, "", Fail, "192.0.2.1 temperror (the resolver did not answer in time)", "")
	want(t, rep, "slow.example", CheckDKIM, "s1", Fail, "lookup failed: the resolver did not answer in time", "")
	want(t, rep, "slow.example", CheckDMARC, "", Fail, "_dmarc.slow.example: lookup failed", "")
	want(t, rep, "slow.example", CheckMX, "", Fail, "MX lookup failed", "")
	want(t, rep, "slow.example", CheckDNSSEC, "", Advice, "could not ask", "")
}

func TestReportOutput(t *testing.T) {
	z := testZone(t)
	in := goodInputs()
	in.Domains = append(in.Domains, Domain{Name: "bad.example", Tenant: "bad", Signers: []KeyID{id(badLoaded)}})
	in.Keys = append(in.Keys, KeyOf("bad", badLoaded))
	rep := runCheck(t, z, 2*time.Second, in)
	out := table(rep)
	for _, s := range []string{
		"DOMAIN", "good.example", "dkim s1", "FAIL",
		"  publish: bad.example. IN TXT \"v=spf1 ip4:192.0.2.1 ip6:2001:db8::1 ip4:198.51.100.7 -all\"",
		"BULK SENDERS", "NO   spf, dkim, dmarc, aligned",
		"failed,", "(resolver " + z.Addr + ", 2026-12-01 09:30:00Z)",
	} {
		if !strings.Contains(out, s) {
			t.Errorf("the table lacks %q:\n%s", s, out)
		}
	}
	// Rows are grouped by domain, in configuration order.
	var seen []string
	for _, line := range strings.Split(out[:strings.Index(out, "BULK")], "\n")[1:] {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] == "publish:" || len(seen) > 0 && f[0] == seen[len(seen)-1] {
			continue
		}
		if slices.Contains(seen, f[0]) {
			t.Errorf("%s rows are not together:\n%s", f[0], out)
		}
		seen = append(seen, f[0])
	}
	if seen[0] != "good.example" || seen[1] != "bad.example" {
		t.Errorf("domains in the order %v", seen)
	}
	var buf bytes.Buffer
	if err := rep.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil || len(back.Rows) != len(rep.Rows) || len(back.Bulk) != 6 {
		t.Fatalf("JSON round trip: %v, %d rows, %d bulk", err, len(back.Rows), len(back.Bulk))
	}

	// A tenant sees its own rows and the shared ones (addresses, HELO).
	only := rep.ForTenants(func(t string) bool { return t == "bad" })
	for _, r := range only.Rows {
		if r.Tenant != "bad" && r.Tenant != "" {
			t.Errorf("tenant bad sees %s %s of tenant %q", r.Domain, r.Check, r.Tenant)
		}
	}
	if len(only.Bulk) != 3 || only.Count(Fail) == 0 || row0(only, "192.0.2.1") == nil {
		t.Errorf("filtered report: %d bulk rows, %d failures", len(only.Bulk), only.Count(Fail))
	}
}

func row0(rep *Report, domain string) *Row {
	for i := range rep.Rows {
		if rep.Rows[i].Domain == domain {
			return &rep.Rows[i]
		}
	}
	return nil
}
