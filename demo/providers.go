package demo

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/certgate/certgate/sim"
)

// provider is one simulated receiving provider, the recipient domains it
// hosts, each with the MX host name real DNS would give, how its filter
// files what it accepts, and the seed mailbox certgate watches there.
type provider struct {
	name    string
	ip      string
	domains map[string]string // recipient domain -> MX host
	brand   string            // the name people know it by
	lanes   []string          // the shaping lanes that deliver to it
	filing  sim.Filing
	// distrust: it throttles a sender who pushes it too hard and junks
	// its bulk until it has been calm for a while (sim.Distrust).
	distrust *sim.Distrust
	seed     *seedMailbox // nil: no seed mailbox here
}

// seedMailbox is a seed account at a simulated provider.
type seedMailbox struct {
	name    string // seeds.mailboxes[].name
	lane    string // the provider (lane) whose placement it measures
	address string
	junk    string // the provider's junk folder
	// noSpecialUse: LIST marks no folder \Junk, as at Exchange Online, so
	// the watcher finds the junk folder by its name.
	noSpecialUse bool
}

// receiverFaults is what --faults makes the simulated receivers do, seeded so
// that a run repeats: every fault is temporary, so every copy still lands.
var receiverFaults = map[string]sim.Faults{
	"microsoft": {Seed: 4, Rcpt451: 0.05, Data451: 0.03, DropMidData: 0.03},
	"yahoo":     {Seed: 5, Greylist: 3 * time.Second},
}

// providers are the receivers the demo delivers to; the issuer's own MX
// receives the DSN. Their filters are simple rules, one line each, so the
// placement the seed mailboxes report can be explained. Microsoft is the
// distrustful one: it counts every recipient it is offered, for
// outlook.com and contoso.example alike, so the outlook and microsoft365
// lanes together (15/s + 20/s) push it over its 25/s. It answers 451
// 4.7.650 and junks bulk until it has been calm for a while; certgate's
// rules slow both lanes (to 7.5/s + 10/s), and their rates climb back once
// the slowdown ends (see config.go's closedLoop).
var providers = []provider{
	{name: "google", ip: "127.0.0.11", domains: map[string]string{"gmail.com": "gmail-smtp-in.l.google.com", "empresa.example": "aspmx.l.google.com"},
		brand: "Google", lanes: []string{"gmail"}, seed: &seedMailbox{name: "gmail-1", lane: "gmail", address: "seed.gmail@gmail.com", junk: "[Gmail]/Spam"}},
	{name: "microsoft", ip: "127.0.0.12", domains: map[string]string{"outlook.com": "outlook-com.olc.protection.outlook.com", "contoso.example": "contoso-example.mail.protection.outlook.com"},
		brand: "Microsoft", lanes: []string{"outlook", "microsoft365"}, filing: sim.Filing{Microsoft: true},
		distrust: &sim.Distrust{ThrottleAbove: 25, Window: time.Second, Calm: distrustCalm, BulkOnly: true},
		seed:     &seedMailbox{name: "outlook-1", lane: "outlook", address: "seed.outlook@outlook.com", junk: "Junk Email", noSpecialUse: true}},
	{name: "yahoo", ip: "127.0.0.13", domains: map[string]string{"yahoo.com": "mta5.am0.yahoodns.net"},
		brand: "Yahoo", lanes: []string{"yahoo"}, filing: sim.Filing{JunkEvery: 3},
		seed: &seedMailbox{name: "yahoo-1", lane: "yahoo", address: "seed.yahoo@yahoo.com", junk: "Bulk"}},
	{name: "issuer", ip: "127.0.0.14", domains: map[string]string{"ca.example": "mx.ca.example", "certs.example": "mx.certs.example", "ac.example": "mx.ac.example"},
		brand: "the issuer's MX", lanes: []string{"default"}},
}

// distrustCalm is how long the simulated Microsoft must go without
// refusing before it trusts again (ten minutes by default; seconds here).
const distrustCalm = 3 * time.Second

// seedEvery is tenants[].seeding.every of the issuer: a seed copy of one
// bulk message in every seedEvery, about 10 of the 300 of the wave.
const seedEvery = 30

// seedings is how many of n bulk messages certgate seeds: the first, then
// every seedEvery-th (the wave is over long before seeding's interval).
func seedings(n int) int {
	return (n + seedEvery - 1) / seedEvery
}

// seedMailboxes are the seed mailboxes, in providers' order.
func seedMailboxes() []seedMailbox {
	var out []seedMailbox
	for _, p := range providers {
		if p.seed != nil {
			out = append(out, *p.seed)
		}
	}
	return out
}

// isSeed says whether addr is a seed mailbox's: its copies are certgate's
// own measurement, not a customer's delivery.
func isSeed(addr string) bool {
	return slices.ContainsFunc(seedMailboxes(), func(s seedMailbox) bool { return strings.EqualFold(s.address, addr) })
}

// seedPasswords are fresh passwords for the seed accounts, by address.
func seedPasswords() map[string]string {
	pw := map[string]string{}
	for _, s := range seedMailboxes() {
		pw[s.address] = randomHex(12)
	}
	return pw
}

// rule says in words what a provider's filter does, after its name:
// "junks every third copy it stores".
func (p provider) rule() string {
	f := p.filing
	var rules []string
	if d := p.distrust; d != nil {
		junked := "what it takes"
		if d.BulkOnly {
			junked = "bulk"
		}
		rules = append(rules, fmt.Sprintf("throttles above %g/s (451 4.7.650) and junks %s while pushed, until calm for %s", d.ThrottleAbove, junked, d.Calm))
	}
	if f.JunkAboveRate > 0 {
		r := fmt.Sprintf("junks what arrives faster than %g/s", f.JunkAboveRate)
		if f.RateWindow > 0 && f.RateWindow != time.Second {
			r += " over " + f.RateWindow.String()
		}
		rules = append(rules, r)
	}
	if f.JunkEvery > 0 {
		what := "copy it stores"
		if f.BulkOnly {
			what = "bulk copy"
		}
		rules = append(rules, "junks every "+ordinal(f.JunkEvery)+what)
	}
	if f.JunkUnlessDKIMPass {
		rules = append(rules, "junks what fails DKIM")
	}
	if f.MoveAfter > 0 {
		rules = append(rules, fmt.Sprintf("moves every %scopy it filed in the inbox to junk %s later", ordinal(f.MoveEvery), f.MoveAfter))
	}
	if len(rules) == 0 {
		return "files everything in the inbox"
	}
	return strings.Join(rules, ", and ")
}

// scope says what a rate rule counts where the provider hosts several
// domains: ", counting contoso.example and outlook.com together".
func (p provider) scope() string {
	if p.filing.JunkAboveRate == 0 && p.distrust == nil || len(p.domains) < 2 {
		return ""
	}
	domains := strings.Join(slices.Sorted(maps.Keys(p.domains)), " and ")
	if p.distrust != nil {
		return "; it counts " + domains + " together"
	}
	return ", counting " + domains + " together"
}

// ordinal is "third " for 3, and "" for 0 and 1 (every copy).
func ordinal(n int) string {
	if n <= 1 {
		return ""
	}
	if n <= 5 {
		return []string{"second", "third", "fourth", "fifth"}[n-2] + " "
	}
	suffix := "th"
	if n%100 < 11 || n%100 > 13 {
		suffix = map[int]string{1: "st", 2: "nd", 3: "rd"}[n%10]
		if suffix == "" {
			suffix = "th"
		}
	}
	return fmt.Sprintf("%d%s ", n, suffix)
}

// portalDomain is the portal tenant's: nested in certs.example, which the
// issuer tenant claims, so it is the portal's as the more specific claim.
const portalDomain = "portal.certs.example"

// bounceAddress is refused by the simulated Microsoft MX, to show a DSN.
const bounceAddress = "no.such.user@contoso.example"

// startProviders starts the simulated providers, all on one port as real
// MXes are all on 25, each with its seed account (passwords by address)
// on its own IMAP port, and returns them in providers' order.
func startProviders(lookupTXT func(string) ([]string, error), faults bool, passwords map[string]string) ([]*sim.Provider, int, error) {
	var opts []sim.Options
	for _, p := range providers {
		o := sim.Options{Name: p.name, Domains: slices.Collect(maps.Keys(p.domains)), MXHost: firstMX(p), IP: p.ip, LookupTXT: lookupTXT,
			Filing: p.filing, Distrust: p.distrust}
		if s := p.seed; s != nil {
			o.IMAP = &sim.IMAPOptions{Accounts: map[string]string{s.address: passwords[s.address]}, Junk: s.junk, NoSpecialUse: s.noSpecialUse}
		}
		if faults {
			o.Faults = receiverFaults[p.name]
		}
		if p.name == "microsoft" {
			o.Respond = refuseBounceAddress
		}
		opts = append(opts, o)
	}
	return sim.StartGroup(opts)
}

// refuseBounceAddress is the simulated Microsoft's RCPT reply: it knows
// every user but one.
func refuseBounceAddress(_, rcpt string) *smtp.SMTPError {
	if strings.EqualFold(rcpt, bounceAddress) {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "Recipient address rejected: user unknown"}
	}
	return nil
}

// named is the started provider called name.
func named(sims []*sim.Provider, name string) *sim.Provider {
	for _, s := range sims {
		if s.Name() == name {
			return s
		}
	}
	panic("demo: no provider " + name)
}

func closeProviders(sims []*sim.Provider) {
	for _, s := range sims {
		s.Close()
	}
}

// firstMX is the name a provider greets with: the first of its MX hosts.
func firstMX(p provider) string {
	return slices.Sorted(maps.Values(p.domains))[0]
}

func providerOf(addr string) string {
	domain := addr[strings.LastIndexByte(addr, '@')+1:]
	for _, p := range providers {
		if _, ok := p.domains[domain]; ok {
			return p.name
		}
	}
	return ""
}
