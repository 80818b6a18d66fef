package signer

import (
	"bytes"
	"os"
	"testing"
)

// openSSLKey returns the shared RSA test key loaded a second time, signing
// with OpenSSL. Without libcrypto the test is skipped, unless CERTGATE_E2E=1
// demands the OpenSSL engine the benchmarks rely on.
func openSSLKey(tb testing.TB) (goKey, sslKey *Key) {
	tb.Helper()
	goKey, _ = testKeys(tb)
	sslKey, err := ParseKey(goKey.Domain, goKey.Selector, testRSAPEM)
	if err != nil {
		tb.Fatal(err)
	}
	if err := sslKey.UseOpenSSL(); err != nil {
		if os.Getenv("CERTGATE_E2E") == "1" {
			tb.Fatalf("%v; CERTGATE_E2E=1 requires the OpenSSL engine (a cgo build and libssl3)", err)
		}
		tb.Skipf("%v; skipping", err)
	}
	if sslKey.Engine != EngineOpenSSL || goKey.Engine != EngineGo {
		tb.Fatalf("engines %q and %q", goKey.Engine, sslKey.Engine)
	}
	return goKey, sslKey
}

// PKCS#1 v1.5 signatures are deterministic, so both engines must produce
// the very same DKIM-Signature for every sample mail, and the independent
// verifier must accept OpenSSL's.
func TestOpenSSLMatchesGo(t *testing.T) {
	goKey, sslKey := openSSLKey(t)
	v, err := OpenSSLVersion()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("engine: %s", v)
	for _, s := range samples(t) {
		// t= is signed too: when a second ticks between the two calls the
		// signatures rightly differ, so sign again.
		var got, want []byte
		for range 3 {
			var err error
			if want, err = New([]*Key{goKey}).Sign(s.Data, []*Key{goKey}); err != nil {
				t.Fatalf("%s: go: %v", s.Name, err)
			}
			if got, err = New([]*Key{sslKey}).Sign(s.Data, []*Key{sslKey}); err != nil {
				t.Fatalf("%s: openssl: %v", s.Name, err)
			}
			if bytes.Equal(got, want) {
				break
			}
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: OpenSSL signature differs from Go's:\n%s\n%s", s.Name, got, want)
		}
	}
	msg := samples(t)[0].Data
	sig, err := New([]*Key{sslKey}).Sign(msg, []*Key{sslKey})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := runPythonDKIM(t, append(sig, msg...), sslKey); err != nil {
		t.Fatalf("python3-dkim: %v\n%s", err, out)
	}
}

// The public key and the PEM must stay Go's: keygen and the DNS record
// use them whatever signs.
func TestOpenSSLKeepsPublicParts(t *testing.T) {
	goKey, sslKey := openSSLKey(t)
	gp, _ := goKey.marshalPEM()
	sp, _ := sslKey.marshalPEM()
	if !bytes.Equal(gp, sp) {
		t.Error("PEM of the OpenSSL key differs")
	}
	_, g := goKey.DNSRecord()
	_, s := sslKey.DNSRecord()
	if g != s {
		t.Errorf("DNS records differ: %s / %s", g, s)
	}
	_, ed := testKeys(t)
	if err := ed.UseOpenSSL(); err != nil || ed.Engine != EngineGo {
		t.Errorf("Ed25519 key: %v, engine %s; want nil and go", err, ed.Engine)
	}
}

func BenchmarkSignRSA2048OpenSSL(b *testing.B) {
	_, k := openSSLKey(b)
	benchmarkSign(b, k)
}
