package demo

import (
	"os"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/certgate/certgate/config"
)

// What the demo writes is a configuration certgate accepts, with the
// secrets it hands back and a route to every simulated provider.
func TestWrittenConfigLoads(t *testing.T) {
	dir := t.TempDir()
	keys, err := makeKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	path, creds, err := writeConfig(dir, 2525, keys.config, "http://127.0.0.1:1/download/")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("the demo's configuration does not load: %v", err)
	}
	var tenants []string
	for _, tn := range cfg.Tenants {
		tenants = append(tenants, tn.Name)
		if err := bcrypt.CompareHashAndPassword([]byte(tn.Users[0].PasswordHash), []byte(creds.password)); err != nil {
			t.Errorf("tenant %s: the password handed back does not match: %v", tn.Name, err)
		}
	}
	if !slices.Equal(tenants, []string{"issuer", "portal"}) {
		t.Errorf("tenants %v; want issuer and portal", tenants)
	}
	if len(cfg.DKIM) != 5 {
		t.Errorf("%d DKIM keys configured; want 5 (the portal signs with its own)", len(cfg.DKIM))
	}
	if b, err := os.ReadFile(cfg.API.Tokens[0].TokenFile); err != nil || strings.TrimSpace(string(b)) != creds.token {
		t.Errorf("API token file holds %q (%v); want the token handed back", b, err)
	}
	if cfg.Delivery.MXPort != 2525 {
		t.Errorf("mx_port %d; want the providers' port 2525", cfg.Delivery.MXPort)
	}
	for _, p := range providers {
		for domain, mx := range p.domains {
			if got := cfg.Delivery.StaticDNS.MX[domain]; !slices.Equal(got, []string{mx}) {
				t.Errorf("MX of %s is %v; want %s", domain, got, mx)
			}
			if got := cfg.Delivery.StaticDNS.Hosts[mx]; !slices.Equal(got, []string{p.ip}) {
				t.Errorf("%s resolves to %v; want %s", mx, got, p.ip)
			}
		}
	}
}

// The receivers find each key's public half where the signature says.
func TestKeysArePublished(t *testing.T) {
	keys, err := makeKeys(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys.config {
		txt, err := keys.lookupTXT(k.Selector + "._domainkey." + k.Domain + ".")
		if err != nil || len(txt) != 1 || !strings.Contains(txt[0], "p=") {
			t.Errorf("%s/%s: TXT %v, %v", k.Domain, k.Selector, txt, err)
		}
	}
	if _, err := keys.lookupTXT("nope._domainkey.ca.example"); err == nil {
		t.Error("an unknown selector has a record")
	}
}
