// Command sink is the receiving end of certgate's benchmarks: a counting
// SMTP server on loopback that accepts every message, keeps no body once it
// is counted (and verified), and reports its counters as JSON.
//
// With -dkim-txt it checks every DKIM signature against the TXT records of
// the given zone file(s), in a pool of workers that run after the 250 reply,
// so that verification does not slow down the sender being measured. The
// verification queue is bounded: when it is full the SMTP session waits,
// and /stats reports how often that happened (verify_waits), so that any
// distortion is visible rather than hidden. With -verify-idle D the sink
// keeps every message and verifies only once none has arrived for D: on a
// machine the relay shares, verification then takes no CPU from the relay
// while it is measured (bench/relay.sh does that by default), and every
// signature is still checked before the counters are final.
//
//	sink -smtp 127.0.0.1:0 -http 127.0.0.1:0 -addr-file ADDRS -dkim-txt s1._domainkey.ca.example.txt
//
// With -arrivals FILE it also writes one line per message received, for
// benchmarks that need more than counters (a rate over sliding windows, the
// wait of particular messages): the Unix time in nanoseconds of the end of
// DATA, a space, and the message's recipients, comma-separated. Lines are
// buffered and flushed every 100 ms and at exit, so the file may lag the
// counters by that much.
//
// GET /stats returns the counters; SIGUSR1 prints them to stdout; SIGINT,
// SIGTERM and the end of -max-duration print them and exit.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-smtp"
)

// maxPooledBuffer is the largest buffer kept for reuse; a larger message's
// buffer is left to the garbage collector so one outlier does not pin memory.
const maxPooledBuffer = 4 << 20

// maxFailSamples is how many DKIM failure reasons /stats keeps.
const maxFailSamples = 10

func main() {
	smtpAddr := flag.String("smtp", "127.0.0.1:0", "SMTP listen address (loopback)")
	httpAddr := flag.String("http", "127.0.0.1:0", "HTTP listen address for GET /stats (loopback)")
	addrFile := flag.String("addr-file", "", "write the bound addresses here (lines smtp=HOST:PORT and http=HOST:PORT) once listening")
	txtFiles := flag.String("dkim-txt", "", "comma-separated zone files with DKIM TXT records (as written by certgate dkim keygen); empty disables verification")
	workers := flag.Int("verify-workers", 1, "DKIM verification workers")
	queueLen := flag.Int("verify-queue", 512, "messages waiting for verification before SMTP sessions wait")
	dump := flag.String("dump", "", "write the first message received, byte for byte, to this file")
	maxDuration := flag.Duration("max-duration", 30*time.Minute, "exit after this long whatever happens")
	verifyIdle := flag.Duration("verify-idle", 0, "keep messages and verify them once none has arrived for this long (0: verify as they come)")
	arrivalsPath := flag.String("arrivals", "", "write a line per message received to this file: Unix nanoseconds at the end of DATA and the recipients, comma-separated")
	flag.Parse()
	log.SetPrefix("sink: ")
	log.SetFlags(0)

	for _, a := range []string{*smtpAddr, *httpAddr} {
		if err := requireLoopback(a); err != nil {
			log.Fatal(err)
		}
	}
	st := &stats{}
	var records map[string][]string
	if *txtFiles != "" {
		var err error
		records, err = loadTXT(strings.Split(*txtFiles, ","))
		if err != nil {
			log.Fatal(err)
		}
		if len(records) == 0 {
			log.Fatalf("no TXT records in %s", *txtFiles)
		}
	}
	b := &backend{stats: st, dumpPath: *dump}
	if *arrivalsPath != "" {
		var err error
		if b.arrivals, err = openArrivals(*arrivalsPath); err != nil {
			log.Fatal(err)
		}
	}
	var vwg sync.WaitGroup
	var releaser *heldMessages
	if records != nil {
		b.verify = make(chan *bytes.Buffer, max(*queueLen, 1))
		if *verifyIdle > 0 {
			releaser = &heldMessages{idle: *verifyIdle, out: b.verify, last: &st.last, stop: make(chan struct{}), done: make(chan struct{})}
			b.held = releaser
			go releaser.run()
		}
		opts := &dkim.VerifyOptions{LookupTXT: func(name string) ([]string, error) {
			if v, ok := records[normName(name)]; ok {
				return v, nil
			}
			return nil, &net.DNSError{Err: "no such TXT record in -dkim-txt", Name: name, IsNotFound: true}
		}}
		for range max(*workers, 1) {
			vwg.Add(1)
			go func() {
				defer vwg.Done()
				for buf := range b.verify {
					st.recordVerification(dkim.VerifyWithOptions(bytes.NewReader(buf.Bytes()), opts))
					putBuffer(buf)
				}
			}()
		}
	}

	sl, err := net.Listen("tcp", *smtpAddr)
	if err != nil {
		log.Fatal(err)
	}
	hl, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		log.Fatal(err)
	}
	srv := smtp.NewServer(b)
	srv.Domain = "sink.example"
	srv.MaxMessageBytes = 64 << 20
	srv.ReadTimeout = 2 * time.Minute
	srv.WriteTimeout = time.Minute
	srv.ErrorLog = log.Default()

	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(st.snapshot(b.verify != nil))
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	go func() {
		if err := srv.Serve(sl); err != nil && !errors.Is(err, smtp.ErrServerClosed) {
			log.Printf("smtp: %v", err)
		}
	}()
	go func() {
		if err := hs.Serve(hl); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Printf("http: %v", err)
		}
	}()
	if *addrFile != "" {
		if err := writeAtomic(*addrFile, fmt.Sprintf("smtp=%s\nhttp=%s\n", sl.Addr(), hl.Addr())); err != nil {
			log.Fatal(err)
		}
	}
	log.Printf("listening: smtp=%s http=%s dkim=%v", sl.Addr(), hl.Addr(), records != nil)

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGINT, syscall.SIGTERM)
	deadline := time.NewTimer(*maxDuration)
wait:
	for {
		select {
		case s := <-sigs:
			if s == syscall.SIGUSR1 {
				printStats(st.snapshot(b.verify != nil))
				continue
			}
			break wait
		case <-deadline.C:
			log.Printf("-max-duration %s reached", *maxDuration)
			break wait
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(ctx) // sessions end; no Data call can still be sending to b.verify
	srv.Close()
	if releaser != nil {
		releaser.close() // hands over what it still holds
	}
	if b.verify != nil {
		close(b.verify)
		done := make(chan struct{})
		go func() { vwg.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			log.Printf("verification did not finish in time")
		}
	}
	hs.Shutdown(ctx)
	if b.arrivals != nil {
		if err := b.arrivals.close(); err != nil {
			log.Printf("arrivals: %v", err)
		}
	}
	printStats(st.snapshot(b.verify != nil))
}

// stats are the sink's counters. Times are Unix nanoseconds.
type stats struct {
	messages, recipients, bytes atomic.Int64
	first, last                 atomic.Int64
	sessions, maxSessions       atomic.Int64
	connections                 atomic.Int64
	pass, fail, none            atomic.Int64
	verifyWaits, queued         atomic.Int64

	mu          sync.Mutex
	failSamples []string
}

// Snapshot is what /stats returns.
type Snapshot struct {
	Messages    int64      `json:"messages"`
	Recipients  int64      `json:"recipients"`
	Bytes       int64      `json:"bytes"`
	Connections int64      `json:"connections"`   // SMTP connections accepted in total
	Sessions    int64      `json:"sessions"`      // open now
	MaxSessions int64      `json:"max_sessions"`  // most open at once
	FirstNS     int64      `json:"first_unix_ns"` // end of DATA of the first message
	LastNS      int64      `json:"last_unix_ns"`  // end of DATA of the latest message
	Rate        float64    `json:"rate_per_s"`    // (messages-1) / (last-first)
	DKIM        *DKIMStats `json:"dkim,omitempty"`
}

// DKIMStats counts verified messages: pass when at least one signature
// verifies, fail when signatures exist and none verifies, none without any.
type DKIMStats struct {
	Pass        int64    `json:"pass"`
	Fail        int64    `json:"fail"`
	None        int64    `json:"none"`
	Pending     int64    `json:"pending"`      // received but not yet verified
	VerifyWaits int64    `json:"verify_waits"` // times a session waited for queue room
	FailSamples []string `json:"fail_samples,omitempty"`
}

func (s *stats) snapshot(verifying bool) Snapshot {
	out := Snapshot{
		Messages: s.messages.Load(), Recipients: s.recipients.Load(), Bytes: s.bytes.Load(),
		Connections: s.connections.Load(), Sessions: s.sessions.Load(), MaxSessions: s.maxSessions.Load(),
		FirstNS: s.first.Load(), LastNS: s.last.Load(),
	}
	if out.Messages > 1 && out.LastNS > out.FirstNS {
		out.Rate = float64(out.Messages-1) / (float64(out.LastNS-out.FirstNS) / 1e9)
	}
	if p, f, n := s.pass.Load(), s.fail.Load(), s.none.Load(); verifying {
		s.mu.Lock()
		samples := append([]string(nil), s.failSamples...)
		s.mu.Unlock()
		out.DKIM = &DKIMStats{Pass: p, Fail: f, None: n, Pending: s.queued.Load() - (p + f + n), VerifyWaits: s.verifyWaits.Load(), FailSamples: samples}
	}
	return out
}

// received counts a message and returns the time it was counted at.
func (s *stats) received(size, rcpts int) int64 {
	now := time.Now().UnixNano()
	s.first.CompareAndSwap(0, now)
	for {
		last := s.last.Load()
		if now <= last || s.last.CompareAndSwap(last, now) {
			break
		}
	}
	s.bytes.Add(int64(size))
	s.recipients.Add(int64(rcpts))
	s.messages.Add(1) // last, so that a reader seeing N messages sees their times
	return now
}

func (s *stats) recordVerification(vs []*dkim.Verification, err error) {
	if err != nil {
		s.fail.Add(1)
		s.sample("message: " + err.Error())
		return
	}
	if len(vs) == 0 {
		s.none.Add(1)
		return
	}
	var reasons []string
	for _, v := range vs {
		if v.Err == nil {
			s.pass.Add(1)
			return
		}
		reasons = append(reasons, fmt.Sprintf("d=%s: %v", v.Domain, v.Err))
	}
	s.fail.Add(1)
	s.sample(strings.Join(reasons, "; "))
}

func (s *stats) sample(reason string) {
	s.mu.Lock()
	if len(s.failSamples) < maxFailSamples {
		s.failSamples = append(s.failSamples, reason)
	}
	s.mu.Unlock()
}

func printStats(snap Snapshot) {
	b, _ := json.Marshal(snap)
	fmt.Println(string(b))
}

// backend hands out sessions that accept everything.
type backend struct {
	stats    *stats
	verify   chan *bytes.Buffer // nil: no verification
	held     *heldMessages      // nil: verify as messages come
	arrivals *arrivalLog        // nil: no per-message lines
	dumpPath string
	dumped   atomic.Bool
}

func (b *backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	b.stats.connections.Add(1)
	n := b.stats.sessions.Add(1)
	for {
		m := b.stats.maxSessions.Load()
		if n <= m || b.stats.maxSessions.CompareAndSwap(m, n) {
			break
		}
	}
	return &session{b: b}, nil
}

type session struct {
	b     *backend
	rcpts int
	to    []string // the recipients, kept only for -arrivals
	ended bool
}

func (s *session) Mail(string, *smtp.MailOptions) error { s.Reset(); return nil }
func (s *session) Reset()                               { s.rcpts, s.to = 0, s.to[:0] }

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.rcpts++
	if s.b.arrivals != nil {
		s.to = append(s.to, to)
	}
	return nil
}

func (s *session) Logout() error {
	if !s.ended { // go-smtp calls Logout once per connection; be safe anyway
		s.ended = true
		s.b.stats.sessions.Add(-1)
	}
	return nil
}

// Data reads the message into a pooled buffer, counts it, and queues it for
// verification; the 250 goes out as soon as Data returns.
func (s *session) Data(r io.Reader) error {
	buf := getBuffer()
	if _, err := buf.ReadFrom(r); err != nil {
		putBuffer(buf)
		return err
	}
	if s.b.verify != nil {
		s.b.stats.queued.Add(1) // before the message counts, so that pending never hides it
	}
	at := s.b.stats.received(buf.Len(), s.rcpts)
	if s.b.arrivals != nil {
		s.b.arrivals.add(at, s.to)
	}
	if s.b.dumpPath != "" && s.b.dumped.CompareAndSwap(false, true) {
		if err := writeAtomic(s.b.dumpPath, buf.String()); err != nil {
			log.Printf("dump: %v", err)
		}
	}
	if s.b.verify == nil {
		putBuffer(buf)
		return nil
	}
	if s.b.held != nil {
		s.b.held.add(buf)
		return nil
	}
	select {
	case s.b.verify <- buf:
	default:
		s.b.stats.verifyWaits.Add(1)
		s.b.verify <- buf
	}
	return nil
}

// heldMessages keeps messages until the sink has been idle for a while,
// then hands them to the verification workers.
type heldMessages struct {
	idle       time.Duration
	out        chan<- *bytes.Buffer
	last       *atomic.Int64 // Unix ns of the latest arrival
	stop, done chan struct{}

	mu   sync.Mutex
	bufs []*bytes.Buffer
}

func (h *heldMessages) add(buf *bytes.Buffer) {
	h.mu.Lock()
	h.bufs = append(h.bufs, buf)
	h.mu.Unlock()
}

func (h *heldMessages) release() {
	h.mu.Lock()
	bufs := h.bufs
	h.bufs = nil
	h.mu.Unlock()
	for _, b := range bufs {
		h.out <- b
	}
}

func (h *heldMessages) run() {
	defer close(h.done)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-h.stop:
			h.release()
			return
		case <-tick.C:
			if time.Since(time.Unix(0, h.last.Load())) >= h.idle {
				h.release()
			}
		}
	}
}

func (h *heldMessages) close() {
	close(h.stop)
	<-h.done
}

// arrivalLog is the -arrivals file: a line per message, written through a
// buffer that a goroutine flushes every 100 ms.
type arrivalLog struct {
	mu   sync.Mutex
	f    *os.File
	w    *bufio.Writer
	err  error // the first write error; later lines are dropped
	stop chan struct{}
	done chan struct{}
}

func openArrivals(path string) (*arrivalLog, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	a := &arrivalLog{f: f, w: bufio.NewWriterSize(f, 64<<10), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(a.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				a.mu.Lock()
				a.flush()
				a.mu.Unlock()
			case <-a.stop:
				return
			}
		}
	}()
	return a, nil
}

func (a *arrivalLog) add(unixNS int64, rcpts []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err != nil {
		return
	}
	_, a.err = fmt.Fprintf(a.w, "%d %s\n", unixNS, strings.Join(rcpts, ","))
}

// flush writes the buffer out. Called with a.mu held.
func (a *arrivalLog) flush() {
	if a.err == nil {
		a.err = a.w.Flush()
	}
}

func (a *arrivalLog) close() error {
	close(a.stop)
	<-a.done
	a.mu.Lock()
	defer a.mu.Unlock()
	a.flush()
	if err := a.f.Close(); a.err == nil {
		a.err = err
	}
	return a.err
}

var buffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func getBuffer() *bytes.Buffer { return buffers.Get().(*bytes.Buffer) }

func putBuffer(b *bytes.Buffer) {
	if b.Cap() > maxPooledBuffer {
		return
	}
	b.Reset()
	buffers.Put(b)
}

// loadTXT reads zone-file TXT records: `name [ttl] [IN] TXT "part" "part"`,
// one per line, with ';' comments. The quoted parts of a record are joined,
// as a DKIM verifier does (RFC 6376 3.6.2.2).
func loadTXT(paths []string) (map[string][]string, error) {
	out := map[string][]string{}
	for _, p := range paths {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for line := 1; sc.Scan(); line++ {
			text := strings.TrimSpace(sc.Text())
			if text == "" || strings.HasPrefix(text, ";") {
				continue
			}
			name, value, err := parseTXTLine(text)
			if err != nil {
				f.Close()
				return nil, fmt.Errorf("%s:%d: %v", p, line, err)
			}
			out[name] = append(out[name], value)
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %v", p, err)
		}
	}
	return out, nil
}

func parseTXTLine(line string) (name, value string, err error) {
	m := txtLine.FindStringSubmatch(line)
	if m == nil {
		return "", "", fmt.Errorf("not a TXT record: %q", line)
	}
	rest := m[2]
	var b strings.Builder
	inQuote, parts := false, 0
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		switch {
		case c == '"':
			if !inQuote {
				parts++
			}
			inQuote = !inQuote
		case inQuote && c == '\\' && i+1 < len(rest):
			i++
			b.WriteByte(rest[i])
		case inQuote:
			b.WriteByte(c)
		case c == ';':
			i = len(rest) // a comment ends the record
		}
	}
	if inQuote || parts == 0 {
		return "", "", fmt.Errorf("TXT value must be one or more quoted strings: %q", line)
	}
	return normName(m[1]), b.String(), nil
}

// txtLine is `name [ttl] [class] TXT rest`.
var txtLine = regexp.MustCompile(`(?i)^(\S+)\s+(?:\d+\s+)?(?:IN\s+)?TXT\s+(.*)$`)

func normName(s string) string { return strings.ToLower(strings.TrimSuffix(s, ".")) }

func requireLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("%s: the sink listens on loopback only", addr)
	}
	return nil
}

func writeAtomic(path, content string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".sink-*")
	if err != nil {
		return err
	}
	if _, err := tmp.WriteString(content); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}
