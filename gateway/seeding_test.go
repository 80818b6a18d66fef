package gateway

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/mimeedit"
	"github.com/certgate/certgate/store"
)

var testSeeds = []config.SeedMailbox{
	{Name: "gmail-1", Provider: "gmail", Address: "certgate.seed1@gmail.com"},
	{Name: "workspace-1", Provider: "gmail", Address: "seed@empresa.example"},
}

// The first bulk message of a wave is seeded, then every `every`-th or the
// first after `interval`, whichever comes first.
func TestSeedClock(t *testing.T) {
	c := newSeedClock(&config.Seeding{Every: 3, Interval: config.Duration(time.Minute)})
	t0 := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	var got []int
	for i, at := range []time.Duration{0, 1, 2, 3, 4, 5, 6, 70 * time.Second, 71 * time.Second} {
		if at < time.Second {
			at *= time.Second
		}
		if c.due(t0.Add(at)) {
			got = append(got, i)
		}
	}
	// 0: first; 3: third since; 6: third since; 7: a minute after 6.
	if want := []int{0, 3, 6, 7}; !slices.Equal(got, want) {
		t.Fatalf("seeded messages %v, want %v", got, want)
	}
	if (*seedClock)(nil).due(t0) {
		t.Fatal("a tenant without seeding was seeded")
	}
}

// A seeded bulk message gets one copy per seed mailbox: the same message,
// addressed To the seed and signed after that change, with its own
// tracking id and links, marked as a seed copy in the store; its links
// never turn on, while the customer's do on delivery.
func TestContinuousSeedingCopies(t *testing.T) {
	e := newEnv(t, envOptions{seeds: testSeeds,
		links: config.Links{Gate: []string{"https://descargas.ca.example/certificado/"}, Enable: config.LinksOnDelivery,
			TTL: config.Duration(72 * time.Hour)},
		issuer: func(t *config.Tenant) { t.Seeding = &config.Seeding{Every: 2, Interval: config.Duration(time.Hour)} }})
	c := e.client()
	msg := sample(t, "01-es-download-link-qp.eml")
	for range 3 {
		if err := e.send(c, "certificados@ca.example", []string{"ana@gmail.com"}, msg); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	g := e.sims["google"]
	// Messages 1 and 3 are seeded (first of the wave, then every 2nd).
	if err := g.WaitFor(ctx, 3+1+3); err != nil {
		t.Fatal(err)
	}
	seedCopies := g.MessagesTo("certgate.seed1@gmail.com")
	if len(seedCopies) != 2 || len(g.MessagesTo("seed@empresa.example")) != 2 || len(g.MessagesTo("ana@gmail.com")) != 3 {
		t.Fatalf("copies: seed1 %d, seed2 %d, ana %d; want 2, 2, 3", len(seedCopies),
			len(g.MessagesTo("seed@empresa.example")), len(g.MessagesTo("ana@gmail.com")))
	}
	tracking := map[string]bool{}
	for _, m := range g.Messages() {
		if len(m.DKIM) == 0 || m.DKIM[0].Err != nil {
			t.Errorf("%s: signature %+v", m.To, m.DKIM)
		}
		hb, _, err := mimeedit.SplitHeader(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		h, err := mimeedit.ParseHeader(hb)
		if err != nil {
			t.Fatal(err)
		}
		if m.To != "ana@gmail.com" && h.Get("To") != "<"+m.To+">" {
			t.Errorf("seed copy to %s has To %q, want the seed's address", m.To, h.Get("To"))
		}
		tid := h.Get(store.TrackingHeader)
		if tid == "" || tracking[tid] {
			t.Errorf("%s: tracking id %q missing or shared", m.To, tid)
		}
		tracking[tid] = true
	}

	v := e.messageView(t, "certgate.seed1@gmail.com")
	e.attempts.waitFinal(t, v.Message.ID, 3)
	v, err := e.store.Message(context.Background(), v.Message.ID)
	if err != nil {
		t.Fatal(err)
	}
	seedOf := map[int64]string{}
	for _, r := range v.Recipients {
		seedOf[r.ID] = r.Seed
		if want := map[string]string{"ana@gmail.com": "", "certgate.seed1@gmail.com": "gmail-1",
			"seed@empresa.example": "workspace-1"}[r.Address]; r.Seed != want {
			t.Errorf("recipient %s: seed %q, want %q", r.Address, r.Seed, want)
		}
	}
	if len(v.Links) != 3 {
		t.Fatalf("%d links, want one per copy", len(v.Links))
	}
	for _, l := range v.Links {
		if want := map[bool]store.LinkState{false: store.LinkEnabled, true: store.LinkPending}[seedOf[l.RecipientID] != ""]; l.State != want {
			t.Errorf("link of recipient %d (seed %q): %s, want %s", l.RecipientID, seedOf[l.RecipientID], l.State, want)
		}
	}
}

// A seed address on the issuer's own list is tracked as a seed copy, and
// gets no second copy; transactional mail is not seeded.
func TestSeedAddressAsRecipient(t *testing.T) {
	e := newEnv(t, envOptions{seeds: testSeeds,
		issuer: func(t *config.Tenant) { t.Seeding = &config.Seeding{Every: 1, Interval: config.Duration(time.Hour)} }})
	urgent := []byte("From: <certificados@ca.example>\r\nTo: <certgate.seed1@gmail.com>\r\nX-Certgate-Class: transactional\r\nSubject: token\r\n\r\n123456\r\n")
	if err := e.send(e.client(), "certificados@ca.example", []string{"certgate.seed1@gmail.com"}, urgent); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := e.sims["google"].WaitFor(ctx, 1); err != nil {
		t.Fatal(err)
	}
	v := e.messageView(t, "certgate.seed1@gmail.com")
	if len(v.Recipients) != 1 || v.Recipients[0].Seed != "gmail-1" {
		t.Fatalf("recipients %+v, want the seed address alone, as seed gmail-1", v.Recipients)
	}
	if got := e.sims["google"].MessagesTo("certgate.seed1@gmail.com"); len(got) != 1 ||
		!strings.Contains(string(got[0].Data), "To: <certgate.seed1@gmail.com>") {
		t.Fatalf("copies to the seed: %d", len(got))
	}
}

// With links.enable: immediately a customer's links work from the start;
// a seed copy's, made from the same message, never do: anyone reading a
// seed mailbox must not reach the download.
func TestSeedLinksStayPendingWhenImmediate(t *testing.T) {
	e := newEnv(t, envOptions{seeds: testSeeds[:1],
		links: config.Links{Gate: []string{"https://descargas.ca.example/certificado/"}, Enable: config.LinksImmediately,
			TTL: config.Duration(72 * time.Hour)},
		issuer: func(t *config.Tenant) { t.Seeding = &config.Seeding{Every: 1, Interval: config.Duration(time.Hour)} }})
	if err := e.send(e.client(), "certificados@ca.example", []string{"ana@gmail.com"}, sample(t, "01-es-download-link-qp.eml")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := e.sims["google"].WaitFor(ctx, 2); err != nil {
		t.Fatal(err)
	}
	v := e.messageView(t, "ana@gmail.com")
	seedOf := map[int64]string{}
	for _, r := range v.Recipients {
		seedOf[r.ID] = r.Seed
	}
	if len(v.Links) != 2 {
		t.Fatalf("%d links, want the customer's and the seed copy's", len(v.Links))
	}
	for _, l := range v.Links {
		want := store.LinkEnabled
		if seedOf[l.RecipientID] != "" {
			want = store.LinkPending
		}
		if l.State != want {
			t.Errorf("link of recipient %d (seed %q): %s, want %s", l.RecipientID, seedOf[l.RecipientID], l.State, want)
		}
	}
}
