package gateway

import (
	"bytes"
	"testing"
	"time"
	"unicode/utf8"
)

func testDSN(diag string) []byte {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	return buildDSN(dsnInput{ReportingMTA: "relay.ca.example", QueueID: "q", OriginalID: "o", Sender: "a@ca.example",
		Recipient: "b@x.example", RemoteMTA: "mx.x.example", Status: "5.1.1", Diagnostic: diag,
		Arrival: now.Add(-time.Hour), Now: now, Original: []byte("From: a@ca.example\r\n\r\nbody\r\n")})
}

// go-smtp's client passes a receiver's reply through as it came: NULs,
// terminal escapes and bytes that are not UTF-8 must not reach the DSN,
// and its delivery-status part stays US-ASCII (RFC 3464 2.1.1).
func TestDSNKeepsReceiverControlsOut(t *testing.T) {
	dsn := testDSN("550 5.1.1 bad\x00user \x1b[2J\u0085 café \xff end")
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
