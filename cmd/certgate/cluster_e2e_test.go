package main

// Three certgate nodes, as separate processes, on one private PostgreSQL
// and one private Redis, delivering to a simulated provider whose lane
// allows 6,000 messages a minute: every message is delivered once, the
// lane's rate holds across the nodes, a node killed mid-wave loses
// nothing, and a Redis that stops mid-wave leaves each node on its share.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/jackc/pgx/v5"

	"github.com/certgate/certgate/gateway/signer"
	"github.com/certgate/certgate/internal/testpg"
	"github.com/certgate/certgate/internal/testredis"
	"github.com/certgate/certgate/sim"
)

// The lane of the simulated provider: 6,000/min is 100 a second.
const (
	clusterRate     = 100.0 // messages a second
	clusterLease    = "3s"
	clusterMessages = 2000
)

// clusterRig is a cluster of certgate processes and what they share.
type clusterRig struct {
	t     *testing.T
	dir   string
	bin   string
	dsn   string
	redis *testredis.Server
	sink  *sim.Provider
	nodes []*clusterProc
	body  []byte // the sample certificate mail every message is made from
}

type clusterProc struct {
	name     string
	cfg      string
	log      string
	smtpAddr string
	httpAddr string
	proc     *e2eProcess
	killed   atomic.Bool // read by the submitting clients
}

func newClusterRig(t *testing.T, nodes int) *clusterRig {
	t.Helper()
	e2eStart(t)
	if msg := testpg.Missing(); msg != "" {
		e2eMissing(t, "%s", msg)
	}
	if msg := testredis.Missing(); msg != "" {
		e2eMissing(t, "%s", msg)
	}
	r := &clusterRig{t: t, dir: t.TempDir(), bin: e2eCertgateBinary(t)}
	r.dsn = testpg.Start(t).NewDB(t)
	r.redis = testredis.New(t)
	sink, err := sim.Start(sim.Options{Name: "simmail", Domains: []string{"sim.example"}, MXHost: "mx.sim.example"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	r.sink = sink
	body, err := os.ReadFile("../../sim/mail/01-es-download-link-qp.eml")
	if err != nil {
		t.Fatal(err)
	}
	r.body = body
	_, key, err := signer.Generate("ed25519", "ca.example", "s1")
	if err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, r.dir, "dkim.pem", string(key))
	writeTestFile(t, r.dir, "pg.dsn", r.dsn+"\n")
	writeTestFile(t, r.dir, "form.key", e2eRandomHex(t, 32)+"\n")
	writeTestFile(t, r.dir, "session.key", e2eRandomHex(t, 32)+"\n")
	for i := range nodes {
		r.nodes = append(r.nodes, r.start(fmt.Sprintf("n%d", i+1)))
	}
	return r
}

// start runs one node, and waits until it answers /readyz.
func (r *clusterRig) start(name string) *clusterProc {
	t := r.t
	_, port, _ := strings.Cut(r.sink.Addr(), ":")
	for attempt := 1; ; attempt++ {
		n := &clusterProc{name: name, log: filepath.Join(r.dir, name+".log"),
			smtpAddr: fmt.Sprintf("127.0.0.1:%d", e2eFreePort(t)), httpAddr: fmt.Sprintf("127.0.0.1:%d", e2eFreePort(t))}
		n.cfg = writeTestFile(t, r.dir, name+".yaml", strings.Join([]string{
			"hostname: " + name + ".relay.ca.example",
			"data_dir: " + filepath.Join(r.dir, name),
			"storage: {driver: postgres, dsn_file: " + filepath.Join(r.dir, "pg.dsn") + "}",
			"cluster: {node: " + name + ", lease: " + clusterLease + ", redis: {addr: \"" + r.redis.Addr + "\"}}",
			"gate: {form_key_file: " + filepath.Join(r.dir, "form.key") + "}",
			"console: {session_key_file: " + filepath.Join(r.dir, "session.key") + "}",
			"smtp: {listen: [\"" + n.smtpAddr + "\"]}",
			"http: {listen: \"" + n.httpAddr + "\"}",
			"tenants:",
			"  - {name: issuer, trusted_networks: [127.0.0.0/8], from_domains: [ca.example], max_queued: 100000}",
			"dkim: [{domain: ca.example, selector: s1, key_file: " + filepath.Join(r.dir, "dkim.pem") + "}]",
			"delivery:",
			"  mx_port: " + port,
			`  routes: [{domains: ["*"], mx: true, tls: none}]`,
			"  retry: {schedule: [1s], max_age: 1h}",
			"  static_dns:",
			"    mx: {sim.example: [mx.sim.example]}",
			`    hosts: {mx.sim.example: ["127.0.0.1"]}`,
			"providers:",
			"  - {name: simmail, domains: [sim.example], max_message_rate: 6000/min, connection_limit: 12}",
			"dns_check: {interval: 0}",
			"log: {level: info}",
			"",
		}, "\n"))
		p, err := e2eStartProcess(n.log, r.bin, "serve", "--config", n.cfg)
		if err != nil {
			t.Fatal(err)
		}
		err = p.waitReady("http://"+n.httpAddr+"/readyz", 90*time.Second)
		if err == nil {
			n.proc = p
			t.Cleanup(func() {
				if !n.killed.Load() {
					stopServe(t, n.proc, n.log)
				}
			})
			return n
		}
		p.stop(10 * time.Second)
		if attempt < 3 && strings.Contains(e2eTail(n.log, 100), "address already in use") {
			continue
		}
		t.Fatalf("node %s: %v\nits log:\n%s", name, err, e2eTail(n.log, 100))
	}
}

var messageIDHeader = regexp.MustCompile(`(?im)^Message-ID:.*$`)

// submit sends n messages, one recipient each (u<i>@sim.example), over
// SMTP to the nodes in turn from 12 clients, as a load balancer spreads
// them; a message a node fails to take goes to the next one, and counts
// in refused (a node that died in the middle may have stored it without
// saying so: then it is delivered twice, as SMTP has it). It returns the
// recipients whose message a node acknowledged.
func (r *clusterRig) submit(n int, refused *atomic.Int64) []string {
	t := r.t
	var mu sync.Mutex
	var acked []string
	var lastErr error
	next := make(chan int)
	var wg sync.WaitGroup
	for w := range 12 {
		wg.Go(func() {
			for i := range next {
				rcpt := fmt.Sprintf("u%05d@sim.example", i)
				msg := messageIDHeader.ReplaceAll(r.body, fmt.Appendf(nil, "Message-ID: <cl-%05d@ca.example>", i))
				for try := range 2 * len(r.nodes) {
					node := r.nodes[(i+w+try)%len(r.nodes)]
					if node.killed.Load() {
						continue
					}
					err := clusterSend(node.smtpAddr, rcpt, msg)
					if err == nil {
						mu.Lock()
						acked = append(acked, rcpt)
						mu.Unlock()
						break
					}
					refused.Add(1)
					mu.Lock()
					lastErr = err
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if len(acked) != n {
		// Errorf: submit runs on a goroutine of its own in some tests.
		t.Errorf("%d of %d messages acknowledged; the last refusal: %v", len(acked), n, lastErr)
	}
	return acked
}

// waveUnderWay submits the wave in the background and returns once a
// quarter of it has reached the sink; the channel yields what submit
// returns.
func (r *clusterRig) waveUnderWay(refused *atomic.Int64) <-chan []string {
	done := make(chan []string, 1)
	go func() { done <- r.submit(clusterMessages, refused) }()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := r.sink.WaitFor(ctx, clusterMessages/4); err != nil {
		r.t.Fatal(err)
	}
	return done
}

// clusterSend submits one message in its own session (plain SMTP: the
// tenant trusts loopback).
func clusterSend(addr, rcpt string, msg []byte) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SendMail("certificados@ca.example", []string{rcpt}, bytes.NewReader(msg)); err != nil {
		return err
	}
	return c.Quit()
}

// waitDelivered waits until the sink has a copy for every one of rcpts.
func (r *clusterRig) waitDelivered(rcpts []string, within time.Duration) map[string]int {
	t := r.t
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if err := r.sink.WaitFor(ctx, len(rcpts)); err != nil {
		t.Fatalf("the sink has %d of %d copies after %v: %v", len(r.sink.Messages()), len(rcpts), within, err)
	}
	// Copies sent twice arrive meanwhile; wait until every recipient has one.
	for {
		msgs := r.sink.Messages()
		got := map[string]int{}
		for _, m := range msgs {
			got[m.To]++
		}
		var missing []string
		for _, rc := range rcpts {
			if got[rc] == 0 {
				missing = append(missing, rc)
			}
		}
		if len(missing) == 0 {
			return got
		}
		if err := r.sink.WaitFor(ctx, len(msgs)+1); err != nil {
			t.Fatalf("%d acknowledged messages never delivered (%v); in the store:\n%s", len(missing), err, r.describe(missing))
		}
	}
}

// query runs a query on the shared store.
func (r *clusterRig) query(sql string, fn func(pgx.Rows)) {
	t := r.t
	conn, err := pgx.Connect(context.Background(), r.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(context.Background(), sql)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	fn(rows)
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
}

// count is a query's single number.
func (r *clusterRig) count(sql string) int {
	var n int
	r.query(sql, func(rows pgx.Rows) {
		for rows.Next() {
			if err := rows.Scan(&n); err != nil {
				r.t.Fatal(err)
			}
		}
	})
	return n
}

// describe is what the store says of some recipients, for a failure.
func (r *clusterRig) describe(rcpts []string) string {
	var b strings.Builder
	r.query(fmt.Sprintf(`SELECT address, state, lease_node, attempts, next_attempt, last_reply FROM recipients
		WHERE address IN ('%s') LIMIT 20`, strings.Join(rcpts, "','")), func(rows pgx.Rows) {
		for rows.Next() {
			var addr, state, lease, reply string
			var attempts int
			var next int64
			if err := rows.Scan(&addr, &state, &lease, &attempts, &next, &reply); err != nil {
				r.t.Fatal(err)
			}
			fmt.Fprintf(&b, "  %s: %s, lease %q, %d attempts, next %v, last %q\n", addr, state, lease, attempts, time.Unix(0, next).UTC(), reply)
		}
	})
	return b.String()
}

// books counts the recipients in each state in the shared store.
func (r *clusterRig) books() map[string]int {
	out := map[string]int{}
	r.query("SELECT state, count(*) FROM recipients GROUP BY state", func(rows pgx.Rows) {
		for rows.Next() {
			var s string
			var n int
			if err := rows.Scan(&s, &n); err != nil {
				r.t.Fatal(err)
			}
			out[s] = n
		}
	})
	return out
}

// waitBooks waits for the store to say every one of n copies delivered
// (the last records land just after the copies do), and up to extra more:
// messages a dying node stored without acknowledging them, sent again.
func (r *clusterRig) waitBooks(n, extra int) {
	t := r.t
	deadline := time.Now().Add(30 * time.Second)
	for {
		b := r.books()
		if d := b["delivered"]; d >= n && d <= n+extra && len(b) == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the books do not balance: %v, want %d delivered (up to %d more sent again) and nothing else", b, n, extra)
		}
		time.Sleep(100 * time.Millisecond) // polling another process's database
	}
}

// peakRate is the most copies the sink took in any window of w, as a
// rate per second, from the arrivals at or after from.
func (r *clusterRig) peakRate(w time.Duration, from time.Time) (float64, int) {
	var at []time.Time
	for _, m := range r.sink.Messages() {
		if !m.Received.Before(from) {
			at = append(at, m.Received)
		}
	}
	sort.Slice(at, func(i, j int) bool { return at[i].Before(at[j]) })
	most, j := 0, 0
	for i := range at {
		for at[i].Sub(at[j]) >= w {
			j++
		}
		most = max(most, i-j+1)
	}
	return float64(most) / w.Seconds(), len(at)
}

// checkRate fails when the lane's rate went over 6,000/min by more than
// 5% in any 2-second window.
func (r *clusterRig) checkRate(from time.Time, what string) {
	const window = 2 * time.Second
	peak, n := r.peakRate(window, from)
	limit := clusterRate * 1.05
	r.t.Logf("%s: %d copies, peak %.1f/s over %v windows (lane: %.0f/s)", what, n, peak, window, clusterRate)
	if peak > limit+1/window.Seconds() {
		r.t.Errorf("%s: the lane ran at %.1f/s in a %v window, over %.0f/s + 5%%", what, peak, window, clusterRate)
	}
}

func TestClusterDeliversOnceAtTheLanesRate(t *testing.T) {
	r := newClusterRig(t, 3)
	start := time.Now()
	var refused atomic.Int64
	acked := r.submit(clusterMessages, &refused)
	got := r.waitDelivered(acked, 3*time.Minute)
	for rc, n := range got {
		if n != 1 {
			t.Errorf("%s got %d copies, want exactly 1", rc, n)
		}
	}
	r.waitBooks(clusterMessages, 0)
	r.checkRate(start, "three nodes")
	// The operator's view: three live nodes holding nothing, one of them
	// running the webhooks.
	out, code := e2eRun(t, time.Minute, r.bin, "cluster", "status", "--config", r.nodes[0].cfg)
	if code != 0 || strings.Count(out, " alive ") != 3 || !regexp.MustCompile(`(?m)^webhooks\s+n[123]\s`).MatchString(out) {
		t.Errorf("certgate cluster status: exit %d\n%s", code, out)
	}
	elapsed := time.Since(start)
	t.Logf("%d messages through 3 nodes in %v (%.0f/s)", clusterMessages, elapsed.Round(time.Millisecond), clusterMessages/elapsed.Seconds())
}

func TestClusterNodeKilledLosesNothing(t *testing.T) {
	r := newClusterRig(t, 3)
	var refused atomic.Int64
	// Kill a node once the wave is well under way: it holds mail it
	// accepted and has not delivered yet.
	done := r.waveUnderWay(&refused)
	victim := r.nodes[1]
	victim.killed.Store(true)
	victim.proc.cmd.Process.Signal(syscall.SIGKILL)
	<-victim.proc.done
	killedAt := time.Now()
	// The dead node held mail it had acknowledged and not delivered:
	// the others must take it over, or the test proves nothing.
	orphans := r.count("SELECT count(*) FROM recipients WHERE state = 'queued' AND lease_node = 'n2'")
	if orphans == 0 {
		t.Fatal("the killed node held no undelivered mail; kill it earlier")
	}
	acked := <-done
	got := r.waitDelivered(acked, 3*time.Minute)
	twice := 0
	for _, n := range got {
		if n > 1 {
			twice += n - 1
		}
	}
	// Only a copy in flight at the kill (sent, not recorded) may go twice,
	// no more than the lane's connections, and a message the node stored
	// as it died, unacknowledged, and its client sent again elsewhere.
	if again := int(refused.Load()); twice > 12+again {
		t.Errorf("%d copies delivered twice after the kill, want at most the 12 in flight and the %d sent again", twice, again)
	}
	r.waitBooks(clusterMessages, int(refused.Load()))
	out, code := e2eRun(t, time.Minute, r.bin, "cluster", "status", "--config", r.nodes[0].cfg)
	if code != 0 || !regexp.MustCompile(`(?m)^n2\s+lapsed\s.*\s0$`).MatchString(out) || strings.Count(out, " alive ") != 2 {
		t.Errorf("certgate cluster status after the kill: exit %d\n%s", code, out)
	}
	t.Logf("node killed holding %d undelivered copies; %d copies sent twice; all %d delivered %v after the kill",
		orphans, twice, clusterMessages, time.Since(killedAt).Round(time.Millisecond))
	log, _ := os.ReadFile(r.nodes[0].log)
	log2, _ := os.ReadFile(r.nodes[2].log)
	if !bytes.Contains(append(log, log2...), []byte("claimed work no live node held")) {
		t.Error("no surviving node logged claiming the killed node's work")
	}
}

func TestClusterRedisStoppedKeepsToShares(t *testing.T) {
	r := newClusterRig(t, 3)
	var refused atomic.Int64
	done := r.waveUnderWay(&refused)
	if err := r.redis.Stop(); err != nil {
		t.Fatal(err)
	}
	stoppedAt := time.Now()
	acked := <-done
	got := r.waitDelivered(acked, 3*time.Minute)
	for rc, n := range got {
		if n != 1 {
			t.Errorf("%s got %d copies, want exactly 1", rc, n)
		}
	}
	r.waitBooks(clusterMessages, 0)
	r.checkRate(stoppedAt, "after Redis stopped")
	for _, n := range r.nodes {
		log, _ := os.ReadFile(n.log)
		if !bytes.Contains(log, []byte("share=1/3")) {
			t.Errorf("node %s did not log falling back to a third of each limit", n.name)
		}
	}
}
