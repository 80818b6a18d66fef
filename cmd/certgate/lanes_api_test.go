package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/gateway/signer"
)

// An operator pauses a lane through the API: the lane's mail stays
// queued (the lanes API and `certgate lanes` show it waiting) until the
// resume, which sends it at once. Only a token for every tenant may change
// a lane: it carries every tenant's mail.
func TestLanesAPIPauseAndResume(t *testing.T) {
	dir := t.TempDir()
	mx := startCorpMX(t)
	_, pemBytes, err := signer.Generate("ed25519", "ca.example", "s1")
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, content string) string { return writeTestFile(t, dir, name, content) }
	const opsToken, tenantToken = "ops-token-0123456789abcdef", "tenant-admin-token-0123456789"
	cfgFile := write("certgate.yaml", fmt.Sprintf(`hostname: relay.ca.example
data_dir: %s
smtp: {listen: ["127.0.0.1:0"]}
http: {listen: "127.0.0.1:0"}
tenants:
  - {name: issuer, trusted_networks: [127.0.0.0/8], from_domains: [ca.example]}
dkim: [{domain: ca.example, selector: s1, key_file: %s}]
delivery: {routes: [{domains: ["*"], host: %q, tls: none}]}
api:
  tokens:
    - {name: ops, token_file: %s, scopes: [admin], tenants: ["*"]}
    - {name: issuer-admin, token_file: %s, scopes: [admin], tenants: [issuer]}
`, filepath.Join(dir, "data"), write("key.pem", string(pemBytes)), mx.Addr(), write("ops.token", opsToken), write("tenant.token", tenantToken)))
	cfg, err := config.Load(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	var d *daemon
	startDaemon := func() {
		t.Helper()
		var err error
		if d, err = newDaemon(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), daemonOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := d.start(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	stopDaemon := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		d.shutdown(ctx)
	}
	startDaemon()
	defer func() { stopDaemon() }()
	base := "http://" + d.httpAddr.String()
	call := func(token, method, path, body string, out any) int {
		t.Helper()
		var header map[string]string
		if body != "" {
			header = jsonHeader
		}
		code, _, b := apiRequest(t, method, base+path, token, strings.NewReader(body), header)
		if out != nil {
			json.Unmarshal(b, out)
		}
		return code
	}

	// The routes send every domain through the catch-all's lanes, one per
	// domain: the lane of empresa.example exists once mail is sent to it.
	send := func(subject string) {
		t.Helper()
		c, err := smtp.Dial(d.smtpAddrs[0].String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		msg := "From: <certificados@ca.example>\r\nTo: juan@empresa.example\r\nSubject: " + subject + "\r\n\r\nHola\r\n"
		if err := c.SendMail("certificados@ca.example", []string{"juan@empresa.example"}, strings.NewReader(msg)); err != nil {
			t.Fatal(err)
		}
	}
	send("first")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := mx.WaitFor(ctx, 1); err != nil {
		t.Fatal(err)
	}
	const lane = "/api/v1/lanes/default:empresa.example"
	if code := call(tenantToken, "POST", lane+"/pause", `{"reason":"mine"}`, nil); code != http.StatusForbidden {
		t.Fatalf("a one-tenant admin paused a lane: %d", code)
	}
	if code := call(opsToken, "POST", "/api/v1/lanes/default:nowhere.example/pause", `{}`, nil); code != http.StatusNotFound {
		t.Fatalf("pausing an unknown lane: %d", code)
	}
	var st struct{ State, Reason string }
	if code := call(opsToken, "POST", lane+"/pause", `{"reason":"the customer's MX is being moved"}`, &st); code != http.StatusOK ||
		st.State != "paused" || !strings.Contains(st.Reason, "MX is being moved") {
		t.Fatalf("pause: %d %+v", code, st)
	}
	send("second")
	var lanes struct {
		Lanes []struct {
			Name  string
			State string
			Queue map[string]map[string]int
		}
	}
	waited := false
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && !waited; {
		call(opsToken, "GET", "/api/v1/lanes", "", &lanes)
		for _, l := range lanes.Lanes {
			waited = waited || l.Name == "default:empresa.example" && l.State == "paused" && l.Queue["bulk"]["issuer"] == 1
		}
		if !waited {
			time.Sleep(20 * time.Millisecond) // the submission reaches the lane: poll the API
		}
	}
	if !waited || mx.Stats().Received != 1 {
		t.Fatalf("while paused: lanes %+v, delivered %d", lanes, mx.Stats().Received)
	}
	// A one-tenant token sees the lane its mail waits in, without the
	// operator's reason.
	var mine struct {
		Lanes []struct{ Name, Reason string }
	}
	call(tenantToken, "GET", "/api/v1/lanes", "", &mine)
	seen := false
	for _, l := range mine.Lanes {
		if l.Name == "default:empresa.example" {
			seen = l.Reason == ""
		}
	}
	if !seen {
		t.Errorf("the tenant's view of the lanes: %+v; want its lane, without the reason", mine)
	}
	var out bytes.Buffer
	if code := run([]string{"lanes", "--url", base, "--token-file", filepath.Join(dir, "ops.token")}, &out, &out); code != 0 ||
		!regexpMatch(`default:empresa\.example\s+paused\s+\S+\s+\S+\s+0/1\s`, out.String()) {
		t.Fatalf("certgate lanes: exit %d\n%s", code, out.String())
	}
	// The pause is on the audit trail, with who asked, for webhooks.
	evs, err := d.store.EventsAfter(context.Background(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	noted := false
	for _, e := range evs {
		noted = noted || e.Kind == "lane_changed" && e.Lane == "default:empresa.example" && strings.HasPrefix(e.Actor, "api:ops@") &&
			strings.Contains(e.Detail, "paused") && strings.Contains(e.Detail, "MX is being moved")
	}
	if !noted {
		t.Errorf("no lane_changed event for the pause in %+v", evs)
	}
	// A restart resumes the pause, from the store: the mail stays queued.
	stopDaemon()
	startDaemon()
	base = "http://" + d.httpAddr.String()
	lanes.Lanes = nil
	call(opsToken, "GET", "/api/v1/lanes", "", &lanes)
	paused := false
	for _, l := range lanes.Lanes {
		paused = paused || l.Name == "default:empresa.example" && l.State == "paused" && l.Queue["bulk"]["issuer"] == 1
	}
	if !paused || mx.Stats().Received != 1 {
		t.Fatalf("after a restart: lanes %+v, delivered %d; want still paused with the mail queued", lanes, mx.Stats().Received)
	}
	if code := call(opsToken, "POST", lane+"/resume", `{"reason":"done"}`, &st); code != http.StatusOK || st.State != "normal" {
		t.Fatalf("resume: %d %+v", code, st)
	}
	if err := mx.WaitFor(ctx, 2); err != nil {
		t.Fatalf("the held message after the resume: %v", err)
	}
	if code := call(opsToken, "POST", lane+"/rate", `{"rate":"60/min","until":"`+time.Now().Add(time.Hour).UTC().Format(time.RFC3339)+`"}`, nil); code != http.StatusOK {
		t.Fatalf("rate override: %d", code)
	}
	if code := call(opsToken, "POST", lane+"/rate", `{"rate":"60/min","until":"2020-01-01T00:00:00Z"}`, nil); code != http.StatusBadRequest {
		t.Fatalf("an override that ended before it began: %d", code)
	}
}

func regexpMatch(expr, s string) bool { return regexp.MustCompile(expr).MatchString(s) }
