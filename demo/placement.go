package demo

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"
)

// The seed mailboxes report within a second or so of delivery; the demo
// waits that long at most for them, asking the API at a person's pace.
const (
	placementWait = 20 * time.Second
	placementPoll = 200 * time.Millisecond
)

// placementReport is GET /api/v1/placement, as far as the demo reads it.
type placementReport struct {
	Providers []providerPlacement `json:"providers"`
	Recent    []seedCopy          `json:"recent"` // the newest 50
}

// providerPlacement counts one lane's seed copies by folder.
type providerPlacement struct {
	Provider  string         `json:"provider"` // "" for copies not delivered yet
	Total     int            `json:"total"`
	Folders   map[string]int `json:"folders"`
	InboxRate *float64       `json:"inbox_rate"` // of the copies whose folder is known
}

// seedCopy is one seed copy's placement.
type seedCopy struct {
	Seed        string     `json:"seed"`
	Provider    string     `json:"provider"`
	Folder      string     `json:"folder"`
	MessageID   string     `json:"message_id"`
	DeliveredAt *time.Time `json:"delivered_at"`
	DetectedAt  *time.Time `json:"detected_at"`
	Verdicts    *verdicts  `json:"verdicts"`
}

// verdicts are what the receiver wrote into the copy's header.
type verdicts struct {
	SPF   string `json:"spf"`
	DKIM  string `json:"dkim"`
	DMARC string `json:"dmarc"`
	SCL   int    `json:"scl"` // Microsoft's; -1 when absent
	SFV   string `json:"sfv"`
	CAT   string `json:"cat"`
	BCL   int    `json:"bcl"` // -1 when absent
	Dest  string `json:"dest"`
}

// copies counts the seed copies certgate made, delivered or not.
func (r placementReport) copies() int {
	n := 0
	for _, p := range r.Providers {
		n += p.Total
	}
	return n
}

// pending counts the seed copies whose folder is not known yet.
func (r placementReport) pending() int {
	n := 0
	for _, p := range r.Providers {
		n += p.Folders["pending"]
	}
	return n
}

// getPlacement asks the API where the seed copies landed.
func getPlacement(base, token string) (placementReport, error) {
	var rep placementReport
	err := getAPI(&http.Client{Timeout: 5 * time.Second}, base, "/api/v1/placement", token, &rep)
	return rep, err
}

// waitPlacement asks the API until the seed copies certgate made, want at
// least, are all found, for timeout at most or until ctx ends. It returns
// the last report and how long it waited.
func waitPlacement(ctx context.Context, base, token string, want int, timeout time.Duration) (placementReport, time.Duration, error) {
	start := time.Now()
	for {
		rep, err := getPlacement(base, token)
		waited := time.Since(start)
		if err != nil || rep.copies() >= want && rep.pending() == 0 || waited >= timeout || ctx.Err() != nil {
			return rep, waited, err
		}
		select {
		case <-ctx.Done():
		case <-time.After(placementPoll):
		}
	}
}

// laneProvider is the simulated provider behind a seed's lane, or nil.
func laneProvider(lane string) *provider {
	for i, p := range providers {
		if p.seed != nil && p.seed.lane == lane {
			return &providers[i]
		}
	}
	return nil
}

// printPlacement shows where the seed copies landed per provider and
// why, how soon certgate knew, and what Microsoft said of one copy;
// waited is how long the demo waited for the report.
func printPlacement(out printer, rep placementReport, waited time.Duration) {
	out("\nplacement (seed copies, watched over IMAP IDLE)")
	out("  %-10s %6s %6s %5s %8s %11s   %s", "provider", "copies", "inbox", "junk", "missing", "inbox rate", "why")
	rows := slices.Clone(rep.Providers)
	order := func(lane string) int {
		if i := slices.IndexFunc(seedMailboxes(), func(s seedMailbox) bool { return s.lane == lane }); i >= 0 {
			return i
		}
		return len(providers)
	}
	slices.SortStableFunc(rows, func(a, b providerPlacement) int { return order(a.Provider) - order(b.Provider) })
	var elsewhere, notes []string
	for _, r := range rows {
		name, why := r.Provider, ""
		if name == "" {
			name = "(queued)" // not delivered yet, so in no lane yet
		}
		if p := laneProvider(r.Provider); p != nil {
			why = p.brand + " " + p.rule()
			if r.Folders["junk"] > 0 {
				notes = append(notes, sharedRate(r.Provider, p)...)
			}
		}
		rate := "-"
		if r.InboxRate != nil {
			rate = fmt.Sprintf("%.0f%%", *r.InboxRate*100)
		}
		out("  %-10s %6d %6d %5d %8d %11s   %s", name, r.Total, r.Folders["inbox"], r.Folders["junk"], r.Folders["missing"], rate, why)
		for _, f := range slices.Sorted(maps.Keys(r.Folders)) {
			if f != "inbox" && f != "junk" && f != "missing" && f != "pending" {
				elsewhere = append(elsewhere, fmt.Sprintf("%s %d %s", name, r.Folders[f], f))
			}
		}
	}
	if len(elsewhere) > 0 {
		out("  and: %s", strings.Join(elsewhere, ", "))
	}
	for _, n := range notes {
		out("  %s", n)
	}
	if n := rep.pending(); n > 0 {
		out("  %s still pending after %s: not found yet (a copy not found by seeds.deadline is missing)", howMany(n, "copy"), waited.Round(time.Second))
	}
	var found []time.Duration
	for _, c := range rep.Recent {
		if c.DeliveredAt != nil && c.DetectedAt != nil {
			found = append(found, max(c.DetectedAt.Sub(*c.DeliveredAt), 0))
		}
	}
	if len(found) > 0 {
		slices.Sort(found)
		out("  found in the seed mailboxes a median %s after the receiver's 250 (max %s, %d copies; IMAP IDLE on loopback)",
			fine(found[(len(found)-1)/2]), fine(found[len(found)-1]), len(found))
	}
	if c, ok := microsoftExample(rep.Recent); ok {
		v := c.Verdicts
		out("  what Microsoft wrote into a copy it filed in %s: dkim=%s dmarc=%s spf=%s, SCL %d (SFV %s, CAT %s), BCL %d, dest %s",
			c.Folder, orNone(v.DKIM), orNone(v.DMARC), orNone(v.SPF), v.SCL, v.SFV, v.CAT, v.BCL, v.Dest)
		out("  (GET /api/v1/messages/%s shows it with its message; GET /api/v1/placement has it all)", c.MessageID)
	}
}

// sharedRate explains a lane's junked copies where its provider's rate
// rule counts what other lanes send it too: each lane keeps to its rate,
// and the provider sees their sum.
func sharedRate(laneName string, p *provider) []string {
	limit := p.filing.JunkAboveRate
	if d := p.distrust; d != nil {
		limit = d.ThrottleAbove
	}
	own := perSecond(laneName)
	if limit == 0 || own == 0 || own > limit || len(p.lanes) < 2 {
		return nil
	}
	sum := own
	var others, names []string
	for _, l := range p.lanes {
		if l != laneName && perSecond(l) > 0 {
			sum += perSecond(l)
			others = append(others, fmt.Sprintf("%s sends %g/s", l, perSecond(l)))
			names = append(names, l)
		}
	}
	if sum <= limit {
		return nil
	}
	pad := strings.Repeat(" ", len(laneName))
	if p.distrust != nil {
		return []string{
			fmt.Sprintf("%s: its lane sends %g/s, under %s's %g/s; but %s to the same servers,", laneName, own, p.brand, limit, strings.Join(others, " and ")),
			fmt.Sprintf("%s  so together (%g/s) they pushed %s, which junked bulk for a while: see the closed loop below.", pad, sum, p.brand),
		}
	}
	return []string{
		fmt.Sprintf("%s: its lane sends %g/s, under %s's %g/s; but %s to the same servers,", laneName, own, p.brand, limit, strings.Join(others, " and ")),
		fmt.Sprintf("%s  so the copies that came while %s sent too (%g/s) went to junk, the others to the inbox.", pad, strings.Join(names, " and "), sum),
	}
}

// fine rounds a short delay so that it still shows: 1.2ms, 340ms, 2.5s.
func fine(d time.Duration) string {
	switch {
	case d < 100*time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	case d < 10*time.Second:
		return d.Round(10 * time.Millisecond).String()
	}
	return d.Round(100 * time.Millisecond).String()
}

// microsoftExample picks a copy with Microsoft's verdicts, a junked one
// when there is one: that is the verdict a person wants to read.
func microsoftExample(recent []seedCopy) (seedCopy, bool) {
	var pick seedCopy
	ok := false
	for _, c := range recent {
		if p := laneProvider(c.Provider); p == nil || !p.filing.Microsoft || c.Verdicts == nil {
			continue
		}
		if !ok || c.Folder == "junk" && pick.Folder != "junk" {
			pick, ok = c, true
		}
	}
	return pick, ok
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
