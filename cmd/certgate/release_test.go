package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/gateway/signer"
	"github.com/certgate/certgate/store"
)

func TestReleaseCommandReleasesHeldMail(t *testing.T) {
	dir := t.TempDir()
	mx := startCorpMX(t)
	_, pemBytes, err := signer.Generate("ed25519", "ca.example", "s1")
	if err != nil {
		t.Fatal(err)
	}
	keyFile, tokenFile := filepath.Join(dir, "key.pem"), filepath.Join(dir, "token")
	os.WriteFile(keyFile, pemBytes, 0o600)
	os.WriteFile(tokenFile, []byte("release-token-0123456789abcdef\n"), 0o600)
	cfgText := fmt.Sprintf(`hostname: relay.ca.example
data_dir: %s
smtp: {listen: ["127.0.0.1:0"]}
http: {listen: "127.0.0.1:0"}
tenants:
  - {name: issuer, trusted_networks: [127.0.0.0/8], from_domains: [ca.example], hold: true}
dkim: [{domain: ca.example, selector: s1, key_file: %s}]
delivery: {routes: [{domains: ["*"], host: %q, tls: none}]}
api: {tokens: [{name: helpdesk, token_file: %s, scopes: [release]}]}
`, filepath.Join(dir, "data"), keyFile, mx.Addr(), tokenFile)
	cfgFile := filepath.Join(dir, "certgate.yaml")
	os.WriteFile(cfgFile, []byte(cfgText), 0o600)
	cfg, err := config.Load(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	d, err := newDaemon(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), daemonOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		d.shutdown(ctx)
	}()

	msg := "From: Certificados <certificados@ca.example>\r\nTo: juan@empresa.example\r\nSubject: Su certificado\r\n\r\nHola\r\n"
	c, err := smtp.Dial(d.smtpAddrs[0].String())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail("certificados@ca.example", []string{"juan@empresa.example"}, strings.NewReader(msg)); err != nil {
		t.Fatal(err)
	}
	c.Quit()
	msgs, err := d.store.Search(context.Background(), store.Query{Recipient: "juan@empresa.example"})
	if err != nil || len(msgs) != 1 {
		t.Fatalf("search: %v %v", msgs, err)
	}
	id := msgs[0].ID
	time.Sleep(200 * time.Millisecond)
	if mx.Stats().Received != 0 {
		t.Fatal("the tenant holds its mail, but it was delivered")
	}

	var out bytes.Buffer
	base := "http://" + d.httpAddr.String()
	if code := run([]string{"release", "--url", base, "--token-file", tokenFile, "--reason", "reviewed", id}, &out, &out); code != 0 {
		t.Fatalf("release exited %d: %s", code, out.String())
	}
	if !strings.Contains(out.String(), id+" released; now delivering to juan@empresa.example") {
		t.Fatalf("release printed %q", out.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := mx.WaitFor(ctx, 1); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if code := run([]string{"release", "--url", base, "--token-file", tokenFile, "06h0unknown"}, &out, &out); code == 0 || !strings.Contains(out.String(), "not found") {
		t.Fatalf("unknown id: exit %d, %q", code, out.String())
	}
}

// Every failure of certgate release names the URL it called, since a wrong
// --url (a port, the gate's listener, a proxy) is the usual cause.
func TestReleaseErrorsNameTheURL(t *testing.T) {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/release" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"error":"unauthorized","reason":"unknown token"}` + "\n"))
	}))
	defer api.Close()
	other := httptest.NewServer(http.NotFoundHandler())
	defer other.Close()
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()

	t.Setenv("CERTGATE_TOKEN", "some-token-0123456789")
	for _, c := range []struct {
		base string
		want []string
	}{
		{api.URL, []string{"POST " + api.URL + "/api/v1/release", "401 Unauthorized", "unknown token"}},
		{other.URL + "/", []string{"POST " + other.URL + "/api/v1/release", "404 Not Found", "is --url certgate's http.listen?"}},
		{closed.URL, []string{"POST " + closed.URL + "/api/v1/release", "connection refused"}},
		{"127.0.0.1:8080", []string{`--url "127.0.0.1:8080"`, "http://127.0.0.1:8080"}},
	} {
		var out bytes.Buffer
		code := run([]string{"release", "--url", c.base, "06h0id"}, &out, &out)
		if code == 0 {
			t.Errorf("--url %s: exit 0", c.base)
		}
		for _, w := range c.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("--url %s: the error does not say %q:\n%s", c.base, w, out.String())
			}
		}
		if strings.Contains(c.base, "://") && strings.Count(out.String(), c.base) > 1 {
			t.Errorf("--url %s: the URL is repeated:\n%s", c.base, out.String())
		}
	}
}
