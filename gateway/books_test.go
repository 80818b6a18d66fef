package gateway

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/delivery"
	"github.com/certgate/certgate/gateway/signer"
	"github.com/certgate/certgate/sim"
	"github.com/certgate/certgate/store"
	"github.com/certgate/certgate/store/sqlite"
)

// Timings of the books test: client timeouts short enough to run in
// seconds, stalls longer than every one of them, and a max_age that expires
// the mailboxes that stay full while the test waits.
const (
	booksTimeout = 2 * time.Second
	booksStall   = 3 * time.Second
	booksMaxAge  = 6 * time.Second
	booksWait    = 45 * time.Second
	// booksOverdue is how late a due attempt may be before its recipient
	// counts as stuck.
	booksOverdue = 3 * time.Second
)

// booksSims are three faulty receivers, each failing in its own ways, and
// the issuer's own MX, which receives the DSNs and never fails. The seeds
// put a fault on each faulty provider's first connection (greeting stall,
// broken TLS, greeting 421), so connection faults happen in every run; the
// faults at RCPT and DATA are drawn per recipient and repeat exactly.
func booksSims(tls *sim.Certificate, scripted func(from, rcpt string) *smtp.SMTPError) []sim.Options {
	return []sim.Options{
		{Name: "gmail", Domains: []string{"gmail.com"}, MXHost: "gmail-smtp-in.l.google.com", Respond: scripted,
			Faults: sim.Faults{Seed: 61, GreetingStall: 0.04, Rcpt421: 0.03, Rcpt451: 0.04, Rcpt452: 0.03, Rcpt550: 0.02,
				RcptStall: 0.01, Data451: 0.02, Greylist: 300 * time.Millisecond, Stall: booksStall}},
		{Name: "outlook", Domains: []string{"outlook.com"}, MXHost: "outlook-com.olc.protection.outlook.com", Respond: scripted,
			TLS: tls.ServerConfig(), Faults: sim.Faults{Seed: 1, TLSBreak: 0.2, Rcpt550: 0.01, Data451: 0.05, Data550: 0.02,
				DropMidData: 0.04, DropAfterData: 0.03, StallAfterData: 0.02, Stall: booksStall}},
		{Name: "yahoo", Domains: []string{"yahoo.com"}, MXHost: "mta5.am0.yahoodns.net", Respond: scripted,
			TLS: tls.ServerConfig(), Faults: sim.Faults{Seed: 38, Greeting421: 0.08, GreetingStall: 0.02, TLSBreak: 0.1,
				Rcpt421: 0.02, Rcpt451: 0.05, Data451: 0.03, DropAfterData: 0.01, Greylist: 500 * time.Millisecond, Stall: booksStall}},
		{Name: "issuer", Domains: []string{"ca.example"}, MXHost: "mx.ca.example"},
	}
}

// booksRelay is a whole relay delivering to the books sims: submission
// from loopback as a trusted network, SQLite, queue, short timeouts.
type booksRelay struct {
	addr   string
	store  *sqlite.Store
	queue  *delivery.Queue
	server *Server
	sims   map[string]*sim.Provider // by name
}

// booksRetry is the books test's retry schedule: quick, so that max_age
// comes within the test.
var booksRetry = config.Retry{MaxAge: config.Duration(booksMaxAge), Jitter: 0.2,
	Schedule: []config.Duration{config.Duration(150 * time.Millisecond), config.Duration(300 * time.Millisecond), config.Duration(600 * time.Millisecond)}}

func startBooksRelay(t *testing.T, opts []sim.Options, retry config.Retry, connLimit int) *booksRelay {
	t.Helper()
	sims, port, err := sim.StartGroup(opts)
	if err != nil {
		t.Fatal(err)
	}
	b := &booksRelay{sims: map[string]*sim.Provider{}}
	resolver := delivery.StaticResolver{MX: map[string][]string{}, Hosts: map[string][]string{}}
	var provs []config.Provider
	for i, s := range sims {
		t.Cleanup(func() { s.Close() })
		b.sims[s.Name()] = s
		ip, _, _ := net.SplitHostPort(s.Addr())
		resolver.MX[opts[i].Domains[0]] = []string{s.MXHost()}
		resolver.Hosts[s.MXHost()] = []string{ip}
		// Unthrottled lanes: the test is about outcomes, not shaping.
		provs = append(provs, config.Provider{Name: s.Name(), MXSuffixes: []string{s.MXHost()},
			MaxMessageRate: config.Rate{Count: 10000, Period: time.Second}, ConnectionLimit: connLimit})
	}
	key, _, err := signer.Generate("ed25519", "ca.example", "s2026")
	if err != nil {
		t.Fatal(err)
	}
	parts := buildRelay(t, relaySpec{
		dbPath: filepath.Join(t.TempDir(), "certgate.db"), resolver: resolver, mxPort: port,
		providers: provs, retry: retry, timeout: booksTimeout,
		tenants: []config.Tenant{{Name: "issuer", FromDomains: []string{"ca.example"}, TrustedNetworks: []string{"127.0.0.0/8"}}},
		keys:    []*signer.Key{key},
		server: ServerConfig{Hostname: "relay.ca.example", MaxMessageBytes: 1 << 20, MaxRecipients: 10,
			MaxConnections: 20, MaxConnectionsPerIP: 20, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second},
		log: testLog("CERTGATE_BOOKS_LOG"),
	})
	b.store, b.queue, b.server = parts.store, parts.queue, parts.server
	b.addr = startRelay(t, b.queue, b.server)
	t.Cleanup(func() { b.stop(); b.store.Close() })
	return b
}

// stop ends intake and delivery, so that the store holds still.
func (b *booksRelay) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b.server.Shutdown(ctx)
	b.queue.Stop(ctx)
}

// booksMessage is one submission of the load.
type booksMessage struct {
	from  string
	rcpts []string
	class string
}

func (m booksMessage) data(n int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "From: Issuer <%s>\r\nTo: %s\r\nSubject: certificate %d\r\nMessage-ID: <books-%d@ca.example>\r\n",
		m.from, strings.Join(m.rcpts, ", "), n, n)
	fmt.Fprintf(&b, "X-Certgate-Class: %s\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n", m.class)
	for i := range 20 {
		fmt.Fprintf(&b, "Line %d of certificate notice %d: download it with the link in your account.\r\n", i, n)
	}
	return []byte(b.String())
}

// booksLoad is the mixed load: messages of one to three recipients spread
// over the faulty providers, bulk and transactional, from two senders,
// with a few mailboxes that refuse for ever (no such user) or stay full
// until max_age expires.
func booksLoad(n int) []booksMessage {
	domains := []string{"gmail.com", "outlook.com", "yahoo.com"}
	var msgs []booksMessage
	r := 0
	for i := range n {
		m := booksMessage{from: "certificados@ca.example", class: "bulk"}
		if i%2 == 1 {
			m.from, m.class = "tokens@ca.example", "transactional"
		}
		for range 1 + i%3 {
			m.rcpts = append(m.rcpts, fmt.Sprintf("user%03d@%s", r, domains[r%len(domains)]))
			r++
		}
		msgs = append(msgs, m)
	}
	for i, d := range domains {
		msgs = append(msgs, booksMessage{from: "certificados@ca.example", class: "bulk",
			rcpts: []string{fmt.Sprintf("nouser%d@%s", i, d), fmt.Sprintf("full%d@%s", i, d)}})
	}
	return msgs
}

// submit sends the load over four SMTP connections and returns the
// accepted recipients.
func (b *booksRelay) submit(t *testing.T, msgs []booksMessage) []string {
	t.Helper()
	const conns = 4
	errs := make(chan error, conns)
	var wg sync.WaitGroup
	for c := range conns {
		wg.Go(func() { errs <- b.submitOn(c, conns, msgs) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	var all []string
	for _, m := range msgs {
		all = append(all, m.rcpts...)
	}
	return all
}

// submitOn sends every conns-th message from the first-th on one
// connection.
func (b *booksRelay) submitOn(first, conns int, msgs []booksMessage) error {
	cl, err := smtp.Dial(b.addr)
	if err != nil {
		return err
	}
	defer cl.Close()
	if err := cl.Hello("issuer-app.ca.example"); err != nil {
		return err
	}
	for i := first; i < len(msgs); i += conns {
		if err := cl.SendMail(msgs[i].from, msgs[i].rcpts, strings.NewReader(string(msgs[i].data(i)))); err != nil {
			return fmt.Errorf("message %d: %w", i, err)
		}
	}
	return cl.Quit()
}

// booksRecipient is one recipient as the store has it at the end.
type booksRecipient struct {
	msg  store.Message
	rcpt store.Recipient
	dsns int // "dsn" events recorded for it
}

// ledger reads every message of the store: the load's recipients by
// address, and the DSN messages.
func (b *booksRelay) ledger(t *testing.T) (rcpts map[string]booksRecipient, dsnMsgs []*store.MessageView) {
	t.Helper()
	ctx := context.Background()
	rcpts = map[string]booksRecipient{}
	after := ""
	for {
		page, err := b.store.Search(ctx, store.Query{Tenant: "issuer", After: after, Limit: 500})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			return rcpts, dsnMsgs
		}
		for _, m := range page {
			v, err := b.store.Message(ctx, m.ID)
			if err != nil {
				t.Fatal(err)
			}
			if m.MailFrom == "" {
				dsnMsgs = append(dsnMsgs, v)
				continue
			}
			for _, r := range v.Recipients {
				if _, dup := rcpts[r.Address]; dup {
					t.Errorf("%s: stored twice", r.Address)
				}
				br := booksRecipient{msg: v.Message, rcpt: r}
				for _, e := range v.Events {
					if e.Kind == "dsn" && e.RecipientID == r.ID {
						br.dsns++
					}
				}
				rcpts[r.Address] = br
			}
		}
		after = page[len(page)-1].ID
	}
}

// booksDomains maps the load's recipient domains to their providers.
var booksDomains = map[string]string{"gmail.com": "gmail", "outlook.com": "outlook", "yahoo.com": "yahoo"}

var booksFaulty = []string{"gmail", "outlook", "yahoo"}

func booksProvider(addr string) string {
	return booksDomains[addr[strings.LastIndexByte(addr, '@')+1:]]
}

// booksCopies are the copies the faulty receivers stored, by tracking id.
type booksCopies struct {
	n        map[string]int
	provider map[string]string
	overTLS  map[string]int // by provider
}

func (b *booksRelay) copies() booksCopies {
	c := booksCopies{n: map[string]int{}, provider: map[string]string{}, overTLS: map[string]int{}}
	for _, name := range booksFaulty {
		for _, m := range b.sims[name].Messages() {
			hdr, _, _ := strings.Cut(string(m.Data), "\r\n\r\n")
			id := headerValue(hdr, store.TrackingHeader)
			c.n[id]++
			c.provider[id] = name
			if m.TLS {
				c.overTLS[name]++
			}
		}
	}
	return c
}

var (
	dsnQueueID   = regexp.MustCompile(`(?m)^X-Certgate-Queue-ID: (\S+)\r$`)
	dsnRecipient = regexp.MustCompile(`(?m)^Final-Recipient: rfc822; (\S+)\r$`)
	dsnStatusRE  = regexp.MustCompile(`(?m)^Status: (\S+)\r$`)
)

// booksDSNs are the DSNs at the issuer's MX, counted and with their
// status, by original queue id and recipient.
type booksDSNs struct {
	n      map[string]int
	status map[string]string
}

func dsnsAt(t *testing.T, mx *sim.Provider) booksDSNs {
	t.Helper()
	d := booksDSNs{n: map[string]int{}, status: map[string]string{}}
	for _, m := range mx.Messages() {
		q, r, s := dsnQueueID.FindSubmatch(m.Data), dsnRecipient.FindSubmatch(m.Data), dsnStatusRE.FindSubmatch(m.Data)
		if q == nil || r == nil || s == nil || m.From != "" {
			t.Errorf("not a DSN from the null sender at the issuer's MX: from <%s>\n%s", m.From, m.Data)
			continue
		}
		k := string(q[1]) + " " + string(r[1])
		d.n[k]++
		d.status[k] = string(s[1])
	}
	return d
}

// booksTally is one provider's line of the books.
type booksTally struct {
	accepted, delivered, rejected, expired, queued int
	copies, extra                                  int // copies stored at the sim; beyond one per delivered recipient
}

// judge puts one accepted recipient in the books and checks that where it
// stands agrees with the receivers and the sender's mailbox.
func (tl *booksTally) judge(t *testing.T, addr string, r booksRecipient, copies booksCopies, dsns booksDSNs, stopped time.Time) {
	t.Helper()
	tl.accepted++
	n := copies.n[r.rcpt.TrackingID]
	tl.copies += n
	if n > 0 && copies.provider[r.rcpt.TrackingID] != booksProvider(addr) {
		t.Errorf("%s: delivered to %s", addr, copies.provider[r.rcpt.TrackingID])
	}
	key, wantDSN := r.msg.ID+" "+addr, 0
	switch r.rcpt.State {
	case store.StateDelivered:
		tl.delivered++
		tl.extra += n - 1
		if n == 0 {
			t.Errorf("%s: delivered, but no copy at %s", addr, booksProvider(addr))
		}
	case store.StateBounced:
		wantDSN = 1
		tl.extra += n
		want := "5.4.7" // RFC 3463 3.5: delivery time expired
		if strings.HasPrefix(r.rcpt.LastReply, "gave up") {
			tl.expired++
			if !strings.HasPrefix(addr, "full") {
				t.Logf("%s: expired after %d attempts: %s", addr, r.rcpt.Attempts, r.rcpt.LastReply)
			}
		} else {
			tl.rejected++
			want, _, _ = strings.Cut(r.rcpt.LastReply, " ")
			if r.rcpt.LastCode < 500 {
				t.Errorf("%s: bounced on %d %s", addr, r.rcpt.LastCode, r.rcpt.LastReply)
			}
		}
		if got := dsns.status[key]; got != want && got != "" {
			t.Errorf("%s: DSN status %s, want %s (last reply %d %s)", addr, got, want, r.rcpt.LastCode, r.rcpt.LastReply)
		}
	case store.StateQueued:
		tl.queued++
		tl.extra += n
		switch {
		case r.rcpt.NextAttempt.IsZero():
			t.Errorf("%s: queued with no next attempt", addr)
		case stopped.Sub(r.rcpt.NextAttempt) > booksOverdue:
			t.Errorf("%s: queued, next attempt %v overdue at stop (attempts %d, last %d %s)", addr,
				stopped.Sub(r.rcpt.NextAttempt).Round(time.Millisecond), r.rcpt.Attempts, r.rcpt.LastCode, r.rcpt.LastReply)
		case r.rcpt.NextAttempt.After(r.msg.ReceivedAt.Add(booksMaxAge)):
			t.Errorf("%s: next attempt %v is past max_age", addr, r.rcpt.NextAttempt)
		}
	default:
		t.Errorf("%s: state %s", addr, r.rcpt.State)
	}
	if dsns.n[key] != wantDSN || r.dsns != wantDSN {
		t.Errorf("%s (%s, %d %s): %d DSNs at the sender's MX, %d dsn events; want %d",
			addr, r.rcpt.State, r.rcpt.LastCode, r.rcpt.LastReply, dsns.n[key], r.dsns, wantDSN)
	}
	switch {
	case strings.HasPrefix(addr, "nouser") && (r.rcpt.State != store.StateBounced || r.rcpt.LastCode != 550):
		t.Errorf("%s: %s %d %s, want bounced on its 550", addr, r.rcpt.State, r.rcpt.LastCode, r.rcpt.LastReply)
	case strings.HasPrefix(addr, "full") && r.rcpt.State == store.StateDelivered:
		t.Errorf("%s: delivered to a mailbox that was always full", addr)
	}
}

func (tl *booksTally) add(o *booksTally) {
	tl.accepted += o.accepted
	tl.delivered += o.delivered
	tl.rejected += o.rejected
	tl.expired += o.expired
	tl.queued += o.queued
	tl.copies += o.copies
	tl.extra += o.extra
}

func (tl *booksTally) String() string {
	return fmt.Sprintf("accepted %d = delivered %d + bounced %d (5xx %d, max_age %d) + queued %d; copies %d, extra %d",
		tl.accepted, tl.delivered, tl.rejected+tl.expired, tl.rejected, tl.expired, tl.queued, tl.copies, tl.extra)
}

// faultKinds names every counter of f, to check that each kind happened.
func faultKinds(f sim.FaultStats) map[string]int {
	return map[string]int{"greeting 421": f.Greeting421, "greeting stall": f.GreetingStall, "tls": f.TLSBroken,
		"rcpt 421": f.Rcpt421, "rcpt 451": f.Rcpt451, "rcpt 452": f.Rcpt452, "rcpt 550": f.Rcpt550, "rcpt stall": f.RcptStall,
		"data 451": f.Data451, "data 550": f.Data550, "drop mid-data": f.DropMidData, "drop after data": f.DropAfterData,
		"stall after data": f.StallAfterData, "greylisted": f.Greylisted, "greylist passed": f.GreylistPassed}
}

// Under a mixed load on faulty receivers, every accepted recipient ends up
// exactly one of delivered (a copy at its provider), bounced (a 5xx reply
// or max_age, with exactly one DSN at the sender's MX) or still queued with
// a next attempt that is not overdue; duplicates come only from the faults
// that leave the relay without a reply after the body.
func TestBooksBalanceUnderFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("a few hundred recipients through faulty receivers; not in -short")
	}
	cert, err := sim.SelfSigned("gmail-smtp-in.l.google.com", "outlook-com.olc.protection.outlook.com", "mta5.am0.yahoodns.net")
	if err != nil {
		t.Fatal(err)
	}
	nouser := map[string]*atomic.Int64{} // the sims' scripted 550s, by provider
	for _, n := range booksFaulty {
		nouser[n] = new(atomic.Int64)
	}
	respond := func(from, rcpt string) *smtp.SMTPError {
		switch {
		case strings.HasPrefix(rcpt, "nouser"):
			nouser[booksProvider(rcpt)].Add(1)
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
		case strings.HasPrefix(rcpt, "full"):
			return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "mailbox full"}
		}
		return nil
	}
	b := startBooksRelay(t, booksSims(cert, respond), booksRetry, 3)

	start := time.Now()
	accepted := b.submit(t, booksLoad(180))
	submitted := time.Since(start)

	// A bounded wait for the queue to empty; what is left is judged below.
	ctx, cancel := context.WithTimeout(context.Background(), booksWait)
	b.queue.WaitLen(ctx, 0)
	cancel()
	held, pending := b.queue.Len(), 0
	b.store.Pending(context.Background(), func(store.Pending) error { pending++; return nil })
	settled := time.Since(start)
	b.stop()
	stopped := time.Now()
	if held != pending {
		t.Errorf("the queue runner holds %d recipients, the store has %d queued: %d have no next attempt coming",
			held, pending, pending-held)
	}

	rcpts, dsnMsgs := b.ledger(t)
	if len(rcpts) != len(accepted) {
		t.Errorf("%d recipients accepted, %d in the store", len(accepted), len(rcpts))
	}
	copies, dsns := b.copies(), dsnsAt(t, b.sims["issuer"])
	tally := map[string]*booksTally{}
	for _, n := range booksFaulty {
		tally[n] = &booksTally{}
	}
	seen := map[string]bool{}
	for _, addr := range accepted {
		r, ok := rcpts[addr]
		if !ok {
			t.Errorf("%s: accepted, not in the store", addr)
			continue
		}
		seen[r.rcpt.TrackingID] = true
		tally[booksProvider(addr)].judge(t, addr, r, copies, dsns, stopped)
	}
	for id := range copies.n {
		if !seen[id] {
			t.Errorf("a copy with tracking id %q matches no accepted recipient", id)
		}
	}
	dsnsDelivered := 0
	for _, v := range dsnMsgs {
		for _, r := range v.Recipients {
			if r.State == store.StateDelivered {
				dsnsDelivered++
			}
		}
	}
	if got := b.sims["issuer"].Stats().Received; got != dsnsDelivered {
		t.Errorf("the issuer's MX has %d DSNs, the store says %d were delivered", got, dsnsDelivered)
	}

	// The books, per provider and in all.
	var all booksTally
	var unknown []string
	kinds := map[string]int{}
	for _, n := range booksFaulty {
		tl, f := tally[n], b.sims[n].Stats().Faults
		t.Logf("%-8s %v (%d over TLS); faults: %v", n, tl, copies.overTLS[n], f)
		if tl.accepted != tl.delivered+tl.rejected+tl.expired+tl.queued {
			t.Errorf("%s: the books do not balance: %v", n, tl)
		}
		// One recipient per transaction: each 5xx the sim gave is one bounce.
		if want := f.Permanent() + int(nouser[n].Load()); tl.rejected != want {
			t.Errorf("%s: %d recipients bounced on 5xx, the sim gave %d (faults %d, no such user %d)",
				n, tl.rejected, want, f.Permanent(), nouser[n].Load())
		}
		// Copies beyond one per delivered recipient come only from
		// transactions whose outcome the relay could not know.
		if tl.extra > f.Unknown() {
			t.Errorf("%s: %d extra copies, but only %d transactions ended without a reply after the body", n, tl.extra, f.Unknown())
		}
		all.add(tl)
		unknown = append(unknown, fmt.Sprintf("%s %d", n, f.Unknown()))
		for k, v := range faultKinds(f) {
			kinds[k] += v
		}
	}
	t.Logf("books: %v; %d DSNs; unknown outcomes: %s", &all, len(dsns.n), strings.Join(unknown, ", "))
	t.Logf("submitted in %v, settled in %v", submitted.Round(time.Millisecond), settled.Round(time.Millisecond))
	if all.accepted != len(accepted) {
		t.Errorf("%d recipients accepted, %d in the books", len(accepted), all.accepted)
	}
	var never []string
	for k, v := range kinds {
		if v == 0 {
			never = append(never, k)
		}
	}
	slices.Sort(never)
	if len(never) > 0 {
		t.Errorf("faults never injected, so not tested: %v", never)
	}
}
