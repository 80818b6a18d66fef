package sim

import (
	"bufio"
	"bytes"
	"net/mail"
	"net/textproto"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	gotextproto "github.com/emersion/go-message/textproto"
)

func (ss *imapSession) Search(kind imapserver.NumKind, c *imap.SearchCriteria, _ *imap.SearchOptions) (*imap.SearchData, error) {
	s := ss.s
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := ss.selected(false)
	if err != nil {
		return nil, err
	}
	q, err := compile(c, v.max(false), v.max(true))
	if err != nil {
		return nil, err
	}
	data := &imap.SearchData{}
	var seqs imap.SeqSet
	var uids imap.UIDSet
	for i, m := range v.msgs {
		if m.gone || !q.match(&candidate{seq: uint32(i + 1), m: m}) {
			continue
		}
		n := uint32(i + 1)
		if kind == imapserver.NumKindUID {
			n = uint32(m.uid)
			uids.AddNum(m.uid)
		} else {
			seqs.AddNum(n)
		}
		if data.Min == 0 || n < data.Min {
			data.Min = n
		}
		data.Max = max(data.Max, n)
		data.Count++
	}
	data.All = seqs
	if kind == imapserver.NumKindUID {
		data.All = uids
	}
	return data, nil
}

// query is a SEARCH with its sets made static against the view.
type query struct {
	c        *imap.SearchCriteria
	seq, uid [][]span
	not      []*query
	or       [][2]*query
}

func compile(c *imap.SearchCriteria, maxSeq, maxUID uint32) (*query, error) {
	q := &query{c: c}
	for _, set := range c.SeqNum {
		ss, err := spans(set, maxSeq)
		if err != nil {
			return nil, err
		}
		q.seq = append(q.seq, ss)
	}
	for _, set := range c.UID {
		ss, err := spans(set, maxUID)
		if err != nil {
			return nil, err
		}
		q.uid = append(q.uid, ss)
	}
	for i := range c.Not {
		n, err := compile(&c.Not[i], maxSeq, maxUID)
		if err != nil {
			return nil, err
		}
		q.not = append(q.not, n)
	}
	for i := range c.Or {
		a, err := compile(&c.Or[i][0], maxSeq, maxUID)
		if err != nil {
			return nil, err
		}
		b, err := compile(&c.Or[i][1], maxSeq, maxUID)
		if err != nil {
			return nil, err
		}
		q.or = append(q.or, [2]*query{a, b})
	}
	return q, nil
}

// candidate is a message under test; its header is parsed once, when a
// key needs it.
type candidate struct {
	seq    uint32
	m      *imapMsg
	header textproto.MIMEHeader
}

func (c *candidate) hdr() textproto.MIMEHeader {
	if c.header == nil {
		c.header = readHeader(c.m.data)
		if c.header == nil {
			c.header = textproto.MIMEHeader{}
		}
	}
	return c.header
}

func (q *query) match(c *candidate) bool {
	crit, m := q.c, c.m
	for _, ss := range q.seq {
		if !in(ss, c.seq) {
			return false
		}
	}
	for _, ss := range q.uid {
		if !in(ss, uint32(m.uid)) {
			return false
		}
	}
	if !inDates(m.date, crit.Since, crit.Before) {
		return false
	}
	if !crit.SentSince.IsZero() || !crit.SentBefore.IsZero() {
		sent, err := mail.ParseDate(c.hdr().Get("Date"))
		if err != nil || !inDates(sent, crit.SentSince, crit.SentBefore) {
			return false
		}
	}
	for _, f := range crit.Flag {
		if !hasFlag(m.flags, f) {
			return false
		}
	}
	for _, f := range crit.NotFlag {
		if hasFlag(m.flags, f) {
			return false
		}
	}
	size := int64(len(m.data))
	if crit.Larger > 0 && size <= crit.Larger || crit.Smaller > 0 && size >= crit.Smaller {
		return false
	}
	for _, f := range crit.Header {
		if !headerHas(c.hdr()[textproto.CanonicalMIMEHeaderKey(f.Key)], f.Value) {
			return false
		}
	}
	body := m.data
	if i := bytes.Index(body, []byte("\r\n\r\n")); i >= 0 {
		body = body[i+4:]
	}
	for _, s := range crit.Body {
		if !containsFold(body, s) {
			return false
		}
	}
	for _, s := range crit.Text {
		if !containsFold(m.data, s) {
			return false
		}
	}
	for _, n := range q.not {
		if n.match(c) {
			return false
		}
	}
	for _, or := range q.or {
		if !or[0].match(c) && !or[1].match(c) {
			return false
		}
	}
	return true
}

// inDates compares dates only, as SEARCH does (RFC 9051 6.4.4).
func inDates(t, since, before time.Time) bool {
	d := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	return (since.IsZero() || !d.Before(since)) && (before.IsZero() || d.Before(before))
}

// headerHas: the field is present and, unless value is empty, one of its
// values holds value, ignoring case.
func headerHas(values []string, value string) bool {
	for _, v := range values {
		if strings.Contains(strings.ToLower(v), strings.ToLower(value)) {
			return true
		}
	}
	return false
}

func containsFold(b []byte, s string) bool {
	return bytes.Contains(bytes.ToLower(b), bytes.ToLower([]byte(s)))
}

// goHeader parses a header for go-imap's envelope extraction.
func goHeader(data []byte) gotextproto.Header {
	h, _ := gotextproto.ReadHeader(bufio.NewReader(bytes.NewReader(data)))
	return h
}
