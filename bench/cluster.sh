#!/usr/bin/env bash
# bench/cluster.sh: SQLite on one node against PostgreSQL with 1, 2 and 3
# nodes on this machine (issue 14: "messages per second, accept p99, CPU per
# message, PostgreSQL's share ... target for one node on PostgreSQL: at least
# 50% of SQLite's rate on the same machine").
#
#   bench/clusterbench --SMTP, round-robin--> certgate node(s) --SMTP--> bench/sink
#                                             |  store: SQLite spool, or one
#                                             |  PostgreSQL (fsync on)
#                                             '- limits: one Redis (clusters)
#
# It starts a private PostgreSQL (initdb in the work directory, as the
# postgres user when run as root, listening on a free 127.0.0.1 port and on a
# unix socket in the work directory) and a private redis-server (no
# persistence), then runs four configurations, each on a database and spools
# of its own: (a) SQLite, one node; (b) PostgreSQL, one node (no cluster
# section); (c) a PostgreSQL cluster of 2 nodes; (d) of 3 nodes, sharing
# Redis. Unlike the tests' PostgreSQL (internal/testpg: fsync off), this one
# keeps fsync, synchronous_commit and full_page_writes on: the store's
# contract is that a commit is durable before the 250, as the SQLite spool
# fsyncs, so the comparison is like for like.
#
# Every node signs (DKIM, DKIM_ALGORITHM) and routes everything to the sink,
# one provider without a rate limit (as bench/relay.sh has it), so the store
# is what is measured. bench/clusterbench submits COUNT copies of a sample
# certificate mail (MSG, from sim/mail) over CONCURRENCY SMTP sessions spread
# round-robin over the nodes' listeners, one recipient each, and times each
# accept (end of DATA to 250) on the client side. The end-to-end rate is the
# copies over the time from the first submission to the last copy at the
# sink; CPU per message is from /proc (utime+stime) over that span: every
# certgate node; PostgreSQL (the postmaster, its children, and what its
# reaped children used) and its share of certgate+PostgreSQL; Redis. The sink
# counts the copies per recipient (exactly once) and verifies every DKIM
# signature once the load is over.
#
# It prints a table and the PASS/FAIL line for PostgreSQL on one node at
# TARGET percent of SQLite's rate, and exits 0 when every message reached the
# sink exactly once with a valid signature in every configuration, whatever
# the ratio.
#
# Usage: bench/cluster.sh [--count N] [--concurrency C] [--configs LIST]
#                         [--timeout SECONDS] [--keep]
# or through the environment:
#   COUNT=4000          messages per configuration
#   CONCURRENCY=16      SMTP sessions, spread round-robin over the nodes
#   CONFIGS="sqlite pg1 pg2 pg3"   which configurations, in this order
#   MSG=sim/mail/03-fr-attachment-b64-text.eml   the message (CRLF lines)
#   DKIM_ALGORITHM=rsa2048   or ed25519
#   LEASE=30s           cluster.lease
#   TARGET=50           PostgreSQL one node's rate as a percentage of SQLite's, to PASS
#   LOG_LEVEL=info      certgate's log level (it logs every accept and delivery)
#   WAITS=1             sample pg_stat_activity every 100 ms during the load (one
#                       psql session) and print what the backends were doing:
#                       running, waiting (Lock:advisory, IO:WALSync...), or
#                       idle in a transaction (waiting for certgate's next statement)
#   TIMEOUT=600         bound on each configuration's load and drain, in seconds
#   CERTGATE_BIN=       use this certgate binary instead of building one
#   KEEP=0              1: keep the work directory (configs, logs, PostgreSQL's log)
#
# Needs PostgreSQL's server (apt-get install postgresql; Debian keeps it in
# /usr/lib/postgresql/*/bin) and redis-server. Nothing listens beyond
# 127.0.0.1. Every process is started here and ended by its pid; every wait
# is bounded.
set -Eeuo pipefail

BENCH=cluster.sh
COUNT=${COUNT:-4000}
CONCURRENCY=${CONCURRENCY:-16}
CONFIGS=${CONFIGS:-sqlite pg1 pg2 pg3}
DKIM_ALGORITHM=${DKIM_ALGORITHM:-rsa2048}
LEASE=${LEASE:-30s}
TARGET=${TARGET:-50}
LOG_LEVEL=${LOG_LEVEL:-info}
WAITS=${WAITS:-1}
TIMEOUT=${TIMEOUT:-600}
CERTGATE_BIN=${CERTGATE_BIN:-}
KEEP=${KEEP:-0}

usage() { sed -n '2,/^set -E/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
	case $1 in
	--count) COUNT=$2; shift 2 ;;
	--concurrency) CONCURRENCY=$2; shift 2 ;;
	--configs) CONFIGS=$2; shift 2 ;;
	--timeout) TIMEOUT=$2; shift 2 ;;
	--keep) KEEP=1; shift ;;
	-h | --help) usage 0 ;;
	*) echo "cluster.sh: unknown argument $1" >&2; usage 2 >&2 ;;
	esac
done
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
whole COUNT CONCURRENCY TARGET TIMEOUT
flag KEEP WAITS
if [ "$COUNT" -lt 1 ] || [ "$CONCURRENCY" -lt 1 ] || [ "$TIMEOUT" -lt 10 ]; then
	echo "cluster.sh: COUNT and CONCURRENCY >= 1, TIMEOUT >= 10" >&2
	exit 2
fi
for c in $CONFIGS; do
	case $c in sqlite | pg1 | pg2 | pg3) ;; *) echo "cluster.sh: unknown configuration '$c' (sqlite pg1 pg2 pg3)" >&2; exit 2 ;; esac
done
MSG=${MSG:-$BENCH_REPO/sim/mail/03-fr-attachment-b64-text.eml}
[ -s "$MSG" ] || die "no message file $MSG"
for t in curl go awk redis-server; do command -v "$t" >/dev/null || die "$t is required"; done
PG_BIN=$(find /usr/lib/postgresql -maxdepth 3 -name initdb -path '*/bin/*' 2>/dev/null | sort -V | tail -1)
PG_BIN=${PG_BIN%/initdb}
if [ -z "$PG_BIN" ] && command -v initdb >/dev/null; then PG_BIN=$(dirname "$(command -v initdb)"); fi
if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/postgres" ]; then die "PostgreSQL's server is missing (apt-get install postgresql)"; fi

bench_setup
# build_tools signs for ca.example; the sample mail is from certs.example.
(cd "$BENCH_REPO" && timeout 600 go build -buildvcs=false -o "$WORK/sink" ./bench/sink &&
	timeout 600 go build -buildvcs=false -o "$WORK/clusterbench" ./bench/clusterbench) || die "building the bench tools"
if [ -n "$CERTGATE_BIN" ]; then
	cp "$CERTGATE_BIN" "$WORK/certgate" || die "copying $CERTGATE_BIN"
else
	(cd "$BENCH_REPO" && timeout 600 go build -buildvcs=false -o "$WORK/certgate" ./cmd/certgate) || die "building certgate"
fi
CG=$WORK/certgate
FROM=$(sed -n 's/^From:.*<\([^>]*\)>.*/\1/p' "$MSG" | tr -d '\r' | head -1)
DOMAIN=${FROM#*@}
if [ -z "$FROM" ] || [ "$DOMAIN" = "$FROM" ]; then die "$MSG: no From: <address> field"; fi
mkdir -p "$WORK/dkim"
"$CG" dkim keygen --domain "$DOMAIN" --selector bench --algorithm "$DKIM_ALGORITHM" --out "$WORK/dkim" >/dev/null || die "certgate dkim keygen"
KEY=$WORK/dkim/bench._domainkey.$DOMAIN.pem
TXT=$WORK/dkim/bench._domainkey.$DOMAIN.txt
if [ ! -s "$KEY" ] || [ ! -s "$TXT" ]; then die "certgate dkim keygen wrote no key"; fi
(umask 077 && od -An -tx1 -N24 /dev/urandom | tr -d ' \n' >"$WORK/admin-token" &&
	od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$WORK/form.key" &&
	od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$WORK/session.key")

# --- PostgreSQL -----------------------------------------------------------------
# pg_run PROGRAM ARGS...: one of PostgreSQL's programs, as the cluster's owner
# (it refuses to run as root): setpriv execs, so a pid is the program's own.
PG_DIR=$WORK/pg
PG_AS=()
mkdir -p "$PG_DIR"
if [ "$(id -u)" = 0 ]; then
	id postgres >/dev/null 2>&1 || die "running as root needs a postgres user (Debian's postgresql package makes it)"
	PG_AS=(setpriv --reuid postgres --regid postgres --init-groups --)
	chown postgres: "$PG_DIR"
	chmod o+x "$WORK" # the owner must pass through to its directory
	d=$(dirname "$WORK")
	while [ "$d" != / ]; do
		[ "$(($(stat -c %#a "$d") & 1))" = 1 ] || die "$d is not passable by others; set TMPDIR elsewhere"
		d=$(dirname "$d")
	done
fi
pg_run() { (cd "$PG_DIR" && exec "${PG_AS[@]}" env LC_ALL=C "$PG_BIN/$1" "${@:2}"); }

log "initdb in $PG_DIR ($PG_BIN)"
pg_run initdb -D "$PG_DIR/data" -U postgres --auth=trust --no-locale -E UTF8 --no-instructions >"$WORK/initdb.log" 2>&1 ||
	die "initdb: $(tail -5 "$WORK/initdb.log")"
start_postgres() {
	local attempt i
	for attempt in 1 2 3 4; do
		pick_port PG_PORT
		# Durable commits, as the store promises: fsync, synchronous_commit
		# and full_page_writes stay at PostgreSQL's defaults (on).
		# A subshell that execs (as pg_run does): $! is the postmaster.
		(cd "$PG_DIR" && exec "${PG_AS[@]}" env LC_ALL=C "$PG_BIN/postgres" -D "$PG_DIR/data" \
			-c listen_addresses=127.0.0.1 -c port="$PG_PORT" -c unix_socket_directories="$PG_DIR" \
			-c max_connections=300 -c lc_messages=C -c logging_collector=off) >>"$WORK/postgres.log" 2>&1 &
		PG_PID=$!
		track "$PG_PID"
		for ((i = 0; i < 600; i++)); do
			pg_run pg_isready -q -h "$PG_DIR" -p "$PG_PORT" && return 0
			kill -0 "$PG_PID" 2>/dev/null || break
			sleep 0.1
		done
		kill -0 "$PG_PID" 2>/dev/null && die "PostgreSQL not ready after 60 s: $(tail -3 "$WORK/postgres.log")"
		grep -q "could not bind\|already in use" "$WORK/postgres.log" || die "PostgreSQL exited: $(tail -3 "$WORK/postgres.log")"
		log "port $PG_PORT was taken meanwhile; again ($attempt)"
	done
	die "could not start PostgreSQL on a free port"
}
psql_do() { pg_run psql -X -q -v ON_ERROR_STOP=1 -h "$PG_DIR" -p "$PG_PORT" -U postgres -d postgres -c "$1" >/dev/null; }

# --- Redis ----------------------------------------------------------------------
mkdir -p "$WORK/redis"
start_redis() {
	local attempt i
	for attempt in 1 2 3 4; do
		pick_port REDIS_PORT
		redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$WORK/redis" --save "" --appendonly no \
			--daemonize no --protected-mode yes --logfile "$WORK/redis/redis.log" >/dev/null 2>&1 &
		REDIS_PID=$!
		track "$REDIS_PID"
		for ((i = 0; i < 150; i++)); do
			[ "$( (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT" && printf 'PING\r\n' >&3 && timeout 2 head -c 5 <&3) 2>/dev/null)" = "+PONG" ] && return 0
			kill -0 "$REDIS_PID" 2>/dev/null || break
			sleep 0.1
		done
		kill -0 "$REDIS_PID" 2>/dev/null && die "redis-server does not answer after 15 s"
		log "redis-server exited ($(tail -1 "$WORK/redis/redis.log")); again ($attempt)"
	done
	die "could not start redis-server on a free port"
}

start_postgres
start_redis
log "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') pid $PG_PID on 127.0.0.1:$PG_PORT (fsync on); redis-server pid $REDIS_PID on 127.0.0.1:$REDIS_PORT"

# --- a configuration's nodes ------------------------------------------------------
# node_config: $CG_CONF for node NODE on SMTP_PORT and HTTP_PORT, with
# STORE (a storage: flow mapping) and CLUSTER (a cluster: line, or nothing);
# start_certgate calls it.
# shellcheck disable=SC2317
node_config() {
	{
		cat <<EOC
hostname: $NODE.relay.bench.example
data_dir: $RUN_DIR/$NODE
storage: $STORE
gate: {form_key_file: $WORK/form.key}
console: {session_key_file: $WORK/session.key}
smtp:
  listen: ["127.0.0.1:$SMTP_PORT"]
  max_connections: $((CONCURRENCY * 2 + 10))
  max_connections_per_ip: $((CONCURRENCY * 2 + 10))
  max_connections_per_network: $((CONCURRENCY * 2 + 10))
http:
  listen: "127.0.0.1:$HTTP_PORT"
tenants:
  - {name: bench, trusted_networks: [127.0.0.0/8], from_domains: [$DOMAIN], max_queued: $((COUNT * 2 + 1000))}
dkim:
  - {domain: $DOMAIN, selector: bench, key_file: $KEY}
api:
  tokens: [{name: bench, token_file: $WORK/admin-token, scopes: [admin]}]
log: {level: $LOG_LEVEL}
dns_check: {interval: 0}
providers:
  - {name: sink, domains: [sink.example], max_message_rate: "0", connection_limit: 50, max_deliveries_per_connection: 1000}
delivery:
  routes:
    - {domains: ["*"], host: "$SINK_SMTP", tls: none}
EOC
		[ -z "$CLUSTER" ] || echo "$CLUSTER"
	} >"$CG_CONF"
}

# start_waits DB: one psql session samples what the client backends of
# database DB are doing every 100 ms into $RUN_DIR/waits.txt (a line "#" per
# sample, then one per backend: running, the wait event of an active one
# such as Lock:advisory or IO:WALSync, idle in transaction: waiting for
# certgate's next statement, idle: in the pool); stop_waits ends it and
# sets WAITS_LINE: each state's mean number of backends, most first.
start_waits() {
	local db=$1 i
	rm -f "$RUN_DIR/waits.stop"
	for ((i = 0; i < TIMEOUT * 10; i++)); do
		[ -e "$RUN_DIR/waits.stop" ] && break
		echo "SELECT '#'; SELECT CASE WHEN state = 'active' THEN coalesce(wait_event_type || ':' || wait_event, 'running')" \
			"ELSE state END FROM pg_stat_activity WHERE datname = '$db' AND backend_type = 'client backend';"
		sleep 0.1
	done | pg_run psql -X -q -At -h "$PG_DIR" -p "$PG_PORT" -U postgres -d postgres >"$RUN_DIR/waits.txt" 2>&1 &
	WAITS_PID=$!
	track "$WAITS_PID"
}
stop_waits() {
	touch "$RUN_DIR/waits.stop"
	stop_pid "$WAITS_PID" 5
	WAITS_LINE=$(awk '$0 == "#" {n++; next} {c[$0]++}
		END {for (k in c) if (c[k] / (n ? n : 1) >= 0.05) printf "%.1f\t%s\n", c[k] / (n ? n : 1), k}' "$RUN_DIR/waits.txt" |
		sort -rn | awk -F '\t' '{printf "%s%s %s", (NR > 1 ? ", " : ""), $2, $1}')
}

# run_config CONFIG: a fresh database (or spool), the sink, the nodes, the
# load; its figures into R[CONFIG.KEY].
declare -A R
run_config() {
	local conf=$1 nodes=1 n k v rc=0 i pass
	RUN_DIR=$WORK/$conf
	mkdir -p "$RUN_DIR"
	case $conf in
	sqlite) STORE="{driver: sqlite}" ;;
	pg*)
		nodes=${conf#pg}
		psql_do "CREATE DATABASE bench_$conf" || die "creating database bench_$conf"
		(umask 077 && echo "postgres://postgres@127.0.0.1:$PG_PORT/bench_$conf?sslmode=disable" >"$RUN_DIR/pg.dsn")
		STORE="{driver: postgres, dsn_file: $RUN_DIR/pg.dsn}"
		;;
	esac
	start_sink 127.0.0.1:0 -dkim-txt "$TXT" -verify-idle 1s -arrivals "$RUN_DIR/arrivals.txt"
	NODE_PIDS=()
	NODE_SMTP=()
	CLUSTER=
	for ((n = 1; n <= nodes; n++)); do
		NODE=node$n CG_CONF=$RUN_DIR/node$n.yaml CG_LOG=$RUN_DIR/node$n.log
		[ "$conf" = sqlite ] || [ "$conf" = pg1 ] ||
			CLUSTER="cluster: {node: $NODE, lease: $LEASE, redis: {addr: \"127.0.0.1:$REDIS_PORT\"}}"
		start_certgate node_config
		NODE_PIDS+=("$CG_PID")
		NODE_SMTP+=("127.0.0.1:$SMTP_PORT")
	done
	log "$conf: $nodes node(s), pids ${NODE_PIDS[*]}, SMTP ${NODE_SMTP[*]}; $COUNT messages over $CONCURRENCY sessions"
	local pg_pid=0 redis_pid=0
	[ "$conf" = sqlite ] || pg_pid=$PG_PID
	[ -z "$CLUSTER" ] || redis_pid=$REDIS_PID
	[ "$pg_pid" = 0 ] || [ "$WAITS" = 0 ] || start_waits "bench_$conf"
	timeout "$((TIMEOUT + 60))" "$WORK/clusterbench" -smtp "$(IFS=,; echo "${NODE_SMTP[*]}")" -msg "$MSG" -from "$FROM" \
		-sink "http://$SINK_HTTP/stats" -arrivals "$RUN_DIR/arrivals.txt" -certgate "$(IFS=,; echo "${NODE_PIDS[*]}")" \
		-postgres "$pg_pid" -redis "$redis_pid" -clk-tck "$(getconf CLK_TCK)" -n "$COUNT" -c "$CONCURRENCY" \
		-timeout "${TIMEOUT}s" >"$RUN_DIR/result.txt" 2>"$RUN_DIR/clusterbench.log" || rc=$?
	[ "$pg_pid" = 0 ] || [ "$WAITS" = 0 ] || stop_waits
	while read -r k v; do R[$conf.$k]=$v; done <"$RUN_DIR/result.txt"
	R[$conf.nodes]=$nodes
	# The sink verifies once it has been idle a second.
	for ((i = 0; i < 600; i++)); do
		[ "$(sink_stat pending)" = 0 ] && break
		sleep 0.1
	done
	pass=$(sink_stat pass)
	R[$conf.dkim]="${pass:-0}/$(sink_stat messages)"
	R[$conf.ok]=0
	if [ "$rc" != 0 ]; then
		log "$conf: clusterbench exit $rc: $(tail -3 "$RUN_DIR/clusterbench.log")"
	elif [ "${pass:-0}" != "$COUNT" ] || [ "$(sink_stat fail)" != 0 ]; then
		log "$conf: DKIM ${R[$conf.dkim]} pass at the sink"
	else
		R[$conf.ok]=1
	fi
	for ((i = ${#NODE_PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${NODE_PIDS[i]}" 30; done
	stop_pid "$SINK_PID" 10
	grep -hE '"level":"(ERROR|WARN)"|level=(ERROR|WARN)' "$RUN_DIR"/node*.log | head -3 >&2 || true
	log "$conf: $(tr '\n' ' ' <"$RUN_DIR/result.txt")"
	[ "$pg_pid" = 0 ] || [ "$WAITS" = 0 ] || { R[$conf.waits]=$WAITS_LINE; log "$conf: PostgreSQL backends, mean per sample: $WAITS_LINE"; }
}

for conf in $CONFIGS; do run_config "$conf"; done

# --- the table ----------------------------------------------------------------------
label() { case $1 in sqlite) echo "SQLite" ;; pg1) echo "PostgreSQL" ;; *) echo "PostgreSQL cluster" ;; esac; }
MSG_BYTES=$(wc -c <"$MSG")
cat <<EOT

$COUNT messages of $MSG_BYTES bytes (${MSG#"$BENCH_REPO"/}), 1 recipient each, $CONCURRENCY SMTP sessions round-robin over the nodes,
DKIM $DKIM_ALGORITHM; PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') with fsync on; $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)); load average now $(cut -d' ' -f1-3 /proc/loadavg)
EOT
printf '%-19s %5s %8s %8s %8s %8s %8s %10s %10s %7s %9s %6s %10s\n' config nodes "msgs/s" "accept/s" "p50 ms" "p90 ms" "p99 ms" "cg ms/msg" "pg ms/msg" "PG %" "redis ms" busy once
for conf in $CONFIGS; do
	printf '%-19s %5s %8s %8s %8s %8s %8s %10s %10s %7s %9s %6s %10s\n' "$(label "$conf")" "${R[$conf.nodes]}" \
		"${R[$conf.e2e_rate]:-n/a}" "${R[$conf.accept_rate]:-n/a}" "${R[$conf.p50_ms]:-n/a}" "${R[$conf.p90_ms]:-n/a}" \
		"${R[$conf.p99_ms]:-n/a}" "${R[$conf.certgate_ms]:-n/a}" "${R[$conf.postgres_ms]:-n/a}" "${R[$conf.pg_share]:-n/a}" \
		"${R[$conf.redis_ms]:-n/a}" "${R[$conf.machine_cores]:-n/a}" "${R[$conf.once]:-0}/$COUNT"
done
cat <<EOT
msgs/s: copies at the sink over first submission to last copy; accept/s: accepted over the submission time;
p50/p90/p99: end of DATA to 250 on the client; CPU per message from /proc over the end-to-end span:
cg every certgate node, pg the postmaster and its children, PG % = pg / (cg + pg), redis redis-server;
busy: cores the whole machine kept busy over that span (of $(nproc): the load, the sink and anyone else's work too).
EOT
if [ "$WAITS" = 1 ]; then
	echo "PostgreSQL's client backends during the load, mean number per 100 ms sample in each state:"
	for conf in $CONFIGS; do
		[ -z "${R[$conf.waits]:-}" ] || printf '  %-4s %s\n' "$conf" "${R[$conf.waits]}"
	done
fi
if [ -n "${R[sqlite.e2e_rate]:-}" ] && [ -n "${R[pg1.e2e_rate]:-}" ]; then
	ratio=$(calc %.0f "100 * ${R[pg1.e2e_rate]} / ${R[sqlite.e2e_rate]}")
	if [ "$ratio" -ge "$TARGET" ]; then verdict=PASS; else verdict=FAIL; fi
	echo "$verdict: PostgreSQL one node at $ratio% of SQLite's rate (${R[pg1.e2e_rate]} against ${R[sqlite.e2e_rate]} msgs/s; target >= $TARGET%)"
fi
for conf in $CONFIGS; do
	[ "${R[$conf.ok]}" = 1 ] || die "$conf: not every message reached the sink exactly once, signed (work dir $WORK$([ "$KEEP" = 1 ] || echo ", removed: --keep keeps it"))"
done
