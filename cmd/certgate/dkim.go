package main

import (
	"fmt"
	"io"
	"os"

	"github.com/certgate/certgate/gateway/signer"
)

// cmdDKIM runs "certgate dkim keygen": a new key on disk and the DNS record
// the operator must publish before certgate signs with it.
func cmdDKIM(args []string, stdout io.Writer) error {
	if len(args) > 0 && isHelp(args[0]) {
		fmt.Fprint(stdout, commandUsage("dkim"))
		return nil
	}
	if len(args) == 0 || args[0] != "keygen" {
		return usageError{fmt.Errorf("usage: certgate dkim keygen --domain D --selector S [--algorithm rsa2048|ed25519] --out DIR")}
	}
	fs := newFlags("dkim keygen", stdout)
	domain := fs.String("domain", "", "signing domain (d=), aligned with the From domain")
	selector := fs.String("selector", "", "selector (s=), e.g. s2026")
	alg := fs.String("algorithm", "rsa2048", "rsa2048 or ed25519")
	out := fs.String("out", ".", "directory for the key and the record")
	if err := fs.Parse(args[1:]); err != nil {
		return usageError{err}
	}
	if *domain == "" || *selector == "" {
		return usageError{fmt.Errorf("dkim keygen needs --domain and --selector")}
	}
	key, _, err := signer.Generate(*alg, *domain, *selector)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o700); err != nil {
		return err
	}
	keyPath, recordPath, err := key.WriteFiles(*out)
	if err != nil {
		return err
	}
	name, _ := key.DNSRecord()
	fmt.Fprintf(stdout, "private key: %s\nDNS record:  %s\n\nPublish this TXT record at %s:\n\n%s\n\nThen add to the configuration:\n\n  dkim:\n    - {domain: %s, selector: %s, key_file: %s}\n",
		keyPath, recordPath, name, key.ZoneRecord(), *domain, *selector, keyPath)
	return nil
}
