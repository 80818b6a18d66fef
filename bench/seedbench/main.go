// Command seedbench measures the seed-mailbox watcher against a private
// Dovecot (bench/seeds.sh runs it): N seed mailboxes, each watched in
// INBOX and Junk; copies filed at random into either by IMAP APPEND, as a
// provider's filter files them; Dovecot restarted halfway. It prints the
// detection delay from the APPEND's completion to the watcher's report
// (p50, p90, p99, max), the resident memory the watchers add, and the
// copies never reported (misses).
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/internal/testdovecot"
	"github.com/certgate/certgate/placement"
	"github.com/certgate/certgate/store"
	"github.com/certgate/certgate/store/sqlite"
)

func main() {
	n := flag.Int("mailboxes", 100, "seed mailboxes")
	copies := flag.Int("copies", 10, "copies filed per mailbox")
	rate := flag.Float64("rate", 50, "copies filed per second, across all mailboxes")
	restart := flag.Bool("restart", true, "restart Dovecot when half the copies are filed")
	wait := flag.Duration("wait", 30*time.Second, "how long to wait for the last reports")
	flag.Parse()
	if why := testdovecot.Missing(); why != "" {
		fmt.Fprintln(os.Stderr, "seedbench:", why)
		os.Exit(2)
	}
	if err := run(*n, *copies, *rate, *restart, *wait); err != nil {
		fmt.Fprintln(os.Stderr, "seedbench:", err)
		os.Exit(1)
	}
}

// observer times each report against the APPEND that filed the copy.
type observer struct {
	mu      sync.Mutex
	filed   map[int64]time.Time     // recipient id -> APPEND completed
	seen    map[int64]time.Duration // recipient id -> detection delay
	up      map[string]bool
	changed chan struct{}
}

func (o *observer) Placed(p store.Placement, from string) {
	now := time.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	if from != "" {
		return
	}
	if t, ok := o.filed[p.RecipientID]; ok {
		o.seen[p.RecipientID] = now.Sub(t)
	} else {
		o.seen[p.RecipientID] = -1 // reported before its APPEND returned: counted as 0
	}
	o.notify()
}

func (o *observer) MailboxState(seed, folder string, up bool, _ error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.up[seed+"/"+folder] = up
	o.notify()
}

func (o *observer) notify() {
	close(o.changed)
	o.changed = make(chan struct{})
}

// waitFor waits until cond holds (under the lock) or d passes.
func (o *observer) waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.After(d)
	for {
		o.mu.Lock()
		ok, ch := cond(), o.changed
		o.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ch:
		case <-deadline:
			return false
		}
	}
}

func (o *observer) upCount() int {
	n := 0
	for _, v := range o.up {
		if v {
			n++
		}
	}
	return n
}

type copyToFile struct {
	seed   config.SeedMailbox
	id     int64
	folder string
	data   []byte
}

func run(n, perMailbox int, rate float64, restart bool, wait time.Duration) error {
	dir, err := os.MkdirTemp("", "seedbench.")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var users []testdovecot.User
	var seeds []config.SeedMailbox
	for i := range n {
		name := "seed" + strconv.Itoa(i)
		users = append(users, testdovecot.User{Name: name + "@seeds.example", Password: "pw-" + name})
		seeds = append(seeds, config.SeedMailbox{Name: name, Provider: "dovecot", Address: name + "@seeds.example", Junk: "auto",
			IMAP: config.SeedIMAP{TLS: config.IMAPNoTLS, Username: name + "@seeds.example"}})
	}
	dc, err := testdovecot.Start(filepath.Join(dir, "dovecot"), users)
	if err != nil {
		return err
	}
	defer dc.Stop()
	for i := range seeds {
		seeds[i].IMAP.Addr = dc.Addr
	}
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "certgate.db"), sqlite.Options{})
	if err != nil {
		return err
	}
	defer st.Close()

	// The copies, stored and delivered before any is filed, so the store's
	// writes are not in the measured time.
	var todo []copyToFile
	for k := range perMailbox {
		now := time.Now()
		id := store.NewMessageID(now)
		body := fmt.Sprintf("From: <certificados@ca.example>\r\nSubject: Certificado %d\r\nMessage-ID: <%s@relay.ca.example>\r\n\r\nSu certificado.\r\n", k, id)
		var rcpts []store.NewRecipient
		for _, s := range seeds {
			nr := store.NewCopy(s.Address, store.StateQueued, now)
			nr.Seed = s.Name
			rcpts = append(rcpts, nr)
		}
		ids, err := st.Enqueue(ctx, store.Message{ID: id, Tenant: "issuer", MailFrom: "certificados@ca.example",
			HeaderFrom: "certificados@ca.example", MessageID: id + "@relay.ca.example", Class: "bulk", ReceivedAt: now},
			[][]byte{[]byte(body)}, rcpts)
		if err != nil {
			return err
		}
		for i, s := range seeds {
			if err := st.RecordAttempt(ctx, store.Attempt{RecipientID: ids[i], MessageID: id, Tenant: "issuer", Time: now,
				State: store.StateDelivered, Provider: "dovecot", Code: 250, Reply: "2.0.0 ok"}); err != nil {
				return err
			}
			folder := "INBOX"
			if rand.IntN(2) == 1 {
				folder = "Junk"
			}
			todo = append(todo, copyToFile{seed: s, id: ids[i], folder: folder,
				data: append(append([]byte("Authentication-Results: mx.seeds.example; dkim=pass; spf=pass; dmarc=pass\r\n"), rcpts[i].Prefix...), body...)})
		}
	}
	rand.Shuffle(len(todo), func(i, j int) { todo[i], todo[j] = todo[j], todo[i] })

	runtime.GC()
	base := rss()
	obs := &observer{filed: map[int64]time.Time{}, seen: map[int64]time.Duration{}, up: map[string]bool{}, changed: make(chan struct{})}
	connect := func(ctx context.Context, m config.SeedMailbox, h *imapclient.UnilateralDataHandler) (*imapclient.Client, error) {
		c, err := imapclient.DialInsecure(m.IMAP.Addr, &imapclient.Options{UnilateralDataHandler: h})
		if err != nil {
			return nil, err
		}
		if err := c.Login(m.IMAP.Username, "pw-"+m.Name).Wait(); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
	w := placement.NewWatcher(placement.Options{Book: st, Connect: connect, Observer: obs,
		Seeds: config.Seeds{Deadline: config.Duration(time.Hour), After: config.SeedKeep, Mailboxes: seeds}})
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { w.Run(wctx); close(done) }()
	defer func() { cancel(); <-done }()
	start := time.Now()
	if !obs.waitFor(2*time.Minute, func() bool { return obs.upCount() == 2*n }) {
		return fmt.Errorf("only %d of %d watcher connections came up", obs.upCount(), 2*n)
	}
	upAfter := time.Since(start)
	runtime.GC()
	idle := rss()

	restartAt := -1
	if restart {
		restartAt = len(todo) / 2
	}
	var restartedAt time.Time
	var recovered time.Duration      // from the restart until every connection was up again
	reconnecting := map[int64]bool{} // copies filed while their seed's watcher was reconnecting
	interval := time.Duration(float64(time.Second) / rate)
	next := time.Now()
	for i, c := range todo {
		if i == restartAt {
			if err := dc.Restart(); err != nil {
				return err
			}
			restartedAt = time.Now()
		}
		time.Sleep(time.Until(next)) // pacing the load, not waiting on the watcher
		next = next.Add(interval)
		if err := file(c); err != nil {
			return fmt.Errorf("filing copy %d: %w", i, err)
		}
		obs.mu.Lock()
		obs.filed[c.id] = time.Now()
		if !obs.up[c.seed.Name+"/inbox"] || !obs.up[c.seed.Name+"/junk"] {
			reconnecting[c.id] = true
		}
		if !restartedAt.IsZero() && recovered == 0 && obs.upCount() == 2*n {
			recovered = time.Since(restartedAt)
		}
		obs.mu.Unlock()
	}
	obs.waitFor(wait, func() bool { return len(obs.seen) >= len(todo) })
	peak := rss()

	obs.mu.Lock()
	defer obs.mu.Unlock()
	var all, steady []time.Duration
	for _, c := range todo {
		d, ok := obs.seen[c.id]
		if !ok {
			continue
		}
		d = max(d, 0)
		all = append(all, d)
		// A copy filed just before the restart and found only after it
		// waited for the reconnect too.
		filed := obs.filed[c.id]
		if !restartedAt.IsZero() && filed.Before(restartedAt) && filed.Add(d).After(restartedAt) {
			reconnecting[c.id] = true
		}
		if !reconnecting[c.id] {
			steady = append(steady, d)
		}
	}
	misses := len(todo) - len(all)
	fmt.Printf("seed mailboxes: %d (%d watcher connections, up in %s)\n", n, 2*n, upAfter.Round(time.Millisecond))
	fmt.Printf("copies filed: %d at %.0f/s, at random into INBOX and Junk; Dovecot restarted: %v\n", len(todo), rate, restart)
	fmt.Printf("detection delay, copies filed and found while watched: %s\n", percentiles(steady))
	fmt.Printf("detection delay, all copies (the restart included):   %s\n", percentiles(all))
	if restart {
		fmt.Printf("after the restart every connection was up again in %s; %d copies were filed or awaited meanwhile\n",
			recovered.Round(time.Millisecond), len(reconnecting))
	}
	fmt.Printf("watchers' extra RSS: %.1f MiB once up, %.1f MiB at the end (baseline %.1f MiB)\n",
		mib(idle-base), mib(peak-base), mib(base))
	fmt.Printf("misses: %d\n", misses)
	pass := func(ok bool) string {
		if ok {
			return "PASS"
		}
		return "FAIL"
	}
	p99 := pct(steady, 99)
	fmt.Printf("%s p99 detection under 2 s, copies filed while watched (%s)\n", pass(p99 < 2*time.Second), p99.Round(time.Millisecond))
	fmt.Printf("%s extra RSS under 50 MB for %d mailboxes (%.1f MB)\n", pass(float64(peak-base) < 50e6), n, float64(peak-base)/1e6)
	fmt.Printf("%s no misses (%d)\n", pass(misses == 0), misses)
	return nil
}

// file APPENDs one copy over a connection of its own, as a receiver's
// delivery agent would.
func file(c copyToFile) error {
	cl, err := imapclient.DialInsecure(c.seed.IMAP.Addr, nil)
	if err != nil {
		return err
	}
	defer cl.Close()
	if err := cl.Login(c.seed.IMAP.Username, "pw-"+c.seed.Name).Wait(); err != nil {
		return err
	}
	ap := cl.Append(c.folder, int64(len(c.data)), nil)
	if _, err := ap.Write(c.data); err != nil {
		return err
	}
	if err := ap.Close(); err != nil {
		return err
	}
	_, err = ap.Wait()
	return err
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

func percentiles(d []time.Duration) string {
	if len(d) == 0 {
		return "none"
	}
	r := func(x time.Duration) string { return x.Round(time.Millisecond).String() }
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  max %s  (n=%d)", r(pct(d, 50)), r(pct(d, 90)), r(pct(d, 99)), r(pct(d, 100)), len(d))
}

// rss is the process's resident set in bytes (/proc/self/status VmRSS).
func rss() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
