package policy

import "testing"

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		code   int
		netErr bool
		want   Outcome
	}{
		{250, false, Delivered},
		{251, false, Delivered},
		{200, false, Delivered},
		{299, false, Delivered},
		{421, false, Deferred},
		{450, false, Deferred},
		{451, false, Deferred},
		{452, false, Deferred},
		{550, false, Bounced},
		{552, false, Bounced},
		{554, false, Bounced},
		{599, false, Bounced},
		{0, true, Deferred},   // connection refused, no reply
		{250, true, Deferred}, // a network error wins over any code
		{550, true, Deferred},
		{0, false, Deferred}, // no code and no error: unknown
		{354, false, Deferred},
		{199, false, Deferred},
		{600, false, Deferred},
		{-1, false, Deferred},
		{2500, false, Deferred},
	} {
		if got := Classify(tc.code, tc.netErr); got != tc.want {
			t.Errorf("Classify(%d, %v) = %v, want %v", tc.code, tc.netErr, got, tc.want)
		}
	}
}

func TestOutcomeString(t *testing.T) {
	for o, s := range map[Outcome]string{Delivered: "delivered", Deferred: "deferred", Bounced: "bounced", Outcome(9): "unknown"} {
		if o.String() != s {
			t.Errorf("%d.String() = %q, want %q", int(o), o.String(), s)
		}
	}
}
