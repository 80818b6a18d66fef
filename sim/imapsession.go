package sim

import (
	"crypto/subtle"
	"slices"
	"sort"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
)

// imapSession is one IMAP connection's state. Every field but s and conn
// is guarded by s.mu: go-imap runs IDLE on a goroutine of its own that may
// outlive the command loop.
type imapSession struct {
	s      *imapSide
	conn   *imapserver.Conn
	acct   *account // nil until logged in
	sel    *view    // the selected mailbox, or nil
	closed bool
}

// view is what one session knows of its selected mailbox: the messages in
// the sequence numbers the client was told, which change only when the
// session reports EXPUNGE and EXISTS (RFC 9051 7.5.1).
type view struct {
	mb       *mailbox
	msgs     []*imapMsg
	lastUID  imap.UID // the highest UID the client was told of
	readOnly bool
	dropped  bool // the mailbox was deleted or renumbered: BYE is coming
	conn     *imapserver.Conn
}

var _ imapserver.SessionMove = (*imapSession)(nil)

func no(code imap.ResponseCode, text string) error {
	return &imap.Error{Type: imap.StatusResponseTypeNo, Code: code, Text: text}
}

var (
	errNoMailbox = no(imap.ResponseCodeNonExistent, "No such mailbox")
	errTryCreate = no(imap.ResponseCodeTryCreate, "No such mailbox")
	errReadOnly  = no("READ-ONLY", "Mailbox is read-only")
	errNoIdle    = &imap.Error{Type: imap.StatusResponseTypeBad, Text: "IDLE is not supported"}
	errSearchRes = &imap.Error{Type: imap.StatusResponseTypeBad, Text: "SEARCHRES is not supported"}
)

func (s *imapSide) newSession(c *imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return nil, nil, &imap.Error{Type: imap.StatusResponseTypeBye, Text: "Shutting down"}
	}
	s.sessions++
	return &imapSession{s: s, conn: c}, nil, nil
}

func (ss *imapSession) Close() error {
	s := ss.s
	s.mu.Lock()
	defer s.mu.Unlock()
	ss.unselect()
	if !ss.closed {
		ss.closed = true
		s.sessions--
		close(s.sessEnded)
		s.sessEnded = make(chan struct{})
	}
	return nil
}

func (ss *imapSession) Login(username, password string) error {
	ss.s.mu.Lock()
	defer ss.s.mu.Unlock()
	a := ss.s.account(username)
	if a == nil || subtle.ConstantTimeCompare([]byte(a.password), []byte(password)) != 1 {
		return imapserver.ErrAuthFailed
	}
	ss.acct = a
	return nil
}

// systemFlags are the flags every mailbox offers; keywords are allowed too.
var systemFlags = []imap.Flag{imap.FlagAnswered, imap.FlagFlagged, imap.FlagDeleted, imap.FlagSeen, imap.FlagDraft}

func (ss *imapSession) Select(name string, options *imap.SelectOptions) (*imap.SelectData, error) {
	s := ss.s
	s.mu.Lock()
	defer s.mu.Unlock()
	mb := ss.acct.lookup(name)
	if mb == nil {
		return nil, errNoMailbox
	}
	ss.unselect()
	v := &view{mb: mb, msgs: slices.Clone(mb.msgs), lastUID: mb.uidNext - 1, readOnly: options.ReadOnly, conn: ss.conn}
	mb.views[v] = true
	ss.sel = v
	data := &imap.SelectData{
		Flags:          systemFlags,
		PermanentFlags: append(slices.Clone(systemFlags), imap.FlagWildcard),
		NumMessages:    uint32(len(v.msgs)),
		UIDNext:        mb.uidNext,
		UIDValidity:    mb.uidValidity,
	}
	if v.readOnly {
		data.PermanentFlags = nil
	}
	if i := slices.IndexFunc(v.msgs, func(m *imapMsg) bool { return !hasFlag(m.flags, imap.FlagSeen) }); i >= 0 {
		data.FirstUnseenSeqNum = uint32(i + 1)
	}
	return data, nil
}

func (ss *imapSession) Unselect() error {
	ss.s.mu.Lock()
	defer ss.s.mu.Unlock()
	ss.unselect()
	return nil
}

// unselect detaches the view. Call with s.mu held.
func (ss *imapSession) unselect() {
	if ss.sel != nil {
		delete(ss.sel.mb.views, ss.sel)
		ss.sel = nil
	}
}

// selected returns the view. Call with s.mu held.
func (ss *imapSession) selected(write bool) (*view, error) {
	v := ss.sel
	switch {
	case v == nil:
		return nil, &imap.Error{Type: imap.StatusResponseTypeBad, Text: "No mailbox selected"}
	case v.dropped:
		return nil, no(imap.ResponseCodeNonExistent, "Mailbox was deleted or recreated")
	}
	if write && v.readOnly {
		return nil, errReadOnly
	}
	return v, nil
}

func (ss *imapSession) Poll(w *imapserver.UpdateWriter, allowExpunge bool) error {
	_, err := ss.update(w, allowExpunge)
	return err
}

func (ss *imapSession) Idle(w *imapserver.UpdateWriter, stop <-chan struct{}) error {
	if ss.s.opts.NoIdle {
		return errNoIdle
	}
	for {
		changed, err := ss.update(w, true)
		if err != nil {
			return err
		}
		select {
		case <-changed: // nil without a selected mailbox: wait for DONE
		case <-stop:
			return nil
		}
	}
}

// update tells the client what changed in its mailbox since it was last
// told: EXPUNGE (where allowed), then EXISTS. It returns the channel that
// is closed on the mailbox's next change.
func (ss *imapSession) update(w *imapserver.UpdateWriter, allowExpunge bool) (<-chan struct{}, error) {
	ss.s.mu.Lock()
	v := ss.sel
	if v == nil || v.dropped {
		ss.s.mu.Unlock()
		return nil, nil
	}
	changed := v.mb.changed
	var gone []uint32
	if allowExpunge {
		gone = v.takeGone()
	}
	exists, grew := v.takeNew()
	ss.s.mu.Unlock()

	for _, seq := range gone {
		if err := w.WriteExpunge(seq); err != nil {
			return nil, err
		}
	}
	if grew {
		if err := w.WriteNumMessages(exists); err != nil {
			return nil, err
		}
	}
	return changed, nil
}

// takeGone drops the messages that left the mailbox from the view and
// returns their sequence numbers, highest first so that each is right
// when the client applies them in order. Call with s.mu held.
func (v *view) takeGone() []uint32 {
	var seqs []uint32
	for i := len(v.msgs) - 1; i >= 0; i-- {
		if v.msgs[i].gone {
			seqs = append(seqs, uint32(i+1))
		}
	}
	v.msgs = slices.DeleteFunc(v.msgs, func(m *imapMsg) bool { return m.gone })
	return seqs
}

// takeNew adds the messages that arrived to the view. Call with s.mu held.
func (v *view) takeNew() (exists uint32, grew bool) {
	all := v.mb.msgs
	i := sort.Search(len(all), func(i int) bool { return all[i].uid > v.lastUID })
	if i == len(all) {
		return 0, false
	}
	v.msgs = append(v.msgs, all[i:]...)
	v.lastUID = all[len(all)-1].uid
	return uint32(len(v.msgs)), true
}

func (ss *imapSession) Expunge(w *imapserver.ExpungeWriter, uids *imap.UIDSet) error {
	s := ss.s
	s.mu.Lock()
	v, err := ss.selected(false)
	if err != nil || v.readOnly { // CLOSE after EXAMINE expunges nothing
		s.mu.Unlock()
		return err
	}
	ss.acct.removeIf(v.mb, func(m *imapMsg) bool {
		return hasFlag(m.flags, imap.FlagDeleted) && (uids == nil || uids.Contains(m.uid))
	})
	// Only this session's view here; EXISTS and the rest come with the poll
	// after the command.
	gone := v.takeGone()
	s.mu.Unlock()
	for _, seq := range gone {
		if err := w.WriteExpunge(seq); err != nil {
			return err
		}
	}
	return nil
}
