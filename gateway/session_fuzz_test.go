package gateway

import (
	"strings"
	"testing"
)

func FuzzCheckLineEndings(f *testing.F) {
	for _, s := range []string{"a\r\nb\r\n", "a\nb", "a\rb", "\r\n.\r\n", "x\x00"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		err := checkLineEndings(b)
		clean := !strings.Contains(strings.ReplaceAll(string(b), "\r\n", ""), "\r") &&
			!strings.Contains(strings.ReplaceAll(string(b), "\r\n", ""), "\n") && !strings.Contains(string(b), "\x00")
		if (err == nil) != clean {
			t.Fatalf("checkLineEndings(%q) = %v, clean %v", b, err, clean)
		}
	})
}
