package sim

import (
	"bytes"
	"io"
	"slices"
	"sort"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
)

// picked is a message a command names, with its sequence number.
type picked struct {
	seq uint32
	m   *imapMsg
}

// pick resolves a sequence or UID set against the view. Messages that
// left the mailbox but not yet the view are still named: their data is
// kept. Call with s.mu held.
func (v *view) pick(set imap.NumSet) ([]picked, error) {
	_, byUID := set.(imap.UIDSet)
	ss, err := spans(set, v.max(byUID))
	if err != nil {
		return nil, err
	}
	var out []picked
	for i, m := range v.msgs {
		n := uint32(i + 1)
		if byUID {
			n = uint32(m.uid)
		}
		if in(ss, n) {
			out = append(out, picked{uint32(i + 1), m})
		}
	}
	return out, nil
}

// max is what "*" stands for: the last sequence number or UID.
func (v *view) max(byUID bool) uint32 {
	if len(v.msgs) == 0 {
		return 0
	}
	if byUID {
		return uint32(v.msgs[len(v.msgs)-1].uid)
	}
	return uint32(len(v.msgs))
}

type span struct{ lo, hi uint32 }

// spans turns a set into sorted, merged ranges with "*" read as last;
// "n:*" holds the last message even when n is larger (RFC 9051 6.4.8).
func spans(set imap.NumSet, last uint32) ([]span, error) {
	var out []span
	add := func(lo, hi uint32) {
		if lo == 0 {
			lo = last
		}
		if hi == 0 {
			hi = last
		}
		out = append(out, span{min(lo, hi), lo + hi - min(lo, hi)})
	}
	switch set := set.(type) {
	case imap.SeqSet:
		for _, r := range set {
			add(r.Start, r.Stop)
		}
	case imap.UIDSet:
		if imap.IsSearchRes(set) {
			return nil, errSearchRes
		}
		for _, r := range set {
			add(uint32(r.Start), uint32(r.Stop))
		}
	}
	slices.SortFunc(out, func(a, b span) int { return int(int64(a.lo) - int64(b.lo)) })
	merged := out[:0]
	for _, s := range out {
		if n := len(merged); n > 0 && s.lo <= merged[n-1].hi {
			merged[n-1].hi = max(merged[n-1].hi, s.hi)
			continue
		}
		merged = append(merged, s)
	}
	return merged, nil
}

func in(ss []span, n uint32) bool {
	i := sort.Search(len(ss), func(i int) bool { return ss[i].hi >= n })
	return i < len(ss) && ss[i].lo <= n
}

func (ss *imapSession) Fetch(w *imapserver.FetchWriter, set imap.NumSet, options *imap.FetchOptions) error {
	s := ss.s
	markSeen := slices.ContainsFunc(options.BodySection, func(b *imap.FetchItemBodySection) bool { return !b.Peek })
	type item struct {
		picked
		uid   imap.UID
		flags []imap.Flag
		seen  bool // \Seen was set by this fetch
	}
	s.mu.Lock()
	v, err := ss.selected(false)
	var ps []picked
	if err == nil {
		ps, err = v.pick(set)
	}
	if err != nil {
		s.mu.Unlock()
		return err
	}
	items := make([]item, len(ps))
	for i, p := range ps {
		it := item{picked: p, uid: p.m.uid}
		if markSeen && !v.readOnly && !p.m.gone && !hasFlag(p.m.flags, imap.FlagSeen) {
			p.m.flags = append(p.m.flags, imap.FlagSeen)
			it.seen = true
		}
		it.flags = slices.Clone(p.m.flags)
		items[i] = it
	}
	s.mu.Unlock()

	// Written without the lock: a slow client must not stall the others.
	for _, it := range items {
		rw := w.CreateMessage(it.seq)
		if options.UID {
			rw.WriteUID(it.uid)
		}
		if options.Flags || it.seen {
			rw.WriteFlags(it.flags)
		}
		if err := writeFetch(rw, it.m, options); err != nil {
			return err
		}
	}
	return nil
}

// writeFetch writes the data items of m other than UID and FLAGS, with
// go-imap's own section and envelope extraction, and ends the response.
func writeFetch(rw *imapserver.FetchResponseWriter, m *imapMsg, o *imap.FetchOptions) error {
	if o.InternalDate {
		rw.WriteInternalDate(m.date)
	}
	if o.RFC822Size {
		rw.WriteRFC822Size(int64(len(m.data)))
	}
	if o.Envelope {
		rw.WriteEnvelope(imapserver.ExtractEnvelope(goHeader(m.data)))
	}
	if o.BodyStructure != nil {
		rw.WriteBodyStructure(imapserver.ExtractBodyStructure(bytes.NewReader(m.data)))
	}
	for _, sec := range o.BodySection {
		b := imapserver.ExtractBodySection(bytes.NewReader(m.data), sec)
		if err := writeSection(rw.WriteBodySection(sec, int64(len(b))), b); err != nil {
			return err
		}
	}
	for _, sec := range o.BinarySection {
		b := imapserver.ExtractBinarySection(bytes.NewReader(m.data), sec)
		if err := writeSection(rw.WriteBinarySection(sec, int64(len(b))), b); err != nil {
			return err
		}
	}
	for _, sec := range o.BinarySectionSize {
		rw.WriteBinarySectionSize(sec, imapserver.ExtractBinarySectionSize(bytes.NewReader(m.data), sec))
	}
	return rw.Close()
}

func writeSection(wc io.WriteCloser, b []byte) error {
	_, err := wc.Write(b)
	if cerr := wc.Close(); err == nil {
		err = cerr
	}
	return err
}

func (ss *imapSession) Store(w *imapserver.FetchWriter, set imap.NumSet, flags *imap.StoreFlags, _ *imap.StoreOptions) error {
	s := ss.s
	s.mu.Lock()
	v, err := ss.selected(true)
	var ps []picked
	if err == nil {
		ps, err = v.pick(set)
	}
	type item struct {
		seq   uint32
		uid   imap.UID
		flags []imap.Flag
	}
	var items []item
	for _, p := range ps {
		if err != nil {
			break
		}
		if !p.m.gone {
			var fs []imap.Flag
			if fs, err = applyFlags(p.m.flags, flags.Op, flags.Flags); err == nil {
				p.m.flags = fs
			}
		}
		items = append(items, item{p.seq, p.m.uid, slices.Clone(p.m.flags)})
	}
	s.mu.Unlock()
	if err != nil || flags.Silent {
		return err
	}
	_, byUID := set.(imap.UIDSet)
	for _, it := range items {
		rw := w.CreateMessage(it.seq)
		if byUID {
			rw.WriteUID(it.uid)
		}
		rw.WriteFlags(it.flags)
		if err := rw.Close(); err != nil {
			return err
		}
	}
	return nil
}

func (ss *imapSession) Copy(set imap.NumSet, dest string) (*imap.CopyData, error) {
	ss.s.mu.Lock()
	defer ss.s.mu.Unlock()
	v, err := ss.selected(false)
	if err != nil {
		return nil, err
	}
	return ss.copy(v, set, dest, false)
}

func (ss *imapSession) Move(w *imapserver.MoveWriter, set imap.NumSet, dest string) error {
	s := ss.s
	s.mu.Lock()
	v, err := ss.selected(true)
	var data *imap.CopyData
	var gone []uint32
	if err == nil {
		data, err = ss.copy(v, set, dest, true)
		gone = v.takeGone()
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if err := w.WriteCopyData(data); err != nil {
		return err
	}
	for _, seq := range gone {
		if err := w.WriteExpunge(seq); err != nil {
			return err
		}
	}
	return nil
}

// copy copies the named messages to dest and, for a move, takes the ones
// copied out of their mailbox, even when the rest did not fit. Call with
// s.mu held.
func (ss *imapSession) copy(v *view, set imap.NumSet, dest string, move bool) (*imap.CopyData, error) {
	to := ss.acct.lookup(dest)
	if to == nil {
		return nil, errTryCreate
	}
	if move && to == v.mb {
		return nil, no(imap.ResponseCodeCannot, "Source and destination are the same mailbox")
	}
	ps, err := v.pick(set)
	if err != nil {
		return nil, err
	}
	data := &imap.CopyData{UIDValidity: to.uidValidity}
	copied := map[*imapMsg]bool{}
	for _, p := range ps {
		if p.m.gone {
			continue
		}
		var c *imapMsg
		if c, err = ss.acct.add(to, p.m.data, p.m.date, slices.Clone(p.m.flags)); err != nil {
			break
		}
		copied[p.m] = true
		data.SourceUIDs.AddNum(p.m.uid)
		data.DestUIDs.AddNum(c.uid)
	}
	if move && len(copied) > 0 {
		ss.acct.removeIf(v.mb, func(m *imapMsg) bool { return copied[m] })
	}
	if err != nil {
		return nil, err
	}
	return data, nil
}

func hasFlag(fs []imap.Flag, f imap.Flag) bool {
	return slices.ContainsFunc(fs, func(x imap.Flag) bool { return strings.EqualFold(string(x), string(f)) })
}

// applyFlags returns cur changed by a STORE; \Recent and \* are not flags
// a client may set, and keywords are capped.
func applyFlags(cur []imap.Flag, op imap.StoreFlagsOp, fs []imap.Flag) ([]imap.Flag, error) {
	out := slices.Clone(cur)
	if op == imap.StoreFlagsSet {
		out = nil
	}
	for _, f := range fs {
		switch {
		case strings.EqualFold(string(f), `\Recent`) || f == imap.FlagWildcard:
		case op == imap.StoreFlagsDel:
			out = slices.DeleteFunc(out, func(x imap.Flag) bool { return strings.EqualFold(string(x), string(f)) })
		case !hasFlag(out, f):
			out = append(out, f)
		}
	}
	if len(out) > maxKeywords+len(systemFlags) {
		return nil, no(imap.ResponseCodeLimit, "Too many flags")
	}
	return out, nil
}
