package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/store"
	"github.com/certgate/certgate/store/postgres"
)

// cmdCluster runs "certgate cluster status": the nodes of the cluster as
// their heartbeats in PostgreSQL describe them, the work each holds, and
// which node runs each one-node job. It reads the store directly, so it
// answers while nodes are down.
func cmdCluster(args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "status" {
		if len(args) > 0 && isHelp(args[0]) {
			fmt.Fprint(stdout, commandUsage("cluster"))
			return nil
		}
		return usageError{errors.New("usage: certgate cluster status [--config FILE]")}
	}
	fs := newFlags("cluster status", stdout)
	path := fs.String("config", "/etc/certgate/certgate.yaml", "configuration file (its storage names the PostgreSQL database)")
	if err := fs.Parse(args[1:]); err != nil {
		return usageError{err}
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	if cfg.Storage.Driver != "postgres" {
		return errors.New("this node stores in SQLite: it is alone, not in a cluster")
	}
	dsn, err := cfg.Storage.DSN()
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := postgres.Open(ctx, dsn, postgres.Options{MaxConns: 2})
	if err != nil {
		return fmt.Errorf("opening the PostgreSQL store: %w", postgres.RedactDSN(err, dsn))
	}
	defer st.Close()
	nodes, err := st.Nodes(ctx)
	if err != nil {
		return err
	}
	leases, err := st.Leases(ctx)
	if err != nil {
		return err
	}
	printCluster(stdout, nodes, leases, time.Now())
	return nil
}

// printCluster writes the nodes and the leases as two tables.
func printCluster(w io.Writer, nodes []store.Node, leases []store.Lease, now time.Time) {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATE\tSTARTED\tHEARTBEAT UNTIL\tQUEUED")
	for _, n := range nodes {
		state := "alive"
		if n.AliveUntil.Before(now) {
			state = "lapsed"
			if n.AliveUntil.IsZero() {
				state = "left"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", n.Name, state, n.StartedAt.UTC().Format(time.RFC3339),
			untilText(n.AliveUntil, now), n.Queued)
	}
	if len(nodes) == 0 {
		fmt.Fprintln(tw, "(no node has joined)\t\t\t\t")
	}
	fmt.Fprintln(tw, "\t\t\t\t")
	fmt.Fprintln(tw, "JOB\tNODE\tLEASE UNTIL\t\t")
	for _, l := range leases {
		fmt.Fprintf(tw, "%s\t%s\t%s\t\t\n", l.Name, l.Node, untilText(l.Until, now))
	}
	tw.Flush()
}

func untilText(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := t.Sub(now).Round(time.Second)
	if d < 0 {
		return t.UTC().Format(time.RFC3339) + " (" + (-d).String() + " ago)"
	}
	return t.UTC().Format(time.RFC3339) + " (in " + d.String() + ")"
}
