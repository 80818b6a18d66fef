package gateway

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

// After SIGTERM a new transaction gets 421 4.3.2, and the connection is
// closed at once rather than at the drain's deadline (RFC 5321 3.8).
func TestShutdownRefusesMailAndHangsUp(t *testing.T) {
	e := newEnv(t, envOptions{})
	r := e.raw()
	r.authPlain()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- e.server.Shutdown(ctx) }()
	<-e.server.closing
	r.cmd("MAIL FROM:<certificados@ca.example>", "421 4.3.2")
	r.expectClosed(5 * time.Second)
	r.c.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("shutdown still waiting for a session it refused")
	}
}

// expectClosed asserts that the server has closed the connection: the next
// read ends (EOF or reset) instead of timing out or bringing another reply.
func (r *raw) expectClosed(within time.Duration) {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(within))
	line, err := r.r.ReadString('\n')
	var ne net.Error
	switch {
	case err == nil:
		r.t.Fatalf("connection still open: read %q", line)
	case errors.As(err, &ne) && ne.Timeout():
		r.t.Fatalf("connection still open after %v", within)
	}
}
