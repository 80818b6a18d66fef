// Package loopback finds a free TCP port on 127.0.0.1 for the private
// servers the tests, the bench tools and the demo start (PostgreSQL,
// Redis, Dovecot), which take their port on the command line.
package loopback

import "net"

// FreePort is a TCP port on 127.0.0.1 that nothing listened on a moment
// ago. Another process may take it before the caller does: callers that
// can fail on a taken port retry.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
