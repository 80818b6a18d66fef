package config

import (
	"net"
	"net/mail"
	"path/filepath"
	"strings"
	"time"
)

// Seeds are mailboxes certgate owns at receiving providers, which it
// sends copies of real mail to and watches over IMAP to see where mail
// lands (package placement).
type Seeds struct {
	// Deadline: a seed copy not found by then is "missing".
	Deadline Duration `yaml:"deadline"`
	// After is what happens to a seed copy once its deadline has passed:
	// delete (default) or keep.
	After     SeedAfter     `yaml:"after"`
	Mailboxes []SeedMailbox `yaml:"mailboxes"`
}

// SeedAfter is what happens to a seed copy after its deadline.
type SeedAfter string

const (
	SeedDelete SeedAfter = "delete"
	SeedKeep   SeedAfter = "keep"
)

// SeedMailbox is one seed account.
type SeedMailbox struct {
	Name     string   `yaml:"name"`
	Provider string   `yaml:"provider"` // the lane whose placement it measures
	Address  string   `yaml:"address"`
	IMAP     SeedIMAP `yaml:"imap"`
	// Junk is the junk folder: auto (SPECIAL-USE \Junk, then the names
	// providers use) or a folder name.
	Junk string `yaml:"junk"`
}

// SeedIMAP is how to reach a seed mailbox.
type SeedIMAP struct {
	Addr         string     `yaml:"addr"` // host:port
	TLS          IMAPTLS    `yaml:"tls"`  // implicit (default), starttls, none (loopback only)
	CAFile       string     `yaml:"ca_file"`
	Username     string     `yaml:"username"`
	PasswordFile string     `yaml:"password_file"`
	OAuth2       *SeedOAuth `yaml:"oauth2"`
}

// SeedOAuth is XOAUTH2: a token from a file, or refreshed at token_url.
type SeedOAuth struct {
	TokenFile        string `yaml:"token_file"`
	TokenURL         string `yaml:"token_url"`
	ClientID         string `yaml:"client_id"`
	ClientSecretFile string `yaml:"client_secret_file"`
	RefreshTokenFile string `yaml:"refresh_token_file"`
}

// Seeding is a tenant's continuous seeding: a seed copy of one of its
// bulk messages for every seed mailbox, every Every bulk messages or
// every Interval, whichever comes first, while it sends.
type Seeding struct {
	Every    int      `yaml:"every"`
	Interval Duration `yaml:"interval"`
}

// IMAPTLS is how a seed mailbox's IMAP connection is protected.
type IMAPTLS string

const (
	IMAPImplicit IMAPTLS = "implicit" // TLS from the first byte (port 993)
	IMAPStartTLS IMAPTLS = "starttls" // STARTTLS, required
	IMAPNoTLS    IMAPTLS = "none"     // plaintext, to a loopback address only
)

// Defaults of the seeds section.
const (
	DefaultSeedDeadline     = Duration(15 * time.Minute)
	DefaultSeedAfter        = SeedDelete
	DefaultSeedJunk         = "auto"
	DefaultSeedIMAPTLS      = IMAPImplicit
	DefaultSeedingEvery     = 1000
	DefaultSeedingInterval  = Duration(15 * time.Minute)
	minSeedDeadline         = Duration(time.Minute)
	maxSeedDeadline         = Duration(48 * time.Hour)
	minSeedingInterval      = Duration(time.Minute)
	maxSeedMailboxes        = 1000
	maxSeedFolderNameLength = 200
)

func (s *Seeds) applyDefaults(f filler) {
	fill(f, "seeds.deadline", &s.Deadline, DefaultSeedDeadline)
	fill(f, "seeds.after", &s.After, DefaultSeedAfter)
	for i := range s.Mailboxes {
		m := &s.Mailboxes[i]
		at := indexPath("seeds.mailboxes", i)
		fill(f, at+".junk", &m.Junk, DefaultSeedJunk)
		fill(f, at+".imap.tls", &m.IMAP.TLS, DefaultSeedIMAPTLS)
	}
}

func (s *Seeding) applyDefaults(f filler, at string) {
	fill(f, at+".every", &s.Every, DefaultSeedingEvery)
	fill(f, at+".interval", &s.Interval, DefaultSeedingInterval)
}

func (v *validator) seeds(c *Config) {
	s := &c.Seeds
	if s.Deadline < minSeedDeadline || s.Deadline > maxSeedDeadline {
		v.add("seeds.deadline", "must be from %s to %s, not %s", minSeedDeadline, maxSeedDeadline, s.Deadline)
	}
	if s.After != SeedDelete && s.After != SeedKeep {
		v.add("seeds.after", "%q is not delete or keep", s.After)
	}
	if len(s.Mailboxes) > maxSeedMailboxes {
		v.add("seeds.mailboxes", "%d mailboxes; at most %d", len(s.Mailboxes), maxSeedMailboxes)
	}
	providers := map[string]bool{}
	for _, p := range ResolveProviders(c.Providers) {
		providers[p.Name] = true
	}
	names, addresses := map[string]int{}, map[string]int{}
	for i := range s.Mailboxes {
		m := &s.Mailboxes[i]
		at := indexPath("seeds.mailboxes", i)
		v.uniqueName(at+".name", m.Name, names, "seeds.mailboxes", i)
		if !providers[m.Provider] {
			v.add(at+".provider", "%q is not a provider (built in or under providers)", m.Provider)
		}
		if a, err := mail.ParseAddress(m.Address); err != nil || a.Address != m.Address || a.Name != "" {
			v.add(at+".address", "%q is not a plain address such as seed1@gmail.com", m.Address)
		} else if k, dup := addresses[strings.ToLower(m.Address)]; dup {
			v.add(at+".address", "%s is already the address of seeds.mailboxes[%d]", m.Address, k)
		} else {
			addresses[strings.ToLower(m.Address)] = i
		}
		if m.Junk == "" || len(m.Junk) > maxSeedFolderNameLength || strings.ContainsAny(m.Junk, "\r\n\x00") {
			v.add(at+".junk", "must be auto or a folder name of at most %d characters on one line", maxSeedFolderNameLength)
		} else if strings.EqualFold(m.Junk, "INBOX") {
			v.add(at+".junk", "must not be INBOX: the inbox is watched as the inbox")
		}
		v.seedIMAP(c, at+".imap", &m.IMAP)
	}
	for i, t := range c.Tenants {
		if t.Seeding == nil {
			continue
		}
		at := indexPath("tenants", i) + ".seeding"
		if t.Seeding.Every < 1 {
			v.add(at+".every", "must be at least 1, not %d", t.Seeding.Every)
		}
		if t.Seeding.Interval < minSeedingInterval {
			v.add(at+".interval", "must be at least %s, not %s", minSeedingInterval, t.Seeding.Interval)
		}
		if len(s.Mailboxes) == 0 {
			v.add(at, "there are no seeds.mailboxes to seed")
		}
	}
}

func (v *validator) seedIMAP(c *Config, at string, m *SeedIMAP) {
	if m.Addr == "" {
		v.add(at+".addr", "required")
	} else {
		v.hostPort(at+".addr", m.Addr, true)
	}
	switch m.TLS {
	case IMAPImplicit, IMAPStartTLS:
	case IMAPNoTLS:
		// Credentials in the clear only to this machine.
		if host, _, err := net.SplitHostPort(m.Addr); err == nil && !isLoopbackHost(host) {
			v.add(at+".tls", "none is only allowed to a loopback address, not %s", host)
		}
	default:
		v.add(at+".tls", "%q is not implicit, starttls or none", m.TLS)
	}
	abs := func(p *string) {
		if *p != "" && c.Path != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(filepath.Dir(c.Path), *p)
		}
	}
	abs(&m.CAFile)
	if m.CAFile != "" {
		v.file(at+".ca_file", m.CAFile)
	}
	if m.Username == "" {
		v.add(at+".username", "required")
	}
	switch o := m.OAuth2; {
	case o == nil && m.PasswordFile == "":
		v.add(at, "give password_file or oauth2")
	case o != nil && m.PasswordFile != "":
		v.add(at, "give password_file or oauth2, not both")
	case o == nil:
		abs(&m.PasswordFile)
		if v.file(at+".password_file", m.PasswordFile) {
			v.secretFile(at+".password_file", m.PasswordFile, "")
		}
	default:
		v.seedOAuth(at+".oauth2", o, abs)
	}
}

func (v *validator) seedOAuth(at string, o *SeedOAuth, abs func(*string)) {
	secret := func(key string, p *string) {
		abs(p)
		if *p == "" {
			v.add(at+"."+key, "required")
		} else if v.file(at+"."+key, *p) {
			v.secretFile(at+"."+key, *p, "")
		}
	}
	if o.TokenFile != "" {
		if o.TokenURL != "" || o.ClientID != "" || o.ClientSecretFile != "" || o.RefreshTokenFile != "" {
			v.add(at, "give token_file, or token_url with client_id, client_secret_file and refresh_token_file, not both")
			return
		}
		secret("token_file", &o.TokenFile)
		return
	}
	if msg := webhookURLProblem(o.TokenURL); o.TokenURL == "" || msg != "" {
		v.add(at+".token_url", "give token_file, or an https token_url %s", msg)
	}
	if o.ClientID == "" {
		v.add(at+".client_id", "required with token_url")
	}
	secret("client_secret_file", &o.ClientSecretFile)
	secret("refresh_token_file", &o.RefreshTokenFile)
}
