package store

import (
	"testing"
	"time"
)

func TestDomainOfAndAddressKey(t *testing.T) {
	for in, want := range map[string][2]string{
		"a@Example.COM":    {"example.com", "a@example.com"},
		"Ana@Host.Org":     {"host.org", "Ana@host.org"},
		"\"a@b\"@Host.Org": {"host.org", "\"a@b\"@host.org"},
		"postmaster":       {"", "postmaster"},
	} {
		if got := DomainOf(in); got != want[0] {
			t.Errorf("DomainOf(%q) = %q, want %q", in, got, want[0])
		}
		if got := AddressKey(in); got != want[1] {
			t.Errorf("AddressKey(%q) = %q, want %q", in, got, want[1])
		}
	}
}

func TestDecideUse(t *testing.T) {
	now := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		in      Link
		ok      bool
		why     string
		state   LinkState
		uses    int
		changed bool
	}{
		{"enabled with uses left", Link{State: LinkEnabled, MaxUses: 3, Uses: 1}, true, "", LinkEnabled, 2, true},
		{"last use", Link{State: LinkEnabled, MaxUses: 3, Uses: 2}, true, "", LinkUsed, 3, true},
		{"unlimited", Link{State: LinkEnabled, Uses: 99}, true, "", LinkEnabled, 100, true},
		{"pending", Link{State: LinkPending, MaxUses: 3}, false, "pending", LinkPending, 0, false},
		{"revoked", Link{State: LinkRevoked, MaxUses: 3}, false, "revoked", LinkRevoked, 0, false},
		{"expired on use", Link{State: LinkEnabled, MaxUses: 3, ExpiresAt: now}, false, WhyExpired, LinkExpired, 0, true},
		{"pending past expiry", Link{State: LinkPending, ExpiresAt: now.Add(-time.Second)}, false, WhyExpired, LinkExpired, 0, true},
		{"revoked stays revoked past expiry", Link{State: LinkRevoked, ExpiresAt: now.Add(-time.Second)}, false, "revoked", LinkRevoked, 0, false},
		{"re-enabled with uses spent", Link{State: LinkEnabled, MaxUses: 2, Uses: 2}, false, WhyNoUses, LinkEnabled, 2, false},
	} {
		l := tc.in
		d := DecideUse(&l, now)
		if d.OK != tc.ok || d.Why != tc.why || d.Changed != tc.changed || l.State != tc.state || l.Uses != tc.uses {
			t.Errorf("%s: %+v, link %s with %d uses; want ok %v why %q changed %v, %s with %d",
				tc.name, d, l.State, l.Uses, tc.ok, tc.why, tc.changed, tc.state, tc.uses)
		}
	}
}

func TestLinkStateValid(t *testing.T) {
	for _, s := range []LinkState{LinkPending, LinkEnabled, LinkUsed, LinkExpired, LinkRevoked} {
		if !s.Valid() {
			t.Errorf("%s not valid", s)
		}
	}
	for _, s := range []LinkState{"", "Enabled", "gone"} {
		if s.Valid() {
			t.Errorf("%q valid", s)
		}
	}
}
