package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/certgate/certgate/internal/testpg"
	"github.com/certgate/certgate/internal/testredis"
	"github.com/certgate/certgate/sim"
	"github.com/certgate/certgate/store"
)

// Two nodes of a cluster answer for each other: mail held on one is seen
// and released through the other, which delivers it; its gated link opens
// on one node and is used on the other (the form key is shared by file);
// and the webhook endpoint hears each event once, from whichever node
// holds the dispatcher's lease.
func TestClusterAnyNodeAnswers(t *testing.T) {
	dsn := testpg.Start(t).NewDB(t)
	rds := testredis.New(t)
	mx := startCorpMX(t)
	dir := t.TempDir()
	const token = "cluster-helpdesk-token-0123456789"
	const opsToken = "cluster-operator-token-0123456789"
	var mu sync.Mutex
	heard := map[string]int{} // webhook deliveries by event id
	kinds := map[string]bool{}
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		heard[r.Header.Get("X-Certgate-Delivery")]++
		kinds[r.Header.Get("X-Certgate-Event")] = true
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer hook.Close()
	shared := strings.Join([]string{
		"storage: {driver: postgres, dsn_file: " + writeTestFile(t, dir, "pg.dsn", dsn) + "}",
		"gate: {form_key_file: " + writeTestFile(t, dir, "form.key", strings.Repeat("f", 64)) + ", min_human_delay: 0s}",
		"console: {session_key_file: " + writeTestFile(t, dir, "session.key", strings.Repeat("s", 64)) + "}",
		"http: {listen: \"127.0.0.1:0\", public_url: \"https://descargas.relay.ca.example\"}",
		"delivery: {routes: [{domains: [\"*\"], host: \"" + mx.Addr() + "\", tls: none}]}",
		"api: {tokens: [{name: helpdesk, token_file: " + writeTestFile(t, dir, "token", token) + ", scopes: [read, release]}," +
			" {name: ops, token_file: " + writeTestFile(t, dir, "ops.token", opsToken) + ", scopes: [read, admin], tenants: [\"*\"]}]}",
		"webhooks: [{name: crm, url: \"" + hook.URL + "\", secret_file: " + writeTestFile(t, dir, "hook.secret", strings.Repeat("h", 40)) + ", events: [released, delivered]}]",
		"dns_check: {interval: 0}",
	}, "\n") + "\n"
	var nodes []*daemon
	for _, name := range []string{"a", "b"} {
		ndir := t.TempDir()
		cfg := writeSmallConfig(t, ndir, shared+"cluster: {node: "+name+", lease: 3s, redis: {addr: \""+rds.Addr+"\"}}\n")
		text, _ := os.ReadFile(cfg)
		text = []byte(strings.Replace(string(text), "from_domains: [ca.example]}",
			`from_domains: [ca.example], hold: true, links: {gate: ["https://descargas.ca.example/certificado/"]}}`, 1))
		os.WriteFile(cfg, text, 0o600)
		nodes = append(nodes, startTestDaemon(t, cfg))
	}
	a, b := nodes[0], nodes[1]
	apiOf := func(d *daemon) string { return "http://" + d.httpAddr.String() }

	eml, err := os.ReadFile("../../sim/mail/01-es-download-link-qp.eml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := smtp.Dial(a.smtpAddrs[0].String())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail("certificados@ca.example", []string{"juan@empresa.example"}, strings.NewReader(string(eml))); err != nil {
		t.Fatal(err)
	}
	c.Close()
	msgs, err := b.store.Search(context.Background(), store.Query{Recipient: "juan@empresa.example"})
	if err != nil || len(msgs) != 1 {
		t.Fatalf("node b finds %v (%v) for the message node a took", msgs, err)
	}
	id := msgs[0].ID

	// b answers for the message a holds, and releases it.
	code, _, body := apiRequest(t, "GET", apiOf(b)+"/api/v1/messages/"+id, token, nil, nil)
	if code != http.StatusOK || !strings.Contains(string(body), `"held"`) {
		t.Fatalf("GET the message on node b: %d %s", code, body)
	}
	code, _, body = apiRequest(t, "POST", apiOf(b)+"/api/v1/messages/"+id+"/release", token, strings.NewReader(`{"reason":"verified by phone"}`), jsonHeader)
	if code != http.StatusOK {
		t.Fatalf("release on node b: %d %s", code, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := mx.WaitFor(ctx, 1); err != nil {
		t.Fatal(err)
	}
	copy := mx.Messages()[0]
	link := regexp.MustCompile(`https://descargas\.relay\.ca\.example/d/([A-Za-z0-9_-]{22})`).FindSubmatch(copy.Data)
	if link == nil {
		t.Fatalf("no gated link in the delivered copy:\n%s", copy.Data)
	}

	// The gate's page comes from a, its form goes to b.
	req, _ := http.NewRequest("GET", apiOf(a)+"/d/"+string(link[1]), nil)
	req.Header.Set("User-Agent", sendChromeUA)
	get, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(get.Body)
	get.Body.Close()
	nonce := regexp.MustCompile(`name="n" value="([^"]+)"`).FindSubmatch(page)
	if get.StatusCode != http.StatusOK || nonce == nil {
		t.Fatalf("the gate page on node a: %d\n%s", get.StatusCode, page)
	}
	req, _ = http.NewRequest("POST", apiOf(b)+"/d/"+string(link[1]), strings.NewReader(url.Values{"n": {string(nonce[1])}}.Encode()))
	req.Header.Set("User-Agent", sendChromeUA)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	post, err := noRedirects.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	post.Body.Close()
	if post.StatusCode != http.StatusSeeOther || !strings.HasPrefix(post.Header.Get("Location"), "https://descargas.ca.example/certificado/") {
		t.Fatalf("node b answered node a's gate form with %d, Location %q", post.StatusCode, post.Header.Get("Location"))
	}

	// Each event once: one dispatcher runs in the cluster, under the
	// webhooks lease.
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		done := kinds["released"] && kinds["delivered"]
		mu.Unlock()
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the webhook heard %v, want released and delivered", kinds)
		}
		time.Sleep(50 * time.Millisecond) // another goroutine's HTTP server
	}
	leases, err := b.store.(interface {
		Leases(context.Context) ([]store.Lease, error)
	}).Leases(context.Background())
	held := map[string]string{}
	for _, l := range leases {
		held[l.Name] = l.Node
	}
	if err != nil || len(leases) != 2 || held["webhooks"] == "" || held["retention"] == "" {
		t.Fatalf("leases %+v (%v), want one node running the webhooks and one the retention sweeper", leases, err)
	}
	// An operator's pause on one node holds on the other within a second,
	// and so does the resume from the other side.
	const lane = "default:empresa.example"
	laneState := func(d *daemon) string {
		var ls struct {
			Lanes []struct{ Name, State string }
		}
		code, _, body := apiRequest(t, "GET", apiOf(d)+"/api/v1/lanes", opsToken, nil, nil)
		if code != http.StatusOK || json.Unmarshal(body, &ls) != nil {
			t.Fatalf("GET lanes: %d %s", code, body)
		}
		for _, l := range ls.Lanes {
			if l.Name == lane {
				return l.State
			}
		}
		return ""
	}
	follows := func(on *daemon, want string) time.Duration {
		start := time.Now()
		for laneState(on) != want {
			if time.Since(start) > 5*time.Second {
				t.Fatalf("the lane on the other node is %q after 5s, want %q", laneState(on), want)
			}
			time.Sleep(20 * time.Millisecond) // another node's half-second round: poll its API
		}
		return time.Since(start)
	}
	if code, _, body := apiRequest(t, "POST", apiOf(b)+"/api/v1/lanes/"+lane+"/pause", opsToken, strings.NewReader(`{"reason":"MX moving"}`), jsonHeader); code != http.StatusOK {
		t.Fatalf("pause on node b: %d %s", code, body)
	}
	paused := follows(a, "paused")
	if code, _, body := apiRequest(t, "POST", apiOf(a)+"/api/v1/lanes/"+lane+"/resume", opsToken, strings.NewReader(`{}`), jsonHeader); code != http.StatusOK {
		t.Fatalf("resume on node a: %d %s", code, body)
	}
	resumed := follows(b, "normal")
	if paused > 1500*time.Millisecond || resumed > 1500*time.Millisecond {
		t.Errorf("the other node took %v to pause and %v to resume, want about a second at most", paused, resumed)
	}
	t.Logf("a pause on one node held on the other after %v, the resume after %v", paused.Round(time.Millisecond), resumed.Round(time.Millisecond))

	mu.Lock()
	defer mu.Unlock()
	for id, n := range heard {
		if n != 1 {
			t.Errorf("event %s was posted %d times", id, n)
		}
	}
	got, _ := json.Marshal(heard)
	t.Logf("webhook events heard once each: %s; the dispatcher ran on %s", got, held["webhooks"])
}

// A seed mailbox is watched from one node of the cluster, whichever
// holds its lease, and from the other once that node stops.
func TestClusterWatchesASeedMailboxOnce(t *testing.T) {
	dsn := testpg.Start(t).NewDB(t)
	rds := testredis.New(t)
	google, err := sim.Start(sim.Options{Name: "google", Domains: []string{"gmail.com"}, MXHost: "gmail-smtp-in.l.google.com",
		IMAP: &sim.IMAPOptions{Accounts: map[string]string{"seed.cg@gmail.com": "seed-password"}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { google.Close() })
	dir := t.TempDir()
	shared := strings.Join([]string{
		"storage: {driver: postgres, dsn_file: " + writeTestFile(t, dir, "pg.dsn", dsn) + "}",
		"gate: {form_key_file: " + writeTestFile(t, dir, "form.key", strings.Repeat("f", 64)) + "}",
		"console: {session_key_file: " + writeTestFile(t, dir, "session.key", strings.Repeat("s", 64)) + "}",
		"seeds:",
		"  mailboxes:",
		"    - {name: gmail-seed, provider: gmail, address: seed.cg@gmail.com, junk: auto,",
		"       imap: {addr: \"" + google.IMAPAddr() + "\", tls: none, username: seed.cg@gmail.com, password_file: " +
			writeTestFile(t, dir, "seed.pw", "seed-password") + "}}",
		"dns_check: {interval: 0}",
	}, "\n") + "\n"
	var nodes []*daemon
	for _, name := range []string{"a", "b"} {
		cfg := writeSmallConfig(t, t.TempDir(), shared+"cluster: {node: "+name+", lease: 3s, redis: {addr: \""+rds.Addr+"\"}}\n")
		nodes = append(nodes, startTestDaemon(t, cfg))
	}
	// watching is which nodes have both folders of the mailbox up.
	watching := func(ds ...*daemon) []int {
		var out []int
		for i, d := range ds {
			if testutil.ToFloat64(d.metrics.SeedMailboxUp.WithLabelValues("gmail-seed", "inbox")) == 1 &&
				testutil.ToFloat64(d.metrics.SeedMailboxUp.WithLabelValues("gmail-seed", "junk")) == 1 {
				out = append(out, i)
			}
		}
		return out
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for start := time.Now(); !cond(); time.Sleep(20 * time.Millisecond) { // the watchers' goroutines
			if time.Since(start) > 15*time.Second {
				t.Fatalf("%s: not after 15s", what)
			}
		}
	}
	waitFor("one node watching", func() bool { return len(watching(nodes...)) == 1 })
	holder := watching(nodes...)[0]
	leases, err := nodes[0].store.(interface {
		Leases(context.Context) ([]store.Lease, error)
	}).Leases(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	held := map[string]string{}
	for _, l := range leases {
		held[l.Name] = l.Node
	}
	if want := []string{"a", "b"}[holder]; held["seed:gmail-seed"] != want {
		t.Fatalf("the mailbox's lease is %q's, and %s watches it", held["seed:gmail-seed"], want)
	}
	// The other never connected meanwhile; once the holder stops, it does.
	other := nodes[1-holder]
	if got := watching(other); len(got) != 0 {
		t.Fatal("both nodes watch the mailbox")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nodes[holder].shutdown(ctx)
	stopped := time.Now()
	waitFor("the other node taking the mailbox over", func() bool { return len(watching(other)) == 1 })
	t.Logf("node %s watched the mailbox; the other took it over %v after it stopped", []string{"a", "b"}[holder], time.Since(stopped).Round(time.Millisecond))
}
