package signer

import (
	"bytes"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certgate/certgate/mimeedit"
	"github.com/certgate/certgate/sim"
	"github.com/emersion/go-msgauth/dkim"
)

// samples returns the sample mails prepared as the gateway prepares them
// before signing: long lines re-encoded; in name order.
func samples(tb testing.TB) []sim.Sample {
	tb.Helper()
	out := sim.SampleMails()
	for i := range out {
		var err error
		if out[i].Data, _, err = mimeedit.FixLongLines(out[i].Data); err != nil {
			tb.Fatal(err)
		}
	}
	return out
}

// records maps DNS names, without the final dot, to TXT values.
func records(keys ...*Key) map[string]string {
	m := map[string]string{}
	for _, k := range keys {
		name, value := k.DNSRecord()
		m[strings.TrimSuffix(name, ".")] = value
	}
	return m
}

func verify(signed []byte, keys ...*Key) ([]*dkim.Verification, error) {
	recs := records(keys...)
	return dkim.VerifyWithOptions(bytes.NewReader(signed), &dkim.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) {
			if v, ok := recs[name]; ok {
				return []string{v}, nil
			}
			return nil, fmt.Errorf("no TXT record for %s", name)
		},
	})
}

// mustVerify checks that signed has want signatures and that all verify.
func mustVerify(t *testing.T, signed []byte, want int, keys ...*Key) []*dkim.Verification {
	t.Helper()
	vs, err := verify(signed, keys...)
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != want {
		t.Fatalf("%d signatures, want %d", len(vs), want)
	}
	for i, v := range vs {
		if v.Err != nil {
			t.Errorf("signature %d (d=%s): %v", i, v.Domain, v.Err)
		}
	}
	return vs
}

// mustFail checks that no signature of signed verifies.
func mustFail(t *testing.T, what string, signed []byte, keys ...*Key) {
	t.Helper()
	vs, err := verify(signed, keys...)
	if err != nil {
		return
	}
	for i, v := range vs {
		if v.Err == nil {
			t.Errorf("%s: signature %d still verifies", what, i)
		}
	}
}

func sign(t *testing.T, msg []byte, keys ...*Key) []byte {
	t.Helper()
	sigs, err := New(keys).Sign(msg, keys)
	if err != nil {
		t.Fatal(err)
	}
	return append(sigs, msg...)
}

func TestSignSamples(t *testing.T) {
	rsaKey, edKey := testKeys(t)
	for _, s := range samples(t) {
		for name, keys := range map[string][]*Key{"rsa": {rsaKey}, "ed25519": {edKey}, "both": {rsaKey, edKey}} {
			t.Run(s.Name+"/"+name, func(t *testing.T) {
				before := time.Now().Unix()
				sigs, err := New(keys).Sign(s.Data, keys)
				if err != nil {
					t.Fatal(err)
				}
				signed := append(sigs, s.Data...)
				vs := mustVerify(t, signed, len(keys), keys...)
				for i, v := range vs {
					if v.Domain != "ca.example" || v.Time.Unix() < before || v.Time.Unix() > time.Now().Unix() {
						t.Errorf("signature %d: d=%s t=%v", i, v.Domain, v.Time)
					}
					if n := countName(v.HeaderKeys, "from"); n != 2 {
						t.Errorf("From listed %d times in h=, want 2 (oversigned)", n)
					}
					for _, h := range v.HeaderKeys {
						if strings.HasPrefix(h, "x-certgate-") {
							t.Errorf("h= has %s", h)
						}
					}
				}
				checkSignatureFields(t, sigs, keys)
			})
		}
	}
}

// TestIndependentVerifier checks the signatures with python3-dkim (dkimpy),
// which shares no code with go-msgauth.
func TestIndependentVerifier(t *testing.T) {
	rsaKey, edKey := testKeys(t)
	for _, s := range samples(t) {
		t.Run(s.Name, func(t *testing.T) {
			independentVerify(t, sign(t, s.Data, rsaKey, edKey), rsaKey, edKey)
		})
	}
	t.Run("tampered", func(t *testing.T) {
		signed := sign(t, samples(t)[1].Data, rsaKey, edKey)
		tampered := bytes.Replace(signed, []byte("vendredi"), []byte("vendredj"), 1)
		if bytes.Equal(tampered, signed) {
			t.Fatal("sample 02 changed")
		}
		out, err := runPythonDKIM(t, tampered, rsaKey, edKey)
		if err == nil || strings.Contains(out, ": pass") {
			t.Errorf("python3-dkim accepted a tampered body:\n%s", out)
		}
	})
}

func countName(list []string, name string) int {
	n := 0
	for _, s := range list {
		if strings.EqualFold(s, name) {
			n++
		}
	}
	return n
}

// checkSignatureFields checks the form of Sign's output: one field per key
// in key order, relaxed/relaxed, lines within limits and CRLF-terminated.
func checkSignatureFields(t *testing.T, sigs []byte, keys []*Key) {
	t.Helper()
	if !bytes.HasSuffix(sigs, []byte("\r\n")) {
		t.Error("no final CRLF")
	}
	for _, line := range strings.Split(strings.TrimSuffix(string(sigs), "\r\n"), "\r\n") {
		if len(line) > 998 {
			t.Errorf("line of %d octets", len(line))
		}
	}
	fields := regexp.MustCompile(`(?m)^DKIM-Signature:`).FindAllIndex(sigs, -1)
	if len(fields) != len(keys) {
		t.Fatalf("%d DKIM-Signature fields, want %d", len(fields), len(keys))
	}
	unfolded := strings.ReplaceAll(string(sigs), "\r\n ", " ")
	algs := regexp.MustCompile(`a=([a-z0-9-]+);`).FindAllStringSubmatch(unfolded, -1)
	for i, k := range keys {
		if algs[i][1] != k.Algorithm {
			t.Errorf("field %d has a=%s, want %s", i, algs[i][1], k.Algorithm)
		}
	}
	if n := strings.Count(unfolded, "c=relaxed/relaxed;"); n != len(keys) {
		t.Errorf("c=relaxed/relaxed in %d fields", n)
	}
}

func TestSignTamperedBody(t *testing.T) {
	rsaKey, edKey := testKeys(t)
	msg := samples(t)[0].Data
	signed := sign(t, msg, rsaKey, edKey)
	tampered := bytes.Replace(signed, []byte("pedido=3D88412"), []byte("pedido=3D88413"), 1)
	if bytes.Equal(tampered, signed) {
		t.Fatal("sample 01 changed")
	}
	mustFail(t, "tampered body", tampered, rsaKey, edKey)

	// Relaxed canonicalization: whitespace and folding changes still verify.
	refolded := bytes.Replace(signed, []byte("Subject: Descargue su certificado"), []byte("Subject:  Descargue\r\n\tsu certificado"), 1)
	refolded = bytes.Replace(refolded, []byte("Estimado Juan"), []byte("Estimado  Juan"), 1)
	mustVerify(t, refolded, 2, rsaKey, edKey)
}

func TestOversigning(t *testing.T) {
	rsaKey, edKey := testKeys(t)
	msg := samples(t)[0].Data
	signed := sign(t, msg, rsaKey, edKey)
	sigEnd := bytes.Index(signed, []byte("From: "))
	for name, add := range map[string]string{
		"From":     "From: Security Team <security@attacker.example>\r\n",
		"Subject":  "Subject: Urgent: renew now\r\n",
		"Reply-To": "Reply-To: <collect@attacker.example>\r\n", // absent in the sample
		"Cc":       "Cc: <copy@attacker.example>\r\n",          // absent in the sample
	} {
		// Added on top (where some readers look) and at the bottom.
		top := append(append(append([]byte(nil), signed[:sigEnd]...), add...), signed[sigEnd:]...)
		mustFail(t, name+" added on top", top, rsaKey, edKey)
		hdrEnd := bytes.Index(signed, []byte("\r\n\r\n")) + 2
		bottom := append(append(append([]byte(nil), signed[:hdrEnd]...), add...), signed[hdrEnd:]...)
		mustFail(t, name+" added at the bottom", bottom, rsaKey, edKey)
	}

	// Without oversigning the same attack goes through: the test can tell.
	var b bytes.Buffer
	err := dkim.Sign(&b, bytes.NewReader(msg), &dkim.SignOptions{
		Domain: rsaKey.Domain, Selector: rsaKey.Selector, Signer: rsaKey.signer, Hash: crypto.SHA256,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed,
		HeaderKeys: []string{"from", "subject"},
	})
	if err != nil {
		t.Fatal(err)
	}
	plain := b.Bytes()
	at := bytes.Index(plain, []byte("From: "))
	evil := append(append(append([]byte(nil), plain[:at]...), "From: <security@attacker.example>\r\n"...), plain[at:]...)
	mustVerify(t, evil, 1, rsaKey)
}

func TestControlHeadersUnsigned(t *testing.T) {
	rsaKey, edKey := testKeys(t)
	var msg []byte
	for _, s := range samples(t) {
		if strings.HasPrefix(s.Name, "04") {
			msg = s.Data
		}
	}
	signed := sign(t, msg, rsaKey, edKey)
	// Per-recipient fields added after signing, and control fields
	// removed, leave the signatures valid.
	hdrEnd := bytes.Index(signed, []byte("\r\n\r\n")) + 2
	added := append(append(append([]byte(nil), signed[:hdrEnd]...), "X-Certgate-Track: r-0001\r\n"...), signed[hdrEnd:]...)
	mustVerify(t, added, 2, rsaKey, edKey)
	stripped := bytes.Replace(signed, []byte("X-Certgate-Class: transactional\r\n"), nil, 1)
	mustVerify(t, stripped, 2, rsaKey, edKey)
}

func TestHeaderList(t *testing.T) {
	h, err := mimeedit.ParseHeader([]byte("From: a@ca.example\r\nTo: b@x.example\r\nTo: c@x.example\r\nSubject: s\r\n" +
		"List-Unsubscribe: <https://ca.example/u>\r\nX-Certgate-Class: bulk\r\nReceived: x\r\n\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(headerList(h), ":")
	want := "from:from:reply-to:to:to:to:cc:subject:subject:date:message-id:mime-version:content-type:content-transfer-encoding:list-unsubscribe:list-unsubscribe"
	if got != want {
		t.Errorf("h=\n%s\nwant\n%s", got, want)
	}
}

func TestSignErrors(t *testing.T) {
	rsaKey, _ := testKeys(t)
	s := New([]*Key{rsaKey})
	good := "From: a@ca.example\r\nSubject: x\r\n\r\nbody\r\n"
	cases := []struct {
		name string
		msg  string
		keys []*Key
		want error
	}{
		{"no keys", good, nil, ErrNoKeys},
		{"LF only", strings.ReplaceAll(good, "\r\n", "\n"), []*Key{rsaKey}, ErrNotCRLF},
		{"bare CR", good + "x\ry\r\n", []*Key{rsaKey}, ErrNotCRLF},
		{"long line", good + strings.Repeat("x", 999) + "\r\n", []*Key{rsaKey}, ErrLongLine},
		{"no From", "Subject: x\r\n\r\nbody\r\n", []*Key{rsaKey}, ErrFrom},
		{"two From", "From: a@ca.example\r\nFrom: b@ca.example\r\n\r\nbody\r\n", []*Key{rsaKey}, ErrFrom},
	}
	for _, c := range cases {
		if _, err := s.Sign([]byte(c.msg), c.keys); !errors.Is(err, c.want) {
			t.Errorf("%s: err %v, want %v", c.name, err, c.want)
		}
	}
	for _, bad := range []string{"From: a@ca.example\r\nSubject: x\r\n", "From a\r\n\r\nbody"} {
		if _, err := s.Sign([]byte(bad), []*Key{rsaKey}); err == nil {
			t.Errorf("Sign(%q) succeeded", bad)
		}
	}
	// A message with only a header and the empty line is fine.
	if _, err := s.Sign([]byte("From: a@ca.example\r\n\r\n"), []*Key{rsaKey}); err != nil {
		t.Error(err)
	}
}

func TestKeysFor(t *testing.T) {
	mk := func(alg, domain string) *Key {
		return &Key{Domain: domain, Selector: "s", Algorithm: alg}
	}
	var (
		rsaOrg    = mk(AlgRSASHA256, "ca.example")
		edOrg     = mk(AlgEd25519SHA256, "ca.example")
		rsaMail   = mk(AlgRSASHA256, "mail.ca.example")
		rsaDeep   = mk(AlgRSASHA256, "x.mail.ca.example")
		edSibling = mk(AlgEd25519SHA256, "news.ca.example")
		rsaUK     = mk(AlgRSASHA256, "issuer.co.uk")
		rsaSuffix = mk(AlgRSASHA256, "co.uk")
		rsaOther  = mk(AlgRSASHA256, "certs.example")
	)
	s := New([]*Key{rsaOrg, edOrg, rsaMail, rsaDeep, edSibling, rsaUK, rsaSuffix, rsaOther})
	cases := []struct {
		from string
		want []*Key
	}{
		{"ca.example", []*Key{rsaOrg, edOrg}},             // exact
		{"CA.Example.", []*Key{rsaOrg, edOrg}},            // case, final dot
		{"mail.ca.example", []*Key{rsaMail, edOrg}},       // exact RSA, parent Ed25519
		{"a.b.x.mail.ca.example", []*Key{rsaDeep, edOrg}}, // closest parent
		{"other.ca.example", []*Key{rsaOrg, edOrg}},       // subdomain: parent keys
		{"news.ca.example", []*Key{rsaOrg, edSibling}},    // exact Ed25519, parent RSA
		{"issuer.co.uk", []*Key{rsaUK}},                   // org domain under a public suffix
		{"shop.issuer.co.uk", []*Key{rsaUK}},              //
		{"co.uk", nil},                                    // a public suffix aligns with nothing
		{"other.co.uk", nil},                              // same suffix, other organization
		{"unrelated.example", nil},                        // unrelated
		{"ca.example.evil.example", nil},                  // look-alike
		{"", nil},                                         // no domain
		{"..", nil},                                       // garbage
	}
	for _, c := range cases {
		got := s.KeysFor(c.from, nil)
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("KeysFor(%q) = %v, want %v", c.from, got, c.want)
		}
	}
	// A key only for a child domain still aligns (relaxed), after parents.
	s = New([]*Key{mk(AlgRSASHA256, "mail.certs.example")})
	if got := s.KeysFor("certs.example", nil); len(got) != 1 {
		t.Errorf("child key: %v", got)
	}
}

// independentVerify checks that every signature of signed verifies with
// python3-dkim.
func independentVerify(t *testing.T, signed []byte, keys ...*Key) {
	t.Helper()
	out, err := runPythonDKIM(t, signed, keys...)
	if err != nil {
		t.Errorf("python3-dkim: %v\n%s", err, out)
		return
	}
	if n := strings.Count(out, ": pass"); n != len(keys) {
		t.Errorf("python3-dkim passed %d of %d:\n%s", n, len(keys), out)
	}
}

// runPythonDKIM runs testdata/dkimverify.py on signed, with the keys' DNS
// records given to it instead of DNS. Without python3-dkim the test is
// skipped, unless CERTGATE_E2E=1 demands the independent verifier.
func runPythonDKIM(t *testing.T, signed []byte, keys ...*Key) (string, error) {
	t.Helper()
	py := pythonWithDKIM()
	if py == "" {
		const msg = "independent DKIM verifier: no python3 with python3-dkim and python3-nacl (apt-get install python3-dkim)"
		if os.Getenv("CERTGATE_E2E") == "1" {
			t.Fatal(msg + "; CERTGATE_E2E=1 requires it")
		}
		t.Skip(msg + "; skipping")
	}
	dir := t.TempDir()
	msgPath, recPath := filepath.Join(dir, "msg.eml"), filepath.Join(dir, "records.json")
	recs := map[string]string{}
	for name, value := range records(keys...) {
		recs[name+"."] = value
	}
	js, err := json.Marshal(recs)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(msgPath, signed, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(recPath, js, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(py, "testdata/dkimverify.py", msgPath, recPath).CombinedOutput()
	return string(out), err
}

var (
	pythonOnce sync.Once
	pythonPath string
)

// pythonWithDKIM returns a python3 that can import dkim and nacl (for
// Ed25519), or "". The Debian package installs for /usr/bin/python3, which
// may not be the python3 first on PATH; CERTGATE_PYTHON names another.
func pythonWithDKIM() string {
	pythonOnce.Do(func() {
		candidates := []string{"python3", "/usr/bin/python3"}
		if py := os.Getenv("CERTGATE_PYTHON"); py != "" {
			candidates = []string{py}
		}
		for _, py := range candidates {
			if exec.Command(py, "-c", "import dkim, nacl").Run() == nil {
				pythonPath = py
				return
			}
		}
	})
	return pythonPath
}

// message20K returns a realistic message of about 20 KB.
func message20K(tb testing.TB) []byte {
	var b bytes.Buffer
	b.WriteString("From: Certificados <certificados@ca.example>\r\nTo: juan@empresa.example\r\n" +
		"Subject: Su certificado\r\nDate: Fri, 20 Nov 2026 09:30:00 +0000\r\nMessage-ID: <bench@ca.example>\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n")
	for i := 0; b.Len() < 20*1024; i++ {
		b.WriteString("L=C3=ADnea " + strconv.Itoa(i) + ": su certificado de firma digital est=C3=A1 listo para descargar.\r\n")
	}
	return b.Bytes()
}

func benchmarkSign(b *testing.B, k *Key) {
	msg := message20K(b)
	s := New([]*Key{k})
	keys := []*Key{k}
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Sign(msg, keys); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSignRSA2048(b *testing.B) {
	rsaKey, _ := testKeys(b)
	benchmarkSign(b, rsaKey)
}

func BenchmarkSignEd25519(b *testing.B) {
	_, edKey := testKeys(b)
	benchmarkSign(b, edKey)
}

func BenchmarkSignBoth(b *testing.B) {
	rsaKey, edKey := testKeys(b)
	msg := message20K(b)
	keys := []*Key{rsaKey, edKey}
	s := New(keys)
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if _, err := s.Sign(msg, keys); err != nil {
			b.Fatal(err)
		}
	}
}
