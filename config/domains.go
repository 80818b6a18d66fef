package config

import "strings"

// DomainOwners says which tenant a sending domain belongs to. A domain
// belongs to the tenant that claims it most specifically in from_domains:
// itself, else its closest claimed parent. With tenant ca claiming
// ca.example and tenant sub claiming sub.ca.example, mail from
// x.sub.ca.example is sub's and mail from ca.example is ca's; neither may
// send as the other, nor sign with the other's keys. Validation refuses
// one domain claimed by two tenants, so the owner is never ambiguous.
type DomainOwners map[string]string // claimed domain -> tenant name

// NewDomainOwners reads the tenants' from_domains (already normalized by
// validation: lower case, no trailing dot).
func NewDomainOwners(tenants []Tenant) DomainOwners {
	o := DomainOwners{}
	for _, t := range tenants {
		for _, d := range t.FromDomains {
			if _, taken := o[d]; !taken {
				o[d] = t.Name
			}
		}
	}
	return o
}

// Owner is the tenant that owns domain, or "" when no tenant claims it or
// a parent of it.
func (o DomainOwners) Owner(domain string) string {
	d := strings.TrimSuffix(strings.ToLower(domain), ".")
	for d != "" {
		if t, ok := o[d]; ok {
			return t
		}
		_, parent, found := strings.Cut(d, ".")
		if !found {
			break
		}
		d = parent
	}
	return ""
}
