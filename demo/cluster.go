package demo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/internal/testpg"
	"github.com/certgate/certgate/internal/testredis"
	"github.com/certgate/certgate/sim"
)

// clusterMails is how many mails the cluster step sends.
const clusterMails = 200

// clusterPrefix starts the cluster step's recipients at the google MX.
const clusterPrefix = "cluster-"

// clusterStep plays issue 14's story where PostgreSQL and Redis are
// installed: two certgate nodes on one PostgreSQL and one Redis (private
// instances in the demo's directory) take a wave half each; one node stops
// in the middle and hands what it holds to the other, which delivers it;
// every mail arrives once, at the gmail lane's rate shared through Redis.
// Where they are missing it says how to see it.
func clusterStep(ctx context.Context, out printer, start Starter, base *config.Config, dir, password string, google *sim.Provider) error {
	out("\nthe cluster: two certgate nodes sharing one queue in PostgreSQL and their limits in Redis")
	if why := clusterMissing(); why != "" {
		out("  skipped: %s; make check installs both", why)
		return nil
	}
	cdir := filepath.Join(dir, "cluster")
	if err := os.MkdirAll(cdir, 0o700); err != nil {
		return err
	}
	pg, err := testpg.StartIn(cdir)
	if err != nil {
		return fmt.Errorf("the cluster's PostgreSQL: %w", err)
	}
	defer pg.Stop()
	rdir := filepath.Join(dir, "cluster", "redis")
	if err := os.MkdirAll(rdir, 0o700); err != nil {
		return err
	}
	rds, err := testredis.Start(rdir)
	if err != nil {
		return fmt.Errorf("the cluster's Redis: %w", err)
	}
	defer rds.Stop()
	secrets := map[string]string{"pg.dsn": pg.DSN("postgres"), "form.key": randomKey(), "session.key": randomKey()}
	for name, v := range secrets {
		if err := os.WriteFile(filepath.Join(dir, "cluster", name), []byte(v+"\n"), 0o600); err != nil {
			return err
		}
	}
	var nodes []Gateway
	for _, name := range []string{"node-1", "node-2"} {
		gw, err := start(ctx, nodeConfig(base, filepath.Join(dir, "cluster"), name, rds.Addr), newLogger(Options{}))
		if err != nil {
			return fmt.Errorf("starting %s: %w", name, err)
		}
		defer stopGateway(gw) // node-1's second stop does nothing
		nodes = append(nodes, gw)
	}
	out("  PostgreSQL on %s, Redis on %s; node-1 SMTP %s, node-2 SMTP %s", pg.Addr, rds.Addr, nodes[0].SMTPAddr(), nodes[1].SMTPAddr())

	w, err := newWave(clusterMails, 0)
	if err != nil {
		return err
	}
	halves := [2][]message{}
	for i, m := range w.bulk {
		m.rcpts = []string{fmt.Sprintf("%s%03d@gmail.com", clusterPrefix, i)}
		halves[i%2] = append(halves[i%2], m)
	}
	before := len(google.Messages())
	started := time.Now()
	subs := make(chan error, 2)
	for i, h := range halves {
		go func() { subs <- newSubmitter(nodes[i].SMTPAddr(), password).run(ctx, h, 4, 0) }()
	}
	for range halves {
		if err := <-subs; err != nil {
			return fmt.Errorf("submitting to the cluster: %w", err)
		}
	}
	out("  %d certificate mails to gmail.com accepted, half by each node, in %v", clusterMails, time.Since(started).Round(time.Millisecond))

	// node-1 stops a third of the way through: it hands what it holds
	// over as it stops, and node-2 claims it at its next look.
	wait, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := google.WaitFor(wait, before+clusterMails/3); err != nil {
		return fmt.Errorf("the cluster's first copies: %w", err)
	}
	held := nodes[0].Queued()
	stopGateway(nodes[0])
	stopped := time.Now()
	out("  node-1 stopped with %d copies still queued, and handed them to node-2", held)
	if err := google.WaitFor(wait, before+clusterMails); err != nil {
		return fmt.Errorf("the cluster's last copies: %w", err)
	}
	copies, first, last := map[string]int{}, time.Time{}, time.Time{}
	for _, m := range google.Messages()[before:] {
		if !strings.HasPrefix(m.To, clusterPrefix) {
			continue
		}
		copies[m.To]++
		if first.IsZero() || m.Received.Before(first) {
			first = m.Received
		}
		if m.Received.After(last) {
			last = m.Received
		}
	}
	once := 0
	for _, n := range copies {
		if n == 1 {
			once++
		}
	}
	rate := float64(len(copies)-1) / last.Sub(first).Minutes()
	out("  %d of %d delivered, %d of them exactly once; the last %v after node-1 stopped", len(copies), clusterMails, once, last.Sub(stopped).Round(time.Millisecond))
	out("  the gmail lane held across both nodes: %.0f/min against its 1800/min (one rate in Redis, not one per node)", rate)
	out("  more: docs/cluster.md (a node killed, Redis lost), certgate cluster status --config FILE")
	return nil
}

// clusterMissing says why the cluster step cannot run here ("" when it can).
func clusterMissing() string {
	if why := testpg.Missing(); why != "" {
		return why
	}
	return testredis.Missing()
}

// nodeConfig is the demo's configuration as one node of the cluster sees
// it: PostgreSQL, the cluster's Redis, the shared keys; no seeds, webhooks
// or DNS check (the single node of the demo runs those).
func nodeConfig(base *config.Config, dir, node, redisAddr string) *config.Config {
	c := *base
	c.DataDir = filepath.Join(dir, node)
	c.Storage = config.Storage{Driver: "postgres", DSNFile: filepath.Join(dir, "pg.dsn")}
	c.Cluster = &config.Cluster{Node: node, Lease: config.Duration(3 * time.Second), Redis: &config.Redis{Addr: redisAddr}}
	c.Gate.FormKeyFile = filepath.Join(dir, "form.key")
	c.Console.SessionKeyFile = filepath.Join(dir, "session.key")
	c.SMTP.Listen = []string{"127.0.0.1:0"}
	c.HTTP.Listen = "127.0.0.1:0"
	c.HTTP.GateListen = ""
	c.Seeds = config.Seeds{}
	c.Webhooks = nil
	c.DNSCheck.Interval = 0
	return &c
}

func randomKey() string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}
