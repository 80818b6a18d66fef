package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/gateway/signer"
	"github.com/certgate/certgate/sim"
)

// writeSmallConfig writes a configuration for one tenant submitting from
// loopback, with its own DKIM key and data_dir under dir, and returns its
// path; extra is appended as is.
func writeSmallConfig(t *testing.T, dir, extra string) string {
	t.Helper()
	_, pemBytes, err := signer.Generate("ed25519", "ca.example", "s1")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "dkim.pem")
	if err := os.WriteFile(keyFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	text := fmt.Sprintf(`hostname: relay.ca.example
data_dir: %s
smtp: {listen: ["127.0.0.1:0"]}
tenants:
  - {name: issuer, trusted_networks: [127.0.0.0/8], from_domains: [ca.example]}
dkim: [{domain: ca.example, selector: s1, key_file: %s}]
%s`, filepath.Join(dir, "data"), keyFile, extra)
	if !strings.Contains(extra, "http:") {
		text += "http: {listen: \"127.0.0.1:0\"}\n"
	}
	path := filepath.Join(dir, "certgate.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startTestDaemon runs certgate in this process on the configuration at
// cfgPath until the test ends.
func startTestDaemon(t *testing.T, cfgPath string) *daemon {
	t.Helper()
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	d, err := newDaemon(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), daemonOptions{})
	if err != nil {
		t.Fatalf("building the daemon: %v", err)
	}
	if err := d.start(context.Background()); err != nil {
		d.store.Close()
		t.Fatalf("starting the daemon: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		d.shutdown(ctx)
	})
	return d
}

// writeTestFile writes content to name under dir, readable by its owner
// alone (secrets are refused otherwise), and returns its path.
func writeTestFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// startCorpMX runs a simulated receiver for empresa.example until the
// test ends.
func startCorpMX(t *testing.T) *sim.Provider {
	t.Helper()
	mx, err := sim.Start(sim.Options{Name: "corp", Domains: []string{"empresa.example"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mx.Close() })
	return mx
}

// apiRequest makes a request to certgate's HTTP API with a bearer token
// and returns the answer's status, header and body; header adds fields
// such as Content-Type and Idempotency-Key.
func apiRequest(t *testing.T, method, url, token string, body io.Reader, header map[string]string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// jsonHeader is the header of a request with a JSON body.
var jsonHeader = map[string]string{"Content-Type": "application/json"}
