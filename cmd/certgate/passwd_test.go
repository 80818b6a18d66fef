package main

import (
	"bytes"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

func runPasswd(t *testing.T, input string, args ...string) (code int, out, errOut string) {
	t.Helper()
	old := stdin
	defer func() { stdin = old }()
	stdin = strings.NewReader(input)
	var o, e bytes.Buffer
	code = run(append([]string{"passwd"}, args...), &o, &e)
	return code, o.String(), e.String()
}

// certgate passwd prints a bcrypt hash of a sound cost for the password it
// reads, ready for password_hash; no htpasswd needed.
func TestPasswdPrintsASoundHash(t *testing.T) {
	code, out, errOut := runPasswd(t, "correct horse battery\n")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	hash := strings.TrimSpace(out)
	if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte("correct horse battery")); err != nil {
		t.Fatalf("printed %q: %v", out, err)
	}
	if cost, _ := bcrypt.Cost([]byte(hash)); cost != 12 {
		t.Errorf("cost %d, want 12", cost)
	}
	if code, out, _ := runPasswd(t, "", "--check", hash); code != 0 || out != "will do as password_hash\n" {
		t.Errorf("--check of its own hash: exit %d, %q", code, out)
	}

	code, out, errOut = runPasswd(t, "pw\n", "--cost", "8")
	if cost, _ := bcrypt.Cost([]byte(strings.TrimSpace(out))); code != 0 || cost != 8 || !strings.Contains(errOut, "warning: cost 8 is below 10") {
		t.Errorf("--cost 8: exit %d, cost %d, stderr %q", code, cost, errOut)
	}
	for _, c := range []struct {
		input string
		args  []string
		code  int
		say   string
	}{
		{"", nil, 1, "empty password"},
		{"pw\n", []string{"hunter2"}, 2, "takes no password argument"},
		{"pw\n", []string{"--cost", "40"}, 2, "bcrypt takes 4 to 31"},
	} {
		if code, _, errOut := runPasswd(t, c.input, c.args...); code != c.code || !strings.Contains(errOut, c.say) {
			t.Errorf("passwd %v with %q: exit %d, %q; want %d saying %q", c.args, c.input, code, errOut, c.code, c.say)
		}
	}
}

// What htpasswd prints, pasted whole, is explained rather than refused
// without a reason.
func TestPasswdCheckExplainsHtpasswdOutput(t *testing.T) {
	code, _, errOut := runPasswd(t, "", "--check", "app:$2y$05$E5nAyUJPdLW8Rdfyzw9ZAOOhJWI/gRh3wbLQZ2sqGBNsGbWlXfG9i")
	if code != 1 || !strings.Contains(errOut, `this is an htpasswd line, user:hash; keep only the hash, what follows "app:"; and bcrypt cost 5 is below 10`) {
		t.Errorf("exit %d: %s", code, errOut)
	}
	code, out, _ := runPasswd(t, "", "--check", "$2y$05$E5nAyUJPdLW8Rdfyzw9ZAOOhJWI/gRh3wbLQZ2sqGBNsGbWlXfG9i")
	if code != 0 || !strings.Contains(out, "will do as password_hash, but bcrypt cost 5 is below 10") {
		t.Errorf("a weak hash: exit %d, %q", code, out)
	}
	code, _, errOut = runPasswd(t, "", "--check", "$apr1$abc$def")
	if code != 1 || !strings.Contains(errOut, "Apache's MD5 (htpasswd -m), not bcrypt") {
		t.Errorf("an MD5 hash: exit %d, %q", code, errOut)
	}
}
