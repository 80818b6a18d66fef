package mailaddr

import "testing"

func TestRules(t *testing.T) {
	for _, c := range []struct {
		f    func(string) bool
		s    string
		want bool
	}{
		{DotAtom, "ana.perez+cert", true},
		{DotAtom, "o'brien", true},
		{DotAtom, ".ana", false},
		{DotAtom, "ana..perez", false},
		{DotAtom, "ana.", false},
		{DotAtom, "a%b", false},
		{DotAtom, "a!b", false},
		{DotAtom, "josé", false},
		{DotAtom, string(make([]byte, 65)), false},
		{Domain, "example.com", true},
		{Domain, "xn--and-6ma2c.example", true},
		{Domain, "localhost", false},
		{Domain, "Example.com", false},
		{Domain, "-a.example", false},
		{Domain, "a..example", false},
		{Domain, "[192.0.2.1]", false},
		{DNSName, "s2026", true},
	} {
		if got := c.f(c.s); got != c.want {
			t.Errorf("%q: got %v, want %v", c.s, got, c.want)
		}
	}
}
