package config

import (
	"os"
	"regexp"
	"time"
)

// Cluster makes this node one of several that share a PostgreSQL store
// and behave as one gateway (docs/cluster.md). Without it, a node works
// alone, on SQLite or PostgreSQL.
type Cluster struct {
	// Node names this node among the others; unique. Default: the host
	// name.
	Node string `yaml:"node"`
	// Lease is how long claimed work, and a one-node job, stays with a
	// node that went silent before the others take it.
	Lease Duration `yaml:"lease"`
	// Redis holds the limits the nodes share; while it is unreachable,
	// each node keeps to its share of every limit (the limit divided by
	// the live nodes).
	Redis *Redis `yaml:"redis"`
}

// Redis is the server of a cluster's shared limits.
type Redis struct {
	Addr         string `yaml:"addr"` // host:port
	PasswordFile string `yaml:"password_file"`
	TLS          bool   `yaml:"tls"`
	// CAFile verifies the server's certificate with TLS (default: the
	// system's roots).
	CAFile string `yaml:"ca_file"`
}

// Password reads the Redis password ("" without a password_file).
func (r *Redis) Password() (string, error) {
	if r.PasswordFile == "" {
		return "", nil
	}
	return ReadSecret(r.PasswordFile, "")
}

// DefaultClusterLease is cluster.lease's default: long enough that a
// pause of the process or of PostgreSQL does not hand work over, short
// enough that a dead node's mail waits little.
const DefaultClusterLease = Duration(30 * time.Second)

// nodeName is a node's name: it appears in logs, metrics and the
// database.
var nodeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

func (c *Cluster) applyDefaults(f filler) {
	if f.unset("cluster.node", c.Node == "") {
		if h, err := os.Hostname(); err == nil {
			c.Node = h
		}
	}
	fill(f, "cluster.lease", &c.Lease, DefaultClusterLease)
}

// cluster checks the cluster's keys, and what several nodes need alike:
// PostgreSQL, and the gate's form key and the console's session key from
// files (a key each node made up would refuse the forms another node
// served, and sign out whoever the load balancer sends elsewhere).
func (v *validator) cluster(c *Config) {
	cl := c.Cluster
	if cl == nil {
		return
	}
	if c.Storage.Driver != "postgres" {
		v.add("cluster", "several nodes share one queue in PostgreSQL: set storage.driver: postgres")
	}
	if !nodeName.MatchString(cl.Node) {
		v.add("cluster.node", "%q is not a node name (letters, digits, '.', '_' and '-', at most 63, starting with a letter or digit)", cl.Node)
	}
	if d := cl.Lease.D(); d < 3*time.Second || d > 10*time.Minute {
		v.add("cluster.lease", "must be between 3s and 10m, not %v", d)
	}
	if c.Gate.FormKeyFile == "" {
		v.add("gate.form_key_file", "required with cluster: every node must accept the gate's forms that another served")
	}
	if c.Console.SessionKeyFile == "" {
		v.add("console.session_key_file", "required with cluster: every node must open the console sessions that another started")
	}
	if cl.Redis == nil {
		v.add("cluster.redis", "required: the nodes share their limits (a provider's rate, its connections) in Redis")
	}
	if r := cl.Redis; r != nil {
		v.hostPort("cluster.redis.addr", r.Addr, true)
		if r.PasswordFile != "" && v.file("cluster.redis.password_file", r.PasswordFile) {
			v.secretFile("cluster.redis.password_file", r.PasswordFile, "")
		}
		if r.CAFile != "" {
			if !r.TLS {
				v.add("cluster.redis.ca_file", "only with tls: true")
			}
			v.file("cluster.redis.ca_file", r.CAFile)
		}
	}
}
