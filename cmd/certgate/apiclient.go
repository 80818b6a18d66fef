package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/certgate/certgate/config"
)

// apiClient calls a running certgate's API for the commands that act on
// the daemon (release, seeds test).
type apiClient struct {
	base  string // http://host:port, no trailing slash
	token string
	http  *http.Client
}

// newAPIClient checks the base URL and finds the token: --token-file,
// else CERTGATE_TOKEN.
func newAPIClient(base, tokenFile string) (*apiClient, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usageError{fmt.Errorf("--url %q is not an http(s) URL such as http://127.0.0.1:8080", base)}
	}
	token := os.Getenv("CERTGATE_TOKEN")
	if tokenFile != "" {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return nil, err
		}
		token = strings.TrimSpace(string(b))
	}
	if token == "" {
		return nil, usageError{fmt.Errorf("no API token: give --token-file or set CERTGATE_TOKEN")}
	}
	return &apiClient{base: strings.TrimSuffix(base, "/"), token: token, http: &http.Client{Timeout: 30 * time.Second}}, nil
}

// apiURLFromConfig is http.listen as a URL a local client can call, for
// commands that read the configuration like serve does; "" when the
// file cannot be read.
func apiURLFromConfig(path string) string {
	cfg, err := config.Load(path)
	if err != nil {
		return ""
	}
	host, port, err := net.SplitHostPort(cfg.HTTP.Listen)
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// do calls method path with body (of contentType) and decodes a JSON
// answer of status want into out. Every error names the URL called: a
// wrong --url is the usual cause.
func (c *apiClient) do(method, path, contentType string, body io.Reader, want int, out any) error {
	endpoint := c.base + path
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%s %s: %s", method, endpoint, fmt.Sprintf(format, args...))
	}
	req, err := http.NewRequest(method, endpoint, body)
	if err != nil {
		return fail("%v", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // it would repeat the URL
		}
		return fail("%v (is --url certgate's http.listen?)", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		var e struct{ Error, Reason string }
		if json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&e) != nil || e.Error == "" {
			return fail("answered %s, and not as certgate's API does (is --url certgate's http.listen?)", resp.Status)
		}
		return fail("answered %s: %s", resp.Status, e.Reason)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(out); err != nil {
		return fail("unreadable answer: %v", err)
	}
	return nil
}
