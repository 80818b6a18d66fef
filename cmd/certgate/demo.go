package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"syscall"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/demo"
)

// cmdDemo is the only importer of package demo, which alone brings the
// simulated providers (package sim) into the binary.
func cmdDemo(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("demo", stderr)
	keep := fs.Bool("keep", false, "keep certgate running after the demo, until interrupted")
	bulk := fs.Int("messages", 300, "bulk certificate mails in the wave")
	urgent := fs.Int("urgent", 5, "urgent token mails submitted behind the wave, one a second (five seconds in all when there are more)")
	verbose := fs.Bool("v", false, "log every SMTP session and delivery")
	faults := fs.Bool("faults", false, "make the simulated receivers misbehave: Microsoft answers some RCPT and DATA with 451 and drops some connections mid-DATA, Yahoo greylists")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if *bulk < 0 || *urgent < 0 {
		return usageError{fmt.Errorf("--messages and --urgent count mails: %d and %d will not do", *bulk, *urgent)}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	opts := demo.Options{Keep: *keep, Messages: *bulk, Urgent: *urgent, Verbose: *verbose, Faults: *faults, Stderr: stderr}
	return demo.Run(ctx, opts, startDemoDaemon, stdout)
}

// startDemoDaemon starts certgate in this process for the demo.
func startDemoDaemon(ctx context.Context, cfg *config.Config, log *slog.Logger) (demo.Gateway, error) {
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
