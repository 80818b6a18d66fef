package signer

import (
	"bytes"
	"testing"

	"github.com/certgate/certgate/mimeedit"
)

// FuzzSign signs arbitrary messages (with the Ed25519 key: RSA would spend
// the run in the private key operation). Sign refuses what it documents it
// refuses (bare CR or LF, lines over 998 octets, not exactly one From, no
// empty line after the header); whatever it signs gets one DKIM-Signature
// field that is itself fit for the wire and verifies over the message, and
// the signature breaks when a From or Reply-To field is added anywhere in
// the header, or a line to the body.
func FuzzSign(f *testing.F) {
	for _, s := range samples(f) {
		f.Add(s.Data)
	}
	f.Add([]byte("From: a@ca.example\r\n\r\n"))
	f.Add([]byte("From: a@ca.example\r\nFrom: b@ca.example\r\n\r\nx"))
	f.Add([]byte("fRoM :a@ca.example\r\nTo:\r\n \r\n\tb\r\n\r\n \t\r\n\r\n"))
	_, edKey := testKeys(f)
	f.Fuzz(func(t *testing.T, msg []byte) {
		sig, err := New([]*Key{edKey}).Sign(msg, []*Key{edKey})
		header, _, splitErr := mimeedit.SplitHeader(msg)
		var h *mimeedit.Header
		if splitErr == nil {
			h, splitErr = mimeedit.ParseHeader(header)
		}
		mustRefuse := checkLines(msg) != nil || splitErr != nil || h.Count("From") != 1 ||
			!bytes.HasSuffix(header, []byte("\r\n\r\n")) && !bytes.Equal(header, []byte("\r\n"))
		if err != nil {
			if !mustRefuse {
				t.Fatalf("refused a signable message: %v", err)
			}
			return
		}
		if mustRefuse {
			t.Fatal("signed a message it must refuse")
		}
		if checkLines(sig) != nil || !bytes.HasSuffix(sig, []byte("\r\n")) || !bytes.HasPrefix(sig, []byte("DKIM-Signature: ")) ||
			bytes.Count(sig, []byte("\r\nDKIM-Signature:")) != 0 {
			t.Fatalf("signature field unfit for the wire: %q", sig)
		}
		signed := append(append([]byte(nil), sig...), msg...)
		vs, err := verify(signed, edKey)
		if err != nil || len(vs) != 1 || vs[0].Err != nil {
			t.Fatalf("does not verify: %v %v\n%q", err, vs, signed)
		}
		hdrEnd := len(sig) + len(header) - 2 // before the empty line
		for _, add := range []string{"From: <security@attacker.example>\r\n", "Reply-To: <collect@attacker.example>\r\n"} {
			for _, at := range []int{len(sig), hdrEnd} {
				evil := append(append(append([]byte(nil), signed[:at]...), add...), signed[at:]...)
				mustNotVerify(t, evil, edKey)
			}
		}
		mustNotVerify(t, append(append([]byte(nil), signed...), "\r\nAlso: https://attacker.example/\r\n"...), edKey)
	})
}

func mustNotVerify(t *testing.T, tampered []byte, k *Key) {
	t.Helper()
	vs, err := verify(tampered, k)
	if err == nil && len(vs) == 1 && vs[0].Err == nil {
		t.Fatalf("tampered message verifies:\n%q", tampered)
	}
}
