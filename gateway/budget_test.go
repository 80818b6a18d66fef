package gateway

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/membudget"
	"github.com/emersion/go-smtp"
)

// waitInUse waits until the server's submissions hold at least n bytes.
func waitInUse(t *testing.T, b *membudget.Budget, n int64) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		used, changed := b.InUse()
		if used >= n {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("submissions hold %d bytes, waited for %d", used, n)
		}
	}
}

// lines is n octets of message body in 78-octet lines.
func lines(n int) string {
	line := strings.Repeat("x", 76) + "\r\n"
	return strings.Repeat(line, n/len(line))
}

// A message that would take the server past its memory budget while
// arriving is read to its end and refused with 452 4.3.1; the one already
// arriving is accepted, and the refused one is accepted when retried.
func TestMemoryBudgetRefusesTheMessageThatWouldPassIt(t *testing.T) {
	// Each message alone fits: its buffer, its prepared copy and the
	// store's two copies as it writes it; not both at once.
	e := newEnv(t, envOptions{maxBytes: 256 << 10, memoryBudget: 760 << 10})
	hdr := "From: <certificados@ca.example>\r\nTo: <a@gmail.com>\r\nSubject: big\r\n\r\n"
	a := e.raw()
	a.authPlain()
	a.cmd("MAIL FROM:<certificados@ca.example>", "250")
	a.cmd("RCPT TO:<a@gmail.com>", "250")
	a.cmd("DATA", "354")
	fmt.Fprint(a.c, hdr+lines(200<<10)) // not ended yet: held by the server
	waitInUse(t, e.server.cfg.Memory, 200<<10)

	b := e.raw()
	b.authPlain()
	b.cmd("MAIL FROM:<certificados@ca.example>", "250")
	b.cmd("RCPT TO:<b@gmail.com>", "250")
	b.cmd("DATA", "354")
	fmt.Fprint(b.c, hdr+lines(250<<10)+".\r\n")
	b.expect("452 4.3.1")

	fmt.Fprint(a.c, ".\r\n")
	a.expect("250")
	// What the first held is free again: the refused message goes through.
	b.cmd("MAIL FROM:<certificados@ca.example>", "250")
	b.cmd("RCPT TO:<b@gmail.com>", "250")
	b.cmd("DATA", "354")
	fmt.Fprint(b.c, hdr+lines(250<<10)+".\r\n")
	b.expect("250")
	if used, _ := e.server.cfg.Memory.InUse(); used != 0 {
		t.Fatalf("%d bytes still held after both transactions", used)
	}
}

// With the budget used up, a new transaction is told to come back later.
func TestMemoryBudgetFullRefusesNewTransactions(t *testing.T) {
	e := newEnv(t, envOptions{maxBytes: 256 << 10, memoryBudget: 600 << 10})
	held := &holding{b: e.server.cfg.Memory}
	if held.grow(600<<10) != nil { // as sessions' buffers would
		t.Fatal("an empty budget refused its own size")
	}
	r := e.raw()
	r.authPlain()
	r.cmd("MAIL FROM:<certificados@ca.example>", "452 4.3.1")
	held.releaseAll()
	r.cmd("MAIL FROM:<certificados@ca.example>", "250")
}

// Gated links make a copy per recipient: the copies count against the
// budget too. Five recipients of a large gated mail that could never fit
// are refused for good (452 would have the client retry for ever); one
// that would fit comes back later while others hold the budget.
func TestMemoryBudgetCountsGatedCopies(t *testing.T) {
	e := newEnv(t, envOptions{maxBytes: 256 << 10, memoryBudget: 1 << 20,
		links: config.Links{Gate: []string{"https://descargas.ca.example/"}, Enable: config.LinksOnDelivery, TTL: config.Duration(time.Hour), MaxUses: 3}})
	msg := "From: <certificados@ca.example>\r\nSubject: x\r\n\r\nhttps://descargas.ca.example/cert?id=1\r\n" + lines(200<<10)
	rcpts := []string{"a@gmail.com", "b@gmail.com", "c@gmail.com", "d@gmail.com", "e@gmail.com"}
	err := e.send(e.client(), "certificados@ca.example", rcpts, []byte(msg))
	wantReply(t, "five gated copies of 200 KB in a budget of 1 MiB", err, 552, smtp.EnhancedCode{5, 3, 4})
	held := &holding{b: e.server.cfg.Memory}
	if held.grow(600<<10) != nil {
		t.Fatal("refused")
	}
	err = e.send(e.client(), "certificados@ca.example", rcpts[:1], []byte(msg))
	wantReply(t, "one gated copy while 600 KB are held", err, 452, smtp.EnhancedCode{4, 3, 1})
	held.releaseAll()
	if err := e.send(e.client(), "certificados@ca.example", rcpts[:1], []byte(msg)); err != nil {
		t.Fatalf("one gated copy: %v", err)
	}
}
