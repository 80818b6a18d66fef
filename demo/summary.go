package demo

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/certgate/certgate/sim"
)

// received is what one provider had stored when the summary began, taken
// once so that every line of the summary speaks of the same moment.
type received struct {
	name  string
	stats sim.Stats
	msgs  []sim.Message
}

// seedCopies counts the copies stored for seed mailboxes: certgate's
// own, not customers' deliveries.
func (r received) seedCopies() int {
	n := 0
	for _, m := range r.msgs {
		if isSeed(m.To) {
			n++
		}
	}
	return n
}

func snapshot(sims []*sim.Provider) []received {
	var got []received
	for _, s := range sims {
		got = append(got, received{name: s.Name(), stats: s.Stats(), msgs: s.Messages()})
	}
	return got
}

// printDeliveries prints what each provider received and verified (the
// seed copies apart from the customers'), the bounce, and the faults the
// receivers injected.
func printDeliveries(out printer, got []received, messages, recipients int, bounced, faults bool) {
	out("\nsummary")
	out("  accepted:   %d messages, %d recipients", messages, recipients)
	total, pass, seeds := 0, 0, 0
	for _, r := range got {
		total += r.stats.Received
		pass += r.stats.DKIMPass
		n := r.seedCopies()
		seeds += n
		delivered := fmt.Sprintf("%4d delivered", r.stats.Received-n)
		if n > 0 {
			delivered += " + " + howMany(n, "seed copy")
		}
		out("  %-10s  %-32s DKIM verified at the receiver %4d/%d, max %d concurrent connections, up to %d per connection",
			r.name, delivered+",", r.stats.DKIMPass, r.stats.Received, r.stats.MaxConcurrent, r.stats.DeliveriesPerConnectionMax)
	}
	also := ""
	if seeds > 0 {
		also = fmt.Sprintf(" (%d of them seed copies)", seeds)
		if seeds == 1 {
			also = " (one of them a seed copy)"
		}
	}
	out("  DKIM:       %d of %d delivered copies verified at the receiving side%s", pass, total, also)
	if bounced {
		out("  bounce:     %s refused with 550 5.1.1; a DSN went back to the sender (see the issuer provider)", bounceAddress)
	}
	if faults {
		for _, r := range got {
			if f := r.stats.Faults; f != (sim.FaultStats{}) {
				out("  faults:     %-10s %s", r.name, f)
			}
		}
	}
}

// printBooks shows that every accepted recipient is delivered, bounced
// (one DSN each, at the issuer's MX) or still queued: nothing is lost,
// whatever the receivers did. The seed copies certgate made itself
// (seedsMade, -1 when unknown) have books of their own: each is delivered
// or queued, and none is counted as a customer's delivery.
func printBooks(out printer, got []received, accepted, queued, seedsMade int) {
	total, dsns, seeds := 0, 0, 0
	for _, r := range got {
		total += r.stats.Received
		seeds += r.seedCopies()
		if r.name == "issuer" {
			dsns = r.stats.Received
		}
	}
	delivered := total - dsns - seeds
	seedsQueued := 0
	if seedsMade > seeds {
		seedsQueued = seedsMade - seeds
	}
	queued -= seedsQueued // the queue holds seed copies too
	balance := "balanced"
	if n := accepted - delivered - dsns - queued; n != 0 {
		balance = fmt.Sprintf("OFF BY %d", n)
	}
	out("  books:      %d recipients accepted = %d delivered + %d bounced (one DSN each) + %d queued: %s",
		accepted, delivered, dsns, queued, balance)
	switch {
	case seedsMade > 0:
		out("              + %s, certgate's own: %d delivered + %d queued, not counted above", howMany(seedsMade, "seed copy"), seeds, seedsQueued)
	case seeds > 0:
		out("              + %s delivered, certgate's own, not counted above", howMany(seeds, "seed copy"))
	}
}

// howMany is "1 seed copy" or "3 seed copies".
func howMany(n int, one string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, strings.TrimSuffix(one, "copy")+"copies")
}

// printWaits compares how long bulk and urgent mail waited between the
// 250 and the receiver's acceptance.
func printWaits(out printer, got []received, acceptedAt func(rcpt string) (time.Time, bool)) {
	var bulkLat, urgentLat []time.Duration
	for _, r := range got {
		for _, m := range r.msgs {
			at, ok := acceptedAt(m.To)
			if !ok {
				continue
			}
			if strings.HasPrefix(m.To, "token") {
				urgentLat = append(urgentLat, m.Received.Sub(at))
			} else {
				bulkLat = append(bulkLat, m.Received.Sub(at))
			}
		}
	}
	out("  waiting from 250 to delivery:")
	out("    bulk    p50 %-8s p95 %-8s max %s", pct(bulkLat, 50), pct(bulkLat, 95), pct(bulkLat, 100))
	out("    urgent  p50 %-8s p95 %-8s max %s   (submitted behind the wave)", pct(urgentLat, 50), pct(urgentLat, 95), pct(urgentLat, 100))
}

func pct(ds []time.Duration, p int) string {
	if len(ds) == 0 {
		return "-"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s) - 1) * p / 100
	return s[i].Round(10 * time.Millisecond).String()
}

// printAPI shows where to look next, and reads back through the API the
// message that carried the refused address.
func printAPI(out printer, got []received, httpBase, token string) {
	out("\n  metrics:    %s/metrics", httpBase)
	out("  API:        curl -H 'Authorization: Bearer %s' %s/api/v1/messages/ID", token, httpBase)
	out("  console:    %s/console/ (the helpdesk's pages: sign in with that token; run with --keep to try it)", httpBase)
	for _, r := range got {
		for _, m := range r.msgs {
			if strings.HasPrefix(m.To, "cliente0007@") {
				if id := queueIDOf(m); id != "" {
					showMessage(out, httpBase, token, id)
				}
			}
		}
	}
}

// queueIDOf finds certgate's queue id in the Received field certgate
// added to a delivered copy ("... (certgate) with ESMTPSA id ID;").
func queueIDOf(m sim.Message) string {
	const marker = ") with ESMTPSA id "
	s := string(m.Data)
	i := strings.Index(s, marker)
	if i < 0 {
		return ""
	}
	s = s[i+len(marker):]
	if j := strings.IndexByte(s, ';'); j > 0 {
		return s[:j]
	}
	return ""
}

// showMessage fetches one message through the API, as the helpdesk would.
func showMessage(out printer, base, token, id string) {
	req, _ := http.NewRequest("GET", base+"/api/v1/messages/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		out("  API error: %v", err)
		return
	}
	defer resp.Body.Close()
	var m struct {
		ID         string `json:"id"`
		Subject    string `json:"subject"`
		Recipients []struct {
			Address   string `json:"address"`
			State     string `json:"state"`
			Provider  string `json:"provider"`
			LastCode  int    `json:"last_code"`
			LastReply string `json:"last_reply"`
			Attempts  int    `json:"attempts"`
			Seed      string `json:"seed"`
			Placement *struct {
				Folder string `json:"folder"`
			} `json:"placement"`
		} `json:"recipients"`
		Events []struct{ Kind string } `json:"events"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || resp.StatusCode != http.StatusOK {
		out("  API answered %s", resp.Status)
		return
	}
	out("  GET /api/v1/messages/%s -> %q, %d events", m.ID, m.Subject, len(m.Events))
	for _, r := range m.Recipients {
		seed := ""
		if r.Seed != "" && r.Placement != nil {
			seed = fmt.Sprintf("; seed copy, placement: %s", r.Placement.Folder)
		}
		out("    %-32s %-9s via %-12s after %d attempt(s): %d %s%s", r.Address, r.State, r.Provider, r.Attempts, r.LastCode, r.LastReply, seed)
	}
}

// getAPI reads GET base+path with the demo's token into v, the JSON of an
// answer 200 OK.
func getAPI(client *http.Client, base, path, token string, v any) error {
	req, err := http.NewRequest("GET", base+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s answered %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
