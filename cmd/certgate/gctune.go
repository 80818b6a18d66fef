package main

import (
	"context"
	"log/slog"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// certgate allocates about 100 KB per message relayed (the DATA buffer, the
// prepared copy, DKIM canonicalization) and keeps little of it: at Go's
// default GOGC=100 the collector ran every few hundred messages and cost
// 15% of the CPU per message in the relay benchmark. The heap may grow to
// five times what is live (GOGC=400), but never beyond a soft limit of
// max(128 MiB, twice the live heap plus 32 MiB): a large backlog, whose
// queue entries are live, gets GOGC=100-like behaviour instead of an
// unbounded heap (100,000 queued messages keep about 80 MB live, and the
// process must stay under 300 MB), and the limit never falls so close to
// the live heap that the collector would run without pause.
//
// Under a flood of large messages the live heap is mostly mail held
// against the memory budget (smtp.memory_budget), and twice that let the
// process reach 700 MB on a 256 MiB budget. So the limit also stays
// within seven eighths of the budget, though never within limitSlack of
// the live heap: mail may hold only three quarters of the budget
// (config.SMTP.MailBudget), some of it in SQLite's C memory, and the rest
// is the collector's room to work during the flood.
//
// Operators keep Go's own knobs: GOGC or GOMEMLIMIT in the environment
// turn this off.
const (
	tunedGCPercent = 400
	minHeapLimit   = 128 << 20
	limitSlack     = 32 << 20
	gcTuneEvery    = 5 * time.Second
)

func tuneGC(ctx context.Context, log *slog.Logger, budget int64) {
	if os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		log.Info("gc: GOGC or GOMEMLIMIT set; leaving the collector as configured")
		return
	}
	debug.SetGCPercent(tunedGCPercent)
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	adjust := func() {
		metrics.Read(sample)
		if sample[0].Value.Kind() == metrics.KindUint64 {
			debug.SetMemoryLimit(heapLimit(sample[0].Value.Uint64(), budget))
		}
	}
	adjust()
	go func() {
		t := time.NewTicker(gcTuneEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				adjust()
			}
		}
	}()
}

// heapLimit is the soft memory limit for a live heap of live bytes under
// a memory budget of budget bytes (0 or less: none).
func heapLimit(live uint64, budget int64) int64 {
	l := int64(live)
	limit := 2*l + limitSlack
	if budget > 0 {
		limit = min(limit, budget-budget/8) // see config.SMTP.MailBudget
	}
	return max(minHeapLimit, l+limitSlack, limit)
}
