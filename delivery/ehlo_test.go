package delivery

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/sim"
)

// strictMX is a scripted receiver that refuses a second EHLO in a session
// (RFC 5321 4.1.4 allows one, not every receiver does); STARTTLS starts a
// new session (RFC 3207 4.2). It accepts mail, but refuses RCPT TO
// refused@... with 550, and records every command it reads.
type strictMX struct {
	noEHLO   bool // answer EHLO 502, as a receiver that knows only HELO
	mu       sync.Mutex
	commands []string
}

func (m *strictMX) record(cmd string) {
	m.mu.Lock()
	m.commands = append(m.commands, cmd)
	m.mu.Unlock()
}

func (m *strictMX) count(verb string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, c := range m.commands {
		if strings.HasPrefix(strings.ToUpper(c), verb) {
			n++
		}
	}
	return n
}

func (m *strictMX) serve(tlsConf *tls.Config) func(net.Conn) {
	return func(c net.Conn) {
		var conn net.Conn = c
		r := bufio.NewReader(conn)
		w := func(lines ...string) { conn.Write([]byte(strings.Join(lines, "\r\n") + "\r\n")) }
		w("220 mx.example ESMTP strict")
		greeted, inData := false, false
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if inData {
				if line == ".\r\n" {
					inData = false
					w("250 2.0.0 queued")
				}
				continue
			}
			cmd := strings.TrimRight(line, "\r\n")
			m.record(cmd)
			u := strings.ToUpper(cmd)
			switch {
			case strings.HasPrefix(u, "EHLO") && m.noEHLO:
				w("502 5.5.2 command not recognized")
			case strings.HasPrefix(u, "HELO") && !greeted:
				greeted = true
				w("250 mx.example")
			case strings.HasPrefix(u, "EHLO"), strings.HasPrefix(u, "HELO"):
				if greeted {
					w("503 5.5.1 EHLO already given; this server refuses a repeated EHLO")
					continue
				}
				greeted = true
				ext := []string{"250-mx.example", "250-SIZE 10000000", "250-8BITMIME"}
				if tlsConf != nil {
					if _, ok := conn.(*tls.Conn); !ok {
						ext = append(ext, "250-STARTTLS")
					}
				}
				w(append(ext, "250 PIPELINING")...)
			case u == "STARTTLS" && tlsConf != nil:
				w("220 2.0.0 go ahead")
				tc := tls.Server(c, tlsConf)
				if tc.Handshake() != nil {
					return
				}
				conn, r, greeted = tc, bufio.NewReader(tc), false
			case strings.HasPrefix(u, "RCPT") && strings.Contains(u, "REFUSED@"):
				w("550 5.1.1 no such user")
			case u == "DATA":
				inData = true
				w("354 go ahead")
			case u == "QUIT":
				w("221 2.0.0 bye")
				return
			default:
				w("250 2.0.0 ok")
			}
		}
	}
}

// With tls: opportunistic and no STARTTLS offered, the plaintext session
// goes on with the EHLO answer the dialer already has: a receiver that
// refuses a repeated EHLO would otherwise defer the mail for ever. After a
// failed transaction the connection is reused with RSET, and no EHLO
// follows it either.
func TestOneEHLOPerSession(t *testing.T) {
	serverTLS, _ := sim.TLSPair("mx.example")
	for _, c := range []struct {
		name  string
		route config.TLSMode
		offer *tls.Config
		tls   bool
		ehlos int // one per session: before and after STARTTLS
	}{
		{"opportunistic, no STARTTLS offered", config.TLSOpportunistic, nil, false, 1},
		{"tls none", config.TLSNone, serverTLS, false, 1},
		{"opportunistic with STARTTLS", config.TLSOpportunistic, serverTLS, true, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			mx := &strictMX{}
			port, err := scriptedMX(t, "127.0.0.1", 0, mx.serve(c.offer))
			if err != nil {
				t.Fatal(err)
			}
			d := testDialer(map[string][]string{"mx.example": {"127.0.0.1"}})
			conn, res := d.Dial(context.Background(), &Destination{Key: "k", Hosts: []string{"mx.example"}, Port: port, TLS: c.route})
			if conn == nil {
				t.Fatalf("dial: %+v", res)
			}
			defer conn.Close()
			if conn.TLS != c.tls {
				t.Fatalf("TLS %v, want %v", conn.TLS, c.tls)
			}
			if r := conn.Send("a@ca.example", "b@x.example", plainMsg); r.Code != 250 {
				t.Fatalf("first message: %v", r)
			}
			if r := conn.Send("a@ca.example", "refused@x.example", plainMsg); r.Code != 550 {
				t.Fatalf("refused recipient: %v, want the 550", r)
			}
			for i := range 2 {
				if r := conn.Send("a@ca.example", fmt.Sprintf("c%d@x.example", i), plainMsg); r.Code != 250 {
					t.Fatalf("message %d after the refusal (RSET, then MAIL): %v", i, r)
				}
			}
			if n := mx.count("EHLO"); n != c.ehlos {
				t.Errorf("the receiver read %d EHLO, want %d:\n%s", n, c.ehlos, strings.Join(mx.commands, "\n"))
			}
			if n := mx.count("RSET"); n != 1 {
				t.Errorf("%d RSET, want 1", n)
			}
		})
	}
}

// A receiver that does not know EHLO gets HELO, once: the dialer's EHLO
// is refused and go-smtp falls back to HELO without asking EHLO again.
func TestHELOWhenEHLOIsUnknown(t *testing.T) {
	mx := &strictMX{noEHLO: true}
	port, err := scriptedMX(t, "127.0.0.1", 0, mx.serve(nil))
	if err != nil {
		t.Fatal(err)
	}
	d := testDialer(map[string][]string{"mx.example": {"127.0.0.1"}})
	conn, res := d.Dial(context.Background(), &Destination{Key: "k", Hosts: []string{"mx.example"}, Port: port, TLS: config.TLSOpportunistic})
	if conn == nil {
		t.Fatalf("dial: %+v\n%s", res, strings.Join(mx.commands, "\n"))
	}
	defer conn.Close()
	if r := conn.Send("a@ca.example", "b@x.example", plainMsg); r.Code != 250 {
		t.Fatalf("send: %v", r)
	}
	if mx.count("EHLO") != 1 || mx.count("HELO") != 1 {
		t.Errorf("commands:\n%s", strings.Join(mx.commands, "\n"))
	}
}
