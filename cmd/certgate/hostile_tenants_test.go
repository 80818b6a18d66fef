package main

// The hostile-tenant suite (issue 9): one certgate, wired from a
// configuration file as serve wires it, serving two tenants whose domains
// nest (ca: ca.example; sub: sub.ca.example), each with its own user and
// its own API token. Every test plays one tenant against the other, or an
// outsider against both, over real SMTP and HTTP, and checks the
// refusal. Finer cases of each item live with their package's tests
// (gateway, delivery, api, quarantine, store, config).

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/gateway/signer"
	"github.com/certgate/certgate/sim"
)

const hostilePassword = "a long test password, not reused"

type hostileTenants struct {
	t       *testing.T
	d       *daemon
	smtp    string
	api     string // http.listen
	gate    string // http.gate_listen
	tlsConf *tls.Config
	tokens  map[string]string // tenant -> its helpdesk token
	mx      *sim.Provider
	gatePfx string
}

func newHostileTenants(t *testing.T) *hostileTenants {
	t.Helper()
	dir := t.TempDir()
	h := &hostileTenants{t: t, tokens: map[string]string{"ca": strings.Repeat("c", 32), "sub": strings.Repeat("s", 32)},
		gatePfx: "https://ca.example/download/"}
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	txt := map[string]string{}
	var dkim []string
	for _, domain := range []string{"ca.example", "sub.ca.example"} {
		k, pemBytes, err := signer.Generate("ed25519", domain, "s1")
		if err != nil {
			t.Fatal(err)
		}
		name, value := k.DNSRecord()
		txt[strings.TrimSuffix(name, ".")] = value
		dkim = append(dkim, fmt.Sprintf("  - {domain: %s, selector: s1, key_file: %s}", domain, write(domain+".pem", string(pemBytes))))
	}
	var err error
	h.mx, err = sim.Start(sim.Options{Name: "mx", Domains: []string{"empresa.example"}, MXHost: "mx.empresa.example",
		LookupTXT: func(name string) ([]string, error) {
			if v, ok := txt[strings.TrimSuffix(name, ".")]; ok {
				return []string{v}, nil
			}
			return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.mx.Close() })
	mxIP, mxPort, _ := net.SplitHostPort(h.mx.Addr())
	cert, err := sim.SelfSigned("relay.ca.example")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := cert.WriteFiles(dir, "relay.ca.example")
	if err != nil {
		t.Fatal(err)
	}
	h.tlsConf = cert.ClientConfig("relay.ca.example")
	hash, _ := bcrypt.GenerateFromPassword([]byte(hostilePassword), bcrypt.MinCost)

	cfg := strings.Join([]string{
		"hostname: relay.ca.example",
		"data_dir: " + filepath.Join(dir, "data"),
		"smtp:",
		"  listen: [\"127.0.0.1:0\"]",
		"  tls: {cert_file: " + certFile + ", key_file: " + keyFile + "}",
		"  auth_failure_delay: 10ms",
		"http:",
		"  listen: \"127.0.0.1:0\"",
		"  gate_listen: \"127.0.0.1:0\"",
		"  public_url: \"https://gate.ca.example\"",
		"tenants:",
		"  - name: ca",
		fmt.Sprintf("    users: [{username: ca-app, password_hash: %q}]", hash),
		"    from_domains: [ca.example]",
		"    links: {gate: [\"" + h.gatePfx + "\"], enable: on_release, max_uses: 3}",
		"  - name: sub",
		fmt.Sprintf("    users: [{username: sub-app, password_hash: %q}]", hash),
		"    from_domains: [sub.ca.example]",
		"    hold: true",
		"    classes: [bulk]",
		"    max_message_rate: 3/h",
		"dkim:",
		strings.Join(dkim, "\n"),
		"delivery:",
		"  mx_port: " + mxPort,
		"  retry: {schedule: [1m], max_age: 1h}",
		"  static_dns:",
		"    mx: {empresa.example: [mx.empresa.example]}",
		"    hosts: {mx.empresa.example: [\"" + mxIP + "\"]}",
		"api:",
		"  tokens:",
		"    - {name: ca-helpdesk, token_file: " + write("ca.token", h.tokens["ca"]) + ", scopes: [read, release], tenants: [ca]}",
		"    - {name: sub-helpdesk, token_file: " + write("sub.token", h.tokens["sub"]) + ", scopes: [read, release], tenants: [sub]}",
		"log: {level: warn}",
		"",
	}, "\n")
	loaded, err := config.Load(write("certgate.yaml", cfg))
	if err != nil {
		t.Fatal(err)
	}
	h.d, err = newDaemon(context.Background(), loaded, slog.New(slog.NewTextHandler(io.Discard, nil)), daemonOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.d.start(context.Background()); err != nil {
		h.d.store.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		h.d.shutdown(ctx)
	})
	h.smtp, h.api, h.gate = h.d.smtpAddrs[0].String(), "http://"+h.d.httpAddr.String(), "http://"+h.d.gateAddr.String()
	return h
}

// submit sends data as user from the envelope sender to rcpts.
func (h *hostileTenants) submit(user, from string, rcpts []string, data string) error {
	c, err := smtp.DialStartTLS(h.smtp, h.tlsConf)
	if err != nil {
		h.t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", user, hostilePassword)); err != nil {
		h.t.Fatal(err)
	}
	return c.SendMail(from, rcpts, strings.NewReader(data))
}

// call makes an API request with tenant's token and decodes the JSON answer.
func (h *hostileTenants) call(tenant, method, path, body string, out any) int {
	h.t.Helper()
	req, _ := http.NewRequest(method, h.api+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+h.tokens[tenant])
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		json.Unmarshal(b, out)
	}
	return resp.StatusCode
}

// find is the id of tenant's one message to rcpt, as its token sees it.
func (h *hostileTenants) find(tenant, rcpt string) string {
	h.t.Helper()
	var v struct{ Messages []struct{ ID string } }
	h.call(tenant, "GET", "/api/v1/messages?recipient="+url.QueryEscape(rcpt), "", &v)
	if len(v.Messages) != 1 {
		h.t.Fatalf("tenant %s finds %d messages to %s, want 1", tenant, len(v.Messages), rcpt)
	}
	return v.Messages[0].ID
}

func wantSMTP(t *testing.T, what string, err error, code int) {
	t.Helper()
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != code {
		t.Fatalf("%s: %v, want %d", what, err, code)
	}
}

func TestHostileTenants(t *testing.T) {
	h := newHostileTenants(t)
	subMail := "From: <noreply@sub.ca.example>\r\nTo: <ana@empresa.example>\r\nSubject: held\r\n\r\nbody\r\n"

	// Item 2: ca cannot send as sub through the nested domain.
	t.Run("nested domain", func(t *testing.T) {
		wantSMTP(t, "ca sending from sub.ca.example", h.submit("ca-app", "noreply@sub.ca.example", []string{"x@empresa.example"}, subMail), 550)
		wantSMTP(t, "ca with sub's From", h.submit("ca-app", "noreply@ca.example", []string{"x@empresa.example"}, subMail), 550)
	})

	// sub's own mail is held (its hold applies), and bulk only.
	if err := h.submit("sub-app", "noreply@sub.ca.example", []string{"ana@empresa.example"}, subMail); err != nil {
		t.Fatal(err)
	}
	subID := h.find("sub", "ana@empresa.example")

	// Item 3: a bulk-only tenant cannot jump the queue.
	t.Run("classes", func(t *testing.T) {
		urgent := strings.Replace(subMail, "Subject: held", "X-Certgate-Class: transactional\r\nSubject: urgent", 1)
		wantSMTP(t, "transactional from a bulk-only tenant", h.submit("sub-app", "noreply@sub.ca.example", []string{"b@empresa.example"}, urgent), 550)
	})

	// Item 1: ca's token neither sees nor releases sub's mail.
	t.Run("tokens per tenant", func(t *testing.T) {
		var unknown, foreign map[string]any
		cu := h.call("ca", "GET", "/api/v1/messages/06h0unknown00000000000000", "", &unknown)
		cf := h.call("ca", "GET", "/api/v1/messages/"+subID, "", &foreign)
		if cf != http.StatusNotFound || cu != cf || fmt.Sprint(unknown["error"]) != fmt.Sprint(foreign["error"]) {
			t.Errorf("ca's token on sub's message: %d %v; on an unknown id: %d %v", cf, foreign, cu, unknown)
		}
		var search struct{ Messages []any }
		h.call("ca", "GET", "/api/v1/messages?recipient=ana%40empresa.example", "", &search)
		if len(search.Messages) != 0 {
			t.Errorf("ca's search returns %d of sub's messages", len(search.Messages))
		}
		h.call("ca", "POST", "/api/v1/release", `{"recipient": "ana@empresa.example"}`, nil)
		if code := h.call("ca", "POST", "/api/v1/messages/"+subID+"/release", "", nil); code != http.StatusNotFound {
			t.Errorf("ca's token releasing sub's message: %d, want 404", code)
		}
		var v struct{ Recipients []struct{ State string } }
		h.call("sub", "GET", "/api/v1/messages/"+subID, "", &v)
		if len(v.Recipients) != 1 || v.Recipients[0].State != "held" {
			t.Errorf("sub's message after ca's releases: %+v, want held", v)
		}
	})

	// Item 3: sub's message rate (3/h; two transactions used above).
	t.Run("tenant rate", func(t *testing.T) {
		h.submit("sub-app", "noreply@sub.ca.example", []string{"c@empresa.example"}, subMail) // the third
		wantSMTP(t, "a fourth transaction within the hour", h.submit("sub-app", "noreply@sub.ca.example", []string{"d@empresa.example"}, subMail), 451)
	})

	// Item 7: presses on a link are limited before the store, and refused
	// ones are counted on the link, not written one event each.
	t.Run("link refusal flood", func(t *testing.T) {
		gated := "From: <noreply@ca.example>\r\nTo: <ana@empresa.example>\r\nSubject: your certificate\r\n\r\n" + h.gatePfx + "cert?id=7\r\n"
		if err := h.submit("ca-app", "noreply@ca.example", []string{"ana@empresa.example"}, gated); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := h.mx.WaitFor(ctx, 1); err != nil {
			t.Fatal(err)
		}
		token := regexp.MustCompile(`/d/([A-Za-z0-9_-]{22})`).FindStringSubmatch(string(h.mx.Messages()[0].Data))
		if token == nil {
			t.Fatal("no gate link in the delivered copy")
		}
		limited := 0
		for range 200 {
			resp, err := http.PostForm(h.gate+"/d/"+token[1], url.Values{"n": {"forged"}})
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusTooManyRequests {
				limited++
			}
		}
		if limited < 150 {
			t.Errorf("%d of 200 presses were rate limited", limited)
		}
		var v struct{ Events []struct{ Kind string } }
		h.call("ca", "GET", "/api/v1/messages/"+h.find("ca", "ana@empresa.example"), "", &v)
		refused := 0
		for _, e := range v.Events {
			if e.Kind == "link_refused" {
				refused++
			}
		}
		if refused > 1 {
			t.Errorf("%d link_refused events for one flood, want one", refused)
		}
	})

	// Item 10: the public listener serves the gate, not metrics or the API.
	t.Run("gate listener", func(t *testing.T) {
		for _, path := range []string{"/metrics", "/api/v1/messages"} {
			resp, err := http.Get(h.gate + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("GET %s on the gate listener: %d, want 404", path, resp.StatusCode)
			}
		}
	})
}
