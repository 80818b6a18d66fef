package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/publicsuffix"
)

// Validate checks a Config built in code (or changed after Parse), with
// the same rules as Parse, and normalizes it the same way (domains lower
// case, trusted networks as CIDRs). Problems carry no line numbers. It does
// not apply defaults: call SetDefaults first.
func (c *Config) Validate() error {
	v := &validator{}
	v.validate(c)
	if len(v.problems) == 0 {
		c.Warnings = v.warningsFor(c.Path)
		return nil
	}
	for i := range v.problems {
		v.problems[i].File = c.Path
	}
	sortProblems(v.problems)
	return &Errors{Problems: v.problems}
}

// validator collects problems. ix (nil for a Config built in code) gives
// lines; bad lists paths whose decoding already failed, under which
// validation stays quiet rather than report the same mistake twice.
type validator struct {
	ix       *index
	bad      []string
	problems []Problem
	warnings []Problem
}

func (v *validator) add(path, format string, args ...any) {
	if v.isBad(path) {
		return
	}
	v.problems = append(v.problems, Problem{Line: v.ix.line(path), Path: path, Msg: fmt.Sprintf(format, args...)})
}

// warn notes something risky but not wrong at path.
func (v *validator) warn(path, format string, args ...any) {
	v.warnings = append(v.warnings, Problem{Line: v.ix.line(path), Path: path, Msg: fmt.Sprintf(format, args...)})
}

// warningsFor returns the warnings found, in file order, naming file.
func (v *validator) warningsFor(file string) []Problem {
	for i := range v.warnings {
		v.warnings[i].File = file
	}
	sortProblems(v.warnings)
	return v.warnings
}

// addAbout is add for a problem at path that is about some of its keys
// together (set one of a and b): it stays quiet when one of them failed to
// decode, as the problem may only be an echo of that.
func (v *validator) addAbout(path string, keys []string, format string, args ...any) {
	for _, k := range keys {
		if v.isBad(path + "." + k) {
			return
		}
	}
	v.add(path, format, args...)
}

func (v *validator) isBad(path string) bool {
	for _, b := range v.bad {
		if under(path, b) {
			return true
		}
	}
	return false
}

func (v *validator) has(path string) bool { return v.ix != nil && v.ix.has(path) }

// under reports whether path is root or inside it.
func under(path, root string) bool {
	if root == "" {
		return true
	}
	if !strings.HasPrefix(path, root) {
		return false
	}
	rest := path[len(root):]
	return rest == "" || rest[0] == '.' || rest[0] == '['
}

func (v *validator) validate(c *Config) {
	v.general(c)
	v.smtp(&c.SMTP)
	v.http(c)
	v.tenants(c.Tenants)
	v.dkim(c.DKIM)
	v.alignment(c)
	v.delivery(&c.Delivery)
	v.providers(c.Providers)
	v.tenantWarmups(c)
	v.rules("rules", c.Rules)
	v.api(c)
	for i, n := range c.Gate.ScannerNetworks {
		if _, err := parseNetwork(n); err != nil {
			v.add(indexPath("gate.scanner_networks", i), "%q is not a network (CIDR) or an address", n)
		}
	}
	if c.Gate.MinHumanDelay < 0 {
		v.add("gate.min_human_delay", "must not be negative")
	}
	v.keyFile("gate.form_key_file", c.Gate.FormKeyFile, "")
	v.console(&c.Console)
	v.webhooks(c)
	v.retention(&c.Retention)
	v.seeds(c)
	v.dnsCheck(&c.DNSCheck)
	v.cluster(c)
}

// dnsCheck checks the periodic DNS self-check's keys: more often than
// every 10 minutes would only load the resolver (records change at the
// pace of their TTLs), and a query waits a minute at most.
func (v *validator) dnsCheck(d *DNSCheck) {
	if d.Interval != 0 && (d.Interval < Duration(10*time.Minute) || d.Interval > Duration(168*time.Hour)) {
		v.add("dns_check.interval", "must be from 10m to 168h, or 0 to turn the check off, not %s", d.Interval)
	}
	if d.Timeout < Duration(time.Second) || d.Timeout > Duration(time.Minute) {
		v.add("dns_check.timeout", "must be from 1s to 1m, not %s", d.Timeout)
	}
	if d.Resolver != "" {
		v.hostPort("dns_check.resolver", d.Resolver, true)
	}
}

// Retention below a day would take events that webhooks have not sent
// yet whenever a receiver is down for an afternoon.
const minRetention = Duration(24 * time.Hour)

// retention checks how long events and finished mail are kept.
// console: a session is a signed-in API token, so it must end; a day at
// most, and a minute at least so that a page can be read.
func (v *validator) console(c *Console) {
	if c.IdleTimeout < Duration(time.Minute) || c.IdleTimeout > Duration(24*time.Hour) {
		v.add("console.idle_timeout", "must be from 1m to 24h, not %s", c.IdleTimeout)
	}
	if c.MaxAge < Duration(time.Minute) || c.MaxAge > Duration(24*time.Hour) {
		v.add("console.max_age", "must be from 1m to 24h, not %s", c.MaxAge)
	} else if c.MaxAge < c.IdleTimeout {
		v.add("console.max_age", "%s is shorter than console.idle_timeout (%s): sessions would never sit idle that long", c.MaxAge, c.IdleTimeout)
	}
	if c.MaxSessions < 1 || c.MaxSessions > 100000 {
		v.add("console.max_sessions", "must be from 1 to 100000, not %d", c.MaxSessions)
	}
	v.keyFile("console.session_key_file", c.SessionKeyFile, "the console's session key signs anyone in as any API token")
}

// keyFile checks a file of shared key, when one is named: it exists,
// only its owner reads it (refuseShared as for secretFile), and it holds
// enough key that nobody guesses it.
func (v *validator) keyFile(path, f, refuseShared string) {
	if f == "" || !v.file(path, f) {
		return
	}
	v.secretFile(path, f, refuseShared)
	if b, err := readSmall(f, 4096); err != nil || len(strings.TrimSpace(string(b))) < 32 {
		v.add(path, "must hold at least 32 characters of random key (openssl rand -hex 32)")
	}
}

func (v *validator) retention(r *Retention) {
	for _, k := range []struct {
		key string
		d   Duration
	}{{"retention.events", r.Events}, {"retention.delivered_messages", r.DeliveredMessages}} {
		switch {
		case k.d < 0:
			v.add(k.key, "must not be negative (0 keeps for ever)")
		case k.d != 0 && k.d < minRetention:
			v.add(k.key, "%s is too short: keep at least %s (webhooks and the helpdesk read what it deletes), or 0 to keep for ever", k.d, minRetention)
		}
	}
	if r.SweepInterval < Duration(time.Minute) || r.SweepInterval > Duration(24*time.Hour) {
		v.add("retention.sweep_interval", "must be from 1m to 24h, not %s", r.SweepInterval)
	}
}

func (v *validator) general(c *Config) {
	c.Hostname = strings.TrimSuffix(c.Hostname, ".")
	switch {
	case c.Hostname == "" && v.has("hostname"):
		v.add("hostname", "must not be empty")
	case c.Hostname == "":
		v.add("hostname", "not set, and the system host name could not be read; set it")
	case isIP(c.Hostname):
		v.add("hostname", "%q is an IP address; it must be a DNS name (it is the EHLO name and the Message-ID domain)", c.Hostname)
	case !isDNSName(c.Hostname):
		v.add("hostname", "%q is not a valid DNS name", c.Hostname)
	}
	if c.DataDir == "" {
		v.add("data_dir", "must not be empty")
	}

	v.storage(c.Storage)

	switch c.DKIMEngine {
	case DKIMEngineAuto, DKIMEngineOpenSSL, DKIMEngineGo:
	default:
		v.add("dkim_engine", "%q is not one of auto, openssl, go", c.DKIMEngine)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		v.add("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		v.add("log.format", "%q is not text or json", c.Log.Format)
	}
}

// storageDrivers are the storage.driver values this build can open.
var storageDrivers = []string{"sqlite", "postgres"}

// StorageDrivers lists the storage.driver values this build can open;
// the binary opens each of them.
func StorageDrivers() []string { return slices.Clone(storageDrivers) }

// storage refuses a driver the build lacks: check-config must report
// whatever serve would refuse.
func (v *validator) storage(s Storage) {
	switch {
	case !slices.Contains(storageDrivers, s.Driver):
		v.add("storage.driver", "%q is not a storage driver; this build has %s", s.Driver, strings.Join(storageDrivers, ", "))
	case s.Driver == "postgres":
		v.secretSource("storage", "dsn_file", s.DSNFile, "dsn_env", s.DSNEnv, "")
	default:
		if s.DSNFile != "" {
			v.add("storage.dsn_file", "only for driver postgres; sqlite keeps its database in data_dir")
		}
		if s.DSNEnv != "" {
			v.add("storage.dsn_env", "only for driver postgres; sqlite keeps its database in data_dir")
		}
	}
}

func (v *validator) smtp(s *SMTP) {
	if len(s.Listen) == 0 {
		v.add("smtp.listen", "list at least one host:port to listen on")
	}
	seen := map[string]bool{}
	for i, l := range s.Listen {
		p := indexPath("smtp.listen", i)
		if seen[l] {
			v.add(p, "%q is listed twice", l)
			continue
		}
		seen[l] = true
		v.hostPort(p, l, false)
	}

	t := s.TLS
	switch {
	case t.CertFile != "" && t.KeyFile == "":
		v.add("smtp.tls.key_file", "required when cert_file is set")
	case t.CertFile == "" && t.KeyFile != "":
		v.add("smtp.tls.cert_file", "required when key_file is set")
	case t.CertFile != "":
		certOK := v.file("smtp.tls.cert_file", t.CertFile)
		keyOK := v.file("smtp.tls.key_file", t.KeyFile)
		if certOK && keyOK {
			if _, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile); err != nil {
				v.add("smtp.tls", "cannot load the certificate and key: %v", err)
			}
			v.secretFile("smtp.tls.key_file", t.KeyFile, "")
		}
	}

	v.positive("smtp.max_message_bytes", s.MaxMessageBytes)
	v.positive("smtp.max_recipients", int64(s.MaxRecipients))
	v.positive("smtp.max_connections", int64(s.MaxConnections))
	v.positive("smtp.max_connections_per_ip", int64(s.MaxConnectionsPerIP))
	v.positive("smtp.max_connections_per_network", int64(s.MaxConnectionsPerNetwork))
	if s.TrustedReserve < 0 || (s.MaxConnections > 0 && s.TrustedReserve >= s.MaxConnections) {
		v.add("smtp.trusted_reserve", "must be at least 0 and less than max_connections (%d), not %d", s.MaxConnections, s.TrustedReserve)
	}
	v.positiveDuration("smtp.read_timeout", s.ReadTimeout)
	v.positiveDuration("smtp.write_timeout", s.WriteTimeout)
	// One message at max_message_bytes takes up to twice its size in its
	// buffer (grown by doubling), once more prepared, and twice more while
	// the store writes it: five times, in the budget's mail share.
	if need := (5*s.MaxMessageBytes*mailShareDen + mailShareNum - 1) / mailShareNum; s.MaxMessageBytes > 0 && s.MemoryBudget < need {
		v.add("smtp.memory_budget", "%d bytes cannot hold one message of max_message_bytes (%d) as it arrives, is prepared and stored; give at least %d",
			s.MemoryBudget, s.MaxMessageBytes, need)
	}
	v.positiveDuration("smtp.pre_auth_timeout", s.PreAuthTimeout)
	v.positiveDuration("smtp.max_session_without_mail", s.MaxSessionWithoutMail)
	if s.AuthFailureDelay < 0 {
		v.add("smtp.auth_failure_delay", "must not be negative, not %s", s.AuthFailureDelay)
	}
	v.positive("smtp.auth_failure_limit", int64(s.AuthFailureLimit))
	v.positiveDuration("smtp.auth_failure_window", s.AuthFailureWindow)
	if s.AuthConcurrency < 0 {
		v.add("smtp.auth_concurrency", "must not be negative (0: one per CPU), not %d", s.AuthConcurrency)
	}
}

func (v *validator) http(c *Config) {
	v.hostPort("http.listen", c.HTTP.Listen, false)
	if g := c.HTTP.GateListen; g != "" {
		v.hostPort("http.gate_listen", g, false)
		if _, port, _ := net.SplitHostPort(g); g == c.HTTP.Listen && port != "0" {
			v.add("http.gate_listen", "%q is http.listen too; give the gate pages an address of their own, or leave the key out to serve them on http.listen", g)
		}
	}
	for i, n := range c.HTTP.TrustedProxies {
		if _, err := parseNetwork(n); err != nil {
			v.add(indexPath("http.trusted_proxies", i), "%q is not a network (CIDR) or an address", n)
		}
	}
	switch {
	case c.HTTP.PublicURL == "" && v.has("http.public_url"):
		v.add("http.public_url", "must not be empty; leave the key out to use http:// and http.listen")
	case c.HTTP.PublicURL == "":
		// http.listen is invalid and reported; nothing to derive from.
	default:
		if msg := urlProblem(c.HTTP.PublicURL, false); msg != "" {
			v.add("http.public_url", "%s", msg)
		} else {
			c.HTTP.PublicURL = strings.TrimRight(c.HTTP.PublicURL, "/")
		}
	}
}

func (v *validator) tenants(ts []Tenant) {
	if len(ts) == 0 {
		v.add("tenants", "define at least one tenant; without one nobody can submit mail")
	}
	names := map[string]int{}
	users := map[string]int{}
	claims := map[string]int{} // from_domains entry -> tenant index
	for i := range ts {
		t := &ts[i]
		at := indexPath("tenants", i)
		if t.Name == "" {
			v.add(at+".name", "required")
		} else if k, dup := names[t.Name]; dup {
			v.add(at+".name", "%q is already the name of tenants[%d]", t.Name, k)
		} else {
			names[t.Name] = i
		}
		for j, u := range t.Users {
			up := indexPath(at+".users", j)
			if u.Username == "" {
				v.add(up+".username", "required")
			} else if k, dup := users[u.Username]; dup {
				v.add(up+".username", "%q is already a user of tenants[%d]; usernames are unique across all tenants", u.Username, k)
			} else {
				users[u.Username] = i
			}
			v.user(up, u)
		}
		v.trustedNetworks(at, t)
		if len(t.FromDomains) == 0 {
			v.add(at+".from_domains", "list at least one domain the tenant sends from")
		}
		for j := range t.FromDomains {
			dp := indexPath(at+".from_domains", j)
			if v.domain(dp, &t.FromDomains[j], true) {
				if k, dup := claims[t.FromDomains[j]]; dup && k != i {
					v.add(dp, "%s is already claimed by tenants[%d] (%s): a domain belongs to one tenant", t.FromDomains[j], k, ts[k].Name)
				} else {
					claims[t.FromDomains[j]] = i
				}
			}
		}
		v.classes(at, t)
		if t.MaxMessageRate.Count < 0 || (t.MaxMessageRate.Count > 0 && t.MaxMessageRate.Period <= 0) {
			v.add(at+".max_message_rate", "%d per %s is not a rate", t.MaxMessageRate.Count, t.MaxMessageRate.Period)
		}
		if t.MaxQueued < 0 {
			v.add(at+".max_queued", "must not be negative, not %d", t.MaxQueued)
		}
		if t.MaxRecipientsPerSend < 0 || t.MaxRecipientsPerSend == 0 && v.has(at+".max_recipients_per_send") {
			v.add(at+".max_recipients_per_send", "must be at least 1, not %d", t.MaxRecipientsPerSend)
		}
		if t.Templates != "" {
			v.dir(at+".templates", t.Templates)
		}
		v.links(at+".links", &t.Links)
		v.support(at+".support", t.Support)
	}
	v.networksApart(ts)
}

// networksApart refuses trusted networks that overlap across tenants: a
// client in both would be filed under whichever tenant came first.
func (v *validator) networksApart(ts []Tenant) {
	type claim struct {
		tenant, entry int
		p             netip.Prefix
	}
	var seen []claim
	for i, t := range ts {
		for j, n := range t.TrustedNetworks {
			p, err := netip.ParsePrefix(n) // normalized by trustedNetworks when valid
			if err != nil {
				continue
			}
			for _, c := range seen {
				if c.tenant != i && c.p.Overlaps(p) {
					v.add(indexPath(indexPath("tenants", i)+".trusted_networks", j),
						"%s overlaps %s of tenants[%d] (%s): a client there would be filed under either", p, c.p, c.tenant, ts[c.tenant].Name)
				}
			}
			seen = append(seen, claim{i, j, p})
		}
	}
}

// classes checks the classes a tenant may use, its default among them.
func (v *validator) classes(at string, t *Tenant) {
	switch t.DefaultClass {
	case ClassBulk, ClassTransactional:
	default:
		v.add(at+".default_class", "%q is not bulk or transactional", t.DefaultClass)
		return
	}
	if len(t.Classes) == 0 {
		v.add(at+".classes", "list at least one of bulk, transactional; leave the key out for both")
	}
	for j, c := range t.Classes {
		if c != ClassBulk && c != ClassTransactional {
			v.add(indexPath(at+".classes", j), "%q is not bulk or transactional", c)
		}
	}
	if len(t.Classes) > 0 && !slices.Contains(t.Classes, t.DefaultClass) {
		v.add(at+".default_class", "%s is not one of the tenant's classes %v", t.DefaultClass, t.Classes)
	}
}

// trustedNetworks checks and normalizes the networks that submit without
// AUTH; a tenant needs them or users.
func (v *validator) trustedNetworks(at string, t *Tenant) {
	for j, n := range t.TrustedNetworks {
		np := indexPath(at+".trusted_networks", j)
		p, err := parseNetwork(n)
		switch {
		case err != nil:
			v.add(np, "%q is not a CIDR (such as 192.0.2.0/24) or an IP address", n)
		case p.Bits() == 0:
			v.add(np, "%s trusts every address: anyone who reaches smtp.listen could send as this tenant without a password; list the issuer's own networks", p)
		default:
			t.TrustedNetworks[j] = p.String()
		}
	}
	if len(t.Users) == 0 && len(t.TrustedNetworks) == 0 {
		v.addAbout(at, []string{"users", "trusted_networks"}, "no way to submit: give the tenant users (SMTP AUTH) or trusted_networks")
	}
}

func (v *validator) links(at string, l *Links) {
	for j, g := range l.Gate {
		if msg := urlProblem(g, true); msg != "" {
			v.add(indexPath(at+".gate", j), "%s", msg)
		}
	}
	switch l.Enable {
	case LinksOnRelease, LinksOnDelivery, LinksImmediately:
	default:
		v.add(at+".enable", "%q is not one of on_release, on_delivery, immediately", l.Enable)
	}
	v.positiveDuration(at+".ttl", l.TTL)
	if l.MaxUses < 1 {
		v.add(at+".max_uses", "must be at least 1, not %d", l.MaxUses)
	}
}

func (v *validator) support(at string, s Support) {
	if e := s.Email; e != "" && (!strings.Contains(e, "@") || strings.ContainsAny(e, " <>\"")) {
		v.add(at+".email", "%q is not a plain address", e)
	}
	if u := s.URL; u != "" {
		if msg := urlProblem(u, false); msg != "" {
			v.add(at+".url", "%s", msg)
		}
	}
}

func (v *validator) user(at string, u User) {
	switch {
	case u.PasswordHash != "" && u.PasswordHashFile != "":
		v.add(at, "set only one of password_hash and password_hash_file")
	case u.PasswordHash == "" && u.PasswordHashFile == "":
		v.addAbout(at, []string{"password_hash", "password_hash_file"}, "set password_hash or password_hash_file")
	case u.PasswordHash != "":
		problem, warning := PasswordHashProblem(u.PasswordHash)
		if problem != "" {
			v.add(at+".password_hash", "%s", problem)
		} else if warning != "" {
			v.warn(at+".password_hash", "%s", warning)
		}
	default:
		p := at + ".password_hash_file"
		if !v.file(p, u.PasswordHashFile) {
			return
		}
		v.secretFile(p, u.PasswordHashFile, "")
		data, err := readSmall(u.PasswordHashFile, 4096)
		if err != nil {
			v.add(p, "%v", err)
		} else if problem, warning := PasswordHashProblem(strings.TrimSpace(string(data))); problem != "" {
			v.add(p, "%s: %s", u.PasswordHashFile, problem)
		} else if warning != "" {
			v.warn(p, "%s: %s", u.PasswordHashFile, warning)
		}
	}
}

func (v *validator) dkim(keys []DKIMKey) {
	seen := map[[2]string]int{}
	for i := range keys {
		k := &keys[i]
		at := indexPath("dkim", i)
		domainOK := v.domain(at+".domain", &k.Domain, true)
		k.Selector = strings.ToLower(k.Selector)
		selectorOK := false
		switch {
		case k.Selector == "":
			v.add(at+".selector", "required")
		case !isDNSName(k.Selector):
			v.add(at+".selector", "%q is not a valid selector (DNS labels of letters, digits and -)", k.Selector)
		default:
			selectorOK = true
		}
		if domainOK && selectorOK {
			id := [2]string{k.Domain, k.Selector}
			if name := k.Selector + "._domainkey." + k.Domain; len(name) > 253 {
				v.add(at+".selector", "%s is too long for a DNS name (RFC 1035 2.3.4)", name)
			} else if j, dup := seen[id]; dup {
				v.add(at, "%s with selector %s is already defined by dkim[%d]", k.Domain, k.Selector, j)
			} else {
				seen[id] = i
			}
		}
		if k.KeyFile == "" {
			v.add(at+".key_file", "required")
		} else if v.file(at+".key_file", k.KeyFile) {
			v.secretFile(at+".key_file", k.KeyFile, "a DKIM key signs mail as the issuer")
			data, err := readSmall(k.KeyFile, 1<<20)
			if err != nil {
				v.add(at+".key_file", "%v", err)
			} else if msg := dkimKeyProblem(data); msg != "" {
				v.add(at+".key_file", "%s: %s", k.KeyFile, msg)
			}
		}
	}
}

// alignment checks that every from domain has a DKIM key whose domain has
// the same organizational domain (relaxed DMARC alignment).
func (v *validator) alignment(c *Config) {
	if v.isBad("dkim") {
		return
	}
	// A key belongs to the tenant that owns its domain (DomainOwners), and
	// a tenant signs only with its own keys.
	owners := NewDomainOwners(c.Tenants)
	orgs := map[[2]string]bool{} // tenant, organizational domain
	for _, k := range c.DKIM {
		if isDNSName(k.Domain) {
			orgs[[2]string{owners.Owner(k.Domain), orgDomain(k.Domain)}] = true
		}
	}
	for i, t := range c.Tenants {
		for j, d := range t.FromDomains {
			if !isDNSName(d) || !strings.Contains(d, ".") {
				continue // reported already
			}
			if owners.Owner(d) == t.Name && !orgs[[2]string{t.Name, orgDomain(d)}] {
				v.add(indexPath(indexPath("tenants", i)+".from_domains", j),
					"no DKIM key aligned with %s; mail from it would fail DMARC (add a dkim entry for %s, or a subdomain of it that no other tenant claims: a tenant signs with its own keys only)", d, d)
			}
		}
	}
}

// orgDomain is the organizational domain of d (its registrable part,
// eTLD+1, from the public suffix list), or d when it has none.
func orgDomain(d string) string {
	if o, err := publicsuffix.EffectiveTLDPlusOne(d); err == nil {
		return o
	}
	return d
}

func (v *validator) delivery(d *Delivery) {
	seenIP := map[string]int{}
	for i, a := range d.SourceAddresses {
		at := indexPath("delivery.source_addresses", i)
		ip, err := netip.ParseAddr(a)
		switch {
		case err != nil || ip.Zone() != "":
			v.add(at, "%q is not an IP address such as 203.0.113.25 or 2001:db8::25", a)
		case ip.IsUnspecified() || ip.IsMulticast():
			v.add(at, "%s is not an address mail can come from", a)
		default:
			if k, dup := seenIP[ip.Unmap().String()]; dup {
				v.add(at, "%s is already delivery.source_addresses[%d]", a, k)
			}
			seenIP[ip.Unmap().String()] = i
			d.SourceAddresses[i] = ip.Unmap().String()
		}
	}
	if len(d.Routes) == 0 {
		v.add("delivery.routes", "list at least one route; leave the key out for MX delivery of every domain")
	}
	seen := map[string]int{}
	catchAll := -1
	for i := range d.Routes {
		r := &d.Routes[i]
		at := indexPath("delivery.routes", i)
		v.route(at, r)
		if catchAll >= 0 {
			v.add(at, "never used: delivery.routes[%d] before it matches every domain (\"*\")", catchAll)
			continue
		}
		for j, dom := range r.Domains {
			if dom == "*" {
				catchAll = i
				continue
			}
			if k, dup := seen[dom]; dup && k != i {
				v.add(indexPath(at+".domains", j), "%s is routed by delivery.routes[%d] already; this entry is never used", dom, k)
			} else {
				seen[dom] = i
			}
		}
	}

	if d.MXPort < 1 || d.MXPort > 65535 {
		v.add("delivery.mx_port", "must be a port from 1 to 65535, not %d", d.MXPort)
	}
	v.positiveDuration("delivery.connect_timeout", d.ConnectTimeout)
	v.positiveDuration("delivery.command_timeout", d.CommandTimeout)
	v.positiveDuration("delivery.data_timeout", d.DataTimeout)

	r := d.Retry
	if len(r.Schedule) == 0 {
		v.add("delivery.retry.schedule", "list at least one step, such as [1m, 5m, 15m]; leave the key out for the default")
	}
	for i, s := range r.Schedule {
		v.positiveDuration(indexPath("delivery.retry.schedule", i), s)
	}
	v.positiveDuration("delivery.retry.max_age", r.MaxAge)
	if !(r.Jitter >= 0 && r.Jitter < 1) {
		v.add("delivery.retry.jitter", "must be at least 0 and below 1, not %v", r.Jitter)
	}

	if d.StaticDNS != nil {
		v.staticDNS(d.StaticDNS)
	}
}

func (v *validator) route(at string, r *Route) {
	if len(r.Domains) == 0 {
		v.add(at+".domains", "list at least one domain, or \"*\" for every domain")
	}
	for j := range r.Domains {
		d := &r.Domains[j]
		dp := indexPath(at+".domains", j)
		*d = normName(*d)
		switch {
		case *d == "*":
		case strings.HasPrefix(*d, "*"):
			v.add(dp, "%q: write a suffix as %q (it matches every subdomain)", *d, strings.TrimLeft(*d, "*"))
		case strings.HasPrefix(*d, "."):
			if !isDNSName((*d)[1:]) {
				v.add(dp, "%q is not a domain suffix such as .partner.example", *d)
			}
		default:
			v.domain(dp, d, false)
		}
	}
	switch {
	case r.MX && r.Host != "":
		v.add(at, "set mx: true or host, not both")
	case !r.MX && r.Host == "":
		v.addAbout(at, []string{"mx", "host"}, "set mx: true (deliver to the domain's MX hosts) or host (a fixed next hop, host:port)")
	case r.Host != "":
		v.hostPort(at+".host", r.Host, true)
	}
	switch r.TLS {
	case TLSRequired, TLSOpportunistic, TLSNone:
	default:
		v.add(at+".tls", "%q is not one of required, opportunistic, none", r.TLS)
	}
	if r.CAFile != "" && v.file(at+".ca_file", r.CAFile) {
		data, err := readSmall(r.CAFile, 16<<20)
		if err != nil {
			v.add(at+".ca_file", "%v", err)
		} else if !x509.NewCertPool().AppendCertsFromPEM(data) {
			v.add(at+".ca_file", "%s holds no PEM certificate", r.CAFile)
		}
	}
	if a := r.Auth; a != nil {
		ap := at + ".auth"
		if r.Host == "" {
			v.add(ap, "smarthost credentials need host; with mx: true they would be offered to every receiving server")
		}
		if a.Username == "" {
			v.add(ap+".username", "required")
		}
		v.secretSource(ap, "password_file", a.PasswordFile, "password_env", a.PasswordEnv, "")
		if r.TLS == TLSNone {
			v.add(at+".tls", "none would send the smarthost password in clear; use required with auth")
		}
	}
}

func (v *validator) staticDNS(sd *StaticDNS) {
	const base = "delivery.static_dns"
	addrs := map[string]bool{}
	for _, h := range slices.Sorted(maps.Keys(sd.Hosts)) {
		kp := childPath(base+".hosts", h)
		if !isDNSName(h) {
			v.add(kp, "%q is not a host name", h)
		}
		if len(sd.Hosts[h]) == 0 {
			v.add(kp, "list at least one IP address")
		}
		for j, a := range sd.Hosts[h] {
			if !isIP(a) {
				v.add(indexPath(kp, j), "%q is not an IP address", a)
			}
		}
		addrs[normName(h)] = true
	}
	for _, dom := range slices.Sorted(maps.Keys(sd.MX)) {
		kp := childPath(base+".mx", dom)
		if !isDNSName(dom) {
			v.add(kp, "%q is not a domain name", dom)
		}
		if len(sd.MX[dom]) == 0 {
			v.add(kp, "list at least one MX host")
		}
		for j, h := range sd.MX[dom] {
			switch {
			case isIP(h):
			case !isDNSName(h):
				v.add(indexPath(kp, j), "%q is not a host name", h)
			case !addrs[normName(h)]:
				v.add(indexPath(kp, j), "MX host %s has no address in %s.hosts; static_dns replaces DNS, so it cannot be reached", h, base)
			}
		}
	}

	// Normalize names to lower case without the trailing dot.
	norm := func(m map[string][]string, values bool) map[string][]string {
		if m == nil {
			return nil
		}
		out := make(map[string][]string, len(m))
		for k, vs := range m {
			if values {
				vs = slices.Clone(vs)
				for i := range vs {
					vs[i] = normName(vs[i])
				}
			}
			out[normName(k)] = append(out[normName(k)], vs...)
		}
		return out
	}
	sd.MX = norm(sd.MX, true)
	sd.Hosts = norm(sd.Hosts, false)
}

// providerName is the one rule for provider names: lane keys and metric
// labels carry them, and a catch-all lane's key is "default/<domain>".
var providerName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)

func (v *validator) providers(ps []Provider) {
	builtin := map[string]bool{}
	for _, b := range BuiltinProviders() {
		builtin[b.Name] = true
	}
	names := map[string]int{}
	for i := range ps {
		p := &ps[i]
		at := indexPath("providers", i)
		nameOK := false
		switch k, dup := names[p.Name]; {
		case p.Name == "":
			v.add(at+".name", "required")
		case !providerName.MatchString(p.Name):
			v.add(at+".name", "%q: use lower-case letters, digits, _ and -, starting with a letter or digit", p.Name)
		case dup:
			v.add(at+".name", "%q is already the name of providers[%d]", p.Name, k)
		default:
			names[p.Name] = i
			nameOK = true
		}
		switch {
		case !nameOK:
		case p.Name == CatchAllProvider:
			const msg = "the catch-all matches every domain no other provider claims; it takes limits only"
			if len(p.Domains) > 0 {
				v.add(at+".domains", msg)
			}
			if len(p.MXSuffixes) > 0 {
				v.add(at+".mx_suffixes", msg)
			}
			// Its lanes are one per recipient domain: a schedule or a
			// placement share would be each domain's, not the provider's.
			if p.Warmup != nil {
				v.add(at+".warmup", "the catch-all has a lane per recipient domain; give warm-up to a named provider")
			}
			if p.Placement != nil {
				v.add(at+".placement", "the catch-all has a lane per recipient domain; seed placement steers named providers only")
			}
		case !builtin[p.Name] && len(p.Domains) == 0 && len(p.MXSuffixes) == 0:
			v.addAbout(at, []string{"domains", "mx_suffixes"}, "a new provider needs domains or mx_suffixes to match anything")
		}
		for j := range p.Domains {
			v.domain(indexPath(at+".domains", j), &p.Domains[j], false)
		}
		for j, s := range p.MXSuffixes {
			sp := indexPath(at+".mx_suffixes", j)
			s = normName(s)
			p.MXSuffixes[j] = s
			switch {
			case strings.HasPrefix(s, "*"):
				if strings.Trim(s, "*") == "" {
					v.add(sp, "%q matches every host; write a substring between the stars, such as *zimbra*", s)
				}
			case strings.HasPrefix(s, "."):
				if !isDNSName(s[1:]) {
					v.add(sp, "%q is not a domain suffix such as .google.com", s)
				}
			case !isDNSName(s):
				v.add(sp, "%q is neither a suffix starting with \".\" (.google.com) nor a full host name", s)
			}
		}
		switch r := p.MaxMessageRate; {
		case r.Count < 0:
			v.add(at+".max_message_rate", "the count must not be negative, not %d", r.Count)
		case r.Count > 0 && r.Period <= 0:
			v.add(at+".max_message_rate", "the period must be positive, not %s", r.Period)
		}
		if p.ConnectionLimit < 0 {
			v.add(at+".connection_limit", "must not be negative, not %d", p.ConnectionLimit)
		}
		if p.MaxDeliveriesPerConnection < 0 {
			v.add(at+".max_deliveries_per_connection", "must not be negative, not %d", p.MaxDeliveriesPerConnection)
		}
		v.rules(at+".rules", p.Rules)
		v.checkRecovery(at+".recovery", p.Recovery)
		v.placementRule(at+".placement", p.Placement)
		v.warmup(at+".warmup", p.Warmup, nil)
	}
}

func (v *validator) api(c *Config) {
	if n := c.API.SendMaxBytes; (n != 0 || v.has("api.send_max_bytes")) && (n < 1<<10 || n > 1<<30) {
		v.add("api.send_max_bytes", "must be from 1024 to 1073741824 (1 GiB), not %d", c.API.SendMaxBytes)
	}
	names := map[string]int{}
	for i := range c.API.Tokens {
		t := &c.API.Tokens[i]
		at := indexPath("api.tokens", i)
		if t.Name == "" {
			v.add(at+".name", "required")
		} else if k, dup := names[t.Name]; dup {
			v.add(at+".name", "%q is already the name of api.tokens[%d]", t.Name, k)
		} else {
			names[t.Name] = i
		}
		n := len(v.problems)
		v.secretSource(at, "token_file", t.TokenFile, "token_env", t.TokenEnv, "an API token reads and releases mail")
		if len(v.problems) == n && (t.TokenFile == "") != (t.TokenEnv == "") {
			v.secretLength(at, "token_file", t.TokenFile, "token_env", t.TokenEnv, minAPIToken, "token")
		}
		if len(t.Scopes) == 0 {
			v.add(at+".scopes", "list at least one of read, release, send, admin")
		}
		for j, s := range t.Scopes {
			switch s {
			case ScopeRead, ScopeRelease, ScopeSend, ScopeAdmin:
			default:
				v.add(indexPath(at+".scopes", j), "%q is not one of read, release, send, admin", s)
			}
		}
		v.tenantScope(at, &t.Tenants, c.Tenants, "token")
	}
}

// tenantScope checks the tenants whose mail a token sees or a webhook is
// told about. Leaving them out is allowed only while there is one tenant,
// which it then covers: covering every tenant must be asked for (["*"]),
// so adding a tenant never widens a token or a webhook.
func (v *validator) tenantScope(at string, list *[]string, tenants []Tenant, what string) {
	known := map[string]bool{}
	for _, tn := range tenants {
		known[tn.Name] = true
	}
	switch {
	case len(*list) > 0:
	case v.has(at + ".tenants"):
		v.add(at+".tenants", `list the tenants this %s covers, or ["*"] for every tenant`, what)
		return
	case len(tenants) == 1:
		*list = []string{tenants[0].Name}
		return
	case len(tenants) > 1:
		v.add(at+".tenants", `required with more than one tenant: list those this %s covers, such as [%s], or ["*"] for every tenant`, what, tenants[0].Name)
		return
	}
	seen := map[string]bool{}
	for j, name := range *list {
		switch {
		case name == EveryTenant && len(*list) > 1:
			v.add(indexPath(at+".tenants", j), `"*" means every tenant: list it alone, not with names`)
		case name == EveryTenant:
		case !known[name] && !v.isBad("tenants"):
			v.add(indexPath(at+".tenants", j), "%q is not the name of a tenant", name)
		case seen[name]:
			v.add(indexPath(at+".tenants", j), "%q is listed twice", name)
		}
		seen[name] = true
	}
}

// entryName is what names of list entries (webhooks, seed mailboxes) may
// hold: they land in metrics labels, logs and URLs.
var entryName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// webhooks checks the webhook endpoints. It also fills in the timeout
// when the key is left out and makes a relative secret_file relative to
// the configuration file, as Parse does for the other files.
func (v *validator) webhooks(c *Config) {
	tenants := map[string]bool{}
	for _, t := range c.Tenants {
		tenants[t.Name] = true
	}
	names := map[string]int{}
	for i := range c.Webhooks {
		w := &c.Webhooks[i]
		at := indexPath("webhooks", i)
		v.uniqueName(at+".name", w.Name, names, "webhooks", i)

		if w.URL == "" {
			v.add(at+".url", "required")
		} else if msg := webhookURLProblem(w.URL); msg != "" {
			v.add(at+".url", "%s", msg)
		}

		if w.SecretFile != "" && c.Path != "" && !filepath.IsAbs(w.SecretFile) {
			w.SecretFile = filepath.Join(filepath.Dir(c.Path), w.SecretFile)
		}
		n := len(v.problems)
		v.secretSource(at, "secret_file", w.SecretFile, "secret_env", w.SecretEnv, "")
		if len(v.problems) == n && (w.SecretFile == "") != (w.SecretEnv == "") {
			v.secretLength(at, "secret_file", w.SecretFile, "secret_env", w.SecretEnv, minWebhookSecret, "secret")
		}

		if len(w.Events) == 0 {
			v.add(at+".events", "list at least one of %s", strings.Join(WebhookEvents, ", "))
		}
		seenEvents := map[string]bool{}
		for j, e := range w.Events {
			switch {
			case !slices.Contains(WebhookEvents, e):
				v.add(indexPath(at+".events", j), "%q is not one of %s", e, strings.Join(WebhookEvents, ", "))
			case seenEvents[e]:
				v.add(indexPath(at+".events", j), "%q is listed twice", e)
			}
			seenEvents[e] = true
		}

		v.tenantScope(at, &w.Tenants, c.Tenants, "webhook")

		if !v.has(at+".timeout") && w.Timeout == 0 {
			w.Timeout = DefaultWebhookTimeout
		}
		v.positiveDuration(at+".timeout", w.Timeout)
	}
}

// The shortest secrets accepted, in bytes: a webhook's signing secret and
// an API bearer token (stored as a fast hash, so it must be long random).
const (
	minWebhookSecret = 16
	minAPIToken      = 16
)

// secretLength reads a secret now, as the daemon will at start, so that
// an unreadable or short secret is reported with the rest of the file.
// A variable that is not set here is not judged: check-config often runs
// where the service's environment is not (a shell, a deploy pipeline), and
// serve names the variable if it is missing at start. Problems name the
// file or variable, never the value.
func (v *validator) secretLength(at, fileKey, file, envKey, env string, min int, what string) {
	key, from := at+"."+fileKey, "file "+file
	if env != "" {
		key, from = at+"."+envKey, "environment variable "+env
		if _, set := os.LookupEnv(env); !set {
			return
		}
	}
	secret, err := ReadSecret(file, env)
	switch {
	case err != nil:
		v.add(key, "%v", err)
	case len(secret) < min:
		v.add(key, "the %s in %s is shorter than %d characters (make one with openssl rand -hex 32)", what, from, min)
	}
}

// webhookURLProblem checks a webhook URL: absolute https, or http to a
// loopback host (a receiver on the same machine); no user name or
// fragment. A query is allowed.
func webhookURLProblem(s string) string {
	u, err := url.Parse(s)
	if err == nil && u.User != nil {
		// Never echo it: it holds a user name and maybe a password.
		return "must not contain a user name or password"
	}
	// The URL is not echoed: receivers sometimes take a token in the query.
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Opaque != "" {
		return "not an absolute https URL such as https://crm.issuer.example/hooks/certgate"
	}
	if u.Fragment != "" || strings.HasSuffix(s, "#") {
		return "must not have a #fragment"
	}
	if u.Scheme == "http" && !isLoopbackHost(u.Hostname()) {
		return fmt.Sprintf("use https: plain http is only allowed to a loopback host (localhost, 127.0.0.1, ::1), not %s", u.Hostname())
	}
	return ""
}

func isLoopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(h)
	return err == nil && a.IsLoopback()
}

// ---- shared checks ----

// secretSource checks that exactly one of a file and an environment
// variable is named, and that the one named can be used; refuseShared,
// when not "", is why a file every user can read is refused (secretFile).
func (v *validator) secretSource(at, fileKey, file, envKey, env, refuseShared string) {
	switch {
	case file != "" && env != "":
		v.add(at, "set only one of %s and %s", fileKey, envKey)
	case file == "" && env == "":
		v.addAbout(at, []string{fileKey, envKey}, "set %s or %s", fileKey, envKey)
	case file != "":
		if v.file(at+"."+fileKey, file) {
			v.secretFile(at+"."+fileKey, file, refuseShared)
		}
	default:
		if !envName.MatchString(env) {
			// Never echo it: it may be the secret itself, pasted in the wrong key.
			v.add(at+"."+envKey, "must be the name of an environment variable (letters, digits and _), not its value")
		}
	}
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// file checks that name is a readable regular file.
func (v *validator) file(path, name string) bool {
	fi, err := os.Stat(name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		v.add(path, "file %s does not exist", name)
	case err != nil:
		v.add(path, "cannot use file %s: %v", name, pathErrText(err))
	case fi.IsDir():
		v.add(path, "%s is a directory, not a file", name)
	case !fi.Mode().IsRegular():
		v.add(path, "%s is not a regular file", name)
	default:
		f, err := os.Open(name)
		if err != nil {
			v.add(path, "cannot read file %s: %v", name, pathErrText(err))
			return false
		}
		f.Close()
		return true
	}
	return false
}

// dir checks that name is a directory certgate can read.
func (v *validator) dir(path, name string) {
	fi, err := os.Stat(name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		v.add(path, "directory %s does not exist", name)
	case err != nil:
		v.add(path, "cannot use directory %s: %v", name, pathErrText(err))
	case !fi.IsDir():
		v.add(path, "%s is not a directory", name)
	default:
		if _, err := os.ReadDir(name); err != nil {
			v.add(path, "cannot read directory %s: %v", name, pathErrText(err))
		}
	}
}

func pathErrText(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// readSmall reads a file of at most limit bytes.
func readSmall(name string, limit int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("cannot read file %s: %v", name, pathErrText(err))
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read file %s: %v", name, pathErrText(err))
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("file %s is larger than %d bytes; is it the right file?", name, limit)
	}
	return data, nil
}

func (v *validator) positive(path string, n int64) {
	if n <= 0 {
		v.add(path, "must be positive, not %d", n)
	}
}

func (v *validator) positiveDuration(path string, d Duration) {
	if d <= 0 {
		v.add(path, "must be a positive duration, not %s", d)
	}
}

// hostPort checks a host:port. A listen address (needHost false) may leave
// the host out (all addresses) and use port 0 (any free port, for tests).
func (v *validator) hostPort(path, s string, needHost bool) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		v.add(path, "%q is not host:port, such as 127.0.0.1:2525", s)
		return
	}
	n, err := strconv.Atoi(port)
	low := 0
	if needHost {
		low = 1
	}
	if err != nil || n < low || n > 65535 {
		v.add(path, "%q: the port must be a number from %d to 65535", s, low)
	}
	switch {
	case host == "" && needHost:
		v.add(path, "%q has no host", s)
	case host != "" && !isIP(host) && !isDNSName(host):
		v.add(path, "%q: %q is neither an IP address nor a host name", s, host)
	}
}

// domain normalizes *d (lower case, no trailing dot) and checks it is a
// domain name; full asks for at least two labels.
func (v *validator) domain(path string, d *string, full bool) bool {
	*d = normName(*d)
	switch {
	case *d == "":
		v.add(path, "empty domain")
	case !isDNSName(*d):
		v.add(path, "%q is not a valid domain name", *d)
	case full && !strings.Contains(*d, "."):
		v.add(path, "%q is not a full domain name (such as issuer.example)", *d)
	default:
		return true
	}
	return false
}

func normName(s string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), ".")
}

func isIP(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

// isDNSName reports whether s is a host or domain name: dot-separated
// labels of letters, digits and hyphens, not starting or ending with a
// hyphen, at most 63 characters each and 253 in all.
func isDNSName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for l := range strings.SplitSeq(s, ".") {
		if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	// An all-numeric last label is an IP address, not a name.
	last := s[strings.LastIndexByte(s, '.')+1:]
	return strings.Trim(last, "0123456789") != ""
}

// urlProblem checks an absolute http(s) URL; prefix allows a path prefix
// (gate URLs) and forbids nothing more than public_url does.
func urlProblem(s string, prefix bool) string {
	example := "https://gate.issuer.example"
	if prefix {
		example = "https://issuer.example/download/"
	}
	u, err := url.Parse(s)
	if err == nil && u.User != nil {
		// Never echo it: it holds a user name and maybe a password.
		return "must not contain a user name or password"
	}
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Opaque != "" {
		return fmt.Sprintf("%q is not an absolute http(s) URL such as %s", s, example)
	}
	if u.Fragment != "" || strings.HasSuffix(s, "#") {
		return fmt.Sprintf("%q must not have a #fragment", s)
	}
	if !prefix && (u.RawQuery != "" || u.ForceQuery) {
		return fmt.Sprintf("%q must not have a ?query", s)
	}
	return ""
}

func dkimKeyProblem(data []byte) string {
	if _, err := ParseDKIMKey(data); err != nil {
		return err.Error()
	}
	return ""
}

// parseNetwork reads a CIDR or a bare IP address (a /32 or /128).
func parseNetwork(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if a.Zone() != "" {
		return netip.Prefix{}, errors.New("an address with a zone is not a network")
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// uniqueName checks the name of list[i]: required, made of letters,
// digits, ".", "_" and "-" (it lands in metrics labels and URLs), and not
// that of an earlier entry of names.
func (v *validator) uniqueName(at, name string, names map[string]int, list string, i int) {
	switch k, dup := names[name]; {
	case name == "":
		v.add(at, "required")
	case !entryName.MatchString(name):
		v.add(at, "%q: use letters, digits, ., _ and - only", name)
	case dup:
		v.add(at, "%q is already the name of %s[%d]", name, list, k)
	default:
		names[name] = i
	}
}
