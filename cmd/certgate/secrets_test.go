package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// check-config prints the warnings about secret files others can read and
// still says ok; a DKIM key every user can read is refused.
func TestCheckConfigWarnsAboutSharedSecrets(t *testing.T) {
	dir := t.TempDir()
	token := filepath.Join(dir, "helpdesk.token")
	if err := os.WriteFile(token, []byte("token-0123456789abcdef\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	cfgPath := writeSmallConfig(t, dir, fmt.Sprintf("api: {tokens: [{name: helpdesk, token_file: %s, scopes: [read]}]}\n", token))
	var out bytes.Buffer
	if code := run([]string{"check-config", "--config", cfgPath}, &out, &out); code != 0 {
		t.Fatalf("check-config: exit %d\n%s", code, out.String())
	}
	want := "warning: " + cfgPath + ":7: api.tokens[0].token_file: " + token + " has mode 0640: its group can read it"
	if !strings.Contains(out.String(), want) || !strings.Contains(out.String(), cfgPath+": ok") {
		t.Fatalf("check-config printed:\n%s\nwant a line starting %q, then ok", out.String(), want)
	}

	os.Chmod(filepath.Join(dir, "dkim.pem"), 0o644)
	out.Reset()
	if code := run([]string{"check-config", "--config", cfgPath}, &out, &out); code != 1 || !strings.Contains(out.String(), "every user of this machine can read it, and a DKIM key signs mail as the issuer") {
		t.Fatalf("check-config with a DKIM key every user reads: exit %d\n%s", code, out.String())
	}
}

// serve logs the same warnings when it starts.
func TestServeLogsConfigWarnings(t *testing.T) {
	e2eStart(t)
	bin := e2eCertgateBinary(t)
	dir := t.TempDir()
	token := filepath.Join(dir, "helpdesk.token")
	if err := os.WriteFile(token, []byte("token-0123456789abcdef\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	port := e2eFreePort(t)
	cfgPath := writeSmallConfig(t, dir, fmt.Sprintf("http: {listen: \"127.0.0.1:%d\"}\nwebhooks: [{name: crm, url: \"http://127.0.0.1:9/hook\", secret_file: %s, events: [delivered]}]\n", port, token))
	logPath := filepath.Join(dir, "serve.log")
	p, err := e2eStartProcess(logPath, bin, "serve", "--config", cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	err = p.waitReady(fmt.Sprintf("http://127.0.0.1:%d/readyz", port), time.Minute)
	stopServe(t, p, logPath)
	if err != nil {
		t.Fatal(err)
	}
	log, _ := os.ReadFile(logPath)
	if !bytes.Contains(log, []byte(`level=WARN msg="configuration: `+token+` has mode 0644: every user of this machine can read it`)) ||
		!bytes.Contains(log, []byte("key=webhooks[0].secret_file")) {
		t.Fatalf("serve's log lacks the warning about %s:\n%s", token, log)
	}
}
