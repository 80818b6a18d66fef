package demo

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certgate/certgate/mimeedit"
)

func testWave(t *testing.T, bulk, urgent int) wave {
	t.Helper()
	w, err := newWave(bulk, urgent)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestWaveAddressesEveryProvider(t *testing.T) {
	w := testWave(t, 10, 3)
	if len(w.bulk) != 10 || len(w.urgent) != 3 || len(w.all()) != 13 {
		t.Fatalf("wave has %d bulk, %d urgent, %d in all; want 10, 3, 13", len(w.bulk), len(w.urgent), len(w.all()))
	}
	for i, m := range w.bulk {
		want := []string{fmt.Sprintf("cliente%04d@", i)}
		if i == 7 {
			want = append(want, bounceAddress)
		}
		if len(m.rcpts) != len(want) || !strings.HasPrefix(m.rcpts[0], want[0]) || (i == 7 && m.rcpts[1] != bounceAddress) {
			t.Errorf("bulk %d goes to %v; want %v", i, m.rcpts, want)
		}
	}
	for i, m := range w.urgent {
		if len(m.rcpts) != 1 || !strings.HasPrefix(m.rcpts[0], fmt.Sprintf("token%02d@", i)) {
			t.Errorf("urgent %d goes to %v", i, m.rcpts)
		}
		if !bytes.Contains(m.data, []byte("X-Certgate-Class: transactional")) {
			t.Errorf("urgent %d is not marked transactional", i)
		}
	}
	for _, m := range w.all() {
		for _, r := range m.rcpts {
			if providerOf(r) == "" {
				t.Errorf("%s is hosted by no simulated provider", r)
			}
		}
	}
}

// Each copy keeps the sample's From as envelope sender, is addressed to
// its demo recipients and leaves the Message-ID to certgate.
func TestReaddress(t *testing.T) {
	w := testWave(t, 7, 0)
	for i, m := range w.bulk {
		hb, _, err := mimeedit.SplitHeader(m.data)
		if err != nil {
			t.Fatal(err)
		}
		h, err := mimeedit.ParseHeader(hb)
		if err != nil {
			t.Fatal(err)
		}
		if got := h.Get("To"); got != strings.Join(m.rcpts, ", ") {
			t.Errorf("bulk %d: To %q; want %q", i, got, strings.Join(m.rcpts, ", "))
		}
		if h.Get("Cc") != "" || h.Get("Message-ID") != "" {
			t.Errorf("bulk %d keeps Cc %q or Message-ID %q", i, h.Get("Cc"), h.Get("Message-ID"))
		}
		if !strings.Contains(h.Get("From"), "<"+m.from+">") && h.Get("From") != m.from {
			t.Errorf("bulk %d: envelope sender %q is not From %q", i, m.from, h.Get("From"))
		}
		if !slices.Contains([]string{"ca.example", "certs.example", "ac.example"}, m.from[strings.LastIndexByte(m.from, '@')+1:]) {
			t.Errorf("bulk %d: sender %q is in no issuer domain the demo signs for", i, m.from)
		}
	}
}

func TestExpectedCopies(t *testing.T) {
	// Recipients 0..7 go round-robin to gmail.com, empresa.example (Google),
	// outlook.com, contoso.example (Microsoft) and yahoo.com; number 7 also
	// to the refused address, whose DSN lands at the issuer's MX.
	w := testWave(t, 8, 1)
	got := expectedCopies(w)
	want := map[string]int{"google": 5, "microsoft": 3, "yahoo": 1, "issuer": 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("expected copies %v; want %v", got, want)
	}
	// A wave too small to reach the refused address expects no DSN (the
	// demo used to wait three minutes for one).
	if got := expectedCopies(testWave(t, 3, 1)); got["issuer"] != 0 {
		t.Errorf("a wave without the refused address expects %d DSNs", got["issuer"])
	}
}

func TestProviderOf(t *testing.T) {
	for addr, want := range map[string]string{
		"a@gmail.com": "google", "a@empresa.example": "google", "a@contoso.example": "microsoft",
		"a@yahoo.com": "yahoo", "a@ca.example": "issuer", "a@elsewhere.example": "",
	} {
		if got := providerOf(addr); got != want {
			t.Errorf("providerOf(%q) = %q; want %q", addr, got, want)
		}
	}
}

// Bulk mail says it is bulk as a receiver can see it (List-Unsubscribe, to
// the sender's domain); the urgent tokens do not, so a receiver that junks
// bulk leaves them in the inbox.
func TestOnlyBulkLooksBulk(t *testing.T) {
	w := testWave(t, 6, 2)
	for i, m := range w.all() {
		hb, _, err := mimeedit.SplitHeader(m.data)
		if err != nil {
			t.Fatal(err)
		}
		h, err := mimeedit.ParseHeader(hb)
		if err != nil {
			t.Fatal(err)
		}
		got := h.Get("List-Unsubscribe")
		if i >= len(w.bulk) {
			if got != "" {
				t.Errorf("urgent mail %d has List-Unsubscribe %q", i-len(w.bulk), got)
			}
			continue
		}
		domain := m.from[strings.LastIndexByte(m.from, '@')+1:]
		if want := "<mailto:unsubscribe@" + domain + "?subject=unsubscribe>"; got != want {
			t.Errorf("bulk mail %d: List-Unsubscribe %q; want %q", i, got, want)
		}
	}
}

// The urgent mail goes one a second, faster when there is more of it, so
// that it takes urgentSpread at most.
func TestUrgentPace(t *testing.T) {
	for n, want := range map[int]struct {
		pace time.Duration
		plan string
	}{
		0:  {0, "0 urgent token mails"},
		1:  {0, "1 urgent token mail"},
		2:  {time.Second, "2 urgent token mails, one a second,"},
		5:  {time.Second, "5 urgent token mails, one a second,"},
		20: {250 * time.Millisecond, "20 urgent token mails, 250ms apart,"},
	} {
		if got := urgentPace(n); got != want.pace {
			t.Errorf("urgentPace(%d) = %s; want %s", n, got, want.pace)
		}
		if got := urgentPlan(n); got != want.plan {
			t.Errorf("urgentPlan(%d) = %q; want %q", n, got, want.plan)
		}
	}
}
