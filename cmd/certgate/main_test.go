package main

import (
	"bytes"
	"strings"
	"testing"
)

// --help is a question, not a mistake: every command answers it with its
// synopsis and flags, and exit status 0.
func TestHelpExitsZero(t *testing.T) {
	for _, args := range [][]string{
		{"--help"}, {"serve", "--help"}, {"demo", "-h"}, {"check-config", "--help"}, {"dkim", "--help"},
		{"dkim", "keygen", "--help"}, {"release", "--help"}, {"store", "--help"}, {"store", "check", "-h"},
		{"store", "migrate", "--help"}, {"store", "copy", "-h"},
	} {
		var out, errOut bytes.Buffer
		code := run(args, &out, &errOut)
		text := out.String() + errOut.String()
		name := args[0]
		if strings.HasPrefix(name, "-") {
			name = ""
		}
		if code != 0 || !strings.Contains(text, "certgate "+name) || strings.Contains(text, "help requested") {
			t.Errorf("certgate %s: exit %d\n%s", strings.Join(args, " "), code, text)
		}
	}
	// A wrong flag is still a usage error, with the synopsis.
	var out bytes.Buffer
	if code := run([]string{"release", "--no-such-flag"}, &out, &out); code != 2 || !strings.Contains(out.String(), "certgate release [--url URL]") {
		t.Errorf("a wrong flag: exit %d\n%s", code, out.String())
	}
}
