package dnscheck

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/certgate/certgate/config"
)

func TestParseDKIMRecord(t *testing.T) {
	r, err := ParseDKIMRecord("v=DKIM1; k=ed25519; h=sha256; s=email; t=y:s; p= AAEC\r\n AwQ=;")
	if err != nil || r.KeyType != "ed25519" || string(r.PublicKey) != "\x00\x01\x02\x03\x04" || !r.Testing() {
		t.Fatalf("%+v, %v", r, err)
	}
	if r, err := ParseDKIMRecord("p=AAAA"); err != nil || r.KeyType != "rsa" {
		t.Errorf("defaults: %+v, %v", r, err)
	}
	for rec, why := range map[string]string{
		"k=rsa; v=DKIM1; p=AAAA":                         "v= must come first",
		"v=DKIM2; p=AAAA":                                "v= must come first",
		"v=DKIM1; k=rsa":                                 "no p= tag",
		"v=DKIM1; p=AAAA; p=BBBB":                        "appears twice",
		"v=DKIM1; h=sha1; p=AAAA":                        "excludes sha256",
		"v=DKIM1; s=tlsrpt; p=AAAA":                      "excludes email",
		"v=DKIM1; p":                                     "not tag=value",
		"v=DKIM1; 1x=2; p=AAAA":                          "not a tag name",
		"v=DKIM1; p=AA\x01A":                             "control",
		"v=DKIM1; p=" + strings.Repeat("A", MaxTXTBytes): "longer than",
	} {
		if _, err := ParseDKIMRecord(rec); err == nil || !strings.Contains(err.Error(), why) {
			t.Errorf("%.40q: %v, want %q", rec, err, why)
		}
	}
}

func TestParseDMARCRecord(t *testing.T) {
	r, err := ParseDMARCRecord("v=DMARC1; P=Quarantine; adkim=s; pct=50; rua=mailto:a@x.example!10m, mailto:b@y.example; xunknown=1")
	if err != nil || r.Policy != "quarantine" || r.SubdomainPolicy != "quarantine" || r.ADKIM != "s" || r.ASPF != "r" ||
		r.Percent != 50 || !slices.Equal(r.RUA, []string{"mailto:a@x.example!10m", "mailto:b@y.example"}) {
		t.Fatalf("%+v, %v", r, err)
	}
	for rec, why := range map[string]string{
		"p=none; v=DMARC1":          "starts with v=DMARC1",
		"v=DMARC1":                  "no p= tag",
		"v=DMARC1; p=block":         "p=block",
		"v=DMARC1; p=none; sp=x":    "sp=x",
		"v=DMARC1; p=none; adkim=x": "adkim=x",
		"v=DMARC1; p=none; pct=101": "pct=101",
		"v=DMARC1; p=none; rua=a@b": "rua=a@b",
		"v=DMARC1; p=none; p=none":  "appears twice",
	} {
		if _, err := ParseDMARCRecord(rec); err == nil || !strings.Contains(err.Error(), why) {
			t.Errorf("%q: %v, want %q", rec, err, why)
		}
	}
}

// The parsers read what anyone can publish: they must never panic, and
// what they accept must hold its invariants.
func FuzzParseDKIMRecord(f *testing.F) {
	for _, s := range []string{"v=DKIM1; k=rsa; p=AAAA", "p=", "v=DKIM1;;; t=y:s; h=sha1:sha256; p=AA==", "a=b=c; p=;", "v=DKIM1; p=\t A A A A"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseDKIMRecord(s)
		if err != nil {
			return
		}
		if r.KeyType == "" || len(r.PublicKey) > len(s) || len(s) > MaxTXTBytes {
			t.Fatalf("accepted %q as %+v", s, r)
		}
	})
}

func FuzzParseDMARCRecord(f *testing.F) {
	for _, s := range []string{"v=DMARC1; p=none", "v=DMARC1; p=reject; sp=none; adkim=s; aspf=r; pct=0; rua=mailto:x@y!1k,https://z; ruf=mailto:q@r; fo=1",
		"V = DMARC1 ;P=NONE;", "v=DMARC1;p=none;pct=-0"} {
		f.Add(s)
	}
	policies := []string{"none", "quarantine", "reject"}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseDMARCRecord(s)
		if err != nil {
			return
		}
		if !slices.Contains(policies, r.Policy) || !slices.Contains(policies, r.SubdomainPolicy) ||
			(r.ADKIM != "r" && r.ADKIM != "s") || (r.ASPF != "r" && r.ASPF != "s") || r.Percent < 0 || r.Percent > 100 {
			t.Fatalf("accepted %q as %+v", s, r)
		}
	})
}

// FromConfig reads what certgate really sends with: the tenant's From
// domains, the keys that sign for them, the sending addresses.
func TestFromConfig(t *testing.T) {
	testKeys(t)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "good.pem")
	if err := os.WriteFile(keyFile, rsaPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{Hostname: "relay.good.example",
		Tenants: []config.Tenant{{Name: "good", FromDomains: []string{"good.example", "news.good.example"}},
			{Name: "other", FromDomains: []string{"other.example"}}},
		DKIM:     []config.DKIMKey{{Domain: "good.example", Selector: "s1", KeyFile: keyFile}},
		Delivery: config.Delivery{SourceAddresses: []string{"192.0.2.1", "2001:db8::1"}, Routes: []config.Route{{Domains: []string{"*"}, MX: true, TLS: config.TLSOpportunistic}}},
	}
	in, err := FromConfig(cfg, "good")
	if err != nil {
		t.Fatal(err)
	}
	if in.Hostname != "relay.good.example" || len(in.Addresses) != 2 || !in.TLS || len(in.Domains) != 2 || len(in.Keys) != 1 {
		t.Fatalf("%+v", in)
	}
	if d := in.Domains[1]; d.Name != "news.good.example" || d.Tenant != "good" || !slices.Equal(d.Signers, []KeyID{{"good.example", "s1"}}) {
		t.Errorf("news.good.example: %+v", d)
	}
	if k := in.Keys[0]; k.Tenant != "good" || k.Bits != 2048 || !strings.HasPrefix(k.Record, "v=DKIM1; k=rsa; p=MII") {
		t.Errorf("key %+v", k)
	}
	if in, err := FromConfig(cfg, ""); err != nil || len(in.Domains) != 3 || len(in.Domains[2].Signers) != 0 {
		t.Errorf("every tenant: %+v, %v", in, err)
	}
	if _, err := FromConfig(cfg, "nobody"); err == nil {
		t.Error("an unknown tenant was accepted")
	}
	cfg.Delivery.Routes[0].TLS = config.TLSNone
	if in, _ := FromConfig(cfg, "good"); in.TLS {
		t.Error("a route with tls: none still counts as TLS")
	}
}
