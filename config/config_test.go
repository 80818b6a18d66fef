package config

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"gopkg.in/yaml.v3"
)

// fixture is a directory with the files a full configuration refers to.
type fixture struct {
	dir  string
	hash string // a valid bcrypt hash
}

func newFixture(t testing.TB) fixture {
	t.Helper()
	dir := t.TempDir()
	write := func(name string, data []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	hash := fixtureHash()
	write("batch.hash", append(hash, '\n'))
	write("bad.hash", []byte("hello\n"))
	write("helpdesk.token", []byte("tok-0123456789abcdef\n"))

	_, dk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(dk)
	if err != nil {
		t.Fatal(err)
	}
	write("dkim.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))

	for _, name := range []string{"tls", "other"} {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(1),
			Subject:      pkix.Name{CommonName: "relay.issuer.example"},
			DNSNames:     []string{"relay.issuer.example"},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
		}
		cert, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		write(name+".crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert}))
		write(name+".key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
	}
	return fixture{dir: dir, hash: string(hash)}
}

// fixtureHash is a sound bcrypt hash, made once: cost 10 takes a while.
var fixtureHash = sync.OnceValue(func() []byte {
	hash, err := bcrypt.GenerateFromPassword([]byte("correct horse"), MinBcryptCost)
	if err != nil {
		panic(err)
	}
	return hash
})

func (f fixture) expand(s string) string {
	return strings.NewReplacer("{{dir}}", f.dir, "{{hash}}", f.hash).Replace(s)
}

func (f fixture) path() string { return filepath.Join(f.dir, "certgate.yaml") }

// fullYAML sets every key of the schema.
const fullYAML = `# every key set
hostname: relay.issuer.example
data_dir: {{dir}}/data
storage:
  driver: sqlite
smtp:
  listen: ["127.0.0.1:2525", "[::1]:2525"]
  tls:
    cert_file: {{dir}}/tls.crt
    key_file: {{dir}}/tls.key
  max_message_bytes: 10485760
  max_recipients: 100
  max_connections: 50
  max_connections_per_ip: 5
  max_connections_per_network: 12
  trusted_reserve: 8
  read_timeout: 2m
  write_timeout: 30s
  pre_auth_timeout: 20s
  max_session_without_mail: 90s
  auth_failure_delay: 2s
  auth_failure_limit: 4
  auth_failure_window: 1h
  auth_concurrency: 3
http:
  listen: "127.0.0.1:8080"
  gate_listen: "127.0.0.1:8081"
  public_url: "https://gate.issuer.example/"
tenants:
  - name: issuer
    users:
      - username: app
        password_hash: "{{hash}}"
      - username: batch
        password_hash_file: {{dir}}/batch.hash
    trusted_networks: ["10.1.2.3/16", "192.0.2.7"]
    from_domains: [issuer.example, Mail.Issuer.Example.]
    default_class: transactional
    links:
      gate: ["https://issuer.example/download/"]
      enable: on_release
      ttl: 48h
      max_uses: 5
  - name: reseller
    trusted_networks: ["2001:db8::/32"]
    from_domains: [reseller.example]
dkim:
  - domain: issuer.example
    selector: s2026
    key_file: {{dir}}/dkim.pem
  - {domain: mail.reseller.example, selector: s1, key_file: {{dir}}/dkim.pem}
delivery:
  routes:
    - domains: [partner.example]
      host: "smtp.partner.example:587"
      tls: required
      ca_file: {{dir}}/tls.crt
      auth:
        username: certgate
        password_env: PARTNER_SMTP_PASSWORD
    - {domains: ["*"], mx: true}
  retry:
    schedule: [30s, 2m, 10m]
    max_age: 48h
    jitter: 0
  mx_port: 2526
  connect_timeout: 10s
  command_timeout: 1m
  data_timeout: 5m
  static_dns:
    mx:
      partner.example: [mx1.partner.example]
    hosts:
      mx1.partner.example: [127.0.0.1, "::1"]
      smtp.partner.example: [127.0.0.1]
providers:
  - name: gmail
    domains: [gmail.com, googlemail.com]
    mx_suffixes: [".google.com", "*zimbra*"]
    max_message_rate: 300/min
    connection_limit: 5
    max_deliveries_per_connection: 50
api:
  tokens:
    - name: helpdesk
      token_file: {{dir}}/helpdesk.token
      scopes: [read, release]
      tenants: [issuer]
    - {name: ops, token_env: CERTGATE_OPS_TOKEN, scopes: [admin], tenants: ["*"]}
dns_check: {interval: 1h, resolver: "127.0.0.1:5353", timeout: 2s}
log:
  level: debug
  format: json
`

// minimalYAML leaves everything with a default out; key_file is relative
// to the configuration file.
const minimalYAML = `tenants:
  - name: issuer
    users: [{username: app, password_hash: "{{hash}}"}]
    from_domains: [issuer.example]
dkim:
  - {domain: issuer.example, selector: s1, key_file: dkim.pem}
`

func mustParse(t *testing.T, f fixture, src string) *Config {
	t.Helper()
	cfg, err := Parse(f.path(), []byte(f.expand(src)))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return cfg
}

func TestParseFull(t *testing.T) {
	f := newFixture(t)
	got := mustParse(t, f, fullYAML)
	d := f.dir
	want := &Config{
		Hostname: "relay.issuer.example",
		DataDir:  d + "/data",
		Storage:  Storage{Driver: "sqlite"},
		SMTP: SMTP{
			Listen:                   []string{"127.0.0.1:2525", "[::1]:2525"},
			TLS:                      TLS{CertFile: d + "/tls.crt", KeyFile: d + "/tls.key"},
			MaxMessageBytes:          10485760,
			MaxRecipients:            100,
			MaxConnections:           50,
			MaxConnectionsPerIP:      5,
			MaxConnectionsPerNetwork: 12,
			TrustedReserve:           8,
			ReadTimeout:              Duration(2 * time.Minute),
			WriteTimeout:             Duration(30 * time.Second),
			PreAuthTimeout:           Duration(20 * time.Second),
			MaxSessionWithoutMail:    Duration(90 * time.Second),
			AuthFailureDelay:         Duration(2 * time.Second),
			AuthFailureLimit:         4,
			AuthFailureWindow:        Duration(time.Hour),
			AuthConcurrency:          3,
			MemoryBudget:             DefaultMemoryBudget,
		},
		HTTP: HTTP{Listen: "127.0.0.1:8080", GateListen: "127.0.0.1:8081", PublicURL: "https://gate.issuer.example"},
		Tenants: []Tenant{
			{
				Name: "issuer",
				Users: []User{
					{Username: "app", PasswordHash: f.hash},
					{Username: "batch", PasswordHashFile: d + "/batch.hash"},
				},
				TrustedNetworks: []string{"10.1.0.0/16", "192.0.2.7/32"},
				FromDomains:     []string{"issuer.example", "mail.issuer.example"},
				DefaultClass:    "transactional",
				Links: Links{
					Gate:    []string{"https://issuer.example/download/"},
					Enable:  "on_release",
					TTL:     Duration(48 * time.Hour),
					MaxUses: 5,
				},
				Classes:              []Class{ClassBulk, ClassTransactional},
				MaxRecipientsPerSend: DefaultMaxRecipientsPerSend,
			},
			{
				Name:                 "reseller",
				TrustedNetworks:      []string{"2001:db8::/32"},
				FromDomains:          []string{"reseller.example"},
				DefaultClass:         "bulk",
				Links:                Links{Enable: "on_delivery", TTL: Duration(720 * time.Hour), MaxUses: 3},
				Classes:              []Class{ClassBulk, ClassTransactional},
				MaxRecipientsPerSend: DefaultMaxRecipientsPerSend,
			},
		},
		DKIM: []DKIMKey{
			{Domain: "issuer.example", Selector: "s2026", KeyFile: d + "/dkim.pem"},
			{Domain: "mail.reseller.example", Selector: "s1", KeyFile: d + "/dkim.pem"},
		},
		Delivery: Delivery{
			Routes: []Route{
				{
					Domains: []string{"partner.example"},
					Host:    "smtp.partner.example:587",
					TLS:     "required",
					CAFile:  d + "/tls.crt",
					Auth:    &RouteAuth{Username: "certgate", PasswordEnv: "PARTNER_SMTP_PASSWORD"},
				},
				{Domains: []string{"*"}, MX: true, TLS: "opportunistic"},
			},
			Retry: Retry{
				Schedule: []Duration{Duration(30 * time.Second), Duration(2 * time.Minute), Duration(10 * time.Minute)},
				MaxAge:   Duration(48 * time.Hour),
				Jitter:   0, // written as 0: kept, not defaulted
			},
			MXPort:         2526,
			ConnectTimeout: Duration(10 * time.Second),
			CommandTimeout: Duration(time.Minute),
			DataTimeout:    Duration(5 * time.Minute),
			StaticDNS: &StaticDNS{
				MX: map[string][]string{"partner.example": {"mx1.partner.example"}},
				Hosts: map[string][]string{
					"mx1.partner.example":  {"127.0.0.1", "::1"},
					"smtp.partner.example": {"127.0.0.1"},
				},
			},
		},
		Providers: []Provider{{
			Name:                       "gmail",
			Domains:                    []string{"gmail.com", "googlemail.com"},
			MXSuffixes:                 []string{".google.com", "*zimbra*"},
			MaxMessageRate:             Rate{Count: 300, Period: time.Minute},
			ConnectionLimit:            5,
			MaxDeliveriesPerConnection: 50,
		}},
		API: API{Tokens: []APIToken{
			{Name: "helpdesk", TokenFile: d + "/helpdesk.token", Scopes: []Scope{ScopeRead, ScopeRelease}, Tenants: []string{"issuer"}},
			{Name: "ops", TokenEnv: "CERTGATE_OPS_TOKEN", Scopes: []Scope{ScopeAdmin}, Tenants: []string{"*"}},
		}, SendMaxBytes: DefaultSendMaxBytes},
		Gate:       Gate{MinHumanDelay: DefaultMinHumanDelay},
		Console:    DefaultConsole(),
		DKIMEngine: "auto",
		Retention:  DefaultRetention(),
		Seeds:      Seeds{Deadline: DefaultSeedDeadline, After: DefaultSeedAfter},
		DNSCheck:   DNSCheck{Interval: Duration(time.Hour), Resolver: "127.0.0.1:5353", Timeout: Duration(2 * time.Second)},
		Log:        Log{Level: "debug", Format: "json"},
		Path:       f.path(),
	}
	if !reflect.DeepEqual(got, want) {
		gy, _ := yaml.Marshal(got)
		wy, _ := yaml.Marshal(want)
		t.Fatalf("Parse mismatch\n--- got\n%s\n--- want\n%s", gy, wy)
	}
	roundTrip(t, f, got)
}

// smtp.trusted_reserve follows max_connections unless it is written, even
// as 0.
func TestTrustedReserveDefault(t *testing.T) {
	f := newFixture(t)
	for src, want := range map[string]int{
		minimalYAML: 20,
		minimalYAML + "smtp: {max_connections: 50}\n":                     5,
		minimalYAML + "smtp: {max_connections: 50, trusted_reserve: 0}\n": 0,
	} {
		if got := mustParse(t, f, src).SMTP.TrustedReserve; got != want {
			t.Errorf("trusted_reserve %d, want %d, from\n%s", got, want, src)
		}
	}
}

func TestParseDefaults(t *testing.T) {
	f := newFixture(t)
	got := mustParse(t, f, minimalYAML)
	host, err := os.Hostname()
	if err != nil {
		t.Skip("no host name:", err)
	}
	want := &Config{
		Hostname: host,
		DataDir:  "/var/lib/certgate",
		Storage:  Storage{Driver: "sqlite"},
		SMTP: SMTP{
			Listen:                   []string{"127.0.0.1:2525"},
			MaxMessageBytes:          26214400,
			MaxRecipients:            500,
			MaxConnections:           200,
			MaxConnectionsPerIP:      20,
			MaxConnectionsPerNetwork: 50,
			TrustedReserve:           20,
			ReadTimeout:              Duration(5 * time.Minute),
			WriteTimeout:             Duration(time.Minute),
			PreAuthTimeout:           Duration(30 * time.Second),
			MaxSessionWithoutMail:    Duration(2 * time.Minute),
			AuthFailureDelay:         Duration(time.Second),
			AuthFailureLimit:         10,
			AuthFailureWindow:        Duration(15 * time.Minute),
			MemoryBudget:             DefaultMemoryBudget,
		},
		HTTP: HTTP{Listen: "127.0.0.1:8080", PublicURL: "http://127.0.0.1:8080"},
		API:  API{SendMaxBytes: DefaultSendMaxBytes},
		Tenants: []Tenant{{
			Name:                 "issuer",
			Users:                []User{{Username: "app", PasswordHash: f.hash}},
			FromDomains:          []string{"issuer.example"},
			DefaultClass:         "bulk",
			Links:                Links{Enable: "on_delivery", TTL: Duration(720 * time.Hour), MaxUses: 3},
			Classes:              []Class{ClassBulk, ClassTransactional},
			MaxRecipientsPerSend: DefaultMaxRecipientsPerSend,
		}},
		DKIM: []DKIMKey{{Domain: "issuer.example", Selector: "s1", KeyFile: filepath.Join(f.dir, "dkim.pem")}},
		Delivery: Delivery{
			Routes: []Route{{Domains: []string{"*"}, MX: true, TLS: "opportunistic"}},
			Retry: Retry{
				Schedule: []Duration{
					Duration(time.Minute), Duration(5 * time.Minute), Duration(15 * time.Minute), Duration(30 * time.Minute),
					Duration(time.Hour), Duration(2 * time.Hour), Duration(4 * time.Hour),
				},
				MaxAge: Duration(72 * time.Hour),
				Jitter: 0.1,
			},
			MXPort:         25,
			ConnectTimeout: Duration(30 * time.Second),
			CommandTimeout: Duration(5 * time.Minute),
			DataTimeout:    Duration(10 * time.Minute),
		},
		Gate:       Gate{MinHumanDelay: DefaultMinHumanDelay},
		Console:    DefaultConsole(),
		DKIMEngine: "auto",
		Retention:  DefaultRetention(),
		Seeds:      Seeds{Deadline: DefaultSeedDeadline, After: DefaultSeedAfter},
		DNSCheck:   DNSCheck{Interval: DefaultDNSCheckInterval, Timeout: DefaultDNSCheckTimeout},
		Log:        Log{Level: "info", Format: "text"},
		Path:       f.path(),
	}
	if !reflect.DeepEqual(got, want) {
		gy, _ := yaml.Marshal(got)
		wy, _ := yaml.Marshal(want)
		t.Fatalf("Parse mismatch\n--- got\n%s\n--- want\n%s", gy, wy)
	}
	roundTrip(t, f, got)

	// The same defaults for a Config built in code.
	code := &Config{Tenants: []Tenant{{Name: "issuer"}}}
	code.SetDefaults()
	if code.SMTP.MaxRecipients != 500 || code.Tenants[0].Links.MaxUses != 3 || code.Delivery.Retry.Jitter != 0.1 ||
		code.HTTP.PublicURL != "http://127.0.0.1:8080" || len(code.Delivery.Routes) != 1 {
		t.Errorf("SetDefaults: %+v", code)
	}
}

// roundTrip marshals cfg and parses it again: the result must be the same
// (compared as YAML, where a nil list and an empty one look alike).
func roundTrip(t *testing.T, f fixture, cfg *Config) {
	t.Helper()
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Parse(f.path(), out)
	if err != nil {
		t.Fatalf("round trip: %v\n%s", err, out)
	}
	out2, err := yaml.Marshal(again)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != string(out2) || again.Path != cfg.Path {
		t.Fatalf("round trip changed the configuration:\n%s\n---\n%s", out, out2)
	}
}

func TestPublicURLFromListen(t *testing.T) {
	f := newFixture(t)
	cfg := mustParse(t, f, "hostname: relay.issuer.example\nhttp: {listen: \":8081\"}\n"+minimalYAML)
	if cfg.HTTP.PublicURL != "http://relay.issuer.example:8081" {
		t.Errorf("public_url = %q", cfg.HTTP.PublicURL)
	}
	// With a listener of their own, recipients reach the pages there.
	cfg = mustParse(t, f, "hostname: relay.issuer.example\nhttp: {listen: \"127.0.0.1:8080\", gate_listen: \":8443\"}\n"+minimalYAML)
	if cfg.HTTP.PublicURL != "http://relay.issuer.example:8443" {
		t.Errorf("public_url with gate_listen = %q", cfg.HTTP.PublicURL)
	}
}

// wantProblem is one expected problem: its path, the line holding the text
// at (the first line containing it), and a part of its message.
type wantProblem struct {
	path, at, msg string
}

// edit replaces, in order, each old string by its new one (each must occur).
type edit []string

func (e edit) apply(t *testing.T, s string) string {
	t.Helper()
	for i := 0; i+1 < len(e); i += 2 {
		if !strings.Contains(s, e[i]) {
			t.Fatalf("edit: %q not in the base configuration", e[i])
		}
		s = strings.Replace(s, e[i], e[i+1], 1)
	}
	return s
}

func lineOf(t *testing.T, src, at string) int {
	t.Helper()
	if at == "" {
		return 0
	}
	for i, l := range strings.Split(src, "\n") {
		if strings.Contains(l, at) {
			return i + 1
		}
	}
	t.Fatalf("no line contains %q", at)
	return 0
}

func TestProblems(t *testing.T) {
	f := newFixture(t)
	cases := []struct {
		name string
		// base is fullYAML when empty.
		base string
		edit edit
		want []wantProblem
	}{
		// top level
		{"hostname invalid", "", edit{"hostname: relay.issuer.example", "hostname: relay_1.issuer.example"},
			[]wantProblem{{"hostname", "hostname:", "not a valid DNS name"}}},
		{"hostname IP", "", edit{"hostname: relay.issuer.example", "hostname: 192.0.2.1"},
			[]wantProblem{{"hostname", "hostname:", "IP address"}}},
		{"hostname empty", "", edit{"hostname: relay.issuer.example", `hostname: ""`},
			[]wantProblem{{"hostname", "hostname:", "must not be empty"}}},
		{"storage driver", "", edit{"driver: sqlite", "driver: mysql"},
			[]wantProblem{{"storage.driver", "driver: mysql", `"mysql" is not a storage driver; this build has sqlite, postgres`}}},
		{"postgres without dsn", "", edit{"driver: sqlite", "driver: postgres"},
			[]wantProblem{{"storage", "storage:", "set dsn_file or dsn_env"}}},
		{"postgres both dsn", "", edit{"driver: sqlite", "{driver: postgres, dsn_file: {{dir}}/helpdesk.token, dsn_env: PG}"},
			[]wantProblem{{"storage", "storage:", "only one of dsn_file and dsn_env"}}},
		{"postgres dsn file missing", "", edit{"driver: sqlite", "{driver: postgres, dsn_file: /nonexistent/dsn}"},
			[]wantProblem{{"storage.dsn_file", "dsn_file:", "does not exist"}}},
		{"postgres dsn_env holds a value", "", edit{"driver: sqlite", "driver: postgres\n  dsn_env: postgres://u:hunter2@db/x"},
			[]wantProblem{{"storage.dsn_env", "dsn_env:", "name of an environment variable"}}},
		{"sqlite with dsn", "", edit{"driver: sqlite", "driver: sqlite\n  dsn_env: PG"},
			[]wantProblem{{"storage.dsn_env", "dsn_env:", "only for driver postgres"}}},
		{"log", "", edit{"level: debug", "level: verbose", "format: json", "format: xml"},
			[]wantProblem{{"log.level", "level: verbose", "not one of"}, {"log.format", "format: xml", "not text or json"}}},

		// smtp
		{"listen without port", "", edit{`"[::1]:2525"`, `"[::1]"`},
			[]wantProblem{{"smtp.listen[1]", "listen:", "not host:port"}}},
		{"listen empty", "", edit{`listen: ["127.0.0.1:2525", "[::1]:2525"]`, "listen: []"},
			[]wantProblem{{"smtp.listen", "listen: []", "at least one"}}},
		{"listen twice", "", edit{`"[::1]:2525"`, `"127.0.0.1:2525"`},
			[]wantProblem{{"smtp.listen[1]", "listen:", "listed twice"}}},
		{"memory budget below five messages in its mail share", "", edit{"max_message_bytes: 10485760", "max_message_bytes: 10485760\n  memory_budget: 60000000"},
			[]wantProblem{{"smtp.memory_budget", "memory_budget:", "give at least 69905067"}}},
		{"tls key missing", "", edit{"    key_file: {{dir}}/tls.key\n", ""},
			[]wantProblem{{"smtp.tls.key_file", "  tls:", "required when cert_file"}}},
		{"tls cert file missing", "", edit{"cert_file: {{dir}}/tls.crt", "cert_file: {{dir}}/nope.crt"},
			[]wantProblem{{"smtp.tls.cert_file", "cert_file:", "does not exist"}}},
		{"tls cert is a directory", "", edit{"cert_file: {{dir}}/tls.crt", "cert_file: {{dir}}"},
			[]wantProblem{{"smtp.tls.cert_file", "cert_file:", "is a directory"}}},
		{"tls key does not match", "", edit{"key_file: {{dir}}/tls.key", "key_file: {{dir}}/other.key"},
			[]wantProblem{{"smtp.tls", "  tls:", "cannot load the certificate and key"}}},
		{"limits", "", edit{"max_message_bytes: 10485760", "max_message_bytes: -1", "max_recipients: 100", "max_recipients: 0",
			"max_connections: 50", "max_connections: 0", "max_connections_per_ip: 5", "max_connections_per_ip: -3",
			"max_connections_per_network: 12", "max_connections_per_network: 0", "auth_failure_limit: 4", "auth_failure_limit: 0",
			"auth_concurrency: 3", "auth_concurrency: -1"},
			[]wantProblem{
				{"smtp.max_message_bytes", "max_message_bytes:", "must be positive"},
				{"smtp.max_recipients", "max_recipients:", "must be positive"},
				{"smtp.max_connections", "max_connections:", "must be positive"},
				{"smtp.max_connections_per_ip", "max_connections_per_ip:", "must be positive"},
				{"smtp.max_connections_per_network", "max_connections_per_network:", "must be positive"},
				{"smtp.auth_failure_limit", "auth_failure_limit:", "must be positive"},
				{"smtp.auth_concurrency", "auth_concurrency:", "must not be negative"},
			}},
		{"trusted reserve of every connection", "", edit{"trusted_reserve: 8", "trusted_reserve: 50"},
			[]wantProblem{{"smtp.trusted_reserve", "trusted_reserve:", "less than max_connections (50)"}}},
		{"trusted reserve negative", "", edit{"trusted_reserve: 8", "trusted_reserve: -1"},
			[]wantProblem{{"smtp.trusted_reserve", "trusted_reserve:", "at least 0"}}},
		{"timeouts", "", edit{"read_timeout: 2m", "read_timeout: 0s", "write_timeout: 30s", "write_timeout: -1s", "auth_failure_delay: 2s", "auth_failure_delay: -1s",
			"pre_auth_timeout: 20s", "pre_auth_timeout: 0s", "max_session_without_mail: 90s", "max_session_without_mail: -5s",
			"auth_failure_window: 1h", "auth_failure_window: 0s"},
			[]wantProblem{
				{"smtp.read_timeout", "read_timeout:", "positive duration"},
				{"smtp.write_timeout", "write_timeout:", "positive duration"},
				{"smtp.pre_auth_timeout", "pre_auth_timeout:", "positive duration"},
				{"smtp.max_session_without_mail", "max_session_without_mail:", "positive duration"},
				{"smtp.auth_failure_delay", "auth_failure_delay:", "must not be negative"},
				{"smtp.auth_failure_window", "auth_failure_window:", "positive duration"},
			}},
		{"duration without unit", "", edit{"read_timeout: 2m", "read_timeout: 30"},
			[]wantProblem{{"smtp.read_timeout", "read_timeout:", `"30" has no unit`}}},
		{"duration in days", "", edit{"max_age: 48h", "max_age: 3d"},
			[]wantProblem{{"delivery.retry.max_age", "max_age:", "no day or week unit"}}},

		// http
		{"http listen", "", edit{`listen: "127.0.0.1:8080"`, `listen: "127.0.0.1:http-alt"`},
			[]wantProblem{{"http.listen", "127.0.0.1:http-alt", "port must be a number"}}},
		{"gate_listen", "", edit{`gate_listen: "127.0.0.1:8081"`, `gate_listen: "8081"`},
			[]wantProblem{{"http.gate_listen", "gate_listen:", "not host:port"}}},
		{"gate_listen is listen", "", edit{`gate_listen: "127.0.0.1:8081"`, `gate_listen: "127.0.0.1:8080"`},
			[]wantProblem{{"http.gate_listen", "gate_listen:", "is http.listen too"}}},
		{"public_url scheme", "", edit{`public_url: "https://gate.issuer.example/"`, `public_url: "ftp://gate.issuer.example"`},
			[]wantProblem{{"http.public_url", "public_url:", "not an absolute http(s) URL"}}},
		{"public_url relative", "", edit{`public_url: "https://gate.issuer.example/"`, `public_url: "/gate"`},
			[]wantProblem{{"http.public_url", "public_url:", "not an absolute"}}},
		{"public_url credentials", "", edit{`public_url: "https://gate.issuer.example/"`, `public_url: "https://u:hunter2@gate.issuer.example/"`},
			[]wantProblem{{"http.public_url", "public_url:", "must not contain a user name or password"}}},

		// tenants
		{"no tenants", minimalYAML, edit{"tenants:\n  - name: issuer\n    users: [{username: app, password_hash: \"{{hash}}\"}]\n    from_domains: [issuer.example]\n", "tenants: []\n"},
			[]wantProblem{{"tenants", "tenants:", "at least one tenant"}}},
		{"tenant name missing", "", edit{"  - name: reseller\n", "  - name: \"\"\n"},
			[]wantProblem{{"tenants[1].name", `name: ""`, "required"}}},
		{"tenant name twice", "", edit{"name: reseller", "name: issuer # again"},
			[]wantProblem{{"tenants[1].name", "# again", "already the name of tenants[0]"}}},
		{"username twice across tenants", "", edit{"  - name: reseller\n", "  - name: reseller\n    users: [{username: batch, password_hash: \"{{hash}}\"}]\n"},
			[]wantProblem{{"tenants[1].users[0].username", "users: [{username: batch", "already a user of tenants[0]"}}},
		{"username missing", "", edit{"username: app", "username: \"\""},
			[]wantProblem{{"tenants[0].users[0].username", `username: ""`, "required"}}},
		{"user with both hashes", "", edit{"        password_hash: \"{{hash}}\"\n", "        password_hash: \"{{hash}}\"\n        password_hash_file: {{dir}}/batch.hash\n"},
			[]wantProblem{{"tenants[0].users[0]", "username: app", "only one of password_hash and password_hash_file"}}},
		{"user without hash", "", edit{"        password_hash: \"{{hash}}\"\n", ""},
			[]wantProblem{{"tenants[0].users[0]", "username: app", "set password_hash or password_hash_file"}}},
		{"hash not bcrypt", "", edit{`password_hash: "{{hash}}"`, `password_hash: "{SHA}secret"`},
			[]wantProblem{{"tenants[0].users[0].password_hash", "password_hash:", "this is SHA-1 (htpasswd -s), not bcrypt"}}},
		{"hash not bcrypt at all", "", edit{`password_hash: "{{hash}}"`, `password_hash: "hunter2"`},
			[]wantProblem{{"tenants[0].users[0].password_hash", "password_hash:", "not a bcrypt hash: it must start with $2a$, $2b$ or $2y$ (certgate passwd makes one)"}}},
		// What htpasswd -nbB prints, pasted whole.
		{"hash with htpasswd's user", "", edit{`password_hash: "{{hash}}"`, `password_hash: "app:$2y$05$E5nAyUJPdLW8Rdfyzw9ZAOOhJWI/gRh3wbLQZ2sqGBNsGbWlXfG9i"`},
			[]wantProblem{{"tenants[0].users[0].password_hash", "password_hash:", `this is an htpasswd line, user:hash; keep only the hash, what follows "app:"; and bcrypt cost 5 is below 10`}}},
		{"hash bad cost", "", edit{`password_hash: "{{hash}}"`, `password_hash: "$2a$99$abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz0"`},
			[]wantProblem{{"tenants[0].users[0].password_hash", "password_hash:", "not a valid bcrypt hash"}}},
		{"hash truncated", "", edit{`password_hash: "{{hash}}"`, `password_hash: "$2a$10$abc"`},
			[]wantProblem{{"tenants[0].users[0].password_hash", "password_hash:", "60 characters"}}},
		{"hash file holds no hash", "", edit{"batch.hash", "bad.hash"},
			[]wantProblem{{"tenants[0].users[1].password_hash_file", "password_hash_file:", "not a bcrypt hash"}}},
		{"hash file missing", "", edit{"batch.hash", "missing.hash"},
			[]wantProblem{{"tenants[0].users[1].password_hash_file", "password_hash_file:", "does not exist"}}},
		{"trusted networks", "", edit{`["10.1.2.3/16", "192.0.2.7"]`, `["10.1.2.3/33", "0.0.0.0/0", "::1"]`},
			[]wantProblem{
				{"tenants[0].trusted_networks[0]", "trusted_networks:", "not a CIDR"},
				{"tenants[0].trusted_networks[1]", "trusted_networks:", "trusts every address"},
			}},
		{"no way to submit", "", edit{`    trusted_networks: ["2001:db8::/32"]` + "\n", ""},
			[]wantProblem{{"tenants[1]", "- name: reseller", "no way to submit"}}},
		{"from domains empty", "", edit{"from_domains: [reseller.example]", "from_domains: []"},
			[]wantProblem{{"tenants[1].from_domains", "from_domains: []", "at least one domain"}}},
		{"from domain invalid", "", edit{"[issuer.example, Mail.Issuer.Example.]", "[issuer.example, bad_name.example, localhost]"},
			[]wantProblem{
				{"tenants[0].from_domains[1]", "bad_name.example", "not a valid domain name"},
				{"tenants[0].from_domains[2]", "bad_name.example", "not a full domain name"},
			}},
		{"from domain not aligned", "", edit{"[issuer.example, Mail.Issuer.Example.]", "\n      - issuer.example\n      - other.example"},
			[]wantProblem{{"tenants[0].from_domains[1]", "- other.example", "no DKIM key aligned with other.example; mail from it would fail DMARC"}}},
		{"domain in two tenants", "", edit{"from_domains: [reseller.example]", "from_domains: [reseller.example, issuer.example]"},
			[]wantProblem{{"tenants[1].from_domains[1]", "from_domains: [reseller.example, issuer.example]", "already claimed by tenants[0] (issuer)"}}},
		{"nested domain without its own key", "", edit{"from_domains: [reseller.example]", "from_domains: [reseller.example, sub.issuer.example]"},
			[]wantProblem{{"tenants[1].from_domains[1]", "from_domains: [reseller.example, sub.issuer.example]", "no DKIM key aligned with sub.issuer.example"}}},
		{"trusted networks overlap", "", edit{`trusted_networks: ["2001:db8::/32"]`, `trusted_networks: ["2001:db8::/32", "10.1.200.0/24"]`},
			[]wantProblem{{"tenants[1].trusted_networks[1]", `trusted_networks: ["2001:db8::/32", "10.1.200.0/24"]`, "overlaps 10.1.0.0/16 of tenants[0] (issuer)"}}},
		{"default class", "", edit{"default_class: transactional", "default_class: urgent"},
			[]wantProblem{{"tenants[0].default_class", "default_class:", "not bulk or transactional"}}},
		{"links", "", edit{`gate: ["https://issuer.example/download/"]`, `gate: ["https://issuer.example/download/", "issuer.example/x", "ftp://issuer.example/"]`,
			"enable: on_release", "enable: later", "ttl: 48h", "ttl: 0s", "max_uses: 5", "max_uses: 0"},
			[]wantProblem{
				{"tenants[0].links.gate[1]", "gate:", "not an absolute http(s) URL"},
				{"tenants[0].links.gate[2]", "gate:", "not an absolute http(s) URL"},
				{"tenants[0].links.enable", "enable:", "not one of on_release"},
				{"tenants[0].links.ttl", "ttl:", "positive duration"},
				{"tenants[0].links.max_uses", "max_uses:", "at least 1"},
			}},

		// dkim
		{"dkim fields", "", edit{"  - domain: issuer.example\n    selector: s2026\n    key_file: {{dir}}/dkim.pem",
			"  - domain: issuer.example\n    selector: s_2026\n    key_file: {{dir}}/nope.pem"},
			[]wantProblem{
				{"dkim[0].selector", "selector: s_2026", "not a valid selector"},
				{"dkim[0].key_file", "key_file: {{dir}}/nope.pem", "does not exist"},
			}},
		{"dkim name too long", "", edit{"    selector: s2026\n", "    selector: sxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.sxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.sxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.sxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n"},
			[]wantProblem{{"dkim[0].selector", "selector: sxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.sxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.sxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.sxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "too long for a DNS name"}}},
		{"dkim key not a key", "", edit{"key_file: {{dir}}/dkim.pem", "key_file: {{dir}}/helpdesk.token"},
			[]wantProblem{{"dkim[0].key_file", "key_file: {{dir}}/helpdesk.token", "no PEM private key found"}}},
		{"dkim key is a certificate", "", edit{"key_file: {{dir}}/dkim.pem", "key_file: {{dir}}/tls.crt"},
			[]wantProblem{{"dkim[0].key_file", "key_file: {{dir}}/tls.crt", "no PEM private key found"}}},
		{"dkim domain and selector twice", "", edit{"{domain: mail.reseller.example, selector: s1,", "{domain: Issuer.Example, selector: S2026,"},
			[]wantProblem{
				{"dkim[1]", "{domain: Issuer.Example", "already defined by dkim[0]"},
				{"tenants[1].from_domains[0]", "from_domains: [reseller.example]", "no DKIM key aligned with reseller.example"},
			}},
		{"dkim domain invalid", "", edit{"{domain: mail.reseller.example,", "{domain: reseller,"},
			[]wantProblem{
				{"dkim[1].domain", "{domain: reseller,", "not a full domain name"},
				{"tenants[1].from_domains[0]", "from_domains: [reseller.example]", "no DKIM key aligned"},
			}},

		// delivery
		{"route domain patterns", "", edit{"domains: [partner.example]", "domains: [partner.example, .sub.partner.example, \"*.other.example\", bad_one.example]"},
			[]wantProblem{
				{"delivery.routes[0].domains[2]", "domains: [partner.example", `write a suffix as ".other.example"`},
				{"delivery.routes[0].domains[3]", "domains: [partner.example", "not a valid domain name"},
			}},
		{"route without domains", "", edit{`{domains: ["*"], mx: true}`, `{domains: [], mx: true}`},
			[]wantProblem{{"delivery.routes[1].domains", "{domains: [], mx: true}", "at least one domain"}}},
		{"route mx and host", "", edit{`{domains: ["*"], mx: true}`, `{domains: ["*"], mx: true, host: "a.example:25"}`},
			[]wantProblem{{"delivery.routes[1]", `{domains: ["*"]`, "mx: true or host, not both"}}},
		{"route neither mx nor host", "", edit{`{domains: ["*"], mx: true}`, `{domains: ["*"]}`},
			[]wantProblem{{"delivery.routes[1]", `{domains: ["*"]`, "set mx: true"}}},
		{"route host without port", "", edit{`host: "smtp.partner.example:587"`, `host: "smtp.partner.example"`},
			[]wantProblem{{"delivery.routes[0].host", "host:", "not host:port"}}},
		{"route tls and ca", "", edit{"tls: required", "tls: always", "ca_file: {{dir}}/tls.crt", "ca_file: {{dir}}/dkim.pem"},
			[]wantProblem{
				{"delivery.routes[0].tls", "tls: always", "not one of required, opportunistic, none"},
				{"delivery.routes[0].ca_file", "ca_file:", "no PEM certificate"},
			}},
		{"route auth in clear", "", edit{"tls: required", "tls: none"},
			[]wantProblem{{"delivery.routes[0].tls", "tls: none", "password in clear"}}},
		{"route auth secrets", "", edit{"        password_env: PARTNER_SMTP_PASSWORD\n", "        password_env: PARTNER_SMTP_PASSWORD\n        password_file: /x\n"},
			[]wantProblem{{"delivery.routes[0].auth", "auth:", "only one of password_file and password_env"}}},
		{"route auth without host", "", edit{`{domains: ["*"], mx: true}`, `{domains: ["*"], mx: true, auth: {username: u, password_env: P}}`},
			[]wantProblem{{"delivery.routes[1].auth", `{domains: ["*"]`, "need host"}}},
		{"route after catch-all", "", edit{`    - {domains: ["*"], mx: true}`, `    - {domains: ["*"], mx: true}` + "\n    - {domains: [late.example], mx: true}"},
			[]wantProblem{{"delivery.routes[2]", "late.example", "never used"}}},
		{"domain routed twice", "", edit{`    - {domains: ["*"], mx: true}`, `    - {domains: [Partner.Example], mx: true}` + "\n    - {domains: [\"*\"], mx: true}"},
			[]wantProblem{{"delivery.routes[1].domains[0]", "Partner.Example", "routed by delivery.routes[0] already"}}},
		{"retry", "", edit{"schedule: [30s, 2m, 10m]", "schedule: [30s, -2m]", "max_age: 48h", "max_age: 0s", "jitter: 0", "jitter: 1.5", "mx_port: 2526", "mx_port: 70000"},
			[]wantProblem{
				{"delivery.retry.schedule[1]", "schedule:", "positive duration"},
				{"delivery.retry.max_age", "max_age:", "positive duration"},
				{"delivery.retry.jitter", "jitter:", "at least 0 and below 1"},
				{"delivery.mx_port", "mx_port:", "from 1 to 65535"},
			}},
		{"retry schedule empty", "", edit{"schedule: [30s, 2m, 10m]", "schedule: []"},
			[]wantProblem{{"delivery.retry.schedule", "schedule:", "at least one step"}}},
		{"delivery timeouts", "", edit{"connect_timeout: 10s", "connect_timeout: 0s", "data_timeout: 5m", "data_timeout: -5m"},
			[]wantProblem{
				{"delivery.connect_timeout", "connect_timeout:", "positive duration"},
				{"delivery.data_timeout", "data_timeout:", "positive duration"},
			}},
		{"static dns", "", edit{`mx1.partner.example: [127.0.0.1, "::1"]`, `mx1.partner.example: [127.0.0.1, localhost]`,
			"partner.example: [mx1.partner.example]", "partner.example: [mx1.partner.example, mx2.partner.example]"},
			[]wantProblem{
				{`delivery.static_dns.mx["partner.example"][1]`, "partner.example: [mx1", "no address in delivery.static_dns.hosts"},
				{`delivery.static_dns.hosts["mx1.partner.example"][1]`, "mx1.partner.example: [", "not an IP address"},
			}},

		// providers
		{"provider fields", "", edit{"name: gmail", "name: Gmail", `".google.com", "*zimbra*"`, `".google.com", "**", "-bad"`,
			"connection_limit: 5", "connection_limit: -1", "max_deliveries_per_connection: 50", "max_deliveries_per_connection: -2"},
			[]wantProblem{
				{"providers[0].name", "name: Gmail", "lower-case letters"},
				{"providers[0].mx_suffixes[1]", "mx_suffixes:", "matches every host"},
				{"providers[0].mx_suffixes[2]", "mx_suffixes:", "neither a suffix"},
				{"providers[0].connection_limit", "connection_limit:", "must not be negative"},
				{"providers[0].max_deliveries_per_connection", "max_deliveries_per_connection:", "must not be negative"},
			}},
		{"provider twice", "", edit{"providers:\n", "providers:\n  - {name: gmail, connection_limit: 2}\n"},
			[]wantProblem{{"providers[1].name", "  - name: gmail", "already the name of providers[0]"}}},
		{"provider name starts with a dot", "", edit{"name: gmail", "name: .gmail"},
			[]wantProblem{{"providers[0].name", "name: .gmail", "starting with a letter or digit"}}},
		{"new provider matches nothing", "", edit{"providers:\n", "providers:\n  - {name: partner, connection_limit: 2}\n"},
			[]wantProblem{{"providers[0]", "  - {name: partner", "needs domains or mx_suffixes"}}},
		{"catch-all with domains", "", edit{"providers:\n", "providers:\n  - name: default\n    domains: [x.example]\n    mx_suffixes: [.x.example]\n"},
			[]wantProblem{
				{"providers[0].domains", "domains: [x.example]", "takes limits only"},
				{"providers[0].mx_suffixes", "mx_suffixes: [.x.example]", "takes limits only"},
			}},
		{"rate", "", edit{"max_message_rate: 300/min", "max_message_rate: 300/fortnight"},
			[]wantProblem{{"providers[0].max_message_rate", "max_message_rate:", `unknown period "fortnight"`}}},

		// api
		{"api tokens", "", edit{"{name: ops, token_env: CERTGATE_OPS_TOKEN, scopes: [admin],", "{name: helpdesk, token_env: CERTGATE_OPS_TOKEN, token_file: /x, scopes: [write],"},
			[]wantProblem{
				{"api.tokens[1].name", "{name: helpdesk, token_env", "already the name of api.tokens[0]"},
				{"api.tokens[1]", "{name: helpdesk, token_env", "only one of token_file and token_env"},
				{"api.tokens[1].scopes[0]", "{name: helpdesk, token_env", `"write" is not one of read, release, send, admin`},
			}},
		{"api token without secret or scopes", "", edit{`{name: ops, token_env: CERTGATE_OPS_TOKEN, scopes: [admin], tenants: ["*"]}`, `{name: ops, tenants: ["*"]}`},
			[]wantProblem{
				{"api.tokens[1]", "{name: ops, tenants", "set token_file or token_env"},
				{"api.tokens[1].scopes", "{name: ops, tenants", "at least one of read, release, send, admin"},
			}},
		{"api token file missing", "", edit{"token_file: {{dir}}/helpdesk.token", "token_file: {{dir}}/nope.token"},
			[]wantProblem{{"api.tokens[0].token_file", "token_file:", "does not exist"}}},
		// With two tenants, seeing both must be asked for: a token that
		// says nothing is refused at its own line.
		{"api token tenants left out", "", edit{"      tenants: [issuer]\n", "", `, tenants: ["*"]}`, "}"},
			[]wantProblem{
				{"api.tokens[0].tenants", "- name: helpdesk", `required with more than one tenant: list those this token covers, such as [issuer], or ["*"]`},
				{"api.tokens[1].tenants", "{name: ops,", "required with more than one tenant"},
			}},
		{"api token tenants", "", edit{"tenants: [issuer]", "tenants: [issuer, nobody, issuer]", `tenants: ["*"]}`, `tenants: [reseller, "*"]}`},
			[]wantProblem{
				{"api.tokens[0].tenants[1]", "tenants: [issuer, nobody", `"nobody" is not the name of a tenant`},
				{"api.tokens[0].tenants[2]", "tenants: [issuer, nobody", `"issuer" is listed twice`},
				{"api.tokens[1].tenants[1]", "{name: ops,", `"*" means every tenant: list it alone`},
			}},
		{"api token tenants empty", "", edit{"tenants: [issuer]", "tenants: []"},
			[]wantProblem{{"api.tokens[0].tenants", "tenants: []", `list the tenants this token covers, or ["*"]`}}},

		// decoding
		{"unknown key, misspelt", "", edit{"max_recipients: 100", "max_recipient: 100"},
			[]wantProblem{{"smtp.max_recipient", "max_recipient:", `unknown key "max_recipient"; did you mean "max_recipients"?`}}},
		{"unknown key, misplaced", "", edit{"hostname: relay.issuer.example", "hostname: relay.issuer.example\nmax_recipients: 10"},
			[]wantProblem{{"max_recipients", "max_recipients: 10", "belongs under smtp"}}},
		{"unknown key in a list item", "", edit{"selector: s2026", "selector: s2026\n    algorithm: rsa"},
			[]wantProblem{{"dkim[0].algorithm", "algorithm:", `unknown key "algorithm"`}}},
		{"wrong type, number", "", edit{"max_recipients: 100", "max_recipients: many"},
			[]wantProblem{{"smtp.max_recipients", "max_recipients:", "expected a whole number, got the string `many`"}}},
		{"wrong type, string for list", "", edit{`listen: ["127.0.0.1:2525", "[::1]:2525"]`, `listen: "127.0.0.1:2525"`},
			[]wantProblem{{"smtp.listen", "listen: \"127", "expected a list"}}},
		{"wrong type, bool", "", edit{`mx: true}`, `mx: maybe}`},
			[]wantProblem{{"delivery.routes[1].mx", "mx: maybe", "expected true or false"}}},
		{"wrong type in a list item is not reported twice", "", edit{"from_domains: [reseller.example]", "from_domains: [reseller.example, {a: b}]"},
			[]wantProblem{{"tenants[1].from_domains[1]", "from_domains: [reseller", "expected a string, got a mapping"}}},
		{"duplicate key", "", edit{"max_recipients: 100", "max_recipients: 100\n  max_recipients: 200"},
			[]wantProblem{{"smtp.max_recipients", "max_recipients: 200", "duplicate key"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			base := tc.base
			if base == "" {
				base = fullYAML
			}
			src := f.expand(tc.edit.apply(t, base))
			_, err := Parse(f.path(), []byte(src))
			var errs *Errors
			if !errors.As(err, &errs) {
				t.Fatalf("Parse: want *Errors, got %v", err)
			}
			checkProblems(t, f, src, errs, tc.want)
		})
	}
}

func checkProblems(t *testing.T, f fixture, src string, errs *Errors, want []wantProblem) {
	t.Helper()
	matched := make([]bool, len(errs.Problems))
	for _, w := range want {
		line := lineOf(t, src, f.expand(w.at))
		found := false
		for i, p := range errs.Problems {
			if !matched[i] && p.Path == w.path && p.Line == line && strings.Contains(p.Msg, f.expand(w.msg)) {
				matched[i], found = true, true
				break
			}
		}
		if !found {
			t.Errorf("missing problem %s (line %d) %q", w.path, line, w.msg)
		}
	}
	for i, p := range errs.Problems {
		if !matched[i] {
			t.Errorf("unexpected problem: %s", p)
		}
		if p.File != f.path() {
			t.Errorf("problem file = %q", p.File)
		}
	}
	if t.Failed() {
		t.Logf("all problems:\n%v", errs)
	}
}

func TestManyProblemsAtOnce(t *testing.T) {
	f := newFixture(t)
	src := f.expand(edit{
		"hostname: relay.issuer.example", "hostname: -bad-",
		"max_recipients: 100", "max_recipients: lots",
		"read_timeout: 2m", "read_timeout: 90",
		"level: debug", "level: loud",
		"default_class: transactional", "default_klass: transactional",
		`"192.0.2.7"`, `"192.0.2.300"`,
		"max_message_rate: 300/min", "max_message_rate: 300",
		"scopes: [admin]", "scopes: [root]",
	}.apply(t, fullYAML))
	_, err := Parse(f.path(), []byte(src))
	var errs *Errors
	if !errors.As(err, &errs) {
		t.Fatalf("want *Errors, got %v", err)
	}
	checkProblems(t, f, src, errs, []wantProblem{
		{"hostname", "hostname:", "not a valid DNS name"},
		{"smtp.max_recipients", "max_recipients:", "expected a whole number"},
		{"smtp.read_timeout", "read_timeout:", "has no unit"},
		{"tenants[0].default_klass", "default_klass:", `did you mean "default_class"?`},
		{"tenants[0].trusted_networks[1]", "192.0.2.300", "not a CIDR"},
		{"providers[0].max_message_rate", "max_message_rate:", "has no period"},
		{"api.tokens[1].scopes[0]", "scopes: [root]", `"root" is not one of`},
		{"log.level", "level: loud", "not one of"},
	})

	// Error() prints one problem per line, in file order.
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(errs.Problems) {
		t.Fatalf("Error() has %d lines for %d problems", len(lines), len(errs.Problems))
	}
	wantFirst := f.path() + ":2: hostname: "
	if !strings.HasPrefix(lines[0], wantFirst) {
		t.Errorf("first line %q, want prefix %q", lines[0], wantFirst)
	}
}

func TestSyntaxAndDocumentProblems(t *testing.T) {
	f := newFixture(t)
	cases := []struct {
		name, src string
		line      int
		msg       string
	}{
		{"bad indentation", "hostname: a.example\nsmtp:\n  listen: [x\n", 0, "invalid YAML"},
		{"tab", "hostname: a.example\nsmtp:\n\tlisten: []\n", 3, "invalid YAML"},
		{"two documents", f.expand(minimalYAML) + "---\nhostname: b.example\n", 7, "only one YAML document"},
		{"not a mapping", "- a\n- b\n", 1, "expected a mapping"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(f.path(), []byte(tc.src))
			var errs *Errors
			if !errors.As(err, &errs) || len(errs.Problems) != 1 {
				t.Fatalf("want one problem, got %v", err)
			}
			p := errs.Problems[0]
			if (tc.line != 0 && p.Line != tc.line) || !strings.Contains(p.Msg, tc.msg) || p.File != f.path() {
				t.Errorf("got %s", p)
			}
		})
	}

	// An empty file is a configuration without tenants.
	_, err := Parse("empty.yaml", nil)
	if err == nil || !strings.Contains(err.Error(), "empty.yaml: tenants: define at least one tenant") {
		t.Errorf("empty file: %v", err)
	}
}

func TestLoad(t *testing.T) {
	f := newFixture(t)
	if err := os.WriteFile(f.path(), []byte(f.expand(minimalYAML)), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(f.path())
	if err != nil || cfg.Path != f.path() {
		t.Fatalf("Load: %v", err)
	}
	_, err = Load(filepath.Join(f.dir, "missing.yaml"))
	var errs *Errors
	if !errors.As(err, &errs) || !strings.Contains(err.Error(), "missing.yaml: cannot read the file") {
		t.Errorf("Load of a missing file: %v", err)
	}
}

func TestValidateInCode(t *testing.T) {
	f := newFixture(t)
	cfg := mustParse(t, f, fullYAML)
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate of a parsed config: %v", err)
	}
	cfg.Tenants[0].DefaultClass = "urgent"
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "tenants[0].default_class: \"urgent\"") {
		t.Errorf("Validate: %v", err)
	}
}

func TestDuration(t *testing.T) {
	cases := []struct {
		in   string
		want time.Duration
		err  string
	}{
		{"90s", 90 * time.Second, ""},
		{"1h30m", 90 * time.Minute, ""},
		{"1.5h", 90 * time.Minute, ""},
		{"250ms", 250 * time.Millisecond, ""},
		{"0", 0, ""},
		{"-5s", -5 * time.Second, ""},
		{"90", 0, "has no unit"},
		{"1.5", 0, "has no unit"},
		{"\"\"", 0, "empty duration"},
		{"3d", 0, "no day or week unit"},
		{"1w", 0, "no day or week unit"},
		{"soon", 0, "not a Go duration"},
		{"[1s]", 0, "expected a duration"},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			var v struct {
				D Duration `yaml:"d"`
			}
			err := yaml.Unmarshal([]byte("d: "+tc.in), &v)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("want error %q, got %v", tc.err, err)
				}
				if !strings.Contains(err.Error(), "line 1: column 4:") {
					t.Errorf("error without position: %v", err)
				}
				return
			}
			if err != nil || v.D.D() != tc.want {
				t.Fatalf("got %v, %v; want %v", v.D, err, tc.want)
			}
			out, _ := yaml.Marshal(v)
			if want := "d: " + tc.want.String() + "\n"; string(out) != want {
				t.Errorf("marshal: %q, want %q", out, want)
			}
		})
	}
}

func TestRate(t *testing.T) {
	cases := []struct {
		in   string
		want Rate
		str  string
		err  string
	}{
		{"300/min", Rate{300, time.Minute}, "300/min", ""},
		{"10/s", Rate{10, time.Second}, "10/s", ""},
		{"10/sec", Rate{10, time.Second}, "10/s", ""},
		{"10/second", Rate{10, time.Second}, "10/s", ""},
		{"60/m", Rate{60, time.Minute}, "60/min", ""},
		{"5000/h", Rate{5000, time.Hour}, "5000/h", ""},
		{"5000/hour", Rate{5000, time.Hour}, "5000/h", ""},
		{"8640/day", Rate{8640, 24 * time.Hour}, "8640/day", ""},
		{" 20 / MIN ", Rate{20, time.Minute}, "20/min", ""},
		{"0", Rate{}, "unlimited", ""},
		{"unlimited", Rate{}, "unlimited", ""},
		{"Unlimited", Rate{}, "unlimited", ""},
		{"300", Rate{}, "", "has no period"},
		{"0/min", Rate{}, "", "would stop all traffic"},
		{"fast", Rate{}, "", "is not a rate"},
		{"1.5", Rate{}, "", "is not a rate"},
		{"-1/s", Rate{}, "", "whole number"},
		{"+1/s", Rate{}, "", "whole number"},
		{"1.5/s", Rate{}, "", "whole number"},
		{"99999999999999999999/s", Rate{}, "", "whole number"},
		{"10/fortnight", Rate{}, "", "unknown period"},
		{"/s", Rate{}, "", "whole number"},
		{"", Rate{}, "", "empty rate"},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseRate(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("want error %q, got %v, %v", tc.err, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
			if got.String() != tc.str {
				t.Errorf("String = %q, want %q", got.String(), tc.str)
			}
			if again, err := ParseRate(got.String()); err != nil || again != got {
				t.Errorf("String does not parse back: %v, %v", again, err)
			}
		})
	}

	// Through YAML, with the position of the value.
	var v struct {
		R Rate `yaml:"r"`
	}
	if err := yaml.Unmarshal([]byte("r: 300/min"), &v); err != nil || v.R != (Rate{300, time.Minute}) {
		t.Errorf("yaml: %v, %v", v.R, err)
	}
	if err := yaml.Unmarshal([]byte("r: 300"), &v); err == nil || !strings.Contains(err.Error(), "line 1: column 4:") {
		t.Errorf("yaml bare number: %v", err)
	}
	if out, _ := yaml.Marshal(struct {
		R Rate `yaml:"r"`
	}{Rate{10, time.Second}}); string(out) != "r: 10/s\n" {
		t.Errorf("marshal: %q", out)
	}
}

func TestReadSecret(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "secret")
	if err := os.WriteFile(file, []byte("  s3cret-value \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CERTGATE_TEST_SECRET", "env-s3cret\n")
	t.Setenv("CERTGATE_TEST_BLANK", " ")

	cases := []struct {
		name, file, env, want, err string
	}{
		{"file", file, "", "s3cret-value", ""},
		{"env", "", "CERTGATE_TEST_SECRET", "env-s3cret", ""},
		{"missing file", filepath.Join(dir, "nope"), "", "", "secret file " + filepath.Join(dir, "nope") + ": no such file"},
		{"empty file", empty, "", "", "secret file " + empty + " is empty"},
		{"unset env", "", "CERTGATE_TEST_UNSET", "", "environment variable CERTGATE_TEST_UNSET is not set"},
		{"blank env", "", "CERTGATE_TEST_BLANK", "", "environment variable CERTGATE_TEST_BLANK is empty"},
		{"both", file, "CERTGATE_TEST_SECRET", "", "not both"},
		{"neither", "", "", "", "neither a file nor an environment variable"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ReadSecret(tc.file, tc.env)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("want error %q, got %q, %v", tc.err, got, err)
				}
				if strings.Contains(err.Error(), "s3cret") {
					t.Errorf("error reveals the secret: %v", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}

	// The typed helpers read through ReadSecret.
	if s, err := (APIToken{TokenFile: file}).Token(); err != nil || s != "s3cret-value" {
		t.Errorf("Token: %q, %v", s, err)
	}
	if s, err := (RouteAuth{PasswordEnv: "CERTGATE_TEST_SECRET"}).Password(); err != nil || s != "env-s3cret" {
		t.Errorf("Password: %q, %v", s, err)
	}
	if _, err := (Storage{Driver: "postgres"}).DSN(); err == nil {
		t.Error("DSN without a source: no error")
	}
}

func TestSecretsNeverEchoed(t *testing.T) {
	f := newFixture(t)
	src := f.expand(edit{
		"password_env: PARTNER_SMTP_PASSWORD", "password_env: \"hunter2 pass\"",
		`public_url: "https://gate.issuer.example/"`, `public_url: "https://admin:hunter2@gate.issuer.example/"`,
	}.apply(t, fullYAML))
	_, err := Parse(f.path(), []byte(src))
	if err == nil {
		t.Fatal("no error")
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("an error echoes a secret:\n%v", err)
	}
}

func TestUserAndTenantHelpers(t *testing.T) {
	f := newFixture(t)
	cfg := mustParse(t, f, fullYAML)
	for _, u := range cfg.Tenants[0].Users {
		h, err := u.ReadPasswordHash()
		if err != nil || h != f.hash {
			t.Errorf("ReadPasswordHash(%s) = %q, %v", u.Username, h, err)
		}
	}
	nets := cfg.Tenants[0].Networks()
	if len(nets) != 2 || nets[0].String() != "10.1.0.0/16" || nets[1].String() != "192.0.2.7/32" {
		t.Errorf("Networks = %v", nets)
	}
	if !cfg.API.Tokens[0].HasScope("release") || cfg.API.Tokens[0].HasScope("admin") || !cfg.API.Tokens[1].HasScope("release") {
		t.Error("HasScope")
	}
	if cfg.API.Tokens[0].SeesEveryTenant() || !cfg.API.Tokens[1].SeesEveryTenant() {
		t.Error("SeesEveryTenant")
	}
}

// TestAPITokenSeesTheOnlyTenant: with one tenant, a token that names none
// sees that one, and "*" stays as written.
func TestAPITokenSeesTheOnlyTenant(t *testing.T) {
	f := newFixture(t)
	cfg := mustParse(t, f, minimalYAML+`api:
  tokens:
    - {name: helpdesk, token_file: {{dir}}/helpdesk.token, scopes: [read]}
    - {name: ops, token_file: {{dir}}/helpdesk.token, scopes: [admin], tenants: ["*"]}
`)
	if got := cfg.API.Tokens[0].Tenants; !reflect.DeepEqual(got, []string{"issuer"}) {
		t.Errorf("tenants left out = %q, want [issuer]", got)
	}
	if !cfg.API.Tokens[1].SeesEveryTenant() {
		t.Errorf(`tenants: ["*"] became %q`, cfg.API.Tokens[1].Tenants)
	}
}

func TestPaths(t *testing.T) {
	cases := map[string][]string{
		"a":                       {"a"},
		"a.b[2]":                  {"a", ".b", "[2]"},
		`a.hosts["x.example"][0]`: {"a", ".hosts", `["x.example"]`, "[0]"},
		`a["we[ird]"].b`:          {"a", `["we[ird]"]`, ".b"},
	}
	for in, want := range cases {
		if got := splitPath(in); !reflect.DeepEqual(got, want) {
			t.Errorf("splitPath(%q) = %q, want %q", in, got, want)
		}
	}
	if p := parentPath("tenants[0].users[1]"); p != "tenants[0].users" {
		t.Errorf("parentPath = %q", p)
	}
}

// TestExampleFile keeps deploy/certgate.example.yaml valid: its only
// problems may be the files it names, which do not exist here.
func TestExampleFile(t *testing.T) {
	const path = "../deploy/certgate.example.yaml"
	_, err := Load(path)
	if err == nil {
		return
	}
	var errs *Errors
	if !errors.As(err, &errs) {
		t.Fatal(err)
	}
	for _, p := range errs.Problems {
		if !strings.Contains(p.Msg, "does not exist") {
			t.Errorf("%s", p)
		}
	}
}

// TestDocsExample keeps the short example at the top of docs/config.md
// valid, but for the files it names.
func TestDocsExample(t *testing.T) {
	doc, err := os.ReadFile("../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "```yaml\n")
	example, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("no yaml block in docs/config.md")
	}
	_, err = Parse("docs/config.md", []byte(example))
	var errs *Errors
	if err != nil && !errors.As(err, &errs) {
		t.Fatal(err)
	}
	if errs != nil {
		for _, p := range errs.Problems {
			if !strings.Contains(p.Msg, "does not exist") {
				t.Errorf("%s", p)
			}
		}
	}
}

// TestDocsListEveryKey keeps docs/config.md complete.
func TestDocsListEveryKey(t *testing.T) {
	doc, err := os.ReadFile("../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range SchemaPaths() {
		if !strings.Contains(string(doc), "`"+p+"`") {
			t.Errorf("docs/config.md does not document `%s`", p)
		}
	}
}

func FuzzParse(f *testing.F) {
	fx := newFixture(f)
	f.Add([]byte(fx.expand(fullYAML)))
	f.Add([]byte(fx.expand(minimalYAML)))
	if data, err := os.ReadFile("../deploy/certgate.example.yaml"); err == nil {
		f.Add(data)
	}
	f.Add([]byte("tenants: [{name: a, users: [{username: u, password_hash: x}], from_domains: [a.example]}]"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("smtp: {listen: 5, tls: [1]}\ndelivery: {static_dns: {hosts: {x: [y]}}}\n"))
	f.Add([]byte("---\n---\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(filepath.Join(fx.dir, "fuzz.yaml"), data)
		if err == nil {
			if cfg == nil {
				t.Fatal("nil error with a nil config")
			}
			return
		}
		var errs *Errors
		if !errors.As(err, &errs) || len(errs.Problems) == 0 {
			t.Fatalf("error is not a non-empty *Errors: %v", err)
		}
		if cfg != nil {
			t.Fatal("an error with a config")
		}
	})
}

// Secret files others can read are judged as OpenSSH judges private keys:
// a DKIM key or an API token every local user can read is refused, any
// other secret open to others or to its group is warned about, with the
// line, and the file still loads.
func TestSecretFilePermissions(t *testing.T) {
	f := newFixture(t)
	src := f.expand(fullYAML)
	chmod := func(name string, mode os.FileMode) {
		t.Helper()
		if err := os.Chmod(filepath.Join(f.dir, name), mode); err != nil {
			t.Fatal(err)
		}
	}
	chmod("dkim.pem", 0o644)
	chmod("helpdesk.token", 0o606)
	_, err := Parse(f.path(), []byte(src))
	var errs *Errors
	if !errors.As(err, &errs) {
		t.Fatalf("Parse: %v, want the key and the token refused", err)
	}
	checkProblems(t, f, src, errs, []wantProblem{
		{"dkim[0].key_file", "key_file: {{dir}}/dkim.pem", "{{dir}}/dkim.pem has mode 0644: every user of this machine can read it, and a DKIM key signs mail as the issuer; chmod 600"},
		{"dkim[1].key_file", "key_file: {{dir}}/dkim.pem}", "mode 0644"},
		{"api.tokens[0].token_file", "token_file:", "mode 0606: every user of this machine can read and change it, and an API token"},
	})

	chmod("dkim.pem", 0o640)
	chmod("helpdesk.token", 0o600)
	chmod("batch.hash", 0o644)
	chmod("tls.key", 0o660)
	cfg, err := Parse(f.path(), []byte(src))
	if err != nil {
		t.Fatalf("Parse: %v, want warnings only", err)
	}
	want := []struct{ path, at, msg string }{
		{"smtp.tls.key_file", "key_file: {{dir}}/tls.key", "{{dir}}/tls.key has mode 0660: its group can read and change it; chmod 600 it, owned by the user certgate runs as, unless that group is certgate's alone"},
		{"tenants[0].users[1].password_hash_file", "password_hash_file:", "mode 0644: every user of this machine can read it; chmod 600"},
		{"dkim[0].key_file", "key_file: {{dir}}/dkim.pem", "mode 0640: its group can read it"},
		{"dkim[1].key_file", "key_file: {{dir}}/dkim.pem}", "mode 0640: its group can read it"},
	}
	var got []string
	for _, w := range cfg.Warnings {
		got = append(got, w.String())
	}
	if len(cfg.Warnings) != len(want) {
		t.Fatalf("warnings:\n%s\nwant %d", strings.Join(got, "\n"), len(want))
	}
	for i, w := range want {
		p := cfg.Warnings[i]
		if p.Path != w.path || p.Line != lineOf(t, src, f.expand(w.at)) || p.File != f.path() || !strings.Contains(p.Msg, f.expand(w.msg)) {
			t.Errorf("warning %d: %s\nwant %s at %q: %s", i, p, w.path, w.at, f.expand(w.msg))
		}
	}
}

// A hash of a cost below 10 loads, with a warning that says how much
// weaker it is and how to make a sound one.
func TestWeakPasswordHashWarns(t *testing.T) {
	f := newFixture(t)
	weak, err := bcrypt.GenerateFromPassword([]byte("pw"), 5)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.dir, "batch.hash"), weak, 0o600); err != nil {
		t.Fatal(err)
	}
	src := f.expand(fullYAML)
	cfg, err := Parse(f.path(), []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Warnings) != 1 {
		t.Fatalf("warnings %v, want one", cfg.Warnings)
	}
	w := cfg.Warnings[0]
	if w.Path != "tenants[0].users[1].password_hash_file" || w.Line != lineOf(t, src, "password_hash_file:") ||
		!strings.Contains(w.Msg, "bcrypt cost 5 is below 10: a stolen hash is guessed 32 times faster than at 10; make a new one with certgate passwd (cost 12)") {
		t.Fatalf("warning %s", w)
	}
}

// gate.min_human_delay takes its default when left out and keeps 0s when
// written, as docs/config.md says of every key.
func TestMinHumanDelay(t *testing.T) {
	f := newFixture(t)
	for src, want := range map[string]time.Duration{
		minimalYAML: 2 * time.Second,
		minimalYAML + "gate: {min_human_delay: 0s}\n": 0,
		minimalYAML + "gate: {min_human_delay: 5s}\n": 5 * time.Second,
	} {
		if got := mustParse(t, f, src).Gate.MinHumanDelay.D(); got != want {
			t.Errorf("%q: min_human_delay %v, want %v", src[len(minimalYAML):], got, want)
		}
	}
	code := &Config{}
	code.SetDefaults()
	if code.Gate.MinHumanDelay != DefaultMinHumanDelay {
		t.Errorf("SetDefaults: min_human_delay %v", code.Gate.MinHumanDelay)
	}
}

// The seeds section: defaults filled, relative secret files found beside
// the configuration, and every mistake reported at its key.
func TestSeeds(t *testing.T) {
	f := newFixture(t)
	cfg := mustParse(t, f, minimalYAML+`seeds:
  mailboxes:
    - {name: gmail-1, provider: gmail, address: certgate.seed1@gmail.com,
       imap: {addr: "imap.gmail.com:993", username: certgate.seed1@gmail.com, password_file: helpdesk.token}}
    - {name: local, provider: zimbra, address: seed@corp.example, junk: Bulk,
       imap: {addr: "127.0.0.1:1143", tls: none, username: seed, oauth2: {token_file: helpdesk.token}}}
`)
	s := cfg.Seeds
	if s.Deadline != DefaultSeedDeadline || s.After != SeedDelete || len(s.Mailboxes) != 2 {
		t.Fatalf("%+v", s)
	}
	if m := s.Mailboxes[0]; m.Junk != "auto" || m.IMAP.TLS != IMAPImplicit || m.IMAP.PasswordFile != filepath.Join(f.dir, "helpdesk.token") {
		t.Fatalf("%+v", m)
	}
	_, err := Parse(f.path(), []byte(f.expand(minimalYAML+`seeds:
  deadline: 10s
  after: archive
  mailboxes:
    - {name: a, provider: nowhere, address: "Seed <s@x.example>", imap: {addr: "imap.x.example:143", tls: none, username: u}}
    - {name: a, provider: gmail, address: s2@gmail.com, junk: inbox, imap: {addr: "imap.gmail.com:993", username: u, password_file: helpdesk.token, oauth2: {token_file: helpdesk.token}}}
`)))
	var errs *Errors
	if !errors.As(err, &errs) {
		t.Fatalf("Parse: %v", err)
	}
	for _, want := range []string{"seeds.deadline", "seeds.after", "seeds.mailboxes[0].provider", "seeds.mailboxes[0].address",
		"seeds.mailboxes[0].imap.tls", "seeds.mailboxes[0].imap", "seeds.mailboxes[1].name", "seeds.mailboxes[1].imap",
		"seeds.mailboxes[1].junk"} {
		if !strings.Contains(err.Error(), want+":") {
			t.Errorf("no problem reported at %s in:\n%v", want, err)
		}
	}
}

func TestSourceAddressesValidated(t *testing.T) {
	f := newFixture(t)
	_, err := Parse(f.path(), []byte(f.expand(minimalYAML+"delivery: {source_addresses: [203.0.113.25, mail.example, 0.0.0.0, \"::ffff:203.0.113.25\"]}\n")))
	for _, want := range []string{"delivery.source_addresses[1]", "delivery.source_addresses[2]", "delivery.source_addresses[3]"} {
		if err == nil || !strings.Contains(err.Error(), want+":") {
			t.Errorf("no problem reported at %s in:\n%v", want, err)
		}
	}
	c := mustParse(t, f, minimalYAML+"delivery: {source_addresses: [203.0.113.25, \"2001:DB8::25\"]}\n")
	if got := c.Delivery.SourceAddresses; len(got) != 2 || got[1] != "2001:db8::25" {
		t.Errorf("source addresses %q, want them in canonical form", got)
	}
}
