package mimeedit

import (
	"bytes"
	"strings"
	"testing"
)

func addSeeds(f *testing.F) {
	for _, s := range samples(f) {
		f.Add(s.Data)
	}
	f.Add(msgOf(nested))
	f.Add(msgOf("Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Transfer-Encoding: quoted-printable\n\n=2D-b\n--b--\n"))
	f.Add(msgOf("Content-Type: text/plain\nContent-Transfer-Encoding: 8bit\n\n" + strings.Repeat("x ", 600) + "\n"))
}

// FuzzRewrite: an identity edit keeps every byte; re-encoding every part
// keeps every decoded body and the structure; nothing panics.
func FuzzRewrite(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, msg []byte) {
		out, err := Rewrite(msg, identity)
		if err != nil {
			return
		}
		if !bytes.Equal(out, msg) {
			t.Fatalf("identity rewrite changed the message:\n%q\n%q", msg, out)
		}
		before, err := collect(msg)
		if err != nil {
			t.Fatalf("Walk failed where Rewrite did not: %v", err)
		}
		out, err = Rewrite(msg, forceReencode)
		if err != nil {
			t.Fatalf("re-encoding failed: %v", err)
		}
		after, err := collect(out)
		if err != nil {
			t.Fatalf("re-encoded message does not parse: %v\n%q", err, out)
		}
		if len(before) != len(after) {
			t.Fatalf("%d leaves became %d:\n%q\n%q", len(before), len(after), msg, out)
		}
		for i := range before {
			b, a := before[i], after[i]
			if b.path != a.path || b.mediaType != a.mediaType || !bytes.Equal(b.decoded, a.decoded) {
				t.Fatalf("leaf %d changed: %s %s %q -> %s %s %q", i, b.path, b.mediaType, b.decoded, a.path, a.mediaType, a.decoded)
			}
			if a.encoding != "base64" && a.encoding != "quoted-printable" && maxLine(a.raw) > MaxLineLength {
				t.Fatalf("part %s: %s line of %d octets", a.path, a.encoding, maxLine(a.raw))
			}
		}
	})
}

// FuzzFixLongLines: on success no line is too long and every decoded body is
// the same.
func FuzzFixLongLines(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, msg []byte) {
		out, changed, err := FixLongLines(msg)
		if err != nil {
			return
		}
		if n := maxLine(out); n > MaxLineLength {
			t.Fatalf("line of %d octets left", n)
		}
		if !changed {
			if !bytes.Equal(out, msg) {
				t.Fatal("unchanged but different")
			}
			return
		}
		sameContent(t, msg, out)
	})
}

// sameContent checks that out has the leaves of msg, each with the same raw
// body or, if re-encoded, the same decoded body. Unlike Walk it does not
// decode the leaves left alone, which may be malformed.
func sameContent(t *testing.T, msg, out []byte) {
	t.Helper()
	before, err := parsedLeaves(msg)
	if err != nil {
		t.Fatalf("parse input: %v", err)
	}
	after, err := parsedLeaves(out)
	if err != nil {
		t.Fatalf("parse output: %v\n%q", err, out)
	}
	if len(before) != len(after) {
		t.Fatalf("%d leaves became %d", len(before), len(after))
	}
	for i, b := range before {
		a := after[i]
		rawB, rawA := msg[b.hdrEnd:b.end], out[a.hdrEnd:a.end]
		if bytes.Equal(rawB, rawA) && a.encoding == b.encoding {
			continue
		}
		db, err1 := decode(b.encoding, rawB)
		da, err2 := decode(a.encoding, rawA)
		if err1 != nil || err2 != nil || !bytes.Equal(db, da) {
			t.Fatalf("part %s: content changed (%v, %v)\n%q\n%q", b.partPath(), err1, err2, rawB, rawA)
		}
	}
}

func parsedLeaves(msg []byte) ([]*entity, error) {
	root, err := parse(msg)
	if err != nil {
		return nil, err
	}
	var ls []*entity
	err = root.leaves(func(e *entity) error { ls = append(ls, e); return nil })
	return ls, err
}

// FuzzHeader: parsing keeps the bytes, and editing keeps the others.
func FuzzHeader(f *testing.F) {
	for _, s := range samples(f) {
		f.Add(s.Data, "X-Certgate-Class")
	}
	f.Add([]byte("A: 1\r\n b\r\nA : 2\r\n"), "a")
	f.Fuzz(func(t *testing.T, msg []byte, name string) {
		header, body, err := SplitHeader(msg)
		if err != nil {
			return
		}
		if !bytes.Equal(append(append([]byte(nil), header...), body...), msg) {
			t.Fatal("header+body != msg")
		}
		h, err := ParseHeader(header)
		if err != nil {
			return
		}
		if !bytes.Equal(h.Bytes(), header) {
			t.Fatalf("round trip: %q -> %q", header, h.Bytes())
		}
		n := h.Count(name)
		vs := h.Values(name)
		if len(vs) != n || n > 0 && h.Get(name) != vs[0] || n == 0 && h.Get(name) != "" {
			t.Fatal("Count, Values and Get disagree")
		}
		others := h.Len() - n
		if d := h.Del(name); d != n || h.Count(name) != 0 || h.Len() != others {
			t.Fatalf("Del removed %d of %d", d, n)
		}
		if err := h.Add(name, "v"); err != nil {
			return
		}
		h2, err := ParseHeader(h.Bytes())
		if err != nil {
			t.Fatalf("header after Add does not parse: %v\n%q", err, h.Bytes())
		}
		if h2.Count(name) != 1 || h2.Get(name) != "v" || h2.Len() != others+1 {
			t.Fatalf("after Add: count %d, value %q", h2.Count(name), h2.Get(name))
		}
	})
}

// FuzzQuotedPrintable: mime/quotedprintable decodes exactly what encodeQP
// encoded, within the line limit, in either mode.
func FuzzQuotedPrintable(f *testing.F) {
	f.Add([]byte("a \r\nb\t\r\n\r\n-x= \n\r."), true, true)
	f.Add(bytes.Repeat([]byte("é "), 100), false, false)
	f.Fuzz(func(t *testing.T, b []byte, text, escapeDash bool) {
		enc := encodeQP(b, text, escapeDash)
		if n := maxLine(enc); n > 76 {
			t.Fatalf("line of %d", n)
		}
		if checkCRLF(enc) != nil {
			t.Fatal("bare CR or LF in output")
		}
		if escapeDash && (bytes.HasPrefix(enc, []byte("-")) || bytes.Contains(enc, []byte("\n-"))) {
			t.Fatal("line starts with -")
		}
		dec, err := decode("quoted-printable", enc)
		if err != nil || !bytes.Equal(dec, b) {
			t.Fatalf("%q -> %q -> %q, %v", b, enc, dec, err)
		}
	})
}
