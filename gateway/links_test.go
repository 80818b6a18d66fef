package gateway

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/mimeedit"
	"github.com/certgate/certgate/quarantine"
	"github.com/certgate/certgate/store"
)

var gateToken = regexp.MustCompile(`https://gate\.ca\.example/d/([A-Za-z0-9_-]{22})`)

func TestGatedLinksPerCopyEnabledOnDelivery(t *testing.T) {
	e := newEnv(t, envOptions{links: config.Links{Gate: []string{"https://descargas.ca.example/certificado/"},
		Enable: config.LinksOnDelivery, TTL: config.Duration(72 * time.Hour), MaxUses: 3}})
	c := e.client()
	if err := e.send(c, "certificados@ca.example", []string{"ana@gmail.com", "luis@gmail.com"}, sample(t, "01-es-download-link-qp.eml")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	g := e.sims["google"]
	if err := g.WaitFor(ctx, 2); err != nil {
		t.Fatal(err)
	}
	tokens := map[string]string{}
	for _, m := range g.Messages() {
		for _, r := range m.DKIM {
			if r.Err != nil {
				t.Errorf("%s: signature of the rewritten copy fails: %v", m.To, r.Err)
			}
		}
		// The copy's own token, in its decoded text (quoted-printable).
		text := decodeQP(t, m.Data)
		got := gateToken.FindAllStringSubmatch(text, -1)
		if len(got) != 2 || got[0][1] != got[1][1] {
			t.Fatalf("%s: want the one token twice (text and HTML), got %v", m.To, got)
		}
		tokens[m.To] = got[0][1]
	}
	if tokens["ana@gmail.com"] == tokens["luis@gmail.com"] {
		t.Fatal("two recipients share a token")
	}
	v := e.messageView(t, "ana@gmail.com")
	// The links turn on in the transaction that records the delivery.
	e.attempts.waitFinal(t, v.Message.ID, 2)
	v, err := e.store.Message(context.Background(), v.Message.ID)
	if err != nil {
		t.Fatal(err)
	}
	enabled := 0
	for _, l := range v.Links {
		if l.State == store.LinkEnabled {
			enabled++
		}
	}
	if enabled != 2 {
		t.Fatalf("%d of %d links enabled on delivery, want both", enabled, len(v.Links))
	}
	l, err := e.store.LinkByToken(context.Background(), quarantine.HashToken(tokens["ana@gmail.com"]))
	if err != nil || l.URL != "https://descargas.ca.example/certificado/descargar?pedido=88412&clave=Zk3p9QwX" || l.MaxUses != 3 {
		t.Fatalf("link for ana: %+v, %v", l, err)
	}
}

func TestGatedLinksWaitForRelease(t *testing.T) {
	e := newEnv(t, envOptions{links: config.Links{Gate: []string{"https://descargas.ca.example/certificado/"},
		Enable: config.LinksOnRelease, TTL: config.Duration(time.Hour), MaxUses: 1}})
	c := e.client()
	if err := e.send(c, "certificados@ca.example", []string{"ana@gmail.com"}, sample(t, "01-es-download-link-qp.eml")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := e.sims["google"].WaitFor(ctx, 1); err != nil {
		t.Fatal(err)
	}
	v := e.messageView(t, "ana@gmail.com")
	if len(v.Links) != 1 || v.Links[0].State != store.LinkPending {
		t.Fatalf("links after delivery under on_release: %+v", v.Links)
	}
}

func decodeQP(t *testing.T, msg []byte) string {
	t.Helper()
	var all []byte
	if err := walkText(msg, func(b []byte) { all = append(all, b...) }); err != nil {
		t.Fatal(err)
	}
	return string(all)
}

func walkText(msg []byte, f func([]byte)) error {
	return mimeedit.Walk(msg, func(p *mimeedit.Part, d []byte) error {
		f(d)
		return nil
	})
}

func TestHeldMailWaitsForRelease(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.client()
	held := append([]byte("X-Certgate-Hold: yes\r\n"), sample(t, "01-es-download-link-qp.eml")...)
	if err := e.send(c, "certificados@ca.example", []string{"held@gmail.com"}, held); err != nil {
		t.Fatal(err)
	}
	if err := e.send(c, "certificados@ca.example", []string{"free@gmail.com"}, sample(t, "01-es-download-link-qp.eml")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	g := e.sims["google"]
	if err := g.WaitFor(ctx, 1); err != nil {
		t.Fatal(err)
	}
	msgs, err := e.store.Search(ctx, store.Query{Recipient: "held@gmail.com"})
	if err != nil || len(msgs) != 1 {
		t.Fatalf("search: %v, %v", msgs, err)
	}
	// Held mail never reaches the queue: it waits in the store alone.
	waitDrained(t, e.queue)
	if n := len(g.MessagesTo("held@gmail.com")); n != 0 {
		t.Fatal("held mail was delivered before release")
	}
	pend, err := e.store.Release(ctx, msgs[0].ID, time.Now(), "test", "reviewed")
	if err != nil || len(pend) != 1 {
		t.Fatalf("release: %v, %v", pend, err)
	}
	e.queue.Add(pend...)
	if err := g.WaitFor(ctx, 2); err != nil {
		t.Fatal(err)
	}
	m := g.MessagesTo("held@gmail.com")
	if len(m) != 1 || strings.Contains(string(m[0].Data), "X-Certgate-Hold") {
		t.Fatalf("released copy: %d, control header leaked: %v", len(m), len(m) > 0 && strings.Contains(string(m[0].Data), "X-Certgate-Hold"))
	}
}

func TestGatedCopiesAreBounded(t *testing.T) {
	e := newEnv(t, envOptions{maxBytes: 8 << 20, maxRcpts: 200, links: config.Links{Gate: []string{"https://descargas.ca.example/certificado/"},
		Enable: config.LinksImmediately, TTL: config.Duration(time.Hour), MaxUses: 3}})
	c := e.client()
	big := []byte("From: <certificados@ca.example>\r\nSubject: big\r\n\r\nhttps://descargas.ca.example/certificado/x\r\n" +
		strings.Repeat(strings.Repeat("x", 76)+"\r\n", 14000)) // about 1 MB
	var rcpts []string
	for i := 0; i < 150; i++ { // 150 copies of 1 MB: over the bound
		rcpts = append(rcpts, fmt.Sprintf("r%d@gmail.com", i))
	}
	err := e.send(c, "certificados@ca.example", rcpts, big)
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 552 || !strings.Contains(se.Message, "send to fewer recipients") {
		t.Fatalf("150 gated copies of 1 MB: %v", err)
	}
	c.Reset()
	if err := e.send(c, "certificados@ca.example", rcpts[:20], big); err != nil {
		t.Fatalf("20 gated copies of 1 MB: %v", err)
	}
}
