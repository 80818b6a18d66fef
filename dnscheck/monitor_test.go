package dnscheck

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/certgate/certgate/clock"
)

// The monitor checks at start and then each interval of its clock, and
// keeps the last report; a run cut short keeps none.
func TestMonitor(t *testing.T) {
	z := testZone(t)
	clk := clock.NewFake(testStart)
	reports := make(chan *Report, 4)
	in := goodInputs()
	m := &Monitor{Checker: &Checker{Resolver: resolverOf(z, 2*time.Second), Clock: clk},
		Inputs: func() (Inputs, error) { return in, nil }, Interval: time.Hour, Clock: clk,
		OnReport: func(r *Report) { reports <- r }}
	if m.Last() != nil {
		t.Fatal("a report before any run")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	first := <-reports
	if first.Count(Fail) != 0 || m.Last() != first || !first.Time.Equal(testStart) {
		t.Fatalf("first run: %d failures at %v", first.Count(Fail), first.Time)
	}
	if err := clk.WaitTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	in.Addresses = []netip.Addr{ipNoPTR} // what the next run sees
	clk.Advance(time.Hour)
	second := <-reports
	if second.Count(Fail) == 0 || m.Last() != second || !second.Time.Equal(testStart.Add(time.Hour)) {
		t.Errorf("second run: %d failures at %v", second.Count(Fail), second.Time)
	}
	cancel()
	<-done

	// Report runs once when there is no report yet; an input error is
	// returned, not kept.
	m2 := &Monitor{Checker: m.Checker, Inputs: func() (Inputs, error) { return Inputs{}, errors.New("no keys") }}
	if _, err := m2.Report(context.Background()); err == nil || m2.Last() != nil {
		t.Errorf("input error: %v, last %v", err, m2.Last())
	}
	m2.Inputs = func() (Inputs, error) { return goodInputs(), nil }
	r, err := m2.Report(context.Background())
	if err != nil || r == nil || m2.Last() != r {
		t.Fatalf("Report: %v, %v", r, err)
	}
	if again, _ := m2.Report(context.Background()); again != r {
		t.Error("Report ran again instead of returning the last report")
	}
	cut, stop := context.WithCancel(context.Background())
	stop()
	m3 := &Monitor{Checker: m.Checker, Inputs: m2.Inputs}
	if _, err := m3.RunOnce(cut); err == nil || m3.Last() != nil {
		t.Errorf("a cancelled run: %v, last %v", err, m3.Last())
	}
}
