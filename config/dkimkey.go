package config

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// RSA key sizes for DKIM. RFC 8301 3.2: signers MUST use at least 1024
// bits and SHOULD use at least 2048; verifiers MUST handle 1024 to 4096
// bits, so larger keys would not verify everywhere.
const (
	MinRSABits         = 1024
	RecommendedRSABits = 2048
	MaxRSABits         = 4096
)

// ParseDKIMKey reads the first private key of PEM data: PKCS#8 ("PRIVATE
// KEY") RSA or Ed25519, or PKCS#1 ("RSA PRIVATE KEY") RSA, of a size every
// verifier handles. Blocks that are not private keys (a certificate, EC
// parameters) are skipped. It is the one rule: check-config judges
// dkim[].key_file with it, and the signer loads keys with it.
func ParseDKIMKey(pemData []byte) (crypto.Signer, error) {
	for rest := pemData; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("no PEM private key found (expected an RSA or Ed25519 private key)")
		}
		if _, encrypted := block.Headers["Proc-Type"]; encrypted {
			return nil, errors.New("encrypted PEM keys are not supported")
		}
		var parsed any
		var err error
		switch block.Type {
		case "PRIVATE KEY":
			parsed, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			parsed, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("encrypted PKCS#8 keys are not supported; decrypt it (openssl pkcs8)")
		case "EC PRIVATE KEY", "OPENSSH PRIVATE KEY":
			return nil, fmt.Errorf("%s is not usable for DKIM, which signs with RSA or Ed25519 only (RFC 8463)", block.Type)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("cannot parse the private key: %w", err)
		}
		return dkimSigner(parsed)
	}
}

func dkimSigner(parsed any) (crypto.Signer, error) {
	switch priv := parsed.(type) {
	case *rsa.PrivateKey:
		bits := priv.N.BitLen()
		if bits < MinRSABits {
			return nil, fmt.Errorf("RSA key of %d bits, need at least %d (RFC 8301 3.2; receivers ignore shorter keys; use %d)", bits, MinRSABits, RecommendedRSABits)
		}
		if bits > MaxRSABits {
			return nil, fmt.Errorf("RSA key of %d bits; verifiers need only handle up to %d (RFC 8301 3.2)", bits, MaxRSABits)
		}
		if err := priv.Validate(); err != nil {
			return nil, err
		}
		return priv, nil
	case ed25519.PrivateKey:
		return priv, nil
	}
	return nil, fmt.Errorf("%T is not usable for DKIM, which signs with RSA or Ed25519 only (RFC 8463)", parsed)
}
