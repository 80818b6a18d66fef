package config

import "testing"

func TestParseClass(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Class
		ok   bool
	}{
		{"transactional", ClassTransactional, true},
		{"  Transactional\t", ClassTransactional, true},
		{"BULK", ClassBulk, true},
		{"bulk", ClassBulk, true},
		{"", "", false},
		{"urgent", "", false},
		{"bulk2", "", false},
	} {
		got, ok := ParseClass(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseClass(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
