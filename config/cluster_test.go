package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// clusterYAML is a valid node of a cluster: PostgreSQL, the shared gate
// and console keys, and a Redis.
const clusterYAML = `storage: {driver: postgres, dsn_env: CERTGATE_PG_DSN}
gate: {form_key_file: form.key}
console: {session_key_file: form.key}
`

// TestCluster: cluster's defaults, what a cluster needs besides, and what
// is refused, with the key.
func TestCluster(t *testing.T) {
	f := newFixture(t)
	if err := os.WriteFile(filepath.Join(f.dir, "form.key"), []byte(strings.Repeat("k", 64)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.dir, "redis.pass"), []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := mustParse(t, f, minimalYAML).Cluster; got != nil {
		t.Errorf("cluster left out = %+v, want nil (alone)", got)
	}
	host, _ := os.Hostname()
	c := mustParse(t, f, minimalYAML+clusterYAML+"cluster: {redis: {addr: \"r:6379\"}}\n").Cluster
	if c == nil || c.Node != host || c.Lease.D() != 30*time.Second || c.Redis.Addr != "r:6379" {
		t.Errorf("cluster without node and lease = %+v, want the host name, a 30s lease", c)
	}
	c = mustParse(t, f, minimalYAML+clusterYAML+"cluster: {node: n-1, lease: 10s, redis: {addr: \"127.0.0.1:6379\", password_file: redis.pass}}\n").Cluster
	if c.Node != "n-1" || c.Lease.D() != 10*time.Second || c.Redis.Addr != "127.0.0.1:6379" || c.Redis.PasswordFile != filepath.Join(f.dir, "redis.pass") {
		t.Errorf("cluster = %+v (redis %+v)", c, c.Redis)
	}
	if pw, err := c.Redis.Password(); err != nil || pw != "s3cret" {
		t.Errorf("Password() = %q, %v", pw, err)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"gate: {form_key_file: form.key}\ncluster: {}\n", "cluster: several nodes share one queue in PostgreSQL: set storage.driver: postgres"},
		{"storage: {driver: postgres, dsn_env: X}\ncluster: {}\n", "gate.form_key_file: required with cluster"},
		// Whatever else is wrong, a cluster without the console's key says so.
		{"gate: {form_key_file: form.key}\ncluster: {}\n", "console.session_key_file: required with cluster: every node must open the console sessions that another started"},
		{clusterYAML + "cluster: {}\n", "cluster.redis: required"},
		{clusterYAML + "cluster: {node: \"a b\"}\n", `cluster.node: "a b" is not a node name`},
		{clusterYAML + "cluster: {lease: 1s}\n", "cluster.lease: must be between 3s and 10m, not 1s"},
		{clusterYAML + "cluster: {redis: {addr: redis}}\n", `cluster.redis.addr: "redis" is not host:port`},
		{clusterYAML + "cluster: {redis: {addr: \"r:6379\", ca_file: redis.pass}}\n", "cluster.redis.ca_file: only with tls: true"},
		{clusterYAML + "cluster: {redis: {addr: \"r:6379\", password_file: nope}}\n", "cluster.redis.password_file: file"},
	} {
		_, err := Parse(f.path(), []byte(f.expand(minimalYAML+tc.yaml)))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.yaml, err, tc.want)
		}
	}
}

// TestClusterNeedsConsoleSessionKey: a cluster without the console's
// shared key is refused for it, whatever else is wrong, and not with it.
// Apart from TestCluster, whose valid nodes need a build with PostgreSQL.
func TestClusterNeedsConsoleSessionKey(t *testing.T) {
	f := newFixture(t)
	if err := os.WriteFile(filepath.Join(f.dir, "form.key"), []byte(strings.Repeat("k", 64)), 0o600); err != nil {
		t.Fatal(err)
	}
	const want = "console.session_key_file: required with cluster"
	_, err := Parse(f.path(), []byte(f.expand(minimalYAML+"gate: {form_key_file: form.key}\ncluster: {}\n")))
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("cluster without console.session_key_file: %v, want %q", err, want)
	}
	_, err = Parse(f.path(), []byte(f.expand(minimalYAML+clusterYAML+"cluster: {}\n")))
	if err == nil || strings.Contains(err.Error(), "console.session_key_file") {
		t.Errorf("cluster with console.session_key_file: %v, want refused (no redis) but not for the key", err)
	}
}
