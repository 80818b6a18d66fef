package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
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
	client, err := newAPIClient(*base, *tokenFile)
	if err != nil {
		return err
	}
	body := map[string]any{"ids": ids, "reason": *reason}
	if *recipient != "" {
		body = map[string]any{"recipient": *recipient, "reason": *reason}
	}
	raw, _ := json.Marshal(body)
	var out struct {
		Released []struct {
			ID       string   `json:"id"`
			Requeued []string `json:"requeued"`
		} `json:"released"`
		NotFound []string `json:"not_found"`
	}
	if err := client.do("POST", "/api/v1/release", "application/json", bytes.NewReader(raw), http.StatusOK, &out); err != nil {
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
