package signer

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/internal/mailaddr"
)

// Signature algorithms (RFC 6376 3.3, RFC 8463 3).
const (
	AlgRSASHA256     = "rsa-sha256"
	AlgEd25519SHA256 = "ed25519-sha256"
)

// RSA key sizes: config.ParseDKIMKey's (RFC 8301 3.2).
const (
	MinRSABits         = config.MinRSABits
	RecommendedRSABits = config.RecommendedRSABits
	MaxRSABits         = config.MaxRSABits
)

// Key is a DKIM private key with the domain (d=) and selector (s=) it signs
// for. It is parsed once and safe for concurrent use. Its String and
// GoString never show the private key.
type Key struct {
	Domain    string // lower case, no trailing dot
	Selector  string
	Algorithm string // AlgRSASHA256 or AlgEd25519SHA256
	// Bits is the RSA modulus size, or 256 for Ed25519. An RSA key below
	// RecommendedRSABits works but deserves a warning (see Weak).
	Bits int
	// Engine is what makes its signatures: EngineGo, or EngineOpenSSL
	// after UseOpenSSL.
	Engine string

	priv   crypto.Signer // Go's key, kept for marshalling
	signer crypto.Signer // what signs: priv, or OpenSSL holding the same key
}

// Signing engines. Both make the same bytes: RSASSA-PKCS1-v1_5 is
// deterministic (RFC 8017 8.2.1).
const (
	EngineGo      = "go"
	EngineOpenSSL = "openssl"
)

// OpenSSLVersion loads OpenSSL's libcrypto (once) and returns its version,
// or why it cannot be used.
func OpenSSLVersion() (string, error) { return loadOpenSSL() }

// UseOpenSSL makes an RSA key sign with OpenSSL, about three times faster
// than Go on current x86 CPUs. Ed25519 keys are left to Go (they are cheap)
// and return nil. On error the key keeps signing with Go.
func (k *Key) UseOpenSSL() error {
	priv, ok := k.priv.(*rsa.PrivateKey)
	if !ok {
		return nil
	}
	s, err := newOpenSSLRSA(priv)
	if err != nil {
		return err
	}
	k.signer, k.Engine = s, EngineOpenSSL
	return nil
}

// LoadKey reads a PEM file holding a PKCS#8 ("PRIVATE KEY") RSA or Ed25519
// key, or a PKCS#1 ("RSA PRIVATE KEY") RSA key.
func LoadKey(domain, selector, path string) (*Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("dkim key: %w", err)
	}
	k, err := ParseKey(domain, selector, b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// ParseKey is LoadKey for PEM bytes. Blocks that are not private keys (a
// certificate, EC parameters) are skipped; the first private key is used.
func ParseKey(domain, selector string, pemData []byte) (*Key, error) {
	domain, selector, err := checkNames(domain, selector)
	if err != nil {
		return nil, err
	}
	priv, err := config.ParseDKIMKey(pemData)
	if err != nil {
		return nil, fmt.Errorf("dkim key: %w", err)
	}
	return newKey(domain, selector, priv), nil
}

// newKey wraps a key that config.ParseDKIMKey accepted, or Generate made.
func newKey(domain, selector string, priv crypto.Signer) *Key {
	k := &Key{Domain: domain, Selector: selector, Engine: EngineGo, priv: priv, signer: priv}
	switch priv := priv.(type) {
	case *rsa.PrivateKey:
		priv.Precompute() // once, here, not per message
		k.Algorithm, k.Bits = AlgRSASHA256, priv.N.BitLen()
	case ed25519.PrivateKey:
		k.Algorithm, k.Bits = AlgEd25519SHA256, 256
	}
	return k
}

// checkNames lower-cases domain and selector and checks that they are DNS
// names made of letter-digit-hyphen labels (RFC 6376 3.1 selectors, 3.5 d=;
// RFC 5321 4.1.2 sub-domain). Internationalized domains must be given as
// A-labels (xn--).
func checkNames(domain, selector string) (string, string, error) {
	domain = strings.TrimSuffix(strings.ToLower(domain), ".")
	selector = strings.ToLower(selector)
	if !mailaddr.DNSName(domain) || !strings.Contains(domain, ".") {
		return "", "", fmt.Errorf("dkim key: invalid domain %q", domain)
	}
	if !mailaddr.DNSName(selector) {
		return "", "", fmt.Errorf("dkim key: invalid selector %q", selector)
	}
	if len(selector)+len("._domainkey.")+len(domain) > 253 {
		return "", "", fmt.Errorf("dkim key: %s._domainkey.%s is too long for DNS", selector, domain)
	}
	return domain, selector, nil
}

// Generate makes a new key for `certgate dkim keygen`. algorithm is
// "rsa2048", "rsa3072", "rsa4096" or "ed25519". pemBytes is the private key
// as PKCS#8 PEM. Since not every receiver verifies Ed25519 yet (RFC 8463 is
// from 2018), an Ed25519 key should be published next to an RSA key.
func Generate(algorithm, domain, selector string) (k *Key, pemBytes []byte, err error) {
	domain, selector, err = checkNames(domain, selector)
	if err != nil {
		return nil, nil, err
	}
	var priv crypto.Signer
	switch algorithm {
	case "rsa2048", "rsa3072", "rsa4096":
		bits := map[string]int{"rsa2048": 2048, "rsa3072": 3072, "rsa4096": 4096}[algorithm]
		var rk *rsa.PrivateKey
		rk, err = rsa.GenerateKey(rand.Reader, bits)
		priv = rk
	case "ed25519":
		var ek ed25519.PrivateKey
		_, ek, err = ed25519.GenerateKey(rand.Reader)
		priv = ek
	default:
		return nil, nil, fmt.Errorf("dkim keygen: unknown algorithm %q (want rsa2048, rsa3072, rsa4096 or ed25519)", algorithm)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("dkim keygen: %w", err)
	}
	k = newKey(domain, selector, priv)
	if pemBytes, err = k.marshalPEM(); err != nil {
		return nil, nil, err
	}
	return k, pemBytes, nil
}

func (k *Key) marshalPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k.priv)
	if err != nil {
		return nil, fmt.Errorf("dkim key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// Public returns the public key: *rsa.PublicKey or ed25519.PublicKey.
func (k *Key) Public() crypto.PublicKey { return k.priv.Public() }

// Weak reports whether the key is RSA below RecommendedRSABits: it signs,
// but the operator should be warned (RFC 8301 3.2).
func (k *Key) Weak() bool { return k.Algorithm == AlgRSASHA256 && k.Bits < RecommendedRSABits }

// String names the key without its secret, for logs.
func (k *Key) String() string {
	return fmt.Sprintf("%s._domainkey.%s (%s, %d bits)", k.Selector, k.Domain, k.Algorithm, k.Bits)
}

// GoString is String, so that %#v cannot print the private key either.
func (k *Key) GoString() string { return "signer.Key{" + k.String() + "}" }

// DNSRecord returns the owner name and the value of the TXT record that
// publishes the public key (RFC 6376 3.6.1, 3.6.2.1): for example
// "s2026._domainkey.issuer.example." and "v=DKIM1; k=rsa; p=MIIBIj...". For
// RSA, p= is the DER SubjectPublicKeyInfo in base64; for Ed25519 it is the
// raw 32-octet public key (RFC 8463 4.2).
func (k *Key) DNSRecord() (name, value string) {
	name = k.Selector + "._domainkey." + k.Domain + "."
	switch pub := k.Public().(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			panic(err) // an RSA public key always marshals
		}
		value = "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
	case ed25519.PublicKey:
		value = "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)
	}
	return name, value
}

// SplitTXT splits a TXT value into character-strings of at most 255 octets,
// the limit of one string in a TXT record (RFC 1035 3.3, 3.3.14). A DKIM
// verifier concatenates them again (RFC 6376 3.6.2.2).
func SplitTXT(value string) []string {
	var parts []string
	for len(value) > 255 {
		parts = append(parts, value[:255])
		value = value[255:]
	}
	return append(parts, value)
}

// ZoneRecord returns the TXT record as a zone-file line (RFC 1035 5.1),
// with the value split by SplitTXT:
//
//	s2026._domainkey.issuer.example. IN TXT "v=DKIM1; k=rsa; p=MIIB..." "...AQAB"
func (k *Key) ZoneRecord() string { return ZoneTXT(k.DNSRecord()) }

// ZoneTXT is a TXT record as a zone-file line, its value split by
// SplitTXT and quoted (RFC 1035 5.1).
func ZoneTXT(name, value string) string {
	var b strings.Builder
	b.WriteString(name + " IN TXT")
	for _, s := range SplitTXT(value) {
		s = strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s)
		b.WriteString(` "` + s + `"`)
	}
	return b.String()
}

// WriteFiles writes the private key as PKCS#8 PEM to
// dir/<selector>._domainkey.<domain>.pem (mode 0600) and the DNS record to
// dir/<selector>._domainkey.<domain>.txt (mode 0644: a comment and the
// ZoneRecord line). It never overwrites: replacing a key whose record is
// already published would break every signature until DNS follows.
func (k *Key) WriteFiles(dir string) (keyPath, recordPath string, err error) {
	base := filepath.Join(dir, k.Selector+"._domainkey."+k.Domain)
	keyPath, recordPath = base+".pem", base+".txt"
	pemBytes, err := k.marshalPEM()
	if err != nil {
		return "", "", err
	}
	name, _ := k.DNSRecord()
	record := fmt.Sprintf("; DKIM public key for d=%s s=%s (%s, %d bits).\n"+
		"; Publish as one TXT record at %s; the quoted strings are one value (RFC 6376 3.6.2.2).\n%s\n",
		k.Domain, k.Selector, k.Algorithm, k.Bits, name, k.ZoneRecord())
	for _, p := range []string{keyPath, recordPath} {
		if _, err := os.Lstat(p); err == nil {
			return "", "", fmt.Errorf("dkim key: %s exists; not overwriting", p)
		}
	}
	if err := writeNew(keyPath, pemBytes, 0o600); err != nil {
		return "", "", err
	}
	if err := writeNew(recordPath, []byte(record), 0o644); err != nil {
		os.Remove(keyPath)
		return "", "", err
	}
	return keyPath, recordPath, nil
}

// writeNew creates path, failing if it exists, and syncs it.
func writeNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("dkim key: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("dkim key: %w", err)
	}
	return nil
}
