// Command clusterbench is the load and the measurement of bench/cluster.sh,
// which starts PostgreSQL, Redis, the sink and one or more certgate nodes and
// runs it once per configuration:
//
//	clusterbench -smtp 127.0.0.1:2525,127.0.0.1:2526 -msg sim/mail/03-fr-attachment-b64-text.eml \
//	    -from no-reply@certs.example -sink http://127.0.0.1:9090/stats -arrivals arrivals.txt \
//	    -certgate 101,102 -postgres 99 -redis 98 -n 4000 -c 16
//
// It submits -n copies of the message file (CRLF lines, as on the wire; a
// Message-ID of its own each time), one recipient each (r000000@sink.example
// and on), over -c SMTP sessions: session k talks to listener k modulo the
// number of -smtp addresses, so the sessions are spread round-robin over the
// nodes, and sends its share one transaction after another on one
// connection. Each transaction's accept latency is timed on the client side,
// from writing the final ".\r\n" to reading the reply.
//
// Once every message is accepted it waits for the sink's count to reach -n,
// and measures from the first submission to the end of DATA of the last copy
// at the sink (the sink's last_unix_ns): messages per second end to end.
// CPU is read from /proc/PID/stat (utime+stime) at the start and at the end
// of that span: the certgate processes given; PostgreSQL's postmaster, every
// process whose parent it is (backends, walwriter, checkpointer...), and what
// its reaped children used (cutime+cstime); Redis; and how many cores the
// whole machine kept busy (/proc/stat), load and sink and others included.
//
// Then, after a second for late copies, it reads the sink's -arrivals file
// and counts the copies per recipient: "exactly once" means every recipient
// has one copy. It prints its figures as "key value" lines on stdout and
// exits 1 when a submission failed, a copy is missing, or one came twice.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/http"
	"net/smtp"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type config struct {
	addrs               []string
	from, domain        string
	sinkURL, arrivals   string
	certgate            []int
	postgres, redis, hz int
	n, c                int
	timeout             time.Duration
}

func main() {
	log.SetPrefix("clusterbench: ")
	log.SetFlags(0)
	var cfg config
	smtpList := flag.String("smtp", "", "comma-separated SMTP listeners of the nodes, HOST:PORT")
	msgFile := flag.String("msg", "", "the message file (CRLF line ends)")
	flag.StringVar(&cfg.from, "from", "no-reply@certs.example", "envelope sender")
	flag.StringVar(&cfg.domain, "rcpt-domain", "sink.example", "the recipients' domain")
	flag.StringVar(&cfg.sinkURL, "sink", "", "the sink's /stats URL")
	flag.StringVar(&cfg.arrivals, "arrivals", "", "the sink's -arrivals file")
	pids := flag.String("certgate", "", "comma-separated pids of the certgate nodes")
	flag.IntVar(&cfg.postgres, "postgres", 0, "the postmaster's pid (0: no PostgreSQL)")
	flag.IntVar(&cfg.redis, "redis", 0, "redis-server's pid (0: no Redis)")
	flag.IntVar(&cfg.hz, "clk-tck", 100, "clock ticks per second of /proc/PID/stat (getconf CLK_TCK)")
	flag.IntVar(&cfg.n, "n", 4000, "messages")
	flag.IntVar(&cfg.c, "c", 16, "concurrent SMTP sessions")
	flag.DurationVar(&cfg.timeout, "timeout", 10*time.Minute, "bound on submission and delivery")
	flag.Parse()
	cfg.addrs = strings.Split(*smtpList, ",")
	for _, s := range strings.Split(*pids, ",") {
		if pid, err := strconv.Atoi(strings.TrimSpace(s)); err == nil {
			cfg.certgate = append(cfg.certgate, pid)
		}
	}
	if *smtpList == "" || *msgFile == "" || cfg.sinkURL == "" || cfg.arrivals == "" || len(cfg.certgate) == 0 || cfg.n < 1 || cfg.c < 1 {
		log.Fatal("-smtp, -msg, -sink, -arrivals and -certgate are required; -n and -c at least 1")
	}
	raw, err := os.ReadFile(*msgFile)
	if err != nil {
		log.Fatal(err)
	}
	_, body, ok := bytes.Cut(raw, []byte("\r\n\r\n"))
	if !ok {
		log.Fatalf("%s: no CRLF blank line after the header", *msgFile)
	}
	if err := run(cfg, headerLines(raw), body); err != nil {
		log.Fatal(err)
	}
}

// headerLines is the message's header without Message-ID, which every
// copy gets its own of.
func headerLines(raw []byte) []byte {
	head, _, _ := bytes.Cut(raw, []byte("\r\n\r\n"))
	var out bytes.Buffer
	skip := false
	for _, line := range bytes.Split(head, []byte("\r\n")) {
		folded := len(line) > 0 && (line[0] == ' ' || line[0] == '\t')
		if !folded {
			skip = bytes.HasPrefix(bytes.ToLower(line), []byte("message-id:"))
		}
		if !skip {
			out.Write(line)
			out.WriteString("\r\n")
		}
	}
	return out.Bytes()
}

// cpu is CPU time in clock ticks of the three parties, and of the whole
// machine (busy: neither idle nor waiting for I/O), which the bench shares
// with the sink, the load and whatever else runs.
type cpu struct{ certgate, postgres, redis, machine int64 }

func (c config) cpuNow() cpu {
	var r cpu
	for _, pid := range c.certgate {
		own, _ := ticks(pid)
		r.certgate += own
	}
	if c.postgres > 0 {
		own, reaped := ticks(c.postgres)
		r.postgres = own + reaped
		for _, pid := range children(c.postgres) {
			own, reaped := ticks(pid)
			r.postgres += own + reaped
		}
	}
	if c.redis > 0 {
		r.redis, _ = ticks(c.redis)
	}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := bytes.Cut(b, []byte("\n"))
		for i, f := range strings.Fields(string(line))[1:] {
			if n, err := strconv.ParseInt(f, 10, 64); err == nil && i < 7 && i != 3 && i != 4 { // not idle, iowait, steal, guest (in user)
				r.machine += n
			}
		}
	}
	return r
}

// stat is /proc/PID/stat's fields after the command name: fields[0] is
// the state (field 3 of proc(5)).
func stat(pid int) []string {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return nil
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(b[i+1:]))
}

// ticks is a process's utime+stime, and its reaped children's cutime+cstime.
func ticks(pid int) (own, reaped int64) {
	f := stat(pid)
	if len(f) < 15 {
		return 0, 0
	}
	v := func(field int) int64 { n, _ := strconv.ParseInt(f[field-3], 10, 64); return n }
	return v(14) + v(15), v(16) + v(17)
}

// children are the processes whose parent is pid.
func children(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	want := strconv.Itoa(pid)
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f := stat(p); len(f) > 1 && f[1] == want {
			out = append(out, p)
		}
	}
	return out
}

type sinkCounts struct {
	Messages int64 `json:"messages"`
	LastNS   int64 `json:"last_unix_ns"`
}

func (c config) sink() (sinkCounts, error) {
	var s sinkCounts
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(c.sinkURL)
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	return s, json.NewDecoder(resp.Body).Decode(&s)
}

// submitter is one SMTP session, sending transaction after transaction.
type submitter struct {
	addr string
	cl   *smtp.Client
}

func (s *submitter) send(from, rcpt string, head, id, body []byte) (time.Duration, error) {
	if s.cl == nil {
		cl, err := smtp.Dial(s.addr)
		if err != nil {
			return 0, err
		}
		if err := cl.Hello("clusterbench.example"); err != nil {
			cl.Close()
			return 0, err
		}
		s.cl = cl
	}
	fail := func(err error) (time.Duration, error) { s.cl.Close(); s.cl = nil; return 0, err }
	if err := s.cl.Mail(from); err != nil {
		return fail(err)
	}
	if err := s.cl.Rcpt(rcpt); err != nil {
		return fail(err)
	}
	w, err := s.cl.Data()
	if err != nil {
		return fail(err)
	}
	for _, part := range [][]byte{head, id, []byte("\r\n"), body} {
		if _, err := w.Write(part); err != nil {
			return fail(err)
		}
	}
	t0 := time.Now()
	if err := w.Close(); err != nil { // ".\r\n" and the reply
		return fail(err)
	}
	return time.Since(t0), nil
}

func run(cfg config, head, body []byte) error {
	deadline := time.Now().Add(cfg.timeout)
	base, err := cfg.sink()
	if err != nil {
		return fmt.Errorf("sink: %v", err)
	}
	before := cfg.cpuNow()
	start := time.Now()
	var (
		next     atomic.Int64
		failed   atomic.Int64
		mu       sync.Mutex
		lat      = make([]time.Duration, 0, cfg.n)
		firstErr error
		wg       sync.WaitGroup
	)
	for k := 0; k < cfg.c; k++ {
		wg.Add(1)
		go func(s *submitter) {
			defer wg.Done()
			mine := make([]time.Duration, 0, cfg.n/cfg.c+1)
			for {
				i := next.Add(1) - 1
				if i >= int64(cfg.n) || time.Now().After(deadline) {
					break
				}
				id := fmt.Appendf(nil, "Message-ID: <cb-%d-%06d@certs.example>\r\n", start.UnixNano(), i)
				d, err := s.send(cfg.from, fmt.Sprintf("r%06d@%s", i, cfg.domain), head, id, body)
				if err != nil {
					failed.Add(1)
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("message %d via %s: %v", i, s.addr, err)
					}
					mu.Unlock()
					continue
				}
				mine = append(mine, d)
			}
			if s.cl != nil {
				s.cl.Quit()
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}(&submitter{addr: cfg.addrs[k%len(cfg.addrs)]})
	}
	wg.Wait()
	submitted := time.Since(start)
	accepted := int64(len(lat))
	var got sinkCounts
	for {
		got, err = cfg.sink()
		if err == nil && got.Messages-base.Messages >= accepted {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timeout: %d of %d accepted messages at the sink", got.Messages-base.Messages, accepted)
		}
		time.Sleep(20 * time.Millisecond)
	}
	after := cfg.cpuNow()
	wall := time.Unix(0, got.LastNS).Sub(start)
	time.Sleep(time.Second) // late copies, and the sink's arrivals buffer
	once, missing, twice, err := exactlyOnce(cfg.arrivals, cfg.n, cfg.domain)
	if err != nil {
		return err
	}
	slices.Sort(lat)
	q := func(p float64) string {
		if len(lat) == 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.1f", float64(lat[int(p*float64(len(lat)-1))].Microseconds())/1000)
	}
	perMsg := func(t int64) float64 { return float64(t) / float64(cfg.hz) * 1000 / float64(cfg.n) }
	cg, pg, rd := perMsg(after.certgate-before.certgate), perMsg(after.postgres-before.postgres), perMsg(after.redis-before.redis)
	share := "n/a"
	if cfg.postgres > 0 && cg+pg > 0 {
		share = fmt.Sprintf("%.0f", 100*pg/(cg+pg))
	}
	for _, kv := range [][2]any{
		{"messages", cfg.n}, {"accepted", accepted}, {"failed", failed.Load()},
		{"once", once}, {"missing", missing}, {"twice", twice},
		{"submit_s", fmt.Sprintf("%.3f", submitted.Seconds())},
		{"wall_s", fmt.Sprintf("%.3f", wall.Seconds())},
		{"accept_rate", fmt.Sprintf("%.0f", float64(accepted)/submitted.Seconds())},
		{"e2e_rate", fmt.Sprintf("%.0f", float64(once)/wall.Seconds())},
		{"p50_ms", q(0.50)}, {"p90_ms", q(0.90)}, {"p99_ms", q(0.99)},
		{"certgate_ms", fmt.Sprintf("%.2f", cg)}, {"postgres_ms", fmt.Sprintf("%.2f", pg)},
		{"redis_ms", fmt.Sprintf("%.3f", rd)}, {"pg_share", share},
		{"machine_cores", fmt.Sprintf("%.2f", float64(after.machine-before.machine)/float64(cfg.hz)/wall.Seconds())},
	} {
		fmt.Printf("%s %v\n", kv[0], kv[1])
	}
	switch {
	case firstErr != nil:
		return fmt.Errorf("%d submissions failed, the first: %v", failed.Load(), firstErr)
	case missing > 0 || twice > 0:
		return fmt.Errorf("%d recipients without a copy, %d with more than one", missing, twice)
	}
	return nil
}

// exactlyOnce counts the copies per recipient r000000..r<n-1> in the
// sink's arrivals file (lines "UNIX_NS RCPT,RCPT...").
func exactlyOnce(path string, n int, domain string) (once, missing, twice int, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, 0, err
	}
	defer f.Close()
	copies := make([]int, n)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		_, rcpts, _ := strings.Cut(sc.Text(), " ")
		for _, r := range strings.Split(rcpts, ",") {
			local, dom, _ := strings.Cut(strings.ToLower(r), "@")
			i, err := strconv.Atoi(strings.TrimPrefix(local, "r"))
			if dom == domain && err == nil && i >= 0 && i < n {
				copies[i]++
			}
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, 0, errors.Join(errors.New("reading the arrivals"), err)
	}
	for _, c := range copies {
		switch {
		case c == 0:
			missing++
		case c == 1:
			once++
		default:
			twice++
		}
	}
	return once, missing, twice, nil
}
