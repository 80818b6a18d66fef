package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
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
	req, err := http.NewRequest("POST", strings.TrimSuffix(*base, "/")+"/api/v1/release", bytes.NewReader(raw))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error, Reason string }
		json.NewDecoder(resp.Body).Decode(&e)
		return fmt.Errorf("the API answered %s: %s", resp.Status, e.Reason)
	}
	var out struct {
		Released []struct {
			ID       string   `json:"id"`
			Requeued []string `json:"requeued"`
		} `json:"released"`
		NotFound []string `json:"not_found"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return err
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
