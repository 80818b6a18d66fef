// Package metrics owns certgate's Prometheus registry and every metric it
// exports, each with its help text. It imports no domain package: the others
// call into it with plain labels.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Latency buckets from 1 ms to about 18 hours: accept-to-delivered spans
// sub-second urgent mail and multi-hour retries.
var latencyBuckets = prometheus.ExponentialBuckets(0.001, 2.5, 20)

// Metrics is the set of metrics of one certgate process.
type Metrics struct {
	Registry *prometheus.Registry

	SMTPConnections    prometheus.Gauge
	SMTPAccepted       *prometheus.CounterVec   // tenant, class
	SMTPRejected       *prometheus.CounterVec   // reason
	SMTPAuthFailures   prometheus.Counter       //
	SMTPAcceptDuration prometheus.Histogram     // end of DATA to reply
	DKIMSignDuration   *prometheus.HistogramVec // algorithm

	Queued            *prometheus.GaugeVec     // provider, class
	DeliveryAttempts  *prometheus.CounterVec   // provider, result, reply_class
	DeliveryLatency   *prometheus.HistogramVec // provider, class: accepted to delivered
	ShapingWait       *prometheus.HistogramVec // provider, class
	DeliveryDuration  *prometheus.HistogramVec // provider: one SMTP transaction
	ConnectionsOpened *prometheus.CounterVec   // provider, tls
	DSNSent           prometheus.Counter

	GateViews    *prometheus.CounterVec // state
	GateUses     prometheus.Counter
	GateRefusals *prometheus.CounterVec // reason
	Releases     *prometheus.CounterVec // scope
	Held         *prometheus.GaugeVec   // tenant

	SeedAttempts       *prometheus.CounterVec   // provider, result: seed copies, never customer deliveries
	Placements         *prometheus.CounterVec   // provider, tenant, folder: first finds and missing copies
	PlacementMoves     *prometheus.CounterVec   // provider, from, to
	PlacementDetection *prometheus.HistogramVec // provider: arrival in the mailbox to detection
	PlacementArrival   *prometheus.HistogramVec // provider: the receiver's 2xx to arrival in the mailbox
	SeedMailboxUp      *prometheus.GaugeVec     // seed, folder
	SeedAuthFailures   *prometheus.CounterVec   // provider, method: a seed copy found without dkim or dmarc pass

	StoreErrors      *prometheus.CounterVec // op: failed reads and writes of the store on the mail path
	RuleHits         *prometheus.CounterVec // provider, rule, action, alert: reply rules that acted
	PlacementActions *prometheus.CounterVec // provider, action: lanes slowed or suspended for their seed copies' placement
}

// Detection buckets from 10 ms to about 10 minutes: IDLE reports within
// a second, polling servers within their interval.
var detectionBuckets = prometheus.ExponentialBuckets(0.01, 2, 17)

// New registers every metric on a fresh registry, with Go and process
// collectors.
func New() *Metrics {
	r := prometheus.NewRegistry()
	f := func(c prometheus.Collector) { r.MustRegister(c) }
	m := &Metrics{
		Registry: r,
		SMTPConnections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "certgate_smtp_connections",
			Help: "Open SMTP submission connections.",
		}),
		SMTPAccepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certgate_smtp_accepted_messages_total",
			Help: "Messages accepted (250 after durable spooling), by tenant and class.",
		}, []string{"tenant", "class"}),
		SMTPRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certgate_smtp_rejected_total",
			Help: "SMTP connections, commands or messages refused, by reason: auth_required, tls_required, auth_failed, auth_limit (failures from the address), auth_busy (no bcrypt slot), alignment, class (not allowed to the tenant), recipients, size, over_budget (more than the whole memory budget), memory (budget in use), tenant_rate, tenant_queue, smuggling, syntax, sequence, errors (too many), connections (limits per address, network or server), timeout, pre_auth_timeout, max_session_without_mail, tempfail, shutdown.",
		}, []string{"reason"}),
		SMTPAuthFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "certgate_smtp_auth_failures_total",
			Help: "Failed SMTP AUTH attempts.",
		}),
		SMTPAcceptDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "certgate_smtp_accept_duration_seconds",
			Help:    "Time from the end of DATA to the reply: preparation, signing and durable spooling.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 1.6, 24),
		}),
		DKIMSignDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "certgate_dkim_sign_duration_seconds",
			Help:    "Time to compute the DKIM signatures of one message, by key algorithm set.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}, []string{"algorithm"}),
		Queued: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "certgate_queue_recipients",
			Help: "Recipients waiting for delivery, by provider lane and class.",
		}, []string{"provider", "class"}),
		DeliveryAttempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certgate_delivery_attempts_total",
			Help: "Delivery attempts by provider, result (delivered, deferred, bounced) and reply class (2xx, 4xx, 5xx, none).",
		}, []string{"provider", "result", "reply_class"}),
		DeliveryLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "certgate_delivery_latency_seconds",
			Help:    "Time from acceptance to delivery, by provider and class.",
			Buckets: latencyBuckets,
		}, []string{"provider", "class"}),
		ShapingWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "certgate_shaping_wait_seconds",
			Help:    "Time a ready delivery waited on its provider's rate limit.",
			Buckets: latencyBuckets,
		}, []string{"provider", "class"}),
		DeliveryDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "certgate_delivery_duration_seconds",
			Help:    "Duration of one SMTP delivery transaction (MAIL to final reply), by provider.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 18),
		}, []string{"provider"}),
		ConnectionsOpened: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certgate_delivery_connections_total",
			Help: "Outbound SMTP connections opened, by provider and whether TLS was used.",
		}, []string{"provider", "tls"}),
		DSNSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "certgate_dsn_generated_total",
			Help: "Delivery status notifications (bounces) generated to envelope senders.",
		}),
		GateViews: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certgate_gate_views_total",
			Help: "Gate pages shown (GET and HEAD, which never change a link), by the link's state (pending, enabled, used, expired, revoked, invalid).",
		}, []string{"state"}),
		GateUses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "certgate_gate_uses_total",
			Help: "Link uses: button presses forwarded to the issuer's download.",
		}),
		GateRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certgate_gate_refusals_total",
			Help: "Button presses not counted, by reason (scanner, too_fast, no_form, stale_form, rate_limited, pending, used, expired, revoked).",
		}, []string{"reason"}),
		Releases: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certgate_releases_total",
			Help: "Messages released through the API, by the scope of the token that asked (release or admin).",
		}, []string{"scope"}),
		Held: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "certgate_held_messages",
			Help: "Messages certgate holds in its own quarantine until released, by tenant.",
		}, []string{"tenant"}),
		SeedAttempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certgate_seed_delivery_attempts_total",
			Help: "Delivery attempts of seed copies, by provider and result (delivered, deferred, bounced); they are not in certgate_delivery_attempts_total.",
		}, []string{"provider", "result"}),
		Placements: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certgate_placements_total",
			Help: "Seed copies by where they landed (inbox, junk, tab:<name>, missing), by provider and tenant, counted when first found or when their deadline passed unfound.",
		}, []string{"provider", "tenant", "folder"}),
		PlacementMoves: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certgate_placement_moves_total",
			Help: "Seed copies moved after they were first found (a filter's second look), by provider and folders.",
		}, []string{"provider", "from", "to"}),
		PlacementDetection: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "certgate_placement_detection_seconds",
			Help:    "From a seed copy's arrival in the mailbox (INTERNALDATE) to certgate finding it, by provider.",
			Buckets: detectionBuckets,
		}, []string{"provider"}),
		PlacementArrival: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "certgate_placement_arrival_seconds",
			Help:    "From the receiver's 2xx to a seed copy's arrival in the mailbox, by provider.",
			Buckets: latencyBuckets,
		}, []string{"provider"}),
		SeedAuthFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certgate_seed_auth_failures_total",
			Help: "Seed copies the receiver filed without dkim=pass or without dmarc=pass (method) in its Authentication-Results: DNS or signing is broken.",
		}, []string{"provider", "method"}),
		StoreErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certgate_store_errors_total",
			Help: "Failed reads and writes of the store on the mail path, by operation (enqueue, record_attempt, read_copy; lease_lost: an attempt this node of a cluster made after another claimed the copy, which that node records): each is retried or answered 451, never lost, but a disk that fails them needs a person.",
		}, []string{"op"}),
		RuleHits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certgate_rule_hits_total",
			Help: "Reply rules that acted (their threshold reached), by provider, rule, action (slow, suspend, set, defer, alert) and whether the rule asks for a human (alert: true or false).",
		}, []string{"provider", "rule", "action", "alert"}),
		PlacementActions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certgate_placement_actions_total",
			Help: "Lanes slowed or suspended (action) because too few of their seed copies reached the inbox, by provider.",
		}, []string{"provider", "action"}),
		SeedMailboxUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "certgate_seed_mailbox_up",
			Help: "1 while the watcher's connection to a seed mailbox folder is up, 0 while it reconnects.",
		}, []string{"seed", "folder"}),
	}
	f(m.SMTPConnections)
	f(m.SMTPAccepted)
	f(m.SMTPRejected)
	f(m.SMTPAuthFailures)
	f(m.SMTPAcceptDuration)
	f(m.DKIMSignDuration)
	f(m.Queued)
	f(m.DeliveryAttempts)
	f(m.DeliveryLatency)
	f(m.ShapingWait)
	f(m.DeliveryDuration)
	f(m.ConnectionsOpened)
	f(m.DSNSent)
	f(m.GateViews)
	f(m.GateUses)
	f(m.GateRefusals)
	f(m.Releases)
	f(m.Held)
	f(m.SeedAttempts)
	f(m.Placements)
	f(m.PlacementMoves)
	f(m.PlacementDetection)
	f(m.PlacementArrival)
	f(m.SeedMailboxUp)
	f(m.SeedAuthFailures)
	f(m.RuleHits)
	f(m.StoreErrors)
	f(m.PlacementActions)
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

// ReplyClass turns an SMTP reply code into the reply_class label.
func ReplyClass(code int) string {
	switch {
	case code >= 200 && code < 300:
		return "2xx"
	case code >= 400 && code < 500:
		return "4xx"
	case code >= 500 && code < 600:
		return "5xx"
	}
	return "none"
}
