package config

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const (
	secretAll = "0f6b1d0e9c2a4b7e8d3f5a6c7b8e9d0a"
	secretCA  = "c4f1e2d3a4b5c6d7e8f9a0b1c2d3e4f5"
)

// TestWebhookConfigChecks covers the webhooks section of the
// configuration: config is the only place it is checked, secrets
// included; package webhook trusts what passes.
func TestWebhookConfigChecks(t *testing.T) {
	dir := t.TempDir()
	for name, secret := range map[string]string{"crm.secret": secretCA + "\n", "short.secret": "tooshort-123\n", "empty.secret": "\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(secret), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("CRM_SECRET", " "+secretAll+" ")
	t.Setenv("CERTGATE_TEST_SHORT", "tooshort-123")
	good := func() Webhook {
		return Webhook{Name: "crm", URL: "https://crm.ca.example/hooks/certgate?token=x", SecretEnv: "CRM_SECRET",
			Events: []string{"delivered", "bounced", "released", "link_used", "link_refused"}, Tenants: []string{"ca"}}
	}
	check := func(ws []Webhook) ([]Webhook, []string) {
		t.Helper()
		c := &Config{Path: filepath.Join(dir, "certgate.yaml"), Tenants: []Tenant{{Name: "ca"}, {Name: "other"}}, Webhooks: ws}
		err := c.Validate()
		var errs *Errors
		if err != nil && !errors.As(err, &errs) {
			t.Fatal(err)
		}
		var out []string
		if errs != nil {
			for _, p := range errs.Problems {
				if strings.HasPrefix(p.Path, "webhooks") {
					out = append(out, p.Path+": "+p.Msg)
				}
			}
		}
		return c.Webhooks, out
	}

	ws, problems := check([]Webhook{good()})
	if len(problems) != 0 {
		t.Errorf("a good webhook: %v", problems)
	}
	if ws[0].Timeout != DefaultWebhookTimeout {
		t.Errorf("timeout left out = %s, want %s", ws[0].Timeout, DefaultWebhookTimeout)
	}
	rel := good()
	rel.SecretEnv, rel.SecretFile = "", "crm.secret"
	ws, problems = check([]Webhook{rel})
	if len(problems) != 0 || ws[0].SecretFile != filepath.Join(dir, "crm.secret") {
		t.Errorf("a relative secret_file: %q, %v", ws[0].SecretFile, problems)
	}
	for _, u := range []string{"http://127.0.0.1:9000/h", "http://localhost/h", "http://[::1]:8080/h", "https://10.0.0.5/h"} {
		w := good()
		w.URL = u
		if _, problems := check([]Webhook{w}); len(problems) != 0 {
			t.Errorf("url %s: %v", u, problems)
		}
	}

	twice := good()
	_, problems = check([]Webhook{good(), twice})
	if !slices.Contains(problems, `webhooks[1].name: "crm" is already the name of webhooks[0]`) {
		t.Errorf("a name used twice: %v", problems)
	}
	for _, c := range []struct {
		name   string
		change func(w *Webhook)
		want   string // a problem containing this
	}{
		{"no name", func(w *Webhook) { w.Name = "" }, "webhooks[0].name: required"},
		{"odd name", func(w *Webhook) { w.Name = "crm hooks" }, "webhooks[0].name:"},
		{"no url", func(w *Webhook) { w.URL = "" }, "webhooks[0].url: required"},
		{"http", func(w *Webhook) { w.URL = "http://crm.ca.example/h" }, "webhooks[0].url: use https"},
		{"ftp", func(w *Webhook) { w.URL = "ftp://crm.ca.example/h" }, "webhooks[0].url: not an absolute https URL"},
		{"mailto", func(w *Webhook) { w.URL = "mailto:x@example.com?token=x" }, "webhooks[0].url: not an absolute https URL"},
		{"relative url", func(w *Webhook) { w.URL = "/hooks" }, "webhooks[0].url: not an absolute"},
		{"no scheme", func(w *Webhook) { w.URL = "crm.ca.example/h?token=x" }, "webhooks[0].url: not an absolute"},
		{"fragment", func(w *Webhook) { w.URL += "#x" }, "webhooks[0].url: must not have a #fragment"},
		{"password", func(w *Webhook) { w.URL = "https://u:hunter2@crm.ca.example/h" }, "webhooks[0].url: must not contain a user name"},
		{"two secrets", func(w *Webhook) { w.SecretFile = "crm.secret" }, "webhooks[0]: set only one of secret_file and secret_env"},
		{"no secret", func(w *Webhook) { w.SecretEnv = "" }, "webhooks[0]: set secret_file or secret_env"},
		{"missing file", func(w *Webhook) { w.SecretEnv, w.SecretFile = "", "nope" }, "webhooks[0].secret_file: file"},
		{"secret as env", func(w *Webhook) { w.SecretEnv = "s3cr3t-value!" }, "webhooks[0].secret_env: must be the name"},
		{"short env", func(w *Webhook) { w.SecretEnv = "CERTGATE_TEST_SHORT" },
			"webhooks[0].secret_env: the secret in environment variable CERTGATE_TEST_SHORT is shorter than 16 characters"},
		{"short file", func(w *Webhook) { w.SecretEnv, w.SecretFile = "", "short.secret" }, "webhooks[0].secret_file: the secret in file " + filepath.Join(dir, "short.secret") + " is shorter than 16"},
		{"empty file", func(w *Webhook) { w.SecretEnv, w.SecretFile = "", "empty.secret" }, "webhooks[0].secret_file: secret file " + filepath.Join(dir, "empty.secret") + " is empty"},
		{"no events", func(w *Webhook) { w.Events = nil }, "webhooks[0].events: list at least one"},
		{"other event", func(w *Webhook) { w.Events = []string{"accepted"} }, `webhooks[0].events[0]: "accepted" is not one of`},
		{"event twice", func(w *Webhook) { w.Events = []string{"bounced", "bounced"} }, `webhooks[0].events[1]: "bounced" is listed twice`},
		{"unknown tenant", func(w *Webhook) { w.Tenants = []string{"ca", "nobody"} }, `webhooks[0].tenants[1]: "nobody" is not the name of a tenant`},
		{"no tenants with two tenants", func(w *Webhook) { w.Tenants = nil }, `webhooks[0].tenants: required with more than one tenant`},
		{"every tenant and a name", func(w *Webhook) { w.Tenants = []string{"*", "ca"} }, `webhooks[0].tenants[0]: "*" means every tenant`},
		{"negative timeout", func(w *Webhook) { w.Timeout = -1 }, "webhooks[0].timeout: must be a positive duration"},
	} {
		w := good()
		c.change(&w)
		_, problems := check([]Webhook{w})
		found := false
		for _, p := range problems {
			found = found || strings.Contains(p, c.want)
			if strings.Contains(p, "hunter2") || strings.Contains(p, "s3cr3t-value") || strings.Contains(p, "token=x") || strings.Contains(p, "tooshort") {
				t.Errorf("%s: a problem shows a secret: %s", c.name, p)
			}
		}
		if !found {
			t.Errorf("%s: problems %v, want one containing %q", c.name, problems, c.want)
		}
	}

	// From a file: line numbers, and a timeout written as 0 is kept and refused.
	yaml := `tenants: [{name: ca, trusted_networks: [192.0.2.1], from_domains: [ca.example]}]
webhooks:
  - {name: crm, url: "https://crm.ca.example/h", secret_env: CRM_SECRET, events: [delivered], timeout: 0}
`
	_, err := Parse(filepath.Join(dir, "certgate.yaml"), []byte(yaml))
	var errs *Errors
	if !errors.As(err, &errs) {
		t.Fatalf("Parse: %v", err)
	}
	found := false
	for _, p := range errs.Problems {
		if p.Path == "webhooks[0].timeout" && p.Line == 3 {
			found = true
		}
		if strings.HasPrefix(p.Path, "webhooks") && p.Path != "webhooks[0].timeout" {
			t.Errorf("unexpected problem %s", p)
		}
	}
	if !found {
		t.Errorf("timeout: 0 not refused on line 3: %v", errs)
	}
}

// API tokens are read when the file is loaded: a short one is refused
// there, naming its file or variable but never its value; a variable that
// is not set where check-config runs is left for serve to name.
func TestAPITokenLength(t *testing.T) {
	dir := t.TempDir()
	for name, secret := range map[string]string{"good.token": strings.Repeat("k", 32) + "\n", "short.token": "short-0123\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(secret), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("CERTGATE_TEST_SHORT_TOKEN", "short-0123")
	for _, c := range []struct {
		name string
		tok  APIToken
		want string // "" for no problem
	}{
		{"good file", APIToken{TokenFile: filepath.Join(dir, "good.token")}, ""},
		{"short file", APIToken{TokenFile: filepath.Join(dir, "short.token")}, "api.tokens[0].token_file: the token in file " + filepath.Join(dir, "short.token") + " is shorter than 16"},
		{"short env", APIToken{TokenEnv: "CERTGATE_TEST_SHORT_TOKEN"}, "api.tokens[0].token_env: the token in environment variable CERTGATE_TEST_SHORT_TOKEN is shorter than 16"},
		{"unset env", APIToken{TokenEnv: "CERTGATE_TEST_UNSET_TOKEN"}, ""},
	} {
		c.tok.Name, c.tok.Scopes = "helpdesk", []Scope{ScopeRead}
		cfg := &Config{Path: filepath.Join(dir, "certgate.yaml"), API: API{Tokens: []APIToken{c.tok}}}
		var got []string
		var errs *Errors
		if errors.As(cfg.Validate(), &errs) {
			for _, p := range errs.Problems {
				if strings.HasPrefix(p.Path, "api") {
					got = append(got, p.Path+": "+p.Msg)
					if strings.Contains(p.Msg, "short-0123") {
						t.Errorf("%s: a problem shows the token: %s", c.name, p.Msg)
					}
				}
			}
		}
		switch {
		case c.want == "" && len(got) > 0:
			t.Errorf("%s: %v, want no problem", c.name, got)
		case c.want != "" && (len(got) != 1 || !strings.HasPrefix(got[0], c.want)):
			t.Errorf("%s: %v, want %q", c.name, got, c.want)
		}
	}
}
