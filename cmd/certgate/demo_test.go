package main

import (
	"bytes"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The demo wires the whole daemon from a written configuration, submits a
// small wave, reads a message back through the API, and reports where the
// seed copies landed.
func TestDemoEndToEnd(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"demo", "--messages", "25", "--urgent", "2"}, &out, &errOut); code != 0 {
		t.Fatalf("demo exited %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	text := out.String()
	// 25 bulk + 2 urgent recipients + the DSN, and the first bulk mail's
	// copy to each of the 3 seed mailboxes; the refused address is not
	// delivered.
	for _, re := range []string{
		`DKIM:\s+31 of 31 delivered copies verified at the receiving side \(3 of them seed copies\)`,
		`books:\s+28 recipients accepted = 27 delivered \+ 1 bounced \(one DSN each\) \+ 0 queued: balanced\n\s+\+ 3 seed copies, certgate's own: 3 delivered \+ 0 queued`,
		`seed copies 3/3  queued: 0\n`,
	} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("demo output does not match %q:\n%s", re, text)
		}
	}
	checkPlacement(t, text, 1)
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
// every copy still lands, the books balance, and every seed copy is found.
func TestDemoWithFaults(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"demo", "--messages", "25", "--urgent", "2", "--faults"}, &out, &errOut); code != 0 {
		t.Fatalf("demo exited %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	text := out.String()
	for _, re := range []string{
		`faults:\s+yahoo\s+greylisted [1-9][0-9]* \(passed [1-9]`,
		`books:\s+28 recipients accepted = 27 delivered \+ 1 bounced \(one DSN each\) \+ 0 queued: balanced\n\s+\+ 3 seed copies, certgate's own: 3 delivered \+ 0 queued`,
		`DKIM:\s+31 of 31 delivered copies verified`,
	} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("demo output does not match %q:\n%s", re, text)
		}
	}
	checkPlacement(t, text, 1)
}

// checkPlacement finds the placement section with a row for each seed's
// provider, each of its n copies found in the inbox or junk, none pending
// or missing, and a verdict of Microsoft's.
func checkPlacement(t *testing.T, text string, n int) {
	t.Helper()
	_, section, ok := strings.Cut(text, "\nplacement (seed copies, watched over IMAP IDLE)\n")
	if !ok {
		t.Fatalf("no placement section:\n%s", text)
	}
	section, _, _ = strings.Cut(section, "\n\n")
	row := regexp.MustCompile(`(?m)^  (\w+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+%)\s+(\S.*)$`)
	seen := map[string]bool{}
	for _, m := range row.FindAllStringSubmatch(section, -1) {
		copies, inbox, junk, missing := atoi(m[2]), atoi(m[3]), atoi(m[4]), atoi(m[5])
		seen[m[1]] = true
		if copies != n || inbox+junk != n || missing != 0 {
			t.Errorf("placement at %s: %d copies, %d inbox, %d junk, %d missing; want %d, all found", m[1], copies, inbox, junk, missing, n)
		}
	}
	for _, p := range []string{"gmail", "outlook", "yahoo"} {
		if !seen[p] {
			t.Errorf("placement has no row for %s:\n%s", p, section)
		}
	}
	if strings.Contains(section, "pending") || strings.Contains(section, "(queued)") {
		t.Errorf("copies still pending:\n%s", section)
	}
	if !regexp.MustCompile(`what Microsoft wrote into a copy it filed in (inbox|junk): dkim=pass dmarc=pass spf=none, SCL [15] `).MatchString(section) {
		t.Errorf("no verdict of Microsoft's:\n%s", section)
	}
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		panic(err)
	}
	return n
}
