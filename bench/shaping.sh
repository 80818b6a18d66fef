#!/usr/bin/env bash
# bench/shaping.sh: how exactly certgate holds a provider to its rate, and
# how long urgent mail waits behind a bulk backlog in the same lane (issue 4:
# "a provider limited to 600/min delivers within ±3% of that over five
# minutes, and urgent transactional mail waits under one second at p99 while
# 20,000 bulk messages for the same provider are queued").
#
#   smtp-source (bulk) + this script (urgent) --SMTP--> certgate --SMTP--> bench/sink
#
# certgate has one provider for the sink's domain, limited to RATE messages
# a minute with CONNS connections, and a route to the sink. smtp-source
# submits BULK certificate mails marked X-Certgate-Class: bulk; once they
# are all accepted (the lane has been delivering since the first one), the
# measurement window of DURATION seconds begins. During it, URGENT
# certificate mails marked X-Certgate-Class: transactional, each to its own
# recipient, are submitted one at a time, one in each of URGENT equal slices
# of the window at a random point of it (so that submissions do not fall in
# step with the lane's slots and always see the same phase of them). The
# script speaks SMTP itself (bash's /dev/tcp) and takes the time as it reads
# the 250 reply to the end of DATA ($EPOCHREALTIME). The sink writes a line
# per arrival (-arrivals: time and recipient).
#
# It prints the rate delivered over the window (every message of the lane,
# bulk and urgent, arriving at the sink inside it) and its deviation from
# RATE, the rate over 10-second windows and over sliding minutes, the gaps
# between consecutive deliveries, and for urgent mail the wait from the 250
# reply to its arrival at the sink (p50, p90, p99, max), with certgate's own
# delivery-latency histogram beside it; then a PASS or FAIL line for each of
# the issue's targets (within ±3%, p99 under 1 s). It exits 0 when the run
# completed, whatever the figures; the bulk mail left over is not drained.
#
# Usage: bench/shaping.sh [--duration SECONDS] [--bulk N] [--urgent N] [--keep]
# or through the environment:
#   DURATION=60        measurement window in seconds (the issue's figure:
#                      DURATION=300)
#   BULK=20000         bulk messages queued before the window
#   URGENT=200         transactional messages submitted during the window
#   RATE=600           the provider's max_message_rate, per minute
#   CONNS=5            its connection_limit
#   PER_CONN=100       its max_deliveries_per_connection
#   SESSIONS=20        smtp-source sessions for the bulk mail
#   SIZE=20000         approximate size of every message in bytes
#   VERIFY=1           the sink verifies DKIM signatures (after its 250)
#   TIMEOUT=1800       bound on the bulk submission, in seconds
#   LOG_LEVEL=info     certgate's log level (info logs every delivery)
#   PROFILE=           write a CPU profile of certgate over the first
#                      PROFILE_SECONDS of the window to this file
#   PROFILE_SECONDS=30
#   CERTGATE_BIN=      use this certgate binary instead of building one
#   KEEP=0             1: keep the work directory (arrivals, traces, logs)
#
# Nothing listens beyond 127.0.0.1. Every wait is bounded.
set -Eeuo pipefail

BENCH=shaping.sh
DURATION=${DURATION:-60}
BULK=${BULK:-20000}
URGENT=${URGENT:-200}
RATE=${RATE:-600}
CONNS=${CONNS:-5}
PER_CONN=${PER_CONN:-100}
SESSIONS=${SESSIONS:-20}
SIZE=${SIZE:-20000}
VERIFY=${VERIFY:-1}
TIMEOUT=${TIMEOUT:-1800}
LOG_LEVEL=${LOG_LEVEL:-info}
PROFILE=${PROFILE:-}
PROFILE_SECONDS=${PROFILE_SECONDS:-30}
CERTGATE_BIN=${CERTGATE_BIN:-}
KEEP=${KEEP:-0}
TOLERANCE=3 # percent
WAIT_TARGET=1 # seconds, urgent p99

usage() { sed -n '2,/^set -E/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
	case $1 in
	--duration) DURATION=$2; shift 2 ;;
	--bulk) BULK=$2; shift 2 ;;
	--urgent) URGENT=$2; shift 2 ;;
	--keep) KEEP=1; shift ;;
	-h | --help) usage 0 ;;
	*) echo "shaping.sh: unknown argument $1" >&2; usage 2 >&2 ;;
	esac
done
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
whole DURATION BULK URGENT RATE CONNS PER_CONN SESSIONS SIZE TIMEOUT PROFILE_SECONDS
flag VERIFY KEEP
if [ "$DURATION" -lt 10 ] || [ "$BULK" -lt 1 ] || [ "$RATE" -lt 1 ] || [ "$CONNS" -lt 1 ] || [ "$PER_CONN" -lt 1 ] || [ "$SESSIONS" -lt 1 ]; then
	echo "shaping.sh: DURATION >= 10; BULK, RATE, CONNS, PER_CONN, SESSIONS >= 1" >&2
	exit 2
fi
need_tools curl awk go sort
export LC_ALL=C # a decimal point in $EPOCHREALTIME
[ -n "${EPOCHREALTIME:-}" ] || die "bash 5 or later is needed (EPOCHREALTIME)"

bench_setup
build_tools
BULK_MSG=$WORK/bulk.eml
URGENT_MSG=$WORK/urgent.eml
cert_mail "$BULK_MSG" "$SIZE" "X-Certgate-Class: bulk"
cert_mail "$URGENT_MSG" "$SIZE" "X-Certgate-Class: transactional"
crlf "$URGENT_MSG" # as it goes on the wire: CRLF, dot-stuffed
MSG_BYTES=$(wire_bytes "$BULK_MSG")

SINK_ARGS=(-arrivals "$WORK/arrivals.txt")
[ "$VERIFY" = 1 ] && SINK_ARGS+=(-dkim-txt "$TXT")
start_sink 127.0.0.1:0 "${SINK_ARGS[@]}"

# shellcheck disable=SC2317 # start_certgate calls it
write_config() {
	bench_config "$SINK_SMTP" \
		"{name: shaped, domains: [sink.example], max_message_rate: \"$RATE/min\", connection_limit: $CONNS, max_deliveries_per_connection: $PER_CONN}"
}
start_certgate write_config
log "certgate pid $CG_PID, smtp 127.0.0.1:$SMTP_PORT, $CG_URL; sink $SINK_SMTP (stats http://$SINK_HTTP/stats)"

# --- the bulk backlog ---------------------------------------------------------------
SRC=(smtp-source -s "$SESSIONS" -m "$BULK" -F "$BULK_MSG" -f sender@ca.example -t bulk@sink.example "127.0.0.1:$SMTP_PORT")
log "bulk: ${SRC[*]} ($MSG_BYTES bytes a message)"
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
T0=$(now)
timeout "$TIMEOUT" "${SRC[@]}" >"$WORK/smtp-source.out" 2>"$WORK/smtp-source.err" &
SRC_PID=$!
track "$SRC_PID"
SRC_RC=0
wait "$SRC_PID" || SRC_RC=$?
[ "$SRC_RC" = 0 ] || log "smtp-source exit $SRC_RC: $(tail -3 "$WORK/smtp-source.err")"
scrape "$WORK/start.prom"
W0=$(now)
BULK_ACCEPTED=$(msum "$WORK/start.prom" certgate_smtp_accepted_messages_total class=bulk)
BULK_QUEUED0=$(msum "$WORK/start.prom" certgate_queue_recipients class=bulk)
[ "$BULK_ACCEPTED" -ge 1 ] || die "certgate accepted no bulk mail: $(tail -3 "$WORK/smtp-source.err") $(tail -3 "$WORK/certgate.log")"
log "bulk: $BULK_ACCEPTED accepted in $(calc %.1f "$W0 - $T0") s, $BULK_QUEUED0 queued; window of $DURATION s begins"

# --- the window: urgent mail, evenly spaced ----------------------------------------
# reply CODE: reads one SMTP reply from fd 3 (every line of a multi-line
# one, each within 30 s) and succeeds when its code is CODE.
reply() {
	local line
	while IFS= read -r -t 30 -u 3 line; do
		line=${line%$'\r'}
		[[ $line == [0-9][0-9][0-9]-* ]] && continue
		[[ $line == "$1"* ]] && return 0
		printf '%s\n' "$line" >>"$WORK/urgent.err"
		return 1
	done
	echo "no reply (wanted $1)" >>"$WORK/urgent.err"
	return 1
}
# urgent_one I: submits urgent message I on a connection of its own and
# appends "I rcpt t250 ok" to urgent.tsv: t250 is when the 250 reply to
# the end of DATA was read, in Unix seconds; ok is 1 when it was a 250.
urgent_one() {
	local i=$1 rcpt="urgent-$1@sink.example" t250=nan ok=0
	if exec 3<>"/dev/tcp/127.0.0.1/$SMTP_PORT"; then
		if reply 220 && printf 'EHLO bench.example\r\n' >&3 && reply 250 &&
			printf 'MAIL FROM:<sender@ca.example>\r\n' >&3 && reply 250 &&
			printf 'RCPT TO:<%s>\r\n' "$rcpt" >&3 && reply 250 &&
			printf 'DATA\r\n' >&3 && reply 354 &&
			cat "$URGENT_MSG.crlf" >&3 && printf '.\r\n' >&3 && reply 250; then
			t250=$EPOCHREALTIME ok=1
			if printf 'QUIT\r\n' >&3; then reply 221 || true; fi
		fi
		exec 3<&-
	fi
	printf '%s\t%s\t%s\t%s\n' "$i" "$rcpt" "$t250" "$ok" >>"$WORK/urgent.tsv"
}
urgent_all() {
	local i at d
	trap '' PIPE # a connection certgate closed fails that message, not the rest
	for ((i = 1; i <= URGENT; i++)); do
		at=$(calc %.6f "$W0 + ($i - 1 + $RANDOM / 32768) * $DURATION / $URGENT")
		d=$(calc %.6f "$at - $(now)")
		[[ $d == -* ]] || sleep "$d"
		urgent_one "$i"
	done
}
: >"$WORK/urgent.tsv"
CG_CPU0=$(proc_cpu "$CG_PID")
BUSY0=$(sys_busy)
PROF_PID=
if [ -n "$PROFILE" ]; then
	cg_profile profile "$PROFILE" "$PROFILE_SECONDS" &
	PROF_PID=$!
	track "$PROF_PID"
fi
URGENT_PID=
if [ "$URGENT" -gt 0 ]; then
	urgent_all &
	URGENT_PID=$!
	track "$URGENT_PID"
fi
W1=$(calc %.6f "$W0 + $DURATION")
sleep "$(calc %.6f "$W1 - $(now)")"
scrape "$WORK/end.prom"
CG_CPU1=$(proc_cpu "$CG_PID")
BUSY1=$(sys_busy)
children_cpu
BULK_QUEUED1=$(msum "$WORK/end.prom" certgate_queue_recipients class=bulk)
if [ -n "$URGENT_PID" ]; then
	# The last urgent message went out half a spacing before the window's
	# end; give its submission and delivery up to 30 s more.
	for _ in $(seq 300); do kill -0 "$URGENT_PID" 2>/dev/null || break; sleep 0.1; done
	stop_pid "$URGENT_PID" 5
	for _ in $(seq 300); do
		[ "$(grep -c ' urgent-' "$WORK/arrivals.txt" || true)" -ge "$URGENT" ] && break
		sleep 0.1
	done
fi
[ -z "$PROF_PID" ] || wait "$PROF_PID" || log "CPU profile failed"
scrape "$WORK/final.prom"
curl -fsS -m 5 "http://$SINK_HTTP/stats" >"$WORK/sink-stats.json" || true
DKIM=
[ "$VERIFY" = 1 ] && DKIM="pass $(sink_stat pass), fail $(sink_stat fail), unsigned $(sink_stat none), pending $(sink_stat pending)"
stop_pid "$CG_PID" 30
stop_pid "$SINK_PID" 10 # flushes the arrivals file

# --- figures -----------------------------------------------------------------------------
ARR=$WORK/arrivals.txt
# The lane's deliveries inside the window, in seconds since W0.
awk -v w0="$W0" -v d="$DURATION" '{ t = $1 / 1e9 - w0; if (t >= 0 && t < d) printf "%.6f\n", t }' "$ARR" | sort -n >"$WORK/window.txt"
N_WIN=$(wc -l <"$WORK/window.txt")
RATE_WIN=$(calc %.1f "$N_WIN * 60 / $DURATION")
DEV=$(calc %+.2f "($RATE_WIN - $RATE) * 100 / $RATE")
# Spacing estimator: (n-1) intervals between the first and the last
# delivery of the window; it does not depend on where the window's edges
# fall between two deliveries.
RATE_GAPS=$(awk 'NR == 1 {f = $1} {l = $1; n++} END { if (n > 1 && l > f) printf "%.1f\n", (n - 1) * 60 / (l - f); else print "n/a" }' "$WORK/window.txt")
GAPS=$(awk 'NR > 1 {printf "%.6f\n", ($1 - p) * 1000} {p = $1}' "$WORK/window.txt" | sort -n |
	awk '{g[NR] = $1} END { if (NR == 0) { print "n/a"; exit }
		q = "0.01 0.5 0.99"; split(q, qs, " ")
		for (i = 1; i <= 3; i++) { k = int(qs[i] * NR + 0.999999); if (k < 1) k = 1; printf "p%g %.0f ms, ", qs[i] * 100, g[k] }
		printf "min %.0f ms, max %.0f ms\n", g[1], g[NR] }')
# 10-second windows, as rates per minute.
TENS=$(awk -v d="$DURATION" 'BEGIN { n = int(d / 10) } { b = int($1 / 10); if (b < n) c[b]++ }
	END { for (i = 0; i < n; i++) printf "%d%s", (c[i] + 0) * 6, (i % 10 == 9 || i == n - 1) ? "\n" : " " }' "$WORK/window.txt")
TENS_RANGE=$(echo "$TENS" | tr ' ' '\n' | grep -v '^$' | sort -n | awk -v r="$RATE" 'NR == 1 {lo = $1} {hi = $1} END { printf "min %d, max %d /min (%+.1f%% to %+.1f%%)\n", lo, hi, (lo - r) * 100 / r, (hi - r) * 100 / r }')
# Sliding 60-second windows, every second, over the measurement window.
SLIDING=n/a
if [ "$DURATION" -ge 60 ]; then
	SLIDING=$(awk -v d="$DURATION" -v r="$RATE" '{ t[NR] = $1 }
		END {
			lo = -1; n = 0
			for (s = 0; s + 60 <= d + 1e-9; s++) {
				c = 0; for (i = 1; i <= NR; i++) if (t[i] >= s && t[i] < s + 60) c++
				if (lo < 0 || c < lo) lo = c; if (c > hi) hi = c; n++
			}
			printf "%d windows: min %d, max %d /min (%+.1f%% to %+.1f%%)\n", n, lo, hi, (lo - r) * 100 / r, (hi - r) * 100 / r
		}' "$WORK/window.txt")
fi
# The rate from the run's first delivery to the window.
PRE_RATE=$(awk -v w0="$W0" 'NR == 1 {f = $1 / 1e9} $1 / 1e9 < w0 {n++} END { if (w0 > f) printf "%.1f\n", n * 60 / (w0 - f); else print "n/a" }' "$ARR")
N_URGENT_WIN=$(awk -v w0="$W0" -v d="$DURATION" '$2 ~ /^urgent-/ { t = $1 / 1e9 - w0; if (t >= 0 && t < d) n++ } END { print n + 0 }' "$ARR")

# Urgent mail: the wait from the 250 to the sink, joined by recipient.
awk 'NR == FNR { at[$2] = $1 / 1e9; next }
	$3 != "nan" && ($2 in at) { printf "%.6f\n", at[$2] - $3 }' "$ARR" "$WORK/urgent.tsv" | sort -n >"$WORK/waits.txt"
N_SUBMITTED=$(awk '$4 == 1' "$WORK/urgent.tsv" | wc -l)
N_FAILED=$(awk '$4 != 1' "$WORK/urgent.tsv" | wc -l)
N_WAITS=$(wc -l <"$WORK/waits.txt")
wq() { # wq Q: the nearest-rank quantile of the waits, in ms
	awk -v q="$1" '{w[NR] = $1} END { if (NR == 0) { print "n/a"; exit } k = int(q * NR + 0.999999); if (k < 1) k = 1; printf "%.0f\n", w[k] * 1000 }' "$WORK/waits.txt"
}
P50=$(wq 0.5) P90=$(wq 0.9) P99=$(wq 0.99) PMAX=$(wq 1)
SRV_P50=$(hquantile "$WORK/final.prom" 0.5 certgate_delivery_latency_seconds provider=shaped class=transactional)
SRV_P99=$(hquantile "$WORK/final.prom" 0.99 certgate_delivery_latency_seconds provider=shaped class=transactional)
SHAPE_P99=$(hquantile "$WORK/final.prom" 0.99 certgate_shaping_wait_seconds provider=shaped class=transactional)
BULK_SHAPE_P50=$(hquantile "$WORK/final.prom" 0.5 certgate_shaping_wait_seconds provider=shaped class=bulk)
DELIVERED=$(msum "$WORK/final.prom" certgate_delivery_attempts_total provider=shaped result=delivered)
DEFERRED=$(msum "$WORK/final.prom" certgate_delivery_attempts_total result=deferred)
CONNS_OUT=$(msum "$WORK/final.prom" certgate_delivery_connections_total provider=shaped)
CG_CORES=$(calc %.2f "($CG_CPU1 - $CG_CPU0) / $DURATION")
OTHERS=$(calc %.2f "($BUSY1 - $BUSY0 - ($CG_CPU1 - $CG_CPU0) - $CHILD_CPU) / $DURATION")

verdict() { if [ "$1" = 1 ]; then echo PASS; else echo FAIL; fi; }
RATE_OK=$(awk -v d="$DEV" -v t="$TOLERANCE" 'BEGIN { print (d <= t && d >= -t) ? 1 : 0 }')
WAIT_OK=0
[ "$P99" != n/a ] && [ "$N_WAITS" -ge "$N_SUBMITTED" ] && WAIT_OK=$(awk -v p="$P99" -v t="$WAIT_TARGET" 'BEGIN { print (p < t * 1000) ? 1 : 0 }')

cat <<EOR

certgate shaping benchmark  ($(date -u +%FT%TZ), $(nproc) CPUs, $(go version | awk '{print $3}'), load average before: $LOADAVG)
  lane:     provider "shaped" for sink.example, max_message_rate $RATE/min, connection_limit $CONNS, max_deliveries_per_connection $PER_CONN
  bulk:     ${SRC[*]}
            $BULK_ACCEPTED accepted (X-Certgate-Class: bulk, $MSG_BYTES bytes) in $(calc %.1f "$W0 - $T0") s; exit $SRC_RC
  window:   $DURATION s from the last bulk acceptance; $BULK_QUEUED0 bulk queued at its start, $BULK_QUEUED1 at its end
  urgent:   $URGENT messages (X-Certgate-Class: transactional, one recipient each), one at a random point of each $(calc %.2f "$DURATION / $URGENT") s
  sink:     $SINK_SMTP, arrivals timed at the end of DATA$([ -z "$DKIM" ] || echo "; DKIM $DKIM")

  -----------------------------------------------------------------------------------
  rate over the window                  $RATE_WIN /min   ($N_WIN deliveries in $DURATION s, $N_URGENT_WIN of them urgent)
  deviation from $RATE/min               $DEV %
  rate from delivery spacing            $RATE_GAPS /min   ((n-1) / (last - first) within the window)
  10-s windows, deliveries per minute   $TENS_RANGE
$(printf '%s\n' "$TENS" | awk '{print "                                        " $0}')
  sliding 60-s windows (step 1 s)       $SLIDING
  gaps between deliveries               $GAPS
  rate before the window                $PRE_RATE /min   (first delivery to the window, while bulk was submitted)

  urgent wait, 250 -> sink              p50 $P50 ms, p90 $P90 ms, p99 $P99 ms, max $PMAX ms
                                        ($N_WAITS arrived of $N_SUBMITTED submitted; $N_FAILED submissions failed$([ "$N_FAILED" = 0 ] || echo ": $(tail -1 "$WORK/urgent.err" 2>/dev/null)"))
  certgate: delivery latency            transactional p50 $SRV_P50, p99 $SRV_P99 (accept -> delivered, histogram)
            shaping wait                transactional p99 $SHAPE_P99; bulk p50 $BULK_SHAPE_P50
            attempts                    delivered $DELIVERED, deferred $DEFERRED; $CONNS_OUT connections
  CPU over the window                   certgate $CG_CORES cores; other processes $OTHERS cores
  -----------------------------------------------------------------------------------
  $(verdict "$RATE_OK")  rate $RATE_WIN/min is within ±$TOLERANCE% of $RATE/min over $DURATION s ($DEV %)$([ "$DURATION" -ge 300 ] || echo "; the issue's figure is over DURATION=300")
  $(verdict "$WAIT_OK")  urgent p99 wait $P99 ms < $((WAIT_TARGET * 1000)) ms with $BULK_QUEUED0 to $BULK_QUEUED1 bulk queued in the same lane

  Rates count every delivery of the lane (bulk and urgent) whose end of DATA reached the
  sink inside the window. Urgent wait: from reading the 250 after DATA to the sink's end
  of DATA for that recipient (one clock); quantiles are nearest-rank. Certgate's
  histograms are interpolated within buckets. Work dir: $WORK$([ "$KEEP" = 1 ] || echo " (removed)")
EOR
[ "$N_WIN" -gt 0 ] || { log "no delivery inside the window"; exit 1; }
exit 0
