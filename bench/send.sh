#!/usr/bin/env bash
# bench/send.sh: the send API against SMTP submission, side by side in one
# run on the same mail (issue 13: "sends per second through the API and
# through SMTP submission ... (target: the API at least 80% of SMTP's
# rate), with p50/p99 latency of the 202").
#
#   bench/sendbench --HTTP POST /api/v1/send-->  certgate (compose; prepare,  --SMTP--> bench/sink
#                   --SMTP AUTH, MAIL/RCPT/DATA->          RSA-2048 DKIM,               (counts, verifies
#                                                          SQLite spool, queue)          every signature)
#
# certgate runs with one tenant (ca.example, its DKIM key, an SMTP AUTH
# user, no trusted network: both paths authenticate) and a token with the
# send scope; everything is routed to the sink, as one provider without a
# rate limit (as bench/relay.sh has it). bench/sendbench (Go) makes
# a certificate with crypto/x509 and one send request (format attachment,
# a custom message, the built-in certificate template in Spanish, RCPTS
# recipients), asks POST /api/v1/send/preview for the message it composes,
# and sends COUNT messages through each path with CONCURRENCY clients: the
# API's as JSON requests over kept-alive connections, SMTP's as that
# message (a Message-ID of its own each time) over sessions that log in
# once. The phases alternate (API, SMTP, SMTP, API for ROUNDS=2), each
# after the queue has drained and the sink has verified every signature.
#
# It prints messages per second for both paths and their ratio, PASS or
# FAIL against TARGET percent, client-side latency p50/p90/p99 (the 202;
# SMTP's 250, from MAIL and from the end of DATA), certgate's CPU per
# message, and its peak RSS (VmHWM, reset before each phase). It exits 0
# when every message was accepted and reached the sink, whatever the ratio.
#
# Usage: bench/send.sh [--count N] [--concurrency C] [--rcpts K] [--keep]
# or through the environment:
#   COUNT=2000         messages per path
#   CONCURRENCY=8      HTTP requests in flight / SMTP sessions
#   RCPTS=1            recipients per message
#   ROUNDS=2           phases per path (ABBA order)
#   WARMUP=100         messages per path before measuring
#   TARGET=80          the API's rate as a percentage of SMTP's, to PASS
#   IDEMPOTENCY=0      1: every API call with an Idempotency-Key of its own
#   VERIFY=1           the sink verifies DKIM signatures (between phases)
#   LOG_LEVEL=info     certgate's log level (it logs every accept and delivery)
#   TIMEOUT=900        bound on the whole measurement, in seconds
#   PROFILE=           write a CPU profile of certgate over the measurement
#                      (PROFILE_SECONDS) to this file
#   PROFILE_SECONDS=20
#   CERTGATE_BIN=      use this certgate binary instead of building one
#   KEEP=0             1: keep the work directory (config, logs)
#
# No root needed. Nothing listens beyond 127.0.0.1. Every wait is bounded.
set -Eeuo pipefail

BENCH=send.sh
COUNT=${COUNT:-2000}
CONCURRENCY=${CONCURRENCY:-8}
RCPTS=${RCPTS:-1}
ROUNDS=${ROUNDS:-2}
WARMUP=${WARMUP:-100}
TARGET=${TARGET:-80}
IDEMPOTENCY=${IDEMPOTENCY:-0}
VERIFY=${VERIFY:-1}
LOG_LEVEL=${LOG_LEVEL:-info}
TIMEOUT=${TIMEOUT:-900}
PROFILE=${PROFILE:-}
PROFILE_SECONDS=${PROFILE_SECONDS:-20}
CERTGATE_BIN=${CERTGATE_BIN:-}
KEEP=${KEEP:-0}

usage() { sed -n '2,/^set -E/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
	case $1 in
	--count) COUNT=$2; shift 2 ;;
	--concurrency) CONCURRENCY=$2; shift 2 ;;
	--rcpts) RCPTS=$2; shift 2 ;;
	--keep) KEEP=1; shift ;;
	-h | --help) usage 0 ;;
	*) echo "send.sh: unknown argument $1" >&2; usage 2 >&2 ;;
	esac
done
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
whole COUNT CONCURRENCY RCPTS ROUNDS WARMUP TARGET TIMEOUT PROFILE_SECONDS
flag IDEMPOTENCY VERIFY KEEP
if [ "$COUNT" -lt 1 ] || [ "$CONCURRENCY" -lt 1 ] || [ "$RCPTS" -lt 1 ] || [ "$ROUNDS" -lt 1 ] || [ "$RCPTS" -gt 500 ]; then
	echo "send.sh: COUNT, CONCURRENCY, ROUNDS >= 1; RCPTS from 1 to 500" >&2
	exit 2
fi
for t in curl go awk; do command -v "$t" >/dev/null || die "$t is required"; done

bench_setup
build_tools
(cd "$BENCH_REPO" && timeout 600 go build -buildvcs=false -o "$WORK/sendbench" ./bench/sendbench) || die "building bench/sendbench"
# The tenant's SMTP user and the send token: fresh secrets, private files.
(umask 077 &&
	od -An -tx1 -N16 /dev/urandom | tr -d ' \n' >"$WORK/portal.pass" &&
	od -An -tx1 -N24 /dev/urandom | tr -d ' \n' >"$WORK/send-token" &&
	"$CG" passwd --cost 10 <"$WORK/portal.pass" >"$WORK/portal.hash") || die "certgate passwd"

SINK_ARGS=()
[ "$VERIFY" = 1 ] && SINK_ARGS+=(-dkim-txt "$TXT" -verify-idle 500ms)
start_sink 127.0.0.1:0 "${SINK_ARGS[@]}"

SESSIONS=$CONCURRENCY
# shellcheck disable=SC2317 # start_certgate calls it
write_config() {
	cat >"$WORK/certgate.yaml" <<EOC
hostname: relay.bench.example
data_dir: $WORK/data
storage: {driver: sqlite}
smtp:
  listen: ["127.0.0.1:$SMTP_PORT"]
  max_connections: $((SESSIONS * 2 + 10))
  max_connections_per_ip: $((SESSIONS * 2 + 10))
  max_connections_per_network: $((SESSIONS * 2 + 10))
http:
  listen: "127.0.0.1:$HTTP_PORT"
tenants:
  - name: bench
    display_name: Autoridad Certificante Bench
    support: {email: mesadeayuda@ca.example, url: "https://ca.example/ayuda"}
    from_domains: [ca.example]
    users: [{username: portal, password_hash_file: $WORK/portal.hash}]
    max_recipients_per_send: 500
dkim:
  - {domain: ca.example, selector: bench, key_file: $KEY}
api:
  tokens:
    - {name: bench, token_file: $WORK/admin-token, scopes: [admin]}
    - {name: portal, token_file: $WORK/send-token, scopes: [send]}
log: {level: $LOG_LEVEL}
providers:
  - {name: sink, domains: [sink.example], max_message_rate: "0", connection_limit: 50, max_deliveries_per_connection: 1000}
delivery:
  routes:
    - {domains: ["*"], host: "$SINK_SMTP", tls: none}
EOC
}
start_certgate write_config
log "certgate pid $CG_PID, smtp 127.0.0.1:$SMTP_PORT, $CG_URL; sink $SINK_SMTP (stats http://$SINK_HTTP/stats)"

if [ -n "$PROFILE" ]; then
	# from a second into the measurement, after the warm-up's first calls
	(sleep 2 && cg_profile profile "$PROFILE" "$PROFILE_SECONDS" && log "CPU profile: $PROFILE") &
	track $!
fi
SB=("$WORK/sendbench" -api "$CG_URL" -token-file "$WORK/send-token" -smtp "127.0.0.1:$SMTP_PORT"
	-user portal -pass-file "$WORK/portal.pass" -pid "$CG_PID" -sink "http://$SINK_HTTP/stats"
	-n "$COUNT" -c "$CONCURRENCY" -rcpts "$RCPTS" -rounds "$ROUNDS" -warmup "$WARMUP"
	-target "$(calc %.4f "$TARGET / 100")" -idempotency="$([ "$IDEMPOTENCY" = 1 ] && echo true || echo false)")
log "${SB[*]}"
RC=0
timeout "$TIMEOUT" "${SB[@]}" || RC=$?
cat <<EOR
  $("$CG" version 2>/dev/null | head -1), DKIM RSA-2048, SQLite spool (WAL, synchronous=FULL) in $WORK/data,
  log level $LOG_LEVEL; sink DKIM verification $([ "$VERIFY" = 1 ] && echo "between phases" || echo off); load average $(cut -d' ' -f1-3 /proc/loadavg)
EOR
grep -E '"level":"(ERROR|WARN)"|level=(ERROR|WARN)' "$WORK/certgate.log" | head -5 >&2 || true
[ "$RC" = 0 ] || die "sendbench exit $RC (certgate log: $(tail -3 "$WORK/certgate.log"))"
