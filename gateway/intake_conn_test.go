package gateway

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// Outsiders holding connections (issue 9, item 5).

// Idle holders from several addresses of one /24 take what that network may
// hold, and no more: a client from another /24 still gets in, and so do
// trusted networks once every other slot is taken (issue 9, item 5).
func TestIdleHoldersCannotLockOutOthers(t *testing.T) {
	env := newEnv(t, envOptions{})
	in := newIntake(t, env, ServerConfig{MaxConnections: 12, MaxConnectionsPerIP: 4, MaxConnectionsPerNetwork: 6, TrustedReserve: 2})

	// 127.0.1.0/24 takes six connections from two addresses; a seventh,
	// from a third address of that network, is refused.
	for i := 0; i < 6; i++ {
		in.from(fmt.Sprintf("127.0.1.%d", 1+i/4)).expect("220")
	}
	r := in.from("127.0.1.3")
	r.expect("421 4.7.0")
	r.expectClosed(5 * time.Second)
	in.logs.wait(t, "the refused connection", 1, refusal("421 4.7.0", "127.0.1.3"))

	// Another network submits.
	r = in.greeted("127.0.2.1")
	r.authPlain()
	r.send("certificados@ca.example")
	r.cmd("QUIT", "221")
	in.waitSessions(6)

	// Other networks fill what untrusted clients may take (12 less the
	// reserve of 2) ...
	for i := 0; i < 4; i++ {
		in.from("127.0.3.1").expect("220")
	}
	r = in.from("127.0.4.1")
	r.expect("421 4.7.0")
	r.expectClosed(5 * time.Second)
	// ... and the trusted network still gets in, up to the total.
	for _, a := range []string{"127.0.9.1", "127.0.9.2"} {
		r := in.greeted(a)
		r.send("certificados@ca.example")
	}
	in.from("127.0.9.3").expect("421 4.7.0")
}

// Before AUTH a client may idle only pre_auth_timeout; an authenticated
// client and one from a trusted network are held to read_timeout only.
func TestIdleBeforeAuthTimesOut(t *testing.T) {
	env := newEnv(t, envOptions{})
	in := newIntake(t, env, ServerConfig{PreAuthTimeout: 300 * time.Millisecond})
	authed := in.greeted("127.0.2.1")
	authed.authPlain()
	authed.cmd("NOOP", "250")
	trusted := in.greeted("127.0.9.1")
	trusted.cmd("NOOP", "250")

	idle := in.greeted("127.0.3.1")
	idle.expect("421 4.4.2")
	idle.expectClosed(5 * time.Second)
	in.logs.wait(t, "the idle client's refusal", 1, refusal("421 4.4.2", "127.0.3.1"))

	// Both were idle for longer, and are still served.
	authed.cmd("NOOP", "250")
	trusted.cmd("NOOP", "250")
}

// A session gets max_session_without_mail outside a mail transaction, from
// its start or its last accepted message: NOOP, RSET and EHLO do not extend
// it, and an open transaction is not cut.
func TestSessionWithoutMailEnds(t *testing.T) {
	env := newEnv(t, envOptions{})
	in := newIntake(t, env, ServerConfig{MaxSessionWithoutMail: 500 * time.Millisecond})
	tx := in.greeted("127.0.9.1")
	tx.cmd("MAIL FROM:<certificados@ca.example>", "250")

	busy := in.greeted("127.0.2.1")
	busy.authPlain()
	cmds := []string{"NOOP", "RSET", "EHLO client.example"}
	var last string
	giveUp := time.Now().Add(15 * time.Second) // a bound, not a measure
	for i := 0; ; i++ {
		if time.Now().After(giveUp) {
			t.Fatalf("still served after %d commands and 15 s without a message", i)
		}
		fmt.Fprintf(busy.c, "%s\r\n", cmds[i%len(cmds)])
		reply, err := busy.reply(10 * time.Second)
		if err != nil {
			t.Fatalf("after %d commands: %v", i, err)
		}
		if !strings.HasPrefix(reply, "250") {
			last = reply
			break
		}
	}
	if !strings.HasPrefix(last, "421 4.4.2") {
		t.Fatalf("busy idler got %q, want 421 4.4.2", last)
	}
	busy.expectClosed(5 * time.Second)

	// The transaction opened before goes on, and its message renews the
	// session.
	tx.cmd("RCPT TO:<a@gmail.com>", "250")
	tx.cmd("DATA", "354")
	tx.cmd("From: <certificados@ca.example>\r\n\r\nhello\r\n.", "250 2.0.0 Ok: queued as ")
	tx.cmd("NOOP", "250")
}
