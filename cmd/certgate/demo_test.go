package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
)

// The demo wires the whole daemon from a written configuration, submits a
// small wave and reads a message back through the API.
func TestDemoEndToEnd(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"demo", "--messages", "25", "--urgent", "2"}, &out, &errOut); code != 0 {
		t.Fatalf("demo exited %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	text := out.String()
	// 25 bulk + 2 urgent recipients + the DSN; the refused address is not delivered.
	if !regexp.MustCompile(`DKIM:\s+28 of 28 delivered copies verified`).MatchString(text) {
		t.Errorf("DKIM summary missing or wrong:\n%s", text)
	}
	for _, want := range []string{
		"accepted:   27 messages, 28 recipients",
		"no.such.user@contoso.example     bounced",
		"250 2.0.0",
		`recipient opens it (French browser):   "Ce lien n’est pas encore actif"`,
		"/release -> 200 OK",
		`recipient opens it again:               "Votre téléchargement est prêt"`,
		"and gets the certificate: -----BEGIN CERTIFICATE-----",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("demo output lacks %q:\n%s", want, text)
		}
	}
}

// With --faults the simulated receivers greylist and refuse for a while;
// every copy still lands, and the books balance.
func TestDemoWithFaults(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"demo", "--messages", "25", "--urgent", "2", "--faults"}, &out, &errOut); code != 0 {
		t.Fatalf("demo exited %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	text := out.String()
	for _, re := range []string{
		`faults:\s+yahoo\s+greylisted [1-9][0-9]* \(passed [1-9]`,
		`books:\s+28 recipients accepted = 27 delivered \+ 1 bounced \(one DSN each\) \+ 0 queued: balanced`,
		`DKIM:\s+28 of 28 delivered copies verified`,
	} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("demo output does not match %q:\n%s", re, text)
		}
	}
}
