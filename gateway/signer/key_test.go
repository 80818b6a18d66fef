package signer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var (
	keysOnce        sync.Once
	testRSA, testEd *Key
	testRSAPEM      []byte
	testEdPEM       []byte
	testKeysErr     error
)

// testKeys returns one RSA-2048 and one Ed25519 key for ca.example,
// generated once per test binary.
func testKeys(tb testing.TB) (rsaKey, edKey *Key) {
	tb.Helper()
	keysOnce.Do(func() {
		testRSA, testRSAPEM, testKeysErr = Generate("rsa2048", "ca.example", "rsa2026")
		if testKeysErr == nil {
			testEd, testEdPEM, testKeysErr = Generate("ed25519", "ca.example", "ed2026")
		}
	})
	if testKeysErr != nil {
		tb.Fatal(testKeysErr)
	}
	return testRSA, testEd
}

func writeTemp(t *testing.T, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadKey(t *testing.T) {
	rsaKey, _ := testKeys(t)
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey.signer.(*rsa.PrivateKey))})
	cert := "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
	for name, c := range map[string]struct {
		pem  []byte
		alg  string
		bits int
	}{
		"pkcs8 rsa":              {testRSAPEM, AlgRSASHA256, 2048},
		"pkcs1 rsa":              {pkcs1, AlgRSASHA256, 2048},
		"pkcs8 ed25519":          {testEdPEM, AlgEd25519SHA256, 256},
		"after other PEM blocks": {append([]byte(cert), testEdPEM...), AlgEd25519SHA256, 256},
	} {
		k, err := LoadKey("CA.Example.", "Sel1", writeTemp(t, c.pem))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if k.Domain != "ca.example" || k.Selector != "sel1" || k.Algorithm != c.alg || k.Bits != c.bits || k.Weak() {
			t.Errorf("%s: %+v", name, k)
		}
	}
}

func TestLoadKeyErrors(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKCS8PrivateKey(ec)
	small, err := rsa.GenerateKey(rand.Reader, 512) // allowed by the go:debug line in small_key_test.go
	if err != nil {
		t.Fatal(err)
	}
	smallDER, _ := x509.MarshalPKCS8PrivateKey(small)
	block := func(typ string, b []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}) }
	cases := map[string]struct {
		pem  []byte
		want string
	}{
		"empty":        {nil, "no PEM private key"},
		"not PEM":      {[]byte("hello"), "no PEM private key"},
		"garbage DER":  {block("PRIVATE KEY", []byte("xx")), "dkim key:"},
		"ecdsa":        {block("PRIVATE KEY", ecDER), "RSA or Ed25519 only"},
		"sec1 ecdsa":   {block("EC PRIVATE KEY", []byte("x")), "RSA or Ed25519 only"},
		"encrypted":    {block("ENCRYPTED PRIVATE KEY", []byte("x")), "encrypted"},
		"512-bit RSA":  {block("PRIVATE KEY", smallDER), "at least 1024"},
		"legacy crypt": {pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: []byte("x")}), "encrypted"},
	}
	for name, c := range cases {
		_, err := ParseKey("ca.example", "s1", c.pem)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want %q", name, err, c.want)
		}
	}
	for _, names := range [][2]string{{"", "s"}, {"example", "s"}, {"ca.example", ""}, {"ca..example", "s"}, {"-ca.example", "s"}, {"ca.example", "s_1"}, {"ca.example", "a b"}, {"ça.example", "s"}} {
		if _, err := ParseKey(names[0], names[1], testEdPEM); err == nil {
			t.Errorf("ParseKey(%q, %q) accepted", names[0], names[1])
		}
	}
	if _, err := LoadKey("ca.example", "s", filepath.Join(t.TempDir(), "missing.pem")); err == nil {
		t.Error("missing file accepted")
	}
}

func TestWeak1024(t *testing.T) {
	k1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(k1024)
	k, err := ParseKey("ca.example", "old", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	if err != nil || !k.Weak() || k.Bits != 1024 {
		t.Fatalf("%v %v", k, err)
	}
}

func TestGenerateErrors(t *testing.T) {
	if _, _, err := Generate("rsa1024", "ca.example", "s"); err == nil {
		t.Error("rsa1024 accepted")
	}
	if _, _, err := Generate("ed25519", "not a domain", "s"); err == nil {
		t.Error("bad domain accepted")
	}
}

func TestDNSRecord(t *testing.T) {
	rsaKey, edKey := testKeys(t)
	name, value := rsaKey.DNSRecord()
	if name != "rsa2026._domainkey.ca.example." || !strings.HasPrefix(value, "v=DKIM1; k=rsa; p=MIIBIjAN") {
		t.Errorf("%s %s", name, value)
	}
	name, value = edKey.DNSRecord()
	if name != "ed2026._domainkey.ca.example." || !strings.HasPrefix(value, "v=DKIM1; k=ed25519; p=") || len(value) != len("v=DKIM1; k=ed25519; p=")+44 {
		t.Errorf("%s %s", name, value)
	}

	_, rsaValue := rsaKey.DNSRecord()
	parts := SplitTXT(rsaValue)
	if len(parts) != 2 || len(parts[0]) != 255 || strings.Join(parts, "") != rsaValue {
		t.Errorf("SplitTXT: %d parts", len(parts))
	}
	if got := SplitTXT("short"); len(got) != 1 || got[0] != "short" {
		t.Errorf("SplitTXT(short) = %q", got)
	}
	if got := SplitTXT(strings.Repeat("a", 510)); len(got) != 2 || len(got[1]) != 255 {
		t.Errorf("SplitTXT(510) = %d parts", len(got))
	}
	zone := rsaKey.ZoneRecord()
	want := fmt.Sprintf("rsa2026._domainkey.ca.example. IN TXT %q %q", parts[0], parts[1])
	if zone != want {
		t.Errorf("ZoneRecord:\n%s\nwant\n%s", zone, want)
	}
}

func TestWriteFiles(t *testing.T) {
	rsaKey, _ := testKeys(t)
	dir := t.TempDir()
	keyPath, recPath, err := rsaKey.WriteFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	if keyPath != filepath.Join(dir, "rsa2026._domainkey.ca.example.pem") || recPath != filepath.Join(dir, "rsa2026._domainkey.ca.example.txt") {
		t.Errorf("paths %s %s", keyPath, recPath)
	}
	if fi, err := os.Stat(keyPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode: %v %v", fi.Mode(), err)
	}
	again, err := LoadKey("ca.example", "rsa2026", keyPath)
	if err != nil || !again.Public().(*rsa.PublicKey).Equal(rsaKey.Public()) {
		t.Errorf("reloaded key: %v", err)
	}
	rec, _ := os.ReadFile(recPath)
	if !strings.Contains(string(rec), rsaKey.ZoneRecord()+"\n") {
		t.Errorf("record file:\n%s", rec)
	}
	if _, _, err := rsaKey.WriteFiles(dir); err == nil || !strings.Contains(err.Error(), "not overwriting") {
		t.Errorf("second WriteFiles: %v", err)
	}
}

func TestKeyNeverPrintsSecret(t *testing.T) {
	rsaKey, edKey := testKeys(t)
	for _, k := range []*Key{rsaKey, edKey} {
		for _, f := range []string{"%v", "%+v", "%#v", "%s"} {
			s := fmt.Sprintf(f, k)
			if !strings.Contains(s, "._domainkey.ca.example") || len(s) > 120 {
				t.Errorf("%s printed %q", f, s)
			}
		}
	}
}
