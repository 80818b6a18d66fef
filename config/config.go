// Package config holds certgate's YAML schema, its defaults and its
// validation. It imports no other package of certgate, so every other part
// can depend on it.
package config

import (
	"strings"
	"time"
)

// Config is the whole configuration file. The YAML key names are a contract
// with operators and scripts (docs/config.md documents every one).
type Config struct {
	Hostname string    `yaml:"hostname"`
	DataDir  string    `yaml:"data_dir"`
	Storage  Storage   `yaml:"storage"`
	SMTP     SMTP      `yaml:"smtp"`
	HTTP     HTTP      `yaml:"http"`
	Tenants  []Tenant  `yaml:"tenants"`
	DKIM     []DKIMKey `yaml:"dkim"`
	// DKIMEngine chooses what makes RSA signatures: auto (OpenSSL when
	// libcrypto is usable, else Go), openssl (required), or go.
	DKIMEngine DKIMEngine `yaml:"dkim_engine"`
	Delivery   Delivery   `yaml:"delivery"`
	Providers  []Provider `yaml:"providers"`
	// Rules on receivers' replies for every provider, after each
	// provider's own and before the built-in ones.
	Rules     []ReplyRule `yaml:"rules"`
	API       API         `yaml:"api"`
	Gate      Gate        `yaml:"gate"`
	Console   Console     `yaml:"console"`
	Webhooks  []Webhook   `yaml:"webhooks"`
	Retention Retention   `yaml:"retention"`
	Seeds     Seeds       `yaml:"seeds"`
	DNSCheck  DNSCheck    `yaml:"dns_check"`
	Log       Log         `yaml:"log"`
	// Cluster, when set, makes this node one of several (nil: alone).
	Cluster *Cluster `yaml:"cluster"`

	// Path is the file the configuration was read from ("" when built in code).
	Path string `yaml:"-"`
	// Warnings are what Parse or Validate found risky but not wrong, such
	// as a secret file others can read: check-config prints them and
	// serve logs them.
	Warnings []Problem `yaml:"-"`
}

// Storage selects the durable store.
type Storage struct {
	Driver  string `yaml:"driver"`   // sqlite (default) or postgres
	DSNFile string `yaml:"dsn_file"` // postgres only
	DSNEnv  string `yaml:"dsn_env"`  // postgres only: name of an environment variable
}

// SMTP is the submission listener.
type SMTP struct {
	Listen          []string `yaml:"listen"`
	TLS             TLS      `yaml:"tls"`
	MaxMessageBytes int64    `yaml:"max_message_bytes"`
	MaxRecipients   int      `yaml:"max_recipients"`
	// MaxConnections caps concurrent sessions in total; MaxConnectionsPerIP
	// per client address; MaxConnectionsPerNetwork per client network (/24
	// of IPv4, /64 of IPv6), not counting trusted networks. TrustedReserve
	// of MaxConnections only tenants' trusted networks may take.
	MaxConnections           int      `yaml:"max_connections"`
	MaxConnectionsPerIP      int      `yaml:"max_connections_per_ip"`
	MaxConnectionsPerNetwork int      `yaml:"max_connections_per_network"`
	TrustedReserve           int      `yaml:"trusted_reserve"`
	ReadTimeout              Duration `yaml:"read_timeout"`  // per command; caps the whole DATA transfer too
	WriteTimeout             Duration `yaml:"write_timeout"` // per reply
	// PreAuthTimeout is the read timeout until a client authenticates
	// (clients on trusted networks get ReadTimeout). MaxSessionWithoutMail
	// caps the time a session spends outside a mail transaction, from its
	// start or its last accepted message.
	PreAuthTimeout        Duration `yaml:"pre_auth_timeout"`
	MaxSessionWithoutMail Duration `yaml:"max_session_without_mail"`
	// AuthFailureDelay is the pause after each failed AUTH, multiplied by the
	// client address's recent failures (capped at 8x).
	AuthFailureDelay Duration `yaml:"auth_failure_delay"`
	// MemoryBudget bounds the memory mail takes at once: DATA buffers,
	// the copies prepared from them, and copies being stored, read back
	// or sent. See MailBudget.
	MemoryBudget int64 `yaml:"memory_budget"`
	// AuthFailureLimit failed AUTH from one address (/64 of IPv6), each
	// within AuthFailureWindow of the last, and it is refused until the
	// window passes. AuthConcurrency caps the bcrypt comparisons running at
	// once (0: one per CPU).
	AuthFailureLimit  int      `yaml:"auth_failure_limit"`
	AuthFailureWindow Duration `yaml:"auth_failure_window"`
	AuthConcurrency   int      `yaml:"auth_concurrency"`
}

// Mail may hold mailShareNum/mailShareDen of the memory budget. The
// daemon keeps Go's heap within seven eighths of the budget: the last
// eighth is for what SQLite holds in C memory (a copy being written or
// read), and what lies between is room for the collector, so that the
// process stays near the budget under a flood.
const mailShareNum, mailShareDen = 3, 4

// MailBudget is the bytes of mail smtp.memory_budget admits at once.
func (s *SMTP) MailBudget() int64 { return s.MemoryBudget / mailShareDen * mailShareNum }

// TLS names a certificate and key in PEM files.
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// HTTP is the API, metrics and gate listener.
type HTTP struct {
	Listen string `yaml:"listen"`
	// GateListen, when set, serves the public pages (the gate) on a
	// listener of their own, and Listen keeps /metrics, the API and the
	// console, for a reverse proxy to expose only the first.
	GateListen string `yaml:"gate_listen"`
	PublicURL  string `yaml:"public_url"`
	// TrustedProxies are reverse proxies whose X-Forwarded-For names the
	// client (for scanner networks and the audit trail).
	TrustedProxies []string `yaml:"trusted_proxies"`
}

// Tenant is one issuer (or one of its systems) submitting mail.
type Tenant struct {
	Name            string   `yaml:"name"`
	Users           []User   `yaml:"users"`
	TrustedNetworks []string `yaml:"trusted_networks"` // CIDRs that submit without AUTH
	FromDomains     []string `yaml:"from_domains"`
	Links           Links    `yaml:"links"`
	// DefaultClass applies when a message carries no X-Certgate-Class header.
	DefaultClass Class `yaml:"default_class"` // bulk (default) or transactional
	// DisplayName and Support are shown to recipients on the gate pages.
	DisplayName string `yaml:"display_name"`
	// Hold keeps every message in certgate's quarantine until released
	// through the API (review before sending).
	Hold    bool    `yaml:"hold"`
	Support Support `yaml:"support"`
	// Classes are the classes the tenant may mark its mail with
	// (X-Certgate-Class); default: both.
	Classes []Class `yaml:"classes"`
	// MaxMessageRate caps the transactions the tenant may start (MAIL);
	// unlimited by default.
	MaxMessageRate Rate `yaml:"max_message_rate"`
	// MaxQueued caps the tenant's recipients waiting in the delivery queue;
	// 0 is no cap.
	MaxQueued int `yaml:"max_queued"`
	// Seeding, when set, sends seed copies of the tenant's bulk mail to
	// every seed mailbox as it sends.
	Seeding *Seeding `yaml:"seeding"`
	// Warmup caps the tenant's bulk per provider per day on a schedule,
	// for a From domain that is new to the providers; nil: none.
	Warmup *Warmup `yaml:"warmup"`
	// MaxRecipientsPerSend caps the recipients of one POST /api/v1/send.
	MaxRecipientsPerSend int `yaml:"max_recipients_per_send"`
	// Templates is a directory of the tenant's own message templates for
	// the send API, beside and over the built-in ones; "" for none.
	Templates string `yaml:"templates"`
}

// Support is how an issuer's customers reach its helpdesk.
type Support struct {
	Email string `yaml:"email"`
	Phone string `yaml:"phone"`
	URL   string `yaml:"url"`
}

// Gate tunes how the download gate tells people from link scanners.
type Gate struct {
	ScannerUserAgents []string `yaml:"scanner_user_agents"` // extra case-insensitive substrings
	ScannerNetworks   []string `yaml:"scanner_networks"`    // CIDRs of scanners (Safe Links, Mimecast, ...)
	MinHumanDelay     Duration `yaml:"min_human_delay"`     // least time from page to button press
	FormKeyFile       string   `yaml:"form_key_file"`       // key signing the gate's form, shared by a cluster
}

// Console tunes the helpdesk console's sessions (/console/ on
// http.listen): a person signs in with an API token, and the session
// ends after IdleTimeout without a request or MaxAge after sign-in,
// whichever comes first. MaxSessions bounds the sessions kept at once;
// past it, the one idle longest ends. With SessionKeyFile, sessions are
// sealed in their cookies instead, so that every node of a cluster
// holding the same key opens them (and MaxSessions does not apply).
type Console struct {
	IdleTimeout    Duration `yaml:"idle_timeout"`
	MaxAge         Duration `yaml:"max_age"`
	MaxSessions    int      `yaml:"max_sessions"`
	SessionKeyFile string   `yaml:"session_key_file"`
}

// User is an SMTP AUTH identity. The password is kept as a bcrypt hash only,
// inline or from a file.
type User struct {
	Username         string `yaml:"username"`
	PasswordHash     string `yaml:"password_hash"`
	PasswordHashFile string `yaml:"password_hash_file"`
}

// Links configures gated download links (issue 3 fills this in).
type Links struct {
	Gate    []string   `yaml:"gate"`
	Enable  LinkEnable `yaml:"enable"` // on_release, on_delivery (default), immediately
	TTL     Duration   `yaml:"ttl"`
	MaxUses int        `yaml:"max_uses"`
}

// DKIMKey is one signing key. Algorithm is read from the key itself.
type DKIMKey struct {
	Domain   string `yaml:"domain"`
	Selector string `yaml:"selector"`
	KeyFile  string `yaml:"key_file"`
}

// Delivery configures routing and retries.
type Delivery struct {
	Routes []Route `yaml:"routes"`
	Retry  Retry   `yaml:"retry"`
	// MXPort is the port used for MX deliveries (25; tests change it).
	MXPort int `yaml:"mx_port"`
	// ConnectTimeout bounds TCP connect plus greeting; CommandTimeout each command; DataTimeout the whole DATA.
	ConnectTimeout Duration `yaml:"connect_timeout"`
	CommandTimeout Duration `yaml:"command_timeout"`
	DataTimeout    Duration `yaml:"data_timeout"`
	// StaticDNS replaces DNS with a fixed table (tests, staging, the demo).
	StaticDNS *StaticDNS `yaml:"static_dns"`
	// SourceAddresses are the IP addresses receivers see the mail come
	// from (certgate's own, or a smarthost's): what the allowlisting kit
	// states and the DNS self-check holds SPF and PTR against.
	SourceAddresses []string `yaml:"source_addresses"`
}

// StaticDNS maps domains to MX host names and host names to addresses.
type StaticDNS struct {
	MX    map[string][]string `yaml:"mx"`    // domain -> MX hosts, in preference order
	Hosts map[string][]string `yaml:"hosts"` // host -> IP addresses
}

// Route says how mail for some recipient domains leaves. The first route
// whose domains match wins; "*" matches every domain.
type Route struct {
	Domains []string `yaml:"domains"`
	MX      bool     `yaml:"mx"`   // look up MX records
	Host    string   `yaml:"host"` // host:port of a static next hop or smarthost
	TLS     TLSMode  `yaml:"tls"`  // required, opportunistic (default), none
	// CAFile verifies the next hop's certificate with these roots instead of the system's (tls: required).
	CAFile string     `yaml:"ca_file"`
	Auth   *RouteAuth `yaml:"auth"` // smarthost credentials
}

// RouteAuth is a smarthost login; the password comes from a file or an environment variable.
type RouteAuth struct {
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	PasswordEnv  string `yaml:"password_env"`
}

// Retry is the schedule of attempts after a temporary failure.
type Retry struct {
	Schedule []Duration `yaml:"schedule"` // the last step repeats
	MaxAge   Duration   `yaml:"max_age"`  // then the message bounces
	Jitter   float64    `yaml:"jitter"`   // fraction of each step, 0.1 by default
}

// Provider is a receiving mailbox provider: how to recognise its mail and
// the limits of its lane. BuiltinProviders are the defaults;
// ResolveProviders merges the configured ones into them.
type Provider struct {
	// Name identifies the provider in lane keys, metric labels and logs.
	Name string `yaml:"name"`
	// Domains are recipient domains known to be hosted by the provider,
	// matched exactly (case-insensitive, trailing dot ignored), so common
	// domains need no MX lookup.
	Domains []string `yaml:"domains"`
	// MXSuffixes match the provider's MX host names. An entry is compared
	// with the end of the host name on a label boundary: ".google.com" and
	// "google.com" both match "google.com" and "aspmx.l.google.com", never
	// "notgoogle.com". An entry starting with "*" is a substring rule:
	// "*zimbra*" matches any host name containing "zimbra" (the stars are
	// stripped).
	MXSuffixes     []string `yaml:"mx_suffixes"`
	MaxMessageRate Rate     `yaml:"max_message_rate"` // zero: unlimited
	// ConnectionLimit caps the lane's concurrent SMTP connections.
	ConnectionLimit int `yaml:"connection_limit"`
	// MaxDeliveriesPerConnection caps the messages sent over one SMTP
	// connection before it is closed and a new one opened.
	MaxDeliveriesPerConnection int `yaml:"max_deliveries_per_connection"`
	// Rules are this provider's rules on its replies, tried first (the
	// built-in ones, BuiltinRules, come after every configured rule).
	Rules []ReplyRule `yaml:"rules"`
	// Recovery is how the lane's rate climbs back after a slowdown; nil
	// takes the defaults.
	Recovery *Recovery `yaml:"recovery"`
	// Placement is the rule on where the provider's seed copies land;
	// nil takes DefaultPlacementRule.
	Placement *PlacementRule `yaml:"placement"`
	// Warmup caps the lane's bulk mail per day on a schedule; nil: none.
	Warmup *Warmup `yaml:"warmup"`
}

// API configures bearer tokens for the HTTP API.
type API struct {
	Tokens []APIToken `yaml:"tokens"`
	// SendMaxBytes caps the JSON body of POST /api/v1/send (and its
	// preview): the certificate travels in it, base64 or PEM.
	SendMaxBytes int64 `yaml:"send_max_bytes"`
}

// APIToken is a named bearer token with scopes; the token comes from a file or an environment variable.
type APIToken struct {
	Name      string  `yaml:"name"`
	TokenFile string  `yaml:"token_file"`
	TokenEnv  string  `yaml:"token_env"`
	Scopes    []Scope `yaml:"scopes"` // read, release, send, admin
	// Tenants whose mail the token sees and acts on, or ["*"] for every
	// tenant; validation makes the only tenant the default. No scope
	// widens it, admin included.
	Tenants []string `yaml:"tenants"`
}

// EveryTenant, alone in APIToken.Tenants, lets a token see every tenant.
const EveryTenant = "*"

// SeesEveryTenant reports whether the token's tenants are ["*"].
func (t APIToken) SeesEveryTenant() bool {
	return len(t.Tenants) == 1 && t.Tenants[0] == EveryTenant
}

// Webhook is an endpoint that receives signed POSTs for events of the
// audit trail; the signing secret comes from a file or an environment
// variable.
type Webhook struct {
	Name       string   `yaml:"name"` // keys the endpoint's position in the event log
	URL        string   `yaml:"url"`  // https, or http to a loopback host
	SecretFile string   `yaml:"secret_file"`
	SecretEnv  string   `yaml:"secret_env"`
	Events     []string `yaml:"events"`  // of WebhookEvents
	Tenants    []string `yaml:"tenants"` // empty for every tenant
	Timeout    Duration `yaml:"timeout"` // per attempt
}

// Secret returns the signing secret from secret_file or secret_env.
func (w Webhook) Secret() (string, error) { return ReadSecret(w.SecretFile, w.SecretEnv) }

// WebhookEvents are the event kinds a webhook can receive.
var WebhookEvents = []string{"delivered", "bounced", "released", "link_used", "link_refused", "placement", "lane_changed"}

// DefaultWebhookTimeout is webhooks[].timeout when the key is absent.
const DefaultWebhookTimeout = Duration(10 * time.Second)

// Class is a message class. Within a provider's lane transactional mail
// always goes ahead of bulk mail (package policy).
type Class string

const (
	// ClassTransactional is mail a person is waiting for right now: a
	// one-time code, a voucher, the token for an identity check, the
	// certificate itself after a purchase.
	ClassTransactional Class = "transactional"
	// ClassBulk is everything else: issuance waves, renewal reminders.
	ClassBulk Class = "bulk"
)

// ParseClass reads a class name as a header or the API writes it,
// ignoring case and surrounding space; false for anything else, "" too.
func ParseClass(s string) (Class, bool) {
	switch c := Class(strings.ToLower(strings.TrimSpace(s))); c {
	case ClassTransactional, ClassBulk:
		return c, true
	}
	return "", false
}

// LinkEnable is when a gated link starts to forward people to the
// issuer's download.
type LinkEnable string

const (
	LinksOnDelivery  LinkEnable = "on_delivery" // once the receiving MX accepted the copy
	LinksOnRelease   LinkEnable = "on_release"  // once the message is released through the API
	LinksImmediately LinkEnable = "immediately" // at once
)

// TLSMode is a delivery route's policy for STARTTLS.
type TLSMode string

const (
	TLSRequired      TLSMode = "required"      // STARTTLS with a verified certificate, or defer
	TLSOpportunistic TLSMode = "opportunistic" // STARTTLS when offered, unverified (RFC 7435); plaintext otherwise
	TLSNone          TLSMode = "none"          // never
)

// DKIMEngine is what makes RSA signatures.
type DKIMEngine string

const (
	DKIMEngineAuto    DKIMEngine = "auto"    // OpenSSL's libcrypto when it opens, else Go
	DKIMEngineOpenSSL DKIMEngine = "openssl" // OpenSSL, or refuse to start
	DKIMEngineGo      DKIMEngine = "go"      // Go's crypto/rsa
)

// Scope is a permission an API token holds.
type Scope string

const (
	ScopeRead    Scope = "read"    // search and read messages
	ScopeRelease Scope = "release" // release held mail, revoke links
	ScopeSend    Scope = "send"    // compose and send mail through POST /api/v1/send
	ScopeAdmin   Scope = "admin"   // every scope, and profiling
)

// Retention is how long certgate keeps what is done with; a sweeper
// deletes the rest every SweepInterval, in small transactions. 0 keeps it
// for ever.
type Retention struct {
	// Events are the audit trail's events, by their time.
	Events Duration `yaml:"events"`
	// DeliveredMessages are messages with nothing left to send (every
	// copy delivered or bounced), by when they were received, each with
	// its recipients, links and remaining events.
	DeliveredMessages Duration `yaml:"delivered_messages"`
	SweepInterval     Duration `yaml:"sweep_interval"`
}

// DNSCheck is the daemon's periodic DNS self-check (docs/dns.md): the
// records receivers read, held against this configuration, exported as
// metrics.
type DNSCheck struct {
	Interval Duration `yaml:"interval"` // between runs; 0 turns it off
	Resolver string   `yaml:"resolver"` // host:port; "": the first nameserver of /etc/resolv.conf
	Timeout  Duration `yaml:"timeout"`  // per DNS query
}

// Log configures log/slog output.
type Log struct {
	Level  string `yaml:"level"`  // debug, info (default), warn, error
	Format string `yaml:"format"` // text (default) or json
}

// Duration is a time.Duration written as a Go duration string ("90s", "1h").
type Duration time.Duration

// Rate is a count per period, written "300/min", "10/s", "5000/h" or "0" for unlimited.
type Rate struct {
	Count  int
	Period time.Duration
}
