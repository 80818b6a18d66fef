// Package webhook tells the issuer's systems what became of their mail.
// It is an outbox over the audit trail: for each endpoint a goroutine
// walks the store's event log in id order, POSTs every event the endpoint
// asks for, and stores the id of the last one delivered as the endpoint's
// cursor. Delivery is therefore durable (nothing is lost across restarts),
// in order per endpoint, and at least once: a POST whose answer is lost is
// sent again. link_refused notices, which anyone holding a link can cause,
// walk the log in a lane of their own with its own cursor, so that however
// many there are, and however their receiver answers them, they never hold
// up the others. docs/config.md documents the payload and the signature.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/certgate/certgate/clock"
	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/store"
)

// EventLog is what the dispatcher needs of the store: the audit trail in
// id order, and a cursor per endpoint.
type EventLog interface {
	EventsAfter(ctx context.Context, afterID int64, limit int) ([]store.EventRecord, error)
	Cursor(ctx context.Context, name string) (int64, error)
	SetCursor(ctx context.Context, name string, id int64) error
}

// Endpoint is one receiver of signed event notices, as config validated
// it: the dispatcher does not check it again.
type Endpoint struct {
	Name    string // unique; keys the endpoint's cursor in the store
	URL     string // absolute http(s)
	Secret  []byte // HMAC-SHA256 key
	Events  []string
	Tenants []string // only these tenants' events; empty, or ["*"], for all
	Timeout time.Duration
}

// Endpoints turns the configured webhooks into endpoints, reading their
// secrets (config has checked them; a file can still vanish since).
// Errors name the secret's file or variable, never its value.
func Endpoints(ws []config.Webhook) ([]Endpoint, error) {
	var out []Endpoint
	for _, w := range ws {
		secret, err := w.Secret()
		if err != nil {
			return nil, fmt.Errorf("webhook %s: %w", w.Name, err)
		}
		out = append(out, Endpoint{Name: w.Name, URL: w.URL, Secret: []byte(secret),
			Events: slices.Clone(w.Events), Tenants: slices.Clone(w.Tenants), Timeout: w.Timeout.D()})
	}
	return out, nil
}

// Options tune a Dispatcher; the zero value is what production uses.
type Options struct {
	// BackoffBase is the wait before the first retry of a failed POST;
	// it doubles with each further failure, up to BackoffMax. Defaults
	// 1s and 5m.
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// Poll is how often an endpoint that is up to date looks for new
	// events. Default 1s.
	Poll time.Duration
	// PageSize is how many events one read of the log takes. Default 100.
	PageSize int
	// Client sends the POSTs. The default follows no redirects: a
	// redirect is a failed try, so the body never goes where it was not
	// configured to go.
	Client *http.Client
	// Clock times polls and backoff and stamps signatures. Default
	// clock.Real. A POST's own timeout stays on the wall clock.
	Clock clock.Clock
}

func (o *Options) setDefaults() {
	if o.BackoffBase <= 0 {
		o.BackoffBase = time.Second
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = 5 * time.Minute
	}
	if o.Poll <= 0 {
		o.Poll = time.Second
	}
	if o.PageSize <= 0 {
		o.PageSize = 100
	}
	if o.Client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		o.Client = &http.Client{Transport: tr,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if o.Clock == nil {
		o.Clock = clock.Real
	}
}

// Dispatcher sends the event log to the webhook endpoints.
type Dispatcher struct {
	store EventLog
	eps   []*endpoint
	opts  Options
	log   *slog.Logger

	// stopping ends waits (polls, backoff) and keeps new tries from
	// starting; aborting also cuts the POSTs in flight. Stop cancels the
	// first at once and the second when its own context runs out.
	stopping context.Context
	stop     context.CancelFunc
	aborting context.Context
	abort    context.CancelFunc
	wg       sync.WaitGroup
}

type endpoint struct {
	Endpoint
	tenants map[string]bool // nil for every tenant
	lanes   []*lane
	split   bool // link_refused has a lane of its own
}

// lane is one ordered walk of the log for an endpoint, with its cursor.
type lane struct {
	ep     *endpoint
	name   string // keys the cursor in the store
	kinds  map[string]bool
	cursor int64 // loaded by Start
}

// refusalKind is the kind of event that gets a lane of its own.
const refusalKind = "link_refused"

// cursorName is the key of an endpoint's position in the store; the
// refusal lane of a split endpoint adds "/link_refused" (names cannot
// hold a "/", so no endpoint's name can meet it), and seededSuffix marks
// that lane's cursor as started from the endpoint's.
func cursorName(ep string) string { return "webhook:" + ep }

const seededSuffix = ".seeded"

func (l *lane) wants(e store.EventRecord) bool {
	return l.kinds[e.Kind] && (l.ep.tenants == nil || l.ep.tenants[e.Tenant])
}

// New builds a dispatcher for endpoints config has validated; nothing runs
// before Start.
func New(st EventLog, eps []Endpoint, opts Options, log *slog.Logger) *Dispatcher {
	opts.setDefaults()
	d := &Dispatcher{store: st, opts: opts, log: log}
	for _, w := range eps {
		ep := &endpoint{Endpoint: w}
		if len(w.Tenants) > 0 && !slices.Equal(w.Tenants, []string{config.EveryTenant}) {
			ep.tenants = map[string]bool{}
			for _, t := range w.Tenants {
				ep.tenants[t] = true
			}
		}
		main := &lane{ep: ep, name: cursorName(w.Name), kinds: map[string]bool{}}
		for _, k := range w.Events {
			main.kinds[k] = true
		}
		ep.lanes = []*lane{main}
		if main.kinds[refusalKind] && len(main.kinds) > 1 {
			delete(main.kinds, refusalKind)
			ep.split = true
			ep.lanes = append(ep.lanes, &lane{ep: ep, name: cursorName(w.Name) + "/" + refusalKind,
				kinds: map[string]bool{refusalKind: true}})
		}
		d.eps = append(d.eps, ep)
	}
	return d
}

// Start reads every endpoint's cursor and starts sending. The dispatcher
// runs until Stop, or until ctx is canceled.
func (d *Dispatcher) Start(ctx context.Context) error {
	for _, ep := range d.eps {
		if err := d.loadCursors(ctx, ep); err != nil {
			return fmt.Errorf("webhook %s: reading its position in the event log: %w", ep.Name, err)
		}
	}
	d.aborting, d.abort = context.WithCancel(ctx)
	d.stopping, d.stop = context.WithCancel(d.aborting)
	for _, ep := range d.eps {
		for _, l := range ep.lanes {
			d.log.Info("webhook started", "webhook", ep.Name, "cursor", l.name, "after_event", l.cursor)
			d.wg.Add(1)
			go d.run(l)
		}
	}
	return nil
}

// loadCursors reads the lanes' positions. The refusal lane of an endpoint
// split for the first time starts where the endpoint is, so that an
// upgrade sends no old notice again; a mark records that it did, and is
// cleared when the endpoint stops asking for both, so that a later split
// starts afresh.
func (d *Dispatcher) loadCursors(ctx context.Context, ep *endpoint) error {
	for _, l := range ep.lanes {
		c, err := d.store.Cursor(ctx, l.name)
		if err != nil {
			return err
		}
		l.cursor = c
	}
	mark := cursorName(ep.Name) + "/" + refusalKind + seededSuffix
	seeded, err := d.store.Cursor(ctx, mark)
	if err != nil {
		return err
	}
	switch {
	case ep.split && seeded == 0:
		refusals := ep.lanes[1]
		refusals.cursor = ep.lanes[0].cursor
		if err := d.store.SetCursor(ctx, refusals.name, refusals.cursor); err != nil {
			return err
		}
		return d.store.SetCursor(ctx, mark, 1)
	case !ep.split && seeded != 0:
		return d.store.SetCursor(ctx, mark, 0)
	}
	return nil
}

// Stop starts no further tries and waits for the POSTs in flight to be
// answered and recorded. When ctx ends first, they are cut short, and
// their events are sent again after the next Start.
func (d *Dispatcher) Stop(ctx context.Context) error {
	if d.stop == nil {
		return nil
	}
	d.stop()
	done := make(chan struct{})
	go func() { d.wg.Wait(); close(done) }()
	select {
	case <-done:
		d.abort()
		return nil
	case <-ctx.Done():
		d.abort()
		return ctx.Err()
	}
}

// run is one lane's loop: read a page of the log after the cursor, send
// what the lane wants, one event at a time, and move the cursor.
func (d *Dispatcher) run(l *lane) {
	defer d.wg.Done()
	for d.stopping.Err() == nil {
		page, err := d.store.EventsAfter(d.stopping, l.cursor, d.opts.PageSize)
		if err != nil {
			if d.stopping.Err() == nil {
				d.log.Warn("webhook: reading the event log failed", "webhook", l.ep.Name, "after_event", l.cursor, "err", err)
			}
			d.sleep(d.opts.Poll)
			continue
		}
		if len(page) == 0 {
			d.sleep(d.opts.Poll)
			continue
		}
		stored := true // whether l.cursor is the stored position
		for _, e := range page {
			if !l.wants(e) {
				l.cursor, stored = e.ID, false
				continue
			}
			if !d.deliver(l.ep, e) {
				return // stopping; events passed over are passed over again
			}
			l.cursor = e.ID
			stored = d.setCursor(l)
		}
		if !stored {
			// Events the lane does not want move the cursor once a page.
			d.setCursor(l)
		}
	}
}

// setCursor stores l.cursor. A failure is logged and otherwise ignored:
// the events since the stored position are sent again after a restart,
// which at-least-once delivery allows.
func (d *Dispatcher) setCursor(l *lane) bool {
	if err := d.store.SetCursor(d.aborting, l.name, l.cursor); err != nil {
		d.log.Warn("webhook: storing its position failed", "webhook", l.ep.Name, "cursor", l.name, "event", l.cursor, "err", err)
		return false
	}
	return true
}

// sleep waits for dur or until the dispatcher stops.
func (d *Dispatcher) sleep(dur time.Duration) bool {
	return clock.Sleep(d.opts.Clock, dur, d.stopping.Done())
}

// notice is the JSON body of a POST; docs/config.md documents it.
type notice struct {
	ID        int64     `json:"id"`
	Kind      string    `json:"kind"`
	Time      time.Time `json:"time"`
	MessageID string    `json:"message_id"`
	Tenant    string    `json:"tenant"`
	Recipient string    `json:"recipient"`
	// Seed names the seed mailbox when the recipient is certgate's own seed
	// copy: not a customer's delivery.
	Seed string `json:"seed,omitempty"`
	// Lane names the delivery lane of a lane_changed notice, which is
	// about no message.
	Lane   string `json:"lane,omitempty"`
	Actor  string `json:"actor"`
	Detail string `json:"detail"`
	Count  int64  `json:"count"` // occurrences: a link_refused notice's refusals since the link's last
}

// deliver sends e to ep until the receiver takes it, waiting longer after
// each failure; the endpoint's later events wait meanwhile. It reports
// false when the dispatcher stops first.
func (d *Dispatcher) deliver(ep *endpoint, e store.EventRecord) bool {
	body, err := json.Marshal(notice{ID: e.ID, Kind: e.Kind, Time: e.Time.UTC(), MessageID: e.MessageID,
		Tenant: e.Tenant, Recipient: e.Recipient, Seed: e.Seed, Lane: e.Lane, Actor: e.Actor, Detail: e.Detail, Count: max(e.Count, 1)})
	if err != nil {
		// Strings, numbers and a UTC time always encode; this is a bug.
		d.log.Error("webhook: encoding an event failed; skipping it", "webhook", ep.Name, "event", e.ID, "err", err)
		return true
	}
	for failures := 0; ; {
		if d.stopping.Err() != nil {
			return false
		}
		status, err := d.post(ep, e, body)
		if err == nil {
			d.log.Debug("webhook delivered", "webhook", ep.Name, "event", e.ID, "kind", e.Kind, "status", status)
			return true
		}
		failures++
		wait := d.backoff(failures)
		attrs := []any{"webhook", ep.Name, "event", e.ID, "kind", e.Kind, "attempt", failures}
		if status != 0 {
			attrs = append(attrs, "status", status)
		}
		d.log.Warn("webhook delivery failed", append(attrs, "err", err, "retry_in", wait)...)
		if !d.sleep(wait) {
			return false
		}
	}
}

// backoff is the wait after the nth failure in a row: BackoffBase doubled
// n-1 times, at most BackoffMax, less a random fifth at most, so that
// endpoints failing together do not retry in step.
func (d *Dispatcher) backoff(n int) time.Duration {
	wait := d.opts.BackoffMax
	if n <= 30 {
		wait = min(d.opts.BackoffBase<<(n-1), d.opts.BackoffMax)
	}
	if wait <= 0 { // overflow
		wait = d.opts.BackoffMax
	}
	return wait - rand.N(wait/5+1)
}

// post makes one try: it signs body with the current time and sends it.
// A nil error means a 2xx answer.
func (d *Dispatcher) post(ep *endpoint, e store.EventRecord, body []byte) (status int, err error) {
	ctx, cancel := context.WithTimeout(d.aborting, ep.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.URL, bytes.NewReader(body))
	if err != nil {
		return 0, errors.New("cannot build the request")
	}
	ts := strconv.FormatInt(d.opts.Clock.Now().Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "certgate-webhooks")
	req.Header.Set("X-Certgate-Event", e.Kind)
	req.Header.Set("X-Certgate-Delivery", strconv.FormatInt(e.ID, 10))
	req.Header.Set("X-Certgate-Timestamp", ts)
	req.Header.Set("X-Certgate-Signature", "sha256="+signature(ep.Secret, ts, body))
	resp, err := d.opts.Client.Do(req)
	if err != nil {
		// A *url.Error repeats the URL, whose query may hold a token.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, err
	}
	// Read (some of) the answer so the connection can be reused; the
	// status alone decides.
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, fmt.Errorf("the receiver answered %s", resp.Status)
	}
	return resp.StatusCode, nil
}

// signature is the hex HMAC-SHA256, keyed with secret, of the
// timestamp, a dot and the body.
func signature(secret []byte, ts string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}
