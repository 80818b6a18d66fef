package config

import "testing"

func TestDomainOwnersMostSpecificClaimWins(t *testing.T) {
	o := NewDomainOwners([]Tenant{
		{Name: "ca", FromDomains: []string{"ca.example", "ca.example.org"}},
		{Name: "sub", FromDomains: []string{"sub.ca.example"}},
	})
	for domain, want := range map[string]string{
		"ca.example":           "ca",
		"mail.ca.example":      "ca",
		"sub.ca.example":       "sub",
		"x.sub.ca.example":     "sub",
		"SUB.CA.EXAMPLE.":      "sub",
		"notsub.ca.example":    "ca",
		"ca.example.org":       "ca",
		"example":              "",
		"other.example":        "",
		"xca.example":          "",
		"sub.ca.example.other": "",
	} {
		if got := o.Owner(domain); got != want {
			t.Errorf("Owner(%q) = %q, want %q", domain, got, want)
		}
	}
}
