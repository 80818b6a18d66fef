package demo

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/policy"
)

// What the demo writes is a configuration certgate accepts, with the
// secrets it hands back and a route to every simulated provider.
func TestWrittenConfigLoads(t *testing.T) {
	dir := t.TempDir()
	keys, err := makeKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	passwords := seedPasswords()
	var seeds []seedLogin
	for i, s := range seedMailboxes() {
		seeds = append(seeds, seedLogin{s, fmt.Sprintf("127.0.0.1%d:1143", i), passwords[s.address]})
	}
	path, creds, err := writeConfig(dir, 2525, keys.config, "http://127.0.0.1:1/download/", "", seeds)
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
	checkSeeds(t, cfg, seeds)
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

// The seed mailboxes are in the configuration as the demo runs them: one
// per simulated provider, each measuring the lane its address goes
// through, reached in plaintext on loopback with a password from a file
// only its owner reads; the issuer's bulk mail is seeded.
func checkSeeds(t *testing.T, cfg *config.Config, seeds []seedLogin) {
	t.Helper()
	if len(seeds) != 3 {
		t.Fatalf("%d seed mailboxes; want one at Google, Microsoft and Yahoo", len(seeds))
	}
	s := cfg.Seeds
	if s.Deadline.D() != time.Minute || s.After != config.SeedKeep || len(s.Mailboxes) != len(seeds) {
		t.Fatalf("seeds: deadline %s, after %s, %d mailboxes; want 1m, keep, %d", s.Deadline, s.After, len(s.Mailboxes), len(seeds))
	}
	pol := policy.New(config.ResolveProviders(cfg.Providers), cfg.Delivery.Retry, policy.Options{})
	for i, m := range s.Mailboxes {
		want := seeds[i]
		if m.Name != want.name || m.Address != want.address || m.Provider != want.lane || m.Junk != "auto" {
			t.Errorf("seed %d: %+v; want %s at %s in lane %s, junk auto", i, m, want.name, want.address, want.lane)
		}
		if m.IMAP.Addr != want.imapAddr || m.IMAP.TLS != config.IMAPNoTLS || m.IMAP.Username != want.address || m.IMAP.OAuth2 != nil {
			t.Errorf("seed %s: IMAP %+v; want %s, tls none, username %s", m.Name, m.IMAP, want.imapAddr, want.address)
		}
		if b, err := os.ReadFile(m.IMAP.PasswordFile); err != nil || strings.TrimSpace(string(b)) != want.password {
			t.Errorf("seed %s: password file holds %q (%v); want the sim's password", m.Name, b, err)
		}
		if fi, err := os.Stat(m.IMAP.PasswordFile); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("seed %s: password file %v, %v; want mode 0600", m.Name, fi.Mode(), err)
		}
		if lane := laneOf(pol, m.Address); lane != m.Provider {
			t.Errorf("seed %s: mail to %s goes through lane %q, but the seed measures %q", m.Name, m.Address, lane, m.Provider)
		}
		if p := providerOf(m.Address); p == "" || !slices.Contains(providerNamed(t, p).lanes, m.Provider) {
			t.Errorf("seed %s: %s is at provider %q, which the %s lane does not reach", m.Name, m.Address, p, m.Provider)
		}
	}
	issuer := cfg.Tenants[0]
	if issuer.Seeding == nil || issuer.Seeding.Every != seedEvery || issuer.Seeding.Interval.D() != time.Minute {
		t.Errorf("tenant issuer seeding %+v; want every %d, interval 1m", issuer.Seeding, seedEvery)
	}
	if cfg.Tenants[1].Seeding != nil {
		t.Errorf("tenant portal is seeded: %+v", cfg.Tenants[1].Seeding)
	}
	if want := seedings(300); want != 10 {
		t.Errorf("%d of the demo's 300 bulk mails are seeded; want about 10", want)
	}
}

// laneOf is the lane certgate delivers addr's mail through, matched as
// the queue matches it: by domain, then by the MX host the demo gives it.
func laneOf(pol *policy.Policy, addr string) string {
	domain := addr[strings.LastIndexByte(addr, '@')+1:]
	var mx []string
	for _, p := range providers {
		if h, ok := p.domains[domain]; ok {
			mx = []string{h}
		}
	}
	return pol.Match(domain, mx).Name()
}

// providerNamed is the simulated provider called name.
func providerNamed(t *testing.T, name string) provider {
	t.Helper()
	for _, p := range providers {
		if p.name == name {
			return p
		}
	}
	t.Fatalf("no provider %q", name)
	return provider{}
}

// Every configured lane that reaches a simulated provider is listed with
// it, so the placement notes add up the rates its filter sees.
func TestProvidersListTheirLanes(t *testing.T) {
	dir := t.TempDir()
	keys, err := makeKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	path, _, err := writeConfig(dir, 2525, keys.config, "http://127.0.0.1:1/download/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Seeds.Mailboxes) != 0 {
		t.Errorf("seed mailboxes without seeds: %+v", cfg.Seeds.Mailboxes)
	}
	pol := policy.New(config.ResolveProviders(cfg.Providers), cfg.Delivery.Retry, policy.Options{})
	for _, p := range providers {
		var got []string
		for domain := range p.domains {
			if l := laneOf(pol, "x@"+domain); !slices.Contains(got, l) {
				got = append(got, l)
			}
		}
		slices.Sort(got)
		want := slices.Sorted(slices.Values(p.lanes))
		if !slices.Equal(got, want) {
			t.Errorf("%s is reached by lanes %v; its lanes say %v", p.name, got, want)
		}
	}
}
