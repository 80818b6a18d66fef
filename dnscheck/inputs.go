// Package dnscheck holds the DNS that receivers read about certgate's mail
// against the live configuration: SPF for every sending address, each
// DKIM key's record, DMARC and the alignment certgate enforces, reverse
// DNS and the HELO name, the envelope domain's MX, and advice on MTA-STS,
// TLS-RPT and DNSSEC. Every failure comes with the record to publish.
//
// It asks one recursive resolver with github.com/miekg/dns and bounds
// what it takes from each answer; SPF is evaluated by
// blitiri.com.ar/go/spf over that resolver.
package dnscheck

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/gateway/signer"
)

// Inputs are what the check holds DNS against, read from the live
// configuration by FromConfig so that they cannot drift from what
// certgate sends.
type Inputs struct {
	// Hostname is the HELO name (hostname).
	Hostname string
	// Addresses are the sending addresses receivers see
	// (delivery.source_addresses).
	Addresses []netip.Addr
	// Domains are the From domains. They are the envelope (MAIL FROM)
	// domains too: certgate keeps the submitter's envelope sender, which
	// must be in the tenant's domains, and sends DSNs back to it.
	Domains []Domain
	// Keys are the DKIM keys of the tenants checked.
	Keys []Key
	// TLS is false when a delivery route never uses STARTTLS (tls: none).
	TLS bool
}

// Domain is a From domain and the keys certgate signs its mail with.
type Domain struct {
	Name    string
	Tenant  string
	Signers []KeyID // the keys signer.KeysFor picks for it
}

// KeyID names a DKIM key by its d= and s=.
type KeyID struct{ Domain, Selector string }

// Name is the key record's owner name, <selector>._domainkey.<domain>.
func (k KeyID) Name() string { return k.Selector + "._domainkey." + k.Domain }

// Key is a loaded DKIM key as the check needs it.
type Key struct {
	KeyID
	Tenant    string
	Algorithm string // signer.AlgRSASHA256 or signer.AlgEd25519SHA256
	Bits      int
	Record    string // the TXT value that publishes it (signer.Key.DNSRecord)
}

// FromConfig reads the inputs for one tenant, or every tenant when tenant
// is "", loading the DKIM keys from their files.
func FromConfig(cfg *config.Config, tenant string) (Inputs, error) {
	in := Inputs{Hostname: cfg.Hostname, TLS: true}
	for _, a := range cfg.Delivery.SourceAddresses {
		ip, err := netip.ParseAddr(a)
		if err != nil {
			return in, fmt.Errorf("delivery.source_addresses: %w", err)
		}
		in.Addresses = append(in.Addresses, ip.Unmap())
	}
	for _, r := range cfg.Delivery.Routes {
		if r.TLS == config.TLSNone {
			in.TLS = false
		}
	}
	owners := config.NewDomainOwners(cfg.Tenants)
	if tenant != "" && !slices.ContainsFunc(cfg.Tenants, func(t config.Tenant) bool { return t.Name == tenant }) {
		return in, fmt.Errorf("no tenant %q in the configuration", tenant)
	}
	checked := func(name string) bool { return tenant == "" || name == tenant }
	var loaded []*signer.Key
	for _, k := range cfg.DKIM {
		owner := owners.Owner(k.Domain)
		if !checked(owner) {
			continue
		}
		key, err := signer.LoadKey(k.Domain, k.Selector, k.KeyFile)
		if err != nil {
			return in, fmt.Errorf("dkim key %s/%s: %w", k.Domain, k.Selector, err)
		}
		loaded = append(loaded, key)
		in.Keys = append(in.Keys, KeyOf(owner, key))
	}
	sg := signer.New(loaded)
	for _, t := range cfg.Tenants {
		if !checked(t.Name) {
			continue
		}
		owns := func(d string) bool { return owners.Owner(d) == t.Name }
		for _, d := range t.FromDomains {
			dom := Domain{Name: d, Tenant: t.Name}
			for _, k := range sg.KeysFor(d, owns) {
				dom.Signers = append(dom.Signers, KeyID{k.Domain, k.Selector})
			}
			in.Domains = append(in.Domains, dom)
		}
	}
	return in, nil
}

// KeyOf is a loaded key of tenant as the check needs it.
func KeyOf(tenant string, k *signer.Key) Key {
	_, record := k.DNSRecord()
	return Key{KeyID: KeyID{k.Domain, k.Selector}, Tenant: tenant, Algorithm: k.Algorithm, Bits: k.Bits, Record: record}
}
