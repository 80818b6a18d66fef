// Package kit is the allowlisting kit: what a receiving mail admin needs
// to let one tenant's certificate mail through, narrowly, built from the
// live configuration so that it never drifts from what certgate sends.
// It states the sender's identity as receivers see it, then the narrowest
// setting per receiving system, in es, pt-BR, fr and en, as Markdown,
// HTML or JSON. Everything it shows is already visible to any receiver
// in the mail's headers and in DNS, so the page may be public.
package kit

import (
	"errors"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/certgate/certgate/config"
)

// ErrUnknownTenant is a tenant the configuration does not have.
var ErrUnknownTenant = errors.New("no such tenant")

// MaxTenantName bounds the tenant names the public page looks up.
const MaxTenantName = 64

// AttachmentTypes are the file types certificate mail carries: the
// certificate itself (PEM, DER, PKCS#7 chains), the key pair (PKCS#12),
// a PDF with instructions or a voucher, and ZIP bundles of them.
var AttachmentTypes = []string{".pdf", ".p12", ".pfx", ".cer", ".crt", ".pem", ".p7b", ".zip"}

// Signature is one DKIM key receivers see in the DKIM-Signature header.
type Signature struct {
	Domain   string `json:"d"`
	Selector string `json:"s"`
}

// Identity is the sender as receivers see it, for one tenant.
type Identity struct {
	Tenant string `json:"tenant"`
	// Issuer is the tenant's display name (shown on the gate pages too).
	Issuer      string   `json:"issuer"`
	FromDomains []string `json:"from_domains"`
	// EnvelopeDomains are the Return-Path domains: certgate keeps the
	// submitter's MAIL FROM, which must be one of the tenant's domains
	// or a subdomain of one.
	EnvelopeDomains []string    `json:"envelope_domains"`
	DKIM            []Signature `json:"dkim"`
	SourceAddresses []string    `json:"source_addresses"`
	HELO            string      `json:"helo"`
	// GateHost is the host the mail's download links point to; "" when
	// the tenant's links are not gated.
	GateHost        string   `json:"gate_host,omitempty"`
	AttachmentTypes []string `json:"attachment_types"`
	SupportEmail    string   `json:"support_email,omitempty"`
	SupportURL      string   `json:"support_url,omitempty"`
}

// IdentityOf reads tenant's identity from cfg; ErrUnknownTenant when cfg
// has no such tenant.
func IdentityOf(cfg *config.Config, tenant string) (Identity, error) {
	i := slices.IndexFunc(cfg.Tenants, func(t config.Tenant) bool { return t.Name == tenant })
	if i < 0 {
		return Identity{}, ErrUnknownTenant
	}
	t := cfg.Tenants[i]
	id := Identity{
		Tenant: t.Name, Issuer: t.DisplayName, HELO: cfg.Hostname,
		FromDomains:     slices.Clone(t.FromDomains),
		EnvelopeDomains: slices.Clone(t.FromDomains),
		SourceAddresses: slices.Clone(cfg.Delivery.SourceAddresses),
		AttachmentTypes: slices.Clone(AttachmentTypes),
		SupportEmail:    t.Support.Email, SupportURL: t.Support.URL,
		DKIM: []Signature{},
	}
	if id.Issuer == "" {
		id.Issuer = t.Name
	}
	if id.SourceAddresses == nil {
		id.SourceAddresses = []string{}
	}
	// A key signs a tenant's mail when the tenant owns its domain (the
	// signer's rule, gateway/signer KeysFor with Tenant.Owns).
	owners := config.NewDomainOwners(cfg.Tenants)
	for _, k := range cfg.DKIM {
		if owners.Owner(k.Domain) == t.Name {
			id.DKIM = append(id.DKIM, Signature{Domain: strings.ToLower(k.Domain), Selector: k.Selector})
		}
	}
	if len(t.Links.Gate) > 0 {
		if u, err := url.Parse(cfg.HTTP.PublicURL); err == nil {
			id.GateHost = u.Hostname()
		}
	}
	return id, nil
}

// Directory hands out kits from the configuration in force; the daemon
// replaces it when it reloads keys, so the selectors stay current.
type Directory struct {
	cfg atomic.Pointer[config.Config]
}

// NewDirectory serves kits from cfg.
func NewDirectory(cfg *config.Config) *Directory {
	d := &Directory{}
	d.Set(cfg)
	return d
}

// Set replaces the configuration kits are built from.
func (d *Directory) Set(cfg *config.Config) { d.cfg.Store(cfg) }

// Kit builds tenant's kit in lang (one of Languages; anything else is
// English).
func (d *Directory) Kit(tenant, lang string) (*Kit, error) {
	id, err := IdentityOf(d.cfg.Load(), tenant)
	if err != nil {
		return nil, err
	}
	return Build(id, lang), nil
}
