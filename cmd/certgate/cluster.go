package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/certgate/certgate/clock"
	"github.com/certgate/certgate/cluster"
	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/policy"
	"github.com/certgate/certgate/policy/redislimit"
	"github.com/certgate/certgate/webhook"
)

// clusterNode is this daemon's part in a cluster (cluster: in the
// configuration): its membership, and the limits it shares through Redis.
type clusterNode struct {
	member   *cluster.Member
	rdb      *redis.Client
	limits   *redislimit.Limiter
	failover *redislimit.Failover
	claimed  atomic.Uint64 // copies claimed from lapsed nodes
}

// buildClusterLimits connects the limiter the nodes share, before the
// policy that uses it is built; nil when the node is alone. Redis is
// only dialled on use: a node starts while Redis is down, on its share.
func (d *daemon) buildClusterLimits() (policy.Limiter, error) {
	c := d.cfg.Cluster
	if c == nil {
		return nil, nil
	}
	opts, err := redisOptions(c.Redis)
	if err != nil {
		return nil, err
	}
	n := &clusterNode{rdb: redis.NewClient(opts)}
	// A dead node's connection slots come back when its lease would.
	n.limits = redislimit.New(n.rdb, redislimit.Options{Holder: c.Node + ":" + fmt.Sprint(os.Getpid()), Lease: c.Lease.D(),
		OnRefreshError: func(err error) { d.log.Warn("cluster: renewing connection slots in Redis", "err", err) }})
	n.failover = redislimit.NewFailover(n.limits, redislimit.FailoverOptions{
		LiveNodes: n.liveNodes,
		Logger:    d.log,
	})
	d.metrics.Registry.MustRegister(clusterCollector{n})
	d.cluster = n
	return n.failover, nil
}

// liveNodes is the live nodes at the last heartbeat; 1 before the
// membership exists.
func (n *clusterNode) liveNodes() int {
	if n.member == nil {
		return 1
	}
	return n.member.LiveNodes()
}

// clusterCollector exports the node's part in the cluster at each scrape.
type clusterCollector struct{ n *clusterNode }

var (
	clusterLiveDesc = prometheus.NewDesc("certgate_cluster_live_nodes",
		"Nodes of the cluster alive at this node's last heartbeat, this one included.", nil, nil)
	clusterClaimedDesc = prometheus.NewDesc("certgate_cluster_claimed_total",
		"Queued copies this node claimed from nodes whose heartbeat lapsed (or from none).", nil, nil)
	clusterDegradedDesc = prometheus.NewDesc("certgate_cluster_limiter_degraded",
		"1 while Redis is unreachable and this node keeps to its share of each limit (limit / live nodes).", nil, nil)
	clusterFallbacksDesc = prometheus.NewDesc("certgate_cluster_limiter_fallbacks_total",
		"Times this node lost Redis and fell back to its share of each limit.", nil, nil)
)

func (clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- clusterLiveDesc
	ch <- clusterClaimedDesc
	ch <- clusterDegradedDesc
	ch <- clusterFallbacksDesc
}

func (c clusterCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(clusterLiveDesc, prometheus.GaugeValue, float64(c.n.liveNodes()))
	ch <- prometheus.MustNewConstMetric(clusterClaimedDesc, prometheus.CounterValue, float64(c.n.claimed.Load()))
	ch <- prometheus.MustNewConstMetric(clusterDegradedDesc, prometheus.GaugeValue, b2f(c.n.failover.Degraded()))
	ch <- prometheus.MustNewConstMetric(clusterFallbacksDesc, prometheus.CounterValue, float64(c.n.failover.Fallbacks()))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// redisOptions are the client's options from cluster.redis. Timeouts are
// short: a call that waits on a Redis that is gone holds a delivery up,
// and the Failover falls back on the error.
func redisOptions(r *config.Redis) (*redis.Options, error) {
	pw, err := r.Password()
	if err != nil {
		return nil, fmt.Errorf("cluster.redis.password_file: %w", err)
	}
	o := &redis.Options{Addr: r.Addr, Password: pw, DialTimeout: time.Second, ReadTimeout: time.Second,
		WriteTimeout: time.Second, MaxRetries: -1}
	if r.TLS {
		host := r.Addr
		if h, _, err := net.SplitHostPort(r.Addr); err == nil {
			host = h
		}
		o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
		if r.CAFile != "" {
			pem, err := os.ReadFile(r.CAFile)
			if err != nil {
				return nil, fmt.Errorf("cluster.redis.ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, errors.New("cluster.redis.ca_file: no PEM certificate in it")
			}
			o.TLSConfig.RootCAs = pool
		}
	}
	return o, nil
}

// buildMember makes this node a member, once the store and queue exist.
func (d *daemon) buildMember() error {
	if d.cluster == nil {
		return nil
	}
	st, ok := d.store.(cluster.Store)
	if !ok {
		return errors.New("cluster: the store is not one that nodes share (storage.driver: postgres)")
	}
	d.cluster.member = cluster.New(cluster.Options{Store: st, Queue: d.queue, Lease: d.cfg.Cluster.Lease.D(), Log: d.log,
		OnClaim: func(n int) { d.cluster.claimed.Add(uint64(n)) }})
	if d.lanes != nil {
		d.lanes.followCluster(d.queue.Wake)
	}
	return nil
}

// join makes the node's first heartbeat, before the queue loads the work
// it holds.
func (d *daemon) join(ctx context.Context) error {
	if d.cluster == nil {
		return nil
	}
	if err := d.cluster.member.Join(ctx); err != nil {
		return err
	}
	d.cluster.member.Start(ctx)
	return nil
}

// startClusterJobs starts the heartbeat and the claiming, and the jobs one
// node of the cluster runs at a time: the webhook dispatcher, retention's
// sweeper, and each seed mailbox's watcher. Alone, the node runs them
// itself.
func (d *daemon) startClusterJobs(ctx context.Context) error {
	if d.cluster == nil {
		if err := d.hooks.Start(ctx); err != nil {
			return err
		}
		d.sweeper.Start()
		d.startWatcher()
		return nil
	}
	m := d.cluster.member
	m.StartClaims()
	m.Exclusive("webhooks", func(ctx context.Context) {
		// A dispatcher of its own each time the lease is taken: one cut
		// short at a deadline may still be winding down.
		hooks := webhook.New(d.store, d.webhookEndpoints, webhook.Options{}, d.log)
		// This node holds the lease, so no other sends: keep trying.
		for err := hooks.Start(ctx); err != nil; err = hooks.Start(ctx) {
			d.log.Error("webhooks not started; trying again in 5s", "err", err)
			if !clock.Sleep(clock.Real, 5*time.Second, ctx.Done()) {
				return
			}
		}
		<-ctx.Done()
		stop, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := hooks.Stop(stop); err != nil {
			d.log.Warn("webhook notices still in flight when this node let the dispatcher go; they will be sent again", "err", err)
		}
	})
	// Retention's batches of deletes on one node: several would only
	// contend for the same rows.
	m.Exclusive("retention", func(ctx context.Context) {
		sw := d.newSweeper()
		sw.Start()
		<-ctx.Done()
		sw.Stop()
	})
	if d.watcher != nil {
		for _, s := range d.cfg.Seeds.Mailboxes {
			m.Exclusive("seed:"+s.Name, func(ctx context.Context) {
				d.watcher.RunSeed(ctx, s.Name)
				// Another node watches it now: this one says nothing of it.
				d.metrics.SeedMailboxUp.DeletePartialMatch(prometheus.Labels{"seed": s.Name})
			})
		}
	}
	return nil
}

// leaveCluster ends the membership at shutdown. When the queue stopped
// cleanly, the node hands its queued work over at once; otherwise the
// others wait out its lease, as they would for a dead node.
func (d *daemon) leaveCluster(ctx context.Context, queueStopped bool) {
	if d.cluster == nil {
		return
	}
	if d.cluster.member != nil {
		d.cluster.member.Stop()
		if queueStopped {
			if err := d.cluster.member.Leave(ctx); err != nil {
				d.log.Warn("cluster: could not hand this node's work over; the others take it when its lease ends", "err", err)
			}
		}
	}
	if err := d.cluster.limits.Close(ctx); err != nil {
		d.log.Warn("cluster: giving back connection slots in Redis", "err", err)
	}
	d.cluster.rdb.Close()
}
