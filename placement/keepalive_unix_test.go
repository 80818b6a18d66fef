//go:build unix

package placement

import (
	"context"
	"net"
	"syscall"
	"testing"

	"github.com/certgate/certgate/config"
)

func TestDialedConnectionHasKeepAlive(t *testing.T) {
	addr := silentServer(t)
	conn, _, err := dialConn(context.Background(), seedMailbox(addr, config.IMAPNoTLS).IMAP, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	raw, err := conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var on int
	var serr error
	raw.Control(func(fd uintptr) {
		on, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE)
	})
	if serr != nil || on == 0 {
		t.Fatalf("SO_KEEPALIVE %d, %v", on, serr)
	}
}
