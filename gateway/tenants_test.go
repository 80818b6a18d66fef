package gateway

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/gateway/signer"
	"github.com/certgate/certgate/store"
)

// nestedEnv is two tenants where one's domain nests in the other's:
// issuer sends from ca.example (keys: RSA and Ed25519 for ca.example),
// sub from sub.ca.example (an RSA key of its own only), and sub holds all
// its mail for review.
func nestedEnv(t *testing.T) *testEnv {
	t.Helper()
	subKey, _, err := signer.Generate("rsa2048", "sub.ca.example", "s2026")
	if err != nil {
		t.Fatal(err)
	}
	hash, _ := bcrypt.GenerateFromPassword([]byte(testPassword), bcrypt.MinCost)
	return newEnv(t, envOptions{
		tenants: []config.Tenant{{Name: "sub", FromDomains: []string{"sub.ca.example"}, Hold: true,
			Users: []config.User{{Username: "app-sub", PasswordHash: string(hash)}}}},
		extraKeys: []*signer.Key{subKey},
	})
}

func wantAlignmentRefusal(t *testing.T, what string, err error) {
	t.Helper()
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 550 || se.EnhancedCode != (smtp.EnhancedCode{5, 7, 1}) {
		t.Fatalf("%s: %v, want 550 5.7.1", what, err)
	}
}

// A tenant cannot send from a domain nested in its own that another tenant
// claims, neither in the envelope nor in the From header: the domain is
// the more specific claimer's.
func TestNestedDomainBelongsToTheMostSpecificTenant(t *testing.T) {
	e := nestedEnv(t)
	c := e.client() // tenant issuer
	msg := []byte("From: <noreply@sub.ca.example>\r\nTo: <a@gmail.com>\r\nSubject: x\r\n\r\nbody\r\n")
	wantAlignmentRefusal(t, "envelope from sub's domain", e.send(c, "noreply@sub.ca.example", []string{"a@gmail.com"}, msg))
	c.Reset()
	wantAlignmentRefusal(t, "From header in sub's domain", e.send(c, "certificados@ca.example", []string{"a@gmail.com"}, msg))
	if n := e.pendingCount(); n != 0 {
		t.Fatalf("%d recipients queued", n)
	}

	// sub may, and its hold applies.
	sub := e.clientAs("app-sub")
	if err := e.send(sub, "noreply@sub.ca.example", []string{"b@gmail.com"}, msg); err != nil {
		t.Fatal(err)
	}
	msgs, err := e.store.Search(context.Background(), store.Query{Recipient: "b@gmail.com"})
	if err != nil || len(msgs) != 1 || msgs[0].Tenant != "sub" {
		t.Fatalf("search: %+v, %v; want one message of tenant sub", msgs, err)
	}
	v, err := e.store.Message(context.Background(), msgs[0].ID)
	if err != nil || v.Recipients[0].State != store.StateHeld {
		t.Fatalf("sub's message: %+v, %v; want it held", v, err)
	}
}

var dkimDomain = regexp.MustCompile(`(?m)^DKIM-Signature:[^\r]*(?:\r\n[ \t][^\r]*)*`)

// storedCopy is the copy for rcpt as the store keeps it (held mail).
func storedCopy(t *testing.T, e *testEnv, rcpt string) []byte {
	t.Helper()
	ctx := context.Background()
	msgs, err := e.store.Search(ctx, store.Query{Recipient: rcpt})
	if err != nil || len(msgs) != 1 {
		t.Fatalf("search %s: %v, %v", rcpt, msgs, err)
	}
	v, err := e.store.Message(ctx, msgs[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	data, err := e.store.Data(ctx, v.Recipients[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// deliveredCopy is the copy for rcpt as the receiver got it.
func deliveredCopy(t *testing.T, e *testEnv, rcpt string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g := e.sims["google"]
	if err := g.WaitFor(ctx, 1); err != nil {
		t.Fatal(err)
	}
	msgs := g.MessagesTo(rcpt)
	if len(msgs) != 1 {
		t.Fatalf("%d copies for %s", len(msgs), rcpt)
	}
	return msgs[0].Data
}

// signedDomains lists the d= of every DKIM-Signature in a copy.
func signedDomains(data []byte) []string {
	var out []string
	for _, sig := range dkimDomain.FindAllString(string(data), -1) {
		sig = strings.NewReplacer("\r\n", "", " ", "", "\t", "").Replace(sig)
		_, rest, _ := strings.Cut(sig, ";d=")
		d, _, _ := strings.Cut(rest, ";")
		out = append(out, d)
	}
	return out
}

// A tenant signs with its own keys only: sub has no Ed25519 key, and the
// Ed25519 key of ca.example (issuer's) aligns with sub.ca.example, but is
// not sub's to use.
func TestTenantSignsWithItsOwnKeysOnly(t *testing.T) {
	e := nestedEnv(t)
	msg := []byte("From: <noreply@sub.ca.example>\r\nTo: <c@gmail.com>\r\nSubject: x\r\n\r\nbody\r\n")
	if err := e.send(e.clientAs("app-sub"), "noreply@sub.ca.example", []string{"c@gmail.com"}, msg); err != nil {
		t.Fatal(err)
	}
	if got := signedDomains(storedCopy(t, e, "c@gmail.com")); strings.Join(got, ",") != "sub.ca.example" {
		t.Fatalf("sub's mail signed d=%v, want sub.ca.example alone", got)
	}
	issuerMsg := []byte("From: <certificados@ca.example>\r\nTo: <d@gmail.com>\r\nSubject: x\r\n\r\nbody\r\n")
	if err := e.send(e.client(), "certificados@ca.example", []string{"d@gmail.com"}, issuerMsg); err != nil {
		t.Fatal(err)
	}
	if got := signedDomains(deliveredCopy(t, e, "d@gmail.com")); strings.Join(got, ",") != "ca.example,ca.example" {
		t.Fatalf("issuer's mail signed d=%v, want ca.example twice (RSA and Ed25519)", got)
	}
}

func wantReply(t *testing.T, what string, err error, code int, enhanced smtp.EnhancedCode) {
	t.Helper()
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != code || se.EnhancedCode != enhanced {
		t.Fatalf("%s: %v, want %d %d.%d.%d", what, err, code, enhanced[0], enhanced[1], enhanced[2])
	}
}

// A tenant that may only send bulk cannot push its mail ahead of others'
// one-time codes by marking it transactional.
func TestTenantClasses(t *testing.T) {
	e := newEnv(t, envOptions{issuer: func(tn *config.Tenant) { tn.Classes = []config.Class{config.ClassBulk} }})
	c := e.client()
	urgent := []byte("From: <certificados@ca.example>\r\nX-Certgate-Class: transactional\r\nSubject: x\r\n\r\nbody\r\n")
	wantReply(t, "transactional from a bulk-only tenant", e.send(c, "certificados@ca.example", []string{"a@gmail.com"}, urgent),
		550, smtp.EnhancedCode{5, 7, 1})
	c.Reset()
	plain := []byte("From: <certificados@ca.example>\r\nSubject: x\r\n\r\nbody\r\n")
	if err := e.send(c, "certificados@ca.example", []string{"a@gmail.com"}, plain); err != nil {
		t.Fatalf("bulk from a bulk-only tenant: %v", err)
	}
}

// max_message_rate holds a tenant to its rate at MAIL, with a temporary
// failure the client retries.
func TestTenantMessageRate(t *testing.T) {
	e := newEnv(t, envOptions{issuer: func(tn *config.Tenant) { tn.MaxMessageRate = config.Rate{Count: 1, Period: time.Hour} }})
	c := e.client()
	msg := []byte("From: <certificados@ca.example>\r\nSubject: x\r\n\r\nbody\r\n")
	if err := e.send(c, "certificados@ca.example", []string{"a@gmail.com"}, msg); err != nil {
		t.Fatalf("first message: %v", err)
	}
	wantReply(t, "second message within the hour", c.Mail("certificados@ca.example", nil), 451, smtp.EnhancedCode{4, 7, 1})
}

// max_queued stops a tenant's intake while its recipients wait in the
// queue (here behind a dead receiver), so that its backlog cannot grow
// for all.
func TestTenantQueueQuota(t *testing.T) {
	e := newEnv(t, envOptions{sinkDown: true, issuer: func(tn *config.Tenant) { tn.MaxQueued = 2 },
		retry: config.Retry{Schedule: []config.Duration{config.Duration(time.Hour)}, MaxAge: config.Duration(24 * time.Hour)}})
	c := e.client()
	msg := []byte("From: <certificados@ca.example>\r\nSubject: x\r\n\r\nbody\r\n")
	if err := e.send(c, "certificados@ca.example", []string{"a@gmail.com", "b@gmail.com"}, msg); err != nil {
		t.Fatalf("first message: %v", err)
	}
	wantReply(t, "a message with the quota reached", c.Mail("certificados@ca.example", nil), 452, smtp.EnhancedCode{4, 3, 1})
}
