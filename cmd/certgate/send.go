package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/certgate/certgate/api"
	"github.com/certgate/certgate/compose"
	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/gateway"
	"github.com/certgate/certgate/store"
)

// loadTemplates reads the built-in templates and every tenant's own
// (tenants[].templates), so that a broken template stops the start.
func loadTemplates(cfg *config.Config) (*compose.Templates, error) {
	dirs := map[string]string{}
	for _, t := range cfg.Tenants {
		if t.Templates != "" {
			dirs[t.Name] = t.Templates
		}
	}
	tpl, err := compose.NewTemplates(dirs)
	if err != nil {
		return nil, fmt.Errorf("templates: %w", err)
	}
	return tpl, nil
}

// sending is the send API over the relay: composed mail goes through the
// same preparation, signing and spooling as SMTP submissions.
func (d *daemon) sending() api.Sending {
	cfg := d.cfg
	owners := config.NewDomainOwners(cfg.Tenants)
	byName := map[string]api.SendTenant{}
	for _, t := range cfg.Tenants {
		byName[t.Name] = api.SendTenant{Name: t.Name, DisplayName: t.DisplayName, SupportEmail: t.Support.Email,
			SupportURL: t.Support.URL, GatePrefixes: t.Links.Gate, MaxRecipients: t.MaxRecipientsPerSend, Classes: t.Classes}
	}
	s := api.Sending{Templates: d.compose, MaxBytes: cfg.API.SendMaxBytes, Hostname: cfg.Hostname,
		Tenant: func(domain string) (api.SendTenant, bool) {
			t, ok := byName[owners.Owner(domain)]
			return t, ok
		},
		Sender: func(ctx context.Context, m api.Outgoing) (*api.Sent, error) {
			t := d.dir.Tenant(m.Tenant)
			if t == nil {
				return nil, &api.Refusal{Reason: "not_found", Message: "no tenant " + m.Tenant}
			}
			sub := gateway.Submission{Tenant: t, From: m.From, Rcpts: m.Rcpts, Data: m.Data,
				Actor: m.Actor, ClientIP: m.ClientIP, TLS: m.TLS, Class: m.Class, Hold: m.Hold, Note: "format " + m.Format}
			if m.Answer != nil {
				// The key's answer is spooled with the message.
				sub.Answer = func(sent *gateway.Sent) *store.IdempotentAnswer { return m.Answer(apiSent(sent)) }
			}
			sent, err := d.relay.Send(ctx, sub)
			if code, reason, text, ok := gateway.RefusalOf(err); ok {
				return nil, &api.Refusal{Temporary: code < 500, Reason: reason, Message: text}
			}
			if err != nil {
				return nil, err
			}
			return apiSent(sent), nil
		},
	}
	if keys, ok := d.store.(store.Idempotency); ok {
		s.Keys = keys
	}
	return s
}

// apiSent is the send API's answer for a submission the relay sent.
func apiSent(sent *gateway.Sent) *api.Sent {
	out := &api.Sent{ID: sent.ID, Recipients: []api.SentRecipient{}}
	for _, r := range sent.Recipients {
		out.Recipients = append(out.Recipients, api.SentRecipient{Address: r.Address, ID: r.TrackingID})
	}
	return out
}

// cmdSend runs "certgate send": one POST /api/v1/send, for scripts.
func cmdSend(args []string, stdout io.Writer) error {
	fs := newFlags("send", stdout)
	base := fs.String("url", "http://127.0.0.1:8080", "certgate's HTTP address (http.listen)")
	tokenFile := fs.String("token-file", "", "file holding an API token with the send scope (or set CERTGATE_TOKEN)")
	from := fs.String("from", "", "the From address; its domain decides the tenant")
	to := fs.String("to", "", `recipients, comma- or semicolon-separated: "a@x, b@y"`)
	certFile := fs.String("cert", "", "the certificate: a PEM file, or DER (.cer, .der) or PKCS#7 (.p7b, .p7c) read as bytes")
	format := fs.String("format", "attachment", "attachment, plaintext or downloadlink")
	message := fs.String("message", "", "the custom message (plain text)")
	tpl := fs.String("template", "", "the template (default certificate)")
	lang := fs.String("lang", "", "the template's language: es, pt-BR, fr, en")
	class := fs.String("class", "", "bulk or transactional (default: the tenant's)")
	hold := fs.Bool("hold", false, "keep the message in certgate's quarantine until released")
	downloadURL := fs.String("download-url", "", "the download link, for --format downloadlink")
	key := fs.String("idempotency-key", "", "send once however often this is run with the same key and request")
	preview := fs.Bool("preview", false, "print the message that would be sent, and send nothing")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if *from == "" || *to == "" || fs.NArg() > 0 {
		return usageError{errors.New(`usage: certgate send --url URL --token-file F --from ADDR --to "a@x, b@y" [--cert FILE] [--format attachment|plaintext|downloadlink] [--message TEXT] [--template T --lang L --class C --hold --download-url U --idempotency-key K --preview]`)}
	}
	client, err := newAPIClient(*base, *tokenFile)
	if err != nil {
		return err
	}
	req := map[string]any{"from": *from, "emails": *to, "certificate_collect_format": *format}
	for k, v := range map[string]string{"custom_message": *message, "template": *tpl, "language": *lang, "class": *class, "download_url": *downloadURL} {
		if v != "" {
			req[k] = v
		}
	}
	if *hold {
		req["hold"] = true
	}
	if *certFile != "" {
		b, err := os.ReadFile(*certFile)
		if err != nil {
			return err
		}
		req["certificate"] = certificateField(*certFile, b)
	}
	raw, _ := json.Marshal(req)
	if *preview {
		return client.raw("POST", "/api/v1/send/preview", raw, nil, stdout)
	}
	var out api.Sent
	var hdr map[string]string
	if *key != "" {
		hdr = map[string]string{"Idempotency-Key": *key}
	}
	var buf bytes.Buffer
	if err := client.raw("POST", "/api/v1/send", raw, hdr, &buf); err != nil {
		return err
	}
	if err := json.Unmarshal(buf.Bytes(), &out); err != nil {
		return fmt.Errorf("the answer is not the send API's: %v", err)
	}
	fmt.Fprintf(stdout, "%s accepted for %d recipient(s)\n", out.ID, len(out.Recipients))
	for _, r := range out.Recipients {
		fmt.Fprintf(stdout, "  %s %s\n", r.Address, r.ID)
	}
	return nil
}

// certificateField is the request's certificate: PEM as text, anything
// else base64, as pkcs7 for a .p7b or .p7c file, else der.
func certificateField(name string, b []byte) map[string]string {
	if bytes.Contains(b, []byte("-----BEGIN ")) {
		return map[string]string{"pem": string(b)}
	}
	lower := strings.ToLower(name)
	if strings.HasSuffix(lower, ".p7b") || strings.HasSuffix(lower, ".p7c") {
		return map[string]string{"pkcs7": base64.StdEncoding.EncodeToString(b)}
	}
	return map[string]string{"der": base64.StdEncoding.EncodeToString(b)}
}

// raw posts a JSON body with extra headers and copies a 2xx answer's body
// to out; any other answer is an error with the API's reason and field.
func (c *apiClient) raw(method, path string, body []byte, hdr map[string]string, out io.Writer) error {
	endpoint := c.base + path
	req, err := http.NewRequest(method, endpoint, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %v", method, endpoint, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: %v", method, endpoint, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct{ Error, Reason, Field string }
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			if e.Field != "" {
				return fmt.Errorf("%s %s: %d %s: %s (field %s)", method, endpoint, resp.StatusCode, e.Error, e.Reason, e.Field)
			}
			return fmt.Errorf("%s %s: %d %s: %s", method, endpoint, resp.StatusCode, e.Error, e.Reason)
		}
		return fmt.Errorf("%s %s: %s", method, endpoint, resp.Status)
	}
	_, err = out.Write(data)
	return err
}
