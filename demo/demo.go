// Package demo is the scenario that 'certgate demo' plays: simulated
// Google, Microsoft and Yahoo MXes on loopback, whose filters file mail
// into the inbox or junk by simple rules, a wave of certificate mail
// through a certgate the caller starts, a summary whose books balance,
// where the seed copies landed as certgate's IMAP watcher saw it, the
// closed loop at a distrustful Microsoft (it throttles, certgate slows
// down, placement recovers, the rate climbs back) told from what the demo
// saw of it, a gated download link released through the API, and, where
// PostgreSQL and Redis are installed, two nodes of a cluster sharing a
// wave while one of them stops.
//
// Only the binary's demo subcommand imports it, and it is the only
// non-test importer of sim, so the serve path never links the simulator.
package demo

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/sim"
)

// Options are the demo's flags.
type Options struct {
	Keep     bool      // leave certgate running (and its data) until ctx ends
	Messages int       // bulk mails in the wave
	Urgent   int       // urgent token mails behind the wave
	Verbose  bool      // log at info level, every session and delivery
	Faults   bool      // make the simulated receivers misbehave
	Stderr   io.Writer // certgate's log; nil discards it
}

// Gateway is what the demo needs of a running certgate.
type Gateway interface {
	SMTPAddr() string         // host:port of the submission listener
	HTTPURL() string          // http://host:port
	Queued() int              // recipients still queued
	Stop(ctx context.Context) // stops intake and deliveries, then the store; again, nothing
}

// Starter starts certgate from the demo's configuration; it lives with the
// binary, since the daemon is package main's.
type Starter func(ctx context.Context, cfg *config.Config, log *slog.Logger) (Gateway, error)

// printer prints one line of the demo's output.
type printer func(format string, a ...any)

// Run plays the scenario step by step; the deferred calls undo the
// steps in reverse order.
func Run(ctx context.Context, opts Options, start Starter, stdout io.Writer) error {
	dir, err := os.MkdirTemp("", "certgate-demo-")
	if err != nil {
		return err
	}
	if !opts.Keep {
		defer os.RemoveAll(dir)
	}
	out := printer(func(format string, a ...any) { fmt.Fprintf(stdout, format+"\n", a...) })
	out("certgate demo: data in %s", dir)

	keys, err := makeKeys(dir)
	if err != nil {
		return err
	}
	// The demo's domains publish their records on a DNS server of their
	// own, which certgate's DNS self-check asks.
	names, err := sim.StartDNS(dnsZone(keys)...)
	if err != nil {
		return fmt.Errorf("starting the demo's DNS server: %w", err)
	}
	defer names.Close()
	passwords := seedPasswords()
	sims, mxPort, err := startProviders(keys.lookupTXT, opts.Faults, passwords)
	if err != nil {
		return fmt.Errorf("starting simulated providers: %w", err)
	}
	defer closeProviders(sims)
	downloads, err := startDownloadServer()
	if err != nil {
		return err
	}
	defer downloads.Close()
	seeds := seedLogins(sims, passwords)
	cfgPath, creds, err := writeConfig(dir, mxPort, keys.config, downloads.prefix, names.Addr(), seeds)
	if err != nil {
		return err
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	gw, err := start(ctx, cfg, newLogger(opts))
	if err != nil {
		return err
	}
	defer stopGateway(gw)
	printSetup(out, gw, sims, cfg, seeds)

	w, err := newWave(opts.Messages, opts.Urgent)
	if err != nil {
		return err
	}
	sub := newSubmitter(gw.SMTPAddr(), creds.password)
	out("\nsubmitting %d bulk certificate mails over 8 SMTP sessions, then %s behind them...", opts.Messages, urgentPlan(opts.Urgent))
	started := time.Now()
	watch := watchLoop(ctx, gw.HTTPURL(), creds.token, named(sims, loopProvider))
	defer watch.stop()
	submitted := submitWave(ctx, sub, w)
	if err := watchProgress(ctx, out, started, submitted, sub, w, sims, gw); err != nil {
		return err
	}
	waitLoop(ctx, out, started, watch)
	watched := watch.stop()

	got := snapshot(sims)
	printDeliveries(out, got, len(w.all()), sub.recipients(), expectedCopies(w)["issuer"] > 0, opts.Faults)
	// The seed copies certgate made, delivered or not, close its books.
	seedsMade := -1
	if rep, err := getPlacement(gw.HTTPURL(), creds.token); err == nil {
		seedsMade = rep.copies()
	}
	printBooks(out, got, sub.recipients(), gw.Queued(), seedsMade)
	printWaits(out, got, sub.acceptedAt)
	if want := expectedSeedCopies(w); want > 0 {
		rep, waited, err := waitPlacement(ctx, gw.HTTPURL(), creds.token, want, placementWait)
		if err != nil {
			out("\nplacement: %v", err)
		} else {
			printPlacement(out, rep, waited)
		}
		printLoop(out, newLoopStory(started, watched, rep, named(sims, loopProvider), w, sub.acceptedAt))
	}
	printAPI(out, got, gw.HTTPURL(), creds.token)
	if err := printKits(ctx, out, gw.HTTPURL(), dir, tenantDomains()); err != nil {
		return err
	}
	printDNS(out, gw.HTTPURL(), creds.token, cfgPath, names)
	if err := gatedLink(ctx, out, gw.SMTPAddr(), creds.password, gw.HTTPURL(), creds.token, named(sims, "google"), downloads); err != nil {
		return err
	}
	if err := httpSend(ctx, out, gw.HTTPURL(), creds.token, named(sims, "google"), named(sims, "microsoft")); err != nil {
		return err
	}
	if err := clusterStep(ctx, out, start, cfg, dir, creds.password, named(sims, "google")); err != nil {
		return err
	}
	if opts.Keep {
		out("\ncertgate keeps running (--keep); SMTP %s, user app, password %s. Ctrl-C to stop.", gw.SMTPAddr(), creds.password)
		if len(seeds) > 0 {
			out("the seed mailboxes, as certgate sees them: certgate seeds check --config %s", cfgPath)
		}
		<-ctx.Done()
	}
	return nil
}

// newLogger logs certgate's warnings, or everything with -v.
func newLogger(opts Options) *slog.Logger {
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
func stopGateway(gw Gateway) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	gw.Stop(ctx)
}

// printSetup says where everything listens, what the lanes allow, how
// each provider files mail, and which seed mailboxes certgate watches.
func printSetup(out printer, gw Gateway, sims []*sim.Provider, cfg *config.Config, seeds []seedLogin) {
	out("certgate listening: SMTP %s (STARTTLS, AUTH as app), HTTP %s", gw.SMTPAddr(), gw.HTTPURL())
	for _, s := range sims {
		out("  simulated provider %-9s MX %-45s at %s", s.Name(), s.MXHost(), s.Addr())
	}
	var limits []string
	for _, p := range cfg.Providers {
		limits = append(limits, fmt.Sprintf("%s %s over %d connections", p.Name, p.MaxMessageRate, p.ConnectionLimit))
	}
	out("  shaping lanes (matched by domain or MX name): %s", strings.Join(limits, ", "))
	printLoopSetup(out, cfg)
	if len(seeds) == 0 {
		return
	}
	out("  the providers' spam filters:")
	for _, p := range providers {
		if p.seed != nil {
			out("    %-10s %s%s", p.name, p.rule(), p.scope())
		}
	}
	out("  seed mailboxes, watched by certgate over IMAP (tenant issuer's seeding copies one bulk mail in %d to each):", seedEvery)
	for _, s := range seeds {
		found := "by SPECIAL-USE \\Junk"
		if s.noSpecialUse {
			found = "by its name: no SPECIAL-USE"
		}
		out("    %-10s %-26s IMAP %-17s junk folder %q (%s)", s.name, s.address, s.imapAddr, s.junk, found)
	}
}
