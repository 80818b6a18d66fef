package demo

import (
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/gateway/signer"
)

// dkimKeys are the demo's DKIM keys and the TXT records that publish them.
type dkimKeys struct {
	config []config.DKIMKey
	txt    map[string][]string // record name without the final dot -> value
	zone   []string            // the records as zone-file lines
}

// makeKeys writes RSA-2048 keys for each issuer domain, plus Ed25519
// for ca.example, and one for the portal tenant's own subdomain (a tenant
// signs with its own keys only), into dir.
func makeKeys(dir string) (dkimKeys, error) {
	keys := dkimKeys{txt: map[string][]string{}}
	for _, k := range []struct{ alg, domain, sel string }{
		{"rsa2048", "ca.example", "s2026"}, {"ed25519", "ca.example", "e2026"},
		{"rsa2048", "certs.example", "s2026"}, {"rsa2048", "ac.example", "s2026"},
		{"rsa2048", portalDomain, "s2026"},
	} {
		key, pemBytes, err := signer.Generate(k.alg, k.domain, k.sel)
		if err != nil {
			return dkimKeys{}, err
		}
		path := filepath.Join(dir, k.sel+"."+k.domain+".pem")
		if err := os.WriteFile(path, pemBytes, 0o600); err != nil {
			return dkimKeys{}, err
		}
		name, value := key.DNSRecord()
		keys.txt[strings.TrimSuffix(name, ".")] = []string{value}
		keys.zone = append(keys.zone, key.ZoneRecord())
		keys.config = append(keys.config, config.DKIMKey{Domain: k.domain, Selector: k.sel, KeyFile: path})
	}
	return keys, nil
}

// lookupTXT is the receivers' DNS for DKIM keys.
func (k dkimKeys) lookupTXT(domain string) ([]string, error) {
	if v, ok := k.txt[strings.TrimSuffix(domain, ".")]; ok {
		return v, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: domain, IsNotFound: true}
}
