package kit

import (
	"strings"

	"github.com/certgate/certgate/internal/lang"
)

// Kit is one tenant's allowlisting kit in one language.
type Kit struct {
	Lang      string    `json:"lang"`
	Title     string    `json:"title"`
	Intro     string    `json:"intro"`
	Principle string    `json:"principle"`
	Identity  Identity  `json:"identity"`
	Facts     []Fact    `json:"-"` // Identity as a person reads it
	Sections  []Section `json:"sections"`
	// Labels are the rendered pages' own words.
	Labels Labels `json:"-"`
}

// Fact is one line of the sender's identity, labelled.
type Fact struct {
	Label  string
	Values []string
}

// Section is the narrowest allowlisting for one receiving system.
type Section struct {
	ID      string    `json:"id"`
	Title   string    `json:"title"`
	Why     string    `json:"why"`
	Steps   []string  `json:"steps"`
	Code    []Snippet `json:"code,omitempty"`
	Limits  []string  `json:"limits,omitempty"`
	Sources []string  `json:"sources"` // the vendor documentation the steps follow
}

// Snippet is text to paste: a command or configuration lines.
type Snippet struct {
	Label string `json:"label"`
	Text  string `json:"text"`
}

// Labels are headings and captions of the rendered kit.
type Labels struct {
	Identity, Steps, Limits, Sources, Contents, Support string
}

// Languages are the kit's languages.
var Languages = []string{"en", "es", "fr", "pt-BR"}

// Negotiate picks the kit's language: ?lang= when it names one of
// Languages, else the browser's Accept-Language, else English.
func Negotiate(query, acceptLanguage string) string {
	if len(query) <= 16 {
		if l := lang.Match(query, Languages); l != "" {
			return l
		}
	}
	return lang.Pick(acceptLanguage, Languages, "en")
}

// sources are the vendor pages each section follows (docs/kit.md lists
// them too).
var sources = map[string][]string{
	"m365": {
		"https://learn.microsoft.com/defender-office-365/create-safe-sender-lists-in-office-365#use-mail-flow-rules",
		"https://learn.microsoft.com/powershell/module/exchange/new-transportrule",
		"https://learn.microsoft.com/exchange/mail-flow-best-practices/use-connectors-to-configure-mail-flow/enhanced-filtering-for-connectors",
		"https://learn.microsoft.com/defender-office-365/safe-links-about#entry-syntax-for-the-do-not-rewrite-the-following-urls-list",
		"https://learn.microsoft.com/defender-office-365/tenant-allow-block-list-about",
	},
	"google": {
		"https://support.google.com/a/answer/2368132",
		"https://support.google.com/a/answer/60730",
		"https://support.google.com/a/answer/60751",
	},
	"proofpoint": {
		"https://help.proofpoint.com/Proofpoint_Essentials/Email_Security/Administrator_Topics/090_filtersandsenderlists/Essentials_Filters%3A_Expanded_overview",
		"https://help.proofpoint.com/Essentials/Additional_Resources/Support_Knowledge_Base/Email_Security/KB_How_To_Bypass_Anti-Spoofing_Checks",
		"https://help.proofpoint.com/Proofpoint_Essentials/Email_Security/Administrator_Topics/Other_Features/Troubleshooting_issues_with_URL_Defense",
	},
	"mimecast": {
		"https://mimecastsupport.zendesk.com/hc/en-us/articles/34000390156947",
		"https://mimecastsupport.zendesk.com/hc/en-us/articles/34000340541587",
		"https://mimecastsupport.zendesk.com/hc/en-us/articles/34000414469267-Targeted-Threat-Protection-URL-Protect-Managed-URLs",
	},
	"cisco": {
		"https://www.cisco.com/c/en/us/support/docs/security/email-security-appliance/118775-technote-esa-00.html",
		"https://www.cisco.com/c/en/us/support/security/email-security-appliance/products-user-guide-list.html",
	},
	"barracuda": {
		"https://campus.barracuda.com/product/emailgatewaydefense/doc/96022989/sender-authentication",
		"https://campus.barracuda.com/doc/96023020/",
		"https://campus.barracuda.com/product/emailgatewaydefense/doc/96023012/understanding-link-protection",
	},
	"spamassassin": {
		"https://spamassassin.apache.org/doc/Mail_SpamAssassin_Conf.html",
		"https://cwiki.apache.org/confluence/display/SPAMASSASSIN/WelcomelistBlocklist",
		"https://wiki.zimbra.com/wiki/SpamAssassin_Customizations",
	},
	"users": {
		"https://support.microsoft.com/office/be1baea0-beab-4a30-b968-9004332336ce",
		"https://support.google.com/mail/answer/6579",
		"https://help.yahoo.com/",
		"https://support.apple.com/guide/mail/change-junk-mail-preferences-cpmlprefjunk/mac",
	},
}

// sectionOrder is the order of the receiving systems on the page.
var sectionOrder = []string{"m365", "google", "proofpoint", "mimecast", "cisco", "barracuda", "spamassassin", "users"}

// Build is id's kit in lang (English for a language the kit lacks).
func Build(id Identity, l string) *Kit {
	w, ok := texts[l]
	if !ok {
		l, w = "en", texts["en"]
	}
	fill := filler(id)
	k := &Kit{Lang: l, Identity: id, Title: fill(w.Title), Intro: fill(w.Intro), Principle: fill(w.Principle), Labels: w.Labels}
	dkim := make([]string, len(id.DKIM))
	for i, s := range id.DKIM {
		dkim[i] = "d=" + s.Domain + "; s=" + s.Selector + " (" + s.Selector + "._domainkey." + s.Domain + ")"
	}
	k.Facts = []Fact{
		{w.FactFrom, id.FromDomains},
		{w.FactEnvelope, id.EnvelopeDomains},
		{w.FactDKIM, orNone(dkim, w.None)},
		{w.FactIPs, orNone(id.SourceAddresses, w.None)},
		{w.FactHELO, []string{id.HELO}},
		{w.FactGate, orNone(nonEmpty(id.GateHost), w.NoGate)},
		{w.FactAttach, []string{strings.Join(id.AttachmentTypes, " ")}},
	}
	for _, name := range sectionOrder {
		sw := w.Sections[name]
		s := Section{ID: name, Title: sw.Title, Why: fill(sw.Why), Sources: sources[name]}
		s.Steps = applicable(sw.Steps, id, fill)
		s.Limits = applicable(sw.Limits, id, fill)
		s.Code = snippets(name, id, w)
		k.Sections = append(k.Sections, s)
	}
	return k
}

// applicable fills the texts in, leaving out those about a gate host
// ("gate:") or sending addresses ("ips:") the tenant does not have.
func applicable(texts []string, id Identity, fill func(string) string) []string {
	out := []string{}
	for _, t := range texts {
		if rest, ok := strings.CutPrefix(t, "gate:"); ok {
			if id.GateHost == "" {
				continue
			}
			t = rest
		}
		if rest, ok := strings.CutPrefix(t, "ips:"); ok {
			if len(id.SourceAddresses) == 0 {
				continue
			}
			t = rest
		}
		out = append(out, fill(t))
	}
	return out
}

// filler replaces the placeholders of the texts with id's values.
func filler(id Identity) func(string) string {
	r := strings.NewReplacer(
		"{issuer}", id.Issuer,
		"{domains}", strings.Join(id.FromDomains, ", "),
		"{gate}", id.GateHost,
		"{ips}", strings.Join(id.SourceAddresses, ", "),
		"{types}", strings.Join(id.AttachmentTypes, " "),
	)
	return r.Replace
}

func orNone(v []string, none string) []string {
	if len(v) == 0 {
		return []string{none}
	}
	return v
}

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}
