package sim

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net/textproto"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-msgauth/dkim"
)

// Message is one stored copy of an accepted message, for one recipient.
type Message struct {
	Provider string
	From, To string // envelope
	Data     []byte // as received, after dot-unstuffing
	Received time.Time
	// Folder is where the provider filed it: INBOX, its junk folder
	// (after a delayed move too), or what DataRespond chose. Where the
	// mailbox owner moves it over IMAP is not followed.
	Folder string
	DKIM   []DKIMResult

	// Facts about the bytes, so tests can assert certgate sends clean mail.
	BareLF  bool // a LF not preceded by CR
	BareCR  bool // a CR not followed by LF
	MaxLine int  // longest line in octets, without its line ending

	// Facts about the SMTP session that carried it.
	TLS  bool
	EHLO string
}

// DKIMResult is the verification of one DKIM-Signature header.
type DKIMResult struct {
	Domain, Selector, Algorithm string
	Err                         error // nil means pass
}

// Stats are counters since Start or the last Reset.
type Stats struct {
	Received                   int // stored copies, one per recipient
	DKIMPass                   int // stored copies with at least one passing signature
	DKIMFail                   int // stored copies with signatures, none passing
	Rejected                   int // 4xx/5xx replies to MAIL, RCPT or DATA, except rate limiting, Distrust and Faults
	RateLimited                int // 421 4.7.28 replies
	Throttled                  int // Distrust's refusals (451 4.7.650 by default)
	JunkedWhilePushed          int // copies Distrust filed in junk
	Connections                int // connections accepted
	ConnectionsRefused         int // connections refused over MaxConnections
	MaxConcurrent              int // most connections open at once
	DeliveriesPerConnectionMax int // most messages accepted on one connection
	Faults                     FaultStats
}

// Messages returns copies of all stored messages in the order received.
func (p *Provider) Messages() []Message {
	return p.filter(func(*Message) bool { return true })
}

// MessagesTo returns copies of the messages stored for addr (case-insensitive).
func (p *Provider) MessagesTo(addr string) []Message {
	return p.filter(func(m *Message) bool { return strings.EqualFold(m.To, addr) })
}

func (p *Provider) filter(keep func(*Message) bool) []Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []Message
	for i := range p.msgs {
		if keep(&p.msgs[i]) {
			m := p.msgs[i]
			m.Data = slices.Clone(m.Data)
			m.DKIM = slices.Clone(m.DKIM)
			out = append(out, m)
		}
	}
	return out
}

// Stats returns the counters.
func (p *Provider) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// WaitFor blocks until at least n messages have been stored since the last
// Reset, or ctx ends.
func (p *Provider) WaitFor(ctx context.Context, n int) error {
	for {
		p.mu.Lock()
		got, ch := p.stats.Received, p.changed
		p.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Reset forgets stored messages, zeroes the counters, refills the rate
// limiter and starts the faults, the filing rules and Distrust afresh
// (greylisting forgets every triplet, pending delayed moves are dropped,
// the provider is no longer pushed), so one provider can serve several
// test cases. IMAP mailboxes keep their mail.
func (p *Provider) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.msgs = nil
	p.stopMoves()
	p.filing = filingState{}
	p.distrust = newDistrustState(p.opts.Distrust)
	p.seq = 0
	p.faults = newFaultState()
	p.stats = Stats{MaxConcurrent: len(p.conns)}
	for c := range p.conns {
		c.delivered = 0
	}
	p.limiter = newLimiter(p.opts.RatePerSecond)
	p.notify()
}

// store keeps accepted copies, filed by the rules unless DataRespond
// chose a folder, and puts those for IMAP accounts in their mailboxes; c
// is the connection that carried them.
func (p *Provider) store(c *conn, msgs []Message) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range msgs {
		h := readHeader(m.Data)
		over := p.arrive(m.Received)
		moveLater := false
		if m.Folder == "INBOX" {
			moveLater = p.file(&m, h, over)
		}
		var filed *imapMsg
		if p.imap.hasAccount(m.To) {
			data := append(p.traceFields(&m, h), m.Data...)
			filed = p.imap.deliver(m.To, m.Folder, data, m.Received)
		}
		if moveLater {
			p.scheduleMove(len(p.msgs), filed, m.Received)
		}
		p.msgs = append(p.msgs, m)
		p.stats.Received++
		switch {
		case slices.ContainsFunc(m.DKIM, func(r DKIMResult) bool { return r.Err == nil }):
			p.stats.DKIMPass++
		case len(m.DKIM) > 0:
			p.stats.DKIMFail++
		}
	}
	if c != nil {
		c.delivered++
		p.stats.DeliveriesPerConnectionMax = max(p.stats.DeliveriesPerConnectionMax, c.delivered)
	}
	p.notify()
}

// count bumps a counter under the lock.
func (p *Provider) count(field *int) {
	p.mu.Lock()
	*field++
	p.mu.Unlock()
}

// allow takes one token from the rate limiter, if there is one.
func (p *Provider) allow() bool {
	p.mu.Lock()
	l := p.limiter
	p.mu.Unlock()
	return l == nil || l.Allow()
}

// verifyDKIM checks every signature of data; nil when verification is off
// or the message is unsigned.
func (p *Provider) verifyDKIM(data []byte) []DKIMResult {
	if p.opts.LookupTXT == nil {
		return nil
	}
	// go-msgauth does not report selector and algorithm, so read them from
	// the headers; it verifies signatures in header order.
	tags := signatureTags(data)
	if len(tags) == 0 {
		return nil
	}
	res := make([]DKIMResult, len(tags))
	for i, t := range tags {
		res[i] = DKIMResult{Domain: t["d"], Selector: t["s"], Algorithm: t["a"]}
	}
	verifs, err := dkim.VerifyWithOptions(bytes.NewReader(data), &dkim.VerifyOptions{
		LookupTXT:        p.opts.LookupTXT,
		MaxVerifications: 8,
	})
	if err != nil && !errors.Is(err, dkim.ErrTooManySignatures) {
		// Unexpected failure: the verifications cannot be trusted.
		for i := range res {
			res[i].Err = err
		}
		return res
	}
	for i := range res {
		if i >= len(verifs) {
			res[i].Err = dkim.ErrTooManySignatures
			continue
		}
		if verifs[i].Domain != "" {
			res[i].Domain = verifs[i].Domain
		}
		res[i].Err = verifs[i].Err
	}
	return res
}

// readHeader parses data's header block; a broken one gives what was read.
func readHeader(data []byte) textproto.MIMEHeader {
	h, _ := textproto.NewReader(bufio.NewReader(bytes.NewReader(data))).ReadMIMEHeader()
	return h
}

// signatureTags returns the tags of each DKIM-Signature header, in order.
func signatureTags(data []byte) []map[string]string {
	var out []map[string]string
	for _, v := range readHeader(data).Values("Dkim-Signature") {
		tags := make(map[string]string)
		for part := range strings.SplitSeq(v, ";") {
			k, val, ok := strings.Cut(part, "=")
			if ok {
				tags[strings.TrimSpace(k)] = strings.Join(strings.Fields(val), "")
			}
		}
		out = append(out, tags)
	}
	return out
}

// lineFacts reports bare LF, bare CR and the longest line without its
// ending: the things a careful sender never produces.
func lineFacts(data []byte) (bareLF, bareCR bool, maxLine int) {
	start := 0
	for i, b := range data {
		switch b {
		case '\n':
			end := i
			if i > 0 && data[i-1] == '\r' {
				end--
			} else {
				bareLF = true
			}
			maxLine = max(maxLine, end-start)
			start = i + 1
		case '\r':
			if i+1 == len(data) || data[i+1] != '\n' {
				bareCR = true
			}
		}
	}
	return bareLF, bareCR, max(maxLine, len(data)-start)
}
