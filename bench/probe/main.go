// Command probe measures what bench/relay.sh cannot get from smtp-source, in
// the same way for every relay it compares (certgate, Postfix with OpenDKIM):
//
//	probe smtp  -addr 127.0.0.1:2525 -msg message.eml -from a@x -to b@y -out probe.json
//	probe procs -pid 123,456 -env MAIL_CONFIG=/tmp/pf/conf -out procs.json
//
// "probe smtp" is one SMTP session running alongside the load: it sends the
// same pre-formatted message file as smtp-source -F (CRLF line ends, dot
// stuffing, no pipelining), one transaction every -interval, and times each
// one on the client side: from writing the final ".\r\n" to reading the
// reply (accept latency: what the submitting system waits for), and from
// connecting to that reply (transaction). It runs until SIGTERM or SIGINT,
// then writes its counts and quantiles as JSON.
//
// "probe procs" samples a set of processes every -interval until SIGTERM or
// SIGINT: the processes given by -pid and every process whose environment
// holds -env (Postfix passes MAIL_CONFIG to all of an instance's daemons).
// It reports the largest sum of their resident sizes (RSS and PSS, which
// shares pages common to several processes among them) seen in one sample,
// and the CPU they used from the first sample to the last, counting what
// exited processes used through their parents' cutime and cstime.
package main

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	log.SetPrefix("probe: ")
	log.SetFlags(0)
	if len(os.Args) < 2 {
		log.Fatal("usage: probe smtp|procs [flags]")
	}
	stop := make(chan os.Signal, 2)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	var (
		out any
		dst *string
	)
	switch os.Args[1] {
	case "smtp":
		fs := flag.NewFlagSet("probe smtp", flag.ExitOnError)
		addr := fs.String("addr", "", "SMTP server HOST:PORT")
		msgFile := fs.String("msg", "", "message file, as for smtp-source -F")
		from := fs.String("from", "", "envelope sender")
		to := fs.String("to", "", "envelope recipient")
		helo := fs.String("helo", "probe.bench.example", "EHLO name")
		interval := fs.Duration("interval", 20*time.Millisecond, "start a transaction at most this often")
		reuse := fs.Bool("reuse", false, "send every message over one connection (smtp-source -d)")
		maxDur := fs.Duration("max-duration", 30*time.Minute, "stop after this long whatever happens")
		dst = fs.String("out", "", "write the JSON result here instead of stdout")
		fs.Parse(os.Args[2:])
		if *addr == "" || *msgFile == "" || *from == "" || *to == "" {
			log.Fatal("smtp: -addr, -msg, -from and -to are required")
		}
		raw, err := os.ReadFile(*msgFile)
		if err != nil {
			log.Fatal(err)
		}
		p := &prober{addr: *addr, from: *from, to: *to, helo: *helo, body: wireMessage(raw), reuse: *reuse}
		out = p.run(stop, *interval, *maxDur)
	case "procs":
		fs := flag.NewFlagSet("probe procs", flag.ExitOnError)
		pids := fs.String("pid", "", "comma-separated process ids to include")
		env := fs.String("env", "", "include every process whose environment holds this NAME=VALUE")
		interval := fs.Duration("interval", 200*time.Millisecond, "sampling interval")
		maxDur := fs.Duration("max-duration", 30*time.Minute, "stop after this long whatever happens")
		dst = fs.String("out", "", "write the JSON result here instead of stdout")
		fs.Parse(os.Args[2:])
		w := &watcher{env: *env, pids: map[int]bool{}, matched: map[int]bool{}}
		for _, s := range strings.Split(*pids, ",") {
			if s = strings.TrimSpace(s); s == "" {
				continue
			}
			pid, err := strconv.Atoi(s)
			if err != nil {
				log.Fatalf("procs: -pid %q: %v", s, err)
			}
			w.pids[pid] = true
		}
		if len(w.pids) == 0 && w.env == "" {
			log.Fatal("procs: -pid or -env is required")
		}
		out = w.run(stop, *interval, *maxDur)
	default:
		log.Fatalf("unknown mode %q: smtp or procs", os.Args[1])
	}
	b, _ := json.MarshalIndent(out, "", "  ")
	b = append(b, '\n')
	if *dst == "" {
		os.Stdout.Write(b)
		return
	}
	if err := os.WriteFile(*dst, b, 0o644); err != nil {
		log.Fatal(err)
	}
}

// wireMessage turns a message file into what smtp-source -F sends after
// DATA: every line ended by CRLF, a leading dot doubled.
func wireMessage(raw []byte) []byte {
	raw = bytes.TrimSuffix(raw, []byte("\n"))
	var b bytes.Buffer
	for _, line := range bytes.Split(raw, []byte("\n")) {
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) > 0 && line[0] == '.' {
			b.WriteByte('.')
		}
		b.Write(line)
		b.WriteString("\r\n")
	}
	return b.Bytes()
}

// SMTPResult is what "probe smtp" reports. Latencies are in milliseconds.
type SMTPResult struct {
	Transactions int     `json:"transactions"`
	OK           int     `json:"ok"`
	Failed       int     `json:"failed"`
	FirstError   string  `json:"first_error,omitempty"`
	AcceptP50    float64 `json:"accept_p50_ms"`
	AcceptP99    float64 `json:"accept_p99_ms"`
	AcceptMean   float64 `json:"accept_mean_ms"`
	AcceptMax    float64 `json:"accept_max_ms"`
	TxnP50       float64 `json:"transaction_p50_ms"`
	TxnP99       float64 `json:"transaction_p99_ms"`
	Seconds      float64 `json:"seconds"`
}

type prober struct {
	addr, from, to, helo string
	body                 []byte
	reuse                bool

	conn net.Conn
	r    *bufio.Reader
}

func (p *prober) run(stop <-chan os.Signal, interval, maxDur time.Duration) SMTPResult {
	var res SMTPResult
	var accept, txn []time.Duration
	start := time.Now()
	deadline := time.NewTimer(maxDur)
	defer deadline.Stop()
	for {
		t0 := time.Now()
		a, err := p.transaction()
		if err != nil {
			res.Failed++
			if res.FirstError == "" {
				res.FirstError = err.Error()
			}
			p.close()
		} else {
			res.OK++
			accept = append(accept, a)
			txn = append(txn, time.Since(t0))
		}
		res.Transactions++
		wait := time.NewTimer(max(interval-time.Since(t0), 0))
		select {
		case <-stop:
			wait.Stop()
			p.quit()
			res.Seconds = time.Since(start).Seconds()
			res.AcceptP50, res.AcceptP99 = quantile(accept, 0.5), quantile(accept, 0.99)
			res.AcceptMean, res.AcceptMax = mean(accept), quantile(accept, 1)
			res.TxnP50, res.TxnP99 = quantile(txn, 0.5), quantile(txn, 0.99)
			return res
		case <-deadline.C:
			log.Printf("-max-duration %s reached", maxDur)
			deadline.Reset(time.Hour) // report on the stop signal as usual
		case <-wait.C:
		}
	}
}

// transaction sends one message and returns the time from the end of its
// data to the server's reply.
func (p *prober) transaction() (time.Duration, error) {
	if p.conn == nil {
		c, err := net.DialTimeout("tcp", p.addr, 10*time.Second)
		if err != nil {
			return 0, err
		}
		p.conn, p.r = c, bufio.NewReader(c)
		if err := p.expect(220); err != nil {
			return 0, fmt.Errorf("greeting: %w", err)
		}
		if err := p.cmd(250, "EHLO "+p.helo); err != nil {
			return 0, err
		}
	}
	p.conn.SetDeadline(time.Now().Add(2 * time.Minute))
	if err := p.cmd(250, "MAIL FROM:<"+p.from+">"); err != nil {
		return 0, err
	}
	if err := p.cmd(250, "RCPT TO:<"+p.to+">"); err != nil {
		return 0, err
	}
	if err := p.cmd(354, "DATA"); err != nil {
		return 0, err
	}
	if _, err := p.conn.Write(p.body); err != nil {
		return 0, err
	}
	t := time.Now()
	if _, err := io.WriteString(p.conn, ".\r\n"); err != nil {
		return 0, err
	}
	if err := p.expect(250); err != nil {
		return 0, fmt.Errorf("end of data: %w", err)
	}
	d := time.Since(t)
	if !p.reuse {
		p.quit()
	}
	return d, nil
}

func (p *prober) cmd(want int, line string) error {
	if _, err := io.WriteString(p.conn, line+"\r\n"); err != nil {
		return err
	}
	if err := p.expect(want); err != nil {
		return fmt.Errorf("%s: %w", strings.Fields(line)[0], err)
	}
	return nil
}

// expect reads a reply, all its lines, and checks its code.
func (p *prober) expect(want int) error {
	for {
		line, err := p.r.ReadString('\n')
		if err != nil {
			return err
		}
		if len(line) < 4 {
			return fmt.Errorf("short reply %q", line)
		}
		if line[3] == '-' {
			continue
		}
		code, err := strconv.Atoi(line[:3])
		if err != nil || code != want {
			return fmt.Errorf("reply %q, want %d", strings.TrimSpace(line), want)
		}
		return nil
	}
}

func (p *prober) quit() {
	if p.conn == nil {
		return
	}
	p.conn.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(p.conn, "QUIT\r\n")
	p.expect(221)
	p.close()
}

func (p *prober) close() {
	if p.conn != nil {
		p.conn.Close()
		p.conn, p.r = nil, nil
	}
}

// quantile returns the q-quantile of ds in milliseconds (nearest rank), 0
// for no samples. It sorts ds.
func quantile(ds []time.Duration, q float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	i := int(q*float64(len(ds))+0.999999) - 1
	i = min(max(i, 0), len(ds)-1)
	return ms(ds[i])
}

func mean(ds []time.Duration) float64 {
	if len(ds) == 0 {
		return 0
	}
	var s time.Duration
	for _, d := range ds {
		s += d
	}
	return ms(s / time.Duration(len(ds)))
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// ProcsResult is what "probe procs" reports. Sizes are in KiB.
type ProcsResult struct {
	Samples    int     `json:"samples"`
	Seconds    float64 `json:"seconds"`
	CPUSeconds float64 `json:"cpu_seconds"`
	PeakRSS    int64   `json:"peak_rss_kib"` // largest sum of VmRSS in one sample
	PeakPSS    int64   `json:"peak_pss_kib"` // largest sum of Pss in one sample
	PeakProcs  int     `json:"peak_procs"`   // most processes in one sample
	ProcsSeen  int     `json:"procs_seen"`   // distinct processes over the run
	// CPUByName is the CPU of the processes by command name, each from its
	// first sample (0 if it started later) to its last: what a process did
	// after the last sample before it ended is missing here, not in CPUSeconds.
	CPUByName map[string]float64 `json:"cpu_by_name"`
	CPUTop    string             `json:"cpu_top"` // the same as text, largest first
}

type watcher struct {
	env     string
	pids    map[int]bool
	matched map[int]bool // pid -> part of the set, for pids seen with a readable environment
	seen    map[int]*procCPU
	first   bool // taking the first sample
}

// procCPU is one process's own CPU (utime+stime) at its first and latest sample.
type procCPU struct {
	name        string
	first, last int64
}

type sample struct {
	cpuTicks int64
	rss, pss int64
	procs    int
}

func (w *watcher) run(stop <-chan os.Signal, interval, maxDur time.Duration) ProcsResult {
	w.seen = map[int]*procCPU{}
	var res ProcsResult
	start := time.Now()
	w.first = true
	first := w.sample()
	w.first = false
	last := first
	record := func(s sample) {
		res.Samples++
		res.PeakRSS = max(res.PeakRSS, s.rss)
		res.PeakPSS = max(res.PeakPSS, s.pss)
		res.PeakProcs = max(res.PeakProcs, s.procs)
		last = s
	}
	record(first)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	deadline := time.After(maxDur)
loop:
	for {
		select {
		case <-tick.C:
			record(w.sample())
		case <-stop:
			break loop
		case <-deadline:
			log.Printf("-max-duration %s reached", maxDur)
			break loop
		}
	}
	record(w.sample())
	res.Seconds = time.Since(start).Seconds()
	res.CPUSeconds = float64(last.cpuTicks-first.cpuTicks) / clockTicks
	res.ProcsSeen = len(w.seen)
	res.CPUByName = map[string]float64{}
	for _, p := range w.seen {
		res.CPUByName[p.name] += float64(p.last-p.first) / clockTicks
	}
	names := make([]string, 0, len(res.CPUByName))
	for n := range res.CPUByName {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b string) int {
		if c := cmp.Compare(res.CPUByName[b], res.CPUByName[a]); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	var top []string
	for _, n := range names {
		if res.CPUByName[n] >= 0.05 {
			top = append(top, fmt.Sprintf("%s %.1f s", n, res.CPUByName[n]))
		}
	}
	res.CPUTop = strings.Join(top, ", ")
	return res
}

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100

func (w *watcher) sample() sample {
	var s sample
	entries, err := os.ReadDir("/proc")
	if err != nil {
		log.Fatal(err)
	}
	live := map[int]bool{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		live[pid] = true
		if !w.member(pid) {
			continue
		}
		dir := filepath.Join("/proc", e.Name())
		name, own, ticks, ok := cpuTicks(dir)
		if !ok {
			continue // gone
		}
		if p := w.seen[pid]; p != nil && p.name == name {
			p.last = own
		} else {
			p = &procCPU{name: name, last: own}
			if w.first {
				p.first = own
			}
			w.seen[pid] = p
		}
		s.procs++
		s.cpuTicks += ticks
		s.rss += statusField(dir, "VmRSS:")
		s.pss += rollupField(dir, "Pss:")
	}
	for pid := range w.matched {
		if !live[pid] {
			delete(w.matched, pid) // its number may come back as another process
		}
	}
	return s
}

func (w *watcher) member(pid int) bool {
	if w.pids[pid] {
		return true
	}
	if w.env == "" {
		return false
	}
	if m, ok := w.matched[pid]; ok {
		return m
	}
	env, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "environ"))
	if err != nil || len(env) == 0 {
		return false // a kernel thread, a process being replaced or gone: ask again next time
	}
	m := bytes.Contains(append([]byte{0}, env...), []byte("\x00"+w.env+"\x00"))
	w.matched[pid] = m
	return m
}

// cpuTicks reads a process's command name, its own CPU (utime+stime) and
// that plus the CPU of the children it has reaped (cutime+cstime).
func cpuTicks(dir string) (name string, own, all int64, ok bool) {
	b, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return "", 0, 0, false
	}
	i, j := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if i < 0 || j < i {
		return "", 0, 0, false
	}
	name = string(b[i+1 : j])
	f := strings.Fields(string(b[j+1:]))
	// After the command: state(0) ppid ... utime(11) stime(12) cutime(13) cstime(14).
	if len(f) < 15 {
		return "", 0, 0, false
	}
	var t [4]int64
	for n, k := range []int{11, 12, 13, 14} {
		if t[n], err = strconv.ParseInt(f[k], 10, 64); err != nil {
			return "", 0, 0, false
		}
	}
	return name, t[0] + t[1], t[0] + t[1] + t[2] + t[3], true
}

func statusField(dir, key string) int64 { return kibField(filepath.Join(dir, "status"), key) }

func rollupField(dir, key string) int64 { return kibField(filepath.Join(dir, "smaps_rollup"), key) }

// kibField returns the value of a "Key:   123 kB" line of a /proc file, 0
// when it is missing (a zombie has no memory lines).
func kibField(path, key string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0 // gone, or not ours to read
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, key); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				v, _ := strconv.ParseInt(f[0], 10, 64)
				return v
			}
		}
	}
	return 0
}
