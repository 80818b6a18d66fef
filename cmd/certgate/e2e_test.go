package main

// The end-to-end suite: the real certgate binary, started as an operator
// starts it, with real mail software from Debian packages on loopback:
//
//   - swaks submits the sample certificate mails over STARTTLS with AUTH
//     (TestE2ESwaksSubmission);
//   - a private Postfix instance, the issuer's MTA, relays them through
//     certgate with SASL over TLS (TestE2EPostfixRelay);
//   - another, as the receiving MX of recv.example, takes certgate's
//     deliveries over STARTTLS into maildirs, defers one mailbox with 450
//     from an access table and refuses an unknown user with 550
//     (TestE2EPostfixReceivingMX, e2e_mx_test.go);
//   - every copy the simulated MX receives is verified by python3-dkim
//     (testdata/e2e/dkimverify.py), not only by go-msgauth, against the TXT
//     records that "certgate dkim keygen" printed;
//   - "certgate check-config" reports every problem of a broken file with
//     its line (TestE2ECheckConfig).
//
// A test whose tool is missing skips, saying why, unless CERTGATE_E2E=1
// (as scripts/check.sh and CI set it): then it fails, so that CI never
// passes by skipping. The package's TestMain lives here.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/mail"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/certgate/certgate/sim"
)

// e2eRequiredEnv makes a missing tool a failure instead of a skip.
const e2eRequiredEnv = "CERTGATE_E2E"

func TestMain(m *testing.M) {
	code := m.Run()
	e2eBinary.remove()
	os.Exit(code)
}

// e2eRequired reports whether the suite must run rather than skip.
func e2eRequired() bool { return os.Getenv(e2eRequiredEnv) == "1" }

// e2eMissing skips the test for a missing prerequisite, or fails it when
// CERTGATE_E2E=1.
func e2eMissing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if e2eRequired() {
		t.Fatalf("%s\n(%s=1 requires the end-to-end suite; scripts/check.sh installs what it needs)", msg, e2eRequiredEnv)
	}
	t.Skipf("skipping: %s (with %s=1 this is a failure)", msg, e2eRequiredEnv)
}

// e2eStart marks an end-to-end test: it runs in parallel with the others
// and is left out of go test -short unless CERTGATE_E2E=1.
func e2eStart(t *testing.T) {
	t.Helper()
	if testing.Short() && !e2eRequired() {
		t.Skip("skipping the end-to-end test in -short mode")
	}
	t.Parallel()
}

// e2eToolPackages names the Debian package of each tool, for the skip message.
var e2eToolPackages = map[string]string{"swaks": "swaks", "postfix": "postfix", "postconf": "postfix"}

// requireTool returns the path of an external program, looking in PATH and
// then in the sbin directories a non-login PATH lacks. A missing tool skips
// the test, or fails it under CERTGATE_E2E=1.
func requireTool(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	pkg := e2eToolPackages[name]
	if pkg == "" {
		pkg = name
	}
	e2eMissing(t, "%s is not installed (apt-get install %s)", name, pkg)
	return ""
}

var e2ePython struct {
	once sync.Once
	path string
	why  string
}

// requirePythonDKIM returns a python3 that imports dkim and nacl (for
// Ed25519). Debian's python3-dkim installs for /usr/bin/python3, which may
// not be the python3 first in PATH (pyenv); CERTGATE_PYTHON names another.
func requirePythonDKIM(t testing.TB) string {
	t.Helper()
	e2ePython.once.Do(func() {
		var candidates []string
		if p := os.Getenv("CERTGATE_PYTHON"); p != "" {
			candidates = append(candidates, p)
		}
		candidates = append(candidates, "/usr/bin/python3")
		if p, err := exec.LookPath("python3"); err == nil {
			candidates = append(candidates, p)
		}
		var tried []string
		for _, py := range candidates {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			out, err := exec.CommandContext(ctx, py, "-c", "import dkim, nacl").CombinedOutput()
			cancel()
			if err == nil {
				e2ePython.path = py
				return
			}
			tried = append(tried, fmt.Sprintf("%s: %v %s", py, err, bytes.TrimSpace(out)))
		}
		e2ePython.why = strings.Join(tried, "; ")
	})
	if e2ePython.path == "" {
		e2eMissing(t, "no python3 with python3-dkim and python3-nacl (apt-get install python3-dkim python3-nacl): %s", e2ePython.why)
	}
	return e2ePython.path
}

// e2eBuild is the certgate binary, built once per test binary.
type e2eBuild struct {
	once sync.Once
	dir  string
	path string
	out  []byte
	err  error
}

var e2eBinary e2eBuild

func (b *e2eBuild) remove() {
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
}

// e2eCertgateBinary builds the certgate binary once and returns its path. It
// is built with -race when the tests are, so that a data race in the daemon
// under the end-to-end traffic fails the test too.
func e2eCertgateBinary(t testing.TB) string {
	t.Helper()
	e2eBinary.once.Do(func() {
		goTool, err := exec.LookPath("go") // go test puts GOROOT/bin first in PATH
		if err != nil {
			e2eBinary.err = fmt.Errorf("no go command in PATH: %w", err)
			return
		}
		if e2eBinary.dir, err = os.MkdirTemp("", "certgate-e2e-bin-"); err != nil {
			e2eBinary.err = err
			return
		}
		e2eBinary.path = filepath.Join(e2eBinary.dir, "certgate")
		// No VCS stamping: the test needs none, and it fails where the
		// checkout has .git but the machine has no git.
		args := []string{"build", "-buildvcs=false", "-o", e2eBinary.path}
		if e2eRaceEnabled() {
			args = append(args, "-race")
		}
		start := time.Now()
		var code int
		e2eBinary.out, code, e2eBinary.err = e2eExec(10*time.Minute, goTool, append(args, ".")...)
		if e2eBinary.err == nil && code != 0 {
			e2eBinary.err = fmt.Errorf("go build: exit %d", code)
		}
		t.Logf("built %s (race detector: %v) in %v", e2eBinary.path, e2eRaceEnabled(), time.Since(start).Round(time.Millisecond))
	})
	if e2eBinary.err != nil {
		t.Fatalf("building certgate: %v\n%s", e2eBinary.err, e2eBinary.out)
	}
	return e2eBinary.path
}

// e2eRaceEnabled reports whether this test binary was built with -race.
func e2eRaceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// e2eExec runs a command with a deadline. It returns the combined output
// and the exit code; err is set only when the command could not run, did
// not exit by itself in time, or died from a signal.
func e2eExec(timeout time.Duration, name string, args ...string) (out []byte, code int, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 5 * time.Second // a grandchild holding the output open cannot hang us
	out, err = cmd.CombinedOutput()
	if ctx.Err() != nil {
		return out, -1, fmt.Errorf("%s: no result within %v", name, timeout)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.Exited() {
		return out, ee.ExitCode(), nil
	}
	if err != nil {
		return out, -1, fmt.Errorf("%s: %w", name, err)
	}
	return out, 0, nil
}

// e2eRun is e2eExec that fails the test when the command cannot run.
func e2eRun(t testing.TB, timeout time.Duration, name string, args ...string) (string, int) {
	t.Helper()
	out, code, err := e2eExec(timeout, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out), code
}

// e2eFreePort returns a loopback port that was free a moment ago.
func e2eFreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func e2eRandomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// e2eTail returns the last n lines of a file, for failure reports.
func e2eTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.SplitAfter(string(b), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... (%d earlier lines)\n", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "")
}

// e2eSelfSigned writes a self-signed certificate for host (and 127.0.0.1)
// and its key to dir as PEM files.
func e2eSelfSigned(t testing.TB, dir, host string) (certFile, keyFile string, cert tls.Certificate) {
	t.Helper()
	c, err := sim.SelfSigned(host, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if certFile, keyFile, err = c.WriteFiles(dir, host); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, c.TLS
}

// e2eKey is a DKIM key made by "certgate dkim keygen", with the TXT record
// it printed.
type e2eKey struct {
	Domain, Selector, Algorithm string
	KeyFile                     string
	Name                        string // DNS name of the record, without the trailing dot
	Value                       string // the record's character-strings joined
}

var e2eZoneLine = regexp.MustCompile(`(?m)^(\S+)\s+IN\s+TXT\s+(.+?)\s*$`)

// e2eKeygen runs "certgate dkim keygen" and reads the TXT record from what
// it prints, the way an operator copies it into the zone. The record then
// serves both verifiers, so python3-dkim checks the printed record too.
func e2eKeygen(t testing.TB, bin, dir, domain, selector, algorithm string) e2eKey {
	t.Helper()
	out, code := e2eRun(t, 2*time.Minute, bin, "dkim", "keygen", "--domain", domain, "--selector", selector,
		"--algorithm", algorithm, "--out", dir)
	if code != 0 {
		t.Fatalf("certgate dkim keygen %s/%s: exit %d\n%s", domain, selector, code, out)
	}
	m := e2eZoneLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("certgate dkim keygen printed no zone-file TXT line:\n%s", out)
	}
	if want := selector + "._domainkey." + domain + "."; m[1] != want {
		t.Fatalf("keygen record name %q, want %q", m[1], want)
	}
	value, err := e2eTXTStrings(m[2])
	if err != nil {
		t.Fatalf("keygen record %q: %v", m[0], err)
	}
	base := filepath.Join(dir, selector+"._domainkey."+domain)
	if fi, err := os.Stat(base + ".pem"); err != nil || fi.Mode().Perm()&0o077 != 0 {
		t.Fatalf("keygen private key %s.pem: %v (mode %v); want a file only its owner reads", base, err, fi.Mode())
	}
	if txt, err := os.ReadFile(base + ".txt"); err != nil || !strings.Contains(string(txt), m[0]) {
		t.Fatalf("keygen record file %s.txt (%v) lacks the printed record %q:\n%s", base, err, m[0], txt)
	}
	wantK := map[string]string{"rsa2048": "k=rsa", "ed25519": "k=ed25519"}[algorithm]
	if !strings.HasPrefix(value, "v=DKIM1;") || !strings.Contains(value, wantK) || !strings.Contains(value, "p=") {
		t.Fatalf("keygen record value %q: want v=DKIM1, %s and p=", value, wantK)
	}
	return e2eKey{Domain: domain, Selector: selector, Algorithm: algorithm, KeyFile: base + ".pem",
		Name: strings.TrimSuffix(m[1], "."), Value: value}
}

// e2eSigAlg is the a= tag a key signs with.
func (k e2eKey) e2eSigAlg() string {
	if k.Algorithm == "ed25519" {
		return "ed25519-sha256"
	}
	return "rsa-sha256"
}

// e2eTXTStrings joins the quoted character-strings of a zone-file TXT
// record, undoing the \" \\ and \DDD escapes of RFC 1035 5.1.
func e2eTXTStrings(s string) (string, error) {
	var b strings.Builder
	s = strings.TrimSpace(s)
	if s == "" {
		return "", errors.New("no character-strings")
	}
	for s != "" {
		if s[0] != '"' {
			return "", fmt.Errorf("expected a quoted string at %q", s)
		}
		i, closed := 1, false
		for i < len(s) && !closed {
			switch c := s[i]; {
			case c == '"':
				closed = true
				i++
			case c == '\\' && i+3 < len(s) && e2eIsDigits(s[i+1:i+4]):
				n, _ := strconv.Atoi(s[i+1 : i+4])
				b.WriteByte(byte(n))
				i += 4
			case c == '\\' && i+1 < len(s):
				b.WriteByte(s[i+1])
				i += 2
			default:
				b.WriteByte(c)
				i++
			}
		}
		if !closed {
			return "", fmt.Errorf("unterminated quoted string in %q", s)
		}
		s = strings.TrimLeft(s[i:], " \t")
	}
	return b.String(), nil
}

func e2eIsDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// e2eSample is one of the sample certificate mails in sim/mail/.
type e2eSample struct {
	Name      string
	Path      string   // absolute
	From      string   // the From header's address, used as envelope sender too
	Rcpts     []string // To and Cc
	MessageID string
	Subject   string
}

func e2eSamples(t testing.TB) []e2eSample {
	t.Helper()
	paths, err := filepath.Glob("../../sim/mail/*.eml")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no sample mails in sim/mail/ (%v)", err)
	}
	sort.Strings(paths)
	var out []e2eSample
	for _, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := os.ReadFile(abs)
		if err != nil {
			t.Fatal(err)
		}
		msg, err := mail.ReadMessage(bytes.NewReader(raw))
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		from, err := mail.ParseAddress(msg.Header.Get("From"))
		if err != nil {
			t.Fatalf("%s: From: %v", p, err)
		}
		s := e2eSample{Name: filepath.Base(p), Path: abs, From: from.Address,
			MessageID: msg.Header.Get("Message-Id"), Subject: msg.Header.Get("Subject")}
		for _, field := range []string{"To", "Cc"} {
			if msg.Header.Get(field) == "" {
				continue
			}
			list, err := msg.Header.AddressList(field)
			if err != nil {
				t.Fatalf("%s: %s: %v", p, field, err)
			}
			for _, a := range list {
				s.Rcpts = append(s.Rcpts, a.Address)
			}
		}
		if len(s.Rcpts) == 0 || s.MessageID == "" {
			t.Fatalf("%s: a sample needs recipients and a Message-ID", p)
		}
		out = append(out, s)
	}
	return out
}

// e2eCopyKey identifies one delivered copy: the message and its recipient.
func e2eCopyKey(messageID, rcpt string) string {
	return messageID + " -> " + strings.ToLower(rcpt)
}

// e2eSetup is one certgate under test with its simulated receiving MX.
type e2eSetup struct {
	t        *testing.T
	bin      string
	dir      string
	keys     []e2eKey
	records  string // JSON file of the TXT records, for dkimverify.py
	mx       *sim.Provider
	mxHost   string
	username string
	password string
	token    string
	certFile string
	keyFile  string
	samples  []e2eSample

	smtpAddr string // certgate's submission listener
	httpAddr string
	logPath  string
	proc     *e2eProcess

	// More of static_dns: recipient domain -> MX host, and MX host -> IP
	// (on the simulated MX's port, as MX delivery uses one port).
	extraMX, extraHosts map[string]string
}

// e2eRcptDomains are the recipient domains of the sample mails; the static
// DNS table sends them all to the one simulated MX.
var e2eRcptDomains = []string{"empresa.example", "client.example", "loja.example"}

// newE2ESetup generates DKIM keys with the binary, starts the simulated MX
// (offering STARTTLS and verifying DKIM with the keygen records), writes a
// configuration and starts "certgate serve".
func newE2ESetup(t *testing.T) *e2eSetup { return newE2ESetupWith(t, nil) }

// newE2ESetupWith is newE2ESetup with prepare run before certgate starts,
// to add to its configuration.
func newE2ESetupWith(t *testing.T, prepare func(*e2eSetup)) *e2eSetup {
	t.Helper()
	s := &e2eSetup{t: t, bin: e2eCertgateBinary(t), dir: t.TempDir(), mxHost: "mx.e2e.example",
		username: "issuer-app", samples: e2eSamples(t)}
	s.password = e2eRandomHex(t, 12)
	s.token = e2eRandomHex(t, 24)

	keyDir := filepath.Join(s.dir, "dkim")
	for _, k := range []struct{ domain, selector, alg string }{
		{"ca.example", "rsa2026", "rsa2048"},
		{"ca.example", "ed2026", "ed25519"},
		{"certs.example", "rsa2026", "rsa2048"},
		{"ac.example", "rsa2026", "rsa2048"},
		{"ac.example", "ed2026", "ed25519"},
	} {
		s.keys = append(s.keys, e2eKeygen(t, s.bin, keyDir, k.domain, k.selector, k.alg))
	}
	records := map[string]string{}
	for _, k := range s.keys {
		records[k.Name] = k.Value
	}
	js, err := json.MarshalIndent(records, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	s.records = filepath.Join(s.dir, "dkim-records.json")
	if err := os.WriteFile(s.records, js, 0o644); err != nil {
		t.Fatal(err)
	}

	s.certFile, s.keyFile, _ = e2eSelfSigned(t, s.dir, "relay.e2e.example")
	_, _, mxCert := e2eSelfSigned(t, s.dir, s.mxHost)
	s.mx, err = sim.Start(sim.Options{
		Name:   "e2e-mx",
		MXHost: s.mxHost,
		TLS:    &tls.Config{Certificates: []tls.Certificate{mxCert}, MinVersion: tls.VersionTLS12},
		LookupTXT: func(name string) ([]string, error) {
			if v, ok := records[strings.ToLower(strings.TrimSuffix(name, "."))]; ok {
				return []string{v}, nil
			}
			return nil, &net.DNSError{Err: "no such record", Name: name, IsNotFound: true}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.mx.Close() })

	if prepare != nil {
		prepare(s)
	}
	s.startCertgate()
	return s
}

// writeConfig writes certgate's configuration for the given ports, as an
// operator would: secrets in files, keys from keygen.
func (s *e2eSetup) writeConfig(smtpPort, httpPort int) string {
	t := s.t
	hash, err := bcrypt.GenerateFromPassword([]byte(s.password), bcrypt.DefaultCost)
	if err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(s.dir, "api-token")
	if err := os.WriteFile(tokenFile, []byte(s.token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, mxPort, err := net.SplitHostPort(s.mx.Addr())
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("# written by the end-to-end test %s", t.Name())
	w("hostname: relay.ca.example")
	w("data_dir: %s", filepath.Join(s.dir, "data"))
	w("smtp:")
	w("  listen: [\"127.0.0.1:%d\"]", smtpPort)
	w("  tls: {cert_file: %s, key_file: %s}", s.certFile, s.keyFile)
	w("  auth_failure_delay: 100ms")
	w("http:")
	w("  listen: \"127.0.0.1:%d\"", httpPort)
	w("tenants:")
	w("  - name: issuer")
	w("    users: [{username: %s, password_hash: %q}]", s.username, hash)
	w("    from_domains: [ca.example, certs.example, ac.example]")
	w("dkim:")
	for _, k := range s.keys {
		w("  - {domain: %s, selector: %s, key_file: %s}", k.Domain, k.Selector, k.KeyFile)
	}
	w("delivery:")
	w("  mx_port: %s", mxPort)
	w("  routes: [{domains: [\"*\"], mx: true, tls: opportunistic}]")
	w("  connect_timeout: 10s")
	w("  command_timeout: 30s")
	w("  retry: {schedule: [1s], max_age: 1h}")
	w("  static_dns:")
	w("    mx:")
	for _, d := range e2eRcptDomains {
		w("      %s: [%s]", d, s.mxHost)
	}
	for _, d := range slices.Sorted(maps.Keys(s.extraMX)) {
		w("      %s: [%s]", d, s.extraMX[d])
	}
	w("    hosts:")
	w("      %s: [\"127.0.0.1\"]", s.mxHost)
	for _, h := range slices.Sorted(maps.Keys(s.extraHosts)) {
		w("      %s: [%q]", h, s.extraHosts[h])
	}
	w("api:")
	w("  tokens: [{name: e2e, token_file: %s, scopes: [read]}]", tokenFile)
	w("log: {level: debug}")
	path := filepath.Join(s.dir, "certgate.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startCertgate starts "certgate serve" on free ports and waits until
// GET /readyz answers 200. A port taken between choosing and binding is
// retried with new ones.
func (s *e2eSetup) startCertgate() {
	t := s.t
	s.logPath = filepath.Join(s.dir, "certgate.log")
	for attempt := 1; ; attempt++ {
		smtpPort, httpPort := e2eFreePort(t), e2eFreePort(t)
		cfg := s.writeConfig(smtpPort, httpPort)
		if out, code := e2eRun(t, time.Minute, s.bin, "check-config", "--config", cfg); code != 0 {
			t.Fatalf("certgate check-config rejects the test's configuration: exit %d\n%s", code, out)
		}
		s.smtpAddr = fmt.Sprintf("127.0.0.1:%d", smtpPort)
		s.httpAddr = fmt.Sprintf("127.0.0.1:%d", httpPort)
		p, err := e2eStartProcess(s.logPath, s.bin, "serve", "--config", cfg)
		if err != nil {
			t.Fatal(err)
		}
		err = p.waitReady("http://"+s.httpAddr+"/readyz", 90*time.Second)
		if err == nil {
			s.proc = p
			break
		}
		p.stop(10 * time.Second)
		log := e2eTail(s.logPath, 100)
		if attempt < 3 && strings.Contains(log, "address already in use") {
			t.Logf("attempt %d: a port was taken meanwhile; trying others", attempt)
			continue
		}
		t.Fatalf("certgate serve: %v\nits log:\n%s", err, log)
	}
	t.Cleanup(func() { stopServe(t, s.proc, s.logPath) })
}

// stopServe stops a certgate serve a test started (proc may be nil: not
// running), fails the test if it did not stop cleanly or the race detector
// reported a race in it, and shows its log when the test failed.
func stopServe(t *testing.T, proc *e2eProcess, logPath string) {
	if proc != nil {
		if err := proc.stop(45 * time.Second); err != nil {
			t.Errorf("certgate serve did not stop cleanly: %v", err)
		}
	}
	log, _ := os.ReadFile(logPath)
	if bytes.Contains(log, []byte("WARNING: DATA RACE")) {
		t.Errorf("the race detector found a data race in certgate serve (see its log below)")
	}
	if t.Failed() {
		t.Logf("certgate serve log (%s):\n%s", logPath, e2eTail(logPath, 300))
	}
}

// e2eProcess is a server started as a child process, its output in a file.
type e2eProcess struct {
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
}

func e2eStartProcess(logPath, name string, args ...string) (*e2eProcess, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child has its own descriptor
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &e2eProcess{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// waitReady polls url until it answers 200, the process exits or the
// timeout passes.
func (p *e2eProcess) waitReady(url string, timeout time.Duration) error {
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-p.done:
			return fmt.Errorf("exited before it was ready: %v", p.waitErr)
		default:
		}
		resp, err := client.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer 200 within %v (last: %v)", url, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits for a clean exit; after grace it kills.
func (p *e2eProcess) stop(grace time.Duration) error {
	select {
	case <-p.done:
		return p.waitErr
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.waitErr
	case <-time.After(grace):
		p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("still running %v after SIGTERM; killed", grace)
	}
}

// swaks runs swaks against server ("host:port") and returns its transcript
// and exit code.
func (s *e2eSetup) swaks(t *testing.T, server string, args ...string) (string, int) {
	t.Helper()
	bin := requireTool(t, "swaks")
	host, port, err := net.SplitHostPort(server)
	if err != nil {
		t.Fatal(err)
	}
	all := append([]string{"--server", host, "--port", port, "--ehlo", "app.issuer.example", "--timeout", "60"}, args...)
	return e2eRun(t, 3*time.Minute, bin, all...)
}

// submit sends one sample with swaks to server; auth is "" (no AUTH, no
// TLS: a trusted relay client) or a SASL mechanism used over STARTTLS.
func (s *e2eSetup) submit(t *testing.T, server string, m e2eSample, auth string) {
	t.Helper()
	args := []string{"--from", m.From, "--to", strings.Join(m.Rcpts, ","), "--data", "@" + m.Path}
	if auth != "" {
		args = append(args, "--tls", "--auth", auth, "--auth-user", s.username, "--auth-password", s.password)
	}
	out, code := s.swaks(t, server, args...)
	if code != 0 || !strings.Contains(out, " 250 ") {
		t.Fatalf("swaks %s (auth %q) to %s: exit %d, want 0 and 250\n%s", m.Name, auth, server, code, out)
	}
}

// api makes a GET request to certgate's API with token ("" for none).
func (s *e2eSetup) api(t *testing.T, path, token string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+s.httpAddr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, body
}

// e2eReceived finds certgate's own trace field: "(certgate) with PROTO id ID;".
var e2eReceived = regexp.MustCompile(`\(certgate\) with (\S+) id ([^\s;]+);`)

// checkDelivered waits until the simulated MX holds exactly the copies in
// want (copy key -> count) and checks every one: clean bytes, STARTTLS on
// the way in, certgate's trace field with wantProto, the sample's identity
// fields, DKIM signatures for every aligned key verified by go-msgauth (in
// the sim) and by python3-dkim, and the recipients' state in the API.
func (s *e2eSetup) checkDelivered(t *testing.T, want map[string]int, wantProto string) {
	t.Helper()
	py := requirePythonDKIM(t)
	verifier, err := filepath.Abs("testdata/e2e/dkimverify.py")
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, n := range want {
		total += n
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := s.mx.WaitFor(ctx, total); err != nil {
		t.Fatalf("the MX received %d of %d copies within 2m: %v\n%s", len(s.mx.Messages()), total, err, e2eSummary(s.mx.Messages()))
	}

	// Every message's recipients must reach "delivered" in the API; by then
	// a duplicate delivery would have arrived too.
	ids := map[string][]string{} // certgate id -> envelope recipients seen at the MX
	for _, m := range s.mx.Messages() {
		if r := e2eReceived.FindSubmatch(m.Data); r != nil {
			ids[string(r[2])] = append(ids[string(r[2])], strings.ToLower(m.To))
		}
	}
	if code, _ := s.api(t, "/api/v1/messages/x", ""); code != http.StatusUnauthorized {
		t.Errorf("API without a token: %d, want 401", code)
	}
	for id, rcpts := range ids {
		s.waitAPIDelivered(t, id, rcpts)
	}

	msgs := s.mx.Messages()
	got := map[string]int{}
	wantAlgs := map[string][]string{} // From domain -> a= of its aligned keys
	for _, k := range s.keys {
		wantAlgs[k.Domain] = append(wantAlgs[k.Domain], k.e2eSigAlg())
	}
	samples := map[string]e2eSample{}
	for _, sm := range s.samples {
		samples[sm.MessageID] = sm
	}
	msgDir := filepath.Join(s.dir, "received")
	if err := os.MkdirAll(msgDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, m := range msgs {
		parsed, err := mail.ReadMessage(bytes.NewReader(m.Data))
		if err != nil {
			t.Errorf("copy %d to %s: unparsable: %v", i, m.To, err)
			continue
		}
		h := parsed.Header
		mid := h.Get("Message-Id")
		key := e2eCopyKey(mid, m.To)
		got[key]++
		where := fmt.Sprintf("copy %d (%s)", i, key)
		sm, ok := samples[mid]
		if !ok {
			t.Errorf("%s: not one of the submitted samples", where)
			continue
		}
		if m.BareLF || m.BareCR || m.MaxLine > 998 {
			t.Errorf("%s: unclean bytes: bare LF %v, bare CR %v, longest line %d", where, m.BareLF, m.BareCR, m.MaxLine)
		}
		if !m.TLS {
			t.Errorf("%s: delivered without STARTTLS although the MX offers it", where)
		}
		if !strings.EqualFold(m.From, sm.From) {
			t.Errorf("%s: envelope sender %q, want %q", where, m.From, sm.From)
		}
		if r := e2eReceived.FindSubmatch(m.Data); r == nil || string(r[1]) != wantProto {
			t.Errorf("%s: certgate's Received field %q, want protocol %s", where, r, wantProto)
		}
		if subj := h.Get("Subject"); subj != sm.Subject {
			t.Errorf("%s: Subject %q, want %q", where, subj, sm.Subject)
		}
		if from, err := mail.ParseAddress(h.Get("From")); err != nil || from.Address != sm.From {
			t.Errorf("%s: From %q (%v), want %s", where, h.Get("From"), err, sm.From)
		}
		if n := len(h["X-Certgate-Tracking-Id"]); n != 1 {
			t.Errorf("%s: %d X-Certgate-Tracking-ID fields, want 1", where, n)
		}
		if v := h.Get("X-Certgate-Class"); v != "" {
			t.Errorf("%s: certgate's control field X-Certgate-Class leaked out: %q", where, v)
		}

		domain := sm.From[strings.LastIndexByte(sm.From, '@')+1:]
		wantSigs := slices.Sorted(slices.Values(wantAlgs[domain]))
		var simAlgs []string
		for _, r := range m.DKIM {
			simAlgs = append(simAlgs, r.Algorithm)
			if r.Err != nil || r.Domain != domain {
				t.Errorf("%s: go-msgauth: signature d=%s s=%s a=%s: %v (want d=%s)", where, r.Domain, r.Selector, r.Algorithm, r.Err, domain)
			}
		}
		if slices.Sort(simAlgs); !slices.Equal(simAlgs, wantSigs) {
			t.Errorf("%s: signatures %v, want %v (one per aligned key)", where, simAlgs, wantSigs)
		}

		file := filepath.Join(msgDir, fmt.Sprintf("%02d.eml", i))
		if err := os.WriteFile(file, m.Data, 0o644); err != nil {
			t.Fatal(err)
		}
		s.checkPythonDKIM(t, py, verifier, file, where, domain, wantSigs)
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%s: %d copies at the MX, want %d", k, got[k], n)
		}
	}
	for k, n := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: %d unexpected copies at the MX", k, n)
		}
	}
	if t.Failed() {
		t.Logf("copies at the MX:\n%s", e2eSummary(msgs))
	}
}

// checkPythonDKIM verifies one received copy with python3-dkim: every
// signature must pass, with d= the From domain, one per algorithm in want.
func (s *e2eSetup) checkPythonDKIM(t *testing.T, py, verifier, file, where, domain string, want []string) {
	t.Helper()
	out, code := e2eRun(t, time.Minute, py, verifier, s.records, file)
	type result struct {
		Index int
		D, S  string
		A     string
		OK    bool
		Error string
	}
	var algs []string
	failed := false
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var r result
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Errorf("%s: dkimverify.py printed %q: %v", where, line, err)
			continue
		}
		if !r.OK || r.D != domain {
			failed = true
			t.Errorf("%s: python3-dkim: signature %d d=%s s=%s a=%s: ok=%v %s", where, r.Index, r.D, r.S, r.A, r.OK, r.Error)
		}
		algs = append(algs, r.A)
	}
	slices.Sort(algs)
	switch {
	case !slices.Equal(algs, want):
		t.Errorf("%s: python3-dkim saw signatures %v, want %v:\n%s", where, algs, want, out)
	case code != 0 && !failed:
		t.Errorf("%s: dkimverify.py exit %d:\n%s", where, code, out)
	}
}

// waitAPIDelivered polls GET /api/v1/messages/{id} until every recipient
// is delivered, and checks they are the ones the MX saw.
func (s *e2eSetup) waitAPIDelivered(t *testing.T, id string, rcpts []string) {
	t.Helper()
	type view struct {
		ID         string
		Tenant     string
		Recipients []struct{ Address, State string }
	}
	var v view
	var body []byte
	deadline := time.Now().Add(30 * time.Second)
	for {
		var code int
		code, body = s.api(t, "/api/v1/messages/"+id, s.token)
		v = view{}
		if code == http.StatusOK && json.Unmarshal(body, &v) == nil && len(v.Recipients) > 0 &&
			!slices.ContainsFunc(v.Recipients, func(r struct{ Address, State string }) bool { return r.State != "delivered" }) {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("API: message %s not delivered to every recipient within 30s (last %d):\n%s", id, code, body)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	var got []string
	for _, r := range v.Recipients {
		got = append(got, strings.ToLower(r.Address))
	}
	slices.Sort(got)
	want := slices.Sorted(slices.Values(rcpts))
	want = slices.Compact(want)
	if v.ID != id || v.Tenant != "issuer" || !slices.Equal(got, want) {
		t.Errorf("API: message %s: id %q tenant %q recipients %v, want %v at the MX:\n%s", id, v.ID, v.Tenant, got, want, body)
	}
}

func e2eSummary(msgs []sim.Message) string {
	var b strings.Builder
	for i, m := range msgs {
		mid := ""
		if parsed, err := mail.ReadMessage(bytes.NewReader(m.Data)); err == nil {
			mid = parsed.Header.Get("Message-Id")
		}
		fmt.Fprintf(&b, "  %d: %s -> %s %s tls=%v dkim=%+v\n", i, m.From, m.To, mid, m.TLS, m.DKIM)
	}
	return b.String()
}

// TestE2ESwaksSubmission submits every sample mail to the certgate binary
// with swaks over STARTTLS and AUTH PLAIN (one also with AUTH LOGIN), and
// checks that the simulated MX receives every copy, signed for every
// aligned key and verified by python3-dkim. It also checks the refusals a
// client sees without AUTH (530 5.7.0) and with a wrong password (535).
func TestE2ESwaksSubmission(t *testing.T) {
	e2eStart(t)
	requireTool(t, "swaks")
	requirePythonDKIM(t)
	s := newE2ESetup(t)

	want := map[string]int{}
	for _, m := range s.samples {
		s.submit(t, s.smtpAddr, m, "PLAIN")
		for _, r := range m.Rcpts {
			want[e2eCopyKey(m.MessageID, r)]++
		}
	}
	login := s.samples[len(s.samples)-1]
	s.submit(t, s.smtpAddr, login, "LOGIN")
	for _, r := range login.Rcpts {
		want[e2eCopyKey(login.MessageID, r)]++
	}

	m := s.samples[0]
	base := []string{"--from", m.From, "--to", strings.Join(m.Rcpts, ","), "--data", "@" + m.Path, "--tls"}
	out, code := s.swaks(t, s.smtpAddr, base...)
	if code == 0 || !strings.Contains(out, "530 5.7.0") {
		t.Errorf("swaks without AUTH: exit %d, want a failure with 530 5.7.0\n%s", code, out)
	}
	out, code = s.swaks(t, s.smtpAddr, append(base, "--auth", "PLAIN", "--auth-user", s.username,
		"--auth-password", s.password+"-wrong")...)
	if code == 0 || !strings.Contains(out, " 535 ") {
		t.Errorf("swaks with a wrong password: exit %d, want a failure with 535\n%s", code, out)
	}

	s.checkDelivered(t, want, "ESMTPSA")
}

// TestE2EPostfixRelay puts a private Postfix instance, as the issuer's MTA,
// in front of the certgate binary: Postfix takes the sample mails from
// swaks without AUTH (mynetworks) and relays them to certgate with SASL
// over STARTTLS; every copy must reach the simulated MX signed.
func TestE2EPostfixRelay(t *testing.T) {
	e2eStart(t)
	requireTool(t, "swaks")
	requireTool(t, "postfix")
	requirePythonDKIM(t)
	e2eRequirePostfixPrivileges(t)
	s := newE2ESetup(t)
	_, port, err := net.SplitHostPort(s.smtpAddr)
	if err != nil {
		t.Fatal(err)
	}
	pf := e2eStartPostfix(t, port, s.username, s.password)

	want := map[string]int{}
	for _, m := range s.samples {
		s.submit(t, pf.addr, m, "")
		for _, r := range m.Rcpts {
			want[e2eCopyKey(m.MessageID, r)]++
		}
	}
	s.checkDelivered(t, want, "ESMTPSA")
	if log, _ := os.ReadFile(pf.log); !bytes.Contains(log, []byte("TLS connection established to 127.0.0.1")) {
		t.Errorf("Postfix's log does not show a TLS connection to certgate")
	}
}

// e2eRequirePostfixPrivileges checks what a private Postfix instance needs
// from the machine: root (the master drops privileges to mail_owner), the
// postfix user and postdrop group of the Debian package, and the Cyrus SASL
// PLAIN and LOGIN client modules.
func e2eRequirePostfixPrivileges(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		e2eMissing(t, "a private Postfix instance must be started as root (it drops to the postfix user)")
	}
	if _, err := user.Lookup("postfix"); err != nil {
		e2eMissing(t, "no postfix user (the postfix package creates it): %v", err)
	}
	if _, err := user.LookupGroup("postdrop"); err != nil {
		e2eMissing(t, "no postdrop group (the postfix package creates it): %v", err)
	}
	for _, mech := range []string{"plain", "login"} {
		a, _ := filepath.Glob("/usr/lib/*/sasl2/lib" + mech + ".so*")
		b, _ := filepath.Glob("/usr/lib/sasl2/lib" + mech + ".so*")
		if len(a)+len(b) == 0 {
			e2eMissing(t, "no Cyrus SASL %s module for Postfix's SMTP client (apt-get install libsasl2-modules)", strings.ToUpper(mech))
		}
	}
}

// e2ePostfix is a private Postfix instance under a test's temporary directory.
type e2ePostfix struct {
	bin  string
	dir  string // the instance's directory
	conf string // config_directory
	addr string // its smtpd, "127.0.0.1:port"
	log  string // maillog_file
}

// e2eStartPostfix starts a Postfix instance of its own (config, queue and
// data directories in a temporary directory, no chroot, listening on
// loopback only) that relays everything to certgate on relayPort with SASL
// AUTH over mandatory STARTTLS, and stops it when the test ends.
func e2eStartPostfix(t *testing.T, relayPort, username, password string) *e2ePostfix {
	t.Helper()
	port := e2eFreePort(t)
	relay := "[127.0.0.1]:" + relayPort
	return e2eStartPostfixInstance(t, "127.0.0.1", port, "mta.issuer.example", func(conf string) ([]string, []string) {
		saslFile := filepath.Join(conf, "sasl_passwd")
		if err := os.WriteFile(saslFile, []byte(relay+" "+username+":"+password+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return []string{
			"mydestination =",
			"local_recipient_maps =",
			"smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination",
			"relayhost = " + relay,
			"smtp_dns_support_level = disabled",
			"smtp_tls_security_level = encrypt",
			"smtp_tls_loglevel = 1",
			"smtp_sasl_auth_enable = yes",
			"smtp_sasl_password_maps = texthash:" + saslFile,
			"smtp_sasl_security_options = noanonymous",
			"smtp_sasl_tls_security_options = noanonymous",
			"smtp_sasl_mechanism_filter = plain, login",
			"smtp_connect_timeout = 10s",
		}, nil
	})
}

// e2eStartPostfixInstance starts a private Postfix instance whose smtpd
// listens on ip:port, with the settings every instance shares and those
// that role returns (main.cf lines, extra master.cf services), written
// once the config directory exists; it stops it when the test ends.
func e2eStartPostfixInstance(t *testing.T, ip string, port int, hostname string, role func(conf string) (mainCF, masterCF []string)) *e2ePostfix {
	t.Helper()
	dir := e2ePostfixDir(t)
	p := &e2ePostfix{bin: requireTool(t, "postfix"), dir: dir, conf: filepath.Join(dir, "conf"), log: filepath.Join(dir, "maillog")}
	queue := filepath.Join(dir, "queue")
	for _, d := range []string{p.conf, queue} { // data_directory is left to Postfix: it must be mail_owner's
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	p.addr = net.JoinHostPort(ip, strconv.Itoa(port))
	roleMain, roleMaster := role(p.conf)

	mainCF := strings.Join(append(append([]string{
		"# private Postfix instance of " + t.Name(),
		"compatibility_level = 3.6",
		"config_directory = " + p.conf,
		"queue_directory = " + queue,
		"data_directory = " + filepath.Join(dir, "data"),
		"mail_owner = postfix",
		"setgid_group = postdrop",
		"myhostname = " + hostname,
		"myorigin = $myhostname",
		"alias_maps =",
		"alias_database =",
		"biff = no",
		// smtpd binds ip itself (master.cf); Postfix refuses an
		// inet_interfaces address that no interface lists, as 127.0.0.2.
		"inet_interfaces = 127.0.0.1",
		"inet_protocols = ipv4",
		"mynetworks = 127.0.0.0/8",
		"smtpd_peername_lookup = no",
		// A temporary failure is retried in seconds, not minutes.
		"queue_run_delay = 1s",
		"minimal_backoff_time = 1s",
		"maximal_backoff_time = 5s",
		"default_process_limit = 20",
		"maillog_file = " + p.log,
		"maillog_file_prefixes = " + dir,
	}, roleMain...), ""), "\n")
	// Every service without chroot: the queue is in a temporary directory.
	masterCF := strings.Join(append(append([]string{
		fmt.Sprintf("%s inet n - n - - smtpd", p.addr),
		"cleanup   unix n - n - 0 cleanup",
		"qmgr      unix n - n 300 1 qmgr",
		"tlsmgr    unix - - n 1000? 1 tlsmgr",
		"rewrite   unix - - n - - trivial-rewrite",
		"bounce    unix - - n - 0 bounce",
		"defer     unix - - n - 0 bounce",
		"trace     unix - - n - 0 bounce",
		"verify    unix - - n - 1 verify",
		"flush     unix n - n 1000? 0 flush",
		"proxymap  unix - - n - - proxymap",
		"proxywrite unix - - n - 1 proxymap",
		"smtp      unix - - n - - smtp",
		"relay     unix - - n - - smtp",
		"showq     unix n - n - - showq",
		"error     unix - - n - - error",
		"retry     unix - - n - - error",
		"discard   unix - - n - - discard",
		"anvil     unix - - n - 1 anvil",
		"scache    unix - - n - 1 scache",
		"postlog   unix-dgram n - n - 1 postlogd",
	}, roleMaster...), ""), "\n")
	for name, content := range map[string]string{"main.cf": mainCF, "master.cf": masterCF} {
		if err := os.WriteFile(filepath.Join(p.conf, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("Postfix log (%s):\n%s", p.log, e2eTail(p.log, 200))
		}
	})
	out, code := e2eRun(t, 2*time.Minute, p.bin, "-c", p.conf, "start")
	if code != 0 {
		check, _ := e2eRun(t, time.Minute, p.bin, "-c", p.conf, "check")
		p.stop(t)
		t.Fatalf("postfix -c %s start: exit %d\n%s\npostfix check:\n%s", p.conf, code, out, check)
	}
	t.Cleanup(func() { p.stop(t) })

	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", p.addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Postfix does not listen on %s 30s after start: %v", p.addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return p
}

// stop stops the instance and waits until none of its processes is left,
// killing stragglers, so that the temporary directory can go.
func (p *e2ePostfix) stop(t *testing.T) {
	if out, code, err := e2eExec(time.Minute, p.bin, "-c", p.conf, "stop"); err != nil || code != 0 {
		// Not running (start failed) is fine; anything left is killed below.
		t.Logf("postfix -c %s stop: exit %d %v\n%s", p.conf, code, err, out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		pids := e2ePostfixProcesses(p.conf)
		if len(pids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("Postfix processes %v still running 20s after stop; killing them", pids)
			for _, pid := range pids {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// e2ePostfixProcesses lists the processes of the instance whose
// config_directory is conf: Postfix passes MAIL_CONFIG to every daemon.
func e2ePostfixProcesses(conf string) []int {
	mark := []byte("MAIL_CONFIG=" + conf + "\x00")
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err == nil && bytes.Contains(env, mark) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// e2ePostfixDir returns an empty directory for a Postfix instance that
// the postfix user can reach: Postfix's daemons run as that user and must
// get to their queue. It is the test's temporary directory opened to others
// (t.TempDir makes it and its parent 0700), or, when a directory above it is
// closed (TMPDIR under a home directory, say), one under /tmp.
func e2ePostfixDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	closed := e2eClosedAncestor(filepath.Dir(filepath.Dir(dir)))
	if closed == "" {
		return dir
	}
	alt, err := os.MkdirTemp("/tmp", "certgate-e2e-postfix-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(alt) })
	if err := os.Chmod(alt, 0o755); err != nil {
		t.Fatal(err)
	}
	if c := e2eClosedAncestor("/tmp"); c != "" {
		e2eMissing(t, "neither %s nor %s is searchable by other users, so Postfix's daemons (user postfix) cannot reach a queue under %s or /tmp", closed, c, dir)
	}
	return alt
}

// e2eClosedAncestor returns the first of dir and the directories above it
// that other users cannot search, or "".
func e2eClosedAncestor(dir string) string {
	for d := dir; ; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err != nil || fi.Mode().Perm()&0o001 == 0 {
			return d
		}
		if d == filepath.Dir(d) {
			return ""
		}
	}
}

// TestE2ECheckConfig runs "certgate check-config" on a file with several
// problems: it must exit non-zero and name each one with file:line and its
// key. The same file goes through run() in-process, and a good file passes.
func TestE2ECheckConfig(t *testing.T) {
	e2eStart(t)
	bin := e2eCertgateBinary(t)
	dir := t.TempDir()
	cert, key, _ := e2eSelfSigned(t, dir, "relay.e2e.example")
	k := e2eKeygen(t, bin, filepath.Join(dir, "dkim"), "ca.example", "rsa2026", "rsa2048")
	hash, err := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}

	good := []string{
		"hostname: relay.ca.example",
		"data_dir: " + filepath.Join(dir, "data"),
		"smtp:",
		`  listen: ["127.0.0.1:2525"]`,
		"  tls: {cert_file: " + cert + ", key_file: " + key + "}",
		"tenants:",
		"  - name: issuer",
		fmt.Sprintf("    users: [{username: app, password_hash: %q}]", hash),
		"    trusted_networks: [127.0.0.0/8]",
		"    from_domains: [ca.example]",
		"dkim:",
		"  - {domain: ca.example, selector: rsa2026, key_file: " + k.KeyFile + "}",
		"delivery:",
		"  mx_port: 2526",
		"  retry: {schedule: [1m, 5m], max_age: 72h}",
		"",
	}
	goodPath := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(goodPath, []byte(strings.Join(good, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := e2eRun(t, time.Minute, bin, "check-config", "--config", goodPath); code != 0 || !strings.Contains(out, "ok") {
		t.Errorf("check-config on a good file: exit %d, want 0 and ok\n%s", code, out)
	}

	// Each broken line carries the key whose problem must be reported at it.
	bad := []struct{ line, path string }{
		{"hostname: relay.ca.example", ""},
		{"data_dir: " + filepath.Join(dir, "data"), ""},
		{"smtp:", ""},
		{`  listen: ["127.0.0.1:99999"]`, "smtp.listen[0]"},
		{"  max_recipients: -3", "smtp.max_recipients"},
		{"tenants:", ""},
		{"  - name: issuer", ""},
		{`    users: [{username: app, password_hash: "not-a-bcrypt-hash"}]`, "tenants[0].users[0].password_hash"},
		{`    trusted_networks: ["10.0.0.0/33"]`, "tenants[0].trusted_networks[0]"},
		{"    from_domains: [ca.example]", ""},
		{"dkim:", ""},
		{"  - {domain: ca.example, selector: rsa2026, key_file: " + filepath.Join(dir, "missing.pem") + "}", "dkim[0].key_file"},
		{"delivery:", ""},
		{"  mx_port: 70000", "delivery.mx_port"},
		{"  retry: {schedule: [30], max_age: 1h}", "delivery.retry.schedule[0]"},
		{"  no_such_key: 1", "delivery.no_such_key"},
	}
	var lines []string
	for _, b := range bad {
		lines = append(lines, b.line)
	}
	badPath := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(badPath, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	check := func(how, out string, code int) {
		t.Helper()
		if code == 0 {
			t.Errorf("%s: exit 0 on a broken file, want non-zero\n%s", how, out)
		}
		for i, b := range bad {
			if b.path == "" {
				continue
			}
			if want := fmt.Sprintf("%s:%d: %s: ", badPath, i+1, b.path); !strings.Contains(out, want) {
				t.Errorf("%s: the output lacks %q\n%s", how, want, out)
			}
		}
	}
	out, code := e2eRun(t, time.Minute, bin, "check-config", "--config", badPath)
	check("certgate check-config", out, code)

	var stdout, stderr bytes.Buffer
	code = run([]string{"check-config", "--config", badPath}, &stdout, &stderr)
	check("run(check-config)", stdout.String()+stderr.String(), code)
}
