// Command sendbench measures the send API against SMTP submission on the
// same mail (bench/send.sh builds certgate and the sink, starts them and
// runs it):
//
//	sendbench -api http://127.0.0.1:8080 -token-file send.token \
//	    -smtp 127.0.0.1:2525 -user portal -pass-file portal.pass \
//	    -pid 1234 -sink http://127.0.0.1:9090/stats -n 2000 -c 8
//
// It makes a certificate with crypto/x509 (an ECDSA P-256 issuing CA and an
// RSA-2048 leaf for a person, as an issuer hands out), and one JSON send
// request: that certificate as an attachment (.crt), a custom message, the
// built-in "certificate" template in Spanish, -rcpts recipients at
// sink.example. POST /api/v1/send/preview gives the message the API
// composes for it; SMTP sessions send that message (with a Message-ID of
// its own each time, as the API makes one per call), so both paths carry
// the same mail through the same preparation, signing and spooling.
//
// Each path sends -n messages with -c concurrent clients: for the API, -c
// goroutines posting the request over kept-alive HTTP connections; for
// SMTP, -c sessions, each logging in once (AUTH PLAIN) and sending its
// share of the messages one transaction after another. The messages are
// split into -rounds phases per path, run in ABBA order (API, SMTP, SMTP,
// API, ...) so that neither path always meets the spool at its larger size.
// Before each phase certgate's queue has drained into the sink and the sink
// has verified every DKIM signature, so that a phase shares the machine
// with its own deliveries only.
//
// Per path it prints messages per second (messages over the phases' wall
// time), client-side latency quantiles (the API: request to 202; SMTP: end
// of DATA to 250, and the whole transaction from MAIL to 250), certgate's
// CPU per message and peak resident memory (VmHWM, reset before every phase
// through /proc/PID/clear_refs when allowed), and the API/SMTP rate ratio
// against -target. It exits 1 when a send failed or a message did not
// reach the sink, 0 otherwise (whatever the ratio).
package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/smtp"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type options struct {
	api, tokenFile, smtpAddr, user, passFile, from, sink string
	pid, n, c, rcpts, rounds, warmup                     int
	target                                               float64
	idempotency                                          bool
	drain                                                time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.api, "api", "", "certgate's HTTP base URL")
	flag.StringVar(&o.tokenFile, "token-file", "", "file holding a token with the send scope")
	flag.StringVar(&o.smtpAddr, "smtp", "", "certgate's SMTP listener, HOST:PORT")
	flag.StringVar(&o.user, "user", "", "SMTP AUTH user of the tenant")
	flag.StringVar(&o.passFile, "pass-file", "", "file holding the SMTP user's password")
	flag.StringVar(&o.from, "from", "certificados@ca.example", "sender (the tenant's from domain)")
	flag.StringVar(&o.sink, "sink", "", "the sink's /stats URL (empty: do not wait for deliveries)")
	flag.IntVar(&o.pid, "pid", 0, "certgate's process id, for CPU and memory (0: not measured)")
	flag.IntVar(&o.n, "n", 2000, "messages per path")
	flag.IntVar(&o.c, "c", 8, "concurrent clients per path (HTTP requests in flight, SMTP sessions)")
	flag.IntVar(&o.rcpts, "rcpts", 1, "recipients per message")
	flag.IntVar(&o.rounds, "rounds", 2, "phases per path, run ABBA")
	flag.IntVar(&o.warmup, "warmup", 100, "messages per path sent before measuring")
	flag.Float64Var(&o.target, "target", 0.8, "the API's rate must be at least this share of SMTP's")
	flag.BoolVar(&o.idempotency, "idempotency", false, "send every API call with an Idempotency-Key of its own")
	flag.DurationVar(&o.drain, "drain", 5*time.Minute, "longest wait for the queue to drain into the sink between phases")
	flag.Parse()
	if o.api == "" || o.tokenFile == "" || o.smtpAddr == "" || o.user == "" || o.passFile == "" ||
		o.n < 1 || o.c < 1 || o.rcpts < 1 || o.rounds < 1 || o.warmup < 0 {
		fmt.Fprintln(os.Stderr, "sendbench: -api, -token-file, -smtp, -user, -pass-file are required; -n, -c, -rcpts, -rounds >= 1")
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "sendbench:", err)
		os.Exit(1)
	}
}

// path is one way in: its clients send count messages, c at once, and
// return each one's latencies (and the transaction's, for SMTP).
type path struct {
	name string
	send func(ctx context.Context, count, c int) (lat, txn []time.Duration, err error)
}

// tally is a path's figures over its phases.
type tally struct {
	n          int
	wall, cpu  time.Duration
	lat, txn   []time.Duration
	self, busy time.Duration // sendbench's CPU, the machine's busy time
	hwm        int64         // KiB, the largest of the phases'
	hwmPhase   bool          // hwm was reset before each phase
	deliveredS float64
}

func run(o options) error {
	token, err := readSecret(o.tokenFile)
	if err != nil {
		return err
	}
	pass, err := readSecret(o.passFile)
	if err != nil {
		return err
	}
	certPEM, err := certificate()
	if err != nil {
		return err
	}
	rcpts := make([]string, o.rcpts)
	for i := range rcpts {
		rcpts[i] = fmt.Sprintf("titular%d@sink.example", i+1)
	}
	body, err := json.Marshal(map[string]any{
		"from":                       o.from,
		"emails":                     rcpts,
		"certificate_collect_format": "attachment",
		"certificate":                map[string]string{"pem": certPEM},
		"custom_message":             "Su certificado de firma digital para el portal de facturación.\nGuárdelo junto con su clave privada.",
		"template":                   "certificate",
		"language":                   "es",
		"variables":                  map[string]string{"order": "A1-2026-00042"},
	})
	if err != nil {
		return err
	}
	hc := &http.Client{Timeout: time.Minute, Transport: &http.Transport{
		MaxIdleConns: o.c, MaxIdleConnsPerHost: o.c, IdleConnTimeout: time.Minute, DisableCompression: true}}
	msg, err := preview(hc, o.api, token, body)
	if err != nil {
		return err
	}
	ctx := context.Background()
	var idem atomic.Int64
	api := path{name: "API", send: func(ctx context.Context, count, c int) ([]time.Duration, []time.Duration, error) {
		lat, err := parallel(count, c, func(int) (func() (time.Duration, time.Duration, error), func() error) {
			return func() (time.Duration, time.Duration, error) {
				key := ""
				if o.idempotency {
					key = fmt.Sprintf("bench-%d-%d", os.Getpid(), idem.Add(1))
				}
				t0 := time.Now()
				err := post(ctx, hc, o.api+"/api/v1/send", token, key, body, http.StatusAccepted, nil)
				return time.Since(t0), 0, err
			}, nil
		})
		return lat.a, nil, err
	}}
	sm := path{name: "SMTP", send: func(ctx context.Context, count, c int) ([]time.Duration, []time.Duration, error) {
		lat, err := parallel(count, c, func(worker int) (func() (time.Duration, time.Duration, error), func() error) {
			var s *session
			seq := 0
			return func() (time.Duration, time.Duration, error) {
					if s == nil {
						var err error
						if s, err = dial(o.smtpAddr, o.user, pass); err != nil {
							return 0, 0, err
						}
					}
					seq++
					data := withMessageID(msg, fmt.Sprintf("<bench.%d.%d.%d@ca.example>", time.Now().UnixNano(), worker, seq))
					return s.send(o.from, rcpts, data)
				}, func() error {
					if s == nil {
						return nil
					}
					return s.c.Quit()
				}
		})
		return lat.a, lat.b, err
	}}

	sink := &sinkStats{url: o.sink, hc: hc}
	before, err := sink.get()
	if err != nil {
		return err
	}
	expected := before.Recipients // every recipient's copy is delivered on its own
	if o.warmup > 0 {
		for _, p := range []path{api, sm} {
			if _, _, err := p.send(ctx, o.warmup, o.c); err != nil {
				return fmt.Errorf("warm-up through %s: %w", p.name, err)
			}
			expected += int64(o.warmup * o.rcpts)
		}
	}
	cpus := runtime.NumCPU()
	fmt.Fprintf(os.Stderr, "sendbench: %d bytes a message as composed (preview), %d recipient(s); warm-up %d per path; %d CPUs\n",
		len(msg), o.rcpts, o.warmup, cpus)

	totals := map[string]*tally{"API": {}, "SMTP": {}}
	var order []path
	for r := range o.rounds {
		if r%2 == 0 {
			order = append(order, api, sm)
		} else {
			order = append(order, sm, api)
		}
	}
	// the phases' sizes: n split as evenly as it goes
	done := map[string]int{}
	phases := map[string]int{}
	for _, p := range order {
		phases[p.name]++
	}
	seen := map[string]int{}
	for _, p := range order {
		seen[p.name]++
		count := o.n / o.rounds
		if seen[p.name] == phases[p.name] {
			count = o.n - done[p.name]
		}
		done[p.name] += count
		if count == 0 {
			continue
		}
		t0 := time.Now()
		if err := sink.settle(expected, o.drain); err != nil {
			return fmt.Errorf("before the %s phase: %w", p.name, err)
		}
		tl := totals[p.name]
		tl.deliveredS += time.Since(t0).Seconds()
		reset := resetHWM(o.pid)
		cpu0, self0, busy0 := procCPU(o.pid), procCPU(os.Getpid()), machineBusy()
		start := time.Now()
		lat, txn, err := p.send(ctx, count, o.c)
		wall := time.Since(start)
		if err != nil {
			return fmt.Errorf("%s phase: %w", p.name, err)
		}
		tl.n += count
		tl.wall += wall
		tl.cpu += procCPU(o.pid) - cpu0
		tl.self += procCPU(os.Getpid()) - self0
		tl.busy += machineBusy() - busy0
		tl.lat = append(tl.lat, lat...)
		tl.txn = append(tl.txn, txn...)
		tl.hwm = max(tl.hwm, status(o.pid, "VmHWM"))
		tl.hwmPhase = reset
		expected += int64(count * o.rcpts)
		fmt.Fprintf(os.Stderr, "sendbench: %-4s phase: %d messages in %.2f s, %.0f msg/s, p50 %s\n",
			p.name, count, wall.Seconds(), float64(count)/wall.Seconds(), ms(quantile(lat, 0.5)))
	}
	settleErr := sink.settle(expected, o.drain)
	after, err := sink.get()
	if err != nil {
		return err
	}
	report(o, totals, len(msg), cpus, before, after, expected)
	if settleErr != nil {
		return settleErr
	}
	return nil
}

func report(o options, totals map[string]*tally, size, cpus int, before, after stats, expected int64) {
	a, s := totals["API"], totals["SMTP"]
	rate := func(t *tally) float64 { return float64(t.n) / t.wall.Seconds() }
	cpuPer := func(t *tally) string {
		if o.pid == 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.2f", float64(t.cpu.Microseconds())/1000/float64(t.n))
	}
	cores := func(t *tally) string {
		if o.pid == 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.2f", t.cpu.Seconds()/t.wall.Seconds())
	}
	mib := func(t *tally) string {
		if t.hwm == 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.0f", float64(t.hwm)/1024)
	}
	row := func(name, av, sv, ratio string) { fmt.Printf("  %-46s %12s %12s %9s\n", name, av, sv, ratio) }
	ratioOf := func(x, y float64) string {
		if x <= 0 || y <= 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.2f", x/y)
	}
	q := func(l []time.Duration, p float64) string {
		if len(l) == 0 {
			return "-"
		}
		return ms(quantile(l, p))
	}
	idem := ""
	if o.idempotency {
		idem = ", each API call with an Idempotency-Key"
	}
	fmt.Printf("\nsend API and SMTP submission, the same mail  (%s)\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Printf("  mail:     the built-in certificate template (es), format attachment (an RSA-2048 leaf, PEM .crt),\n")
	fmt.Printf("            a custom message; %d recipient(s) a message; %d bytes as composed (before signing)\n", o.rcpts, size)
	fmt.Printf("  load:     %d messages per path in %d phases each, ABBA order, %d concurrent clients%s;\n", o.n, o.rounds, o.c, idem)
	fmt.Printf("            API: HTTP/1.1 keep-alive, one JSON request per message; SMTP: AUTH PLAIN once per session,\n")
	fmt.Printf("            then MAIL, RCPT, DATA per message (no pipelining); warm-up %d per path; %d CPUs\n", o.warmup, cpus)
	fmt.Println("  -----------------------------------------------------------------------------------")
	row("", "API (202)", "SMTP (250)", "API/SMTP")
	ar, sr := rate(a), rate(s)
	row("messages per second", fmt.Sprintf("%.0f", ar), fmt.Sprintf("%.0f", sr), ratioOf(ar, sr))
	for _, p := range []float64{0.5, 0.9, 0.99} {
		pa, ps := quantile(a.lat, p), quantile(s.txn, p)
		row(fmt.Sprintf("latency p%.0f, ms (API call; SMTP MAIL->250)", p*100), q(a.lat, p), q(s.txn, p), ratioOf(float64(pa), float64(ps)))
	}
	row("latency max, ms", q(a.lat, 1), q(s.txn, 1), "")
	for _, p := range []float64{0.5, 0.99} {
		row(fmt.Sprintf("SMTP end of DATA -> 250, p%.0f, ms", p*100), "", q(s.lat, p), "")
	}
	ac, sc := float64(a.cpu)/float64(a.n), float64(s.cpu)/float64(s.n)
	row("certgate CPU, ms per message", cpuPer(a), cpuPer(s), ratioOf(ac, sc))
	row("certgate CPU, cores", cores(a), cores(s), "")
	others := func(t *tally) string {
		return fmt.Sprintf("%.2f", (t.busy-t.cpu-t.self).Seconds()/t.wall.Seconds())
	}
	row("sendbench CPU, cores", fmt.Sprintf("%.2f", t2s(a.self, a.wall)), fmt.Sprintf("%.2f", t2s(s.self, s.wall)), "")
	row(fmt.Sprintf("other processes (the sink too), cores of %d", cpus), others(a), others(s), "")
	hwm := "peak RSS (VmHWM), MiB, in the phases"
	if !a.hwmPhase || !s.hwmPhase {
		hwm = "peak RSS (VmHWM), MiB, since start"
	}
	row("certgate "+hwm, mib(a), mib(s), "")
	row("queue drain before its phases, s", fmt.Sprintf("%.1f", a.deliveredS), fmt.Sprintf("%.1f", s.deliveredS), "")
	fmt.Println("  -----------------------------------------------------------------------------------")
	if after.Messages >= 0 {
		got := after.Messages - before.Messages
		dk := "n/a"
		if after.DKIM != nil {
			dk = fmt.Sprintf("pass %d, fail %d, none %d", after.DKIM.Pass, after.DKIM.Fail, after.DKIM.None)
		}
		fmt.Printf("  at the sink: %d copies (one a recipient) of %d messages sent to %d recipients in all (warm-up\n", got, (expected-before.Recipients)/int64(o.rcpts), expected-before.Recipients)
		fmt.Printf("  included); DKIM %s\n", dk)
	}
	verdict := "FAIL"
	if ar >= o.target*sr {
		verdict = "PASS"
	}
	fmt.Printf("  the API's rate is %.0f%% of SMTP's (target: at least %.0f%%): %s\n", 100*ar/sr, 100*o.target, verdict)
	fmt.Println("  Latency is the client's: the API from writing the request to reading the 202; SMTP from MAIL to")
	fmt.Println("  the 250 after DATA (the whole transaction), and from the end of DATA to that 250. Rates are")
	fmt.Println("  messages over the phases' wall time; certgate delivers to the sink meanwhile, in both paths alike.")
}

// --- the clients --------------------------------------------------------------

type pair struct{ a, b []time.Duration }

// parallel runs count calls over c workers; each worker gets its own call
// (and a closer, run when it is done) from mk.
func parallel(count, c int, mk func(worker int) (func() (time.Duration, time.Duration, error), func() error)) (pair, error) {
	var (
		next     atomic.Int64
		mu       sync.Mutex
		out      pair
		firstErr error
		wg       sync.WaitGroup
	)
	for w := range min(c, count) {
		call, closer := mk(w)
		wg.Go(func() {
			var a, b []time.Duration
			var err error
			for next.Add(1) <= int64(count) {
				var da, db time.Duration
				if da, db, err = call(); err != nil {
					break
				}
				a = append(a, da)
				if db > 0 {
					b = append(b, db)
				}
			}
			if closer != nil {
				if cerr := closer(); err == nil {
					err = cerr
				}
			}
			mu.Lock()
			defer mu.Unlock()
			out.a = append(out.a, a...)
			out.b = append(out.b, b...)
			if err != nil && firstErr == nil {
				firstErr = err
				next.Store(int64(count)) // the others stop too
			}
		})
	}
	wg.Wait()
	return out, firstErr
}

func post(ctx context.Context, hc *http.Client, url, token, key string, body []byte, want int, out io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		out = io.Discard
	}
	if resp.StatusCode != want {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
		return fmt.Errorf("POST %s: %s: %s", url, resp.Status, bytes.TrimSpace(b))
	}
	_, err = io.Copy(out, resp.Body)
	return err
}

// preview is the message the API composes for body.
func preview(hc *http.Client, base, token string, body []byte) ([]byte, error) {
	var buf bytes.Buffer
	if err := post(context.Background(), hc, base+"/api/v1/send/preview", token, "", body, http.StatusOK, &buf); err != nil {
		return nil, err
	}
	if !bytes.Contains(buf.Bytes(), []byte("\r\nMessage-Id: ")) && !bytes.Contains(buf.Bytes(), []byte("\r\nMessage-ID: ")) {
		return nil, errors.New("the preview has no Message-ID field (CRLF lines expected)")
	}
	return buf.Bytes(), nil
}

// withMessageID is msg with its Message-ID field's value replaced.
func withMessageID(msg []byte, id string) []byte {
	end := bytes.Index(msg, []byte("\r\n\r\n"))
	if end < 0 {
		end = len(msg)
	}
	for _, name := range []string{"\r\nMessage-Id: ", "\r\nMessage-ID: "} {
		i := bytes.Index(msg[:end], []byte(name))
		if i < 0 {
			continue
		}
		v := i + len(name)
		e := v + bytes.Index(msg[v:], []byte("\r\n"))
		out := make([]byte, 0, len(msg)+len(id))
		out = append(out, msg[:v]...)
		out = append(out, id...)
		return append(out, msg[e:]...)
	}
	return msg
}

type session struct{ c *smtp.Client }

func dial(addr, user, pass string) (*session, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	c, err := smtp.NewClient(conn, "127.0.0.1")
	if err != nil {
		conn.Close()
		return nil, err
	}
	if err := c.Hello("portal.bench.example"); err != nil {
		c.Close()
		return nil, err
	}
	if err := c.Auth(smtp.PlainAuth("", user, pass, "127.0.0.1")); err != nil {
		c.Close()
		return nil, fmt.Errorf("AUTH: %w", err)
	}
	return &session{c: c}, nil
}

// send is one transaction: the time from the end of DATA to the reply,
// and from MAIL to that reply.
func (s *session) send(from string, rcpts []string, data []byte) (time.Duration, time.Duration, error) {
	t0 := time.Now()
	if err := s.c.Mail(from); err != nil {
		return 0, 0, fmt.Errorf("MAIL: %w", err)
	}
	for _, r := range rcpts {
		if err := s.c.Rcpt(r); err != nil {
			return 0, 0, fmt.Errorf("RCPT: %w", err)
		}
	}
	w, err := s.c.Data()
	if err != nil {
		return 0, 0, fmt.Errorf("DATA: %w", err)
	}
	if _, err := w.Write(data); err != nil {
		return 0, 0, err
	}
	// The dot writer has sent all but its last buffer: Close sends that and
	// the final dot, and reads the reply.
	t1 := time.Now()
	if err := w.Close(); err != nil {
		return 0, 0, fmt.Errorf("end of DATA: %w", err)
	}
	t2 := time.Now()
	return t2.Sub(t1), t2.Sub(t0), nil
}

// --- the certificate -----------------------------------------------------------

// certificate is a leaf as an issuer hands it out, PEM: an RSA-2048 key
// for a person, signed by an ECDSA P-256 issuing CA.
func certificate() (string, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	now := time.Now().Truncate(time.Minute)
	ca := &x509.Certificate{
		SerialNumber:          big.NewInt(0x5eed),
		Subject:               pkix.Name{Country: []string{"AR"}, Organization: []string{"Autoridad Certificante Bench"}, CommonName: "AC Bench Firma Digital"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(5, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return "", err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return "", err
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return "", err
	}
	leaf := &x509.Certificate{
		SerialNumber:   serial,
		Subject:        pkix.Name{Country: []string{"AR"}, CommonName: "Ana Pérez", SerialNumber: "CUIL 27123456784"},
		NotBefore:      now,
		NotAfter:       now.AddDate(2, 0, 0),
		KeyUsage:       x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection, x509.ExtKeyUsageClientAuth},
		EmailAddresses: []string{"titular1@sink.example"},
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), nil
}

// --- certgate's process and the sink -------------------------------------------

// procCPU is the process's user and system time (0 without a pid).
func procCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	k, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+k) * time.Second / 100 // USER_HZ: 100 on Linux
}

// machineBusy is the time all CPUs spent neither idle nor waiting for I/O
// since boot, from /proc/stat.
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return 0
	}
	var t int64
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i != 3 && i != 4 { // idle, iowait
			t += n
		}
	}
	return time.Duration(t) * time.Second / 100
}

func t2s(cpu, wall time.Duration) float64 { return cpu.Seconds() / wall.Seconds() }

// status is a /proc/PID/status field in KiB (0 when unknown).
func status(pid int, key string) int64 {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// resetHWM sets the process's peak RSS back to its current RSS (Linux
// 4.0+, a process of the same user); false when that was not allowed.
func resetHWM(pid int) bool {
	if pid == 0 {
		return false
	}
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0) == nil
}

type stats struct {
	Messages   int64 `json:"messages"`
	Recipients int64 `json:"recipients"`
	DKIM       *struct {
		Pass    int64 `json:"pass"`
		Fail    int64 `json:"fail"`
		None    int64 `json:"none"`
		Pending int64 `json:"pending"`
	} `json:"dkim"`
}

type sinkStats struct {
	url string
	hc  *http.Client
}

// get is the sink's counters (Messages -1 without a sink).
func (s *sinkStats) get() (stats, error) {
	if s.url == "" {
		return stats{Messages: -1}, nil
	}
	resp, err := s.hc.Get(s.url)
	if err != nil {
		return stats{}, err
	}
	defer resp.Body.Close()
	var st stats
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// settle waits until the sink has received want recipients' copies and
// verified every signature, for at most limit.
func (s *sinkStats) settle(want int64, limit time.Duration) error {
	if s.url == "" {
		return nil
	}
	deadline := time.Now().Add(limit)
	for {
		st, err := s.get()
		if err != nil {
			return err
		}
		if st.Recipients >= want && (st.DKIM == nil || st.DKIM.Pending == 0) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the sink has %d recipients' copies of %d after %s", st.Recipients, want, limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// --- figures --------------------------------------------------------------------

func quantile(l []time.Duration, q float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := slices.Clone(l)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d.Microseconds())/1000) }

func readSecret(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s is empty", file)
	}
	return s, nil
}
