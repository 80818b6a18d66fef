package delivery

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

type dsnInput struct {
	ReportingMTA string
	QueueID      string
	OriginalID   string
	Sender       string
	Recipient    string
	RemoteMTA    string
	Status       string // enhanced status, e.g. 5.1.1
	Diagnostic   string // the receiver's reply, or the local error
	// GaveUp, when set, is why certgate stopped retrying without a
	// permanent refusal; Diagnostic is then the last attempt's outcome.
	GaveUp string
	// NoReply: the last attempt got no SMTP reply (no connection, a
	// timeout, a dropped connection); Diagnostic is certgate's own words.
	NoReply  bool
	Arrival  time.Time
	Now      time.Time
	Original []byte // the copy as it was sent; only its header is quoted
}

// dsnStatus picks the DSN Status field: delivery time expired when the
// queue gave up (RFC 3463 3.5), else the receiver's enhanced code when it
// gave one, else one derived from the reply class.
func dsnStatus(res Result) string {
	if res.GaveUp != "" {
		return "5.4.7"
	}
	if res.Enhanced != "" && strings.HasPrefix(res.Enhanced, "5.") {
		return res.Enhanced
	}
	if res.Code >= 500 {
		return "5.0.0"
	}
	return "5.4.7" // RFC 3463 3.5: delivery time expired
}

// buildDSN writes a multipart/report delivery status notification (RFC 3464
// 2, RFC 6522) with a human part, the machine-readable status and the
// original message's header (text/rfc822-headers), never its body: the body
// of certificate mail can hold the certificate or a download token.
func buildDSN(in dsnInput) []byte {
	var rb [12]byte
	rand.Read(rb[:])
	boundary := "certgate-dsn-" + hex.EncodeToString(rb[:])
	date := in.Now.UTC().Format(time.RFC1123Z)
	var b bytes.Buffer
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\r\n", a...) }
	w("From: Mail Delivery System <MAILER-DAEMON@%s>", in.ReportingMTA)
	w("To: <%s>", in.Sender)
	w("Subject: Undelivered Mail Returned to Sender")
	w("Date: %s", date)
	w("Message-ID: <%s@%s>", in.QueueID, in.ReportingMTA)
	w("Auto-Submitted: auto-replied") // RFC 3834 5
	w("MIME-Version: 1.0")
	w("Content-Type: multipart/report; report-type=delivery-status;")
	w(" boundary=\"%s\"", boundary)
	w("")
	w("This is a MIME-encapsulated message.")
	w("")
	w("--%s", boundary)
	w("Content-Type: text/plain; charset=utf-8")
	w("Content-Transfer-Encoding: 8bit")
	w("")
	w("This is the mail system at %s.", in.ReportingMTA)
	w("")
	w("Your message %s could not be delivered to <%s>.", in.OriginalID, in.Recipient)
	last := ""
	if in.GaveUp != "" {
		w("Delivery was retried until certgate gave up: %s.", oneLine(printable(in.GaveUp, true)))
		last = " last"
	}
	switch {
	case in.NoReply && in.RemoteMTA != "":
		w("The%s attempt to deliver to %s failed:", last, in.RemoteMTA)
	case in.NoReply:
		w("The%s attempt failed:", last)
	case in.RemoteMTA != "":
		w("The receiving server %s%s answered:", in.RemoteMTA, last)
	default:
		w("The%s reason:", last)
	}
	w("")
	for _, line := range wrapText(oneLine(printable(in.Diagnostic, false)), 76) {
		w("    %s", line)
	}
	w("")
	w("--%s", boundary)
	w("Content-Type: message/delivery-status")
	w("")
	w("Reporting-MTA: dns; %s", in.ReportingMTA) // RFC 3464 2.2
	w("X-Certgate-Queue-ID: %s", in.OriginalID)
	w("Arrival-Date: %s", in.Arrival.UTC().Format(time.RFC1123Z))
	w("")
	w("Final-Recipient: rfc822; %s", in.Recipient) // RFC 3464 2.3
	w("Action: failed")
	w("Status: %s", in.Status)
	if in.RemoteMTA != "" {
		w("Remote-MTA: dns; %s", in.RemoteMTA)
	}
	// The fields are US-ASCII (RFC 3464 2.1.1); UTF-8 would need RFC 6533's
	// message/global-delivery-status.
	diag := oneLine(printable(in.Diagnostic, true))
	if len(diag) > 900 {
		diag = diag[:900]
	}
	// RFC 3464 2.3.6: "smtp" types a reply an SMTP server gave; a failure
	// with no reply is certgate's own diagnostic (as Postfix writes
	// "X-Postfix;").
	diagType := "smtp"
	if in.NoReply {
		diagType = "X-Certgate"
	}
	w("Diagnostic-Code: %s; %s", diagType, diag)
	w("Last-Attempt-Date: %s", date)
	w("")
	w("--%s", boundary)
	w("Content-Type: text/rfc822-headers")
	w("")
	hdr := in.Original
	if i := bytes.Index(hdr, []byte("\r\n\r\n")); i >= 0 {
		hdr = hdr[:i+2]
	}
	b.Write(hdr)
	if len(hdr) > 0 && !bytes.HasSuffix(hdr, []byte("\r\n")) {
		b.WriteString("\r\n")
	}
	w("")
	w("--%s--", boundary)
	return b.Bytes()
}

// printable drops what a receiver's reply may hold and a DSN must not: the
// reply comes through go-smtp's client as it was sent, NULs and escape
// sequences included. Control characters become spaces, invalid UTF-8
// (and, with ascii, anything beyond US-ASCII) a '?'.
func printable(s string, ascii bool) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0:
			return ' '
		case r == utf8.RuneError, ascii && r > 0x7e:
			return '?'
		}
		return r
	}, s)
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func wrapText(s string, width int) []string {
	var lines []string
	var cur strings.Builder
	var words []string
	for _, word := range strings.Fields(s) {
		// A token longer than a line is cut, so that no line of the DSN
		// can exceed RFC 5322's 998 octets whatever a receiver replied.
		// The cut falls between characters, never inside one: the text
		// part is UTF-8.
		for len(word) > width {
			cut := width
			for cut > 0 && !utf8.RuneStart(word[cut]) {
				cut--
			}
			if cut == 0 {
				cut = width
			}
			words = append(words, word[:cut])
			word = word[cut:]
		}
		words = append(words, word)
	}
	for _, word := range words {
		if cur.Len() > 0 && cur.Len()+1+len(word) > width {
			lines = append(lines, cur.String())
			cur.Reset()
		}
		if cur.Len() > 0 {
			cur.WriteByte(' ')
		}
		cur.WriteString(word)
	}
	if cur.Len() > 0 {
		lines = append(lines, cur.String())
	}
	return lines
}
