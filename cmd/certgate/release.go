package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// cmdRelease runs "certgate release ID...": it asks a running certgate's
// API to release messages, as the helpdesk's tools do.
func cmdRelease(args []string, stdout io.Writer) error {
	fs := newFlags("release", stdout)
	base := fs.String("url", "http://127.0.0.1:8080", "certgate's HTTP address (http.listen)")
	tokenFile := fs.String("token-file", "", "file holding an API token with the release scope (or set CERTGATE_TOKEN)")
	recipient := fs.String("recipient", "", "release every message to this address instead of ids")
	reason := fs.String("reason", "", "why, for the audit trail")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	ids := fs.Args()
	if (len(ids) == 0) == (*recipient == "") {
		return usageError{fmt.Errorf("usage: certgate release [--url URL] [--token-file F] [--reason TEXT] (ID... | --recipient ADDRESS)")}
	}
	token := os.Getenv("CERTGATE_TOKEN")
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return err
		}
		token = strings.TrimSpace(string(b))
	}
	if token == "" {
		return usageError{fmt.Errorf("no API token: give --token-file or set CERTGATE_TOKEN")}
	}
	body := map[string]any{"ids": ids, "reason": *reason}
	if *recipient != "" {
		body = map[string]any{"recipient": *recipient, "reason": *reason}
	}
	raw, _ := json.Marshal(body)
	endpoint := strings.TrimSuffix(*base, "/") + "/api/v1/release"
	// Every error names the URL called: a wrong --url is the usual cause.
	fail := func(format string, args ...any) error {
		return fmt.Errorf("POST %s: %s", endpoint, fmt.Sprintf(format, args...))
	}
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usageError{fmt.Errorf("--url %q is not an http(s) URL such as http://127.0.0.1:8080", *base)}
	}
	req, err := http.NewRequest("POST", endpoint, bytes.NewReader(raw))
	if err != nil {
		return fail("%v", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // it would repeat the URL
		}
		return fail("%v (is --url certgate's http.listen?)", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error, Reason string }
		if json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&e) != nil || e.Error == "" {
			return fail("answered %s, and not as certgate's API does (is --url certgate's http.listen?)", resp.Status)
		}
		return fail("answered %s: %s", resp.Status, e.Reason)
	}
	var out struct {
		Released []struct {
			ID       string   `json:"id"`
			Requeued []string `json:"requeued"`
		} `json:"released"`
		NotFound []string `json:"not_found"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return fail("unreadable answer: %v", err)
	}
	for _, r := range out.Released {
		if len(r.Requeued) > 0 {
			fmt.Fprintf(stdout, "%s released; now delivering to %s\n", r.ID, strings.Join(r.Requeued, ", "))
		} else {
			fmt.Fprintf(stdout, "%s released (nothing was held; its links are enabled)\n", r.ID)
		}
	}
	for _, id := range out.NotFound {
		fmt.Fprintf(stdout, "%s not found\n", id)
	}
	if len(out.NotFound) > 0 {
		return fmt.Errorf("%d of the messages were not found", len(out.NotFound))
	}
	return nil
}
