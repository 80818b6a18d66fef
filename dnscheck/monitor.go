package dnscheck

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/certgate/certgate/clock"
)

// Monitor is the daemon's periodic check: it runs at start and every
// Interval, and keeps the last report for the metrics and the API.
type Monitor struct {
	Checker  *Checker
	Inputs   func() (Inputs, error) // read at each run, so that it sees the key files as they are
	Interval time.Duration
	Clock    clock.Clock // clock.Real when nil
	Log      *slog.Logger
	// OnReport, when set, is called after each run with its report.
	OnReport func(*Report)

	mu   sync.Mutex
	last *Report
}

// Last is the report of the last run; nil before the first.
func (m *Monitor) Last() *Report {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last
}

// Report is the last report, or a new one when there is none yet.
func (m *Monitor) Report(ctx context.Context) (*Report, error) {
	if r := m.Last(); r != nil {
		return r, nil
	}
	return m.RunOnce(ctx)
}

// RunOnce runs the check now and keeps its report.
func (m *Monitor) RunOnce(ctx context.Context) (*Report, error) {
	in, err := m.Inputs()
	if err != nil {
		return nil, err
	}
	rep := m.Checker.Run(ctx, in)
	if ctx.Err() != nil {
		return nil, ctx.Err() // cut short: its failures say nothing about DNS
	}
	m.mu.Lock()
	m.last = rep
	m.mu.Unlock()
	if m.Log != nil {
		m.Log.Info("dns check", "failed", rep.Count(Fail), "warnings", rep.Count(Warn), "resolver", rep.Resolver)
	}
	if m.OnReport != nil {
		m.OnReport(rep)
	}
	return rep, nil
}

// Run checks at once and then every Interval until ctx is done.
func (m *Monitor) Run(ctx context.Context) {
	clk := m.Clock
	if clk == nil {
		clk = clock.Real
	}
	for {
		if _, err := m.RunOnce(ctx); err != nil && ctx.Err() == nil && m.Log != nil {
			m.Log.Error("dns check could not run", "err", err)
		}
		if !clock.Sleep(clk, m.Interval, ctx.Done()) {
			return
		}
	}
}
