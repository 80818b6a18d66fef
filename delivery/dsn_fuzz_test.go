package delivery

import (
	"bytes"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/certgate/certgate/mimeedit"
	"github.com/certgate/certgate/sim"
)

// dsnSecret stands for what the body of certificate mail holds (a
// certificate, a download token): a DSN must never quote it.
const dsnSecret = "MIIB-BODY-SECRET-7f3a"

// FuzzBuildDSN builds bounces from what a receiving server may answer (any
// text: go-smtp's client passes it through) and any original header. The
// DSN must be mail certgate itself would accept and sign: CRLF only, no
// line over 998 octets; in what certgate writes, UTF-8 without control
// characters, and US-ASCII in the delivery-status fields; a
// multipart/report of exactly its three parts; and it never quotes the
// original's body.
func FuzzBuildDSN(f *testing.F) {
	for _, sm := range sim.SampleMails() {
		m := sm.Data
		hdr, _, _ := mimeedit.SplitHeader(m)
		f.Add("550 5.1.1 <juan@empresa.example>: Recipient address rejected: User unknown in virtual mailbox table", bytes.TrimSuffix(hdr, []byte("\r\n")))
	}
	f.Add("552-5.2.2 The email account that you tried to reach is over quota.\n552 5.2.2 https://support.google.com/mail/?p=OverQuotaPerm", []byte("From: a@ca.example\r\n"))
	f.Add("554 5.7.1 "+strings.Repeat("x", 1500), []byte(""))
	f.Add("550 \x00\x01 \u0085 é\xff", []byte("Subject: --certgate-dsn-\r\n"))
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	gaveUp := []string{"", "no delivery within max_age (5d0h0m0s)"} // both wordings, by the header's length
	f.Fuzz(func(t *testing.T, diag string, header []byte) {
		// The original is a copy certgate sent, so lines that are
		// already fine, followed by a body the DSN must leave out.
		original := append(append(append([]byte(nil), header...), "\r\n\r\n"...), "-----BEGIN CERTIFICATE-----\r\n"+dsnSecret+"\r\n"...)
		dsn := buildDSN(dsnInput{ReportingMTA: "relay.certgate.example", QueueID: "06h0dsn0000000000000000001",
			OriginalID: "06h0fuzz000000000000000001", Sender: "bounces@ca.example", Recipient: "juan@empresa.example",
			RemoteMTA: "mx.empresa.example", Status: "5.1.1", Diagnostic: diag, Arrival: now.Add(-time.Hour), Now: now,
			Original: original, GaveUp: gaveUp[len(header)%2]})
		if sim.WireProblem(header) != "" {
			return // not a header certgate could have sent
		}
		if p := sim.WireProblem(dsn); p != "" {
			t.Fatalf("DSN: %s", p)
		}
		// What certgate writes itself (all but the quoted header, which
		// holds what the original held) is UTF-8 text without control
		// characters, and the delivery-status fields are US-ASCII (RFC
		// 3464 2.1.1).
		own := dsnOwnText(t, dsn)
		if i := bytes.IndexFunc(own, func(r rune) bool { return r != '\r' && r != '\n' && isControl(r) }); i >= 0 {
			t.Fatalf("DSN holds the control character %q at %d", own[i], i)
		}
		if !utf8.Valid(own) {
			t.Fatalf("DSN text is not UTF-8:\n%q", own)
		}
		_, status, _ := bytes.Cut(own, []byte("Content-Type: message/delivery-status\r\n"))
		if i := bytes.IndexFunc(status, func(r rune) bool { return r > 0x7e }); i >= 0 {
			t.Fatalf("delivery-status field with %q, not US-ASCII", status[i])
		}
		var types []string
		if err := mimeedit.Walk(dsn, func(p *mimeedit.Part, _ []byte) error {
			types = append(types, p.MediaType)
			return nil
		}); err != nil {
			t.Fatalf("DSN does not parse: %v\n%q", err, dsn)
		}
		// Walk leaves message/* parts out: the delivery-status part is
		// checked below.
		if strings.Join(types, " ") != "text/plain text/rfc822-headers" {
			t.Fatalf("DSN parts: %q", types)
		}
		quoted, _, _ := bytes.Cut(original, []byte("\r\n\r\n"))
		if bytes.Contains(dsn, []byte(dsnSecret)) && !strings.Contains(diag, dsnSecret) && !bytes.Contains(quoted, []byte(dsnSecret)) {
			t.Fatal("DSN quotes the original's body")
		}
		if n := bytes.Count(own, []byte("\r\nDiagnostic-Code: smtp; ")); n != 1 {
			t.Fatalf("%d Diagnostic-Code fields", n)
		}
	})
}

// dsnOwnText is the DSN up to its third part, the quoted header: what
// certgate wrote itself.
func dsnOwnText(t *testing.T, dsn []byte) []byte {
	t.Helper()
	_, rest, ok := bytes.Cut(dsn, []byte(` boundary="`))
	boundary, _, ok2 := bytes.Cut(rest, []byte(`"`))
	i := bytes.Index(dsn, []byte("\r\n--"+string(boundary)+"\r\nContent-Type: text/rfc822-headers\r\n"))
	if !ok || !ok2 || i < 0 {
		t.Fatalf("DSN without its boundary or header part:\n%q", dsn)
	}
	return dsn[:i]
}
