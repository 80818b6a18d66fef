#!/usr/bin/env bash
# bench/relay.sh: certgate end to end, on loopback.
#
#   smtp-source (Postfix) --SMTP--> certgate (prepare, RSA-2048 DKIM, durable
#   SQLite spool with fsync, queue) --SMTP--> bench/sink (counts, verifies
#   every DKIM signature)
#
# It prints the submission rate (as smtp-source sees it), the end-to-end rate
# (first submission to last message at the sink), certgate's server-side
# accept latency p50/p99 (end of DATA to reply, from the
# certgate_smtp_accept_duration_seconds histogram), delivery latency, CPU,
# peak RSS (VmHWM) and the sink's DKIM pass/fail counts.
#
# Usage: bench/relay.sh [--sessions N] [--count N] [--size BYTES] [--reuse]
#                       [--no-verify] [--timeout SECONDS] [--keep]
# or the same through the environment:
#   SESSIONS=20        parallel SMTP sessions (smtp-source -s)
#   COUNT=10000        messages in total (smtp-source -m)
#   SIZE=20000         approximate size of the test message in bytes
#   REUSE=0            1: send every message of a session over one connection
#                      (smtp-source -d); 0: one connection per message
#   VERIFY=1           0: the sink does not verify DKIM signatures
#   VERIFY_WORKERS=1   DKIM verification goroutines in the sink
#   TIMEOUT=600        bound on the load and the drain, in seconds
#   LOG_LEVEL=info     certgate's log level (it logs every accept and delivery)
#   KEEP=0             1: keep the work directory (logs, spool, config)
#   CERTGATE_BIN=      use this certgate binary instead of building one
#                      (for example a copy built with net/http/pprof)
#   PERF_DATA=         record `perf record -g` of certgate during the load
#                      into this file (needs perf)
#   WAIT_IDLE=0        wait up to this many seconds for other processes to go quiet
#                      (under 0.3 cores busy) before the load
#   DKIM_ALGORITHM=rsa2048  or ed25519 (to see what RSA signing costs)
#   PROFILE=           write a CPU profile of certgate during the load to this
#                      file, from its /debug/pprof (admin token); read it with
#                      `go tool pprof -top FILE`
#   PROFILE_SECONDS=8  how long to profile
#
# Nothing listens beyond 127.0.0.1. Every wait is bounded.
set -Eeuo pipefail

SESSIONS=${SESSIONS:-20}
COUNT=${COUNT:-10000}
SIZE=${SIZE:-20000}
REUSE=${REUSE:-0}
VERIFY=${VERIFY:-1}
VERIFY_WORKERS=${VERIFY_WORKERS:-1}
TIMEOUT=${TIMEOUT:-600}
LOG_LEVEL=${LOG_LEVEL:-info}
KEEP=${KEEP:-0}
CERTGATE_BIN=${CERTGATE_BIN:-}
PERF_DATA=${PERF_DATA:-}
DKIM_ALGORITHM=${DKIM_ALGORITHM:-rsa2048}
PROFILE=${PROFILE:-}
PROFILE_SECONDS=${PROFILE_SECONDS:-8}
WAIT_IDLE=${WAIT_IDLE:-0}

usage() { sed -n '2,/^set -E/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
	case $1 in
	--sessions) SESSIONS=$2; shift 2 ;;
	--count) COUNT=$2; shift 2 ;;
	--size) SIZE=$2; shift 2 ;;
	--reuse) REUSE=1; shift ;;
	--no-verify) VERIFY=0; shift ;;
	--timeout) TIMEOUT=$2; shift 2 ;;
	--keep) KEEP=1; shift ;;
	-h|--help) usage 0 ;;
	*) echo "relay.sh: unknown argument $1" >&2; usage 2 >&2 ;;
	esac
done
for v in SESSIONS COUNT SIZE TIMEOUT VERIFY_WORKERS WAIT_IDLE; do
	case ${!v} in ''|*[!0-9]*) echo "relay.sh: $v must be a whole number, not '${!v}'" >&2; exit 2 ;; esac
done
[ "$SESSIONS" -ge 1 ] && [ "$COUNT" -ge 1 ] && [ "$TIMEOUT" -ge 10 ] || { echo "relay.sh: SESSIONS and COUNT >= 1, TIMEOUT >= 10" >&2; exit 2; }

log() { printf '[relay.sh %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }
now() { date +%s.%N; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# --- smtp-source ------------------------------------------------------------
PATH=$PATH:/usr/sbin:/sbin
if ! command -v smtp-source >/dev/null; then
	[ "$(id -u)" = 0 ] || die "smtp-source is missing: apt-get install postfix (as root)"
	log "installing postfix for smtp-source (no configuration, not started)"
	echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
	echo "postfix postfix/mailname string bench.invalid" | debconf-set-selections
	export DEBIAN_FRONTEND=noninteractive
	if ! timeout 600 apt-get install -y --no-install-recommends postfix >/dev/null 2>&1; then
		timeout 300 apt-get update >/dev/null
		timeout 600 apt-get install -y --no-install-recommends postfix >/dev/null
	fi
	command -v smtp-source >/dev/null || die "postfix installed but smtp-source not found"
fi
for tool in curl awk go; do command -v $tool >/dev/null || die "$tool is required"; done
if [ -n "$PERF_DATA" ]; then command -v perf >/dev/null || die "PERF_DATA needs perf"; fi

# --- work directory and cleanup ---------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/certgate-relay.XXXXXX")
PIDS=()   # every process we start, ended by pid only
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
		kill -TERM "${PIDS[i]}" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
	done
	wait 2>/dev/null || true
	if [ "$KEEP" = 1 ]; then
		log "kept $WORK"
	else
		rm -rf "$WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- build ------------------------------------------------------------------
log "building into $WORK"
(cd "$REPO" && timeout 600 go build -buildvcs=false -o "$WORK/sink" ./bench/sink) || die "building bench/sink"
if [ -n "$CERTGATE_BIN" ]; then
	cp "$CERTGATE_BIN" "$WORK/certgate"
else
	(cd "$REPO" && timeout 600 go build -buildvcs=false -o "$WORK/certgate" ./cmd/certgate) || die "building certgate"
fi
CG=$WORK/certgate

mkdir -p "$WORK/dkim" "$WORK/data"
"$CG" dkim keygen --domain ca.example --selector bench --algorithm "$DKIM_ALGORITHM" --out "$WORK/dkim" >/dev/null
KEY=$WORK/dkim/bench._domainkey.ca.example.pem
TXT=$WORK/dkim/bench._domainkey.ca.example.txt
[ -s "$KEY" ] && [ -s "$TXT" ] || die "certgate dkim keygen wrote no key"

# --- the test message ---------------------------------------------------------
# A certificate mail as an issuer sends it: multipart/mixed with a text and an
# HTML alternative and a base64 certificate attachment, SIZE bytes in all.
# smtp-source -F sends each line followed by CRLF (and dot-stuffs), so the
# file is written with LF line ends: the wire carries CRLF only.
MSG=$WORK/message.eml
make_message() {
	local boundary=b1_certgate_bench alt=b2_certgate_bench
	{
		cat <<EOF
From: =?UTF-8?Q?Certificados_CA?= <certificados@ca.example>
To: <rcpt@sink.example>
Subject: =?UTF-8?Q?Su_certificado_digital_est=C3=A1_listo?=
Date: $(LC_ALL=C date -R)
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="$boundary"

This is a multi-part message in MIME format.

--$boundary
Content-Type: multipart/alternative; boundary="$alt"

--$alt
Content-Type: text/plain; charset=UTF-8
Content-Transfer-Encoding: quoted-printable

Estimado cliente:

Su certificado digital de persona f=C3=ADsica ha sido emitido. Lo encontrar=
=C3=A1 adjunto a este mensaje y tambi=C3=A9n puede descargarlo aqu=C3=AD:

https://ca.example/download/?token=3Dq7Zb1xKe9WmR4sVt2YpLc8

El enlace caduca en 30 d=C3=ADas. Para instalarlo necesitar=C3=A1 la contra=
se=C3=B1a que eligi=C3=B3 al solicitarlo.

Atentamente,
Autoridad de Certificaci=C3=B3n de ejemplo

--$alt
Content-Type: text/html; charset=UTF-8
Content-Transfer-Encoding: quoted-printable

<!DOCTYPE html>
<html lang=3D"es"><head><meta charset=3D"utf-8"><title>Su certificado</title=
></head>
<body style=3D"font-family:Arial,sans-serif;color:#222">
<table width=3D"100%" cellpadding=3D"0" cellspacing=3D"0"><tr><td>
<h1 style=3D"font-size:20px">Su certificado digital est=C3=A1 listo</h1>
<p>Estimado cliente:</p>
<p>Su certificado digital de persona f=C3=ADsica ha sido emitido. Lo encont=
rar=C3=A1 adjunto a este mensaje.</p>
<p><a href=3D"https://ca.example/download/?token=3Dq7Zb1xKe9WmR4sVt2YpLc8" =
style=3D"background:#0a58ca;color:#fff;padding:10px 16px;text-decoration:no=
ne">Descargar certificado</a></p>
<p style=3D"font-size:12px;color:#666">El enlace caduca en 30 d=C3=ADas.</p>
</td></tr></table>
</body></html>

--$alt--

--$boundary
Content-Type: application/x-pkcs12; name="certificado.p12"
Content-Disposition: attachment; filename="certificado.p12"
Content-Transfer-Encoding: base64

EOF
	} >"$MSG"
	local have=$(($(wc -c <"$MSG") + $(wc -l <"$MSG"))) # CRLF on the wire
	local raw=$(((SIZE - have - 40) * 57 / 78))
	[ "$raw" -gt 0 ] || raw=57
	head -c "$raw" /dev/urandom | base64 -w 76 >>"$MSG"
	printf '\n--%s--\n' "$boundary" >>"$MSG"
}
make_message
MSG_BYTES=$(($(wc -c <"$MSG") + $(wc -l <"$MSG")))

# --- sink -----------------------------------------------------------------
SINK_ARGS=(-addr-file "$WORK/sink.addrs" -max-duration "$((TIMEOUT + 300))s")
[ "$VERIFY" = 1 ] && SINK_ARGS+=(-dkim-txt "$TXT" -verify-workers "$VERIFY_WORKERS")
"$WORK/sink" "${SINK_ARGS[@]}" >"$WORK/sink.out" 2>"$WORK/sink.log" &
SINK_PID=$!
PIDS+=("$SINK_PID")
for _ in $(seq 100); do [ -s "$WORK/sink.addrs" ] && break; sleep 0.1; done
[ -s "$WORK/sink.addrs" ] || die "sink did not start: $(cat "$WORK/sink.log")"
SINK_SMTP=$(sed -n 's/^smtp=//p' "$WORK/sink.addrs")
SINK_HTTP=$(sed -n 's/^http=//p' "$WORK/sink.addrs")

# --- certgate ---------------------------------------------------------------
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() {
	local p
	for _ in $(seq 50); do
		p=$((20000 + RANDOM % 40000))
		port_free "$p" && { echo "$p"; return; }
	done
	die "no free port found"
}
write_config() {
	cat >"$WORK/certgate.yaml" <<EOF
hostname: relay.bench.example
data_dir: $WORK/data
storage: {driver: sqlite}
smtp:
  listen: ["127.0.0.1:$SMTP_PORT"]
  max_connections: $((SESSIONS * 2 + 20))
  max_connections_per_ip: $((SESSIONS * 2 + 20))
http:
  listen: "127.0.0.1:$HTTP_PORT"
tenants:
  - name: bench
    trusted_networks: [127.0.0.0/8]
    from_domains: [ca.example]
dkim:
  - {domain: ca.example, selector: bench, key_file: $KEY}
delivery:
  routes:
    - {domains: ["*"], host: "$SINK_SMTP", tls: none}
providers:
  - {name: sink, domains: [sink.example], max_message_rate: "0", connection_limit: 50, max_deliveries_per_connection: 1000}
api:
  tokens: [{name: bench, token_file: $WORK/admin-token, scopes: [admin]}]
log: {level: $LOG_LEVEL}
EOF
}
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/admin-token"
CG_PID=
for attempt in 1 2 3 4 5; do
	SMTP_PORT=$(pick_port)
	HTTP_PORT=$(pick_port)
	[ "$SMTP_PORT" != "$HTTP_PORT" ] || continue
	write_config
	"$CG" check-config --config "$WORK/certgate.yaml" >/dev/null 2>"$WORK/check.log" || die "configuration: $(cat "$WORK/check.log")"
	"$CG" serve --config "$WORK/certgate.yaml" 2>"$WORK/certgate.log" &
	CG_PID=$!
	PIDS+=("$CG_PID")
	METRICS=http://127.0.0.1:$HTTP_PORT
	for _ in $(seq 300); do
		curl -fsS -m 1 "$METRICS/readyz" >/dev/null 2>&1 && break
		kill -0 "$CG_PID" 2>/dev/null || break
		sleep 0.1
	done
	if curl -fsS -m 1 "$METRICS/readyz" >/dev/null 2>&1; then
		break
	fi
	if kill -0 "$CG_PID" 2>/dev/null; then die "certgate not ready after 30 s: $(tail -5 "$WORK/certgate.log")"; fi
	grep -q "address already in use" "$WORK/certgate.log" || die "certgate exited: $(tail -5 "$WORK/certgate.log")"
	log "port taken, retrying ($attempt)"
	CG_PID=
done
[ -n "$CG_PID" ] || die "could not start certgate on a free port"
log "certgate pid $CG_PID smtp 127.0.0.1:$SMTP_PORT http $METRICS; sink $SINK_SMTP (stats http://$SINK_HTTP/stats)"

sink_field() { # sink_field JSON KEY: a number from the sink's flat JSON
	printf '%s' "$1" | tr -d ' ' | sed -n "s/.*\"$2\":\([-0-9.e+]*\).*/\1/p" | head -1
}
proc_cpu() { # user+system seconds of a pid
	awk -v hz="$(getconf CLK_TCK)" '{sub(/^.*\) /, ""); print ($12 + $13) / hz}' "/proc/$1/stat" 2>/dev/null || echo 0
}
proc_cpu_split() { # "user system" seconds of a pid
	awk -v hz="$(getconf CLK_TCK)" '{sub(/^.*\) /, ""); print $12 / hz, $13 / hz}' "/proc/$1/stat" 2>/dev/null || echo 0 0
}
sys_cpu() { # "busy total" jiffies of the whole machine
	awk '/^cpu / {t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t}' /proc/stat
}
children_cpu() { # children_cpu FILE: user+system seconds of the reaped children, from `times >FILE`
	awk 'NR == 2 {s = 0; for (i = 1; i <= 2; i++) {split($i, p, "m"); s += p[1] * 60 + p[2]}; print s}' "$1"
}

# --- load -----------------------------------------------------------------
SRC=(smtp-source -c -s "$SESSIONS" -m "$COUNT" -F "$MSG" -f sender@ca.example -t rcpt@sink.example)
[ "$REUSE" = 1 ] && SRC+=(-d)
SRC+=("127.0.0.1:$SMTP_PORT")

if [ "$WAIT_IDLE" -gt 0 ]; then
	# A shared machine skews every figure: wait (bounded) for a quiet moment.
	idle_deadline=$(($(date +%s) + WAIT_IDLE))
	while :; do
		s0=$(sys_cpu); sleep 2; s1=$(sys_cpu)
		busy=$(echo "$s0 $s1" | awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($3 - $1) / hz / 2}')
		[ "$(echo "$busy < 0.3" | bc -l)" = 1 ] && break
		if [ "$(date +%s)" -ge "$idle_deadline" ]; then
			log "machine still busy ($busy cores in use by others) after WAIT_IDLE=$WAIT_IDLE s; running anyway"
			break
		fi
		log "waiting for the machine to be idle ($busy cores in use by others)"
	done
fi
log "load: ${SRC[*]} (message $MSG_BYTES bytes on the wire)"

PERF_PID=
if [ -n "$PERF_DATA" ]; then
	perf record -F 499 -g -p "$CG_PID" -o "$PERF_DATA" >"$WORK/perf.log" 2>&1 &
	PERF_PID=$!
	PIDS+=("$PERF_PID")
	sleep 0.5
fi
PROF_PID=
if [ -n "$PROFILE" ]; then
	curl -fsS -m $((PROFILE_SECONDS + 30)) -H "Authorization: Bearer $(cat "$WORK/admin-token")" \
		-o "$PROFILE" "$METRICS/debug/pprof/profile?seconds=$PROFILE_SECONDS" &
	PROF_PID=$!
	PIDS+=("$PROF_PID")
fi
CG_CPU0=$(proc_cpu "$CG_PID")
CG_SPLIT0=$(proc_cpu_split "$CG_PID")
SINK_CPU0=$(proc_cpu "$SINK_PID")
SYS0=$(sys_cpu)
times >"$WORK/times0" # a builtin in this shell: a subshell would count only its own children
LOADAVG=$(cut -d" " -f1-3 /proc/loadavg)
T0=$(now)
# In the background so that a signal to this script is handled at once
# (bash runs traps only between foreground commands); wait reaps it, so
# `times` counts its CPU.
timeout "$TIMEOUT" "${SRC[@]}" >"$WORK/smtp-source.out" 2>"$WORK/smtp-source.err" &
SRC_PID=$!
PIDS+=("$SRC_PID")
SRC_RC=0
wait "$SRC_PID" || SRC_RC=$?
T1=$(now)
times >"$WORK/times1"
SRC_CPU=$(echo "$(children_cpu "$WORK/times1") - $(children_cpu "$WORK/times0")" | bc -l)
[ "$SRC_RC" = 0 ] || log "smtp-source exit $SRC_RC: $(tail -3 "$WORK/smtp-source.err")"

# --- drain: wait for the sink to receive everything certgate accepted ------
accepted_total() {
	curl -fsS -m 5 "$METRICS/metrics" | awk '/^certgate_smtp_accepted_messages_total/ {s += $NF} END {printf "%d\n", s}'
}
ACCEPTED=$(accepted_total)
DEADLINE=$(($(date +%s) + TIMEOUT))
LAST_PROGRESS=$(date +%s)
PREV=-1
while :; do
	STATS=$(curl -fsS -m 5 "http://$SINK_HTTP/stats")
	GOT=$(sink_field "$STATS" messages)
	PENDING=$(sink_field "$STATS" pending)
	if [ "$GOT" -ge "$ACCEPTED" ] && [ "${PENDING:-0}" = 0 ]; then break; fi
	[ "$GOT" != "$PREV" ] && LAST_PROGRESS=$(date +%s) && PREV=$GOT
	if [ "$(date +%s)" -ge "$DEADLINE" ] || [ $(($(date +%s) - LAST_PROGRESS)) -ge 60 ]; then
		log "drain stopped: sink has $GOT of $ACCEPTED accepted messages"
		break
	fi
	sleep 0.2
done
[ -n "$PERF_PID" ] && { kill -INT "$PERF_PID" 2>/dev/null; wait "$PERF_PID" 2>/dev/null || true; }
if [ -n "$PROF_PID" ]; then
	if wait "$PROF_PID"; then log "CPU profile in $PROFILE"; else log "CPU profile failed"; fi
fi
T2=$(now)
CG_CPU1=$(proc_cpu "$CG_PID")
CG_SPLIT1=$(proc_cpu_split "$CG_PID")
SINK_CPU1=$(proc_cpu "$SINK_PID")
SYS1=$(sys_cpu)
CG_HWM=$(awk '/^VmHWM/ {print $2}' "/proc/$CG_PID/status")
SINK_HWM=$(awk '/^VmHWM/ {print $2}' "/proc/$SINK_PID/status")
curl -fsS -m 5 "$METRICS/metrics" >"$WORK/metrics.txt"
STATS=$(curl -fsS -m 5 "http://$SINK_HTTP/stats")
printf '%s\n' "$STATS" >"$WORK/sink-stats.json"

# --- figures ----------------------------------------------------------------
# quantile Q METRIC: histogram_quantile over every series of METRIC (labels
# summed by le), interpolating linearly inside the bucket as Prometheus does.
quantile() {
	awk -v q="$1" -v m="$2_bucket" '
		index($0, m "{") == 1 {
			le = $0; sub(/.*le="/, "", le); sub(/".*/, "", le)
			c[le] += $NF
		}
		END {
			n = 0
			for (k in c) if (k != "+Inf") { n++; b[n] = k + 0 }
			for (i = 2; i <= n; i++) { x = b[i]; for (j = i - 1; j >= 1 && b[j] > x; j--) b[j+1] = b[j]; b[j+1] = x }
			total = c["+Inf"]
			if (total == 0) { print "n/a"; exit }
			rank = q * total; prev = 0; lower = 0
			for (i = 1; i <= n; i++) {
				cum = 0; for (k in c) if (k != "+Inf" && k + 0 == b[i]) cum = c[k]
				if (cum >= rank) {
					v = lower + (b[i] - lower) * (rank - prev) / (cum - prev)
					printf "%.2f ms\n", v * 1000; exit
				}
				prev = cum; lower = b[i]
			}
			printf "> %.0f ms\n", lower * 1000
		}' "$WORK/metrics.txt"
}
metric_sum() { # metric_sum NAME [LABEL=VALUE...]: the sum of the series of NAME with those labels
	local name=$1; shift
	awk -v name="$name" -v want="$*" '
		BEGIN { n = split(want, w, " ") }
		index($0, name "{") == 1 || index($0, name " ") == 1 {
			for (i = 1; i <= n; i++) { split(w[i], kv, "="); if (index($0, kv[1] "=\"" kv[2] "\"") == 0) next }
			s += $NF
		}
		END { printf "%d\n", s }' "$WORK/metrics.txt"
}
hist_mean() {
	awk -v m="$1" 'index($0, m "_sum") == 1 {s += $NF} index($0, m "_count") == 1 {n += $NF}
		END {if (n) printf "%.2f ms\n", s / n * 1000; else print "n/a"}' "$WORK/metrics.txt"
}

GOT=$(sink_field "$STATS" messages)
LAST_NS=$(sink_field "$STATS" last_unix_ns)
FIRST_NS=$(sink_field "$STATS" first_unix_ns)
SUB_S=$(echo "$T1 - $T0" | bc -l)
E2E_S=$(echo "scale=6; ($LAST_NS / 1000000000) - $T0" | bc -l)
rate() { echo "scale=1; $1 / $2" | bc -l; }
SUB_RATE=$(rate "$ACCEPTED" "$SUB_S")
E2E_RATE=n/a
[ "${LAST_NS:-0}" -gt 0 ] && E2E_RATE=$(rate "$GOT" "$E2E_S")
SINK_RATE=$(sink_field "$STATS" rate_per_s)
CG_CPU=$(echo "$CG_CPU1 - $CG_CPU0" | bc -l)
CG_SYS_PCT=$(echo "$CG_SPLIT0 $CG_SPLIT1" | awk '{u = $3 - $1; s = $4 - $2; if (u + s > 0) printf "%.0f", 100 * s / (u + s); else print 0}')
SINK_CPU=$(echo "$SINK_CPU1 - $SINK_CPU0" | bc -l)
WALL=$(echo "$T2 - $T0" | bc -l)
SYS_BUSY=$(echo "$SYS0 $SYS1" | awk '{if ($4 > $2) printf "%.0f", 100 * ($3 - $1) / ($4 - $2); else print "?"}')
SYS_BUSY_S=$(echo "$SYS0 $SYS1" | awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($3 - $1) / hz}')
OTHER_CPU=$(echo "$SYS_BUSY_S - $CG_CPU - $SINK_CPU - $SRC_CPU" | bc -l)
DELIVERED=$(metric_sum certgate_delivery_attempts_total provider=sink result=delivered)
DEFERRED=$(metric_sum certgate_delivery_attempts_total result=deferred)
REJECTED=$(metric_sum certgate_smtp_rejected_total)
CONNS=$(metric_sum certgate_delivery_connections_total)
if [ "$VERIFY" = 1 ]; then
	DKIM="pass $(sink_field "$STATS" pass), fail $(sink_field "$STATS" fail), unsigned $(sink_field "$STATS" none)"
	DKIM_WAITS=$(sink_field "$STATS" verify_waits)
else
	DKIM="not verified (VERIFY=0)"
	DKIM_WAITS=0
fi

f() { printf '%.2f' "$1"; }
cores() { echo "scale=2; $1 / $WALL" | bc -l | sed 's/^\./0./'; }
cat <<EOF

certgate relay benchmark  ($(date -u +%FT%TZ), $(nproc) CPUs, $(go version | awk '{print $3}'))
  load:     ${SRC[*]}
  message:  $MSG_BYTES bytes (multipart: text, HTML, base64 certificate), 1 recipient each
  certgate: DKIM $DKIM_ALGORITHM, SQLite spool (WAL, synchronous=FULL) in $WORK/data, log level $LOG_LEVEL
  sink:     $SINK_SMTP, DKIM verification $([ "$VERIFY" = 1 ] && echo "on ($VERIFY_WORKERS worker(s), after the 250)" || echo off)

  -----------------------------------------------------------------------------
  messages accepted by certgate                $ACCEPTED of $COUNT   (smtp-source exit $SRC_RC, refusals $REJECTED)
  messages received at the sink                $GOT   (delivered $DELIVERED, deferred $DEFERRED, $CONNS connections)
  submission rate  (smtp-source wall time)     $SUB_RATE msg/s   ($(f "$SUB_S") s)
  end-to-end rate  (first submit -> last sink) $E2E_RATE msg/s   ($(f "$E2E_S") s)
  accept latency p50 / p99  (server side)      $(quantile 0.5 certgate_smtp_accept_duration_seconds) / $(quantile 0.99 certgate_smtp_accept_duration_seconds)   (mean $(hist_mean certgate_smtp_accept_duration_seconds))
  DKIM signing p50 / p99    (server side)      $(quantile 0.5 certgate_dkim_sign_duration_seconds) / $(quantile 0.99 certgate_dkim_sign_duration_seconds)
  delivery latency p50 / p99 (accept -> sink)  $(quantile 0.5 certgate_delivery_latency_seconds) / $(quantile 0.99 certgate_delivery_latency_seconds)
  certgate peak RSS (VmHWM)                    $((CG_HWM / 1024)) MiB
  DKIM at the sink                             $DKIM   (verify waits $DKIM_WAITS)
  CPU, in cores over $(f "$WALL") s            certgate $(cores "$CG_CPU") ($(echo "scale=0; $CG_CPU * 1000000 / ($ACCEPTED + 1)" | bc -l) us/msg, $CG_SYS_PCT% in the kernel), smtp-source $(cores "$SRC_CPU"), sink $(cores "$SINK_CPU")
                                               other processes $(cores "$OTHER_CPU"); machine busy $SYS_BUSY% of $(nproc) CPUs
  sink peak RSS                                $((SINK_HWM / 1024)) MiB
  -----------------------------------------------------------------------------
  Accept latency is certgate's histogram certgate_smtp_accept_duration_seconds (end of
  DATA to reply: preparation, signing, durable spooling), interpolated within buckets.
  Rates are wall clock as seen by this script. Work dir: $WORK$([ "$KEEP" = 1 ] || echo " (removed)")
EOF
if [ "$(echo "$OTHER_CPU / $WALL > 0.25" | bc -l)" = 1 ]; then
	log "WARNING: other processes used $(cores "$OTHER_CPU") cores during the run (load average before: $LOADAVG); the figures understate certgate"
fi
if [ "$SRC_RC" != 0 ] || [ "$GOT" -lt "$ACCEPTED" ]; then
	log "incomplete run (work dir $WORK$([ "$KEEP" = 1 ] || echo ", removed: re-run with KEEP=1 to keep its logs"))"
	exit 1
fi
