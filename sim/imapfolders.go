package sim

import (
	"io"
	"regexp"
	"slices"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
)

// specialUses are the attributes CREATE may give (RFC 6154).
var specialUses = []imap.MailboxAttr{imap.MailboxAttrAll, imap.MailboxAttrArchive, imap.MailboxAttrDrafts,
	imap.MailboxAttrFlagged, imap.MailboxAttrJunk, imap.MailboxAttrSent, imap.MailboxAttrTrash}

func (ss *imapSession) Create(name string, options *imap.CreateOptions) error {
	s := ss.s
	if err := checkName(name); err != nil {
		return err
	}
	var special imap.MailboxAttr
	if options != nil && len(options.SpecialUse) > 0 {
		if s.opts.NoSpecialUse || len(options.SpecialUse) > 1 || !slices.Contains(specialUses, options.SpecialUse[0]) {
			return no("USEATTR", "Unsupported special use")
		}
		special = options.SpecialUse[0]
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a := ss.acct
	switch {
	case a.lookup(name) != nil:
		return no(imap.ResponseCodeAlreadyExists, "Mailbox exists")
	case len(a.mailboxes) >= maxMailboxes:
		return no(imap.ResponseCodeLimit, "Too many mailboxes")
	}
	a.mailboxes[name] = s.newMailbox(name, special)
	return nil
}

// checkName refuses names the sim cannot list back unambiguously.
func checkName(name string) error {
	bad := name == "" || len(name) > maxMailboxName || strings.ContainsAny(name, "*%\r\n\x00") ||
		name[0] == delim || name[len(name)-1] == delim || strings.Contains(name, "//")
	if bad {
		return no(imap.ResponseCodeCannot, "Bad mailbox name")
	}
	return nil
}

func (ss *imapSession) Delete(name string) error {
	s := ss.s
	s.mu.Lock()
	a := ss.acct
	mb := a.lookup(name)
	switch {
	case mb == nil:
		s.mu.Unlock()
		return errNoMailbox
	case mb.name == "INBOX":
		s.mu.Unlock()
		return no(imap.ResponseCodeCannot, "INBOX cannot be deleted")
	case ss.sel != nil && ss.sel.mb == mb:
		s.mu.Unlock()
		return no(imap.ResponseCodeInUse, "Mailbox is selected")
	}
	for _, m := range mb.msgs {
		m.gone = true
		a.bytes -= int64(len(m.data))
	}
	mb.msgs = nil
	delete(a.mailboxes, mb.name)
	conns := mb.dropViews()
	s.mu.Unlock()
	bye(conns, "Mailbox deleted")
	return nil
}

func (ss *imapSession) Rename(string, string, *imap.RenameOptions) error {
	return no(imap.ResponseCodeCannot, "RENAME is not supported here")
}

func (ss *imapSession) Subscribe(name string) error   { return ss.subscribe(name, true) }
func (ss *imapSession) Unsubscribe(name string) error { return ss.subscribe(name, false) }

func (ss *imapSession) subscribe(name string, on bool) error {
	ss.s.mu.Lock()
	defer ss.s.mu.Unlock()
	mb := ss.acct.lookup(name)
	if mb == nil {
		return errNoMailbox
	}
	mb.subscribed = on
	return nil
}

func (ss *imapSession) List(w *imapserver.ListWriter, ref string, patterns []string, options *imap.ListOptions) error {
	if len(patterns) == 0 { // LIST "" "": the hierarchy delimiter
		return w.WriteList(&imap.ListData{Attrs: []imap.MailboxAttr{imap.MailboxAttrNoSelect}, Delim: delim})
	}
	var res, folded []*regexp.Regexp
	for _, p := range patterns {
		re, fold, err := listPattern(ref + p)
		if err != nil {
			return err
		}
		res, folded = append(res, re), append(folded, fold)
	}
	matches := func(name string) bool {
		for i := range res {
			if res[i].MatchString(name) || name == "INBOX" && folded[i].MatchString(name) {
				return true
			}
		}
		return false
	}

	s := ss.s
	s.mu.Lock()
	var out []*imap.ListData
	for _, name := range listNames(ss.acct) {
		mb := ss.acct.mailboxes[name] // nil: a parent only implied by its children
		if !matches(name) || options.SelectSubscribed && (mb == nil || !mb.subscribed) {
			continue
		}
		d := &imap.ListData{Mailbox: name, Delim: delim}
		if mb == nil {
			d.Attrs = append(d.Attrs, imap.MailboxAttrNoSelect)
		}
		if hasChildren(ss.acct, name) {
			d.Attrs = append(d.Attrs, imap.MailboxAttrHasChildren)
		} else {
			d.Attrs = append(d.Attrs, imap.MailboxAttrHasNoChildren)
		}
		special := mb != nil && mb.special != "" && !s.opts.NoSpecialUse
		if special {
			d.Attrs = append(d.Attrs, mb.special)
		}
		if options.SelectSpecialUse && !special {
			continue
		}
		if options.ReturnSubscribed && mb != nil && mb.subscribed {
			d.Attrs = append(d.Attrs, imap.MailboxAttrSubscribed)
		}
		if options.ReturnStatus != nil && mb != nil {
			d.Status = mb.status(options.ReturnStatus)
		}
		out = append(out, d)
	}
	s.mu.Unlock()
	for _, d := range out {
		if err := w.WriteList(d); err != nil {
			return err
		}
	}
	return nil
}

// listPattern compiles a LIST pattern ("*" matches anything, "%" anything
// but the delimiter) into a regular expression, which matches in linear
// time whatever the client sends; fold is the same ignoring case, for INBOX.
func listPattern(p string) (re, fold *regexp.Regexp, err error) {
	if len(p) > maxListPattern {
		return nil, nil, &imap.Error{Type: imap.StatusResponseTypeBad, Text: "Pattern too long"}
	}
	var b strings.Builder
	for _, r := range p {
		switch r {
		case '*':
			b.WriteString(".*")
		case '%':
			b.WriteString("[^" + string(delim) + "]*")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	if re, err = regexp.Compile("^(?s:" + b.String() + ")$"); err == nil {
		fold, err = regexp.Compile("^(?is:" + b.String() + ")$")
	}
	if err != nil {
		return nil, nil, &imap.Error{Type: imap.StatusResponseTypeBad, Text: "Bad pattern"}
	}
	return re, fold, nil
}

// listNames are the account's mailboxes and the parents their names imply,
// INBOX first, then sorted. Call with s.mu held.
func listNames(a *account) []string {
	seen := map[string]bool{}
	for name := range a.mailboxes {
		seen[name] = true
		for i, r := range name {
			if r == delim {
				seen[name[:i]] = true
			}
		}
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	slices.SortFunc(names, func(x, y string) int {
		switch {
		case x == y:
			return 0
		case x == "INBOX":
			return -1
		case y == "INBOX":
			return 1
		}
		return strings.Compare(x, y)
	})
	return names
}

func hasChildren(a *account, name string) bool {
	for n := range a.mailboxes {
		if strings.HasPrefix(n, name+string(delim)) {
			return true
		}
	}
	return false
}

func (ss *imapSession) Status(name string, options *imap.StatusOptions) (*imap.StatusData, error) {
	ss.s.mu.Lock()
	defer ss.s.mu.Unlock()
	mb := ss.acct.lookup(name)
	if mb == nil {
		return nil, errNoMailbox
	}
	return mb.status(options), nil
}

// status fills every item asked for: go-imap writes them unchecked. Call
// with s.mu held.
func (mb *mailbox) status(o *imap.StatusOptions) *imap.StatusData {
	d := &imap.StatusData{Mailbox: mb.name, UIDNext: mb.uidNext, UIDValidity: mb.uidValidity}
	count := func(keep func(*imapMsg) bool) *uint32 {
		n := uint32(0)
		for _, m := range mb.msgs {
			if keep(m) {
				n++
			}
		}
		return &n
	}
	if o.NumMessages {
		d.NumMessages = count(func(*imapMsg) bool { return true })
	}
	if o.NumUnseen {
		d.NumUnseen = count(func(m *imapMsg) bool { return !hasFlag(m.flags, imap.FlagSeen) })
	}
	if o.NumDeleted {
		d.NumDeleted = count(func(m *imapMsg) bool { return hasFlag(m.flags, imap.FlagDeleted) })
	}
	if o.NumRecent {
		d.NumRecent = count(func(*imapMsg) bool { return false })
	}
	if o.Size || o.DeletedStorage {
		var size, deleted int64
		for _, m := range mb.msgs {
			size += int64(len(m.data))
			if hasFlag(m.flags, imap.FlagDeleted) {
				deleted += int64(len(m.data))
			}
		}
		d.Size, d.DeletedStorage = &size, &deleted
	}
	return d
}

// AppendLimit makes go-imap refuse larger APPENDs before reading them.
func (ss *imapSession) AppendLimit() uint32 { return maxMessageBytes }

func (ss *imapSession) Append(name string, r imap.LiteralReader, options *imap.AppendOptions) (*imap.AppendData, error) {
	s := ss.s
	// The size is at most AppendLimit, so reading it whole is bounded.
	data := make([]byte, r.Size())
	if _, err := io.ReadFull(r, data); err != nil {
		return nil, err
	}
	date := options.Time
	if date.IsZero() {
		date = s.p.now()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	mb := ss.acct.lookup(name)
	if mb == nil {
		return nil, errTryCreate
	}
	flags, err := applyFlags(nil, imap.StoreFlagsSet, options.Flags)
	if err != nil {
		return nil, err
	}
	m, err := ss.acct.add(mb, data, date, flags)
	if err != nil {
		return nil, err
	}
	return &imap.AppendData{UID: m.uid, UIDValidity: mb.uidValidity}, nil
}
