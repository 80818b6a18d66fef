package sim

import (
	"bytes"
	"embed"
	"io/fs"
	"strconv"
)

// The realistic certificate mails of shared/testdata/mail (a download link
// in quoted-printable, a PEM in the body to several recipients, an
// attachment, a one-time token, an 8-bit voucher with a long line), for
// the demo and the tests.
//
//go:embed mail/*.eml
var sampleFS embed.FS

// SampleMail returns one sample mail by file name (01-es-download-link-qp.eml).
func SampleMail(name string) ([]byte, error) { return sampleFS.ReadFile("mail/" + name) }

// Sample is one sample mail and its file name.
type Sample struct {
	Name string
	Data []byte
}

// SampleMails returns every sample mail, in file name order.
func SampleMails() []Sample {
	names, _ := fs.Glob(sampleFS, "mail/*.eml") // sorted
	out := make([]Sample, 0, len(names))
	for _, n := range names {
		b, _ := sampleFS.ReadFile(n)
		out = append(out, Sample{Name: n[len("mail/"):], Data: b})
	}
	return out
}

// WireProblem says what is wrong with b as SMTP DATA, or "": every line
// ends in CRLF (but the last may end without), none holds a NUL, and none
// is longer than 998 octets (RFC 5322 2.1.1, 2.3).
func WireProblem(b []byte) string {
	for n := 1; len(b) > 0; n++ {
		i := bytes.IndexAny(b, "\r\n")
		line := b
		if i >= 0 {
			line = b[:i]
		}
		if len(line) > 998 {
			return "line " + strconv.Itoa(n) + " has " + strconv.Itoa(len(line)) + " octets"
		}
		if bytes.IndexByte(line, 0) >= 0 {
			return "line " + strconv.Itoa(n) + " holds a NUL"
		}
		if i < 0 {
			return ""
		}
		if b[i] != '\r' || i+1 == len(b) || b[i+1] != '\n' {
			return "line " + strconv.Itoa(n) + " ends in a bare CR or LF"
		}
		b = b[i+2:]
	}
	return ""
}
