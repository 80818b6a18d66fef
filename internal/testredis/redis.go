// Package testredis runs a private redis-server on loopback for the tests
// and benchmarks of the Redis-backed limiter: a random port on 127.0.0.1,
// no persistence (nothing is saved, no append-only file), its directory
// the test's temporary one, stopped when the test ends. It is for tests
// and bench tools only.
package testredis

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/certgate/certgate/internal/loopback"
)

// Server is a running private redis-server.
type Server struct {
	Dir  string
	Addr string // 127.0.0.1:port, no password, no TLS
	cmd  *exec.Cmd
	done chan error
	out  bytes.Buffer
}

// Missing says why redis-server cannot run here ("" when it can).
func Missing() string {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return "redis-server is not installed (apt-get install redis-server)"
	}
	return ""
}

// New starts a private redis-server for t and stops it when t ends. Where
// redis-server is missing it skips t, saying why, unless CERTGATE_E2E=1
// demands it: then t fails.
func New(t testing.TB) *Server {
	t.Helper()
	if why := Missing(); why != "" {
		if os.Getenv("CERTGATE_E2E") == "1" {
			t.Fatal(why + "; CERTGATE_E2E=1 requires it")
		}
		t.Skip("skipping: " + why + " (with CERTGATE_E2E=1 this is a failure)")
	}
	s, err := Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// Start starts redis-server in the foreground on a free loopback port,
// with dir as its working directory, and waits until it answers PING.
func Start(dir string) (*Server, error) {
	port, err := loopback.FreePort()
	if err != nil {
		return nil, err
	}
	s := &Server{Dir: dir, Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	if err := s.run(port); err != nil {
		return nil, err
	}
	return s, nil
}

// Restart starts a stopped server again on the same address, empty (there
// is no persistence), so that clients that lost it find a Redis again
// where they left it: a Redis outage and its end.
func (s *Server) Restart() error {
	if s.cmd != nil {
		return fmt.Errorf("redis-server on %s is running: Stop it first", s.Addr)
	}
	_, p, err := net.SplitHostPort(s.Addr)
	if err != nil {
		return err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return err
	}
	s.out.Reset()
	return s.run(port)
}

// run starts redis-server on port and waits until it answers PING.
func (s *Server) run(port int) error {
	dir := s.Dir
	s.cmd = exec.Command("redis-server",
		"--bind", "127.0.0.1", "--port", strconv.Itoa(port),
		"--dir", dir, "--save", "", "--appendonly", "no",
		"--daemonize", "no", "--protected-mode", "yes",
		"--logfile", filepath.Join(dir, "redis.log"))
	s.cmd.Dir = dir
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	s.cmd.Stdout, s.cmd.Stderr = &s.out, &s.out
	if err := s.cmd.Start(); err != nil {
		s.cmd = nil
		return err
	}
	s.done = make(chan error, 1)
	go func() { s.done <- s.cmd.Wait() }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if ping(s.Addr) == nil {
			return nil
		}
		select {
		case err := <-s.done:
			s.cmd = nil
			return fmt.Errorf("redis-server exited: %v: %s%s", err, s.out.String(), s.Log())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return fmt.Errorf("redis-server did not answer on %s: %s", s.Addr, s.Log())
		}
	}
}

// ping sends PING over RESP and wants +PONG.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// Stop stops redis-server and waits for it; safe to call twice.
func (s *Server) Stop() error {
	if s.cmd == nil || s.cmd.Process == nil {
		return nil
	}
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	var err error
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
		err = fmt.Errorf("redis-server on %s did not stop on SIGTERM: killed", s.Addr)
	}
	s.cmd = nil
	return err
}

// Log is redis-server's log so far, for failure messages.
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "redis.log"))
	return string(b)
}
