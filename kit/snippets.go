package kit

import (
	"regexp"
	"strings"
)

// snippets are what an admin pastes for section name: built from the
// identity only, so they are the same in every language but for their
// labels.
func snippets(name string, id Identity, w words) []Snippet {
	switch name {
	case "m365":
		out := []Snippet{{w.CodeTransportRule, transportRule(id)}}
		if id.GateHost != "" {
			out = append(out, Snippet{w.CodeSafeLinks,
				"Set-SafeLinksPolicy -Identity '<Safe Links policy>' -DoNotRewriteUrls @{Add=" + psQuote(id.GateHost+"/*") + "}"})
		}
		return out
	case "cisco":
		return []Snippet{{w.CodeCisco, ciscoFilter(id)}}
	case "spamassassin":
		var sa4, sa34 strings.Builder
		for _, d := range id.FromDomains {
			sa4.WriteString("welcomelist_auth *@" + d + "\n")
			sa34.WriteString("whitelist_auth *@" + d + "\n")
		}
		return []Snippet{{w.CodeSA4, sa4.String()}, {w.CodeSA34, sa34.String()}}
	case "users":
		from := make([]string, len(id.FromDomains))
		for i, d := range id.FromDomains {
			from[i] = "@" + d
		}
		return []Snippet{{w.CodeGmailFilter, strings.Join(from, " OR ")}}
	}
	return nil
}

// transportRule is the Exchange Online mail flow rule: the From domain
// is the issuer's and Exchange Online's own Authentication-Results says
// DMARC passed, then skip spam filtering and say why in a header.
func transportRule(id Identity) string {
	domains := make([]string, len(id.FromDomains))
	for i, d := range id.FromDomains {
		domains[i] = psQuote(d)
	}
	name := "Allow DMARC-pass mail from " + id.Issuer
	if r := []rune(name); len(r) > 64 { // the rule name's limit
		name = string(r[:64])
	}
	return "New-TransportRule -Name " + psQuote(name) +
		" -FromScope NotInOrganization" +
		" -SenderDomainIs " + strings.Join(domains, ",") +
		" -HeaderContainsMessageHeader 'Authentication-Results'" +
		" -HeaderContainsWords 'dmarc=pass'" +
		" -SetSCL -1" +
		" -SetHeaderName 'X-ETR'" +
		" -SetHeaderValue " + psQuote("Bypass spam filtering for DMARC-authenticated sender "+strings.Join(id.FromDomains, " "))
}

// psQuote is s as a PowerShell single-quoted string, which expands
// nothing; a quote is doubled.
func psQuote(s string) string {
	return "'" + strings.NewReplacer("'", "''", "\u2018", "''", "\u2019", "''", "\r", " ", "\n", " ").Replace(s) + "'"
}

var filterNameUnsafe = regexp.MustCompile(`[^A-Za-z0-9_]`)

// ciscoFilter is an AsyncOS message filter that skips only the spam scan
// for mail whose From is one of the issuer's domains and whose DKIM
// signature verified; it runs after the mail flow policy's DMARC check.
func ciscoFilter(id Identity) string {
	quoted := make([]string, len(id.FromDomains))
	for i, d := range id.FromDomains {
		quoted[i] = strings.ReplaceAll(d, ".", `\\.`)
	}
	return "certgate_kit_" + filterNameUnsafe.ReplaceAllString(id.Tenant, "_") + ":\n" +
		`if (header('From') == "(?i)@(` + strings.Join(quoted, "|") + `)>?$") and (dkim-authentication == "pass") {` + "\n" +
		"    skip-spamcheck();\n}\n."
}
