package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHandlerExposesEveryMetricWithHelp(t *testing.T) {
	m := New()
	m.SMTPAccepted.WithLabelValues("issuer", "bulk").Inc()
	m.DeliveryAttempts.WithLabelValues("gmail", "delivered", ReplyClass(250)).Inc()
	m.Queued.WithLabelValues("gmail", "bulk").Set(3)
	m.DeliveryLatency.WithLabelValues("gmail", "bulk").Observe(0.2)
	m.ShapingWait.WithLabelValues("gmail", "bulk").Observe(0.1)
	m.DKIMSignDuration.WithLabelValues("rsa-sha256").Observe(0.001)
	m.SMTPRejected.WithLabelValues("relay").Inc()
	m.DeliveryDuration.WithLabelValues("gmail").Observe(0.01)
	m.ConnectionsOpened.WithLabelValues("gmail", "true").Inc()

	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(body)
	for _, want := range []string{
		`certgate_smtp_accepted_messages_total{class="bulk",tenant="issuer"} 1`,
		`certgate_delivery_attempts_total{provider="gmail",reply_class="2xx",result="delivered"} 1`,
		`certgate_queue_recipients{class="bulk",provider="gmail"} 3`,
		`# HELP certgate_delivery_latency_seconds `,
		`# HELP certgate_shaping_wait_seconds `,
		`# HELP certgate_smtp_accept_duration_seconds `,
		`certgate_smtp_rejected_total{reason="relay"} 1`,
		`go_goroutines`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
}

func TestReplyClass(t *testing.T) {
	for code, want := range map[int]string{250: "2xx", 421: "4xx", 451: "4xx", 550: "5xx", 0: "none", 354: "none"} {
		if got := ReplyClass(code); got != want {
			t.Errorf("ReplyClass(%d) = %q, want %q", code, got, want)
		}
	}
}
