package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/certgate/certgate/gateway/signer"
)

// A tenant whose From domain is new warms up on its own: once its day's
// bulk to a provider has left, the rest of its bulk there stays queued
// (the message API says until when), while another tenant's bulk in the
// same lane and its own transactional mail keep flowing.
func TestTenantWarmupHoldsOnlyItsBulk(t *testing.T) {
	dir := t.TempDir()
	mx := startCorpMX(t)
	write := func(name, content string) string { return writeTestFile(t, dir, name, content) }
	var keys []string
	for _, domain := range []string{"ca.example", "newco.example"} {
		_, pemBytes, err := signer.Generate("ed25519", domain, "s1")
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, fmt.Sprintf("{domain: %s, selector: s1, key_file: %s}", domain, write(domain+".pem", string(pemBytes))))
	}
	// A zone where it is about noon now: the warm-up day cannot end
	// while the test runs.
	now := time.Now().UTC()
	zone := fmt.Sprintf("Etc/GMT%+d", now.Hour()-12) // Etc/GMT+3 is three hours behind UTC
	if now.Hour() == 12 {
		zone = "Etc/GMT"
	}
	loc, err := time.LoadLocation(zone)
	if err != nil {
		t.Fatal(err)
	}
	const token = "ops-token-0123456789abcdef"
	d := startTestDaemon(t, write("certgate.yaml", fmt.Sprintf(`hostname: relay.ca.example
data_dir: %s
smtp: {listen: ["127.0.0.1:0"]}
http: {listen: "127.0.0.1:0"}
tenants:
  - {name: issuer, trusted_networks: [127.0.0.1/32], from_domains: [ca.example]}
  - name: newco
    trusted_networks: [127.0.0.2/32]
    from_domains: [newco.example]
    warmup: {start: %s, timezone: %s, schedule: [1, 5], providers: [corp]}
dkim: [%s]
providers: [{name: corp, domains: [empresa.example]}]
delivery: {routes: [{domains: ["*"], host: %q, tls: none}]}
api: {tokens: [{name: ops, token_file: %s, scopes: [admin], tenants: ["*"]}]}
`, filepath.Join(dir, "data"), now.In(loc).Format("2006-01-02"), zone, strings.Join(keys, ", "), mx.Addr(),
		write("ops.token", token))))

	send := func(from, domain, class, subject string) {
		t.Helper()
		conn, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}).Dial("tcp", d.smtpAddrs[0].String())
		if err != nil {
			t.Fatal(err)
		}
		c := smtp.NewClient(conn)
		defer c.Close()
		msg := "From: <certificados@" + domain + ">\r\nTo: juan@empresa.example\r\nX-Certgate-Class: " + class +
			"\r\nSubject: " + subject + "\r\n\r\nHola\r\n"
		if err := c.SendMail("certificados@"+domain, []string{"juan@empresa.example"}, strings.NewReader(msg)); err != nil {
			t.Fatalf("sending %s: %v", subject, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	send("127.0.0.2", "newco.example", "bulk", "newco bulk 1")
	if err := mx.WaitFor(ctx, 1); err != nil {
		t.Fatal(err)
	}
	send("127.0.0.2", "newco.example", "bulk", "newco bulk 2")
	send("127.0.0.1", "ca.example", "bulk", "issuer bulk")
	send("127.0.0.2", "newco.example", "transactional", "newco token")
	if err := mx.WaitFor(ctx, 3); err != nil {
		t.Fatalf("the other tenant's bulk and newco's transactional mail: %v", err)
	}
	base := "http://" + d.httpAddr.String()
	get := func(path string, out any) {
		t.Helper()
		_, _, b := apiRequest(t, "GET", base+path, token, nil, nil)
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatal(err)
		}
	}
	var list struct {
		Messages []struct{ ID, Subject string }
	}
	// The receiver has the mail a moment before the store says delivered.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		get("/api/v1/messages?state=queued", &list)
		if len(list.Messages) <= 1 || time.Now().After(deadline) {
			break
		}
	}
	if len(list.Messages) != 1 || list.Messages[0].Subject != "newco bulk 2" {
		t.Fatalf("queued: %+v, want newco's second bulk message alone", list.Messages)
	}
	var msg struct {
		Recipients []struct {
			State string
			Held  *struct {
				Lane, By, Reason string
				Until            *time.Time
			}
		}
	}
	// The message reaches its lane a moment after it is queued: wait for
	// the hold to show.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		get("/api/v1/messages/"+list.Messages[0].ID, &msg)
		if len(msg.Recipients) == 1 && msg.Recipients[0].Held != nil || time.Now().After(deadline) {
			break
		}
	}
	midnight := time.Date(now.In(loc).Year(), now.In(loc).Month(), now.In(loc).Day()+1, 0, 0, 0, 0, loc)
	if h := msg.Recipients[0].Held; h == nil || h.Lane != "corp" || h.By != "tenant_warmup" || h.Until == nil ||
		!h.Until.Equal(midnight) || !strings.Contains(h.Reason, "newco") {
		t.Fatalf("the held copy: %+v; want held by newco's warm-up at corp until %v", msg.Recipients, midnight)
	}
	var lanes struct {
		Lanes []struct {
			Name          string
			State         string
			TenantWarmups map[string]struct{ Day, Left int } `json:"tenant_warmups"`
		}
	}
	get("/api/v1/lanes", &lanes)
	for _, l := range lanes.Lanes {
		if l.Name == "corp" && (l.State != "normal" || l.TenantWarmups["newco"].Day != 1 || l.TenantWarmups["newco"].Left != 0) {
			t.Errorf("the corp lane: %+v; want normal, with newco's day 1 spent", l)
		}
	}
	var out bytes.Buffer
	if code := run([]string{"lanes", "--url", base, "--token-file", filepath.Join(dir, "ops.token")}, &out, &out); code != 0 ||
		!strings.Contains(out.String(), "warm-up day 1 of tenant newco: 0 bulk left today") {
		t.Errorf("certgate lanes: exit %d\n%s", code, out.String())
	}
	if got := mx.Stats().Received; got != 3 {
		t.Errorf("%d delivered, want 3: newco's second bulk message must wait", got)
	}
}
