// Command certgate is the certgate daemon and its tools: serve, demo,
// check-config, dkim keygen, release, passwd, store check|migrate|copy, kit, version.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"
	_ "time/tzdata" // warm-up days run in a configured zone, also where the system has no zoneinfo

	"github.com/certgate/certgate/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `certgate: the mail gateway for certificate issuers

Usage:
  certgate serve --config FILE          run the daemon
  certgate demo [--keep]                run a demo on loopback with simulated providers
  certgate check-config --config FILE   report every configuration problem, with file and line
  certgate dkim keygen --domain D --selector S [--algorithm rsa2048|ed25519] --out DIR
  certgate release [--url URL] [--token-file F] [--reason TEXT] (ID... | --recipient ADDRESS)
  certgate send [--url URL] [--token-file F] --from ADDR --to "a@x, b@y" [--cert FILE] [--format F] [--message TEXT] [--preview]
  certgate passwd [--cost N]            print a password's bcrypt hash (asks on a terminal, else reads a line)
  certgate passwd --check HASH          say whether a hash, or htpasswd's user:hash, will do as password_hash
  certgate store check [--config FILE | --db FILE]   full integrity check of the SQLite spool
  certgate store migrate [--config FILE]   apply the PostgreSQL schema's migrations, before and after versions
  certgate store copy --from-sqlite PATH (--to-dsn-file FILE | --to-dsn-env VAR)   move a stopped node's spool into an empty PostgreSQL
  certgate cluster status [--config FILE]   the nodes of a cluster, the work each holds, who runs webhooks and seed watchers
  certgate seeds test --eml FILE [--tenant T] [--wait 15m] [--url URL] [--token-file F]   where a message lands at every seed mailbox
  certgate seeds check [--config FILE]  log in to every seed mailbox and report its folders and capabilities
  certgate lanes [--url URL] [--token-file F]   the delivery lanes: state, rate, queue, why
  certgate kit --tenant T [--lang es|pt-BR|fr|en] [--format md|html|json] [--config FILE]   the allowlisting kit for the tenant's customers
  certgate dns check [--config FILE] [--tenant T] [--resolver ADDR] [--format table|json]   SPF, DKIM, DMARC, PTR and MX as receivers see them
  certgate version

Every command takes --help.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = cmdServe(args[1:], stderr)
	case "demo":
		err = cmdDemo(args[1:], stdout, stderr)
	case "check-config":
		err = cmdCheckConfig(args[1:], stdout)
	case "dkim":
		err = cmdDKIM(args[1:], stdout)
	case "release":
		err = cmdRelease(args[1:], stdout)
	case "send":
		err = cmdSend(args[1:], stdout)
	case "passwd":
		err = cmdPasswd(args[1:], stdout, stderr)
	case "store":
		err = cmdStore(args[1:], stdout)
	case "cluster":
		err = cmdCluster(args[1:], stdout)
	case "seeds":
		err = cmdSeeds(args[1:], stdout)
	case "lanes":
		err = cmdLanes(args[1:], stdout)
	case "kit":
		err = cmdKit(args[1:], stdout)
	case "dns":
		err = cmdDNS(args[1:], stdout)
	case "version", "--version":
		fmt.Fprintln(stdout, versionString())
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "certgate: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0 // the flag set printed the usage
	}
	if err != nil {
		fmt.Fprintf(stderr, "certgate: %v\n", err)
		if errors.As(err, new(usageError)) {
			return 2
		}
		return 1
	}
	return 0
}

type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

func isHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help" || arg == "help"
}

// commandUsage is the synopsis of command name, from usage.
func commandUsage(name string) string {
	var b strings.Builder
	b.WriteString("Usage:\n")
	for _, line := range strings.Split(usage, "\n") {
		if strings.HasPrefix(line, "  certgate "+name+" ") || line == "  certgate "+name {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

func versionString() string {
	v := version
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += " (" + s.Value[:12] + ")"
			}
		}
		return fmt.Sprintf("certgate %s %s", v, bi.GoVersion)
	}
	return "certgate " + v
}

// newFlags is the flag set of command name (as typed: "dkim keygen"):
// a wrong flag and --help print its synopsis and flags to out, and
// --help exits 0.
func newFlags(name string, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintf(out, "%s\nFlags:\n", commandUsage(name))
		fs.PrintDefaults()
	}
	return fs
}

func cmdServe(args []string, stderr io.Writer) error {
	fs := newFlags("serve", stderr)
	path := fs.String("config", "/etc/certgate/certgate.yaml", "configuration file")
	// Below the service manager's stop timeout (systemd's TimeoutStopSec),
	// so that certgate closes its spool itself before it would be killed.
	grace := fs.Duration("shutdown-timeout", 30*time.Second, "time SIGTERM gives sessions and deliveries in flight before they are cut")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if *grace <= 0 {
		return usageError{fmt.Errorf("--shutdown-timeout must be positive, not %v", *grace)}
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log, stderr)
	logWarnings(log, cfg)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	tuneGC(ctx, log, cfg.SMTP.MemoryBudget)
	d, err := newDaemon(ctx, cfg, log, daemonOptions{})
	if err != nil {
		return err
	}
	if err := d.start(context.Background()); err != nil {
		d.store.Close()
		return err
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-hup:
			if err := d.reloadKeys(*path); err != nil {
				log.Error("reload refused; keeping the keys in use", "err", err)
			}
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), *grace)
	defer cancel()
	d.shutdown(sctx)
	return nil
}

func cmdCheckConfig(args []string, stdout io.Writer) error {
	fs := newFlags("check-config", stdout)
	path := fs.String("config", "/etc/certgate/certgate.yaml", "configuration file")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintf(stdout, "warning: %s\n", w)
	}
	fmt.Fprintf(stdout, "%s: ok\n", *path)
	return nil
}

// logWarnings logs what the configuration has that is risky but not wrong.
func logWarnings(log *slog.Logger, cfg *config.Config) {
	for _, w := range cfg.Warnings {
		log.Warn("configuration: "+w.Msg, "key", w.Path, "file", w.File, "line", w.Line)
	}
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	level := slog.LevelInfo
	switch strings.ToLower(c.Level) {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
