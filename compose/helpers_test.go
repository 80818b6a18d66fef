package compose

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"io"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-message/mail"
)

// testChain is a CA and a leaf issued by it, made once per test binary.
type testChain struct {
	caDER, leafDER []byte
	leafPEM        string
	chainPEM       string
	leafKeyPEM     string
}

var (
	chainOnce sync.Once
	chain     testChain
)

func certs(t testing.TB) testChain {
	t.Helper()
	chainOnce.Do(func() {
		caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		nb := time.Date(2026, 11, 20, 9, 30, 0, 0, time.UTC)
		ca := &x509.Certificate{
			SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "AC Raíz de Prueba"},
			NotBefore: nb, NotAfter: nb.AddDate(10, 0, 0), IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign,
		}
		caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
		if err != nil {
			panic(err)
		}
		caCert, _ := x509.ParseCertificate(caDER)
		leaf := &x509.Certificate{
			SerialNumber: big.NewInt(0x0a1b2c3d4e5f), Subject: pkix.Name{CommonName: "ana.example.com"},
			DNSNames: []string{"ana.example.com"}, NotBefore: nb, NotAfter: nb.AddDate(1, 0, 0),
		}
		leafDER, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &leafKey.PublicKey, caKey)
		if err != nil {
			panic(err)
		}
		chain = testChain{caDER: caDER, leafDER: leafDER}
		chain.leafPEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}))
		chain.chainPEM = chain.leafPEM + string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
		keyDER, _ := x509.MarshalPKCS8PrivateKey(leafKey)
		chain.leafKeyPEM = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	})
	return chain
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// part is one leaf of a parsed message, decoded.
type part struct {
	contentType string
	params      map[string]string
	filename    string
	body        []byte
}

// parseBack reads a composed message with go-message, as a receiver's
// client would, and returns its header and leaf parts.
func parseBack(t *testing.T, data []byte) (mail.Header, []part) {
	t.Helper()
	if bytes.Contains(bytes.ReplaceAll(data, []byte("\r\n"), nil), []byte("\n")) || bytes.Contains(bytes.ReplaceAll(data, []byte("\r\n"), nil), []byte("\r")) {
		t.Fatalf("message has a bare LF or CR")
	}
	for _, l := range strings.Split(string(data), "\r\n") {
		if len(l) > 998 {
			t.Fatalf("line over 998 octets: %.80q", l)
		}
	}
	r, err := mail.CreateReader(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("parse back: %v", err)
	}
	var parts []part
	for {
		p, err := r.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("next part: %v", err)
		}
		body, err := io.ReadAll(p.Body)
		if err != nil {
			t.Fatalf("read part: %v", err)
		}
		var pp part
		switch h := p.Header.(type) {
		case *mail.InlineHeader:
			pp.contentType, pp.params, _ = h.ContentType()
		case *mail.AttachmentHeader:
			pp.contentType, pp.params, _ = h.ContentType()
			pp.filename, _ = h.Filename()
		}
		if strings.HasPrefix(pp.contentType, "text/") {
			body = bytes.ReplaceAll(body, []byte("\r\n"), []byte("\n")) // as a client shows it
		}
		pp.body = body
		parts = append(parts, pp)
	}
	return r.Header, parts
}

func testTemplates(t testing.TB) *Templates {
	t.Helper()
	tt, err := NewTemplates(nil)
	if err != nil {
		t.Fatal(err)
	}
	return tt
}

var testOpts = Options{
	Tenant: "ca", DisplayName: "Certificados Digitales", SupportEmail: "mesadeayuda@ca.example",
	SupportURL: "https://ca.example/ayuda", Now: time.Date(2026, 11, 20, 9, 30, 0, 0, time.UTC),
	MessageID: "api-1@relay.ca.example",
}
