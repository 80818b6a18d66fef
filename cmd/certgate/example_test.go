package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
	"gopkg.in/yaml.v3"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/internal/testpg"
	"github.com/certgate/certgate/sim"
)

// The example configuration runs as shipped: with the files it names made
// the way the README says (DKIM keys by certgate dkim keygen, under the
// names the example uses), check-config passes and serve starts. Only its
// /etc and /var paths move into a temporary directory, and its listeners
// to free loopback ports.
func TestExampleRunsAsShipped(t *testing.T) {
	src, err := os.ReadFile("../../deploy/certgate.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	text := strings.NewReplacer("/etc/certgate/", root+"/etc/certgate/", "/var/lib/certgate", root+"/var/lib/certgate").Replace(string(src))
	for _, l := range []string{`[":587"]`, `"127.0.0.1:8080"`, `"127.0.0.1:8081"`} {
		if !strings.Contains(text, l) {
			t.Fatalf("the example no longer listens on %s; update this test", l)
		}
	}
	text = strings.NewReplacer(`[":587"]`, `["127.0.0.1:0"]`, `"127.0.0.1:8080"`, `"127.0.0.1:0"`, `"127.0.0.1:8081"`, `"127.0.0.1:0"`).Replace(text)
	cfgPath := filepath.Join(root, "etc/certgate/certgate.yaml")
	writeSecret(t, cfgPath, text)

	// The files the example names, read without validation.
	var raw config.Config
	if err := yaml.Unmarshal([]byte(text), &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range raw.DKIM {
		dir := filepath.Dir(k.KeyFile)
		os.MkdirAll(dir, 0o700)
		var out bytes.Buffer
		if code := run([]string{"dkim", "keygen", "--domain", k.Domain, "--selector", k.Selector, "--algorithm", "ed25519", "--out", dir}, &out, &out); code != 0 {
			t.Fatalf("dkim keygen: %s", out.String())
		}
		if _, err := os.Stat(k.KeyFile); err != nil {
			t.Errorf("the example names %s, but certgate dkim keygen wrote:\n%s", filepath.Base(k.KeyFile), out.String())
		}
	}
	cert, err := sim.SelfSigned(raw.Hostname)
	if err != nil {
		t.Fatal(err)
	}
	writeSecret(t, raw.SMTP.TLS.CertFile, string(cert.CertPEM))
	writeSecret(t, raw.SMTP.TLS.KeyFile, string(cert.KeyPEM))
	hash, err := bcrypt.GenerateFromPassword([]byte("a password"), bcrypt.DefaultCost)
	if err != nil {
		t.Fatal(err)
	}
	for _, tn := range raw.Tenants {
		for _, u := range tn.Users {
			if u.PasswordHashFile != "" {
				writeSecret(t, u.PasswordHashFile, string(hash)+"\n")
			}
		}
	}
	for _, r := range raw.Delivery.Routes {
		if r.CAFile != "" {
			writeSecret(t, r.CAFile, string(cert.CertPEM))
		}
		if r.Auth != nil && r.Auth.PasswordFile != "" {
			writeSecret(t, r.Auth.PasswordFile, randomSecret())
		}
	}
	for _, tok := range raw.API.Tokens {
		if tok.TokenFile != "" {
			writeSecret(t, tok.TokenFile, randomSecret())
		}
		if tok.TokenEnv != "" {
			t.Setenv(tok.TokenEnv, randomSecret())
		}
	}
	for _, w := range raw.Webhooks {
		if w.SecretFile != "" {
			writeSecret(t, w.SecretFile, randomSecret())
		}
	}
	if raw.Gate.FormKeyFile != "" {
		writeSecret(t, raw.Gate.FormKeyFile, randomSecret())
	}
	if raw.Console.SessionKeyFile != "" {
		writeSecret(t, raw.Console.SessionKeyFile, randomSecret())
	}
	if raw.Storage.DSNFile != "" {
		t.Errorf("the example names a PostgreSQL DSN file; it must run as shipped, on the embedded store")
	}

	var out bytes.Buffer
	if code := run([]string{"check-config", "--config", cfgPath}, &out, &out); code != 0 {
		t.Fatalf("certgate check-config on the example: exit %d\n%s", code, out.String())
	}
	checkExampleSeeds(t, text, filepath.Join(root, "etc/certgate/seeds.yaml"))
	startTestDaemon(t, cfgPath)
}

// checkExampleSeeds uncomments the example's seeds section, as an operator
// would, and has check-config accept it: a commented example drifts
// silently otherwise. (Nothing is started: the mailboxes are Gmail's,
// Outlook's and Yahoo's.)
func checkExampleSeeds(t *testing.T, text, path string) {
	t.Helper()
	_, block, ok := strings.Cut(text, "\n#seeds:\n")
	if !ok {
		t.Fatal("the example has no commented seeds section; update this test")
	}
	lines := []string{"seeds:"}
	for _, l := range strings.Split(block, "\n") {
		if l, ok := strings.CutPrefix(l, "#"); ok {
			lines = append(lines, l)
		}
	}
	uncommented := strings.Replace(text, "\n#seeds:\n"+block, "\n"+strings.Join(lines, "\n")+"\n", 1)
	var raw config.Config
	if err := yaml.Unmarshal([]byte(uncommented), &raw); err != nil {
		t.Fatalf("the example's seeds section, uncommented: %v", err)
	}
	if len(raw.Seeds.Mailboxes) == 0 {
		t.Fatal("the uncommented seeds section has no mailboxes")
	}
	for _, m := range raw.Seeds.Mailboxes {
		if f := m.IMAP.PasswordFile; f != "" {
			writeSecret(t, f, randomSecret())
		}
		if o := m.IMAP.OAuth2; o != nil {
			for _, f := range []string{o.TokenFile, o.ClientSecretFile, o.RefreshTokenFile} {
				if f != "" {
					writeSecret(t, f, randomSecret())
				}
			}
		}
	}
	writeSecret(t, path, uncommented)
	var out bytes.Buffer
	if code := run([]string{"check-config", "--config", path}, &out, &out); code != 0 {
		t.Fatalf("certgate check-config on the example with its seeds uncommented: exit %d\n%s", code, out.String())
	}
}

// writeSecret writes a file only its owner reads, making its directory.
func writeSecret(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func randomSecret() string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Each storage driver check-config accepts, serve can open.
func TestEveryConfiguredDriverOpens(t *testing.T) {
	for _, driver := range config.StorageDrivers() {
		cfg := &config.Config{DataDir: t.TempDir(), Storage: config.Storage{Driver: driver}}
		if driver == "postgres" {
			cfg.Storage.DSNFile = writeDSN(t, testpg.Start(t).NewDB(t))
		}
		st, err := openStore(context.Background(), cfg)
		if err != nil {
			t.Errorf("driver %s: %v", driver, err)
			continue
		}
		st.Close()
	}
}
