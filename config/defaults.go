package config

import (
	"net"
	"net/netip"
	"os"
	"strconv"
	"time"
)

// The defaults. docs/config.md lists them with the keys they fill.
const (
	DefaultDataDir             = "/var/lib/certgate"
	DefaultStorageDriver       = "sqlite"
	DefaultSMTPListen          = "127.0.0.1:2525"
	DefaultMaxMessageBytes     = 25 << 20 // 26214400
	DefaultMaxRecipients       = 500
	DefaultMaxConnections      = 200
	DefaultMaxConnectionsPerIP = 20
	// DefaultMaxConnectionsPerNetwork lets one /24 or /64 hold a quarter
	// of DefaultMaxConnections.
	DefaultMaxConnectionsPerNetwork = 50
	DefaultPreAuthTimeout           = Duration(30 * time.Second)
	DefaultMaxSessionWithoutMail    = Duration(2 * time.Minute)
	DefaultAuthFailureLimit         = 10
	DefaultAuthFailureWindow        = Duration(15 * time.Minute)
	DefaultReadTimeout              = Duration(5 * time.Minute)
	DefaultWriteTimeout             = Duration(time.Minute)
	DefaultAuthFailureDelay         = Duration(time.Second)
	DefaultHTTPListen               = "127.0.0.1:8080"
	DefaultClass                    = ClassBulk
	DefaultLinksEnable              = LinksOnDelivery
	DefaultLinksTTL                 = Duration(720 * time.Hour)
	DefaultLinksMaxUses             = 3
	DefaultRouteTLS                 = TLSOpportunistic
	DefaultMXPort                   = 25
	DefaultConnectTimeout           = Duration(30 * time.Second)
	DefaultCommandTimeout           = Duration(5 * time.Minute)
	DefaultDataTimeout              = Duration(10 * time.Minute)
	DefaultRetryMaxAge              = Duration(72 * time.Hour)
	DefaultRetryJitter              = 0.1
	DefaultDKIMEngine               = DKIMEngineAuto
	DefaultMemoryBudget             = 256 << 20                  // 268435456
	DefaultRetentionEvents          = Duration(2160 * time.Hour) // 90 days
	DefaultRetentionDelivered       = Duration(2160 * time.Hour)
	DefaultSweepInterval            = Duration(10 * time.Minute)
	DefaultMinHumanDelay            = Duration(2 * time.Second)
	DefaultConsoleIdleTimeout       = Duration(30 * time.Minute)
	DefaultConsoleMaxAge            = Duration(12 * time.Hour)
	DefaultConsoleMaxSessions       = 1000
	DefaultLogLevel                 = "info"
	DefaultLogFormat                = "text"
	DefaultDNSCheckInterval         = Duration(6 * time.Hour)
	DefaultDNSCheckTimeout          = Duration(5 * time.Second)
	DefaultSendMaxBytes             = 10 << 20 // 10485760
	DefaultMaxRecipientsPerSend     = 500
)

// DefaultTrustedReserve is smtp.trusted_reserve when the key is absent: a
// tenth of max_connections (20 of the default 200).
func DefaultTrustedReserve(maxConnections int) int { return max(maxConnections, 0) / 10 }

// DefaultRetrySchedule is delivery.retry.schedule when the key is absent.
// RFC 5321 section 4.5.4.1 suggests retrying at least 30 minutes apart and
// giving up after 4-5 days; mail that unlocks a customer's purchase is
// worth retrying sooner, and an issuer wants to know within three days
// (DefaultRetryMaxAge) that a certificate did not arrive.
func DefaultRetrySchedule() []Duration {
	return []Duration{
		Duration(time.Minute), Duration(5 * time.Minute), Duration(15 * time.Minute),
		Duration(30 * time.Minute), Duration(time.Hour), Duration(2 * time.Hour), Duration(4 * time.Hour),
	}
}

// DefaultRetry is delivery.retry when its keys are absent.
func DefaultRetry() Retry {
	return Retry{Schedule: DefaultRetrySchedule(), MaxAge: DefaultRetryMaxAge, Jitter: DefaultRetryJitter}
}

// DefaultRoutes is delivery.routes when the key is absent: every domain
// through its MX records.
func DefaultRoutes() []Route {
	return []Route{{Domains: []string{"*"}, MX: true, TLS: DefaultRouteTLS}}
}

// SetDefaults fills every field left at its zero value with its default,
// for a Config built in code. Parse does this itself, with one difference:
// it looks at the file, so a key written with a zero value (jitter: 0)
// keeps it.
func (c *Config) SetDefaults() { c.applyDefaults(nil) }

// applyDefaults fills the keys that are not set. has reports whether the
// file sets a key path; nil means "set when not zero".
func (c *Config) applyDefaults(has func(path string) bool) {
	f := filler{has}
	if f.unset("hostname", c.Hostname == "") {
		if h, err := os.Hostname(); err == nil {
			c.Hostname = h
		}
	}
	fill(f, "data_dir", &c.DataDir, DefaultDataDir)
	fill(f, "storage.driver", &c.Storage.Driver, DefaultStorageDriver)
	fill(f, "dkim_engine", &c.DKIMEngine, DefaultDKIMEngine)
	fill(f, "log.level", &c.Log.Level, DefaultLogLevel)
	fill(f, "log.format", &c.Log.Format, DefaultLogFormat)
	c.SMTP.applyDefaults(f)
	fill(f, "http.listen", &c.HTTP.Listen, DefaultHTTPListen)
	fill(f, "http.public_url", &c.HTTP.PublicURL, c.derivedPublicURL())
	fill(f, "api.send_max_bytes", &c.API.SendMaxBytes, DefaultSendMaxBytes)
	for i := range c.Tenants {
		c.Tenants[i].applyDefaults(f, indexPath("tenants", i))
	}
	c.Delivery.applyDefaults(f)
	fill(f, "gate.min_human_delay", &c.Gate.MinHumanDelay, DefaultMinHumanDelay)
	fill(f, "console.idle_timeout", &c.Console.IdleTimeout, DefaultConsoleIdleTimeout)
	fill(f, "console.max_age", &c.Console.MaxAge, DefaultConsoleMaxAge)
	fill(f, "console.max_sessions", &c.Console.MaxSessions, DefaultConsoleMaxSessions)
	c.Retention.applyDefaults(f)
	c.Seeds.applyDefaults(f)
	fill(f, "dns_check.interval", &c.DNSCheck.Interval, DefaultDNSCheckInterval)
	fill(f, "dns_check.timeout", &c.DNSCheck.Timeout, DefaultDNSCheckTimeout)
	if c.Cluster != nil {
		c.Cluster.applyDefaults(f)
	}
	applyRuleDefaults(f, "rules", c.Rules)
	for i := range c.Providers {
		p := &c.Providers[i]
		at := indexPath("providers", i)
		applyRuleDefaults(f, at+".rules", p.Rules)
		if p.Recovery != nil {
			fill(f, at+".recovery.step", &p.Recovery.Step, DefaultRecoveryStep)
			fill(f, at+".recovery.interval", &p.Recovery.Interval, DefaultRecoveryInterval)
		}
		if p.Placement != nil {
			p.Placement.applyDefaults(f, at+".placement")
		}
		if p.Warmup != nil {
			fill(f, at+".warmup.timezone", &p.Warmup.Timezone, DefaultWarmupTimezone)
		}
	}
	for i, t := range c.Tenants {
		if t.Seeding != nil {
			t.Seeding.applyDefaults(f, indexPath("tenants", i)+".seeding")
		}
		if t.Warmup != nil {
			fill(f, indexPath("tenants", i)+".warmup.timezone", &t.Warmup.Timezone, DefaultWarmupTimezone)
		}
	}
}

// DefaultRetention is retention when its keys are absent.
func DefaultRetention() Retention {
	return Retention{Events: DefaultRetentionEvents, DeliveredMessages: DefaultRetentionDelivered, SweepInterval: DefaultSweepInterval}
}

// DefaultConsole is the console section when its keys are absent.
func DefaultConsole() Console {
	return Console{IdleTimeout: DefaultConsoleIdleTimeout, MaxAge: DefaultConsoleMaxAge, MaxSessions: DefaultConsoleMaxSessions}
}

func (r *Retention) applyDefaults(f filler) {
	fill(f, "retention.events", &r.Events, DefaultRetentionEvents)
	fill(f, "retention.delivered_messages", &r.DeliveredMessages, DefaultRetentionDelivered)
	fill(f, "retention.sweep_interval", &r.SweepInterval, DefaultSweepInterval)
}

func (s *SMTP) applyDefaults(f filler) {
	if f.unset("smtp.listen", s.Listen == nil) {
		s.Listen = []string{DefaultSMTPListen}
	}
	fill(f, "smtp.max_message_bytes", &s.MaxMessageBytes, DefaultMaxMessageBytes)
	fill(f, "smtp.max_recipients", &s.MaxRecipients, DefaultMaxRecipients)
	fill(f, "smtp.max_connections", &s.MaxConnections, DefaultMaxConnections)
	fill(f, "smtp.max_connections_per_ip", &s.MaxConnectionsPerIP, DefaultMaxConnectionsPerIP)
	fill(f, "smtp.max_connections_per_network", &s.MaxConnectionsPerNetwork, DefaultMaxConnectionsPerNetwork)
	fill(f, "smtp.trusted_reserve", &s.TrustedReserve, DefaultTrustedReserve(s.MaxConnections))
	fill(f, "smtp.read_timeout", &s.ReadTimeout, DefaultReadTimeout)
	fill(f, "smtp.write_timeout", &s.WriteTimeout, DefaultWriteTimeout)
	fill(f, "smtp.pre_auth_timeout", &s.PreAuthTimeout, DefaultPreAuthTimeout)
	fill(f, "smtp.max_session_without_mail", &s.MaxSessionWithoutMail, DefaultMaxSessionWithoutMail)
	fill(f, "smtp.auth_failure_delay", &s.AuthFailureDelay, DefaultAuthFailureDelay)
	fill(f, "smtp.memory_budget", &s.MemoryBudget, DefaultMemoryBudget)
	fill(f, "smtp.auth_failure_limit", &s.AuthFailureLimit, DefaultAuthFailureLimit)
	fill(f, "smtp.auth_failure_window", &s.AuthFailureWindow, DefaultAuthFailureWindow)
}

func (t *Tenant) applyDefaults(f filler, at string) {
	fill(f, at+".default_class", &t.DefaultClass, DefaultClass)
	if f.unset(at+".classes", t.Classes == nil) {
		t.Classes = []Class{ClassBulk, ClassTransactional}
	}
	fill(f, at+".links.enable", &t.Links.Enable, DefaultLinksEnable)
	fill(f, at+".links.ttl", &t.Links.TTL, DefaultLinksTTL)
	fill(f, at+".links.max_uses", &t.Links.MaxUses, DefaultLinksMaxUses)
	fill(f, at+".max_recipients_per_send", &t.MaxRecipientsPerSend, DefaultMaxRecipientsPerSend)
}

func (d *Delivery) applyDefaults(f filler) {
	if f.unset("delivery.routes", d.Routes == nil) {
		d.Routes = DefaultRoutes()
	}
	for i := range d.Routes {
		fill(f, indexPath("delivery.routes", i)+".tls", &d.Routes[i].TLS, DefaultRouteTLS)
	}
	fill(f, "delivery.mx_port", &d.MXPort, DefaultMXPort)
	fill(f, "delivery.connect_timeout", &d.ConnectTimeout, DefaultConnectTimeout)
	fill(f, "delivery.command_timeout", &d.CommandTimeout, DefaultCommandTimeout)
	fill(f, "delivery.data_timeout", &d.DataTimeout, DefaultDataTimeout)
	if f.unset("delivery.retry.schedule", d.Retry.Schedule == nil) {
		d.Retry.Schedule = DefaultRetrySchedule()
	}
	fill(f, "delivery.retry.max_age", &d.Retry.MaxAge, DefaultRetryMaxAge)
	fill(f, "delivery.retry.jitter", &d.Retry.Jitter, DefaultRetryJitter)
}

// filler decides which keys take their default: those the file leaves
// out, or, for a Config built in code (has nil), those left at zero.
type filler struct{ has func(path string) bool }

func (f filler) unset(path string, zero bool) bool {
	if f.has == nil {
		return zero
	}
	return !f.has(path)
}

// fill sets *field to def when the key at path is unset.
func fill[T comparable](f filler, path string, field *T, def T) {
	var zero T
	if f.unset(path, *field == zero) {
		*field = def
	}
}

// derivedPublicURL is http:// and the gate's listener (http.gate_listen,
// else http.listen), with the host name in place of an unspecified address
// (":8080", "0.0.0.0:8080"); "" when that is not host:port (validation
// reports it).
func (c *Config) derivedPublicURL() string {
	listen := c.HTTP.Listen
	if c.HTTP.GateListen != "" {
		listen = c.HTTP.GateListen
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return ""
	}
	if _, err := strconv.Atoi(port); err != nil {
		return ""
	}
	if a, err := netip.ParseAddr(host); host == "" || (err == nil && a.IsUnspecified()) {
		host = c.Hostname
		if host == "" {
			host = "localhost"
		}
	}
	return "http://" + net.JoinHostPort(host, port)
}
