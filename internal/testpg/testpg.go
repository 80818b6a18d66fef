// Package testpg runs a private PostgreSQL for tests: a cluster made by
// initdb in the test's temporary directory, listening on a free loopback
// port (and on a unix socket in that directory, never the system's), with
// fsync off, stopped when the test ends. It is for tests only.
//
// PostgreSQL refuses to run as root, so when the tests run as root the
// cluster belongs to an unprivileged user (postgres when Debian's package
// made it, else nobody) and its processes run with that user's ids.
package testpg

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/certgate/certgate/internal/loopback"
)

// Server is a running private PostgreSQL.
type Server struct {
	Dir  string // the cluster's directory (data, socket, log)
	Addr string // 127.0.0.1:port
	bin  string
	cred *syscall.Credential // nil when not root
	cmd  *exec.Cmd
	done chan error
	mu   sync.Mutex
	log  bytes.Buffer
	dbs  atomic.Int64
}

// superuser is the role initdb makes; connections from loopback are
// trusted (the cluster is private to the test and listens nowhere else).
const superuser = "postgres"

// bindir finds the newest PostgreSQL server binaries: Debian keeps them
// out of PATH, in /usr/lib/postgresql/<major>/bin.
func bindir() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		a, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		b, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return a > b
	})
	for _, d := range dirs {
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "postgres")) {
			return d
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		d := filepath.Dir(p)
		if isExec(filepath.Join(d, "postgres")) {
			return d
		}
	}
	return ""
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// Missing says why a private PostgreSQL cannot run here ("" when it can).
func Missing() string {
	if bindir() == "" {
		return "PostgreSQL is not installed (apt-get install postgresql)"
	}
	return ""
}

// Start starts a private PostgreSQL for t and stops it when t ends. When
// PostgreSQL is not installed the test is skipped, unless CERTGATE_E2E=1
// demands it; then it fails.
func Start(t testing.TB) *Server {
	t.Helper()
	if msg := Missing(); msg != "" {
		if os.Getenv("CERTGATE_E2E") == "1" {
			t.Fatalf("%s; CERTGATE_E2E=1 requires it", msg)
		}
		t.Skipf("skipping: %s (with CERTGATE_E2E=1 this is a failure)", msg)
	}
	s, err := start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stop PostgreSQL: %v", err)
		}
	})
	return s
}

// StartIn starts a private PostgreSQL in dir, for the demo and bench
// tools (tests use Start); the caller stops it. Like the tests', it runs
// with fsync off: a crash of the machine may lose it.
func StartIn(dir string) (*Server, error) {
	if msg := Missing(); msg != "" {
		return nil, errors.New(msg)
	}
	return start(dir)
}

// owner is the user the cluster runs as when the tests run as root.
func owner() (*syscall.Credential, error) {
	var errs []error
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
	}
	return nil, fmt.Errorf("no unprivileged user to run PostgreSQL as: %w", errors.Join(errs...))
}

func start(tmp string) (*Server, error) {
	s := &Server{Dir: filepath.Join(tmp, "pg"), bin: bindir()}
	if err := os.Mkdir(s.Dir, 0o700); err != nil {
		return nil, err
	}
	if os.Geteuid() == 0 {
		cred, err := owner()
		if err != nil {
			return nil, err
		}
		s.cred = cred
		if err := os.Chown(s.Dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, err
		}
		// The owner must reach its directory: every directory on the
		// way must let others pass (not list).
		for d := tmp; d != "/" && d != "."; d = filepath.Dir(d) {
			if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o001 == 0 {
				if err := os.Chmod(d, fi.Mode().Perm()|0o001); err != nil {
					return nil, err
				}
			}
		}
	}
	data := filepath.Join(s.Dir, "data")
	initdb := s.command("initdb", "-D", data, "-U", superuser, "--auth=trust",
		"--no-locale", "-E", "UTF8", "--no-sync", "--no-instructions")
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %v: %s", err, out)
	}
	port, err := loopback.FreePort()
	if err != nil {
		return nil, err
	}
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	// A unix socket's path is limited to about 107 bytes; a longer
	// temporary directory gets none (the tests use TCP).
	sock := s.Dir
	if len(sock)+len("/.s.PGSQL.65535") > 100 {
		sock = ""
	}
	s.cmd = s.command("postgres", "-D", data,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "port="+strconv.Itoa(port),
		"-c", "unix_socket_directories="+sock,
		// Tests only: a crash of the machine may lose the cluster.
		"-c", "fsync=off",
		"-c", "synchronous_commit=off",
		"-c", "full_page_writes=off",
		"-c", "max_connections=200",
		"-c", "lc_messages=C",
		"-c", "logging_collector=off",
	)
	return s, s.run()
}

// command is one of PostgreSQL's programs, run as the cluster's owner.
func (s *Server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: s.cred}
	cmd.Dir = s.Dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	return cmd
}

// run starts the postmaster and returns once its log says it accepts
// connections, or with its log when it exits first.
func (s *Server) run() error {
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		return err
	}
	s.cmd.Stdout = nil
	if err := s.cmd.Start(); err != nil {
		return err
	}
	ready := make(chan struct{})
	s.done = make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			s.log.WriteString(line + "\n")
			s.mu.Unlock()
			if !signalled && strings.Contains(line, "database system is ready to accept connections") {
				signalled = true
				close(ready)
			}
		}
		s.done <- s.cmd.Wait()
	}()
	select {
	case <-ready:
		return nil
	case err := <-s.done:
		s.cmd = nil
		return fmt.Errorf("postgres exited: %v: %s", err, s.Log())
	case <-time.After(60 * time.Second):
		s.Stop()
		return fmt.Errorf("postgres did not become ready: %s", s.Log())
	}
}

// Stop stops PostgreSQL (a fast shutdown: sessions are ended) and waits
// for it; safe to call twice.
func (s *Server) Stop() error {
	if s.cmd == nil || s.cmd.Process == nil {
		return nil
	}
	syscall.Kill(s.cmd.Process.Pid, syscall.SIGINT)
	var err error
	select {
	case err = <-s.done:
	case <-time.After(30 * time.Second):
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
		err = errors.New("postgres did not stop in 30s; killed")
	}
	s.cmd = nil
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return fmt.Errorf("postgres: %v: %s", err, s.Log())
	}
	return err
}

// Log is PostgreSQL's log so far, for failure messages.
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.String()
}

// DSN is the connection string of database db as the superuser.
func (s *Server) DSN(db string) string {
	u := url.URL{Scheme: "postgres", User: url.User(superuser), Host: s.Addr, Path: "/" + db,
		RawQuery: "sslmode=disable"}
	return u.String()
}

// NewDB creates an empty database on s and returns its DSN. Each call
// gets a database of its own, so the tests that share a server do not
// see each other's rows.
func (s *Server) NewDB(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("test_%d", s.dbs.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		t.Fatalf("connect to PostgreSQL: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	return s.DSN(name)
}
