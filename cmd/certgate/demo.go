package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/gateway/signer"
	"github.com/certgate/certgate/mimeedit"
	"github.com/certgate/certgate/sim"
)

//go:embed demomail/*.eml
var demoMail embed.FS

// demoProvider is one simulated receiving provider and the recipient
// domains it hosts, each with the MX host name real DNS would give.
type demoProvider struct {
	name    string
	ip      string
	domains map[string]string // recipient domain -> MX host
}

// demoFaults is what --faults makes the simulated receivers do, seeded so
// that a run repeats: every fault is temporary, so every copy still lands.
var demoFaults = map[string]sim.Faults{
	"microsoft": {Seed: 4, Rcpt451: 0.05, Data451: 0.03, DropMidData: 0.03},
	"yahoo":     {Seed: 5, Greylist: 3 * time.Second},
}

var demoProviders = []demoProvider{
	{"google", "127.0.0.11", map[string]string{"gmail.com": "gmail-smtp-in.l.google.com", "empresa.example": "aspmx.l.google.com"}},
	{"microsoft", "127.0.0.12", map[string]string{"outlook.com": "outlook-com.olc.protection.outlook.com", "contoso.example": "contoso-example.mail.protection.outlook.com"}},
	{"yahoo", "127.0.0.13", map[string]string{"yahoo.com": "mta5.am0.yahoodns.net"}},
	{"issuer", "127.0.0.14", map[string]string{"ca.example": "mx.ca.example", "certs.example": "mx.certs.example", "ac.example": "mx.ac.example"}},
}

// bounceAddress is refused by the simulated Microsoft MX, to show a DSN.
const bounceAddress = "no.such.user@contoso.example"

func cmdDemo(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("demo", stderr)
	keep := fs.Bool("keep", false, "keep certgate running after the demo, until interrupted")
	bulk := fs.Int("messages", 300, "bulk certificate mails in the wave")
	urgent := fs.Int("urgent", 5, "urgent token mails submitted behind the wave")
	verbose := fs.Bool("v", false, "log every SMTP session and delivery")
	faults := fs.Bool("faults", false, "make the simulated receivers misbehave: Microsoft answers some RCPT and DATA with 451 and drops some connections mid-DATA, Yahoo greylists")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	opts := demoOptions{Keep: *keep, Messages: *bulk, Urgent: *urgent, Verbose: *verbose, Faults: *faults, Stderr: stderr}
	return runDemo(ctx, opts, startDemoDaemon, stdout)
}

// demoOptions are the demo's flags.
type demoOptions struct {
	Keep     bool // leave certgate running (and its data) until ctx ends
	Messages int  // bulk mails in the wave
	Urgent   int  // urgent token mails behind the wave
	Verbose  bool // log at info level, every session and delivery
	Faults   bool // make the simulated receivers misbehave
	Stderr   io.Writer
}

// demoGateway is what the demo needs of a running certgate.
type demoGateway interface {
	SMTPAddr() string // host:port of the submission listener
	HTTPURL() string  // http://host:port
	Queued() int      // recipients still queued
	Stop(ctx context.Context)
}

// demoStarter starts certgate from the demo's configuration.
type demoStarter func(ctx context.Context, cfg *config.Config, log *slog.Logger) (demoGateway, error)

// printer prints one line of the demo's output.
type printer func(format string, a ...any)

// runDemo plays the scenario step by step; the deferred calls undo the
// steps in reverse order.
func runDemo(ctx context.Context, opts demoOptions, start demoStarter, stdout io.Writer) error {
	dir, err := os.MkdirTemp("", "certgate-demo-")
	if err != nil {
		return err
	}
	if !opts.Keep {
		defer os.RemoveAll(dir)
	}
	out := printer(func(format string, a ...any) { fmt.Fprintf(stdout, format+"\n", a...) })
	out("certgate demo: data in %s", dir)

	keys, err := makeDemoKeys(dir)
	if err != nil {
		return err
	}
	sims, mxPort, err := startProviders(keys.lookupTXT, opts.Faults)
	if err != nil {
		return fmt.Errorf("starting simulated providers: %w", err)
	}
	defer closeProviders(sims)
	downloads, err := startDownloadServer()
	if err != nil {
		return err
	}
	defer downloads.Close()
	cfgPath, creds, err := writeDemoConfig(dir, mxPort, keys.config, downloads.prefix)
	if err != nil {
		return err
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	gw, err := start(ctx, cfg, demoLogger(opts))
	if err != nil {
		return err
	}
	defer stopGateway(gw)
	printSetup(out, gw, sims, cfg)

	wave, err := demoWave(opts.Messages, opts.Urgent)
	if err != nil {
		return err
	}
	sub := newSubmitter(gw.SMTPAddr(), creds.password)
	out("\nsubmitting %d bulk certificate mails over 8 SMTP sessions, then %d urgent token mails behind them...", opts.Messages, opts.Urgent)
	started := time.Now()
	submitted := submitWave(ctx, sub, wave)
	if err := watchProgress(ctx, out, started, submitted, sub, wave, sims, gw); err != nil {
		return err
	}

	got := snapshot(sims)
	printDeliveries(out, got, len(wave.all()), sub.recipients(), opts.Faults)
	printBooks(out, got, sub.recipients(), gw.Queued())
	printWaits(out, got, sub.acceptedAt)
	printAPI(out, got, gw.HTTPURL(), creds.token)
	if err := demoGatedLink(ctx, out, gw.SMTPAddr(), creds.password, gw.HTTPURL(), creds.token, sims[0], downloads); err != nil {
		return err
	}
	if opts.Keep {
		out("\ncertgate keeps running (--keep); SMTP %s, user app, password %s. Ctrl-C to stop.", gw.SMTPAddr(), creds.password)
		<-ctx.Done()
	}
	return nil
}

// demoLogger logs certgate's warnings, or everything with -v.
func demoLogger(opts demoOptions) *slog.Logger {
	w := opts.Stderr
	if w == nil {
		w = io.Discard
	}
	level := slog.LevelWarn
	if opts.Verbose {
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// stopGateway gives certgate a bounded time to stop, so the demo ends.
func stopGateway(gw demoGateway) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	gw.Stop(ctx)
}

// demoKeys are the demo's DKIM keys and the TXT records that publish them.
type demoKeys struct {
	config []config.DKIMKey
	txt    map[string][]string // record name without the final dot -> value
}

// makeDemoKeys writes RSA-2048 keys for each issuer domain, plus Ed25519
// for ca.example, into dir.
func makeDemoKeys(dir string) (demoKeys, error) {
	keys := demoKeys{txt: map[string][]string{}}
	for _, k := range []struct{ alg, domain, sel string }{
		{"rsa2048", "ca.example", "s2026"}, {"ed25519", "ca.example", "e2026"},
		{"rsa2048", "certs.example", "s2026"}, {"rsa2048", "ac.example", "s2026"},
	} {
		key, pemBytes, err := signer.Generate(k.alg, k.domain, k.sel)
		if err != nil {
			return demoKeys{}, err
		}
		path := filepath.Join(dir, k.sel+"."+k.domain+".pem")
		if err := os.WriteFile(path, pemBytes, 0o600); err != nil {
			return demoKeys{}, err
		}
		name, value := key.DNSRecord()
		keys.txt[strings.TrimSuffix(name, ".")] = []string{value}
		keys.config = append(keys.config, config.DKIMKey{Domain: k.domain, Selector: k.sel, KeyFile: path})
	}
	return keys, nil
}

// lookupTXT is the receivers' DNS for DKIM keys.
func (k demoKeys) lookupTXT(domain string) ([]string, error) {
	if v, ok := k.txt[strings.TrimSuffix(domain, ".")]; ok {
		return v, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: domain, IsNotFound: true}
}

// startProviders starts the simulated providers, all on one port as real
// MXes are all on 25, and returns them in demoProviders' order.
func startProviders(lookupTXT func(string) ([]string, error), faults bool) ([]*sim.Provider, int, error) {
	var opts []sim.Options
	for _, p := range demoProviders {
		o := sim.Options{Name: p.name, Domains: slices.Collect(maps.Keys(p.domains)), MXHost: firstMX(p), IP: p.ip, LookupTXT: lookupTXT}
		if faults {
			o.Faults = demoFaults[p.name]
		}
		if p.name == "microsoft" {
			o.Respond = refuseBounceAddress
		}
		opts = append(opts, o)
	}
	return sim.StartGroup(opts)
}

// refuseBounceAddress is the simulated Microsoft's RCPT reply: it knows
// every user but one.
func refuseBounceAddress(_, rcpt string) *smtp.SMTPError {
	if strings.EqualFold(rcpt, bounceAddress) {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "Recipient address rejected: user unknown"}
	}
	return nil
}

func closeProviders(sims []*sim.Provider) {
	for _, s := range sims {
		s.Close()
	}
}

// printSetup says where everything listens and what the lanes allow.
func printSetup(out printer, gw demoGateway, sims []*sim.Provider, cfg *config.Config) {
	out("certgate listening: SMTP %s (STARTTLS, AUTH as app), HTTP %s", gw.SMTPAddr(), gw.HTTPURL())
	for _, s := range sims {
		out("  simulated provider %-9s MX %-45s at %s", s.Name(), s.MXHost(), s.Addr())
	}
	var limits []string
	for _, p := range cfg.Providers {
		limits = append(limits, fmt.Sprintf("%s %s over %d connections", p.Name, p.MaxMessageRate, p.ConnectionLimit))
	}
	out("  shaping lanes (matched by domain or MX name): %s", strings.Join(limits, ", "))
}

// submitWave submits the bulk mail over 8 sessions, then the urgent mail
// behind it over one; the channel gets the outcome.
func submitWave(ctx context.Context, sub *submitter, w wave) <-chan error {
	done := make(chan error, 1)
	go func() {
		if err := sub.run(ctx, w.bulk, 8); err != nil {
			done <- err
			return
		}
		done <- sub.run(ctx, w.urgent, 1)
	}()
	return done
}

// watchProgress prints a line a second until the wave is submitted and
// every expected copy (the DSN too) has landed, for 3 minutes at most or
// until ctx ends. The pace is real time: it is what the user watches.
func watchProgress(ctx context.Context, out printer, started time.Time, submitted <-chan error, sub *submitter, w wave, sims []*sim.Provider, gw demoGateway) error {
	expected := expectedCopies(w)
	deadline := time.Now().Add(3 * time.Minute)
	allSubmitted := false
	for {
		select {
		case err := <-submitted:
			if err != nil {
				return err
			}
			allSubmitted = true
		default:
		}
		delivered, landed := deliveredSoFar(sims, expected)
		out("  [%5.1fs] accepted %3d/%d  delivered: %s  queued: %d", time.Since(started).Seconds(), sub.count(), len(w.all()), delivered, gw.Queued())
		if (allSubmitted && landed) || time.Now().After(deadline) || ctx.Err() != nil {
			return nil
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// expectedCopies counts the copies each provider should store: one per
// recipient but the refused one, plus its DSN at the issuer's MX.
func expectedCopies(w wave) map[string]int {
	expected := map[string]int{}
	for _, m := range w.all() {
		for _, r := range m.rcpts {
			if r != bounceAddress {
				expected[providerOf(r)]++
			}
		}
	}
	expected["issuer"]++
	return expected
}

// deliveredSoFar reads "google 24/122  microsoft 27/122 ..." off the
// providers, and whether each has all it expects.
func deliveredSoFar(sims []*sim.Provider, expected map[string]int) (string, bool) {
	landed := true
	var parts []string
	for _, s := range sims {
		n := s.Stats().Received
		parts = append(parts, fmt.Sprintf("%s %d/%d", s.Name(), n, expected[s.Name()]))
		if n < expected[s.Name()] {
			landed = false
		}
	}
	return strings.Join(parts, "  "), landed
}

// received is what one provider had stored when the summary began, taken
// once so that every line of the summary speaks of the same moment.
type received struct {
	name  string
	stats sim.Stats
	msgs  []sim.Message
}

func snapshot(sims []*sim.Provider) []received {
	var got []received
	for _, s := range sims {
		got = append(got, received{name: s.Name(), stats: s.Stats(), msgs: s.Messages()})
	}
	return got
}

// printDeliveries prints what each provider received and verified, the
// bounce, and the faults the receivers injected.
func printDeliveries(out printer, got []received, messages, recipients int, faults bool) {
	out("\nsummary")
	out("  accepted:   %d messages, %d recipients", messages, recipients)
	total, pass := 0, 0
	for _, r := range got {
		total += r.stats.Received
		pass += r.stats.DKIMPass
		out("  %-10s  %4d delivered, DKIM verified at the receiver %4d/%d, max %d concurrent connections, up to %d per connection",
			r.name, r.stats.Received, r.stats.DKIMPass, r.stats.Received, r.stats.MaxConcurrent, r.stats.DeliveriesPerConnectionMax)
	}
	out("  DKIM:       %d of %d delivered copies verified at the receiving side", pass, total)
	out("  bounce:     %s refused with 550 5.1.1; a DSN went back to the sender (see the issuer provider)", bounceAddress)
	if faults {
		for _, r := range got {
			if f := r.stats.Faults; f != (sim.FaultStats{}) {
				out("  faults:     %-10s %s", r.name, f)
			}
		}
	}
}

// printBooks shows that every accepted recipient is delivered, bounced
// (one DSN each, at the issuer's MX) or still queued: nothing is lost,
// whatever the receivers did.
func printBooks(out printer, got []received, accepted, queued int) {
	total, dsns := 0, 0
	for _, r := range got {
		total += r.stats.Received
		if r.name == "issuer" {
			dsns = r.stats.Received
		}
	}
	balance := "balanced"
	if n := accepted - (total - dsns) - dsns - queued; n != 0 {
		balance = fmt.Sprintf("OFF BY %d", n)
	}
	out("  books:      %d recipients accepted = %d delivered + %d bounced (one DSN each) + %d queued: %s",
		accepted, total-dsns, dsns, queued, balance)
}

// printWaits compares how long bulk and urgent mail waited between the
// 250 and the receiver's acceptance.
func printWaits(out printer, got []received, acceptedAt func(rcpt string) (time.Time, bool)) {
	var bulkLat, urgentLat []time.Duration
	for _, r := range got {
		for _, m := range r.msgs {
			at, ok := acceptedAt(m.To)
			if !ok {
				continue
			}
			if strings.HasPrefix(m.To, "token") {
				urgentLat = append(urgentLat, m.Received.Sub(at))
			} else {
				bulkLat = append(bulkLat, m.Received.Sub(at))
			}
		}
	}
	out("  waiting from 250 to delivery:")
	out("    bulk    p50 %-8s p95 %-8s max %s", pct(bulkLat, 50), pct(bulkLat, 95), pct(bulkLat, 100))
	out("    urgent  p50 %-8s p95 %-8s max %s   (submitted behind the whole wave)", pct(urgentLat, 50), pct(urgentLat, 95), pct(urgentLat, 100))
}

// printAPI shows where to look next, and reads back through the API the
// message that carried the refused address.
func printAPI(out printer, got []received, httpBase, token string) {
	out("\n  metrics:    %s/metrics", httpBase)
	out("  API:        curl -H 'Authorization: Bearer %s' %s/api/v1/messages/ID", token, httpBase)
	for _, r := range got {
		for _, m := range r.msgs {
			if strings.HasPrefix(m.To, "cliente0007@") {
				if id := queueIDOf(m); id != "" {
					showMessage(out, httpBase, token, id)
				}
			}
		}
	}
}

func firstMX(p demoProvider) string {
	var hosts []string
	for _, h := range p.domains {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	return hosts[0]
}

func providerOf(addr string) string {
	domain := addr[strings.LastIndexByte(addr, '@')+1:]
	for _, p := range demoProviders {
		if _, ok := p.domains[domain]; ok {
			return p.name
		}
	}
	return ""
}

func pct(ds []time.Duration, p int) string {
	if len(ds) == 0 {
		return "-"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s) - 1) * p / 100
	return s[i].Round(10 * time.Millisecond).String()
}

// credentials are the demo's secrets: the submission password (users app
// and portal) and the API token.
type credentials struct {
	password, token string
}

// writeDemoConfig writes the demo's configuration as an operator would,
// so that the demo runs through the same loading and validation.
func writeDemoConfig(dir string, mxPort int, keys []config.DKIMKey, downloadPrefix string) (path string, creds credentials, err error) {
	creds = credentials{password: randomHex(12), token: randomHex(24)}
	hash, err := bcrypt.GenerateFromPassword([]byte(creds.password), bcrypt.DefaultCost)
	if err != nil {
		return "", creds, err
	}
	cert, err := sim.SelfSigned("relay.ca.example")
	if err != nil {
		return "", creds, err
	}
	certFile, keyFile, err := cert.WriteFiles(dir, "smtp")
	if err != nil {
		return "", creds, err
	}
	tokenFile := filepath.Join(dir, "api-token")
	if err := os.WriteFile(tokenFile, []byte(creds.token+"\n"), 0o600); err != nil {
		return "", creds, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# certgate demo configuration, written by 'certgate demo'\n")
	fmt.Fprintf(&b, "hostname: relay.ca.example\ndata_dir: %s\n", filepath.Join(dir, "data"))
	fmt.Fprintf(&b, "smtp:\n  listen: [\"127.0.0.1:0\"]\n  tls: {cert_file: %s, key_file: %s}\n", certFile, keyFile)
	// The gate's URLs go into the mail, so the HTTP port is chosen now.
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", creds, err
	}
	httpAddr := hl.Addr().String()
	hl.Close()
	fmt.Fprintf(&b, "http:\n  listen: %q\n  public_url: \"http://%s\"\n", httpAddr, httpAddr)
	fmt.Fprintf(&b, "tenants:\n  - name: issuer\n    users: [{username: app, password_hash: %q}]\n", string(hash))
	fmt.Fprintf(&b, "    from_domains: [ca.example, certs.example, ac.example]\n")
	fmt.Fprintf(&b, "  - name: portal\n    display_name: Service Certificats\n    users: [{username: portal, password_hash: %q}]\n", string(hash))
	fmt.Fprintf(&b, "    from_domains: [certs.example]\n    support: {email: support@certs.example}\n")
	fmt.Fprintf(&b, "    links: {gate: [%q], enable: on_release, max_uses: 3}\n", downloadPrefix)
	fmt.Fprintf(&b, "gate: {min_human_delay: 500ms}\n")
	fmt.Fprintf(&b, "dkim:\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "  - {domain: %s, selector: %s, key_file: %s}\n", k.Domain, k.Selector, k.KeyFile)
	}
	fmt.Fprintf(&b, "delivery:\n  mx_port: %d\n  retry: {schedule: [2s, 5s, 10s], max_age: 1h}\n  static_dns:\n    mx:\n", mxPort)
	for _, p := range demoProviders {
		for d, mx := range p.domains {
			fmt.Fprintf(&b, "      %s: [%s]\n", d, mx)
		}
	}
	fmt.Fprintf(&b, "    hosts:\n")
	for _, p := range demoProviders {
		for _, mx := range p.domains {
			fmt.Fprintf(&b, "      %s: [%s]\n", mx, p.ip)
		}
	}
	// Limits scaled down from production so the demo shows shaping in seconds.
	fmt.Fprintf(&b, "providers:\n")
	fmt.Fprintf(&b, "  - {name: gmail, max_message_rate: 1800/min, connection_limit: 3}\n")
	fmt.Fprintf(&b, "  - {name: microsoft365, max_message_rate: 1200/min, connection_limit: 2}\n")
	fmt.Fprintf(&b, "  - {name: outlook, max_message_rate: 900/min, connection_limit: 2}\n")
	fmt.Fprintf(&b, "  - {name: yahoo, max_message_rate: 600/min, connection_limit: 2}\n")
	fmt.Fprintf(&b, "api:\n  tokens: [{name: demo, token_file: %s, scopes: [read, release]}]\n", tokenFile)
	path = filepath.Join(dir, "certgate.yaml")
	return path, creds, os.WriteFile(path, []byte(b.String()), 0o600)
}

// demoMessage is one submission of the demo wave.
type demoMessage struct {
	from  string
	rcpts []string
	data  []byte
}

// wave is what the demo submits: bulk mail, then urgent mail behind it.
type wave struct {
	bulk, urgent []demoMessage
}

func (w wave) all() []demoMessage { return append(slices.Clip(w.bulk), w.urgent...) }

// demoWave builds bulk mails from the sample certificate mails, addressed
// round-robin to the simulated providers, plus urgent token mails.
func demoWave(bulk, urgent int) (wave, error) {
	names, _ := demoMail.ReadDir("demomail")
	var bulkTemplates [][]byte
	var tokenTemplate []byte
	for _, n := range names {
		b, err := demoMail.ReadFile("demomail/" + n.Name())
		if err != nil {
			return wave{}, err
		}
		if strings.Contains(n.Name(), "token") {
			tokenTemplate = b
		} else {
			bulkTemplates = append(bulkTemplates, b)
		}
	}
	domains := []string{"gmail.com", "empresa.example", "outlook.com", "contoso.example", "yahoo.com"}
	var w wave
	for i := 0; i < bulk; i++ {
		rcpt := fmt.Sprintf("cliente%04d@%s", i, domains[i%len(domains)])
		rcpts := []string{rcpt}
		if i == 7 {
			rcpts = append(rcpts, bounceAddress)
		}
		m, err := readdress(bulkTemplates[i%len(bulkTemplates)], rcpts)
		if err != nil {
			return wave{}, err
		}
		w.bulk = append(w.bulk, m)
	}
	for i := 0; i < urgent; i++ {
		m, err := readdress(tokenTemplate, []string{fmt.Sprintf("token%02d@%s", i, domains[i%len(domains)])})
		if err != nil {
			return wave{}, err
		}
		w.urgent = append(w.urgent, m)
	}
	return w, nil
}

// readdress sets To to the demo recipients and drops the sample's
// Message-ID so certgate gives each copy its own.
func readdress(tmpl []byte, rcpts []string) (demoMessage, error) {
	hb, body, err := mimeedit.SplitHeader(tmpl)
	if err != nil {
		return demoMessage{}, err
	}
	h, err := mimeedit.ParseHeader(hb)
	if err != nil {
		return demoMessage{}, err
	}
	from := h.Get("From")
	if i := strings.LastIndexByte(from, '<'); i >= 0 {
		from = strings.Trim(from[i:], "<> ")
	}
	h.Del("To")
	h.Del("Cc")
	h.Del("Message-ID")
	h.Add("To", strings.Join(rcpts, ", "))
	return demoMessage{from: from, rcpts: rcpts, data: append(h.Bytes(), body...)}, nil
}

// submitter plays the issuer's system: SMTP sessions with STARTTLS and AUTH.
type submitter struct {
	addr, password string
	mu             sync.Mutex
	accepted       map[string]time.Time // recipient -> when 250 came
	rcptCount      int
	msgCount       int
}

func newSubmitter(addr, password string) *submitter {
	return &submitter{addr: addr, password: password, accepted: map[string]time.Time{}}
}

// count is the number of messages accepted so far.
func (s *submitter) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.msgCount
}

// recipients is the number of recipients accepted so far.
func (s *submitter) recipients() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rcptCount
}

func (s *submitter) acceptedAt(rcpt string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.accepted[strings.ToLower(rcpt)]
	return t, ok
}

func (s *submitter) run(ctx context.Context, msgs []demoMessage, sessions int) error {
	work := make(chan demoMessage)
	errs := make(chan error, sessions)
	var wg sync.WaitGroup
	for i := 0; i < sessions; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- s.session(work)
		}()
	}
	for _, m := range msgs {
		if ctx.Err() != nil {
			break
		}
		work <- m
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return ctx.Err()
}

func (s *submitter) session(work <-chan demoMessage) error {
	c, err := smtp.DialStartTLS(s.addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		return fmt.Errorf("submitting: %w", err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", "app", s.password)); err != nil {
		return fmt.Errorf("submitting: %w", err)
	}
	for m := range work {
		if err := c.SendMail(m.from, m.rcpts, strings.NewReader(string(m.data))); err != nil {
			return fmt.Errorf("submitting to %v: %w", m.rcpts, err)
		}
		now := time.Now()
		s.mu.Lock()
		for _, r := range m.rcpts {
			s.accepted[strings.ToLower(r)] = now
		}
		s.rcptCount += len(m.rcpts)
		s.msgCount++
		s.mu.Unlock()
	}
	return c.Quit()
}

// queueIDOf finds certgate's queue id in the Received field certgate
// added to a delivered copy ("... (certgate) with ESMTPSA id ID;").
func queueIDOf(m sim.Message) string {
	const marker = ") with ESMTPSA id "
	s := string(m.Data)
	i := strings.Index(s, marker)
	if i < 0 {
		return ""
	}
	s = s[i+len(marker):]
	if j := strings.IndexByte(s, ';'); j > 0 {
		return s[:j]
	}
	return ""
}

// showMessage fetches one message through the API, as the helpdesk would.
func showMessage(out printer, base, token, id string) {
	req, _ := http.NewRequest("GET", base+"/api/v1/messages/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		out("  API error: %v", err)
		return
	}
	defer resp.Body.Close()
	var m struct {
		ID         string `json:"id"`
		Subject    string `json:"subject"`
		Recipients []struct {
			Address   string `json:"address"`
			State     string `json:"state"`
			Provider  string `json:"provider"`
			LastCode  int    `json:"last_code"`
			LastReply string `json:"last_reply"`
			Attempts  int    `json:"attempts"`
		} `json:"recipients"`
		Events []struct{ Kind string } `json:"events"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || resp.StatusCode != http.StatusOK {
		out("  API answered %s", resp.Status)
		return
	}
	out("  GET /api/v1/messages/%s -> %q, %d events", m.ID, m.Subject, len(m.Events))
	for _, r := range m.Recipients {
		out("    %-32s %-9s via %-12s after %d attempt(s): %d %s", r.Address, r.State, r.Provider, r.Attempts, r.LastCode, r.LastReply)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// startDemoDaemon starts certgate in this process for the demo.
func startDemoDaemon(ctx context.Context, cfg *config.Config, log *slog.Logger) (demoGateway, error) {
	d, err := newDaemon(ctx, cfg, log, daemonOptions{})
	if err != nil {
		return nil, err
	}
	if err := d.start(ctx); err != nil {
		d.store.Close()
		return nil, err
	}
	return demoDaemon{d}, nil
}

// demoDaemon is a started daemon as the demo sees it.
type demoDaemon struct{ d *daemon }

func (g demoDaemon) SMTPAddr() string         { return g.d.smtpAddrs[0].String() }
func (g demoDaemon) HTTPURL() string          { return "http://" + g.d.httpAddr.String() }
func (g demoDaemon) Queued() int              { return g.d.queue.Len() }
func (g demoDaemon) Stop(ctx context.Context) { g.d.shutdown(ctx) }
