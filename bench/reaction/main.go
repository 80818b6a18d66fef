// Command reaction measures how soon a lane changes state after the reply
// that should change it (bench/lanes.sh runs it; issue 11: "a lane changes
// state within 1 s of the reply or placement that triggers it").
//
// It runs certgate's delivery queue against a simulated Outlook.com on
// loopback that answers 451 4.7.650 above a rate (sim.Distrust), sends a
// wave of bulk mail at it, and times, for each round, the moment the
// receiver first refused (as the receiver notes it, answering) against
// the moment the outlook lane reads "slowed" (the lane polled every
// 100 µs). Then it times the placement rule: seed copies' fates fed as the
// watcher feeds them, from the fate that crosses the threshold to the
// lane's change.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/delivery"
	"github.com/certgate/certgate/metrics"
	"github.com/certgate/certgate/policy"
	"github.com/certgate/certgate/sim"
	"github.com/certgate/certgate/store"
	"github.com/certgate/certgate/store/sqlite"
)

func main() {
	rounds := flag.Int("rounds", 20, "throttling rounds, each on a fresh queue")
	flag.Parse()
	if err := run(*rounds); err != nil {
		fmt.Fprintln(os.Stderr, "reaction:", err)
		os.Exit(1)
	}
}

func run(rounds int) error {
	var replyDelays, placementDelays []time.Duration
	for r := range rounds {
		d, err := replyRound(r)
		if err != nil {
			return fmt.Errorf("round %d: %w", r, err)
		}
		replyDelays = append(replyDelays, d)
		placementDelays = append(placementDelays, placementRound())
	}
	fmt.Printf("reply rule (451 4.7.650 at the receiver -> outlook lane slowed), %d rounds: %s\n", rounds, percentiles(replyDelays))
	fmt.Printf("placement rule (the seed copy that crosses the threshold -> lane slowed), %d rounds: %s\n", rounds, percentiles(placementDelays))
	worst := max(slices.Max(replyDelays), slices.Max(placementDelays))
	verdict := "PASS"
	if worst >= time.Second {
		verdict = "FAIL"
	}
	fmt.Printf("%s a lane changes state within 1 s of its trigger (worst %s)\n", verdict, worst)
	return nil
}

// replyRound sends bulk mail at a receiver that refuses above 5/s and
// returns the time from its first refusal to the lane's change.
func replyRound(round int) (time.Duration, error) {
	receiver, err := sim.Start(sim.Options{Name: "outlook", Domains: []string{"outlook.com"}, MXHost: "outlook-com.olc.protection.outlook.com",
		Distrust: &sim.Distrust{ThrottleAbove: 5, Window: time.Second, Calm: time.Hour}})
	if err != nil {
		return 0, err
	}
	defer receiver.Close()
	dir, err := os.MkdirTemp("", "reaction.")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "db"), sqlite.Options{})
	if err != nil {
		return 0, err
	}
	defer st.Close()
	host, portStr, _ := net.SplitHostPort(receiver.Addr())
	port, _ := strconv.Atoi(portStr)
	resolver := delivery.StaticResolver{MX: map[string][]string{"outlook.com": {"outlook-com.olc.protection.outlook.com"}},
		Hosts: map[string][]string{"outlook-com.olc.protection.outlook.com": {host}}}
	pol := policy.New(config.ResolveProviders([]config.Provider{{Name: "outlook", MaxMessageRate: config.Rate{Count: 50, Period: time.Second},
		ConnectionLimit: 4}}), config.Retry{Schedule: []config.Duration{config.Duration(time.Hour)}, MaxAge: config.Duration(24 * time.Hour)},
		policy.Options{})
	lane, _ := pol.ProviderLane("outlook")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	q := delivery.NewQueue(delivery.Options{Store: st, Policy: pol,
		Router: delivery.NewRouter([]delivery.Route{{Domains: []string{"*"}, MX: true, TLS: config.TLSNone}}, port, resolver, nil),
		Dialer: &delivery.Dialer{Hostname: "relay.ca.example", Resolver: resolver, ConnectTimeout: 5 * time.Second,
			CommandTimeout: 10 * time.Second, DataTimeout: 10 * time.Second},
		Hostname: "relay.ca.example", Metrics: metrics.New(), Log: log})
	if err := q.Start(context.Background()); err != nil {
		return 0, err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		q.Stop(ctx)
	}()
	now := time.Now()
	body := []byte("From: <certificados@ca.example>\r\nSubject: Certificado\r\n\r\nSu certificado.\r\n")
	m := store.Message{ID: store.NewMessageID(now), Tenant: "issuer", MailFrom: "certificados@ca.example",
		HeaderFrom: "certificados@ca.example", MessageID: fmt.Sprintf("%d@relay.ca.example", round), Class: "bulk",
		Size: int64(len(body)), ReceivedAt: now}
	var rcpts []store.NewRecipient
	for i := range 60 {
		rcpts = append(rcpts, store.NewCopy(fmt.Sprintf("cliente%02d@outlook.com", i), store.StateQueued, now))
	}
	ids, err := st.Enqueue(context.Background(), m, [][]byte{body}, rcpts)
	if err != nil {
		return 0, err
	}
	q.AddAccepted(store.QueuedCopies(m, [][]byte{body}, rcpts, ids))
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if lane.State().Name == "slowed" {
			seen := time.Now()
			// The receiver notes its first refusal as it answers it.
			_, first := receiver.Distrusted()
			return max(seen.Sub(first), 0), nil
		}
		time.Sleep(100 * time.Microsecond) // polling the lane is the measurement
	}
	return 0, fmt.Errorf("the lane never slowed (receiver throttled %d times)", receiver.Stats().Throttled)
}

// placementRound feeds seed copies' fates to a lane as the watcher does
// and times the one that crosses the threshold.
func placementRound() time.Duration {
	pol := policy.New(config.ResolveProviders(nil), config.DefaultRetry(), policy.Options{})
	lane, _ := pol.ProviderLane("yahoo")
	for range config.DefaultPlacementMinSample - 1 {
		lane.ObservePlacement(store.FolderJunk)
	}
	start := time.Now()
	lane.ObservePlacement(store.FolderJunk)
	for lane.State().Name != "slowed" {
	}
	return time.Since(start)
}

func percentiles(d []time.Duration) string {
	s := slices.Clone(d)
	slices.Sort(s)
	at := func(p int) string { return s[min(len(s)-1, len(s)*p/100)].Round(time.Microsecond).String() }
	return strings.Join([]string{"p50 " + at(50), "p90 " + at(90), "p99 " + at(99), "max " + at(100)}, "  ")
}
