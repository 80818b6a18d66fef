#!/usr/bin/env bash
# bench/backlog.sh: certgate's memory with a large backlog, and how fast the
# backlog drains (issue 4: "with the sink down, queue 100,000 messages; peak
# RSS stays under 300 MB; bring the sink up and print the drain rate").
#
#   smtp-source --SMTP--> certgate (DKIM, durable SQLite spool, queue)
#                           --SMTP--> 127.0.0.1:PORT, where nothing listens yet
#
# 1. Load. certgate's only route points at a loopback port where nothing
#    listens, so every delivery attempt fails to connect and is deferred
#    along the retry schedule RETRY (short, so the drain starts soon). The
#    catch-all provider is unlimited (no rate) with CONNS connections.
#    smtp-source submits COUNT certificate mails of SIZE bytes over SESSIONS
#    sessions. Every second a sampler records certgate's VmRSS, the queue
#    gauge (certgate_queue_recipients), and the accepted, deferred and
#    delivered counters.
# 2. Drain. bench/sink starts on that port. Nothing is sent before the next
#    retry of some message comes due: deferred mail waits in certgate's
#    retry heap for its time, and nothing tells certgate that the receiver
#    is back. The script measures the time from the sink listening to its
#    first message, and the drain rate (messages from the sink listening to
#    the last one, and the steady rate from the sink's first message to its
#    last), until the sink has every message certgate accepted and the
#    queue is empty.
#
# It prints acceptance rate, peak RSS (VmHWM over the whole run, and the
# sampled VmRSS of each phase) against the issue's 300 MB, the data
# directory's size on disk at the end of the load and of the drain, the
# drain figures, and whether every accepted message arrived (once: the
# sink's count must equal the accepted count), with a PASS or FAIL line per
# target; it exits 0 when the run completed, whatever the figures.
#
# Usage: bench/backlog.sh [--count N] [--timeout SECONDS] [--keep]
# or through the environment:
#   COUNT=20000        messages to queue (the issue's figure: COUNT=100000,
#                      about 2.3 GB of spool and several minutes)
#   SESSIONS=20        parallel SMTP sessions of smtp-source
#   SIZE=20000         approximate size of a message in bytes
#   RETRY=1s,2s,5s     delivery.retry.schedule (the last step repeats)
#   JITTER=0.1         delivery.retry.jitter
#   CONNS=20           connection_limit of the sink's lane (rate unlimited)
#   VERIFY=1           the sink verifies every DKIM signature, after its 250
#                      reply, in VERIFY_WORKERS goroutines; its queue is
#                      bounded, and "verify waits" in the output counts the
#                      times a delivery had to wait for room (0: the
#                      verification did not slow the drain)
#   VERIFY_WORKERS=2
#   TIMEOUT=1800       bound on each phase (load, drain), in seconds
#   LOG_LEVEL=warn     certgate's log level (info logs every deferral: with
#                      a short retry schedule, millions of lines)
#   PROFILE_DIR=       write heap (binary, and text with the runtime's
#                      MemStats) and goroutine profiles of certgate at the
#                      end of the load, and a CPU profile of PROFILE_SECONDS
#                      of the load and of the drain, into this directory
#                      (read with `go tool pprof -top FILE`)
#   PROFILE_SECONDS=10
#   CERTGATE_BIN=      use this certgate binary instead of building one
#   KEEP=0             1: keep the work directory (logs, spool, samples)
#
# Nothing listens beyond 127.0.0.1. Every wait is bounded.
set -Eeuo pipefail

BENCH=backlog.sh
COUNT=${COUNT:-20000}
SESSIONS=${SESSIONS:-20}
SIZE=${SIZE:-20000}
RETRY=${RETRY:-1s,2s,5s}
JITTER=${JITTER:-0.1}
CONNS=${CONNS:-20}
VERIFY=${VERIFY:-1}
VERIFY_WORKERS=${VERIFY_WORKERS:-2}
TIMEOUT=${TIMEOUT:-1800}
LOG_LEVEL=${LOG_LEVEL:-warn}
PROFILE_DIR=${PROFILE_DIR:-}
PROFILE_SECONDS=${PROFILE_SECONDS:-10}
CERTGATE_BIN=${CERTGATE_BIN:-}
KEEP=${KEEP:-0}
RSS_TARGET_MB=300

usage() { sed -n '2,/^set -E/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
	case $1 in
	--count) COUNT=$2; shift 2 ;;
	--timeout) TIMEOUT=$2; shift 2 ;;
	--keep) KEEP=1; shift ;;
	-h | --help) usage 0 ;;
	*) echo "backlog.sh: unknown argument $1" >&2; usage 2 >&2 ;;
	esac
done
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
whole COUNT SESSIONS SIZE CONNS VERIFY_WORKERS TIMEOUT PROFILE_SECONDS
flag VERIFY KEEP
if [ "$COUNT" -lt 1 ] || [ "$SESSIONS" -lt 1 ] || [ "$CONNS" -lt 1 ] || [ "$TIMEOUT" -lt 30 ]; then
	echo "backlog.sh: COUNT, SESSIONS, CONNS >= 1 and TIMEOUT >= 30" >&2
	exit 2
fi
RETRY_YAML=$(echo "$RETRY" | tr -d ' ' | sed 's/,/, /g')
need_tools curl awk go du

bench_setup
build_tools
[ -z "$PROFILE_DIR" ] || mkdir -p "$PROFILE_DIR"
MSG=$WORK/certificate.eml
cert_mail "$MSG" "$SIZE"
MSG_BYTES=$(wire_bytes "$MSG")

# The sink's port: free now, nothing listens on it until the drain.
pick_port SINK_PORT

# shellcheck disable=SC2317 # start_certgate calls it
write_config() {
	bench_config "127.0.0.1:$SINK_PORT" \
		"{name: sink, domains: [sink.example], max_message_rate: \"0\", connection_limit: $CONNS, max_deliveries_per_connection: 1000}" \
		"retry: {schedule: [$RETRY_YAML], jitter: $JITTER}" "connect_timeout: 5s"
}
start_certgate write_config
log "certgate pid $CG_PID, smtp 127.0.0.1:$SMTP_PORT, $CG_URL; route to 127.0.0.1:$SINK_PORT (nothing listens yet)"

# --- the sampler ----------------------------------------------------------------
# A line a second: time, certgate's VmRSS (KiB), queued recipients, accepted,
# deferred and delivered attempts, messages at the sink (once it runs), and
# the Go heap in use (bytes of spans holding objects, live or not yet
# collected: what the Go runtime adds to RSS beyond a small overhead).
SAMPLES=$WORK/samples.tsv
sampler() {
	local m=$WORK/sampler.prom t sink
	while kill -0 "$CG_PID" 2>/dev/null; do
		t=$(now)
		scrape "$m"
		sink=0
		if [ -s "$WORK/sink.addrs" ]; then
			SINK_HTTP=$(sed -n 's/^http=//p' "$WORK/sink.addrs")
			sink=$(sink_stat messages)
		fi
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$(vm_kib VmRSS "$CG_PID")" \
			"$(msum "$m" certgate_queue_recipients)" "$(msum "$m" certgate_smtp_accepted_messages_total)" \
			"$(msum "$m" certgate_delivery_attempts_total result=deferred)" \
			"$(msum "$m" certgate_delivery_attempts_total result=delivered)" "${sink:-0}" \
			"$(msum "$m" go_memstats_heap_inuse_bytes)" >>"$SAMPLES"
		sleep "$(awk -v t="$t" -v n="$(now)" 'BEGIN { d = 1 - (n - t); print (d > 0.05 ? d : 0.05) }')"
	done
}
sampler &
SAMPLER_PID=$!
track "$SAMPLER_PID"

# --- 1. load, with nothing listening at the route ---------------------------------
CG_CPU0=$(proc_cpu "$CG_PID")
BUSY0=$(sys_busy)
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
SRC=(smtp-source -s "$SESSIONS" -m "$COUNT" -F "$MSG" -f sender@ca.example -t titular@sink.example "127.0.0.1:$SMTP_PORT")
log "load: ${SRC[*]} ($MSG_BYTES bytes a message)"
T0=$(now)
PROF_PID=
if [ -n "$PROFILE_DIR" ]; then
	cg_profile profile "$PROFILE_DIR/cpu-load.prof" "$PROFILE_SECONDS" &
	PROF_PID=$!
	track "$PROF_PID"
fi
timeout "$TIMEOUT" "${SRC[@]}" >"$WORK/smtp-source.out" 2>"$WORK/smtp-source.err" &
SRC_PID=$!
track "$SRC_PID"
SRC_RC=0
wait "$SRC_PID" || SRC_RC=$?
T1=$(now)
[ "$SRC_RC" = 0 ] || log "smtp-source exit $SRC_RC: $(tail -3 "$WORK/smtp-source.err")"
[ -z "$PROF_PID" ] || wait "$PROF_PID" || log "CPU profile of the load failed"
CG_CPU1=$(proc_cpu "$CG_PID")
scrape "$WORK/load.prom"
ACCEPTED=$(msum "$WORK/load.prom" certgate_smtp_accepted_messages_total)
REJECTED=$(msum "$WORK/load.prom" certgate_smtp_rejected_total)
QUEUED_END=$(msum "$WORK/load.prom" certgate_queue_recipients)
DEFERRED_LOAD=$(msum "$WORK/load.prom" certgate_delivery_attempts_total result=deferred)
HWM_LOAD=$(vm_kib VmHWM "$CG_PID")
DISK_LOAD=$(du -sk "$WORK/data" | cut -f1)
GOGC_NOW=$(msum "$WORK/load.prom" go_gc_gogc_percent)
GOLIMIT=$(msum "$WORK/load.prom" go_gc_gomemlimit_bytes)
GC_SETTINGS="GOGC $GOGC_NOW, memory limit $(awk -v b="$GOLIMIT" 'BEGIN { if (b >= 2^62) print "none"; else printf "%.0f MiB", b / 2^20 }')"
if [ -n "$PROFILE_DIR" ]; then
	cg_profile heap "$PROFILE_DIR/heap-backlog.prof" || log "heap profile failed"
	cg_profile "heap?debug=1" "$PROFILE_DIR/heap-backlog.txt" || log "heap profile (text, with MemStats) failed"
	cg_profile "goroutine?debug=1" "$PROFILE_DIR/goroutines-backlog.txt" || log "goroutine profile failed"
fi
LOAD_S=$(calc %.2f "$T1 - $T0")
log "accepted $ACCEPTED in $LOAD_S s; queue holds $QUEUED_END; $DEFERRED_LOAD deferrals so far; VmHWM $(mib "$HWM_LOAD") MiB"

# A pause with the backlog in place, at least one retry step, so that the
# drain starts from deferred mail, as after an outage.
HOLD=$(echo "$RETRY" | tr ',' '\n' | tail -1 | tr -d ' ')
sleep "$HOLD" 2>/dev/null || sleep 5
[ "$ACCEPTED" -ge 1 ] || die "certgate accepted nothing: $(tail -3 "$WORK/smtp-source.err") $(tail -3 "$WORK/certgate.log")"

# --- 2. the sink comes up; the drain -----------------------------------------------
SINK_ARGS=()
[ "$VERIFY" = 1 ] && SINK_ARGS=(-dkim-txt "$TXT" -verify-workers "$VERIFY_WORKERS")
CG_CPU2=$(proc_cpu "$CG_PID")
start_sink "127.0.0.1:$SINK_PORT" "${SINK_ARGS[@]}"
log "sink up on $SINK_SMTP (stats http://$SINK_HTTP/stats); draining"
if [ -n "$PROFILE_DIR" ]; then
	cg_profile profile "$PROFILE_DIR/cpu-drain.prof" "$PROFILE_SECONDS" &
	PROF_PID=$!
	track "$PROF_PID"
fi
deadline=$(($(date +%s) + TIMEOUT))
moved=$(date +%s)
prev=-1
DRAINED=0
while :; do
	got=$(sink_stat messages)
	got=${got:-0}
	scrape "$WORK/drain.prom"
	queued=$(msum "$WORK/drain.prom" certgate_queue_recipients)
	if [ "$got" -ge "$ACCEPTED" ] && [ "$queued" = 0 ]; then DRAINED=1; break; fi
	if [ "$got" != "$prev" ]; then prev=$got; moved=$(date +%s); fi
	if [ "$(date +%s)" -ge "$deadline" ]; then log "drain: TIMEOUT ($TIMEOUT s) reached"; break; fi
	if [ $(($(date +%s) - moved)) -ge 120 ]; then log "drain: no progress for 120 s"; break; fi
	sleep 0.2
done
T3=$(now)
[ -z "$PROF_PID" ] || wait "$PROF_PID" || log "CPU profile of the drain failed"
# Let the verification queue empty before the last read.
for _ in $(seq 100); do
	[ "$VERIFY" = 0 ] || [ "$(sink_stat pending)" = 0 ] && break
	sleep 0.1
done
CG_CPU3=$(proc_cpu "$CG_PID")
BUSY1=$(sys_busy)
HWM=$(vm_kib VmHWM "$CG_PID")
DISK_END=$(du -sk "$WORK/data" | cut -f1)
scrape "$WORK/end.prom"
curl -fsS -m 5 "http://$SINK_HTTP/stats" >"$WORK/sink-stats.json"
stop_pid "$SAMPLER_PID" 5
GOT=$(sink_stat messages)
FIRST_NS=$(sink_stat first_unix_ns)
LAST_NS=$(sink_stat last_unix_ns)
STEADY=$(sink_stat rate_per_s)
CONNS_IN=$(sink_stat connections)
DELIVERED=$(msum "$WORK/end.prom" certgate_delivery_attempts_total result=delivered)
DEFERRED=$(msum "$WORK/end.prom" certgate_delivery_attempts_total result=deferred)
BOUNCED=$(msum "$WORK/end.prom" certgate_delivery_attempts_total result=bounced)
children_cpu
SINK_CPU=$(proc_cpu "$SINK_PID")

# --- figures -------------------------------------------------------------------------
T_UP=$SINK_UP
TTFD=n/a DRAIN_S=n/a DRAIN_RATE=n/a
if [ "${FIRST_NS:-0}" -gt 0 ]; then
	TTFD=$(calc %.2f "$FIRST_NS / 1e9 - $T_UP")
	DRAIN_S=$(calc %.2f "$LAST_NS / 1e9 - $T_UP")
	DRAIN_RATE=$(calc %.0f "$GOT / ($LAST_NS / 1e9 - $T_UP)")
fi
ACCEPT_RATE=$(calc %.0f "$ACCEPTED / $LOAD_S")
# Peak sampled RSS in each phase.
PEAK_LOAD=$(awk -v t="$T_UP" '$1 < t && $2 > m {m = $2} END {print m + 0}' "$SAMPLES")
PEAK_DRAIN=$(awk -v t="$T_UP" '$1 >= t && $2 > m {m = $2} END {print m + 0}' "$SAMPLES")
PEAK_QUEUE=$(awk '$3 > m {m = $3} END {print m + 0}' "$SAMPLES")
PEAK_HEAP=$(awk '$8 > m {m = $8} END {printf "%.0f\n", m / 2^20}' "$SAMPLES")
# Deferrals counted after the sink listened: attempts refused before it came
# up whose outcome certgate recorded late, or new failures; and when the
# counter last moved.
LATE_DEFERRALS=$(awk -v up="$T_UP" '$1 < up {d0 = $5} $1 >= up {d1 = $5} END {print d1 - d0}' "$SAMPLES")
LAST_DEFERRAL=$(awk -v up="$T_UP" '$1 >= up && $5 != prev && NR > 1 {last = $1} {prev = $5} END { if (last > up) printf "%.1f s after the sink listened\n", last - up; else print "none after the sink listened" }' "$SAMPLES")
WALL=$(calc %.2f "$T3 - $T0")
CG_CORES_LOAD=$(calc %.2f "($CG_CPU1 - $CG_CPU0) / $LOAD_S")
CG_CORES_DRAIN=n/a
[ "$DRAIN_S" = n/a ] || CG_CORES_DRAIN=$(calc %.2f "($CG_CPU3 - $CG_CPU2) / ($T3 - $T_UP)")
OTHERS=$(calc %.2f "($BUSY1 - $BUSY0 - ($CG_CPU3 - $CG_CPU0) - $SINK_CPU - $CHILD_CPU) / $WALL")
HWM_MB=$(calc %.1f "$HWM * 1024 / 1e6")
RSS_OK=$(awk -v k="$HWM" -v t="$RSS_TARGET_MB" 'BEGIN { print (k * 1024 < t * 1e6) ? 1 : 0 }')
if [ "$VERIFY" = 1 ]; then
	DKIM="pass $(sink_stat pass), fail $(sink_stat fail), unsigned $(sink_stat none); verified after the 250 by $VERIFY_WORKERS workers, verify waits $(sink_stat verify_waits)"
else
	DKIM="not verified (VERIFY=0)"
fi

# The timeline: about 30 rows of the samples.
timeline() {
	awk -v t0="$T0" -v up="$T_UP" -v n="$(wc -l <"$SAMPLES")" '
		BEGIN { step = int(n / 30); if (step < 1) step = 1
			printf "  %7s  %-5s  %8s  %8s  %9s  %9s  %10s  %9s  %9s\n", "t (s)", "phase", "RSS MiB", "heap MiB", "queued", "accepted", "deferrals", "delivered", "at sink" }
		(NR - 1) % step == 0 || NR == n {
			printf "  %7.1f  %-5s  %8.0f  %8.0f  %9d  %9d  %10d  %9d  %9d\n", $1 - t0, ($1 < up ? "load" : "drain"), $2 / 1024, $8 / 2^20, $3, $4, $5, $6, $7 }' "$SAMPLES"
}
verdict() { if [ "$1" = 1 ]; then echo PASS; else echo FAIL; fi; }
COMPLETE=0
[ "$DRAINED" = 1 ] && [ "$GOT" = "$ACCEPTED" ] && COMPLETE=1

cat <<EOR

certgate backlog benchmark  ($(date -u +%FT%TZ), $(nproc) CPUs, $(go version | awk '{print $3}'), load average before: $LOADAVG)
  load:     ${SRC[*]}
  message:  $MSG_BYTES bytes (text and a base64 certificate), 1 recipient each
  certgate: DKIM RSA-2048, SQLite spool; Go collector: $GC_SETTINGS (at the end of the load);
            route to 127.0.0.1:$SINK_PORT, nothing listening during the load;
            retry schedule [$RETRY_YAML] (the last step repeats), jitter $JITTER; lane unlimited, $CONNS connections
  sink:     started on 127.0.0.1:$SINK_PORT $HOLD after the load ended; DKIM verification $([ "$VERIFY" = 1 ] && echo "on, $VERIFY_WORKERS workers, after the 250" || echo off)

$(timeline)

  -----------------------------------------------------------------------------------
  load (sink down)
    messages accepted                     $ACCEPTED of $COUNT   (smtp-source exit $SRC_RC; refusals $REJECTED)
    acceptance rate                       $ACCEPT_RATE msg/s   ($LOAD_S s)
    queued at the end of the load         $QUEUED_END recipients   (peak sampled $PEAK_QUEUE)
    deferrals during the load             $DEFERRED_LOAD   (every attempt: connection refused; $(calc %.0f "$DEFERRED_LOAD / $LOAD_S")/s, each one durable write)
    peak RSS during the load              $(mib "$HWM_LOAD") MiB VmHWM   (sampled VmRSS peak $(mib "$PEAK_LOAD") MiB)
    data directory at the end of the load $((DISK_LOAD / 1024)) MiB
    certgate CPU                          $CG_CORES_LOAD cores
  drain (sink up)
    time to first delivery                $TTFD s   (sink listening -> its first message)
    drain time                            $DRAIN_S s   (sink listening -> last message)
    drain rate                            $DRAIN_RATE msg/s   (all messages over the drain time)
    steady drain rate                     $(calc %.0f "${STEADY:-0}") msg/s   (sink's first -> last message)
    messages at the sink                  $GOT   (certgate: delivered $DELIVERED, deferred $DEFERRED in all, bounced $BOUNCED; $CONNS_IN connections)
    deferrals after the sink listened     $LATE_DEFERRALS   (the last $LAST_DEFERRAL)
    peak RSS during the drain             sampled VmRSS peak $(mib "$PEAK_DRAIN") MiB
    data directory after the drain        $((DISK_END / 1024)) MiB   (SQLite keeps freed pages for reuse)
    certgate CPU                          $CG_CORES_DRAIN cores
    DKIM at the sink                      $DKIM
  whole run
    certgate peak RSS (VmHWM)             $(mib "$HWM") MiB = $HWM_MB MB   (peak sampled Go heap in use $PEAK_HEAP MiB)
    other processes on the machine        $OTHERS cores on average over $WALL s
  -----------------------------------------------------------------------------------
  $(verdict "$RSS_OK")  peak RSS $HWM_MB MB < $RSS_TARGET_MB MB with $QUEUED_END messages queued$([ "$COUNT" = 100000 ] || echo " (the issue's figure is at COUNT=100000)")
  $(verdict "$COMPLETE")  every accepted message arrived exactly once: $GOT at the sink of $ACCEPTED accepted$([ "$DRAINED" = 1 ] || echo "; the drain did not finish")

  Why the first delivery waits: a deferred message sits in certgate's retry heap until
  its next attempt is due, at most $HOLD (the schedule's last step) plus jitter after its
  last refused connection; nothing tells certgate that the receiver is back, so the first
  delivery comes with the first retry due after the sink listens. With $ACCEPTED messages
  retried every $HOLD, one falls due every few milliseconds, hence $TTFD s here; a small
  backlog, or a longer schedule, waits up to the step.
  Peak RSS is the kernel's high-water mark of certgate's resident memory (VmHWM); the
  sampled figures are VmRSS once a second. Work dir: $WORK$([ "$KEEP" = 1 ] || echo " (removed)")
EOR
[ "$DRAINED" = 1 ] || { log "incomplete drain: $GOT of $ACCEPTED at the sink (KEEP=1 keeps the logs)"; exit 1; }
exit 0
