package gateway

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/delivery"
	"github.com/certgate/certgate/metrics"
	"github.com/certgate/certgate/sim"
	"golang.org/x/crypto/bcrypt"
)

// recordingAcceptor keeps what a submission server accepted.
type recordingAcceptor struct {
	mu   sync.Mutex
	envs []*Envelope
}

func (a *recordingAcceptor) Accept(_ context.Context, env *Envelope, _ []byte) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.envs = append(a.envs, env)
	return "id", nil
}

// A smarthost route logs in over verified TLS; certgate's own submission
// server plays the smarthost.
func TestDeliverThroughSmarthostWithAuth(t *testing.T) {
	hash, _ := bcrypt.GenerateFromPassword([]byte("smarthost-secret"), bcrypt.MinCost)
	dir, err := NewDirectory([]config.Tenant{{Name: "relay", FromDomains: []string{"ca.example"},
		Users: []config.User{{Username: "outbound", PasswordHash: string(hash)}}}}, "")
	if err != nil {
		t.Fatal(err)
	}
	serverTLS, clientTLS := sim.TLSPair("relay.ca.example")
	acc := &recordingAcceptor{}
	srv := NewServer(ServerConfig{Hostname: "relay.ca.example", TLS: serverTLS, MaxMessageBytes: 1 << 20,
		ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}, dir, acc, metrics.New(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	_, port, _ := net.SplitHostPort(l.Addr().String())
	portN, _ := strconv.Atoi(port)
	d := &delivery.Dialer{Hostname: "out.ca.example", Resolver: delivery.StaticResolver{Hosts: map[string][]string{"relay.ca.example": {"127.0.0.1"}}},
		ConnectTimeout: 5 * time.Second, CommandTimeout: 5 * time.Second, DataTimeout: 5 * time.Second}
	dest := &delivery.Destination{Key: "k", Hosts: []string{"relay.ca.example"}, Port: portN, TLS: config.TLSRequired,
		RootCAs: clientTLS.RootCAs, User: "outbound", Pass: "smarthost-secret"}

	c, res := d.Dial(context.Background(), dest)
	if c == nil {
		t.Fatalf("dial: %v", res)
	}
	msg := []byte("From: <a@ca.example>\r\nTo: <b@gmail.com>\r\nSubject: hi\r\n\r\nbody\r\n")
	if r := c.Send("a@ca.example", "b@gmail.com", msg); r.Code != 250 {
		t.Fatalf("send: %v", r)
	}
	c.Close()
	if len(acc.envs) != 1 || acc.envs[0].AuthUser != "outbound" || !acc.envs[0].TLS {
		t.Fatalf("smarthost saw %+v", acc.envs)
	}

	dest.Pass = "wrong"
	if c, res := d.Dial(context.Background(), dest); c != nil || res.Code != 535 {
		t.Fatalf("wrong smarthost password: conn %v, result %v", c != nil, res)
	}
}
