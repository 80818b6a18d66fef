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
