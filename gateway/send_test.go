package gateway

import (
	"context"
	"crypto/sha256"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/store"
)

const apiMail = "From: certificados@ca.example\r\nTo: admin@gmail.com, it@gmail.com\r\nSubject: Su certificado\r\n" +
	"X-Certgate-Hold: yes\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHola.\r\n"

// A send API submission goes through the SMTP path's preparation: signed,
// delivered, with a Received field that says it came in by HTTP and has
// no HELO, and an accepted event naming the API caller.
func TestSendThroughRelay(t *testing.T) {
	e := newEnv(t, envOptions{})
	tenant := e.server.dir.Tenant("issuer")
	sent, err := e.relay.Send(context.Background(), Submission{Tenant: tenant, From: "certificados@ca.example",
		Rcpts: []string{"admin@gmail.com", "it@gmail.com"}, Data: []byte(apiMail), Actor: "api:portal@192.0.2.9",
		ClientIP: netip.MustParseAddr("192.0.2.9"), Class: config.ClassTransactional, Note: "format plaintext"})
	if err != nil {
		t.Fatal(err)
	}
	if sent.ID == "" || len(sent.Recipients) != 2 || sent.Recipients[0].Address != "admin@gmail.com" || sent.Recipients[1].TrackingID == "" {
		t.Fatalf("Send = %+v", sent)
	}
	g := e.sims["google"]
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	// The header's X-Certgate-Hold is not read for an API submission
	// (its hold is the request's), so both copies leave.
	if err := g.WaitFor(ctx, 2); err != nil {
		t.Fatal(err)
	}
	for _, m := range g.Messages() {
		d := string(m.Data)
		if !strings.Contains(d, "Received: from [192.0.2.9]\r\n\tby relay.ca.example (certgate) with HTTP id "+sent.ID+";") {
			t.Errorf("Received field of an HTTP submission:\n%s", d[:min(len(d), 400)])
		}
		if len(m.DKIM) < 1 || strings.Contains(d, "X-Certgate-Hold") {
			t.Errorf("not signed, or a control header left: %v", m.DKIM)
		}
	}
	v, err := e.store.Message(context.Background(), sent.ID)
	if err != nil {
		t.Fatal(err)
	}
	if v.Message.Class != "transactional" || v.Events[0].Kind != "accepted" || v.Events[0].Actor != "api:portal@192.0.2.9" ||
		!strings.Contains(v.Events[0].Detail, "via HTTP, format plaintext") {
		t.Fatalf("message %+v, first event %+v", v.Message, v.Events[0])
	}
}

// An Idempotency-Key's answer is made from the Sent that Send returns,
// before the message is durable, and spooled with it; a key that is not
// claimed fails the send, and nothing is spooled.
func TestSendSpoolsTheAnswer(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	hash := sha256.Sum256([]byte("request"))
	now := time.Now()
	if c, err := e.store.ReserveKey(ctx, "portal\x00k", hash, now, now.Add(time.Minute)); err != nil || !c.Claimed {
		t.Fatalf("ReserveKey = %+v, %v", c, err)
	}
	var answered *Sent
	sub := Submission{Tenant: e.server.dir.Tenant("issuer"), From: "certificados@ca.example",
		Rcpts: []string{"admin@gmail.com"}, Data: []byte(apiMail), Actor: "api:portal@192.0.2.9",
		Answer: func(s *Sent) *store.IdempotentAnswer {
			answered = s
			return &store.IdempotentAnswer{Key: "portal\x00k", BodyHash: hash, Status: 202, Response: []byte(s.ID),
				Expires: now.Add(time.Hour)}
		}}
	sent, err := e.relay.Send(ctx, sub)
	if err != nil {
		t.Fatal(err)
	}
	if answered == nil || !reflect.DeepEqual(answered, sent) {
		t.Fatalf("the answer was made from %+v; Send returned %+v", answered, sent)
	}
	c, err := e.store.ReserveKey(ctx, "portal\x00k", hash, now, now.Add(time.Minute))
	if err != nil || c.Claimed || c.Status != 202 || string(c.Response) != sent.ID {
		t.Fatalf("the key after Send: %+v, %v; want answered with %s", c, err, sent.ID)
	}
	// The key is answered: a second send under it spools nothing.
	before, _ := e.store.Search(ctx, store.Query{Limit: 100})
	if _, err := e.relay.Send(ctx, sub); !errors.Is(err, store.ErrKeyNotClaimed) {
		t.Fatalf("Send under an answered key = %v; want ErrKeyNotClaimed", err)
	}
	if after, _ := e.store.Search(ctx, store.Query{Limit: 100}); len(after) != len(before) {
		t.Fatalf("%d messages after a refused send; want %d", len(after), len(before))
	}
}

// hold: true holds every copy; a class the tenant may not use is refused
// before anything is written.
func TestSendHoldAndClass(t *testing.T) {
	e := newEnv(t, envOptions{})
	tenant := *e.server.dir.Tenant("issuer")
	sent, err := e.relay.Send(context.Background(), Submission{Tenant: &tenant, From: "certificados@ca.example",
		Rcpts: []string{"admin@gmail.com"}, Data: []byte(apiMail), Actor: "api:portal@192.0.2.9", Hold: true})
	if err != nil {
		t.Fatal(err)
	}
	v, err := e.store.Message(context.Background(), sent.ID)
	if err != nil || v.Recipients[0].State != store.StateHeld || v.Message.Class != string(tenant.DefaultClass) {
		t.Fatalf("held send: %+v, %v", v, err)
	}
	tenant.Classes = []config.Class{config.ClassBulk}
	_, err = e.relay.Send(context.Background(), Submission{Tenant: &tenant, From: "certificados@ca.example",
		Rcpts: []string{"admin@gmail.com"}, Data: []byte(apiMail), Class: config.ClassTransactional})
	if code, reason, _, ok := RefusalOf(err); !ok || code != 550 || reason != "class" {
		t.Fatalf("transactional for a bulk-only tenant: %v", err)
	}
}
