package demo

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/certgate/certgate/sim"
)

// watchProgress prints a line a second until the wave is submitted and
// every expected copy (the DSN and the seed copies too) has landed, for 3
// minutes at most or until ctx ends. The pace is real time: it is what the
// user watches.
func watchProgress(ctx context.Context, out printer, started time.Time, submitted <-chan error, sub *submitter, w wave, sims []*sim.Provider, gw Gateway) error {
	expected := expectedCopies(w)
	seeds := expectedSeedCopies(w)
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
		delivered, landed := deliveredSoFar(sims, expected, seeds)
		queued := gw.Queued()
		out("  [%5.1fs] accepted %3d/%d  delivered: %s  queued: %d", time.Since(started).Seconds(), sub.count(), len(w.all()), delivered, queued)
		// A receiver stores a copy a moment before certgate records the
		// delivery: the books are closed once the queue is empty too.
		if (allSubmitted && landed && queued == 0) || time.Now().After(deadline) || ctx.Err() != nil {
			return nil
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// expectedCopies counts the customer copies each provider should store:
// one per recipient but the refused one, plus its DSN at the issuer's MX.
func expectedCopies(w wave) map[string]int {
	expected := map[string]int{}
	for _, m := range w.all() {
		for _, r := range m.rcpts {
			if r == bounceAddress {
				expected["issuer"]++ // its DSN, at the sender's MX
			} else {
				expected[providerOf(r)]++
			}
		}
	}
	return expected
}

// expectedSeedCopies counts the seed copies certgate should make of the
// wave: one per seed mailbox for every seeded bulk message.
func expectedSeedCopies(w wave) int {
	return seedings(len(w.bulk)) * len(seedMailboxes())
}

// deliveredSoFar reads "google 24/122  microsoft 27/122 ... seed copies
// 3/30" off the providers, and whether each has all it expects. Seed
// copies are counted apart: they are not customers' deliveries.
func deliveredSoFar(sims []*sim.Provider, expected map[string]int, seeds int) (string, bool) {
	landed := true
	var parts []string
	seen := 0
	for _, s := range sims {
		n := 0
		for _, m := range s.Messages() {
			if isSeed(m.To) {
				seen++
			} else {
				n++
			}
		}
		parts = append(parts, fmt.Sprintf("%s %d/%d", s.Name(), n, expected[s.Name()]))
		if n < expected[s.Name()] {
			landed = false
		}
	}
	if seeds > 0 || seen > 0 {
		parts = append(parts, fmt.Sprintf("seed copies %d/%d", seen, seeds))
	}
	return strings.Join(parts, "  "), landed && seen >= seeds
}
