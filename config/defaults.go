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
	DefaultReadTimeout         = Duration(5 * time.Minute)
	DefaultWriteTimeout        = Duration(time.Minute)
	DefaultAuthFailureDelay    = Duration(time.Second)
	DefaultHTTPListen          = "127.0.0.1:8080"
	DefaultClass               = ClassBulk
	DefaultLinksEnable         = LinksOnDelivery
	DefaultLinksTTL            = Duration(720 * time.Hour)
	DefaultLinksMaxUses        = 3
	DefaultRouteTLS            = "opportunistic"
	DefaultMXPort              = 25
	DefaultConnectTimeout      = Duration(30 * time.Second)
	DefaultCommandTimeout      = Duration(5 * time.Minute)
	DefaultDataTimeout         = Duration(10 * time.Minute)
	DefaultRetryMaxAge         = Duration(72 * time.Hour)
	DefaultRetryJitter         = 0.1
	DefaultDKIMEngine          = "auto"
	DefaultLogLevel            = "info"
	DefaultLogFormat           = "text"
)

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
	unset := func(path string, zero bool) bool {
		if has == nil {
			return zero
		}
		return !has(path)
	}
	if unset("hostname", c.Hostname == "") {
		if h, err := os.Hostname(); err == nil {
			c.Hostname = h
		}
	}
	if unset("data_dir", c.DataDir == "") {
		c.DataDir = DefaultDataDir
	}
	if unset("storage.driver", c.Storage.Driver == "") {
		c.Storage.Driver = DefaultStorageDriver
	}

	s := &c.SMTP
	if unset("smtp.listen", s.Listen == nil) {
		s.Listen = []string{DefaultSMTPListen}
	}
	if unset("smtp.max_message_bytes", s.MaxMessageBytes == 0) {
		s.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if unset("smtp.max_recipients", s.MaxRecipients == 0) {
		s.MaxRecipients = DefaultMaxRecipients
	}
	if unset("smtp.max_connections", s.MaxConnections == 0) {
		s.MaxConnections = DefaultMaxConnections
	}
	if unset("smtp.max_connections_per_ip", s.MaxConnectionsPerIP == 0) {
		s.MaxConnectionsPerIP = DefaultMaxConnectionsPerIP
	}
	if unset("smtp.read_timeout", s.ReadTimeout == 0) {
		s.ReadTimeout = DefaultReadTimeout
	}
	if unset("smtp.write_timeout", s.WriteTimeout == 0) {
		s.WriteTimeout = DefaultWriteTimeout
	}
	if unset("smtp.auth_failure_delay", s.AuthFailureDelay == 0) {
		s.AuthFailureDelay = DefaultAuthFailureDelay
	}

	if unset("http.listen", c.HTTP.Listen == "") {
		c.HTTP.Listen = DefaultHTTPListen
	}
	if unset("http.public_url", c.HTTP.PublicURL == "") {
		c.HTTP.PublicURL = c.derivedPublicURL()
	}

	for i := range c.Tenants {
		t := &c.Tenants[i]
		at := indexPath("tenants", i)
		if unset(at+".default_class", t.DefaultClass == "") {
			t.DefaultClass = DefaultClass
		}
		if unset(at+".links.enable", t.Links.Enable == "") {
			t.Links.Enable = DefaultLinksEnable
		}
		if unset(at+".links.ttl", t.Links.TTL == 0) {
			t.Links.TTL = DefaultLinksTTL
		}
		if unset(at+".links.max_uses", t.Links.MaxUses == 0) {
			t.Links.MaxUses = DefaultLinksMaxUses
		}
	}

	d := &c.Delivery
	if unset("delivery.routes", d.Routes == nil) {
		d.Routes = DefaultRoutes()
	}
	for i := range d.Routes {
		if unset(indexPath("delivery.routes", i)+".tls", d.Routes[i].TLS == "") {
			d.Routes[i].TLS = DefaultRouteTLS
		}
	}
	if unset("delivery.mx_port", d.MXPort == 0) {
		d.MXPort = DefaultMXPort
	}
	if unset("delivery.connect_timeout", d.ConnectTimeout == 0) {
		d.ConnectTimeout = DefaultConnectTimeout
	}
	if unset("delivery.command_timeout", d.CommandTimeout == 0) {
		d.CommandTimeout = DefaultCommandTimeout
	}
	if unset("delivery.data_timeout", d.DataTimeout == 0) {
		d.DataTimeout = DefaultDataTimeout
	}
	if unset("delivery.retry.schedule", d.Retry.Schedule == nil) {
		d.Retry.Schedule = DefaultRetrySchedule()
	}
	if unset("delivery.retry.max_age", d.Retry.MaxAge == 0) {
		d.Retry.MaxAge = DefaultRetryMaxAge
	}
	if unset("delivery.retry.jitter", d.Retry.Jitter == 0) {
		d.Retry.Jitter = DefaultRetryJitter
	}

	if unset("dkim_engine", c.DKIMEngine == "") {
		c.DKIMEngine = DefaultDKIMEngine
	}
	if unset("log.level", c.Log.Level == "") {
		c.Log.Level = DefaultLogLevel
	}
	if unset("log.format", c.Log.Format == "") {
		c.Log.Format = DefaultLogFormat
	}
}

// derivedPublicURL is http:// and http.listen, with the host name in place
// of an unspecified address (":8080", "0.0.0.0:8080"); "" when http.listen
// is not host:port (validation reports that).
func (c *Config) derivedPublicURL() string {
	host, port, err := net.SplitHostPort(c.HTTP.Listen)
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
