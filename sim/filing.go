package sim

import (
	"errors"
	"fmt"
	"net/mail"
	"net/textproto"
	"slices"
	"strings"
	"time"
)

// Filing is a provider's spam filter: where it files what it accepts. The
// rules are deterministic so tests can count on exact results. A copy goes
// to junk when any rule says so; every rule counts its copies whatever the
// others say, so each one's count stays exact when several are on. The zero
// value files everything in INBOX.
type Filing struct {
	// JunkUnlessDKIMPass files a copy without a passing DKIM signature
	// (an unsigned one too) in junk. It needs Options.LookupTXT.
	JunkUnlessDKIMPass bool
	// JunkAboveRate files a copy in junk when more than JunkAboveRate ×
	// RateWindow copies (this one included) arrived in the RateWindow
	// ending with it, counting every copy the provider stored. 0 is off.
	JunkAboveRate float64
	// RateWindow is the window of JunkAboveRate; default one second.
	RateWindow time.Duration
	// JunkEvery files the JunkEvery-th, 2×JunkEvery-th, ... copy in junk;
	// 1 junks all. It counts every copy, or with BulkOnly only the copies
	// that look bulk (Precedence: bulk, list or junk; a List-Id or
	// List-Unsubscribe field). 0 is off.
	JunkEvery int
	BulkOnly  bool
	// MoveAfter, when positive, moves every MoveEvery-th copy filed in
	// INBOX (default every one) to junk MoveAfter after it arrived, as a
	// filter's second look does. See ApplyDueMoves.
	MoveAfter time.Duration
	MoveEvery int
	// Microsoft adds Exchange Online's verdict fields to mailbox copies
	// (X-Forefront-Antispam-Report, X-Microsoft-Antispam,
	// X-Microsoft-Antispam-Mailbox-Delivery) and writes
	// Authentication-Results without an authserv-id, as Exchange does.
	Microsoft bool
}

func (f Filing) check(verifies bool) error {
	switch {
	case f.JunkUnlessDKIMPass && !verifies:
		return errors.New("Filing.JunkUnlessDKIMPass needs LookupTXT to verify DKIM")
	case f.JunkAboveRate < 0 || f.RateWindow < 0 || f.JunkEvery < 0 || f.MoveAfter < 0 || f.MoveEvery < 0:
		return errors.New("Filing: negative rate, window, count or delay")
	}
	return nil
}

// filingState is what the rules remember; guarded by Provider.mu.
type filingState struct {
	arrivals []time.Time // newest arrivals, at most what the rate rule needs
	counted  int         // copies JunkEvery counted
	inboxed  int         // copies the rules filed in INBOX, for MoveEvery
	moves    []*move     // pending delayed moves, in order of arrival
}

// move is a delayed move INBOX → junk of the stored copy p.msgs[idx].
type move struct {
	due   time.Time
	idx   int
	copy  *imapMsg    // its mailbox copy, nil when the recipient has no account
	timer *time.Timer // nil with an injected clock
}

// junkFolder is the junk folder's name.
func (p *Provider) junkFolder() string {
	if p.opts.IMAP != nil {
		return p.opts.IMAP.Junk
	}
	return "Junk"
}

// arrive records a stored copy for the rate rule and says whether the
// rate is now above the limit. Call with p.mu held.
func (p *Provider) arrive(t time.Time) bool {
	f := p.opts.Filing
	if f.JunkAboveRate == 0 {
		return false
	}
	window := f.RateWindow
	if window == 0 {
		window = time.Second
	}
	// More than limit arrivals in the window means the newest limit+1 are
	// all inside it, so older ones need not be kept.
	limit := int(f.JunkAboveRate * window.Seconds())
	a := append(p.filing.arrivals, t)
	if len(a) > limit+1 {
		a = a[len(a)-limit-1:]
	}
	p.filing.arrivals = a
	return len(a) > limit && t.Sub(a[0]) < window
}

// file applies the rules to a copy the provider is storing (over says the
// rate rule fired) and says whether it is to move to junk later. Call with
// p.mu held.
func (p *Provider) file(m *Message, h textproto.MIMEHeader, over bool) (moveLater bool) {
	f := p.opts.Filing
	junk := over
	if f.JunkUnlessDKIMPass && !dkimPassed(m.DKIM) {
		junk = true
	}
	if f.JunkEvery > 0 && (!f.BulkOnly || looksBulk(h)) {
		p.filing.counted++
		if p.filing.counted%f.JunkEvery == 0 {
			junk = true
		}
	}
	if d := p.opts.Distrust; d != nil && p.pushedAt(m.Received) && (!d.BulkOnly || looksBulk(h)) {
		p.stats.JunkedWhilePushed++
		junk = true
	}
	if junk {
		m.Folder = p.junkFolder()
		return false
	}
	if f.MoveAfter <= 0 {
		return false
	}
	p.filing.inboxed++
	return p.filing.inboxed%max(f.MoveEvery, 1) == 0
}

func dkimPassed(rs []DKIMResult) bool {
	return slices.ContainsFunc(rs, func(r DKIMResult) bool { return r.Err == nil })
}

// looksBulk is what a receiver can see of bulk mail: certgate's own class
// header never leaves the gateway.
func looksBulk(h textproto.MIMEHeader) bool {
	switch strings.ToLower(strings.TrimSpace(h.Get("Precedence"))) {
	case "bulk", "list", "junk":
		return true
	}
	return h.Get("List-Id") != "" || h.Get("List-Unsubscribe") != ""
}

// ApplyDueMoves carries out the delayed moves (Filing.MoveAfter) that are
// due by the provider's clock and returns how many it made. With the wall
// clock the provider calls it by itself; with an injected Options.Now,
// tests call it after moving their clock. A copy the mailbox owner already
// moved or deleted stays where it is.
func (p *Provider) ApplyDueMoves() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	n := 0
	p.filing.moves = slices.DeleteFunc(p.filing.moves, func(mv *move) bool {
		if mv.due.After(now) {
			return false
		}
		if mv.timer != nil {
			mv.timer.Stop()
		}
		if mv.copy == nil || p.imap.moveToJunk(mv.copy) {
			p.msgs[mv.idx].Folder = p.junkFolder()
			n++
		}
		return true
	})
	if n > 0 {
		p.notify()
	}
	return n
}

// scheduleMove queues the delayed move of p.msgs[idx]. Call with p.mu held.
func (p *Provider) scheduleMove(idx int, filed *imapMsg, at time.Time) {
	mv := &move{due: at.Add(p.opts.Filing.MoveAfter), idx: idx, copy: filed}
	if p.opts.Now == nil {
		mv.timer = time.AfterFunc(time.Until(mv.due), func() { p.ApplyDueMoves() })
	}
	p.filing.moves = append(p.filing.moves, mv)
}

// stopMoves drops the pending moves. Call with p.mu held.
func (p *Provider) stopMoves() {
	for _, mv := range p.filing.moves {
		if mv.timer != nil {
			mv.timer.Stop()
		}
	}
	p.filing.moves = nil
}

// traceFields are the fields a receiver prepends to its mailbox copy: its
// Authentication-Results and, Microsoft-flavoured, Exchange's verdicts.
// Values from the message are cleaned so they cannot break the fields.
func (p *Provider) traceFields(m *Message, h textproto.MIMEHeader) []byte {
	var res []string
	if p.opts.LookupTXT != nil {
		res = append(res, dkimResults(m.DKIM)...)
	}
	spf := "spf=none"
	if _, dom, ok := strings.Cut(m.From, "@"); ok {
		spf += " smtp.mailfrom=" + cleanDomain(dom)
	}
	res = append(res, spf)
	dmarc := "dmarc=none"
	if from := fromDomain(h); from != "" {
		if aligned(m.DKIM, from) {
			dmarc = "dmarc=pass"
		}
		dmarc += " header.from=" + from
	}
	res = append(res, dmarc)

	var b strings.Builder
	b.WriteString("Authentication-Results: ")
	if !p.opts.Filing.Microsoft {
		// One field per line keeps every line short whatever the message holds.
		b.WriteString(p.srv.Domain + ";\r\n\t")
	}
	b.WriteString(strings.Join(res, ";\r\n\t") + "\r\n")
	if p.opts.Filing.Microsoft {
		junk := m.Folder == p.junkFolder()
		scl, sfv, cat, dest := 1, "NSPM", "NONE", "I"
		if junk {
			scl, sfv, cat, dest = 5, "SPM", "SPM", "J"
		}
		bcl := 0
		if looksBulk(h) {
			bcl = 6
		}
		fmt.Fprintf(&b, "X-Forefront-Antispam-Report: CIP:127.0.0.1;CTRY:;LANG:;SCL:%d;SRV:;IPV:NLI;SFV:%s;PTR:;CAT:%s;SFS:;DIR:INB;\r\n", scl, sfv, cat)
		fmt.Fprintf(&b, "X-Microsoft-Antispam: BCL:%d;\r\n", bcl)
		fmt.Fprintf(&b, "X-Microsoft-Antispam-Mailbox-Delivery: ucf:0;jmr:0;auth:0;dest:%s;\r\n", dest)
	}
	return []byte(b.String())
}

// maxReported caps the DKIM results written: verification stops at 8.
const maxReported = 8

func dkimResults(rs []DKIMResult) []string {
	if len(rs) == 0 {
		return []string{"dkim=none"}
	}
	var out []string
	for _, r := range rs[:min(len(rs), maxReported)] {
		res := "pass"
		if r.Err != nil {
			res = "fail"
		}
		out = append(out, "dkim="+res+" header.d="+cleanDomain(r.Domain)+" header.s="+cleanDomain(r.Selector))
	}
	return out
}

// aligned says whether a passing signature's domain aligns with the From
// domain (relaxed, by name: one is the other or a parent of it).
func aligned(rs []DKIMResult, from string) bool {
	return slices.ContainsFunc(rs, func(r DKIMResult) bool {
		d := strings.ToLower(r.Domain)
		return r.Err == nil && d != "" && (d == from || strings.HasSuffix(from, "."+d) || strings.HasSuffix(d, "."+from))
	})
}

// fromDomain is the domain of the single From address, or "".
func fromDomain(h textproto.MIMEHeader) string {
	a, err := mail.ParseAddress(h.Get("From"))
	if err != nil {
		return ""
	}
	_, dom, _ := strings.Cut(a.Address, "@")
	return cleanDomain(dom)
}

// cleanDomain keeps what a domain or selector may hold, lower-cased and
// cut to a domain's length.
func cleanDomain(s string) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
			return r
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		}
		return -1
	}, s)
	return s[:min(len(s), 253)]
}
