package main

// Seed mailboxes end to end (issue 10): one certgate daemon, wired from a
// configuration file as serve wires it, whose seed mailboxes live on a
// private Dovecot on loopback, and a simulated MX that takes both the
// customers' copies and the seed copies (gmail.com and outlook.com route
// to it through static DNS, so the seed copies travel the gmail and
// outlook lanes). The sim has no IMAP side that files into Dovecot, so
// the test plays the receiver's filter: it takes each seed copy the sim
// received, prepends the receiver's Authentication-Results (and, for
// Outlook, Microsoft's reports), and APPENDs it into the seed's INBOX or
// Junk. certgate's watcher must then report each copy where it was filed,
// through the API, the CLI and the metrics, including after Dovecot is
// restarted mid-run.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/gateway/signer"
	"github.com/certgate/certgate/internal/testdovecot"
	"github.com/certgate/certgate/sim"
	"github.com/certgate/certgate/store"
)

const (
	seedsUser     = "issuer-app"
	seedsPassword = "a long test password for the seeds suite"
	seedsCustomer = "juan.perez@empresa.example"
	seedsGatePfx  = "https://ca.example/download/"
)

// seedsAccount is one seed mailbox: in certgate's configuration and as a
// Dovecot user.
type seedsAccount struct {
	name, provider, address, password string
}

var seedsAccounts = []seedsAccount{
	{"gmail-1", "gmail", "certgate.seed1@gmail.com", "pw-gmail-1-0123456789"},
	{"outlook-1", "outlook", "certgate.seed2@outlook.com", "pw-outlook-1-0123456789"},
}

// seedsRig is the daemon, its Dovecot and its simulated MX.
type seedsRig struct {
	t         *testing.T
	d         *daemon
	dc        *testdovecot.Server
	mx        *sim.Provider
	smtp      string
	api       string
	token     string
	tokenFile string
	tlsConf   *tls.Config
	logs      *seedsLogBuffer
	cfgPath   string
}

// seedsLogBuffer keeps the daemon's log for failure messages and checks.
type seedsLogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *seedsLogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *seedsLogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newSeedsRig(t *testing.T) *seedsRig {
	t.Helper()
	if why := testdovecot.Missing(); why != "" {
		e2eMissing(t, "%s", why)
	}
	dir := t.TempDir()
	write := func(name, content string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	r := &seedsRig{t: t, logs: &seedsLogBuffer{}}

	var users []testdovecot.User
	for _, a := range seedsAccounts {
		users = append(users, testdovecot.User{Name: a.address, Password: a.password})
	}
	dc, err := testdovecot.Start(t.TempDir(), users)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dc.Stop() })
	r.dc = dc

	// The DKIM key, published to the sim so that it verifies the copies
	// as a receiver would.
	key, pemBytes, err := signer.Generate("ed25519", "ca.example", "s1")
	if err != nil {
		t.Fatal(err)
	}
	txtName, txtValue := key.DNSRecord()
	r.mx, err = sim.Start(sim.Options{Name: "mx", Domains: []string{"empresa.example", "gmail.com", "outlook.com"},
		MXHost: "mx.empresa.example",
		LookupTXT: func(name string) ([]string, error) {
			if strings.TrimSuffix(name, ".") == strings.TrimSuffix(txtName, ".") {
				return []string{txtValue}, nil
			}
			return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.mx.Close() })
	mxIP, mxPort, _ := net.SplitHostPort(r.mx.Addr())

	cert, err := sim.SelfSigned("relay.ca.example")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := cert.WriteFiles(dir, "relay.ca.example")
	if err != nil {
		t.Fatal(err)
	}
	r.tlsConf = cert.ClientConfig("relay.ca.example")
	hash, err := bcrypt.GenerateFromPassword([]byte(seedsPassword), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	secret := make([]byte, 20)
	rand.Read(secret)
	r.token = hex.EncodeToString(secret)
	r.tokenFile = write("ops.token", r.token+"\n")

	lines := []string{
		"hostname: relay.ca.example",
		"data_dir: " + filepath.Join(dir, "data"),
		"smtp:",
		`  listen: ["127.0.0.1:0"]`,
		"  tls: {cert_file: " + certFile + ", key_file: " + keyFile + "}",
		"http:",
		`  listen: "127.0.0.1:0"`,
		`  public_url: "https://gate.ca.example"`,
		"tenants:",
		"  - name: issuer",
		fmt.Sprintf("    users: [{username: %s, password_hash: %q}]", seedsUser, hash),
		"    from_domains: [ca.example]",
		"    links: {gate: [\"" + seedsGatePfx + "\"], enable: on_delivery}",
		"    seeding: {every: 2, interval: 1h}",
		"dkim: [{domain: ca.example, selector: s1, key_file: " + write("dkim.pem", string(pemBytes)) + "}]",
		"delivery:",
		"  mx_port: " + mxPort,
		"  retry: {schedule: [1m], max_age: 1h}",
		"  static_dns:",
		"    mx:",
		"      empresa.example: [mx.empresa.example]",
		"      gmail.com: [gmail-smtp-in.l.google.com]",
		"      outlook.com: [outlook-com.olc.protection.outlook.com]",
		"    hosts:",
		`      mx.empresa.example: ["` + mxIP + `"]`,
		`      gmail-smtp-in.l.google.com: ["` + mxIP + `"]`,
		`      outlook-com.olc.protection.outlook.com: ["` + mxIP + `"]`,
		"api:",
		"  tokens:",
		"    - {name: ops, token_file: " + r.tokenFile + ", scopes: [admin], tenants: [issuer]}",
		"seeds:",
		"  deadline: 15m",
		"  after: delete",
		"  mailboxes:",
	}
	for _, a := range seedsAccounts {
		lines = append(lines,
			"    - name: "+a.name,
			"      provider: "+a.provider,
			"      address: "+a.address,
			fmt.Sprintf("      imap: {addr: %q, tls: none, username: %s, password_file: %s}", dc.Addr, a.address,
				write(a.name+".password", a.password+"\n")),
			"      junk: auto")
	}
	cfgPath := write("certgate.yaml", strings.Join(lines, "\n")+"\n")
	r.cfgPath = cfgPath
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatalf("the configuration is refused: %v", err)
	}
	r.d, err = newDaemon(context.Background(), cfg, slog.New(slog.NewTextHandler(r.logs, nil)), daemonOptions{})
	if err != nil {
		t.Fatalf("building the daemon: %v", err)
	}
	if err := r.d.start(context.Background()); err != nil {
		r.d.store.Close()
		t.Fatalf("starting the daemon: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r.d.shutdown(ctx)
		if t.Failed() {
			t.Logf("certgate's log:\n%s\nDovecot's log:\n%s", r.logs, dc.Log())
		}
	})
	r.smtp, r.api = r.d.smtpAddrs[0].String(), "http://"+r.d.httpAddr.String()
	return r
}

func (r *seedsRig) account(name string) seedsAccount {
	for _, a := range seedsAccounts {
		if a.name == name {
			return a
		}
	}
	r.t.Fatalf("no seed %s", name)
	return seedsAccount{}
}

// submit sends one message over authenticated submission (STARTTLS, AUTH
// PLAIN), as the issuer's systems do.
func (r *seedsRig) submit(to []string, data string) {
	r.t.Helper()
	c, err := smtp.DialStartTLS(r.smtp, r.tlsConf)
	if err != nil {
		r.t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", seedsUser, seedsPassword)); err != nil {
		r.t.Fatal(err)
	}
	if err := c.SendMail("certificados@ca.example", to, strings.NewReader(data)); err != nil {
		r.t.Fatal(err)
	}
}

// call makes an API request with the ops token and decodes the JSON
// answer into out.
func (r *seedsRig) call(method, path, contentType string, body io.Reader, out any) int {
	r.t.Helper()
	var header map[string]string
	if contentType != "" {
		header = map[string]string{"Content-Type": contentType}
	}
	code, _, b := apiRequest(r.t, method, r.api+path, r.token, body, header)
	if out != nil && code < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			r.t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return code
}

// eventually retries cond every 50 ms until it holds or 20 s have passed:
// the API and the metrics are what the test observes, and the watcher's
// work reaches them asynchronously. state says what was seen last, for
// the failure message.
func (r *seedsRig) eventually(what string, cond func() (ok bool, state string)) {
	r.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("timed out waiting for %s; last seen: %s", what, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitSim waits until the sim has stored n copies in all.
func (r *seedsRig) waitSim(n int) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := r.mx.WaitFor(ctx, n); err != nil {
		r.t.Fatalf("the sim has %d copies, want %d: %v", r.mx.Stats().Received, n, err)
	}
}

// seedCopy is the i-th copy the sim received for a seed (from 0).
func (r *seedsRig) seedCopy(seed string, i int) sim.Message {
	r.t.Helper()
	got := r.mx.MessagesTo(r.account(seed).address)
	if len(got) <= i {
		r.t.Fatalf("the sim has %d copies for %s, want at least %d", len(got), seed, i+1)
	}
	return got[i]
}

// seedsFiling is what a receiver adds to a copy it files.
type seedsFiling struct {
	dmarc string
	scl   int // Microsoft's spam confidence level; -1 leaves the reports out
}

// file plays the receiver's filter: it prepends the receiver's
// Authentication-Results (dkim as the sim verified the signature) and,
// for Outlook, Microsoft's reports, then APPENDs the copy into mailbox
// (INBOX or Junk) of the seed it was sent to.
func (r *seedsRig) file(seed string, m sim.Message, mailbox string, v seedsFiling) {
	r.t.Helper()
	a := r.account(seed)
	dkim := "fail"
	if slices.ContainsFunc(m.DKIM, func(d sim.DKIMResult) bool { return d.Err == nil }) {
		dkim = "pass"
	}
	var hdr string
	switch a.provider {
	case "outlook":
		// Exchange Online leaves the authserv-id out.
		hdr = fmt.Sprintf("Authentication-Results: spf=pass (sender IP is 127.0.0.1) smtp.mailfrom=ca.example; "+
			"dkim=%s (signature was verified) header.d=ca.example;dmarc=%s action=none header.from=ca.example;compauth=pass reason=100\r\n",
			dkim, v.dmarc)
		if v.scl >= 0 {
			sfv, dest := "NSPM", "I"
			if mailbox != "INBOX" {
				sfv, dest = "SPM", "J"
			}
			hdr += fmt.Sprintf("X-Forefront-Antispam-Report: CIP:127.0.0.1;CTRY:;LANG:es;SCL:%d;SRV:;IPV:NLI;SFV:%s;H:relay.ca.example;CAT:NONE;SFS:;DIR:INB;\r\n",
				v.scl, sfv)
			hdr += "X-Microsoft-Antispam-Mailbox-Delivery: ucf:0;jmr:0;auth:0;dest:" + dest + ";ENG:(910001)(944506478);\r\n"
		}
	default:
		hdr = fmt.Sprintf("Authentication-Results: mx.google.com;\r\n       dkim=%s header.i=@ca.example header.s=s1;\r\n"+
			"       spf=pass smtp.mailfrom=certificados@ca.example;\r\n       dmarc=%s (p=NONE sp=NONE dis=NONE) header.from=ca.example\r\n",
			dkim, v.dmarc)
	}
	msg := append([]byte(hdr), m.Data...)
	c, err := imapclient.DialInsecure(r.dc.Addr, nil)
	if err != nil {
		r.t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(a.address, a.password).Wait(); err != nil {
		r.t.Fatal(err)
	}
	ap := c.Append(mailbox, int64(len(msg)), nil)
	if _, err := ap.Write(msg); err != nil {
		r.t.Fatal(err)
	}
	if err := ap.Close(); err != nil {
		r.t.Fatal(err)
	}
	if _, err := ap.Wait(); err != nil {
		r.t.Fatalf("APPEND to %s's %s: %v", seed, mailbox, err)
	}
}

// The API's view of a message, as far as the seeds are concerned.
type seedsVerdicts struct {
	AuthServ string `json:"authserv_id"`
	SPF      string `json:"spf"`
	DKIM     string `json:"dkim"`
	DMARC    string `json:"dmarc"`
	SCL      int    `json:"scl"`
	SFV      string `json:"sfv"`
	Dest     string `json:"dest"`
}

type seedsPlacement struct {
	Seed       string         `json:"seed"`
	Provider   string         `json:"provider"`
	Address    string         `json:"address"`
	Folder     string         `json:"folder"`
	MessageID  string         `json:"message_id"`
	Tenant     string         `json:"tenant"`
	ArrivedAt  *time.Time     `json:"arrived_at"`
	DetectedAt *time.Time     `json:"detected_at"`
	Delay      *float64       `json:"delay_seconds"`
	Verdicts   *seedsVerdicts `json:"verdicts"`
}

type seedsRecipient struct {
	Address    string          `json:"address"`
	State      string          `json:"state"`
	Provider   string          `json:"provider"`
	TrackingID string          `json:"tracking_id"`
	Seed       string          `json:"seed"`
	Placement  *seedsPlacement `json:"placement"`
}

type seedsMessage struct {
	ID         string           `json:"id"`
	Subject    string           `json:"subject"`
	Recipients []seedsRecipient `json:"recipients"`
	Links      []struct {
		Recipient string `json:"recipient"`
		State     string `json:"state"`
	} `json:"links"`
}

func (m seedsMessage) recipient(address string) *seedsRecipient {
	for i := range m.Recipients {
		if strings.EqualFold(m.Recipients[i].Address, address) {
			return &m.Recipients[i]
		}
	}
	return nil
}

func (m seedsMessage) linkStates(address string) []string {
	var out []string
	for _, l := range m.Links {
		if strings.EqualFold(l.Recipient, address) {
			out = append(out, l.State)
		}
	}
	return out
}

func (r *seedsRig) message(id string) seedsMessage {
	r.t.Helper()
	var m seedsMessage
	if code := r.call("GET", "/api/v1/messages/"+id, "", nil, &m); code != http.StatusOK {
		r.t.Fatalf("GET /api/v1/messages/%s: %d", id, code)
	}
	return m
}

// waitPlaced waits until every seed recipient of message id is delivered
// and found in a folder, and every other recipient is delivered.
func (r *seedsRig) waitPlaced(id string) seedsMessage {
	r.t.Helper()
	var m seedsMessage
	r.eventually("message "+id+" delivered and its seed copies found", func() (bool, string) {
		m = r.message(id)
		var state []string
		ok := len(m.Recipients) > 0
		for _, rc := range m.Recipients {
			s := rc.Address + ":" + rc.State
			if rc.State != string(store.StateDelivered) {
				ok = false
			}
			if rc.Seed != "" {
				if rc.Placement == nil || rc.Placement.Folder == store.FolderPending {
					ok = false
				}
				if rc.Placement != nil {
					s += "/" + rc.Placement.Folder
				}
			}
			state = append(state, s)
		}
		return ok, strings.Join(state, ", ")
	})
	return m
}

// seedsMetric is one sample of the /metrics page.
type seedsMetric struct {
	name   string
	labels map[string]string
	value  float64
}

var (
	seedsMetricLine  = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)`)
	seedsMetricLabel = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)
)

func (r *seedsRig) scrape() []seedsMetric {
	r.t.Helper()
	resp, err := http.Get(r.api + "/metrics")
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		r.t.Fatal(err)
	}
	var out []seedsMetric
	for _, line := range strings.Split(string(b), "\n") {
		sm := seedsMetricLine.FindStringSubmatch(line)
		if sm == nil || strings.HasPrefix(line, "#") {
			continue
		}
		v, err := strconv.ParseFloat(sm[4], 64)
		if err != nil {
			continue
		}
		m := seedsMetric{name: sm[1], labels: map[string]string{}, value: v}
		for _, l := range seedsMetricLabel.FindAllStringSubmatch(sm[3], -1) {
			m.labels[l[1]] = l[2]
		}
		out = append(out, m)
	}
	return out
}

// seedsPick is the samples of name whose labels include want.
func seedsPick(ms []seedsMetric, name string, want map[string]string) []seedsMetric {
	var out []seedsMetric
	for _, m := range ms {
		if m.name != name {
			continue
		}
		match := true
		for k, v := range want {
			match = match && m.labels[k] == v
		}
		if match {
			out = append(out, m)
		}
	}
	return out
}

func seedsSum(ms []seedsMetric) float64 {
	s := 0.0
	for _, m := range ms {
		s += m.value
	}
	return s
}

func (m seedsMetric) String() string { return fmt.Sprintf("%s%v %g", m.name, m.labels, m.value) }

// seedsUp reports whether every watched folder of every seed is up.
func seedsUp(ms []seedsMetric) (bool, string) {
	up := seedsPick(ms, "certgate_seed_mailbox_up", nil)
	ok := len(up) == 2*len(seedsAccounts)
	for _, m := range up {
		ok = ok && m.value == 1
	}
	return ok, fmt.Sprint(up)
}

// seedsBulk is a bulk certificate mail to the customer with a gated link.
func seedsBulk(n int) string {
	return fmt.Sprintf("From: Certificados <certificados@ca.example>\r\nTo: <%s>\r\nSubject: Su certificado %d\r\n"+
		"Message-ID: <wave-%d@ca.example>\r\nX-Certgate-Class: bulk\r\n\r\nDescargue su certificado:\r\n%scert?id=%d\r\n",
		seedsCustomer, n, n, seedsGatePfx, n)
}

// The whole seed flow through a running daemon over SMTP, IMAP and HTTP:
// continuous seeding of bulk mail, placement per seed copy in the API and
// the metrics, a Dovecot restart mid-run, and on-demand tests with
// "certgate seeds test".
func TestSeedsEndToEnd(t *testing.T) {
	e2eStart(t)
	r := newSeedsRig(t)
	gmail, outlook := r.account("gmail-1"), r.account("outlook-1")

	r.eventually("every seed folder watched", func() (bool, string) { return seedsUp(r.scrape()) })

	// seeds check logs in to each mailbox and reports what the watcher
	// will find: Dovecot offers IDLE and SPECIAL-USE, and marks Junk.
	var out, errOut bytes.Buffer
	if code := run([]string{"seeds", "check", "--config", r.cfgPath}, &out, &errOut); code != 0 {
		t.Fatalf("seeds check exited %d: %s%s", code, out.String(), errOut.String())
	}
	for _, a := range seedsAccounts {
		if !regexp.MustCompile(a.name + `\s+` + a.provider + `\s+ok\s+yes\s+yes\s+no\s+Junk\s`).MatchString(out.String()) {
			t.Errorf("seeds check does not report %s as ok with IDLE, SPECIAL-USE and Junk:\n%s", a.name, out.String())
		}
	}

	// (a) Continuous seeding: every 2 bulk messages (or every hour), so
	// the first and the third are seeded, the second is not.
	for n := 1; n <= 3; n++ {
		r.submit([]string{seedsCustomer}, seedsBulk(n))
	}
	r.waitSim(3 + 2*len(seedsAccounts))
	if got := len(r.mx.MessagesTo(seedsCustomer)); got != 3 {
		t.Fatalf("the customer got %d copies, want 3", got)
	}
	ids := map[int]string{}
	var list struct {
		Messages []struct{ ID, Subject string }
	}
	r.call("GET", "/api/v1/messages?recipient="+url.QueryEscape(seedsCustomer), "", nil, &list)
	for _, m := range list.Messages {
		var n int
		if _, err := fmt.Sscanf(m.Subject, "Su certificado %d", &n); err == nil {
			ids[n] = m.ID
		}
	}
	if len(ids) != 3 {
		t.Fatalf("the API lists %+v for %s, want the 3 messages", list.Messages, seedsCustomer)
	}
	if m := r.message(ids[2]); len(m.Recipients) != 1 || m.Recipients[0].Seed != "" {
		t.Errorf("message 2 should not be seeded (seeding every 2): recipients %+v", m.Recipients)
	}

	// Each seed copy is the same message, addressed to its seed and signed
	// after that change.
	for _, a := range seedsAccounts {
		for i, n := range []int{1, 3} {
			c := r.seedCopy(a.name, i)
			hdr, _, _ := bytes.Cut(c.Data, []byte("\r\n\r\n"))
			if !bytes.Contains(hdr, []byte("Subject: Su certificado "+strconv.Itoa(n))) {
				t.Errorf("%s's copy %d is not of message %d:\n%s", a.name, i, n, hdr)
			}
			if !regexp.MustCompile(`(?im)^To: <?`+regexp.QuoteMeta(a.address)+`>?\r?$`).Match(hdr) || bytes.Contains(hdr, []byte(seedsCustomer)) {
				t.Errorf("%s's copy of message %d does not name the seed in To:\n%s", a.name, n, hdr)
			}
			if !slices.ContainsFunc(c.DKIM, func(d sim.DKIMResult) bool { return d.Err == nil }) {
				t.Errorf("%s's copy of message %d fails DKIM at the receiver: %+v", a.name, n, c.DKIM)
			}
		}
	}

	// The receivers file message 1: Gmail in the inbox, Outlook in Junk.
	r.file(gmail.name, r.seedCopy(gmail.name, 0), "INBOX", seedsFiling{dmarc: "pass", scl: -1})
	r.file(outlook.name, r.seedCopy(outlook.name, 0), "Junk", seedsFiling{dmarc: "pass", scl: 5})
	m1 := r.waitPlaced(ids[1])
	t.Run("message view", func(t *testing.T) {
		if len(m1.Recipients) != 3 {
			t.Fatalf("message 1 has recipients %+v, want the customer and 2 seeds", m1.Recipients)
		}
		cust := m1.recipient(seedsCustomer)
		if cust == nil || cust.Seed != "" || cust.Placement != nil {
			t.Errorf("the customer's recipient: %+v, want no seed and no placement", cust)
		}
		for _, c := range []struct {
			a      seedsAccount
			folder string
			scl    int
			dest   string
		}{{gmail, store.FolderInbox, -1, ""}, {outlook, store.FolderJunk, 5, "junk"}} {
			rc := m1.recipient(c.a.address)
			if rc == nil || rc.Seed != c.a.name || rc.Placement == nil {
				t.Errorf("%s's recipient: %+v", c.a.name, rc)
				continue
			}
			p := rc.Placement
			if p.Folder != c.folder || p.Seed != c.a.name || p.Provider != c.a.provider || rc.Provider != c.a.provider ||
				p.Tenant != "issuer" || p.ArrivedAt == nil || p.DetectedAt == nil || p.Delay == nil {
				t.Errorf("%s's placement: %+v, want folder %s on the %s lane with arrival, detection and delay",
					c.a.name, p, c.folder, c.a.provider)
			}
			if v := p.Verdicts; v == nil || v.DKIM != "pass" || v.DMARC != "pass" || v.SPF != "pass" || v.SCL != c.scl || v.Dest != c.dest {
				t.Errorf("%s's verdicts: %+v, want dkim, dmarc and spf pass, scl %d, dest %q", c.a.name, v, c.scl, c.dest)
			}
		}
		if rc := m1.recipient(gmail.address); rc != nil && rc.Placement != nil && rc.Placement.Verdicts != nil &&
			rc.Placement.Verdicts.AuthServ != "mx.google.com" {
			t.Errorf("gmail-1's authserv-id: %q", rc.Placement.Verdicts.AuthServ)
		}
		// Gated links: the customer's turn on with its delivery, the
		// seeds' never do.
		if got := m1.linkStates(seedsCustomer); len(got) != 1 || got[0] != "enabled" {
			t.Errorf("the customer's links: %v, want one enabled", got)
		}
		for _, a := range seedsAccounts {
			if got := m1.linkStates(a.address); len(got) != 1 || got[0] != "pending" {
				t.Errorf("%s's links: %v, want one pending", a.name, got)
			}
		}
	})

	// (c) Dovecot restarts: every watcher connection drops. The copies
	// of message 3 are filed at once, before the watcher is back, and
	// must be found by its catch-up.
	if err := r.dc.Restart(); err != nil {
		t.Fatal(err)
	}
	r.file(gmail.name, r.seedCopy(gmail.name, 1), "INBOX", seedsFiling{dmarc: "pass", scl: -1})
	r.file(outlook.name, r.seedCopy(outlook.name, 1), "INBOX", seedsFiling{dmarc: "pass", scl: 1})
	m3 := r.waitPlaced(ids[3])
	for _, a := range seedsAccounts {
		if rc := m3.recipient(a.address); rc == nil || rc.Placement == nil || rc.Placement.Folder != store.FolderInbox {
			t.Errorf("after Dovecot's restart %s's copy of message 3: %+v, want it in the inbox", a.name, rc)
		}
	}
	if !strings.Contains(r.logs.String(), "seed mailbox down") {
		t.Errorf("the watcher never logged a seed mailbox down across Dovecot's restart")
	}
	r.eventually("every seed folder watched again after Dovecot's restart", func() (bool, string) { return seedsUp(r.scrape()) })

	t.Run("placement summary", func(t *testing.T) {
		var sum struct {
			Providers []struct {
				Provider  string           `json:"provider"`
				Total     int64            `json:"total"`
				Folders   map[string]int64 `json:"folders"`
				InboxRate *float64         `json:"inbox_rate"`
			} `json:"providers"`
			Recent []seedsPlacement `json:"recent"`
		}
		if code := r.call("GET", "/api/v1/placement?tenant=issuer", "", nil, &sum); code != http.StatusOK {
			t.Fatalf("GET /api/v1/placement: %d", code)
		}
		want := map[string]struct {
			folders map[string]int64
			rate    float64
		}{
			"gmail":   {map[string]int64{"inbox": 2}, 1},
			"outlook": {map[string]int64{"inbox": 1, "junk": 1}, 0.5},
		}
		if len(sum.Providers) != len(want) {
			t.Errorf("providers %+v, want gmail and outlook only", sum.Providers)
		}
		for _, p := range sum.Providers {
			w, ok := want[p.Provider]
			if !ok || p.Total != 2 || fmt.Sprint(p.Folders) != fmt.Sprint(w.folders) || p.InboxRate == nil || *p.InboxRate != w.rate {
				rate := "null"
				if p.InboxRate != nil {
					rate = fmt.Sprint(*p.InboxRate)
				}
				t.Errorf("provider %s: total %d, folders %v, inbox_rate %s; want 2, %v, %g", p.Provider, p.Total, p.Folders, rate, w.folders, w.rate)
			}
		}
		if len(sum.Recent) != 4 {
			t.Errorf("recent placements: %d, want the 4 seed copies", len(sum.Recent))
		}
	})

	t.Run("metrics", func(t *testing.T) {
		// Delivery attempts are recorded just after the receiver's reply:
		// wait for the seed copies' to be counted.
		var ms []seedsMetric
		r.eventually("the seed copies' delivery attempts counted", func() (bool, string) {
			ms = r.scrape()
			seeds := seedsPick(ms, "certgate_seed_delivery_attempts_total", map[string]string{"result": "delivered"})
			return seedsSum(seeds) == 4 && seedsSum(seedsPick(ms, "certgate_delivery_attempts_total", nil)) == 3, fmt.Sprint(seeds)
		})
		for _, c := range []struct {
			name   string
			labels map[string]string
			want   float64
		}{
			{"certgate_placements_total", map[string]string{"provider": "gmail", "tenant": "issuer", "folder": "inbox"}, 2},
			{"certgate_placements_total", map[string]string{"provider": "gmail", "folder": "junk"}, 0},
			{"certgate_placements_total", map[string]string{"provider": "outlook", "tenant": "issuer", "folder": "inbox"}, 1},
			{"certgate_placements_total", map[string]string{"provider": "outlook", "tenant": "issuer", "folder": "junk"}, 1},
			{"certgate_placements_total", nil, 4},
			{"certgate_seed_delivery_attempts_total", map[string]string{"provider": "gmail", "result": "delivered"}, 2},
			{"certgate_seed_delivery_attempts_total", map[string]string{"provider": "outlook", "result": "delivered"}, 2},
			{"certgate_seed_delivery_attempts_total", nil, 4},
			// Only the customer's three copies are customer deliveries.
			{"certgate_delivery_attempts_total", map[string]string{"result": "delivered"}, 3},
			{"certgate_delivery_attempts_total", map[string]string{"provider": "gmail"}, 0},
			{"certgate_delivery_attempts_total", map[string]string{"provider": "outlook"}, 0},
			{"certgate_placement_inbox_ratio", map[string]string{"provider": "gmail"}, 1},
			{"certgate_placement_inbox_ratio", map[string]string{"provider": "outlook"}, 0.5},
		} {
			got := seedsPick(ms, c.name, c.labels)
			if seedsSum(got) != c.want {
				t.Errorf("%s%v: %g (%v), want %g", c.name, c.labels, seedsSum(got), got, c.want)
			}
		}
		if n := len(seedsPick(ms, "certgate_placement_detection_seconds_count", nil)); n != 2 {
			t.Errorf("placement detection histograms for %d providers, want 2", n)
		}
		if up, state := seedsUp(ms); !up {
			t.Errorf("certgate_seed_mailbox_up: %s, want 1 for both folders of both seeds", state)
		}
	})

	// (b) On-demand tests with "certgate seeds test", one copy in Junk,
	// then all in the inbox.
	sample, err := sim.SampleMail("01-es-download-link-qp.eml")
	if err != nil {
		t.Fatal(err)
	}
	eml := filepath.Join(t.TempDir(), "test.eml")
	if err := os.WriteFile(eml, sample, 0o600); err != nil {
		t.Fatal(err)
	}
	received := r.mx.Stats().Received
	for i, c := range []struct {
		outlookFolder string
		wantExit      int
		wantFolders   map[string]string
	}{
		{"Junk", 1, map[string]string{gmail.name: "inbox", outlook.name: "junk"}},
		{"INBOX", 0, map[string]string{gmail.name: "inbox", outlook.name: "inbox"}},
	} {
		t.Run("seeds test "+strconv.Itoa(i+1), func(t *testing.T) {
			var out, errOut bytes.Buffer
			done := make(chan int, 1)
			go func() {
				done <- run([]string{"seeds", "test", "--eml", eml, "--url", r.api, "--token-file", r.tokenFile, "--wait", "30s"}, &out, &errOut)
			}()
			received += len(seedsAccounts)
			r.waitSim(received)
			if n := len(r.mx.MessagesTo(seedsCustomer)); n != 3 {
				t.Errorf("the placement test reached the sample's To (%d copies to %s)", n-3, seedsCustomer)
			}
			scl := 0
			if c.outlookFolder != "INBOX" {
				scl = 6
			}
			r.file(gmail.name, r.seedCopy(gmail.name, 2+i), "INBOX", seedsFiling{dmarc: "pass", scl: -1})
			r.file(outlook.name, r.seedCopy(outlook.name, 2+i), c.outlookFolder, seedsFiling{dmarc: "pass", scl: scl})
			var code int
			select {
			case code = <-done:
			case <-time.After(40 * time.Second):
				t.Fatal("certgate seeds test did not end within its --wait")
			}
			text := out.String()
			if code != c.wantExit {
				t.Errorf("certgate seeds test exited %d, want %d\n%s%s", code, c.wantExit, text, errOut.String())
			}
			id := regexp.MustCompile(`test (\S+) sent to the seed mailboxes`).FindStringSubmatch(text)
			if id == nil {
				t.Fatalf("certgate seeds test printed no test id:\n%s", text)
			}
			for seed, folder := range c.wantFolders {
				row := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(seed) + `\s+(\S+)\s+(\S+)\s+\S+\s+(\S+)\s+(\S+)\s+(\S+)\s*$`).FindStringSubmatch(text)
				wantSCL := "-"
				if seed == outlook.name {
					wantSCL = strconv.Itoa(scl)
				}
				if row == nil || row[1] != r.account(seed).provider || row[2] != folder || row[3] != "pass" || row[4] != "pass" || row[5] != wantSCL {
					t.Errorf("certgate seeds test's row for %s: %q, want provider %s, folder %s, dkim and dmarc pass, scl %s\n%s",
						seed, row, r.account(seed).provider, folder, wantSCL, text)
				}
			}
			if c.wantExit == 1 && !strings.Contains(text, "2 copies: 1 inbox, 0 tab, 1 junk, 0 other, 0 missing, 0 still pending") {
				t.Errorf("certgate seeds test's summary:\n%s", text)
			}
			if c.wantExit == 0 && !strings.Contains(text, "2 copies: 2 inbox, 0 tab, 0 junk, 0 other, 0 missing, 0 still pending") {
				t.Errorf("certgate seeds test's summary:\n%s", text)
			}

			var res struct {
				ID      string           `json:"id"`
				State   string           `json:"state"`
				Results []seedsPlacement `json:"results"`
			}
			if code := r.call("GET", "/api/v1/placement/tests/"+id[1], "", nil, &res); code != http.StatusOK {
				t.Fatalf("GET /api/v1/placement/tests/%s: %d", id[1], code)
			}
			got := map[string]string{}
			for _, p := range res.Results {
				got[p.Seed] = p.Folder
			}
			if res.ID != id[1] || res.State != "done" || fmt.Sprint(got) != fmt.Sprint(c.wantFolders) {
				t.Errorf("GET /api/v1/placement/tests/%s: %+v, want done with %v", id[1], res, c.wantFolders)
			}
			m := r.message(id[1])
			if len(m.Recipients) != len(seedsAccounts) {
				t.Errorf("the placement test's recipients: %+v, want the seeds only", m.Recipients)
			}
			for _, rc := range m.Recipients {
				if rc.Seed == "" {
					t.Errorf("the placement test's recipient %s is not a seed copy", rc.Address)
				}
			}
		})
	}

	// A seed address in the issuer's own list is tracked like a seed
	// copy. Message 4 is not due for seeding (1 bulk message since the
	// last seeded one), so gmail-1's copy is the customer list's.
	r.submit([]string{seedsCustomer, gmail.address}, seedsBulk(4))
	received += 2
	r.waitSim(received)
	r.file(gmail.name, r.seedCopy(gmail.name, 4), "Junk", seedsFiling{dmarc: "pass", scl: -1})
	var id4 string
	list.Messages = nil
	r.call("GET", "/api/v1/messages?recipient="+url.QueryEscape(gmail.address), "", nil, &list)
	for _, m := range list.Messages {
		if m.Subject == "Su certificado 4" {
			id4 = m.ID
		}
	}
	if id4 == "" {
		t.Fatalf("the API finds no message 4 to %s: %+v", gmail.address, list.Messages)
	}
	m4 := r.waitPlaced(id4)
	if rc := m4.recipient(gmail.address); len(m4.Recipients) != 2 || rc == nil || rc.Seed != gmail.name || rc.Placement == nil ||
		rc.Placement.Folder != store.FolderJunk {
		t.Errorf("message 4 to the customer and gmail-1's address: %+v, want gmail-1's copy tracked as a seed copy in junk", m4.Recipients)
	}
	if got := m4.linkStates(seedsCustomer); len(got) != 1 || got[0] != "enabled" {
		t.Errorf("message 4: the customer's links: %v, want one enabled", got)
	}
	if got := m4.linkStates(gmail.address); len(got) != 1 || got[0] != "pending" {
		t.Errorf("message 4: gmail-1's links: %v, want one pending", got)
	}

	// The on-demand tests and the listed seed address are seed copies
	// too: never customer deliveries.
	var ms []seedsMetric
	r.eventually("every delivery attempt counted", func() (bool, string) {
		ms = r.scrape()
		seeds := seedsPick(ms, "certgate_seed_delivery_attempts_total", nil)
		return seedsSum(seeds) == 9 && seedsSum(seedsPick(ms, "certgate_delivery_attempts_total", nil)) == 4, fmt.Sprint(seeds)
	})
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"certgate_delivery_attempts_total", nil, 4},
		{"certgate_delivery_attempts_total", map[string]string{"provider": "gmail"}, 0},
		{"certgate_seed_delivery_attempts_total", map[string]string{"provider": "gmail", "result": "delivered"}, 5},
		{"certgate_placements_total", map[string]string{"provider": "gmail", "folder": "inbox"}, 4},
		{"certgate_placements_total", map[string]string{"provider": "gmail", "folder": "junk"}, 1},
		{"certgate_placements_total", map[string]string{"provider": "outlook", "folder": "inbox"}, 2},
		{"certgate_placements_total", map[string]string{"provider": "outlook", "folder": "junk"}, 2},
	} {
		if got := seedsPick(ms, c.name, c.labels); seedsSum(got) != c.want {
			t.Errorf("at the end, %s%v: %g (%v), want %g", c.name, c.labels, seedsSum(got), got, c.want)
		}
	}
}
