package delivery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/membudget"
	"github.com/certgate/certgate/sim"
	"github.com/certgate/certgate/store"
)

// A temporary failure is retried on the schedule, and only then: nothing
// happens until the clock passes the retry step.
func TestTemporaryFailureIsRetried(t *testing.T) {
	var tries atomic.Int32
	sims := defaultSims()
	sims[0].Respond = func(_, rcpt string) *smtp.SMTPError {
		if rcpt == "grey@empresa.example" && tries.Add(1) <= 2 {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "greylisted, try later"}
		}
		return nil
	}
	e := newQEnv(t, qopts{sims: sims, fakeClock: true})
	id := e.enqueue("certificados@ca.example", []string{"grey@empresa.example"}, config.ClassBulk, sample(t, "01-es-download-link-qp.eml"))
	for i := range 2 {
		a := e.waitAttempts(1)[0]
		if a.State != store.StateQueued || a.Code != 451 || !a.NextAttempt.Equal(a.Time.Add(time.Minute)) {
			t.Fatalf("attempt %d: %+v, want deferred a minute", i+1, a)
		}
		// Waiting for its retry (once the worker has put it back), it is
		// the oldest mail of its lane.
		var got time.Time
		for deadline := time.Now().Add(10 * time.Second); got.IsZero() && time.Now().Before(deadline); {
			if got = e.queue.Oldest()[[2]string{"google", "bulk"}]; got.IsZero() {
				time.Sleep(time.Millisecond) // the worker is between the record and the heap: look again
			}
		}
		if want := e.view(id).Message.ReceivedAt; !got.Equal(want) {
			t.Fatalf("oldest of google/bulk: %v, want the message's acceptance %v", got, want)
		}
		select {
		case a := <-e.attempts:
			t.Fatalf("attempt %+v before the retry was due", a)
		default:
		}
		e.clock.Advance(time.Minute)
	}
	if a := e.waitAttempts(1)[0]; a.State != store.StateDelivered {
		t.Fatalf("third attempt %+v, want delivered", a)
	}
	v := e.view(id)
	if rc := v.Recipients[0]; rc.State != store.StateDelivered || rc.Attempts != 3 {
		t.Fatalf("recipient %+v, want delivered after 3 attempts", rc)
	}
	var kinds []string
	for _, ev := range v.Events {
		kinds = append(kinds, ev.Kind)
	}
	if got := strings.Join(kinds, ","); got != "accepted,deferred,deferred,delivered" {
		t.Fatalf("events %s", got)
	}
}

// What was queued when the process stopped is loaded at the next start,
// with its attempts, and delivered when due.
func TestRestartDeliversQueuedMail(t *testing.T) {
	db := t.TempDir() + "/certgate.db"
	down := newQEnv(t, qopts{dbPath: db, sinkDown: true, fakeClock: true})
	for i := range 5 {
		down.enqueue("certificados@ca.example", []string{fmt.Sprintf("r%d@empresa.example", i)}, config.ClassBulk, sample(t, "01-es-download-link-qp.eml"))
	}
	for _, a := range down.waitAttempts(5) {
		if a.State != store.StateQueued || a.Code != 0 {
			t.Fatalf("attempt to a dead receiver: %+v, want deferred without a reply", a)
		}
	}
	down.stop()

	// A new process on the same database, with the receiver back.
	up := newQEnv(t, qopts{dbPath: db, fakeClock: true})
	if n := up.queue.Len(); n != 5 {
		t.Fatalf("%d recipients loaded at restart, want 5", n)
	}
	up.clock.Advance(time.Minute)
	for _, a := range up.waitAttempts(5) {
		if a.State != store.StateDelivered {
			t.Fatalf("after the restart: %+v, want delivered", a)
		}
	}
	if got := up.sims["google"].Stats().Received; got != 5 {
		t.Fatalf("%d delivered, want 5", got)
	}
	pending := 0
	up.store.Pending(context.Background(), func(store.Pending) error { pending++; return nil })
	if pending != 0 {
		t.Fatalf("%d still queued in the store", pending)
	}
}

// After a restart, mail waiting for its next attempt is counted under its
// provider in certgate_queue_recipients at once, not as unrouted until
// that attempt.
func TestRestartCountsWaitingMailUnderItsProvider(t *testing.T) {
	db := t.TempDir() + "/certgate.db"
	down := newQEnv(t, qopts{dbPath: db, sinkDown: true, fakeClock: true})
	for i := range 3 {
		down.enqueue("certificados@ca.example", []string{fmt.Sprintf("r%d@empresa.example", i)}, config.ClassBulk, sample(t, "01-es-download-link-qp.eml"))
	}
	down.enqueue("certificados@ca.example", []string{"t@gmail.com"}, config.ClassTransactional, sample(t, "01-es-download-link-qp.eml"))
	down.waitAttempts(4)
	down.stop()

	up := newQEnv(t, qopts{dbPath: db, fakeClock: true})
	select {
	case <-up.queue.labelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the loaded mail was never labelled")
	}
	gauge := func(provider, class string) float64 {
		var m dto.Metric
		up.metrics.Queued.WithLabelValues(provider, class).Write(&m)
		return m.GetGauge().GetValue()
	}
	// empresa.example's MX is the google sim's, its own lane in this
	// harness; gmail.com is the built-in gmail provider's by domain.
	for _, c := range []struct {
		provider, class string
		want            float64
	}{{"google", "bulk", 3}, {"gmail", "transactional", 1}, {"unrouted", "bulk", 0}, {"unrouted", "transactional", 0}} {
		if got := gauge(c.provider, c.class); got != c.want {
			t.Errorf("certgate_queue_recipients{provider=%q,class=%q} = %v, want %v", c.provider, c.class, got, c.want)
		}
	}
	// Delivered, the gauge goes back to zero under the same labels.
	up.clock.Advance(time.Minute)
	up.waitAttempts(4)
	up.waitLen(0)
	if got := gauge("google", "bulk") + gauge("gmail", "transactional") + gauge("unrouted", "bulk"); got != 0 {
		t.Errorf("after delivery the gauge still counts %v", got)
	}
}

func TestTransactionalOvertakesBulk(t *testing.T) {
	e := newQEnv(t, qopts{providers: []config.Provider{{Name: "gmail", MXSuffixes: []string{".google.com"},
		MaxMessageRate: config.Rate{Count: 10, Period: time.Second}, ConnectionLimit: 1}}})
	bulk := sample(t, "03-fr-attachment-b64-text.eml")
	for i := range 60 {
		e.enqueue("no-reply@certs.example", []string{fmt.Sprintf("bulk%02d@gmail.com", i)}, config.ClassBulk, bulk)
	}
	queued := time.Now()
	e.enqueue("emissao@ac.example", []string{"token@gmail.com"}, config.ClassTransactional, sample(t, "04-pt-token-transactional.eml"))
	e.waitAttempts(61)
	g := e.sims["google"]
	pos, overtook := -1, 0
	for i, m := range g.Messages() {
		if m.To == "token@gmail.com" {
			pos = i
			break
		}
		if m.Received.After(queued) {
			overtook++
		}
	}
	// Queued 61st, behind bulk that the lane's rate holds back: only the
	// copy already taken for sending when it arrived may still go first.
	if pos < 0 || overtook > 1 {
		t.Fatalf("the transactional mail was delivered %dth of 61, after %d bulk copies queued before it", pos+1, overtook)
	}
	if st := g.Stats(); st.MaxConcurrent > 1 {
		t.Fatalf("%d concurrent connections, the lane allows 1", st.MaxConcurrent)
	}
	if st := g.Stats(); st.DeliveriesPerConnectionMax < 2 {
		t.Fatalf("no connection reuse: at most %d delivery per connection", st.DeliveriesPerConnectionMax)
	}
}

func TestDeadDestinationDefersItsWholeQueue(t *testing.T) {
	e := newQEnv(t, qopts{sinkDown: true, providers: []config.Provider{{Name: "gmail", MXSuffixes: []string{".google.com"},
		MaxMessageRate: config.Rate{Count: 2, Period: time.Second}, ConnectionLimit: 1}}})
	for i := range 30 {
		e.enqueue("certificados@ca.example", []string{fmt.Sprintf("r%02d@gmail.com", i)}, config.ClassBulk, sample(t, "01-es-download-link-qp.eml"))
	}
	for _, a := range e.waitAttempts(30) {
		if a.State != store.StateQueued {
			t.Fatalf("%+v, want deferred", a)
		}
	}
	// A deferred copy lets go of its bytes: a backlog lives in the store.
	if n := e.queue.HeldBytes(); n != 0 {
		t.Errorf("queue holds %d bytes of deferred copies", n)
	}
	var m dto.Metric
	e.metrics.ShapingWait.WithLabelValues("gmail", "bulk").(prometheus.Histogram).Write(&m)
	// Each failed connection defers everything queued behind it, so far
	// fewer than 30 items went through the lane's rate limiter.
	if n := m.GetHistogram().GetSampleCount(); n >= 15 {
		t.Fatalf("%d items went through shaping to reach a dead MX, want the queue deferred together", n)
	}
}

// Gaps in a wave shorter than the idle time do not cost a new connection;
// once the idle time passes, the worker lets its connection go.
func TestConnectionKeptAcrossGaps(t *testing.T) {
	e := newQEnv(t, qopts{fakeClock: true, providers: []config.Provider{{Name: "google", MXSuffixes: []string{".google.com"}, ConnectionLimit: 1}}})
	g := e.sims["google"]
	send := func(i int) {
		e.enqueue("certificados@ca.example", []string{fmt.Sprintf("gap%d@empresa.example", i)}, config.ClassTransactional, sample(t, "04-pt-token-transactional.eml"))
		if a := e.waitAttempts(1)[0]; a.State != store.StateDelivered {
			t.Fatalf("%+v", a)
		}
		// The lane is empty: its worker waits for more on its connection
		// (its idle timer, beside the scheduler's).
		e.advance(connectionIdleTime-time.Millisecond, 2)
	}
	for i := range 5 {
		send(i)
	}
	if st := g.Stats(); st.Connections != 1 || st.DeliveriesPerConnectionMax != 5 {
		t.Fatalf("%d connections, at most %d deliveries on one; want 1 connection carrying all 5", st.Connections, st.DeliveriesPerConnectionMax)
	}
	e.clock.Advance(time.Millisecond) // idle long enough: the worker leaves
	send(5)
	if st := g.Stats(); st.Connections != 2 {
		t.Fatalf("%d connections after the idle time, want a new one", st.Connections)
	}
}

// Copies over the queue's memory budget are read back from the store, and
// arrive the same, each with its own prefix.
func TestCopiesBeyondTheMemoryBudgetComeFromTheStore(t *testing.T) {
	body := sample(t, "01-es-download-link-qp.eml")
	e := newQEnv(t, qopts{freshBudget: int64(len(body)) + 200}) // about one copy
	to := []string{"a@gmail.com", "b@gmail.com", "c@gmail.com", "d@gmail.com"}
	id := e.enqueue("certificados@ca.example", to, config.ClassBulk, body)
	e.waitAttempts(len(to))
	trackingOf := map[string]string{}
	for _, rc := range e.view(id).Recipients {
		trackingOf[rc.Address] = rc.TrackingID
	}
	for _, m := range e.sims["google"].Messages() {
		want := append([]byte(store.TrackingHeader+": "+trackingOf[m.To]+"\r\n"), body...)
		if !bytes.Equal(m.Data, want) {
			t.Errorf("%s: the copy delivered is not its prefix and the body", m.To)
		}
	}
	if got := e.sims["google"].Stats().Received; got != len(to) {
		t.Fatalf("%d delivered, want %d", got, len(to))
	}
	e.waitLen(0)
	if n := e.queue.HeldBytes(); n != 0 {
		t.Errorf("queue still holds %d bytes", n)
	}
}

// A copy read back from the store waits for room in the shared memory
// budget before it is read, and gives the room back once its attempt
// ends: submissions holding the budget cannot make delivery take more.
func TestReadingACopyWaitsForTheMemoryBudget(t *testing.T) {
	body := sample(t, "01-es-download-link-qp.eml")
	const limit = 1 << 20
	mem := membudget.New(limit)
	e := newQEnv(t, qopts{freshBudget: 1, memory: mem}) // every copy is read back
	if !mem.TryReserve(limit) {                         // submissions hold it all
		t.Fatal("refused")
	}
	e.enqueue("certificados@ca.example", []string{"a@gmail.com"}, config.ClassBulk, body)
	waitFor(t, mem, func(used int64) bool { return mem.Waiting() == 1 })
	if !mem.Full() {
		t.Fatal("a waiting delivery does not turn new submissions away")
	}
	select {
	case a := <-e.attempts:
		t.Fatalf("delivered while the budget was spent: %+v", a)
	default:
	}
	mem.Release(limit)
	if a := e.waitAttempts(1)[0]; a.Code != 250 {
		t.Fatalf("attempt %+v, want delivered", a)
	}
	waitFor(t, mem, func(used int64) bool { return used == 0 })
}

// waitFor waits until ok holds of the bytes mem holds.
func waitFor(t *testing.T, mem *membudget.Budget, ok func(used int64) bool) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		used, changed := mem.InUse()
		if ok(used) {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("memory budget: %d bytes in use, %d waiting", used, mem.Waiting())
		}
	}
}

// failingRecords makes the first RecordAttempt calls fail the way a full
// disk does.
type failingRecords struct {
	Store
	fails atomic.Int32
}

func (s *failingRecords) RecordAttempt(ctx context.Context, a store.Attempt) error {
	if s.fails.Add(-1) >= 0 {
		return errors.New("store/sqlite: commit: database or disk is full (13)")
	}
	return s.Store.RecordAttempt(ctx, a)
}

// A delivery whose record fails is recorded once the store works again,
// not forgotten: otherwise the store lists it as queued and a restart
// sends it a second time. The worker waits between tries, longer each
// time.
func TestDeliveryRecordRetriedUntilTheStoreTakesIt(t *testing.T) {
	var fs *failingRecords
	e := newQEnv(t, qopts{fakeClock: true, wrapStore: func(st Store) Store {
		fs = &failingRecords{Store: st}
		fs.fails.Store(3)
		return fs
	}})
	e.enqueue("certificados@ca.example", []string{"a@gmail.com"}, config.ClassBulk, sample(t, "01-es-download-link-qp.eml"))
	for _, wait := range []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond} {
		// The scheduler's timer and the worker's wait before the next try.
		e.advance(wait, 2)
	}
	if a := e.waitAttempts(1)[0]; a.State != store.StateDelivered {
		t.Fatalf("%+v", a)
	}
	if got := e.sims["google"].Stats().Received; got != 1 {
		t.Errorf("the receiver got %d copies, want 1", got)
	}
	if left := fs.fails.Load(); left >= 0 {
		t.Errorf("%d failures left unconsumed: the record was not retried", left+1)
	}
	pending := 0
	e.store.Pending(context.Background(), func(store.Pending) error { pending++; return nil })
	if pending != 0 {
		t.Fatal("the delivery is not recorded in the store")
	}
}

// A receiver that refuses one connection too many is not down: the
// connection the relay already has keeps delivering, and the mail queued
// for it must not be deferred with the refused one.
func TestRefusedExtraConnectionDefersNothingElse(t *testing.T) {
	e := newQEnv(t, qopts{
		sims:      []sim.Options{{Name: "gmail", Domains: []string{"gmail.com"}, MXHost: "gmail-smtp-in.l.google.com", MaxConnections: 1}},
		providers: []config.Provider{{Name: "gmail", MXSuffixes: []string{".google.com"}, ConnectionLimit: 2}},
		retry:     config.Retry{Schedule: []config.Duration{config.Duration(time.Hour)}, MaxAge: config.Duration(24 * time.Hour)},
	})
	g := e.sims["gmail"]
	e.enqueue("certificados@ca.example", []string{"first@gmail.com"}, config.ClassBulk, sample(t, "01-es-download-link-qp.eml"))
	e.waitAttempts(1)
	for i := range 30 {
		e.enqueue("certificados@ca.example", []string{fmt.Sprintf("r%02d@gmail.com", i)}, config.ClassBulk, sample(t, "01-es-download-link-qp.eml"))
	}
	deferred := 0
	for _, a := range e.waitAttempts(30) {
		if a.State != store.StateDelivered {
			deferred++
		}
	}
	st := g.Stats()
	if st.ConnectionsRefused == 0 {
		t.Fatal("the lane never opened a second connection; the test proves nothing")
	}
	if deferred > 0 {
		t.Fatalf("%d recipients deferred for an hour because %d extra connection(s) were refused, while one connection was delivering",
			deferred, st.ConnectionsRefused)
	}
}

// The DSN of mail that expired says certgate gave up (5.4.7) and quotes the
// receiver's last reply as it was given.
func TestExpiredDSNQuotesTheLastReply(t *testing.T) {
	sims := defaultSims()
	sims[0].Respond = func(from, rcpt string) *smtp.SMTPError {
		return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "mailbox full"}
	}
	e := newQEnv(t, qopts{sims: sims, fakeClock: true,
		retry: config.Retry{Schedule: []config.Duration{config.Duration(100 * time.Millisecond)}, MaxAge: config.Duration(time.Second)}})
	e.enqueue("certificados@ca.example", []string{"full@empresa.example"}, config.ClassBulk, sample(t, "01-es-download-link-qp.eml"))
	for n := 1; ; n++ {
		a := e.waitAttempts(1)[0]
		if a.State == store.StateBounced {
			if !strings.HasPrefix(a.Reply, "gave up after 1s; last: 452 4.2.2 mailbox full") {
				t.Errorf("bounce recorded as %q", a.Reply)
			}
			break
		}
		if n > 20 {
			t.Fatalf("attempt %d still %+v: max_age passed long ago", n, a)
		}
		e.clock.Advance(100 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := e.sims["issuer"].WaitFor(ctx, 1); err != nil {
		t.Fatal(err)
	}
	dsn := string(e.sims["issuer"].Messages()[0].Data)
	for _, want := range []string{"Status: 5.4.7\r\n", "Diagnostic-Code: smtp; 452 4.2.2 mailbox full\r\n",
		"certgate gave up", "last answered:\r\n\r\n    452 4.2.2 mailbox full\r\n"} {
		if !strings.Contains(dsn, want) {
			t.Errorf("DSN without %q:\n%s", want, dsn)
		}
	}
}
