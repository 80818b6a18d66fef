package demo

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/bcrypt"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/sim"
)

// credentials are the demo's secrets: the submission password (users app
// and portal) and the API token.
type credentials struct {
	password, token string
}

// writeConfig writes the demo's configuration as an operator would,
// so that the demo runs through the same loading and validation.
func writeConfig(dir string, mxPort int, keys []config.DKIMKey, downloadPrefix string) (path string, creds credentials, err error) {
	creds = credentials{password: randomHex(12), token: randomHex(24)}
	hash, err := bcrypt.GenerateFromPassword([]byte(creds.password), bcrypt.DefaultCost)
	if err != nil {
		return "", creds, err
	}
	cert, err := sim.SelfSigned("relay.ca.example")
	if err != nil {
		return "", creds, err
	}
	certFile, keyFile, err := cert.WriteFiles(dir, "smtp")
	if err != nil {
		return "", creds, err
	}
	tokenFile := filepath.Join(dir, "api-token")
	if err := os.WriteFile(tokenFile, []byte(creds.token+"\n"), 0o600); err != nil {
		return "", creds, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# certgate demo configuration, written by 'certgate demo'\n")
	fmt.Fprintf(&b, "hostname: relay.ca.example\ndata_dir: %s\n", filepath.Join(dir, "data"))
	fmt.Fprintf(&b, "smtp:\n  listen: [\"127.0.0.1:0\"]\n  tls: {cert_file: %s, key_file: %s}\n", certFile, keyFile)
	// The gate's URLs go into the mail, so the HTTP port is chosen now.
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", creds, err
	}
	httpAddr := hl.Addr().String()
	hl.Close()
	fmt.Fprintf(&b, "http:\n  listen: %q\n  public_url: \"http://%s\"\n", httpAddr, httpAddr)
	fmt.Fprintf(&b, "tenants:\n  - name: issuer\n    users: [{username: app, password_hash: %q}]\n", string(hash))
	fmt.Fprintf(&b, "    from_domains: [ca.example, certs.example, ac.example]\n")
	fmt.Fprintf(&b, "  - name: portal\n    display_name: Service Certificats\n    users: [{username: portal, password_hash: %q}]\n", string(hash))
	fmt.Fprintf(&b, "    from_domains: [%s]\n    support: {email: support@certs.example}\n", portalDomain)
	fmt.Fprintf(&b, "    links: {gate: [%q], enable: on_release, max_uses: 3}\n", downloadPrefix)
	fmt.Fprintf(&b, "gate: {min_human_delay: 500ms}\n")
	fmt.Fprintf(&b, "dkim:\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "  - {domain: %s, selector: %s, key_file: %s}\n", k.Domain, k.Selector, k.KeyFile)
	}
	fmt.Fprintf(&b, "delivery:\n  mx_port: %d\n  retry: {schedule: [2s, 5s, 10s], max_age: 1h}\n  static_dns:\n    mx:\n", mxPort)
	for _, p := range providers {
		for d, mx := range p.domains {
			fmt.Fprintf(&b, "      %s: [%s]\n", d, mx)
		}
	}
	fmt.Fprintf(&b, "    hosts:\n")
	for _, p := range providers {
		for _, mx := range p.domains {
			fmt.Fprintf(&b, "      %s: [%s]\n", mx, p.ip)
		}
	}
	// Limits scaled down from production so the demo shows shaping in seconds.
	fmt.Fprintf(&b, "providers:\n")
	fmt.Fprintf(&b, "  - {name: gmail, max_message_rate: 1800/min, connection_limit: 3}\n")
	fmt.Fprintf(&b, "  - {name: microsoft365, max_message_rate: 1200/min, connection_limit: 2}\n")
	fmt.Fprintf(&b, "  - {name: outlook, max_message_rate: 900/min, connection_limit: 2}\n")
	fmt.Fprintf(&b, "  - {name: yahoo, max_message_rate: 600/min, connection_limit: 2}\n")
	fmt.Fprintf(&b, "api:\n  tokens: [{name: demo, token_file: %s, scopes: [read, release], tenants: [\"*\"]}]\n", tokenFile)
	path = filepath.Join(dir, "certgate.yaml")
	return path, creds, os.WriteFile(path, []byte(b.String()), 0o600)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
