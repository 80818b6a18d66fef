package delivery

import (
	"bytes"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func testDSN(diag, gaveUp string) []byte {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	return buildDSN(dsnInput{ReportingMTA: "relay.ca.example", QueueID: "q", OriginalID: "o", Sender: "a@ca.example",
		Recipient: "b@x.example", RemoteMTA: "mx.x.example", Status: "5.1.1", Diagnostic: diag, GaveUp: gaveUp,
		Arrival: now.Add(-time.Hour), Now: now, Original: []byte("From: a@ca.example\r\n\r\nbody\r\n")})
}

// go-smtp's client passes a receiver's reply through as it came: NULs,
// terminal escapes and bytes that are not UTF-8 must not reach the DSN,
// and its delivery-status part stays US-ASCII (RFC 3464 2.1.1).
func TestDSNKeepsReceiverControlsOut(t *testing.T) {
	dsn := testDSN("550 5.1.1 bad\x00user \x1b[2J\u0085 café \xff end", "")
	own, _, _ := bytes.Cut(dsn, []byte("Content-Type: text/rfc822-headers"))
	if i := bytes.IndexFunc(own, func(r rune) bool { return r != '\r' && r != '\n' && isControl(r) }); i >= 0 {
		t.Fatalf("control character %q in the DSN:\n%q", own[i], own)
	}
	if !utf8.Valid(own) {
		t.Fatalf("DSN is not UTF-8:\n%q", own)
	}
	if !bytes.Contains(own, []byte("    550 5.1.1 bad user [2J café ? end\r\n")) {
		t.Errorf("the human part lost the reply's text:\n%s", own)
	}
	_, status, _ := bytes.Cut(own, []byte("Content-Type: message/delivery-status"))
	for _, b := range status {
		if b > 0x7e {
			t.Fatalf("non-ASCII octet %#x in the delivery-status part:\n%s", b, status)
		}
	}
	if !bytes.Contains(status, []byte("Diagnostic-Code: smtp; 550 5.1.1 bad user [2J caf? ? end\r\n")) {
		t.Errorf("delivery-status part:\n%s", status)
	}
}

// Mail that expired says so, and quotes the receiver's last reply as it
// was given (RFC 3464 2.3.6), not certgate's words as if they were the
// receiver's.
func TestDSNForExpiredMail(t *testing.T) {
	for _, res := range []Result{
		{Code: 452, Enhanced: "4.2.2", Text: "mailbox full", GaveUp: "no delivery for 6s"},
		{Code: 554, Enhanced: "5.7.1", Text: "no service", Network: true, GaveUp: "no delivery for 6s"},
		{Text: "connect: connection refused", Network: true, GaveUp: "no delivery for 6s"},
	} {
		if s := dsnStatus(res); s != "5.4.7" {
			t.Errorf("%v: status %s, want 5.4.7 (delivery time expired)", res, s)
		}
	}
	dsn := string(testDSN("452 4.2.2 mailbox full", "no delivery for 6s"))
	for _, want := range []string{
		"Delivery was retried until certgate gave up: no delivery for 6s.\r\nThe receiving server mx.x.example last answered:\r\n\r\n    452 4.2.2 mailbox full\r\n",
		"Diagnostic-Code: smtp; 452 4.2.2 mailbox full\r\n",
	} {
		if !strings.Contains(dsn, want) {
			t.Errorf("DSN without %q:\n%s", want, dsn)
		}
	}
	if strings.Contains(testDSNText(t, "550 5.1.1 no such user", ""), "gave up") {
		t.Error("a refused message's DSN speaks of giving up")
	}
}

func testDSNText(t *testing.T, diag, gaveUp string) string {
	t.Helper()
	own, _, _ := strings.Cut(string(testDSN(diag, gaveUp)), "Content-Type: message/delivery-status")
	return own
}

// An attempt that got no SMTP reply (a refused connection, a timeout) is
// not quoted as the receiver's answer, and its Diagnostic-Code is not typed
// smtp (RFC 3464 2.3.6).
func TestDSNWithoutAReply(t *testing.T) {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	dsn := string(buildDSN(dsnInput{ReportingMTA: "relay.ca.example", QueueID: "q", OriginalID: "o", Sender: "a@ca.example",
		Recipient: "b@x.example", RemoteMTA: "mx.x.example", Status: "5.4.7", Diagnostic: "dial tcp 192.0.2.1:25: connect: connection refused",
		GaveUp: "no delivery in 72h", NoReply: true, Arrival: now.Add(-72 * time.Hour), Now: now, Original: []byte("From: a@ca.example\r\n\r\nbody\r\n")}))
	for _, want := range []string{
		"The last attempt to deliver to mx.x.example failed:\r\n\r\n    dial tcp 192.0.2.1:25: connect: connection refused\r\n",
		"Diagnostic-Code: X-Certgate; dial tcp 192.0.2.1:25: connect: connection refused\r\n",
	} {
		if !strings.Contains(dsn, want) {
			t.Errorf("DSN without %q:\n%s", want, dsn)
		}
	}
	if strings.Contains(dsn, "answered") || strings.Contains(dsn, "Diagnostic-Code: smtp;") {
		t.Errorf("a failure with no reply is quoted as a reply:\n%s", dsn)
	}
}
