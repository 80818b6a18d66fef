package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/dnscheck"
)

// cmdDNS runs "certgate dns check": the DNS receivers read, held against
// the configuration, as a table (or JSON); exit status 1 on any failure.
func cmdDNS(args []string, stdout io.Writer) error {
	if len(args) == 0 || isHelp(args[0]) {
		fmt.Fprint(stdout, commandUsage("dns"))
		if len(args) == 0 {
			return usageError{errors.New("dns needs check")}
		}
		return nil
	}
	if args[0] != "check" {
		return usageError{fmt.Errorf("unknown dns command %q: check", args[0])}
	}
	fs := newFlags("dns check", stdout)
	path := fs.String("config", "/etc/certgate/certgate.yaml", "configuration file")
	tenant := fs.String("tenant", "", "check only this tenant's domains and keys")
	resolver := fs.String("resolver", "", "recursive resolver host:port (default: dns_check.resolver, else the first nameserver of /etc/resolv.conf)")
	format := fs.String("format", "table", "table or json")
	if err := fs.Parse(args[1:]); err != nil {
		return usageError{err}
	}
	if *format != "table" && *format != "json" {
		return usageError{fmt.Errorf("--format must be table or json, not %q", *format)}
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	if *resolver != "" {
		cfg.DNSCheck.Resolver = *resolver
	}
	in, err := dnscheck.FromConfig(cfg, *tenant)
	if err != nil {
		return err
	}
	checker, err := newDNSChecker(cfg.DNSCheck)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep := checker.Run(ctx, in)
	if *format == "json" {
		err = rep.WriteJSON(stdout)
	} else {
		err = rep.WriteTable(stdout)
	}
	if err != nil {
		return err
	}
	if n := rep.Count(dnscheck.Fail); n > 0 {
		return fmt.Errorf("%d DNS checks failed; publish the records shown", n)
	}
	return ctx.Err()
}

// newDNSChecker asks dns_check.resolver, or the system's first nameserver.
func newDNSChecker(c config.DNSCheck) (*dnscheck.Checker, error) {
	addr := c.Resolver
	if addr == "" {
		var err error
		if addr, err = dnscheck.SystemResolver(); err != nil {
			return nil, fmt.Errorf("dns_check.resolver is not set and %w", err)
		}
	}
	return &dnscheck.Checker{Resolver: &dnscheck.Resolver{Addr: addr, Timeout: c.Timeout.D()}}, nil
}

// buildDNSCheck makes the periodic DNS self-check and exports its last
// report; without a resolver it logs why and stays off.
func (d *daemon) buildDNSCheck() {
	checker, err := newDNSChecker(d.cfg.DNSCheck)
	if err != nil {
		d.log.Warn("dns check off", "err", err)
		return
	}
	d.dns = &dnscheck.Monitor{Checker: checker, Interval: d.cfg.DNSCheck.Interval.D(), Log: d.log,
		Inputs: func() (dnscheck.Inputs, error) { return dnscheck.FromConfig(d.cfg, "") }}
	d.metrics.Registry.MustRegister(dnsCollector{d.dns})
}

// startDNSCheck runs the periodic check until shutdown; stopDNSCheck
// waits for it.
func (d *daemon) startDNSCheck() {
	if d.dns == nil || d.cfg.DNSCheck.Interval == 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	d.stopDNS = func() { cancel(); <-done }
	go func() { defer close(done); d.dns.Run(ctx) }()
}

func (d *daemon) stopDNSCheck() {
	if d.stopDNS != nil {
		d.stopDNS()
	}
}

// dnsCollector exports the last report of the DNS self-check at each
// scrape: nothing before the first run.
type dnsCollector struct{ m *dnscheck.Monitor }

var (
	dnsStatusDesc = prometheus.NewDesc("certgate_dns_check_status",
		"The DNS self-check's verdict per domain (or sending address) and check: 0 pass (or advice), 1 warning, 2 failure (docs/dns.md).",
		[]string{"domain", "check"}, nil)
	dnsLastRunDesc = prometheus.NewDesc("certgate_dns_check_last_run_timestamp_seconds",
		"When the DNS self-check last ran, in seconds since the epoch.", nil, nil)
)

func (dnsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- dnsStatusDesc
	ch <- dnsLastRunDesc
}

func (c dnsCollector) Collect(ch chan<- prometheus.Metric) {
	rep := c.m.Last()
	if rep == nil {
		return
	}
	worst := map[[2]string]float64{}
	var order [][2]string
	for _, r := range rep.Rows {
		k := [2]string{r.Domain, r.Check}
		v := map[dnscheck.Status]float64{dnscheck.Warn: 1, dnscheck.Fail: 2}[r.Status]
		if old, seen := worst[k]; !seen {
			order = append(order, k)
			worst[k] = v
		} else {
			worst[k] = max(old, v)
		}
	}
	for _, k := range order {
		ch <- prometheus.MustNewConstMetric(dnsStatusDesc, prometheus.GaugeValue, worst[k], k[0], k[1])
	}
	ch <- prometheus.MustNewConstMetric(dnsLastRunDesc, prometheus.GaugeValue, float64(rep.Time.UnixNano())/float64(time.Second))
}
