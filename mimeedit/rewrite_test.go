package mimeedit

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

func identity(p *Part, decoded []byte) ([]byte, bool, error) { return decoded, false, nil }

func forceReencode(p *Part, decoded []byte) ([]byte, bool, error) { return decoded, true, nil }

func TestSamplesRoundTrip(t *testing.T) {
	for _, s := range samples(t) {
		t.Run(s.Name, func(t *testing.T) {
			out, err := Rewrite(s.Data, identity)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out, s.Data) {
				t.Fatal("identity rewrite changed the message")
			}
			// Re-encoding every part must keep every decoded body.
			out, err = Rewrite(s.Data, forceReencode)
			if err != nil {
				t.Fatal(err)
			}
			checkLines(t, out, MaxLineLength)
			before, after := leaves(t, s.Data), leaves(t, out)
			if len(before) != len(after) {
				t.Fatalf("%d leaves became %d", len(before), len(after))
			}
			for i := range before {
				if !bytes.Equal(before[i].decoded, after[i].decoded) {
					t.Errorf("part %s: decoded body changed by re-encoding", before[i].path)
				}
			}
		})
	}
}

func TestSamplesWalk(t *testing.T) {
	want := map[string][]string{
		"01": {"1 text/plain quoted-printable utf-8", "2 text/html quoted-printable utf-8"},
		"02": {"1 text/plain 8bit utf-8"},
		"03": {"1 text/plain base64 utf-8", "2 application/pkix-cert base64 ", "3 application/x-pem-file base64 "},
		"04": {"1 text/plain quoted-printable utf-8"},
		"05": {"1 text/html 8bit utf-8"},
	}
	for _, s := range samples(t) {
		var got []string
		err := Walk(s.Data, func(p *Part, decoded []byte) error {
			got = append(got, fmt.Sprintf("%s %s %s %s", p.Path, p.MediaType, p.Encoding, p.Charset))
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", s.Name, err)
		}
		if w := want[s.Name[:2]]; fmt.Sprint(got) != fmt.Sprint(w) {
			t.Errorf("%s: parts %q, want %q", s.Name, got, w)
		}
	}
}

func TestFixLongLinesSample05(t *testing.T) {
	msg := sampleMsg(t, "05")
	if maxLine(msg) != 1898 {
		t.Fatalf("sample 05 changed: longest line %d", maxLine(msg))
	}
	out, changed, err := FixLongLines(msg)
	if err != nil || !changed {
		t.Fatalf("changed=%v err=%v", changed, err)
	}
	checkLines(t, out, 76) // quoted-printable lines (RFC 2045 6.7 rule 5)

	oldHdr, oldBody, _ := SplitHeader(msg)
	newHdr, newBody, err := SplitHeader(out)
	if err != nil {
		t.Fatal(err)
	}
	// Only the Content-Transfer-Encoding line of the header changes.
	wantHdr := strings.Replace(string(oldHdr), "Content-Transfer-Encoding: 8bit\r\n",
		"Content-Transfer-Encoding: quoted-printable\r\n", 1)
	if string(newHdr) != wantHdr {
		t.Errorf("header:\n%s\nwant:\n%s", newHdr, wantHdr)
	}
	decoded, err := decode("quoted-printable", newBody)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(decoded, oldBody) {
		t.Error("decoding the new body does not give the old body")
	}
	// Idempotent.
	if again, changed, err := FixLongLines(out); err != nil || changed || !bytes.Equal(again, out) {
		t.Errorf("second FixLongLines: changed=%v err=%v", changed, err)
	}
}

func TestFixLongLinesOtherSamplesUnchanged(t *testing.T) {
	for _, s := range samples(t) {
		if strings.HasPrefix(s.Name, "05") {
			continue
		}
		out, changed, err := FixLongLines(s.Data)
		if err != nil || changed || !bytes.Equal(out, s.Data) {
			t.Errorf("%s: changed=%v err=%v", s.Name, changed, err)
		}
	}
}

func replaceIn(old, new string, types ...string) EditFunc {
	return func(p *Part, decoded []byte) ([]byte, bool, error) {
		for _, t := range types {
			if p.MediaType == t && bytes.Contains(decoded, []byte(old)) {
				return bytes.ReplaceAll(decoded, []byte(old), []byte(new)), true, nil
			}
		}
		return decoded, false, nil
	}
}

func TestRewriteURLSample01(t *testing.T) {
	const oldURL, newURL = "https://descargas.ca.example/certificado/", "https://gate.example/d/TOKEN"
	msg := sampleMsg(t, "01")
	out, err := Rewrite(msg, replaceIn(oldURL, newURL, "text/plain", "text/html"))
	if err != nil {
		t.Fatal(err)
	}
	equalSkeleton(t, msg, out) // headers, delimiters, preamble, epilogue
	checkLines(t, out, MaxLineLength)
	before, after := leaves(t, msg), leaves(t, out)
	if len(after) != 2 {
		t.Fatalf("%d parts", len(after))
	}
	for i := range after {
		checkLines(t, after[i].raw, 76)
		if after[i].encoding != "quoted-printable" {
			t.Errorf("part %s: encoding %s", after[i].path, after[i].encoding)
		}
		if bytes.Equal(before[i].raw, after[i].raw) {
			t.Errorf("part %s unchanged", after[i].path)
		}
		want := bytes.ReplaceAll(before[i].decoded, []byte(oldURL), []byte(newURL))
		if !bytes.Equal(after[i].decoded, want) {
			t.Errorf("part %s decoded:\n%s\nwant:\n%s", after[i].path, after[i].decoded, want)
		}
		if !bytes.Contains(after[i].decoded, []byte(newURL+"descargar?pedido=88412")) {
			t.Errorf("part %s lacks the new URL", after[i].path)
		}
	}
}

func TestRewriteBase64Sample03(t *testing.T) {
	const oldURL, newURL = "https://www.certs.example/download/", "https://gate.example/d/TOKEN/"
	msg := sampleMsg(t, "03")
	out, err := Rewrite(msg, replaceIn(oldURL, newURL, "text/plain"))
	if err != nil {
		t.Fatal(err)
	}
	equalSkeleton(t, msg, out)
	checkLines(t, out, MaxLineLength)
	before, after := leaves(t, msg), leaves(t, out)
	checkLines(t, after[0].raw, 76)
	if after[0].encoding != "base64" || bytes.Equal(before[0].raw, after[0].raw) {
		t.Errorf("text part: encoding %s, changed %v", after[0].encoding, !bytes.Equal(before[0].raw, after[0].raw))
	}
	if !bytes.Contains(after[0].decoded, []byte(newURL+"7732/a81d07")) {
		t.Errorf("text part lacks the new URL:\n%s", after[0].decoded)
	}
	for _, i := range []int{1, 2} { // the DER and PEM attachments
		if !bytes.Equal(before[i].raw, after[i].raw) {
			t.Errorf("attachment %s changed", after[i].path)
		}
	}
}

// msgOf builds a CRLF message from LF-separated lines.
func msgOf(s string) []byte { return []byte(strings.ReplaceAll(s, "\n", "\r\n")) }

const nested = `From: a@example.org
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=outer

This is the preamble.
--outer
Content-Type: multipart/alternative; boundary="outer-inner"

inner preamble
--outer-inner
Content-Type: text/plain

plain http://x.example/a
--outer-inner
Content-Type: text/html; charset=iso-8859-1
Content-Transfer-Encoding: quoted-printable

<a href=3D"http://x.example/a">a</a>
--outer-inner--
inner epilogue
--outer
Content-Type: message/rfc822

From: b@example.org
Subject: forwarded http://x.example/a

http://x.example/a
--outer  
Content-Type: application/octet-stream
Content-Transfer-Encoding: base64

aHR0cDovL3guZXhhbXBsZS9h
--outer--
epilogue http://x.example/a
`

func TestNestedStructure(t *testing.T) {
	msg := msgOf(nested)
	ls := leaves(t, msg)
	var got []string
	for _, l := range ls {
		got = append(got, l.path+" "+l.mediaType+" "+string(l.decoded))
	}
	want := []string{
		"1.1 text/plain plain http://x.example/a",
		`1.2 text/html <a href="http://x.example/a">a</a>`,
		"3 application/octet-stream http://x.example/a",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("leaves:\n%q\nwant:\n%q", got, want)
	}
	out, err := Rewrite(msg, func(p *Part, d []byte) ([]byte, bool, error) {
		n := bytes.ReplaceAll(d, []byte("http://x.example/a"), []byte("https://gate.example/t"))
		return n, !bytes.Equal(n, d), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	equalSkeleton(t, msg, out) // message/rfc822, preambles and epilogues kept
	if n := bytes.Count(out, []byte("http://x.example/a")); n != 3 {
		t.Errorf("%d old URLs left, want 3 (message/rfc822 twice, epilogue)", n)
	}
	for _, l := range leaves(t, out) {
		if !bytes.Contains(l.decoded, []byte("https://gate.example/t")) {
			t.Errorf("part %s: %q", l.path, l.decoded)
		}
	}
}

func TestDigestDefaultType(t *testing.T) {
	msg := msgOf(`Content-Type: multipart/digest; boundary=b

--b

From: x@example.org

hello
--b
Content-Type: text/plain

plain
--b--
`)
	ls := leaves(t, msg)
	if len(ls) != 1 || ls[0].path != "2" {
		t.Fatalf("leaves %+v, want only part 2 (part 1 defaults to message/rfc822)", ls)
	}
}

func TestEncodingChanges(t *testing.T) {
	t.Run("7bit with non-ASCII becomes QP", func(t *testing.T) {
		msg := msgOf("Content-Type: multipart/mixed; boundary=b\n\n--b\ncontent-transfer-encoding: 7BIT\nContent-Type: text/plain\n\nhello\n--b--\n")
		out, err := Rewrite(msg, func(p *Part, d []byte) ([]byte, bool, error) {
			return []byte("olá\r\n"), true, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		want := msgOf("Content-Type: multipart/mixed; boundary=b\n\n--b\ncontent-transfer-encoding: quoted-printable\nContent-Type: text/plain\n\nol=C3=A1\n\n--b--\n")
		if !bytes.Equal(out, want) {
			t.Errorf("got\n%q\nwant\n%q", out, want)
		}
	})
	t.Run("non-MIME message gets MIME-Version and CTE", func(t *testing.T) {
		msg := msgOf("From: a@example.org\nSubject: x\n\n" + strings.Repeat("é", 600) + "\n")
		out, changed, err := FixLongLines(msg)
		if err != nil || !changed {
			t.Fatal(changed, err)
		}
		hdr, body, _ := SplitHeader(out)
		if string(hdr) != "From: a@example.org\r\nSubject: x\r\nMIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" {
			t.Errorf("header %q", hdr)
		}
		checkLines(t, body, 76)
	})
	t.Run("8bit that stays valid stays 8bit", func(t *testing.T) {
		msg := msgOf("Content-Transfer-Encoding: 8bit\n\nhello\n")
		out, err := Rewrite(msg, func(p *Part, d []byte) ([]byte, bool, error) {
			return []byte("olá\r\n"), true, nil
		})
		if err != nil || string(out) != "Content-Transfer-Encoding: 8bit\r\n\r\nolá\r\n" {
			t.Errorf("%q %v", out, err)
		}
	})
	t.Run("new body that looks like a delimiter", func(t *testing.T) {
		msg := msgOf("Content-Type: multipart/mixed; boundary=b\n\n--b\n\nhello\n--b--\n")
		out, err := Rewrite(msg, func(p *Part, d []byte) ([]byte, bool, error) {
			return []byte("x\r\n--b--\r\n-y"), true, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		want := msgOf("Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Transfer-Encoding: quoted-printable\n\nx\n=2D-b--\n=2Dy\n--b--\n")
		if !bytes.Equal(out, want) {
			t.Errorf("got\n%q\nwant\n%q", out, want)
		}
		if ls := leaves(t, out); len(ls) != 1 || string(ls[0].decoded) != "x\r\n--b--\r\n-y" {
			t.Errorf("leaves %+v", ls)
		}
	})
}

func TestRewriteErrors(t *testing.T) {
	deep := "Content-Type: multipart/mixed; boundary=b0\n\n"
	for i := 1; i <= MaxDepth+1; i++ {
		deep += fmt.Sprintf("--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n", i-1, i)
	}
	many := "Content-Type: multipart/mixed; boundary=b\n\n" + strings.Repeat("--b\n\nx\n", MaxParts) + "--b--\n"
	cases := []struct {
		name string
		msg  []byte
		want error
	}{
		{"LF only", []byte("From: a\n\nbody\n"), ErrNotCRLF},
		{"bare CR in body", []byte("From: a\r\n\r\nbo\rdy\r\n"), ErrNotCRLF},
		{"bare LF in body", []byte("From: a\r\n\r\nbo\ndy\r\n"), ErrNotCRLF},
		{"header line without colon", msgOf("From a\n\nbody\n"), ErrMalformed},
		{"leading continuation", msgOf(" From: a\n\nbody\n"), ErrMalformed},
		{"two Content-Types", msgOf("Content-Type: text/plain\nContent-Type: text/html\n\nx\n"), ErrMalformed},
		{"two CTEs", msgOf("Content-Transfer-Encoding: base64\nContent-Transfer-Encoding: 7bit\n\nx\n"), ErrMalformed},
		{"unknown CTE", msgOf("Content-Transfer-Encoding: x-uuencode\n\nx\n"), ErrMalformed},
		{"bad Content-Type", msgOf("Content-Type: text\n\nx\n"), ErrMalformed},
		{"no boundary", msgOf("Content-Type: multipart/mixed\n\nx\n"), ErrMalformed},
		{"base64 multipart", msgOf("Content-Type: multipart/mixed; boundary=b\nContent-Transfer-Encoding: base64\n\nx\n"), ErrMalformed},
		{"bad quoted-printable", msgOf("Content-Transfer-Encoding: quoted-printable\n\nx\x01\n"), ErrMalformed},
		{"too deep", msgOf(deep), ErrTooDeep},
		{"too many parts", msgOf(many), ErrTooManyParts},
	}
	for _, c := range cases {
		_, err := Rewrite(c.msg, identity)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: err %v, want %v", c.name, err, c.want)
		}
	}
	var pe *PartError
	_, err := Rewrite(msgOf("Content-Type: multipart/mixed; boundary=b\n\n--b\n\n--b\nContent-Type: text\n\nx\n--b--\n"), identity)
	if !errors.As(err, &pe) || pe.Path != "2" {
		t.Errorf("err %v, want a PartError for part 2", err)
	}
	wantErr := errors.New("stop")
	if _, err := Rewrite(sampleMsg(t, "01"), func(*Part, []byte) ([]byte, bool, error) { return nil, false, wantErr }); err != wantErr {
		t.Errorf("edit error: %v", err)
	}
}

func TestTolerated(t *testing.T) {
	for name, s := range map[string]string{
		"missing close delimiter": "Content-Type: multipart/mixed; boundary=b\n\n--b\n\nx\n",
		"no parts at all":         "Content-Type: multipart/mixed; boundary=b\n\njust a preamble\n",
		"adjacent delimiters":     "Content-Type: multipart/mixed; boundary=b\n\n--b\n--b\n\nx\n--b--\n",
		"header-only part":        "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n--b--\n",
		"no body":                 "From: a\nSubject: b\n",
		"no final CRLF":           "From: a\n\nbody",
		"invalid parameter":       "Content-Type: text/plain; charset\n\nbody\n",
		"lower-case hex in QP":    "Content-Transfer-Encoding: quoted-printable\n\n=c3=a1\n",
		"base64 without padding":  "Content-Transfer-Encoding: base64\n\naGk\n",
	} {
		msg := msgOf(s)
		if name == "no final CRLF" {
			msg = []byte("From: a\r\n\r\nbody")
		}
		out, err := Rewrite(msg, forceReencode)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if b, err := collect(msg); err != nil {
			t.Errorf("%s: %v", name, err)
		} else if a, err := collect(out); err != nil || !sameDecoded(a, b) {
			t.Errorf("%s: re-encoding changed content: %v", name, err)
		}
	}
}

func sameDecoded(a, b []leaf) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i].decoded, b[i].decoded) {
			return false
		}
	}
	return true
}

func TestFixLongLinesErrors(t *testing.T) {
	long := strings.Repeat("x", 999)
	cases := []struct {
		name string
		msg  string
		want error
	}{
		{"long header", "Subject: " + long + "\n\nbody\n", ErrLongHeaderLine},
		{"long part header", "Content-Type: multipart/mixed; boundary=b\n\n--b\nX-Long: " + long + "\n\n" + long + "\n--b--\n", ErrLongHeaderLine},
		{"long preamble", "Content-Type: multipart/mixed; boundary=b\n\n" + long + "\n--b\n\nx\n--b--\n", ErrUnfixableLongLine},
		{"long message/rfc822", "Content-Type: message/rfc822\n\nFrom: a\n\n" + long + "\n", ErrUnfixableLongLine},
	}
	for _, c := range cases {
		_, _, err := FixLongLines(msgOf(c.msg))
		if !errors.Is(err, c.want) {
			t.Errorf("%s: err %v, want %v", c.name, err, c.want)
		}
	}
	// A malformed part without long lines does not stop the others.
	msg := msgOf("Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Transfer-Encoding: quoted-printable\n\nbad\x01qp\n--b\n\n" + long + "\n--b--\n")
	out, changed, err := FixLongLines(msg)
	if err != nil || !changed {
		t.Fatalf("malformed neighbour: changed=%v err=%v", changed, err)
	}
	checkLines(t, out, MaxLineLength)

	// Long lines in QP and base64 are re-encoded in the same encoding.
	for _, enc := range []string{"quoted-printable", "base64"} {
		body := strings.Repeat("=41", 400)
		if enc == "base64" {
			body = strings.Repeat("QUJD", 300)
		}
		msg := msgOf("Content-Type: text/plain\nContent-Transfer-Encoding: " + enc + "\n\n" + body + "\n")
		out, changed, err := FixLongLines(msg)
		if err != nil || !changed {
			t.Fatalf("%s: changed=%v err=%v", enc, changed, err)
		}
		checkLines(t, out, 76)
		a, b := leaves(t, msg), leaves(t, out)
		if b[0].encoding != enc || !bytes.Equal(a[0].decoded, b[0].decoded) {
			t.Errorf("%s: became %s, same content %v", enc, b[0].encoding, bytes.Equal(a[0].decoded, b[0].decoded))
		}
	}
}

// RewriteTypes decodes only the parts asked for: an attachment with a
// broken encoding is no error, and comes back byte for byte.
func TestRewriteTypesLeavesOtherPartsAlone(t *testing.T) {
	msg := msgOf("Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nhello\n" +
		"--b\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n!!not base64!!\n--b--\n")
	if _, err := Rewrite(msg, identity); err == nil {
		t.Fatal("Rewrite decoded the broken attachment without error; the test proves nothing")
	}
	var seen []string
	out, err := RewriteTypes(msg, []string{"text/plain"}, func(p *Part, decoded []byte) ([]byte, bool, error) {
		seen = append(seen, p.MediaType)
		return bytes.ToUpper(decoded), true, nil
	})
	if err != nil {
		t.Fatalf("RewriteTypes: %v", err)
	}
	if !slices.Equal(seen, []string{"text/plain"}) {
		t.Errorf("edit saw %v, want only text/plain", seen)
	}
	if !bytes.Contains(out, []byte("HELLO\r\n")) || !bytes.Contains(out, []byte("\r\n!!not base64!!\r\n--b--")) {
		t.Errorf("text not edited or attachment changed:\n%s", out)
	}
}
