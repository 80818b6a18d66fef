package delivery

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"github.com/certgate/certgate/clock"
	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/metrics"
	"github.com/certgate/certgate/policy"
	"github.com/certgate/certgate/store"
)

// finish records an attempt's outcome and moves the item on: gone when
// delivered or bounced, back to the heap when deferred. data is the copy
// when it was read from the store, for the DSN to quote.
func (q *Queue) finish(it *item, provider string, res Result, data []byte) {
	q.dropData(it)
	now := q.clock.Now()
	a, result := q.judge(it, provider, &res, now)
	if it.p.Seed != "" {
		q.metrics.SeedAttempts.WithLabelValues(provider, result).Inc() // not a customer's delivery
		if a.State == store.StateBounced {
			// The store closes its placement as missing: count it here,
			// where the watcher never sees it.
			q.metrics.Placements.WithLabelValues(provider, it.p.Tenant, store.FolderMissing).Inc()
		}
	} else {
		q.metrics.DeliveryAttempts.WithLabelValues(provider, result, metrics.ReplyClass(res.Code)).Inc()
	}
	// A seed copy is certgate's own: its bounce is a placement, not news
	// for the issuer, whose DSN would name the customer's message.
	if a.State == store.StateBounced && it.p.MailFrom != "" && it.p.Seed == "" {
		// Before the attempt is recorded: the store may then drop the body
		// whose headers the DSN quotes.
		if err := q.bounce(it.p, res, data); err != nil {
			// Recording a bounce whose DSN was lost would leave the sender
			// unaware: keep the recipient and try again later.
			q.log.Error("queue: generating DSN; recipient deferred", "id", it.p.MessageID, "rcpt", it.p.Address, "err", err)
			a.State, a.NextAttempt, result = store.StateQueued, now.Add(time.Minute), "deferred"
			a.Reply = "DSN could not be generated; last: " + res.String()
		}
	}
	if !q.record(a, it) {
		q.leave(it) // another node holds it now and delivers it
		return
	}
	age := now.Sub(it.p.ReceivedAt)
	q.log.Info("delivery", "id", it.p.MessageID, "rcpt", it.p.Address, "provider", provider, "host", res.Host,
		"result", result, "reply", res.String(), "attempt", it.p.Attempts+1, "class", string(it.class), "age", age.Round(time.Millisecond))
	switch a.State {
	case store.StateQueued:
		it.p.Attempts, it.p.NextAttempt = it.p.Attempts+1, a.NextAttempt
		q.regauge(it, provider)
		q.schedule(it)
		return
	case store.StateDelivered:
		if it.p.Seed != "" {
			break
		}
		q.metrics.DeliveryLatency.WithLabelValues(provider, string(it.class)).Observe(age.Seconds())
	}
	q.leave(it)
}

// judge turns a result into the attempt to record, following policy: 2xx
// delivered, 5xx bounced, anything else deferred on the retry schedule
// until max_age, when it bounces too (res.GaveUp then says why, for the
// DSN). result is the metric's label.
func (q *Queue) judge(it *item, provider string, res *Result, now time.Time) (a store.Attempt, result string) {
	a = store.Attempt{RecipientID: it.p.RecipientID, MessageID: it.p.MessageID, Tenant: it.p.Tenant,
		Time: now, Provider: provider, Host: res.Host, Code: res.Code, Reply: res.Detail()}
	switch policy.Classify(res.Code, res.Network) {
	case policy.Delivered:
		a.State = store.StateDelivered
		return a, "delivered"
	case policy.Bounced:
		if !res.Defer {
			a.State = store.StateBounced
			return a, "bounced"
		}
	}
	next, giveUp := q.policy.NextAttempt(it.p.Attempts+1, it.p.ReceivedAt, now)
	if !giveUp {
		a.State, a.NextAttempt = store.StateQueued, next
		return a, "deferred"
	}
	age := now.Sub(it.p.ReceivedAt).Round(time.Second).String()
	a.State = store.StateBounced
	a.Reply = "gave up after " + age + "; last: " + res.String()
	res.GaveUp = "no delivery in " + age
	return a, "bounced"
}

// record writes an attempt's outcome, retrying while the store fails (a
// full disk, say): until it lands the store still lists the copy as
// queued, and a restart would send it again or bounce it twice. The
// worker waits meanwhile, which slows its lane as it should. It is
// written even while shutting down, since the attempt happened; only a
// store that keeps failing through shutdown leaves the copy queued, to be
// sent again (a duplicate, never a loss). It reports false when the store
// says another node of the cluster holds the copy now: this node's heartbeat
// lapsed and the copy was claimed, so the holder's record is the one that
// counts (and this attempt may have made a duplicate).
func (q *Queue) record(a store.Attempt, it *item) bool {
	wait := 100 * time.Millisecond
	for {
		err := q.store.RecordAttempt(context.Background(), a)
		if errors.Is(err, store.ErrLeaseLost) {
			q.metrics.StoreErrors.WithLabelValues("lease_lost").Inc()
			q.log.Warn("queue: attempt made after another node claimed the copy; not recorded here", "id", it.p.MessageID, "rcpt", it.p.Address, "state", a.State)
			return false
		}
		if err == nil || errors.Is(err, store.ErrNotFound) {
			break
		}
		q.metrics.StoreErrors.WithLabelValues("record_attempt").Inc()
		q.log.Error("queue: recording attempt; retrying", "id", it.p.MessageID, "rcpt", it.p.Address, "err", err, "in", wait)
		if !clock.Sleep(q.clock, wait, q.ctx.Done()) {
			err := q.store.RecordAttempt(context.Background(), a)
			if errors.Is(err, store.ErrLeaseLost) {
				return false // another node holds it: its record counts
			}
			if err != nil {
				q.log.Error("queue: attempt not recorded; the copy stays queued", "id", it.p.MessageID, "rcpt", it.p.Address, "err", err)
				return true
			}
			break
		}
		wait = min(2*wait, 5*time.Second)
	}
	if q.recorded != nil {
		q.recorded(a)
	}
	return true
}

// react feeds a reply to the lane's rules: a rule may slow or suspend the
// lane, and may say that a 5xx is to be retried. What a rule did is
// logged and counted; the lane's state itself is the lane's.
func (q *Queue) react(pl *policy.Lane, it *item, res *Result) {
	re := pl.React(res.Code, res.Enhanced, res.Text, it.p.Tenant)
	if re.Rule == "" {
		return
	}
	// A per-tenant suspension defers its bulk until DNS is fixed; a
	// one-time code that cannot wait is better bounced now, so that the
	// issuer hears of it.
	res.Defer = re.Defer && !(it.class == config.ClassTransactional && re.Action == config.ActionSuspend)
	if !re.Acted {
		return
	}
	q.metrics.RuleHits.WithLabelValues(pl.Name(), re.Rule, string(re.Action), strconv.FormatBool(re.Alert)).Inc()
	st := pl.State()
	level := slog.LevelInfo
	if re.Alert {
		level = slog.LevelWarn
	}
	q.log.Log(context.Background(), level, "lane rule", "lane", pl.Key(), "rule", re.Rule, "action", re.Action,
		"alert", re.Alert, "reply", res.String(), "tenant", it.p.Tenant, "state", st.Name, "rate", st.Rate, "until", st.Until,
		"reason", re.Reason)
}
