package mimeedit

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestSplitHeader(t *testing.T) {
	cases := []struct{ msg, header, body string }{
		{"From: a\r\n\r\nbody\r\n", "From: a\r\n\r\n", "body\r\n"},
		{"From: a\r\n\r\n", "From: a\r\n\r\n", ""},
		{"\r\nbody", "\r\n", "body"},
		{"From: a\r\n", "From: a\r\n", ""},
		{"From: a", "From: a", ""},
		{"", "", ""},
		{"From: a\r\n\r\n\r\nbody", "From: a\r\n\r\n", "\r\nbody"},
	}
	for _, c := range cases {
		h, b, err := SplitHeader([]byte(c.msg))
		if err != nil || string(h) != c.header || string(b) != c.body {
			t.Errorf("SplitHeader(%q) = %q, %q, %v", c.msg, h, b, err)
		}
	}
	for _, bad := range []string{"From: a\n\nbody", "From: a\r\nTo: b\n\r\n", "From: a\r\r\n\r\n"} {
		if _, _, err := SplitHeader([]byte(bad)); !errors.Is(err, ErrNotCRLF) {
			t.Errorf("SplitHeader(%q): %v, want ErrNotCRLF", bad, err)
		}
	}
	// Only the header is checked: the body is someone else's business.
	if _, _, err := SplitHeader([]byte("From: a\r\n\r\nbo\ndy")); err != nil {
		t.Error(err)
	}
}

func TestHeaderEditing(t *testing.T) {
	raw := "Received: from x\r\n\tby y; Fri, 20 Nov 2026 09:30:00 +0000\r\n" +
		"From: Certificados <certificados@ca.example>\r\n" +
		"x-certgate-class: transactional\r\n" +
		"Subject: a\r\n  folded\r\n    subject \r\n" +
		"X-Certgate-Track: 1\r\n" +
		"Subject : second\r\n" +
		"\r\n"
	h, err := ParseHeader([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(h.Bytes(), []byte(raw)) {
		t.Fatal("round trip changed the header")
	}
	if got := h.Get("subject"); got != "a  folded    subject" {
		t.Errorf("Get(subject) = %q", got)
	}
	if got := h.Values("SUBJECT"); len(got) != 2 || got[1] != "second" {
		t.Errorf("Values = %q", got)
	}
	if got := h.Get("received"); got != "from x\tby y; Fri, 20 Nov 2026 09:30:00 +0000" {
		t.Errorf("Get(received) = %q", got)
	}
	if h.Get("Missing") != "" || h.Count("missing") != 0 || h.Count("subject") != 2 {
		t.Error("Get/Count of a missing field")
	}
	if n := h.DelFunc(func(name string) bool { return strings.HasPrefix(strings.ToLower(name), "x-certgate-") }); n != 2 {
		t.Errorf("DelFunc deleted %d", n)
	}
	if n := h.Del("subject"); n != 2 {
		t.Errorf("Del deleted %d", n)
	}
	if err := h.Add("Message-ID", "<1@relay.example>"); err != nil {
		t.Fatal(err)
	}
	want := "Received: from x\r\n\tby y; Fri, 20 Nov 2026 09:30:00 +0000\r\n" +
		"From: Certificados <certificados@ca.example>\r\n" +
		"Message-ID: <1@relay.example>\r\n\r\n"
	if got := string(h.Bytes()); got != want {
		t.Errorf("after edits:\n%q\nwant\n%q", got, want)
	}
	if fs := h.Fields(); len(fs) != 3 || fs[2].Name != "Message-ID" || fs[2].Value() != "<1@relay.example>" {
		t.Errorf("Fields = %+v", fs)
	}

	for _, bad := range []struct{ name, value string }{
		{"Bad Name", "x"}, {"", "x"}, {"Colon:", "x"}, {"X", "a\r\nBcc: evil@example.org"}, {"X", "a\nb"}, {"X", "a\x00"},
	} {
		if err := h.Add(bad.name, bad.value); !errors.Is(err, ErrMalformed) {
			t.Errorf("Add(%q, %q): %v", bad.name, bad.value, err)
		}
	}
	if err := h.Add("X-Long", strings.Repeat("v", 991)); !errors.Is(err, ErrLongHeaderLine) {
		t.Errorf("Add long: %v", err)
	}
}

func TestHeaderAddWithoutFinalCRLF(t *testing.T) {
	h, err := ParseHeader([]byte("From: a"))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Add("Date", "now"); err != nil {
		t.Fatal(err)
	}
	if got := string(h.Bytes()); got != "From: a\r\nDate: now\r\n" {
		t.Errorf("%q", got)
	}
}

func TestParseHeaderErrors(t *testing.T) {
	for _, bad := range []string{
		"From a\r\n\r\n",
		" From: a\r\n\r\n",
		"From: a\r\n\r\nTo: b\r\n",
		": empty name\r\n\r\n",
		"Fr\x01om: a\r\n\r\n",
		"From: a\n",
	} {
		if _, err := ParseHeader([]byte(bad)); err == nil {
			t.Errorf("ParseHeader(%q) succeeded", bad)
		}
	}
}

func TestStripControlHeadersSample04(t *testing.T) {
	msg := sampleMsg(t, "04")
	header, body, err := SplitHeader(msg)
	if err != nil {
		t.Fatal(err)
	}
	h, err := ParseHeader(header)
	if err != nil {
		t.Fatal(err)
	}
	if h.Get("X-Certgate-Class") != "transactional" {
		t.Fatalf("class %q", h.Get("X-Certgate-Class"))
	}
	h.DelFunc(func(n string) bool { return strings.HasPrefix(strings.ToLower(n), "x-certgate-") })
	got := append(h.Bytes(), body...)
	want := bytes.Replace(msg, []byte("X-Certgate-Class: transactional\r\n"), nil, 1)
	if !bytes.Equal(got, want) {
		t.Errorf("stripping changed other bytes:\n%s", got)
	}
}
