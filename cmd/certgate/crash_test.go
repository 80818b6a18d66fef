package main

// Crash safety of the real binary (issue 4): "certgate serve" killed with
// SIGKILL at random moments under load and restarted on the same data_dir
// (TestCrashKillUnderLoad), stopped with SIGTERM while deliveries are in
// flight (TestCrashTermDrains), and running out of disk or hitting a store
// write error (crash_disk_test.go). Clients submit over SMTP on loopback with
// go-smtp and note exactly which messages got 250; a simulated provider
// (package sim) is the sink and counts every copy it stored.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/mail"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/certgate/certgate/sim"
)

// crashSeedEnv fixes the random schedule of the crash tests.
const crashSeedEnv = "CERTGATE_CRASH_SEED"

// crashConnLimit is the sink lane's connection_limit: no more deliveries than
// this are ever in flight at once, which bounds what a kill can duplicate.
const crashConnLimit = 4

// crashSeed returns the seed of a test's random choices and logs it.
func crashSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(crashSeedEnv); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", crashSeedEnv, s, err)
		}
		seed = v
	}
	t.Logf("random seed %d (%s=%d repeats the schedule)", seed, crashSeedEnv, seed)
	return seed
}

// startCrashTest begins a crash test that needs no file system of its own:
// a rig whose daemon is not started yet, the test's random source and seed.
func startCrashTest(t *testing.T) (*crashRig, *rand.Rand, uint64) {
	t.Helper()
	e2eStart(t)
	seed := crashSeed(t)
	return newCrashRig(t, seed, ""), rand.New(rand.NewPCG(seed, 0)), seed
}

// crashSink is the receiving provider: a sim.Provider whose DATA reply can
// be held back, and which knows which copies are between DATA and reply.
type crashSink struct {
	*sim.Provider
	maxDelay atomic.Int64 // nanoseconds; each DATA reply waits half to all of it

	mu       sync.Mutex
	rng      *rand.Rand
	inflight map[string]int // copy key -> DATA replies being held
}

func startCrashSink(t *testing.T, seed uint64) *crashSink {
	t.Helper()
	s := &crashSink{rng: rand.New(rand.NewPCG(seed, 1)), inflight: map[string]int{}}
	p, err := sim.Start(sim.Options{Name: "crash-sink", MXHost: "mx.sink.example", Domains: []string{"sink.example"},
		DataRespond: s.hold})
	if err != nil {
		t.Fatal(err)
	}
	s.Provider = p
	t.Cleanup(func() { p.Close() })
	return s
}

// hold runs before the sim stores a copy and answers: the copy counts as in
// flight while it waits.
func (s *crashSink) hold(m *sim.Message) *smtp.SMTPError {
	key := crashCopyKey(m)
	s.mu.Lock()
	var d time.Duration
	if max := s.maxDelay.Load(); max > 0 {
		d = time.Duration(max/2 + s.rng.Int64N(max/2+1))
	}
	s.inflight[key]++
	s.mu.Unlock()
	time.Sleep(d)
	s.mu.Lock()
	if s.inflight[key]--; s.inflight[key] == 0 {
		delete(s.inflight, key)
	}
	s.mu.Unlock()
	return nil
}

// inFlight lists the copies whose DATA reply the sink is holding.
func (s *crashSink) inFlight() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var keys []string
	for k := range s.inflight {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// quiesce waits until the sink holds no copy and has stored none for quiet,
// or limit passes: after a kill, the dead process's last bytes are read.
func (s *crashSink) quiesce(quiet, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		n := s.Stats().Received
		time.Sleep(quiet)
		if len(s.inFlight()) == 0 && s.Stats().Received == n {
			return
		}
	}
}

// copies counts the stored copies by copy key.
func (s *crashSink) copies() map[string]int {
	got := map[string]int{}
	for _, m := range s.Messages() {
		got[crashCopyKey(&m)]++
	}
	return got
}

// duplicatesPerKill files each extra copy under the kill that made it. The
// process killed k-th sent every copy the sink received before restarts[k]
// (taken once the sink had read the dead process's last bytes, before the
// next process started); an extra copy belongs to the kill of the process
// that sent the copy before it, which died before recording that delivery. The last entry
// counts extra copies whose previous copy came after the last restart.
func duplicatesPerKill(msgs []sim.Message, restarts []time.Time) []int {
	byKey := map[string][]time.Time{}
	for i := range msgs {
		k := crashCopyKey(&msgs[i])
		byKey[k] = append(byKey[k], msgs[i].Received)
	}
	per := make([]int, len(restarts)+1)
	for _, times := range byKey {
		slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
		for _, prev := range times[:len(times)-1] {
			k, _ := slices.BinarySearchFunc(restarts, prev, func(restart, t time.Time) int {
				if restart.After(t) {
					return 1
				}
				return -1
			})
			per[k]++
		}
	}
	return per
}

// crashCopyKey names one copy: the Message-ID and the envelope recipient.
func crashCopyKey(m *sim.Message) string {
	mid := "(unparsable)"
	if msg, err := mail.ReadMessage(bytes.NewReader(m.Data)); err == nil {
		mid = msg.Header.Get("Message-Id")
	}
	return mid + " -> " + strings.ToLower(m.To)
}

// crashRig is one certgate whose process the test kills and restarts on the
// same data_dir.
type crashRig struct {
	t       *testing.T
	bin     string
	dir     string
	dataDir string
	keyFile string
	sink    *crashSink
	cfgPath string
	logPath string

	serveArgs []string // more arguments of "certgate serve"

	smtpAddr atomic.Value // string; clients read it per connection
	httpAddr string
	proc     *e2eProcess
	starts   int
}

// newCrashRig prepares a rig (key, sink); start runs the daemon. dataDir ""
// is a directory under the test's own.
func newCrashRig(t *testing.T, seed uint64, dataDir string) *crashRig {
	t.Helper()
	r := &crashRig{t: t, bin: e2eCertgateBinary(t), dir: t.TempDir(), dataDir: dataDir}
	if r.dataDir == "" {
		r.dataDir = filepath.Join(r.dir, "data")
	}
	// Ed25519: its key is made at once and signs cheaply under -race.
	k := e2eKeygen(t, r.bin, filepath.Join(r.dir, "dkim"), "ca.example", "ed2026", "ed25519")
	r.keyFile = k.KeyFile
	r.sink = startCrashSink(t, seed)
	r.cfgPath = filepath.Join(r.dir, "certgate.yaml")
	r.logPath = filepath.Join(r.dir, "certgate.log")
	t.Cleanup(func() { stopServe(t, r.proc, r.logPath) })
	return r
}

// writeConfig writes the daemon's configuration: clients on loopback submit
// without AUTH (a trusted network), every recipient domain goes to the sink
// through one lane of crashConnLimit connections, and retries come quickly.
func (r *crashRig) writeConfig(smtpPort, httpPort int) {
	_, mxPort, err := net.SplitHostPort(r.sink.Addr())
	if err != nil {
		r.t.Fatal(err)
	}
	cfg := strings.Join([]string{
		"# written by " + r.t.Name(),
		"hostname: relay.ca.example",
		"data_dir: " + r.dataDir,
		"smtp:",
		fmt.Sprintf("  listen: [\"127.0.0.1:%d\"]", smtpPort),
		"  read_timeout: 30s",
		"http:",
		fmt.Sprintf("  listen: \"127.0.0.1:%d\"", httpPort),
		"tenants:",
		"  - name: issuer",
		"    trusted_networks: [127.0.0.0/8]",
		"    from_domains: [ca.example]",
		"dkim:",
		"  - {domain: ca.example, selector: ed2026, key_file: " + r.keyFile + "}",
		"delivery:",
		"  mx_port: " + mxPort,
		`  routes: [{domains: ["*"], mx: true, tls: none}]`,
		"  connect_timeout: 5s",
		"  command_timeout: 20s",
		"  data_timeout: 20s",
		"  retry: {schedule: [300ms], max_age: 1h}",
		"  static_dns:",
		"    mx: {sink.example: [mx.sink.example]}",
		`    hosts: {mx.sink.example: ["127.0.0.1"]}`,
		"providers:",
		fmt.Sprintf("  - {name: sink, domains: [sink.example], connection_limit: %d}", crashConnLimit),
		"log: {level: info}",
		"",
	}, "\n")
	if err := os.WriteFile(r.cfgPath, []byte(cfg), 0o600); err != nil {
		r.t.Fatal(err)
	}
}

// start runs "certgate serve" and waits for /readyz. It keeps the ports of
// the previous start, so that clients find it again, unless one was taken
// meanwhile.
func (r *crashRig) start() {
	t := r.t
	t.Helper()
	for attempt := 1; ; attempt++ {
		if r.starts == 0 || attempt > 1 {
			smtpPort, httpPort := e2eFreePort(t), e2eFreePort(t)
			r.writeConfig(smtpPort, httpPort)
			r.smtpAddr.Store(fmt.Sprintf("127.0.0.1:%d", smtpPort))
			r.httpAddr = fmt.Sprintf("127.0.0.1:%d", httpPort)
			if r.starts == 0 {
				if out, code := e2eRun(t, time.Minute, r.bin, "check-config", "--config", r.cfgPath); code != 0 {
					t.Fatalf("certgate check-config rejects the test's configuration: exit %d\n%s", code, out)
				}
			}
		}
		before, _ := os.Stat(r.logPath)
		p, err := e2eStartProcess(r.logPath, r.bin, append([]string{"serve", "--config", r.cfgPath}, r.serveArgs...)...)
		if err != nil {
			t.Fatal(err)
		}
		err = p.waitReady("http://"+r.httpAddr+"/readyz", 90*time.Second)
		if err == nil {
			r.proc = p
			r.starts++
			return
		}
		p.cmd.Process.Kill()
		<-p.done
		log := crashLogSince(r.logPath, before)
		if attempt < 3 && strings.Contains(log, "address already in use") {
			t.Logf("start %d: a port was taken meanwhile; trying others", attempt)
			continue
		}
		t.Fatalf("certgate serve (start %d): %v\nits log:\n%s", r.starts+1, err, log)
	}
}

// crashLogSince returns what was appended to the log after before (its
// earlier state, nil if it did not exist).
func crashLogSince(path string, before os.FileInfo) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	if before != nil && before.Size() <= int64(len(b)) {
		b = b[before.Size():]
	}
	return string(b)
}

// kill sends SIGKILL and waits for the process to be gone.
func (r *crashRig) kill() {
	r.proc.cmd.Process.Signal(syscall.SIGKILL)
	<-r.proc.done
	r.proc = nil
}

// terminate sends SIGTERM and waits up to limit for the process to exit; it
// returns how long that took and the exit error (nil: status 0).
func (r *crashRig) terminate(limit time.Duration) (time.Duration, error) {
	r.t.Helper()
	p := r.proc
	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(limit):
		p.cmd.Process.Kill()
		<-p.done
		r.proc = nil
		r.t.Fatalf("certgate serve still running %v after SIGTERM; killed", limit)
	}
	r.proc = nil
	return time.Since(start), p.waitErr
}

// queued sums certgate_queue_recipients from /metrics: the recipients the
// queue holds in any stage.
func (r *crashRig) queued() (float64, error) {
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + r.httpAddr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "certgate_queue_recipients{") {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return 0, fmt.Errorf("metrics line %q: %v", line, err)
		}
		sum += v
	}
	return sum, sc.Err()
}

// crashMsg is one submitted message.
type crashMsg struct {
	ID    string // Message-ID, with angle brackets
	Rcpts []string
	Body  []byte
}

// keys returns the copy keys the sink files the message's copies under.
func (m crashMsg) keys() []string {
	var out []string
	for _, r := range m.Rcpts {
		out = append(out, m.ID+" -> "+r)
	}
	return out
}

// newCrashMsg makes message n of client w: every third one has two
// recipients, and bodies vary from a few hundred bytes to about 12 KB.
func newCrashMsg(run string, w, n int, rng *rand.Rand) crashMsg {
	m := crashMsg{ID: fmt.Sprintf("<%s.%d.%d@ca.example>", run, w, n), Rcpts: []string{fmt.Sprintf("u%d@sink.example", w)}}
	if n%3 == 0 {
		m.Rcpts = append(m.Rcpts, fmt.Sprintf("v%d@sink.example", w))
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: Issuer <app@ca.example>\r\nTo: %s\r\nSubject: certificate %d/%d\r\nMessage-ID: %s\r\n"+
		"Date: %s\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
		strings.Join(m.Rcpts, ", "), w, n, m.ID, time.Now().Format(time.RFC1123Z))
	for range 5 + rng.IntN(200) {
		fmt.Fprintf(&b, "Your certificate %s is ready; line %d of its download notice.\r\n", m.ID, rng.IntN(1000))
	}
	m.Body = b.Bytes()
	return m
}

// crashSMTP submits on one connection as a trusted-network client.
type crashSMTP struct{ c *smtp.Client }

func dialCrashSMTP(addr string) (*crashSMTP, error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	c := smtp.NewClient(nc)
	c.CommandTimeout = 30 * time.Second
	c.SubmissionTimeout = 60 * time.Second
	if err := c.Hello("app.ca.example"); err != nil {
		c.Close()
		return nil, err
	}
	return &crashSMTP{c: c}, nil
}

// envelope sends MAIL and RCPT.
func (s *crashSMTP) envelope(m crashMsg) error {
	if err := s.c.Mail("app@ca.example", nil); err != nil {
		return err
	}
	for _, r := range m.Rcpts {
		if err := s.c.Rcpt(r, nil); err != nil {
			return err
		}
	}
	return nil
}

// data sends DATA and the message; nil means the server answered 250.
func (s *crashSMTP) data(m crashMsg) error {
	w, err := s.c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(m.Body); err != nil {
		w.Close()
		return err
	}
	return w.Close()
}

func (s *crashSMTP) send(m crashMsg) error {
	if err := s.envelope(m); err != nil {
		return err
	}
	return s.data(m)
}

func (s *crashSMTP) close() { s.c.Close() }

// crashSubmitAll submits n messages of client w on one connection; each
// must be answered 250.
func crashSubmitAll(t *testing.T, r *crashRig, ledger *crashLedger, run string, w, n int, rng *rand.Rand) {
	t.Helper()
	s, err := dialCrashSMTP(r.smtpAddr.Load().(string))
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	for i := range n {
		m := newCrashMsg(run, w, i, rng)
		err := s.send(m)
		ledger.note(m, err)
		if err != nil {
			t.Fatalf("submitting %s: %s (%v), want 250", m.ID, crashReplyClass(err), err)
		}
	}
}

// waitHeld waits until the sink holds n deliveries at once.
func (r *crashRig) waitHeld(n int) {
	r.t.Helper()
	for wait := time.Now().Add(60 * time.Second); len(r.sink.inFlight()) < n; {
		if time.Now().After(wait) {
			r.t.Fatalf("the sink never held %d deliveries at once (holds %v)", n, r.sink.inFlight())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// crashReplyClass files an SMTP outcome for the report: "250", the code and
// enhanced code of a refusal, or "network" for a broken connection.
func crashReplyClass(err error) string {
	if err == nil {
		return "250"
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return fmt.Sprintf("%d %d.%d.%d", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
	}
	return "network"
}

// crashLedger records what the clients were told about each message.
type crashLedger struct {
	mu      sync.Mutex
	sent    map[string]crashMsg // every message whose DATA was started
	acked   map[string]bool     // message ids answered 250
	replies map[string]int      // reply class -> count
}

func newCrashLedger() *crashLedger {
	return &crashLedger{sent: map[string]crashMsg{}, acked: map[string]bool{}, replies: map[string]int{}}
}

func (l *crashLedger) note(m crashMsg, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sent[m.ID] = m
	l.replies[crashReplyClass(err)]++
	if err == nil {
		l.acked[m.ID] = true
	}
}

func (l *crashLedger) ackedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// ackedKeys lists the copy keys of every acknowledged message.
func (l *crashLedger) ackedKeys() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var keys []string
	for id := range l.acked {
		keys = append(keys, l.sent[id].keys()...)
	}
	slices.Sort(keys)
	return keys
}

// knownKeys is every copy key a submitted message could produce.
func (l *crashLedger) knownKeys() map[string]bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	known := map[string]bool{}
	for _, m := range l.sent {
		for _, k := range m.keys() {
			known[k] = true
		}
	}
	return known
}

func (l *crashLedger) replySummary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var parts []string
	for c, n := range l.replies {
		parts = append(parts, fmt.Sprintf("%s: %d", c, n))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

// crashLoad runs clients that submit without pause until stop: each sends up
// to five messages per connection, and redials (a moment later) whenever
// the connection fails, as an issuer's MTA would.
func crashLoad(r *crashRig, ledger *crashLedger, run string, clients int, seed uint64) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(100+w)))
			n := 0
			for {
				select {
				case <-done:
					return
				default:
				}
				s, err := dialCrashSMTP(r.smtpAddr.Load().(string))
				if err != nil {
					time.Sleep(20 * time.Millisecond) // down: being restarted
					continue
				}
				for range 1 + rng.IntN(5) {
					m := newCrashMsg(run, w, n, rng)
					n++
					err := s.send(m)
					ledger.note(m, err)
					if err != nil {
						break
					}
				}
				s.close()
			}
		}()
	}
	return func() {
		close(done)
		wg.Wait()
	}
}

// waitDrained waits until the sink holds every acknowledged copy and the
// queue is empty, or the timeout passes; it returns the acknowledged copies
// still missing.
func (r *crashRig) waitDrained(ledger *crashLedger, timeout time.Duration) []string {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := r.sink.copies()
		var missing []string
		for _, k := range ledger.ackedKeys() {
			if got[k] == 0 {
				missing = append(missing, k)
			}
		}
		q, err := r.queued()
		if len(missing) == 0 && err == nil && q == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			r.t.Errorf("after %v: %d acknowledged copies not at the sink, queue holds %v (%v)", timeout, len(missing), q, err)
			return missing
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// crashTally compares what the sink stored with what was acknowledged.
type crashTally struct {
	acked, ackedCopies, stored int
	lost                       []string // acknowledged copies the sink never got
	duplicates                 int      // stored copies beyond the first of each
	dupKeys                    []string
	unacked                    int // copies of unacknowledged messages that arrived anyway
	strangers                  []string
}

func tallyCrash(ledger *crashLedger, got map[string]int) crashTally {
	var c crashTally
	c.acked = ledger.ackedCount()
	ackedKeys := ledger.ackedKeys()
	c.ackedCopies = len(ackedKeys)
	acked := map[string]bool{}
	for _, k := range ackedKeys {
		acked[k] = true
		if got[k] == 0 {
			c.lost = append(c.lost, k)
		}
	}
	known := ledger.knownKeys()
	for k, n := range got {
		c.stored += n
		if n > 1 {
			c.duplicates += n - 1
			c.dupKeys = append(c.dupKeys, fmt.Sprintf("%s x%d", k, n))
		}
		switch {
		case !known[k]:
			c.strangers = append(c.strangers, k)
		case !acked[k]:
			c.unacked++
		}
	}
	slices.Sort(c.dupKeys)
	slices.Sort(c.strangers)
	return c
}

// TestCrashKillUnderLoad kills "certgate serve" with SIGKILL at random
// moments while clients submit and deliveries run, restarts it on the same
// data_dir each time, and checks at the end that every message answered 250
// reached the sink, and that the copies delivered twice are no more than
// the deliveries that can be in flight at a kill: a copy the sink took
// whose delivery record the dead process had not yet committed.
func TestCrashKillUnderLoad(t *testing.T) {
	r, rng, seed := startCrashTest(t)
	// DATA replies of 20 to 40 ms keep deliveries in flight at the kills.
	r.sink.maxDelay.Store(int64(40 * time.Millisecond))
	r.start()

	const kills, clients = 6, 4
	ledger := newCrashLedger()
	stopLoad := crashLoad(r, ledger, fmt.Sprintf("kill%x", seed), clients, seed)
	stopped := false
	defer func() {
		if !stopped {
			stopLoad()
		}
	}()
	began := time.Now()
	var restarts []time.Time
	for k := 1; k <= kills; k++ {
		// Under load: mail has been accepted by this process before it dies.
		base := ledger.ackedCount()
		for wait := time.Now().Add(60 * time.Second); ledger.ackedCount() == base; {
			if time.Now().After(wait) {
				t.Fatalf("kill %d: no message acknowledged within 60s of the start (replies: %s)", k, ledger.replySummary())
			}
			time.Sleep(10 * time.Millisecond)
		}
		up := time.Duration(rng.IntN(1200)) * time.Millisecond
		time.Sleep(up)
		inflight := len(r.sink.inFlight())
		r.kill()
		t.Logf("kill %d: SIGKILL %v after the first acknowledgement of this run; %d acknowledged so far, %d copies stored, %d held at the sink",
			k, up, ledger.ackedCount(), r.sink.Stats().Received, inflight)
		// Whatever the sink gets from here on comes from the next process.
		r.sink.quiesce(100*time.Millisecond, 10*time.Second)
		restarts = append(restarts, time.Now())
		// Sometimes the restart comes at once, sometimes after a pause in
		// which clients find the port closed.
		time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
		r.start()
	}
	time.Sleep(500 * time.Millisecond)
	stopLoad()
	stopped = true
	loadTime := time.Since(began)

	drainStart := time.Now()
	r.waitDrained(ledger, 2*time.Minute)
	drained := time.Since(drainStart)
	took, err := r.terminate(45 * time.Second)
	if err != nil {
		t.Errorf("certgate serve exited with %v after SIGTERM, want status 0", err)
	}

	c := tallyCrash(ledger, r.sink.copies())
	perKill := duplicatesPerKill(r.sink.Messages(), restarts)
	bound := kills * crashConnLimit
	t.Logf("%d kills over %v; replies: %s", kills, loadTime.Round(time.Millisecond), ledger.replySummary())
	t.Logf("acknowledged %d messages (%d copies); the sink stored %d copies: %d lost, %d duplicates (bound %d = %d kills x connection_limit %d), %d of unacknowledged messages; drained in %v, stopped in %v",
		c.acked, c.ackedCopies, c.stored, len(c.lost), c.duplicates, bound, kills, crashConnLimit, c.unacked,
		drained.Round(time.Millisecond), took.Round(time.Millisecond))
	if len(c.dupKeys) > 0 {
		t.Logf("duplicated copies: %s", strings.Join(c.dupKeys, ", "))
	}
	if c.acked == 0 {
		t.Fatalf("no message was acknowledged")
	}
	if len(c.lost) > 0 {
		t.Errorf("%d acknowledged copies never reached the sink: %s", len(c.lost), strings.Join(crashFirst(c.lost, 20), ", "))
	}
	t.Logf("duplicates by the kill that made them: %v, after the last kill: %d", perKill[:kills], perKill[kills])
	if c.duplicates > bound {
		t.Errorf("%d duplicate copies, more than the %d deliveries that can be in flight at %d kills", c.duplicates, bound, kills)
	}
	for k, n := range perKill[:kills] {
		if n > crashConnLimit {
			t.Errorf("kill %d made %d duplicates, more than the %d deliveries that can be in flight at once", k+1, n, crashConnLimit)
		}
	}
	if n := perKill[kills]; n > 0 {
		t.Errorf("%d copies were delivered twice with no kill between them", n)
	}
	if len(c.strangers) > 0 {
		t.Errorf("the sink got copies nobody submitted: %s", strings.Join(crashFirst(c.strangers, 20), ", "))
	}
	if ledger.permanent() {
		t.Errorf("a client got a permanent refusal for a valid message: %s", ledger.replySummary())
	}
}

// permanent reports whether any client was answered with a 5xx.
func (l *crashLedger) permanent() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for c := range l.replies {
		if strings.HasPrefix(c, "5") {
			return true
		}
	}
	return false
}

func crashFirst(s []string, n int) []string {
	if len(s) > n {
		return append(slices.Clone(s[:n]), fmt.Sprintf("... (%d more)", len(s)-n))
	}
	return s
}

// TestCrashTermDrains sends SIGTERM while the sink holds every delivery
// connection in DATA and clients are mid-session: a session that starts a
// transaction afterwards gets 421 4.3.2, new connections are refused once
// the listener is closed, the deliveries in flight finish and are recorded
// (none is sent twice after the restart), the process exits with status 0
// within the shutdown deadline, and after the restart every acknowledged
// message is delivered.
func TestCrashTermDrains(t *testing.T) {
	r, rng, seed := startCrashTest(t)
	const hold = 1500 * time.Millisecond // 750 ms to 1.5 s
	r.sink.maxDelay.Store(int64(hold))
	r.start()
	addr := r.smtpAddr.Load().(string)

	ledger := newCrashLedger()
	run := fmt.Sprintf("term%x", seed)
	crashSubmitAll(t, r, ledger, run, 0, 16, rng)
	r.waitHeld(crashConnLimit)
	// One client idle after EHLO, one between RCPT and DATA.
	idle, err := dialCrashSMTP(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.close()
	mid, err := dialCrashSMTP(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer mid.close()
	midMsg := newCrashMsg(run, 1, 0, rng)
	if err := mid.envelope(midMsg); err != nil {
		t.Fatalf("MAIL/RCPT before the shutdown: %v", err)
	}

	inflight := r.sink.inFlight()
	p := r.proc
	term := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)

	// The listener closes: a new connection is refused (or, accepted just
	// before that, refused a transaction).
	refused := false
	for wait := time.Now().Add(20 * time.Second); !refused; {
		nc, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			refused = true
			break
		}
		nc.Close()
		if time.Now().After(wait) {
			t.Fatalf("the SMTP listener still accepts connections 20s after SIGTERM")
		}
		time.Sleep(5 * time.Millisecond)
	}
	refusedAfter := time.Since(term)

	// The idle session may not start a transaction.
	newMsg := newCrashMsg(run, 2, 0, rng)
	err = idle.send(newMsg)
	ledger.note(newMsg, err)
	if got := crashReplyClass(err); got != "421 4.3.2" {
		t.Errorf("MAIL on a session open before SIGTERM: %s (%v), want 421 4.3.2", got, err)
	}
	idle.close()
	// The transaction already begun may finish: its reply decides whether it
	// is owed delivery.
	err = mid.data(midMsg)
	ledger.note(midMsg, err)
	midReply := crashReplyClass(err)
	if midReply != "250" && !strings.HasPrefix(midReply, "4") && midReply != "network" {
		t.Errorf("DATA of a transaction begun before SIGTERM: %s (%v), want 250 or a temporary failure", midReply, err)
	}
	mid.close()

	select {
	case <-p.done:
	case <-time.After(45 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		r.proc = nil
		t.Fatalf("certgate serve still running 45s after SIGTERM (the shutdown deadline is 30s)")
	}
	exited := time.Since(term)
	r.proc = nil
	if p.waitErr != nil {
		t.Errorf("certgate serve exited with %v after SIGTERM, want status 0", p.waitErr)
	}
	log := crashLogSince(r.logPath, nil)
	if !strings.Contains(log, "certgate stopped") {
		t.Errorf("the log does not say \"certgate stopped\"")
	}
	if strings.Contains(log, "in flight at the deadline") {
		t.Errorf("the shutdown cut deliveries short although the sink answers within %v", hold)
	}

	// Whatever the sink took before the exit was recorded as delivered: in
	// particular the deliveries in flight at SIGTERM finished.
	before := r.sink.copies()
	for _, k := range inflight {
		if before[k] != 1 {
			t.Errorf("delivery in flight at SIGTERM %s: stored %d times by the exit, want 1", k, before[k])
		}
	}
	t.Logf("SIGTERM with %d deliveries held at the sink: listener closed after %v, exit after %v; %d copies delivered before the exit; the transaction begun before got %s",
		len(inflight), refusedAfter.Round(10*time.Microsecond), exited.Round(time.Millisecond), len(before), midReply)

	r.sink.maxDelay.Store(0)
	r.start()
	r.waitDrained(ledger, time.Minute)
	took, err := r.terminate(45 * time.Second)
	if err != nil {
		t.Errorf("certgate serve exited with %v after the second SIGTERM, want status 0", err)
	}
	c := tallyCrash(ledger, r.sink.copies())
	t.Logf("acknowledged %d messages (%d copies), the sink stored %d: %d lost, %d duplicates; idle stop took %v",
		c.acked, c.ackedCopies, c.stored, len(c.lost), c.duplicates, took.Round(time.Millisecond))
	if len(c.lost) > 0 {
		t.Errorf("acknowledged copies never delivered: %s", strings.Join(crashFirst(c.lost, 20), ", "))
	}
	if c.duplicates > 0 {
		t.Errorf("copies delivered twice across a clean shutdown: %s", strings.Join(c.dupKeys, ", "))
	}
	if len(c.strangers) > 0 {
		t.Errorf("the sink got copies nobody submitted: %s", strings.Join(c.strangers, ", "))
	}
}

// TestCrashTermDeadline sends SIGTERM while the sink holds every delivery
// longer than --shutdown-timeout: the daemon must still exit, with status
// 0, soon after the deadline, saying that deliveries were cut; those go
// back to the queue (the store never recorded them), so after the restart
// every acknowledged message is delivered, and only the deliveries cut at
// the deadline can arrive twice.
func TestCrashTermDeadline(t *testing.T) {
	r, rng, seed := startCrashTest(t)
	// Held 2.5 to 5 s: past the deadline and the second after it.
	const deadline, hold = time.Second, 5 * time.Second
	r.serveArgs = []string{"--shutdown-timeout", deadline.String()}
	r.sink.maxDelay.Store(int64(hold))
	r.start()

	ledger := newCrashLedger()
	run := fmt.Sprintf("deadline%x", seed)
	crashSubmitAll(t, r, ledger, run, 0, 10, rng)
	r.waitHeld(crashConnLimit)
	cut := r.sink.inFlight()
	took, err := r.terminate(hold + 10*time.Second)
	if err != nil {
		t.Errorf("certgate serve exited with %v after SIGTERM, want status 0", err)
	}
	// The deadline, the second the daemon gives cut deliveries' records,
	// the second the race detector waits at exit, and some slack.
	if took > deadline+5*time.Second {
		t.Errorf("certgate serve took %v to exit with --shutdown-timeout %v", took, deadline)
	}
	if log := crashLogSince(r.logPath, nil); !strings.Contains(log, "deliveries still in flight at the deadline") {
		t.Errorf("the log does not say that deliveries were cut at the deadline")
	}

	r.sink.maxDelay.Store(0)
	r.start()
	r.waitDrained(ledger, time.Minute)
	// The copies cut at the deadline are still held by the sink, which
	// stores them when its hold ends.
	r.sink.quiesce(100*time.Millisecond, hold+5*time.Second)
	c := tallyCrash(ledger, r.sink.copies())
	t.Logf("SIGTERM with %d deliveries held past the %v deadline: exit after %v; acknowledged %d messages (%d copies), the sink stored %d: %d lost, %d duplicates",
		len(cut), deadline, took.Round(time.Millisecond), c.acked, c.ackedCopies, c.stored, len(c.lost), c.duplicates)
	if len(c.lost) > 0 {
		t.Errorf("acknowledged copies never delivered: %s", strings.Join(c.lost, ", "))
	}
	if c.duplicates > len(cut) {
		t.Errorf("%d duplicates, more than the %d deliveries cut at the deadline: %s", c.duplicates, len(cut), strings.Join(c.dupKeys, ", "))
	}
}
