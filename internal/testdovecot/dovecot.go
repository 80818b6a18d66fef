// Package testdovecot runs a private Dovecot IMAP server on loopback for
// the tests and benchmarks of the seed-mailbox watcher: its configuration,
// mail and sockets live in one directory, its users in a passwd-file, and
// every user has INBOX and a \Junk mailbox. It is for tests and bench
// tools only.
package testdovecot

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/certgate/certgate/internal/loopback"
)

// User is one mailbox account.
type User struct {
	Name, Password string
}

// Server is a running private Dovecot.
type Server struct {
	Dir  string
	Addr string // 127.0.0.1:port, plaintext IMAP (LOGIN allowed: loopback only)
	conf string
	cmd  *exec.Cmd
	done chan error
}

// Missing says why Dovecot cannot run here ("" when it can): the binary
// and root (its master drops privileges to the mail user).
func Missing() string {
	if _, err := exec.LookPath("dovecot"); err != nil {
		if _, err := os.Stat("/usr/sbin/dovecot"); err != nil {
			return "dovecot is not installed (apt-get install dovecot-imapd)"
		}
	}
	if os.Geteuid() != 0 {
		return "a private Dovecot must be started as root (it drops to the mail user)"
	}
	return ""
}

func binary() string {
	if p, err := exec.LookPath("dovecot"); err == nil {
		return p
	}
	return "/usr/sbin/dovecot"
}

// Start writes a configuration for users under dir and starts Dovecot in
// the foreground on a free loopback port.
func Start(dir string, users []User) (*Server, error) {
	port, err := loopback.FreePort()
	if err != nil {
		return nil, err
	}
	s := &Server{Dir: dir, Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), conf: filepath.Join(dir, "dovecot.conf")}
	// The mail user must reach its mail: every directory on the way.
	for d := dir; d != "/" && d != "."; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o005 != 0o005 {
			os.Chmod(d, fi.Mode().Perm()|0o005)
		}
	}
	for _, sub := range []string{"run", "state", "mail"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return nil, err
		}
	}
	uid, gid, err := mailUser()
	if err != nil {
		return nil, err
	}
	if err := os.Chown(filepath.Join(dir, "mail"), uid, gid); err != nil {
		return nil, err
	}
	var pw bytes.Buffer
	for _, u := range users {
		fmt.Fprintf(&pw, "%s:{PLAIN}%s\n", u.Name, u.Password)
	}
	if err := os.WriteFile(filepath.Join(dir, "passwd"), pw.Bytes(), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(s.conf, []byte(config(dir, port, len(users))), 0o644); err != nil {
		return nil, err
	}
	return s, s.start()
}

// config is a minimal Dovecot 2.3 configuration: IMAP on one loopback
// port without TLS, passwd-file users, Maildir, and a \Junk mailbox made
// for every user (RFC 6154).
func config(dir string, port, users int) string {
	procs := max(100, 2*users+20) // two watcher connections per user, and some for the test itself
	return fmt.Sprintf(`base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = %[1]s/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:%[1]s/mail/%%u
mail_uid = %[4]s
mail_gid = %[5]s
first_valid_uid = 1
default_process_limit = %[3]d
default_client_limit = %[6]d
mail_max_userip_connections = 20
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%%u %[1]s/passwd
}
userdb {
  driver = static
  args = home=%[1]s/mail/%%u
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = %[2]d
  }
  inet_listener imaps {
    port = 0
  }
  # High-performance mode: a few login processes serve every client,
  # rather than one forked per connection.
  service_count = 0
  process_min_avail = 2
}
service imap {
  process_limit = %[3]d
}
service pop3-login {
  inet_listener pop3 {
    port = 0
  }
}
namespace inbox {
  inbox = yes
  separator = /
  mailbox Junk {
    special_use = \Junk
    auto = subscribe
  }
}
`, dir, port, procs, mailUserName, mailGroupName(), 4*procs)
}

const mailUserName = "nobody"

func mailGroupName() string {
	if g, err := user.LookupGroup("nogroup"); err == nil {
		return g.Name
	}
	return "nobody"
}

func mailUser() (uid, gid int, err error) {
	u, err := user.Lookup(mailUserName)
	if err != nil {
		return 0, 0, err
	}
	g, err := user.LookupGroup(mailGroupName())
	if err != nil {
		return 0, 0, err
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(g.Gid)
	return uid, gid, nil
}

func (s *Server) start() error {
	s.cmd = exec.Command(binary(), "-F", "-c", s.conf)
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out bytes.Buffer
	s.cmd.Stdout, s.cmd.Stderr = &out, &out
	if err := s.cmd.Start(); err != nil {
		return err
	}
	s.done = make(chan error, 1)
	go func() { s.done <- s.cmd.Wait() }()
	// Ready when it answers with its greeting.
	deadline := time.Now().Add(15 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", s.Addr, time.Second); err == nil {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 256)
			n, _ := c.Read(buf)
			c.Close()
			if strings.HasPrefix(string(buf[:n]), "* OK") {
				return nil
			}
		}
		select {
		case err := <-s.done:
			return fmt.Errorf("dovecot exited: %v: %s%s", err, out.String(), s.Log())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return fmt.Errorf("dovecot did not answer on %s: %s", s.Addr, s.Log())
		}
	}
}

// Stop stops Dovecot and waits for it; safe to call twice.
func (s *Server) Stop() error {
	if s.cmd == nil || s.cmd.Process == nil {
		return nil
	}
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	}
	s.cmd = nil
	// Its children close their sockets as they go: wait for the port.
	for i := 0; i < 200; i++ {
		c, err := net.DialTimeout("tcp", s.Addr, 100*time.Millisecond)
		if err != nil {
			return nil
		}
		c.Close()
		time.Sleep(25 * time.Millisecond)
	}
	return errors.New("dovecot's port still answers after stop")
}

// Restart stops and starts Dovecot on the same port with the same mail:
// every client connection drops, as when a provider restarts a server.
func (s *Server) Restart() error {
	if err := s.Stop(); err != nil {
		return err
	}
	return s.start()
}

// Log is Dovecot's log so far, for failure messages.
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "dovecot.log"))
	return string(b)
}
