package demo

import (
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/certgate/certgate/sim"
)

// provider is one simulated receiving provider and the recipient
// domains it hosts, each with the MX host name real DNS would give.
type provider struct {
	name    string
	ip      string
	domains map[string]string // recipient domain -> MX host
}

// receiverFaults is what --faults makes the simulated receivers do, seeded so
// that a run repeats: every fault is temporary, so every copy still lands.
var receiverFaults = map[string]sim.Faults{
	"microsoft": {Seed: 4, Rcpt451: 0.05, Data451: 0.03, DropMidData: 0.03},
	"yahoo":     {Seed: 5, Greylist: 3 * time.Second},
}

// providers are the receivers the demo delivers to; the issuer's own MX
// receives the DSN.
var providers = []provider{
	{"google", "127.0.0.11", map[string]string{"gmail.com": "gmail-smtp-in.l.google.com", "empresa.example": "aspmx.l.google.com"}},
	{"microsoft", "127.0.0.12", map[string]string{"outlook.com": "outlook-com.olc.protection.outlook.com", "contoso.example": "contoso-example.mail.protection.outlook.com"}},
	{"yahoo", "127.0.0.13", map[string]string{"yahoo.com": "mta5.am0.yahoodns.net"}},
	{"issuer", "127.0.0.14", map[string]string{"ca.example": "mx.ca.example", "certs.example": "mx.certs.example", "ac.example": "mx.ac.example"}},
}

// portalDomain is the portal tenant's: nested in certs.example, which the
// issuer tenant claims, so it is the portal's as the more specific claim.
const portalDomain = "portal.certs.example"

// bounceAddress is refused by the simulated Microsoft MX, to show a DSN.
const bounceAddress = "no.such.user@contoso.example"

// startProviders starts the simulated providers, all on one port as real
// MXes are all on 25, and returns them in providers' order.
func startProviders(lookupTXT func(string) ([]string, error), faults bool) ([]*sim.Provider, int, error) {
	var opts []sim.Options
	for _, p := range providers {
		o := sim.Options{Name: p.name, Domains: slices.Collect(maps.Keys(p.domains)), MXHost: firstMX(p), IP: p.ip, LookupTXT: lookupTXT}
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
