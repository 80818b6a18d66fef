package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/certgate/certgate/clock"
	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/dnscheck"
	"github.com/certgate/certgate/dnscheck/dnstest"
	"github.com/certgate/certgate/gateway/signer"
)

// dnsSetup writes a configuration for tenant issuer (issuer.example,
// one RSA key, sending from 192.0.2.1) and serves a zone that is right
// for it when right is set, and lacks DMARC and the key otherwise.
func dnsSetup(t *testing.T, right bool) (cfgPath string, z *dnstest.Server) {
	t.Helper()
	dir := t.TempDir()
	key, pemBytes, err := signer.Generate("rsa2048", "issuer.example", "s1")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "dkim.pem"), pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := `hostname: relay.issuer.example
data_dir: ` + dir + `/data
tenants:
  - {name: issuer, trusted_networks: [10.0.0.0/8], from_domains: [issuer.example]}
  - {name: other, trusted_networks: [172.16.0.0/12], from_domains: [other.example]}
dkim:
  - {domain: issuer.example, selector: s1, key_file: dkim.pem}
  - {domain: other.example, selector: s1, key_file: dkim.pem}
delivery:
  source_addresses: [192.0.2.1]
`
	cfgPath = filepath.Join(dir, "certgate.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	zone := []string{
		`issuer.example. 300 IN TXT "v=spf1 ip4:192.0.2.1 -all"`,
		`issuer.example. 300 IN MX 10 mx.issuer.example.`,
		`relay.issuer.example. 300 IN A 192.0.2.1`,
		`relay.issuer.example. 300 IN TXT "v=spf1 a -all"`,
		`1.2.0.192.in-addr.arpa. 300 IN PTR relay.issuer.example.`,
	}
	if right {
		zone = append(zone, key.ZoneRecord(), `_dmarc.issuer.example. 300 IN TXT "v=DMARC1; p=quarantine; rua=mailto:d@issuer.example"`)
	}
	return cfgPath, dnstest.New(t, zone...)
}

func TestDNSCheckCommand(t *testing.T) {
	path, z := dnsSetup(t, false)
	var out, errOut bytes.Buffer
	if code := run([]string{"dns", "check", "--config", path, "--tenant", "issuer", "--resolver", z.Addr}, &out, &errOut); code != 1 {
		t.Fatalf("exit %d with failures, want 1\n%s%s", code, out.String(), errOut.String())
	}
	for _, row := range [][]string{
		{"issuer.example", "dkim", "s1", "FAIL", "no", "TXT", "record"},
		{"publish:", "s1._domainkey.issuer.example.", "IN", "TXT", `"v=DKIM1;`, "k=rsa;"},
		{"publish:", "_dmarc.issuer.example.", "IN", "TXT", `"v=DMARC1;`, "p=none;", `rua=mailto:dmarc-reports@issuer.example"`},
		{"issuer.example", "spf", "pass"},
		{"192.0.2.1", "ptr", "pass"},
	} {
		if !hasLine(out.String(), row...) {
			t.Errorf("output lacks a line starting %q:\n%s", row, out.String())
		}
	}
	if strings.Contains(out.String(), "other.example") {
		t.Errorf("--tenant issuer shows other.example:\n%s", out.String())
	}
	if !strings.Contains(errOut.String(), "DNS checks failed") {
		t.Errorf("stderr: %q", errOut.String())
	}

	path, z = dnsSetup(t, true)
	out.Reset()
	if code := run([]string{"dns", "check", "--config", path, "--tenant", "issuer", "--resolver", z.Addr, "--format", "json"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d with the right zone, want 0\n%s", code, out.String())
	}
	var rep dnscheck.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil || rep.Count(dnscheck.Fail) != 0 || rep.Count(dnscheck.Advice) != 3 {
		t.Errorf("JSON: %v, %d failures, %d advice\n%s", err, rep.Count(dnscheck.Fail), rep.Count(dnscheck.Advice), out.String())
	}
	for _, args := range [][]string{{"dns"}, {"dns", "verify"}, {"dns", "check", "--format", "xml"}} {
		if code := run(args, &out, &errOut); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	if code := run([]string{"dns", "check", "--config", path, "--tenant", "nobody", "--resolver", z.Addr}, &out, &errOut); code != 1 {
		t.Errorf("unknown tenant: exit %d", code)
	}
}

// The periodic check's last report is exported per domain and check,
// the worst of its rows (labels: check, domain), with the time it ran.
func TestDNSCollector(t *testing.T) {
	m := &dnscheck.Monitor{Checker: &dnscheck.Checker{Resolver: &dnscheck.Resolver{}},
		Inputs: func() (dnscheck.Inputs, error) { return dnscheck.Inputs{}, nil }}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(dnsCollector{m})
	if mfs, err := reg.Gather(); err != nil || len(mfs) != 0 {
		t.Fatalf("before the first run: %v, %d families", err, len(mfs))
	}
	path, z := dnsSetup(t, false)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	m.Checker = &dnscheck.Checker{Resolver: &dnscheck.Resolver{Addr: z.Addr}, Clock: clock.NewFake(time.Unix(1764581400, 0))}
	m.Inputs = func() (dnscheck.Inputs, error) { return dnscheck.FromConfig(cfg, "") }
	if _, err := m.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, mt := range mf.Metric {
			got[mf.GetName()+labels(mt)] = mt.GetGauge().GetValue()
		}
	}
	for k, v := range map[string]float64{
		"certgate_dns_check_status{dkim,issuer.example}":           2,
		"certgate_dns_check_status{spf,issuer.example}":            0,
		"certgate_dns_check_status{mta-sts,issuer.example}":        0,
		"certgate_dns_check_status{spf,other.example}":             2,
		"certgate_dns_check_last_run_timestamp_seconds{}":          1764581400,
		"certgate_dns_check_status{spf-helo,relay.issuer.example}": 0,
	} {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
}

// hasLine reports whether a line of out starts with fields.
func hasLine(out string, fields ...string) bool {
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= len(fields) && slices.Equal(f[:len(fields)], fields) {
			return true
		}
	}
	return false
}

func labels(m *dto.Metric) string {
	var vs []string
	for _, l := range m.Label {
		vs = append(vs, l.GetValue())
	}
	return "{" + strings.Join(vs, ",") + "}"
}
