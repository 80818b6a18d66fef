package dnscheck

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// Bulk is where one From domain stands against one receiver's
// requirements for bulk senders (docs/dns.md has their sources).
type Bulk struct {
	Tenant   string   `json:"tenant"`
	Domain   string   `json:"domain"`
	Receiver string   `json:"receiver"` // gmail, yahoo, microsoft
	Met      bool     `json:"met"`
	Missing  []string `json:"missing"`
}

// Requirements a receiver holds bulk senders to.
const (
	ReqSPF     = "spf"     // SPF passes for the envelope domain
	ReqDKIM    = "dkim"    // a DKIM signature verifies
	ReqDMARC   = "dmarc"   // a DMARC record, p=none at least
	ReqAligned = "aligned" // DMARC passes: aligned SPF or DKIM
	ReqPTR     = "ptr"     // forward-confirmed reverse DNS of every sending address
	ReqTLS     = "tls"     // mail goes over TLS
)

// receivers are the bulk-sender requirements of Gmail (5,000 a day and
// more, February 2024), Yahoo (February 2024) and Outlook.com (5,000 a day
// and more, May 2025): Microsoft lists reverse DNS and TLS as good
// practice, not as requirements.
var receivers = []struct {
	name string
	reqs []string
}{
	{"gmail", []string{ReqSPF, ReqDKIM, ReqDMARC, ReqAligned, ReqPTR, ReqTLS}},
	{"yahoo", []string{ReqSPF, ReqDKIM, ReqDMARC, ReqAligned, ReqPTR, ReqTLS}},
	{"microsoft", []string{ReqSPF, ReqDKIM, ReqDMARC, ReqAligned}},
}

// bulk judges each From domain's requirements from its rows.
func (r *run) bulk() []Bulk {
	out := []Bulk{}
	for _, d := range r.in.Domains {
		st := func(check string) Status { return r.status[[2]string{d.Name, check}] }
		dkim := false
		for _, s := range d.Signers {
			dkim = dkim || r.keyOK[s]
		}
		ptr := len(r.in.Addresses) > 0
		for _, ip := range r.in.Addresses {
			ptr = ptr && r.status[[2]string{ip.String(), CheckPTR}] != Fail
		}
		met := map[string]bool{
			ReqSPF:     st(CheckSPF) == Pass,
			ReqDKIM:    dkim,
			ReqDMARC:   st(CheckDMARC) == Pass || st(CheckDMARC) == Warn,
			ReqAligned: st(CheckAlignment) != Fail && st(CheckDMARC) != Fail,
			ReqPTR:     ptr,
			ReqTLS:     r.in.TLS,
		}
		for _, rc := range receivers {
			b := Bulk{Tenant: d.Tenant, Domain: d.Name, Receiver: rc.name, Met: true, Missing: []string{}}
			for _, req := range rc.reqs {
				if !met[req] {
					b.Met = false
					b.Missing = append(b.Missing, req)
				}
			}
			out = append(out, b)
		}
	}
	return out
}

// WriteTable writes the report for a person: one line per check, the
// record to publish under each failure, the bulk-sender summary, and the
// counts.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DOMAIN\tCHECK\tSTATUS\tDETAIL")
	for _, row := range r.Rows {
		check := row.Check
		if row.Subject != "" {
			check += " " + row.Subject
		}
		status := string(row.Status)
		if row.Status == Fail || row.Status == Warn {
			status = strings.ToUpper(status)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", row.Domain, check, status, oneLine(row.Detail))
		if row.Publish != "" && row.Status != Pass {
			fmt.Fprintf(tw, "\t\t\t  publish: %s\n", oneLine(row.Publish))
		}
	}
	if len(r.Bulk) > 0 {
		fmt.Fprintln(tw, "\nBULK SENDERS\tRECEIVER\tMET\tMISSING")
		for _, b := range r.Bulk {
			met := "yes"
			if !b.Met {
				met = "NO"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", b.Domain, b.Receiver, met, strings.Join(b.Missing, ", "))
		}
	}
	fmt.Fprintf(tw, "\n%d failed, %d warnings, %d advice, %d passed (resolver %s, %s)\n",
		r.Count(Fail), r.Count(Warn), r.Count(Advice), r.Count(Pass), r.Resolver, r.Time.Format("2006-01-02 15:04:05Z"))
	return tw.Flush()
}

// oneLine keeps a value that came from DNS from breaking the table.
func oneLine(s string) string {
	return strings.Map(func(c rune) rune {
		if c < 0x20 || c == 0x7f {
			return ' '
		}
		return c
	}, s)
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
