package demo

import (
	"fmt"
	"slices"
	"strings"

	"github.com/certgate/certgate/mimeedit"
	"github.com/certgate/certgate/sim"
)

// message is one submission of the demo wave.
type message struct {
	from  string
	rcpts []string
	data  []byte
}

// wave is what the demo submits: bulk mail, then urgent mail behind it.
type wave struct {
	bulk, urgent []message
}

func (w wave) all() []message { return append(slices.Clip(w.bulk), w.urgent...) }

// newWave builds bulk mails from the sample certificate mails, addressed
// round-robin to the simulated providers, plus urgent token mails.
func newWave(bulk, urgent int) (wave, error) {
	var bulkTemplates [][]byte
	var tokenTemplate []byte
	for _, m := range sim.SampleMails() {
		if strings.Contains(m.Name, "token") {
			tokenTemplate = m.Data
		} else {
			bulkTemplates = append(bulkTemplates, m.Data)
		}
	}
	domains := []string{"gmail.com", "empresa.example", "outlook.com", "contoso.example", "yahoo.com"}
	var w wave
	for i := 0; i < bulk; i++ {
		rcpt := fmt.Sprintf("cliente%04d@%s", i, domains[i%len(domains)])
		rcpts := []string{rcpt}
		if i == 7 {
			rcpts = append(rcpts, bounceAddress)
		}
		m, err := readdress(bulkTemplates[i%len(bulkTemplates)], rcpts, true)
		if err != nil {
			return wave{}, err
		}
		w.bulk = append(w.bulk, m)
	}
	for i := 0; i < urgent; i++ {
		m, err := readdress(tokenTemplate, []string{fmt.Sprintf("token%02d@%s", i, domains[i%len(domains)])}, false)
		if err != nil {
			return wave{}, err
		}
		w.urgent = append(w.urgent, m)
	}
	return w, nil
}

// readdress sets To to the demo recipients and drops the sample's
// Message-ID so certgate gives each copy its own. A bulk mail gets a
// List-Unsubscribe field, as a bulk sender's mail must have at Gmail,
// Yahoo and Outlook.com; it is also how a receiver tells bulk from the
// mail a person waits for (the simulated Microsoft junks only bulk while
// it distrusts the sender, so the urgent tokens stay in the inbox).
func readdress(tmpl []byte, rcpts []string, bulk bool) (message, error) {
	hb, body, err := mimeedit.SplitHeader(tmpl)
	if err != nil {
		return message{}, err
	}
	h, err := mimeedit.ParseHeader(hb)
	if err != nil {
		return message{}, err
	}
	from := h.Get("From")
	if i := strings.LastIndexByte(from, '<'); i >= 0 {
		from = strings.Trim(from[i:], "<> ")
	}
	h.Del("To")
	h.Del("Cc")
	h.Del("Message-ID")
	h.Add("To", strings.Join(rcpts, ", "))
	if bulk {
		h.Add("List-Unsubscribe", "<mailto:"+unsubscribeAddress(from)+"?subject=unsubscribe>")
	}
	return message{from: from, rcpts: rcpts, data: append(h.Bytes(), body...)}, nil
}

// unsubscribeAddress is where the bulk mail of sender takes
// unsubscriptions: unsubscribe@ its domain.
func unsubscribeAddress(sender string) string {
	return "unsubscribe@" + sender[strings.LastIndexByte(sender, '@')+1:]
}
