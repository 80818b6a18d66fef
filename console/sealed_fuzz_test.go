package console

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/certgate/certgate/clock"
)

// FuzzOpenSealed: whatever a browser sends as the session cookie, the
// opener never panics, and opens only the cookies sealed with its key,
// as they were sealed: never one from another key, and never a changed
// one (the encoding is strict, so one sealing has one spelling).
func FuzzOpenSealed(f *testing.F) {
	clk := clock.NewFake(time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC))
	s := newSealed([]byte(testKey), nil, clk, time.Hour, 2*time.Hour)
	other := newSealed([]byte(otherKey), nil, clk, time.Hour, 2*time.Hour)
	// The same cookies in every fuzzing process: repeatable nonces.
	s.nonces = rand.NewChaCha8([32]byte{1})
	other.nonces = rand.NewChaCha8([32]byte{2})
	sealedHere := map[string]sealed{}
	for i, name := range []string{"helpdesk", "ops", "x", "a-rather-long-token-name-of-the-issuer's-helpdesk"} {
		p := sealed{created: clk.Now(), seen: clk.Now().Add(time.Duration(i) * time.Minute), name: name}
		p.sid[0], p.tag[0] = byte(i), byte(i+1)
		v := s.seal(p)
		if got, ok := s.open(v); !ok || !samePayload(got, p) {
			f.Fatalf("a cookie sealed here opens as %+v, %v; want %+v", got, ok, p)
		}
		sealedHere[v] = p
		f.Add(v)
		f.Add(other.seal(p))
	}
	for _, v := range []string{"", "A", "AQ", "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "AAAA====", "\x00\xff"} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, value string) {
		got, ok := s.open(value)
		want, sealedByUs := sealedHere[value]
		switch {
		case ok && !sealedByUs:
			t.Fatalf("opened %q, not sealed with the key, as %+v", value, got)
		case sealedByUs && (!ok || !samePayload(got, want)):
			t.Fatalf("%q opens as %+v, %v; want %+v", value, got, ok, want)
		}
	})
}

func samePayload(a, b sealed) bool {
	return a.created.Equal(b.created) && a.seen.Equal(b.seen) && a.sid == b.sid && a.tag == b.tag && a.name == b.name
}
