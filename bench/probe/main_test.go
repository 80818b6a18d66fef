package main

import (
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

func TestWireMessage(t *testing.T) {
	got := string(wireMessage([]byte("Subject: x\n\n.hidden\nbody\r\n..two\n")))
	want := "Subject: x\r\n\r\n..hidden\r\nbody\r\n...two\r\n"
	if got != want {
		t.Errorf("wireMessage = %q, want %q", got, want)
	}
}

func TestQuantile(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		q    float64
		want float64
	}{{0.5, 50}, {0.99, 99}, {1, 100}, {0, 1}} {
		if got := quantile(ds, c.q); got != c.want {
			t.Errorf("quantile(%v) = %v ms, want %v", c.q, got, c.want)
		}
	}
	if got := quantile(nil, 0.5); got != 0 {
		t.Errorf("quantile of nothing = %v, want 0", got)
	}
}

// The prober speaks to a real SMTP server and the message arrives whole,
// over one connection per message and over one for all.
func TestProberTransaction(t *testing.T) {
	be := &countBackend{}
	srv := smtp.NewServer(be)
	srv.Domain = "test.example"
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Close()

	body := wireMessage([]byte("From: a@x.example\nSubject: t\n\n.line\n"))
	for _, reuse := range []bool{false, true} {
		p := &prober{addr: l.Addr().String(), from: "a@x.example", to: "b@y.example", helo: "probe.test", body: body, reuse: reuse}
		for range 3 {
			if _, err := p.transaction(); err != nil {
				t.Fatalf("reuse=%v: %v", reuse, err)
			}
		}
		p.quit()
	}
	be.mu.Lock()
	defer be.mu.Unlock()
	if be.messages != 6 || be.conns != 4 {
		t.Errorf("server saw %d messages over %d connections, want 6 over 4", be.messages, be.conns)
	}
	if want := "From: a@x.example\r\nSubject: t\r\n\r\n.line\r\n"; be.last != want {
		t.Errorf("message = %q, want %q", be.last, want)
	}
}

func TestWatcherSelf(t *testing.T) {
	w := &watcher{pids: map[int]bool{os.Getpid(): true}, matched: map[int]bool{}, seen: map[int]*procCPU{}}
	s := w.sample()
	if s.procs != 1 || s.rss <= 0 || s.pss <= 0 {
		t.Errorf("sample of this process = %+v, want one process with RSS and PSS", s)
	}
	w = &watcher{env: "PROBE_TEST_MARK=" + strings.Repeat("z", 8), pids: map[int]bool{}, matched: map[int]bool{}, seen: map[int]*procCPU{}}
	if s := w.sample(); s.procs != 0 {
		t.Errorf("no process carries the mark, but %d matched", s.procs)
	}
}

type countBackend struct {
	mu       sync.Mutex
	messages int
	conns    int
	last     string
}

func (b *countBackend) NewSession(*smtp.Conn) (smtp.Session, error) {
	b.mu.Lock()
	b.conns++
	b.mu.Unlock()
	return &countSession{b: b}, nil
}

type countSession struct{ b *countBackend }

func (s *countSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *countSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s *countSession) Reset()                               {}
func (s *countSession) Logout() error                        { return nil }
func (s *countSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.b.mu.Lock()
	s.b.messages++
	s.b.last = string(b)
	s.b.mu.Unlock()
	return nil
}
