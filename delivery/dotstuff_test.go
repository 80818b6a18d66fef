package delivery

import (
	"bufio"
	"bytes"
	"net/textproto"
	"testing"

	"github.com/certgate/certgate/sim"
)

// viaDotWriter is the reference: textproto's DotWriter, minus its final
// "." CRLF line.
func viaDotWriter(t testing.TB, body []byte) []byte {
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	w := textproto.NewWriter(bw).DotWriter()
	if _, err := w.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSuffix(out.Bytes(), []byte(".\r\n"))
}

// viaDotStuff is what Send puts on the wire for parts (which end in CRLF),
// minus the final "." CRLF line.
func viaDotStuff(parts ...[]byte) []byte {
	var out bytes.Buffer
	bufs := stuffParts(parts)
	bufs.WriteTo(&out)
	return append(out.Bytes(), crlf...)
}

func TestDotStuffMatchesDotWriter(t *testing.T) {
	for _, body := range []string{
		"\r\n",
		".\r\n",
		"..\r\n",
		"a\r\n.\r\n",
		".a\r\n.b\r\n\r\n.\r\n",
		"line\r\n.leading dot\r\nend\r\n",
		"no dots here\r\n",
	} {
		if got, want := viaDotStuff([]byte(body)), viaDotWriter(t, []byte(body)); !bytes.Equal(got, want) {
			t.Errorf("%q: dotStuff gives %q, DotWriter %q", body, got, want)
		}
	}
	for _, name := range []string{"01-es-download-link-qp.eml", "05-pt-voucher-html-8bit-longline.eml"} {
		body, err := sim.SampleMail(name)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := viaDotStuff(body), viaDotWriter(t, body); !bytes.Equal(got, want) {
			t.Errorf("%s: dotStuff and DotWriter differ", name)
		}
	}
}

// FuzzDotStuff checks the stuffing against textproto's DotWriter on
// CRLF-only text, the only kind the queue sends.
func FuzzDotStuff(f *testing.F) {
	f.Add([]byte(".\r\n..\r\nx\r\n"), uint16(0))
	f.Add([]byte("a\r\n.b\r\n"), uint16(1))
	f.Fuzz(func(t *testing.T, body []byte, split uint16) {
		body = bytes.ReplaceAll(bytes.ReplaceAll(body, []byte("\r"), nil), []byte("\n"), crlf)
		body = append(body, crlf...)
		want := viaDotWriter(t, body)
		if got := viaDotStuff(body); !bytes.Equal(got, want) {
			t.Fatalf("%q: dotStuff gives %q, DotWriter %q", body, got, want)
		}
		// In two parts, split after a line, as the queue sends a prefix
		// and a body.
		if i := bytes.Index(body[int(split)%len(body):], crlf); i >= 0 {
			at := int(split)%len(body) + i + len(crlf)
			if at < len(body) {
				if got := viaDotStuff(body[:at], body[at:]); !bytes.Equal(got, want) {
					t.Fatalf("%q split at %d: dotStuff gives %q, DotWriter %q", body, at, got, want)
				}
			}
		}
	})
}
