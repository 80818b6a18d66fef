package sim

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Certificate is a throwaway self-signed certificate for TLS on loopback in
// the demo and the tests.
type Certificate struct {
	CertPEM, KeyPEM []byte
	TLS             tls.Certificate
	Roots           *x509.CertPool // trusts exactly this certificate
}

// SelfSigned makes an ECDSA P-256 certificate, valid for a day, for the
// given host names and IP addresses. It is its own CA, so Roots verifies it.
func SelfSigned(hosts ...string) (*Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	if len(hosts) > 0 {
		tmpl.Subject = pkix.Name{CommonName: hosts[0]}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	c := &Certificate{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}),
		Roots:   x509.NewCertPool(),
	}
	if c.TLS, err = tls.X509KeyPair(c.CertPEM, c.KeyPEM); err != nil {
		return nil, err
	}
	c.Roots.AppendCertsFromPEM(c.CertPEM)
	return c, nil
}

// ServerConfig offers the certificate.
func (c *Certificate) ServerConfig() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{c.TLS}, MinVersion: tls.VersionTLS12}
}

// ClientConfig trusts only this certificate, for serverName.
func (c *Certificate) ClientConfig(serverName string) *tls.Config {
	return &tls.Config{RootCAs: c.Roots, ServerName: serverName, MinVersion: tls.VersionTLS12}
}

// WriteFiles writes dir/name.crt and dir/name.key (mode 0600).
func (c *Certificate) WriteFiles(dir, name string) (certFile, keyFile string, err error) {
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, c.CertPEM, 0o644); err != nil {
		return "", "", err
	}
	return certFile, keyFile, os.WriteFile(keyFile, c.KeyPEM, 0o600)
}

// TLSPair makes a fresh certificate for host and returns a server
// configuration with it and a client configuration that trusts exactly
// it, for tests. It panics if no certificate can be made.
func TLSPair(host string) (server, client *tls.Config) {
	c, err := SelfSigned(host)
	if err != nil {
		panic("sim: " + err.Error())
	}
	return c.ServerConfig(), c.ClientConfig(host)
}
