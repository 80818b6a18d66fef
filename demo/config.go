package demo

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/sim"
)

// credentials are the demo's secrets: the submission password (users app
// and portal) and the API token.
type credentials struct {
	password, token string
}

// lane is one provider's shaping limits in the demo's configuration.
type lane struct {
	name                   string
	perMinute, connections int
}

// lanes are scaled down from production so the demo shows shaping in
// seconds.
var lanes = []lane{{"gmail", 1800, 3}, {"microsoft365", 1200, 2}, {"outlook", 900, 2}, {"yahoo", 600, 2}}

// The closed loop at the demo's scale: the lanes to the simulated Microsoft
// keep certgate's built-in reply rules, but slowed for seconds rather than
// minutes, climb back a quarter of their rate every few seconds, and the
// outlook lane's seed copies steer it after a handful rather than twenty,
// so the whole story (throttled, slowed, junk, calm, climbing back) fits
// in half a minute.
const (
	loopSlowFor          = 10 * time.Second // a rule's slowdown; 15m (outlook), 5m (generic)
	loopRecoveryStep     = 0.25             // of the configured rate, the default
	loopRecoveryInterval = 4 * time.Second  // between steps; 5m by default
	loopPlacementWindow  = 5                // seed copies; 20 by default
	loopPlacementSample  = 3                // 5 by default
)

// loopRules are the built-in rules the demo scales, by lane: the ones
// the simulated Microsoft's 451 4.7.650 meets (microsoft365 has no rule
// of its own for it, Exchange Online answering with an ASxxx code, so the
// generic one takes it there).
var loopRules = map[string]string{"outlook": "outlook-ip-reputation", "microsoft365": "throttled"}

// closedLoop is the configuration, in YAML under a provider's entry, that
// scales lane's reply rule, recovery and placement rule to the demo; ""
// for a lane that does not deliver to the simulated Microsoft.
func closedLoop(lane string) string {
	name, ok := loopRules[lane]
	if !ok {
		return ""
	}
	var b strings.Builder
	for _, r := range config.BuiltinRules(lane) {
		if r.Name != name {
			continue
		}
		fmt.Fprintf(&b, "    # the built-in rule %s, for %s instead of %s\n", r.Name, loopSlowFor, r.For)
		fmt.Fprintf(&b, "    rules:\n      - {name: %s, match: %q, action: %s, factor: %g, for: %s,\n         reason: %q}\n",
			r.Name, r.Match, r.Action, r.Factor, loopSlowFor, r.Reason)
	}
	fmt.Fprintf(&b, "    recovery: {step: %g, interval: %s}\n", loopRecoveryStep, loopRecoveryInterval)
	if slices.ContainsFunc(seedMailboxes(), func(s seedMailbox) bool { return s.lane == lane }) {
		fmt.Fprintf(&b, "    placement: {window: %d, min_sample: %d, below: 0.5, action: slow, factor: 0.5, for: %s}\n",
			loopPlacementWindow, loopPlacementSample, loopSlowFor)
	}
	return b.String()
}

// perSecond is name's rate, 0 for a lane the demo does not configure.
func perSecond(name string) float64 {
	for _, l := range lanes {
		if l.name == name {
			return float64(l.perMinute) / 60
		}
	}
	return 0
}

// seedLogin is a seed mailbox as certgate logs in to it: its provider's
// IMAP address and the account's password.
type seedLogin struct {
	seedMailbox
	imapAddr, password string
}

// seedLogins pairs every seed mailbox with its provider's IMAP address
// and its password (by address).
func seedLogins(sims []*sim.Provider, passwords map[string]string) []seedLogin {
	var out []seedLogin
	for _, p := range providers {
		if p.seed != nil {
			out = append(out, seedLogin{*p.seed, named(sims, p.name).IMAPAddr(), passwords[p.seed.address]})
		}
	}
	return out
}

// writeConfig writes the demo's configuration as an operator would,
// so that the demo runs through the same loading and validation.
func writeConfig(dir string, mxPort int, keys []config.DKIMKey, downloadPrefix, resolver string, seeds []seedLogin) (path string, creds credentials, err error) {
	creds = credentials{password: randomHex(12), token: randomHex(24)}
	hash, err := bcrypt.GenerateFromPassword([]byte(creds.password), bcrypt.DefaultCost)
	if err != nil {
		return "", creds, err
	}
	cert, err := sim.SelfSigned(heloName)
	if err != nil {
		return "", creds, err
	}
	certFile, keyFile, err := cert.WriteFiles(dir, "smtp")
	if err != nil {
		return "", creds, err
	}
	tokenFile := filepath.Join(dir, "api-token")
	if err := os.WriteFile(tokenFile, []byte(creds.token+"\n"), 0o600); err != nil {
		return "", creds, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# certgate demo configuration, written by 'certgate demo'\n")
	fmt.Fprintf(&b, "hostname: %s\ndata_dir: %s\n", heloName, filepath.Join(dir, "data"))
	fmt.Fprintf(&b, "smtp:\n  listen: [\"127.0.0.1:0\"]\n  tls: {cert_file: %s, key_file: %s}\n", certFile, keyFile)
	// The gate's URLs go into the mail, so the HTTP port is chosen now.
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", creds, err
	}
	httpAddr := hl.Addr().String()
	hl.Close()
	fmt.Fprintf(&b, "http:\n  listen: %q\n  public_url: \"http://%s\"\n", httpAddr, httpAddr)
	fmt.Fprintf(&b, "tenants:\n  - name: issuer\n    users: [{username: app, password_hash: %q}]\n", string(hash))
	fmt.Fprintf(&b, "    from_domains: [%s]\n", strings.Join(issuerDomains, ", "))
	if len(seeds) > 0 {
		fmt.Fprintf(&b, "    seeding: {every: %d, interval: 1m}\n", seedEvery)
	}
	fmt.Fprintf(&b, "  - name: portal\n    display_name: Service Certificats\n    users: [{username: portal, password_hash: %q}]\n", string(hash))
	fmt.Fprintf(&b, "    from_domains: [%s]\n    support: {email: support@certs.example}\n", portalDomain)
	fmt.Fprintf(&b, "    links: {gate: [%q], enable: on_release, max_uses: 3}\n", downloadPrefix)
	fmt.Fprintf(&b, "gate: {min_human_delay: 500ms}\n")
	fmt.Fprintf(&b, "dkim:\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "  - {domain: %s, selector: %s, key_file: %s}\n", k.Domain, k.Selector, k.KeyFile)
	}
	// What the simulated receivers see the mail come from.
	fmt.Fprintf(&b, "delivery:\n  source_addresses: [%s]\n  mx_port: %d\n  retry: {schedule: [2s, 5s, 10s], max_age: 1h}\n  static_dns:\n    mx:\n", sendingAddress, mxPort)
	for _, p := range providers {
		for d, mx := range p.domains {
			fmt.Fprintf(&b, "      %s: [%s]\n", d, mx)
		}
	}
	fmt.Fprintf(&b, "    hosts:\n")
	for _, p := range providers {
		for _, mx := range p.domains {
			fmt.Fprintf(&b, "      %s: [%s]\n", mx, p.ip)
		}
	}
	fmt.Fprintf(&b, "providers:\n")
	for _, l := range lanes {
		fmt.Fprintf(&b, "  - name: %s\n    max_message_rate: %d/min\n    connection_limit: %d\n", l.name, l.perMinute, l.connections)
		b.WriteString(closedLoop(l.name))
	}
	// The seed mailboxes at the simulated providers, in plaintext to
	// loopback; a copy is watched for a minute, then kept for a look.
	if len(seeds) > 0 {
		if err := os.Mkdir(filepath.Join(dir, "seeds"), 0o700); err != nil {
			return "", creds, err
		}
		fmt.Fprintf(&b, "seeds:\n  deadline: 1m\n  after: keep\n  mailboxes:\n")
	}
	for _, s := range seeds {
		pwFile := filepath.Join(dir, "seeds", s.name)
		if err := os.WriteFile(pwFile, []byte(s.password+"\n"), 0o600); err != nil {
			return "", creds, err
		}
		fmt.Fprintf(&b, "    - {name: %s, provider: %s, address: %s, junk: auto,\n", s.name, s.lane, s.address)
		fmt.Fprintf(&b, "       imap: {addr: %q, tls: none, username: %s, password_file: %s}}\n", s.imapAddr, s.address, pwFile)
	}
	// The self-check reads the records the demo's DNS server publishes
	// (dnsZone), at start and then hourly.
	if resolver != "" {
		fmt.Fprintf(&b, "dns_check: {resolver: %q, interval: 1h, timeout: 2s}\n", resolver)
	}
	fmt.Fprintf(&b, "api:\n  tokens: [{name: demo, token_file: %s, scopes: [read, release, send], tenants: [\"*\"]}]\n", tokenFile)
	path = filepath.Join(dir, "certgate.yaml")
	return path, creds, os.WriteFile(path, []byte(b.String()), 0o600)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
