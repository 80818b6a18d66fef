package placement

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/certgate/certgate/clock"
	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/mimeedit"
	"github.com/certgate/certgate/store"
)

// Connector opens a logged-in IMAP connection to a seed mailbox whose
// unilateral data (EXISTS, EXPUNGE) goes to h.
type Connector func(ctx context.Context, m config.SeedMailbox, h *imapclient.UnilateralDataHandler) (*imapclient.Client, error)

// Observer hears what the watcher finds; metrics and logs hang on it.
// Calls come from many goroutines and must not block.
type Observer interface {
	// Placed is a seed copy found, moved (from is the folder class it
	// was found in before; "" for a first find) or, with Folder
	// FolderMissing, not found by its deadline.
	Placed(p store.Placement, from string)
	// MailboxState is a seed mailbox folder's connection going up or
	// down (err says why).
	MailboxState(seed, folder string, up bool, err error)
}

// Options configure a Watcher.
type Options struct {
	Seeds    config.Seeds
	Book     store.Placements
	Connect  Connector
	Clock    clock.Clock // default clock.Real
	Log      *slog.Logger
	Observer Observer // nil: nobody
	// Poll is how often a folder is checked with NOOP on a server
	// without IDLE (default 15s).
	Poll time.Duration
	// Rearm is how long one IDLE runs before the watcher ends it and
	// checks the connection with a NOOP: under the 29 minutes of RFC 2177
	// and servers' shorter limits, and the only way to notice a server
	// that died silently (default 5m).
	Rearm time.Duration
	// Categories finds the Gmail tabs of copies (by UID in mailbox) where
	// the server offers X-GM-EXT-1; nil: tabs are not told apart.
	Categories func(ctx context.Context, m config.SeedMailbox, mailbox string, uids []uint32) (map[uint32]string, error)
}

// Backoff between reconnects of one folder: doubling from minBackoff to
// maxBackoff, reset once a session has lasted healthyAfter.
const (
	minBackoff   = time.Second
	maxBackoff   = 2 * time.Minute
	healthyAfter = time.Minute
)

// Time a server has to answer: go-imap waits for a response's first byte
// without a deadline, and TCP keepalive sends no probe while our command
// is unacknowledged, so a server that died silently would hold the
// connection for the kernel's retransmission timeout (about 15 minutes).
const (
	commandTimeout = time.Minute      // NOOP, ending IDLE, EXAMINE, LIST
	catchUpTimeout = 10 * time.Minute // one round of UID SEARCH and FETCH
)

// guard closes c unless the caller stops it within d: a command that
// waits for a dead server then fails at once. Network time is the wall
// clock's (see package clock).
func guard(c *imapclient.Client, d time.Duration) (stop func() bool) {
	return time.AfterFunc(d, func() { c.Close() }).Stop
}

// Bounds on what one server may make the watcher read.
const (
	maxHeader     = 64 << 10 // octets of one copy's header fields read
	maxPerRound   = 5000     // copies read in one catch-up before yielding
	firstScanDays = 2        // a folder never seen is read from this many days before the deadline
)

// fetchFields are the header fields a watcher reads of each new message:
// what matches it to a copy, and what the receiver said of it.
var fetchFields = []string{store.TrackingHeader, "Message-ID", "Authentication-Results",
	"X-Forefront-Antispam-Report", "X-Microsoft-Antispam", "X-Microsoft-Antispam-Mailbox-Delivery",
	"X-Spam-Flag", "X-Spam-Status"}

// Watcher watches every seed mailbox: one connection per watched folder
// (INBOX and junk), each waiting in IDLE, catching up by UID after every
// (re)connect from the position kept in the store.
type Watcher struct {
	o   Options
	log *slog.Logger

	mu     sync.Mutex
	health map[string]*health // by seed name and role ("gmail-1/inbox")
}

// health is what the deadline sweep needs to know of a watched folder
// before it may call a copy missing: that the folder was looked at.
type health struct {
	up     bool      // connected, caught up, and waiting for news
	caught time.Time // when its last complete catch-up began
}

func (w *Watcher) healthOf(seed string, r role) *health {
	key := seed + "/" + string(r)
	h := w.health[key]
	if h == nil {
		h = &health{}
		w.health[key] = h
	}
	return h
}

// caughtUp notes a folder's catch-up that began at t and read all there was.
func (w *Watcher) caughtUp(seed string, r role, t time.Time) {
	w.mu.Lock()
	w.healthOf(seed, r).caught = t
	w.mu.Unlock()
}

// looked reports whether both folders of a seed mailbox were looked at
// at or after t: connected now (any arrival is reported at once) or
// caught up since. Until then a copy not found is not missing: the
// watcher may simply not have seen it yet.
func (w *Watcher) looked(seed string, t time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range []role{roleInbox, roleJunk} {
		h := w.healthOf(seed, r)
		if !h.up && h.caught.Before(t) {
			return false
		}
	}
	return true
}

// NewWatcher makes a watcher; Run starts it.
func NewWatcher(o Options) *Watcher {
	if o.Clock == nil {
		o.Clock = clock.Real
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Poll <= 0 {
		o.Poll = 15 * time.Second
	}
	if o.Rearm <= 0 {
		o.Rearm = 5 * time.Minute
	}
	return &Watcher{o: o, log: o.Log, health: map[string]*health{}}
}

// Run watches until ctx ends, then returns once every connection is closed.
func (w *Watcher) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, m := range w.o.Seeds.Mailboxes {
		wg.Go(func() { w.RunSeed(ctx, m.Name) })
	}
	wg.Wait()
}

// RunSeed watches one seed mailbox, both its folders, and closes its
// copies at their deadline, until ctx ends: what a node of a cluster runs
// while it holds the mailbox's lease, so that the cluster keeps one set of
// connections to each mailbox. An unknown name returns at once.
func (w *Watcher) RunSeed(ctx context.Context, name string) {
	i := slices.IndexFunc(w.o.Seeds.Mailboxes, func(m config.SeedMailbox) bool { return m.Name == name })
	if i < 0 {
		return
	}
	m := w.o.Seeds.Mailboxes[i]
	var wg sync.WaitGroup
	for _, r := range []role{roleInbox, roleJunk} {
		wg.Go(func() { w.watch(ctx, m, r) })
	}
	wg.Go(func() { w.sweep(ctx, m) })
	wg.Wait()
}

// watch keeps one folder of one seed mailbox watched, reconnecting with
// backoff.
func (w *Watcher) watch(ctx context.Context, m config.SeedMailbox, r role) {
	backoff := minBackoff
	up := false
	for ctx.Err() == nil {
		start := w.o.Clock.Now()
		err := w.safeSession(ctx, m, r, func() {
			up = true
			w.state(m.Name, string(r), true, nil)
		})
		if ctx.Err() != nil {
			return
		}
		if up || backoff == minBackoff {
			w.state(m.Name, string(r), false, err)
		}
		up = false
		if clock.Since(w.o.Clock, start) >= healthyAfter {
			backoff = minBackoff
		}
		if !clock.Sleep(w.o.Clock, backoff, ctx.Done()) {
			return
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

func (w *Watcher) state(seed, folder string, up bool, err error) {
	w.mu.Lock()
	w.healthOf(seed, role(folder)).up = up
	w.mu.Unlock()
	if up {
		w.log.Info("seed mailbox up", "seed", seed, "folder", folder)
	} else {
		w.log.Warn("seed mailbox down", "seed", seed, "folder", folder, "err", err)
	}
	if w.o.Observer != nil {
		w.o.Observer.MailboxState(seed, folder, up, err)
	}
}

// safeSession is session with a panic turned into its error: a bug that
// a hostile server's answer trips in a library costs a reconnect, not the
// daemon.
func (w *Watcher) safeSession(ctx context.Context, m config.SeedMailbox, r role, up func()) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("the IMAP session crashed: %v", v)
		}
	}()
	return w.session(ctx, m, r, up)
}

// session is one connection's life: select the folder, catch up, then
// wait for news and catch up again, until the connection fails.
func (w *Watcher) session(ctx context.Context, m config.SeedMailbox, r role, up func()) error {
	news := make(chan struct{}, 1)
	signal := func() {
		select {
		case news <- struct{}{}:
		default:
		}
	}
	// The handler runs on the client's reader goroutine: it only signals
	// (DESIGN.md, go-imap/v2 traps).
	h := &imapclient.UnilateralDataHandler{
		Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.NumMessages != nil {
				signal()
			}
		},
		Expunge: func(uint32) {},
	}
	c, err := w.o.Connect(ctx, m, h)
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()

	mailbox := "INBOX"
	stopGuard := guard(c, commandTimeout)
	if r == roleJunk {
		if mailbox, err = junkFolder(c, m.Junk); err != nil {
			return err
		}
	}
	// EXAMINE: read-only, so watching changes no flag the receiver's
	// filters or a person might look at.
	sel, err := c.Select(mailbox, &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		return fmt.Errorf("EXAMINE %s: %w", mailbox, err)
	}
	stopGuard()
	f := &folder{m: m, role: r, name: mailbox, uidValidity: sel.UIDValidity,
		gmail: c.Caps().Has("X-GM-EXT-1")}
	storedValidity, last, err := w.o.Book.SeedFolder(ctx, m.Name, mailbox)
	if err != nil {
		return err
	}
	// RFC 9051 2.3.1.1: UIDs of another UIDVALIDITY name other messages.
	if storedValidity == sel.UIDValidity {
		f.last = last
	}
	if err := w.catchUp(ctx, c, f); err != nil {
		return err
	}
	up()
	idle := c.Caps().Has(imap.CapIdle) || c.Caps().Has(imap.CapIMAP4rev2)
	for {
		switch {
		case f.more:
		case idle:
			err = w.idle(ctx, c, news)
		default:
			err = w.poll(ctx, c)
		}
		if err != nil {
			return err
		}
		if err := w.catchUp(ctx, c, f); err != nil {
			return err
		}
	}
}

// idle waits in IDLE until the server reports new mail, Rearm passes or
// the connection ends; a re-arm checks the connection with NOOP.
func (w *Watcher) idle(ctx context.Context, c *imapclient.Client, news <-chan struct{}) error {
	select {
	case <-news: // arrived during the last command: look now
		return nil
	default:
	}
	cmd, err := c.Idle()
	if err != nil {
		return fmt.Errorf("IDLE: %w", err)
	}
	t := w.o.Clock.NewTimer(w.o.Rearm)
	defer t.Stop()
	rearm := false
	select {
	case <-news:
	case <-t.C():
		rearm = true
	case <-ctx.Done():
	case <-c.Closed():
	}
	defer guard(c, commandTimeout)()
	if err := cmd.Close(); err != nil {
		return fmt.Errorf("IDLE: %w", err)
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("IDLE: %w", err)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if rearm {
		return c.Noop().Wait()
	}
	return nil
}

// poll is the fallback without IDLE: NOOP every Poll, which makes the
// server report new mail (RFC 9051 6.1.2).
func (w *Watcher) poll(ctx context.Context, c *imapclient.Client) error {
	if !clock.Sleep(w.o.Clock, w.o.Poll, ctx.Done()) {
		return ctx.Err()
	}
	defer guard(c, commandTimeout)()
	return c.Noop().Wait()
}

// folder is one watched folder's state within a session.
type folder struct {
	m           config.SeedMailbox
	role        role
	name        string
	uidValidity uint32
	last        uint32 // highest UID read; 0: never read under this UIDVALIDITY
	gmail       bool
	more        bool // the last round stopped at maxPerRound
}

// catchUp reads every message above the last UID read, matches it to a
// seed copy and records where it is, then stores the new position.
func (w *Watcher) catchUp(ctx context.Context, c *imapclient.Client, f *folder) error {
	defer guard(c, catchUpTimeout)()
	start := w.o.Clock.Now() // what arrived before this is seen by this round
	f.more = false
	uids, err := w.unread(c, f)
	if err != nil {
		return err
	}
	if len(uids) == 0 {
		w.caughtUp(f.m.Name, f.role, start)
		return nil
	}
	section := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFields: fetchFields, Peek: true,
		Partial: &imap.SectionPartial{Offset: 0, Size: maxHeader}}
	cmd := c.Fetch(uids, &imap.FetchOptions{UID: true, InternalDate: true, BodySection: []*imap.FetchItemBodySection{section}})
	defer cmd.Close()
	high := f.last
	var seen []sighting
	for n := 0; ; n++ {
		if n == maxPerRound {
			f.more = true // the rest at the next round, which comes at once
			break
		}
		msg := cmd.Next()
		if msg == nil {
			break
		}
		uid, arrived, header, err := readFetched(msg)
		if err != nil {
			return err
		}
		if uid <= f.last {
			continue // "n:*" answers the highest message even when below n
		}
		high = max(high, uid)
		s, ok, err := w.sight(ctx, f, uid, arrived, header)
		if err != nil {
			return err
		}
		if ok {
			seen = append(seen, s)
		}
	}
	if err := cmd.Close(); err != nil {
		return fmt.Errorf("UID FETCH: %w", err)
	}
	tabs := w.tabs(ctx, f, seen)
	for _, s := range seen {
		if err := w.record(ctx, f, s, tabs[s.uid]); err != nil {
			return err
		}
	}
	if high != f.last {
		if err := w.o.Book.SetSeedFolder(ctx, f.m.Name, f.name, f.uidValidity, high); err != nil {
			return err
		}
		f.last = high
	}
	if !f.more {
		w.caughtUp(f.m.Name, f.role, start)
	}
	return nil
}

// unread is the UIDs to read: above the last read, or, in a folder never
// read under this UIDVALIDITY, from the first that arrived since before
// any copy still watched could have been sent (a seed account may hold
// years of other mail). The server's answer is never expanded into a
// list: "1:4294967295" would be four billion numbers.
func (w *Watcher) unread(c *imapclient.Client, f *folder) (imap.UIDSet, error) {
	if f.last > 0 {
		if f.last == ^uint32(0) {
			return nil, nil // the highest UID there is
		}
		return imap.UIDSet{imap.UIDRange{Start: imap.UID(f.last + 1), Stop: 0}}, nil
	}
	since := w.o.Clock.Now().Add(-w.o.Seeds.Deadline.D() - firstScanDays*24*time.Hour)
	data, err := c.UIDSearch(&imap.SearchCriteria{Since: since}, nil).Wait()
	if err != nil {
		return nil, fmt.Errorf("UID SEARCH: %w", err)
	}
	first, ok := lowestUID(data.All)
	if !ok {
		return nil, nil
	}
	return imap.UIDSet{imap.UIDRange{Start: first, Stop: 0}}, nil
}

// lowestUID is the lowest UID of a search result; false for none, or for
// a "*" no server may send there.
func lowestUID(all imap.NumSet) (imap.UID, bool) {
	set, ok := all.(imap.UIDSet)
	if !ok || len(set) == 0 || set.Dynamic() {
		return 0, false
	}
	low := imap.UID(0)
	for _, r := range set {
		for _, u := range []imap.UID{r.Start, r.Stop} {
			if u != 0 && (low == 0 || u < low) {
				low = u
			}
		}
	}
	return low, low != 0
}

// readFetched takes what one FETCH response holds, reading at most
// maxHeader octets of the header literal whatever the server sends.
func readFetched(msg *imapclient.FetchMessageData) (uid uint32, arrived time.Time, header []byte, err error) {
	for {
		item := msg.Next()
		if item == nil {
			return uid, arrived, header, nil
		}
		switch it := item.(type) {
		case imapclient.FetchItemDataUID:
			uid = uint32(it.UID)
		case imapclient.FetchItemDataInternalDate:
			arrived = it.Time
		case imapclient.FetchItemDataBodySection:
			if it.Literal == nil {
				continue
			}
			header, err = io.ReadAll(io.LimitReader(it.Literal, maxHeader))
			if err != nil {
				return 0, time.Time{}, nil, err
			}
		}
	}
}

// sighting is a seed copy seen in a folder, to be recorded once the FETCH
// that saw it is over.
type sighting struct {
	p        *store.Placement
	uid      uint32
	arrived  time.Time
	seen     time.Time // when its FETCH answer came: what a later move is compared with
	verdicts json.RawMessage
}

// sight matches one message to an open seed copy; mail that is not a copy
// of ours, or whose watch is over, is ignored (ok false).
func (w *Watcher) sight(ctx context.Context, f *folder, uid uint32, arrived time.Time, header []byte) (s sighting, ok bool, err error) {
	p, v, err := w.match(ctx, f.m, header)
	if errors.Is(err, store.ErrNotFound) {
		return s, false, nil
	}
	if err != nil || !p.ClosedAt.IsZero() {
		return s, false, err
	}
	verdicts, err := json.Marshal(v)
	if err != nil {
		return s, false, err
	}
	return sighting{p: p, uid: uid, arrived: arrived, seen: w.o.Clock.Now(), verdicts: verdicts}, true, nil
}

// tabs finds the Gmail tabs of the copies seen in a Gmail inbox, in one
// connection for them all: a login per copy would get the account
// throttled. On error the copies count as inbox (logged).
func (w *Watcher) tabs(ctx context.Context, f *folder, seen []sighting) map[uint32]string {
	if !f.gmail || f.role != roleInbox || w.o.Categories == nil || len(seen) == 0 {
		return nil
	}
	tabs := map[uint32]string{}
	for batch := range slices.Chunk(seen, maxCategoryBatch) {
		uids := make([]uint32, len(batch))
		for i, s := range batch {
			uids[i] = s.uid
		}
		got, err := w.o.Categories(ctx, f.m, f.name, uids)
		if err != nil {
			w.log.Warn("gmail categories not read; the copies count as inbox", "seed", f.m.Name, "err", err)
			return tabs
		}
		maps.Copy(tabs, got)
	}
	return tabs
}

// maxCategoryBatch is the most UIDs one Categories call takes.
const maxCategoryBatch = 1000

// record stores where a copy was seen, and tells the log and the
// observer when its folder changed.
func (w *Watcher) record(ctx context.Context, f *folder, s sighting, tab string) error {
	p := s.p
	fd := store.Found{Folder: folderClass(f.role, tab), Mailbox: f.name, UIDValidity: f.uidValidity, UID: s.uid,
		ArrivedAt: s.arrived, DetectedAt: s.seen, Verdicts: s.verdicts}
	from, err := w.o.Book.RecordFound(ctx, p.RecipientID, fd)
	if err != nil || from == "" {
		return err
	}
	p.Folder, p.Mailbox, p.UIDValidity, p.UID, p.Verdicts = fd.Folder, fd.Mailbox, fd.UIDValidity, fd.UID, fd.Verdicts
	if from == store.FolderPending {
		p.ArrivedAt, p.DetectedAt = s.arrived, s.seen
		from = ""
	}
	w.log.Info("placement", "seed", p.Seed, "message", p.MessageID, "tenant", p.Tenant, "provider", p.Provider,
		"folder", p.Folder, "from", from, "arrived", s.arrived, "delivered", p.DeliveredAt, "detected_after", s.seen.Sub(s.arrived))
	if w.o.Observer != nil {
		w.o.Observer.Placed(*p, from)
	}
	return nil
}

// match finds the seed copy a message is: by its tracking header, else by
// Message-ID and the seed's address (a receiver that drops unknown
// fields).
func (w *Watcher) match(ctx context.Context, m config.SeedMailbox, header []byte) (*store.Placement, Verdicts, error) {
	h, err := mimeedit.ParseHeader(header)
	if err != nil {
		return nil, Verdicts{}, store.ErrNotFound // not a header we can read: not one of ours
	}
	p, err := w.byHeader(ctx, m, h)
	if err != nil {
		return nil, Verdicts{}, err
	}
	if p.Address != "" && !strings.EqualFold(p.Address, m.Address) {
		return nil, Verdicts{}, store.ErrNotFound // another seed's copy, forwarded here
	}
	v, _ := ParseVerdicts(header)
	return p, v, nil
}

func (w *Watcher) byHeader(ctx context.Context, m config.SeedMailbox, h *mimeedit.Header) (*store.Placement, error) {
	if tid := strings.TrimSpace(h.Get(store.TrackingHeader)); tid != "" && len(tid) <= 64 {
		p, err := w.o.Book.PlacementByTracking(ctx, tid)
		if !errors.Is(err, store.ErrNotFound) {
			return p, err
		}
	}
	id := strings.Trim(h.Get("Message-ID"), "<> \t")
	if id == "" || len(id) > 998 {
		return nil, store.ErrNotFound
	}
	return w.o.Book.PlacementByHeader(ctx, id, m.Address)
}
