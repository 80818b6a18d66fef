#!/usr/bin/env bash
# bench/relay.sh: certgate end to end, on loopback, side by side with
# Postfix and OpenDKIM.
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
# Then (COMPARE=1, the default) the same load goes through the field's
# standard, into a fresh sink of its own:
#
#   smtp-source --SMTP--> Postfix smtpd --milter--> OpenDKIM (RSA-2048,
#   relaxed/relaxed, the same key) --> Postfix queue (fsynced) --SMTP-->
#   bench/sink
#
# a private Postfix instance and OpenDKIM daemon, configured in the work
# directory, on loopback only, and stopped and removed afterwards (the
# Debian packages are installed if missing, as root, and stay installed).
# In both runs bench/probe adds one SMTP session to smtp-source's, sending
# the same message, and times each of its transactions on the client side
# (end of DATA to reply: the accept latency a submitting system sees), and
# samples the relay's processes (peak of the summed RSS and PSS, CPU). A
# table puts the two side by side with the ratio certgate/Postfix.
#
# Usage: bench/relay.sh [--sessions N] [--count N] [--size BYTES] [--reuse]
#                       [--no-verify] [--timeout SECONDS] [--keep]
#                       [--certgate-only | --postfix-only]
# or the same through the environment:
#   SESSIONS=20        parallel SMTP sessions (smtp-source -s)
#   COUNT=10000        messages in total (smtp-source -m)
#   SIZE=20000         approximate size of the test message in bytes
#   REUSE=0            1: send every message of a session over one connection
#                      (smtp-source -d); 0: one connection per message
#   VERIFY=1           0: the sink does not verify DKIM signatures
#   VERIFY_WORKERS=1   DKIM verification goroutines in the sink
#   VERIFY_LIVE=0      0: the sink keeps the messages and verifies every
#                      signature once the load is over (it is idle 1 s), so
#                      its verifier takes no CPU from the relay under test;
#                      1: it verifies during the load, sharing the 2 cores
#   TIMEOUT=600        bound on the load and the drain, in seconds
#   LOG_LEVEL=info     certgate's log level (it logs every accept and delivery)
#   KEEP=0             1: keep the work directory (logs, spool, config)
#   CERTGATE_BIN=      use this certgate binary instead of building one
#                      (for example a copy built with net/http/pprof)
#   PERF_DATA=         record `perf record -g` of certgate during the load
#                      into this file (needs perf)
#   WAIT_IDLE=0        wait up to this many seconds for other processes to go quiet
#                      (under 0.3 cores busy) before the load (before each run)
#   DKIM_ALGORITHM=rsa2048  or ed25519 (to see what RSA signing costs);
#                      Postfix's OpenDKIM signs with RSA-2048 whatever this says
#   PROFILE=           write a CPU profile of certgate during the load to this
#                      file, from its /debug/pprof (admin token); read it with
#                      `go tool pprof -top FILE`
#   PROFILE_SECONDS=8  how long to profile
#   COMPARE=1          0: certgate alone (--certgate-only); 1: then Postfix
#                      with an OpenDKIM milter (needs root)
#   POSTFIX_ONLY=0     1: Postfix with OpenDKIM alone (--postfix-only)
#   PROBE=1            0: no client-side probe session (no client-side latency)
#   PROBE_INTERVAL=0   the probe starts a transaction at most every this many
#                      milliseconds (0: back to back, like smtp-source)
#   PF_PROCESS_LIMIT=100  Postfix's default_process_limit (raised to
#                      SESSIONS * 2 + 10 if that is more)
#   PF_MILTER=unix     how Postfix reaches OpenDKIM: a unix socket, as
#                      Debian's packages set it up; inet: TCP on loopback,
#                      where the milter's small writes meet Nagle's algorithm
#                      and delayed ACKs (about 90 ms per message here)
#   PF_CONN_CACHE=1    Postfix keeps its connections to the sink open
#                      (smtp_connection_cache_destinations); 0: only on
#                      demand, Postfix's default
#
# Nothing listens beyond 127.0.0.1. Every wait is bounded.
set -Eeuo pipefail

SESSIONS=${SESSIONS:-20}
COUNT=${COUNT:-10000}
SIZE=${SIZE:-20000}
REUSE=${REUSE:-0}
VERIFY=${VERIFY:-1}
VERIFY_WORKERS=${VERIFY_WORKERS:-1}
VERIFY_LIVE=${VERIFY_LIVE:-0}
TIMEOUT=${TIMEOUT:-600}
LOG_LEVEL=${LOG_LEVEL:-info}
KEEP=${KEEP:-0}
CERTGATE_BIN=${CERTGATE_BIN:-}
PERF_DATA=${PERF_DATA:-}
DKIM_ALGORITHM=${DKIM_ALGORITHM:-rsa2048}
PROFILE=${PROFILE:-}
PROFILE_SECONDS=${PROFILE_SECONDS:-8}
WAIT_IDLE=${WAIT_IDLE:-0}
COMPARE=${COMPARE:-1}
POSTFIX_ONLY=${POSTFIX_ONLY:-0}
PROBE=${PROBE:-1}
PROBE_INTERVAL=${PROBE_INTERVAL:-0}
PF_PROCESS_LIMIT=${PF_PROCESS_LIMIT:-100}
PF_CONN_CACHE=${PF_CONN_CACHE:-1}
PF_MILTER=${PF_MILTER:-unix}
case $PF_MILTER in unix|inet) ;; *) echo "relay.sh: PF_MILTER must be unix or inet, not '$PF_MILTER'" >&2; exit 2 ;; esac

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
	--certgate-only) COMPARE=0; POSTFIX_ONLY=0; shift ;;
	--postfix-only) POSTFIX_ONLY=1; shift ;;
	-h|--help) usage 0 ;;
	*) echo "relay.sh: unknown argument $1" >&2; usage 2 >&2 ;;
	esac
done
for v in SESSIONS COUNT SIZE TIMEOUT VERIFY_WORKERS WAIT_IDLE PROBE_INTERVAL PF_PROCESS_LIMIT; do
	case ${!v} in ''|*[!0-9]*) echo "relay.sh: $v must be a whole number, not '${!v}'" >&2; exit 2 ;; esac
done
for v in COMPARE POSTFIX_ONLY PROBE REUSE VERIFY KEEP PF_CONN_CACHE; do
	case ${!v} in 0|1) ;; *) echo "relay.sh: $v must be 0 or 1, not '${!v}'" >&2; exit 2 ;; esac
done
[ "$SESSIONS" -ge 1 ] && [ "$COUNT" -ge 1 ] && [ "$TIMEOUT" -ge 10 ] || { echo "relay.sh: SESSIONS and COUNT >= 1, TIMEOUT >= 10" >&2; exit 2; }
if [ "$POSTFIX_ONLY" = 1 ]; then
	ARMS=(postfix)
elif [ "$COMPARE" = 1 ]; then
	ARMS=(certgate postfix)
else
	ARMS=(certgate)
fi
has_arm() { [[ " ${ARMS[*]} " == *" $1 "* ]]; }

log() { printf '[relay.sh %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }
now() { date +%s.%N; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# --- smtp-source, Postfix and OpenDKIM ----------------------------------------
PATH=$PATH:/usr/sbin:/sbin
apt_install() { # apt_install PACKAGE...: bounded, noninteractive, as root
	export DEBIAN_FRONTEND=noninteractive
	if ! timeout 600 apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1; then
		timeout 300 apt-get update >/dev/null
		timeout 600 apt-get install -y --no-install-recommends "$@" >/dev/null
	fi
}
if ! command -v smtp-source >/dev/null; then
	[ "$(id -u)" = 0 ] || die "smtp-source is missing: apt-get install postfix (as root)"
	log "installing postfix for smtp-source (no configuration, not started)"
	echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
	echo "postfix postfix/mailname string bench.invalid" | debconf-set-selections
	apt_install postfix
	command -v smtp-source >/dev/null || die "postfix installed but smtp-source not found"
fi
if has_arm postfix; then
	[ "$(id -u)" = 0 ] || die "the Postfix run needs root (Postfix's master drops to the postfix user); --certgate-only runs certgate alone"
	if ! command -v opendkim >/dev/null; then
		log "installing opendkim (its own daemon is not used: this script runs a private one)"
		apt_install opendkim
		command -v opendkim >/dev/null || die "opendkim installed but not found"
		# The package may have started the system's instance (on a unix
		# socket); only the binary is wanted here.
		if [ -d /run/systemd/system ] && systemctl is-active --quiet opendkim 2>/dev/null; then
			timeout 60 systemctl disable --now opendkim >/dev/null 2>&1 || log "could not stop the system's opendkim service"
		fi
	fi
	for u in postfix opendkim; do id "$u" >/dev/null 2>&1 || die "no $u user (its Debian package creates it)"; done
	getent group postdrop >/dev/null || die "no postdrop group (the postfix package creates it)"
	PF_VERSION=$(postconf -d -h mail_version 2>/dev/null || echo "?")
	OD_VERSION=$(opendkim -V 2>/dev/null | sed -n 's/.*OpenDKIM Filter v//p' | head -1)
fi
for tool in curl awk go bc; do command -v $tool >/dev/null || die "$tool is required"; done
if [ -n "$PERF_DATA" ]; then command -v perf >/dev/null || die "PERF_DATA needs perf"; fi

# --- work directory and cleanup ---------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/certgate-relay.XXXXXX")
PIDS=()    # every process we start, ended by pid only
PF_CONF=   # the private Postfix instance's config_directory, once written
PF_ALT=    # its directory when it cannot live under WORK
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	[ -n "$PF_CONF" ] && pf_stop
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
		kill -TERM "${PIDS[i]}" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
	done
	wait 2>/dev/null || true
	if [ "$KEEP" = 1 ]; then
		log "kept $WORK${PF_ALT:+ and $PF_ALT}"
	else
		rm -rf "$WORK"
		[ -n "$PF_ALT" ] && rm -rf "$PF_ALT"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# stop_pid PID [SECONDS]: SIGTERM, a bounded wait, then SIGKILL; reaps it.
stop_pid() {
	local pid=$1 n=$((${2:-10} * 10))
	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq "$n"); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

# --- build ------------------------------------------------------------------
log "building into $WORK"
(cd "$REPO" && timeout 600 go build -buildvcs=false -o "$WORK/sink" ./bench/sink) || die "building bench/sink"
(cd "$REPO" && timeout 600 go build -buildvcs=false -o "$WORK/probe" ./bench/probe) || die "building bench/probe"
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
TXTS=$TXT  # the sink's TXT records
PF_KEY=$KEY
if has_arm postfix && [ "$DKIM_ALGORITHM" != rsa2048 ]; then
	# OpenDKIM signs with RSA-2048, as the comparison is about.
	"$CG" dkim keygen --domain ca.example --selector benchrsa --algorithm rsa2048 --out "$WORK/dkim" >/dev/null
	PF_KEY=$WORK/dkim/benchrsa._domainkey.ca.example.pem
	TXTS=$TXT,$WORK/dkim/benchrsa._domainkey.ca.example.txt
fi

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

# --- helpers ------------------------------------------------------------------
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() {
	local p
	for _ in $(seq 50); do
		p=$((20000 + RANDOM % 40000))
		port_free "$p" && { echo "$p"; return; }
	done
	die "no free port found"
}
sink_field() { # sink_field JSON KEY: a number from the sink's (or probe's) flat JSON
	printf '%s' "$1" | tr -d ' \n' | sed -n "s/.*\"$2\":\([-0-9.e+]*\).*/\1/p" | head -1
}
file_field() { # file_field FILE KEY: the same from a file, empty if it is missing
	[ -s "$1" ] && sink_field "$(cat "$1")" "$2"
	return 0
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
f() { printf '%.2f' "$1"; }
cores() { echo "scale=2; $1 / $WALL" | bc -l | sed 's/^\./0./; s/^-\./-0./'; }
rate() { echo "scale=1; $1 / $2" | bc -l; }

# start_sink DIR: a fresh counting sink for one run, its files in DIR.
start_sink() {
	local d=$1
	local args=(-addr-file "$d/sink.addrs" -max-duration "$((TIMEOUT * 2 + 300))s")
	[ "$VERIFY" = 1 ] && args+=(-dkim-txt "$TXTS" -verify-workers "$VERIFY_WORKERS")
	[ "$VERIFY" = 1 ] && [ "$VERIFY_LIVE" != 1 ] && args+=(-verify-idle 1s)
	"$WORK/sink" "${args[@]}" >"$d/sink.out" 2>"$d/sink.log" &
	SINK_PID=$!
	PIDS+=("$SINK_PID")
	for _ in $(seq 100); do [ -s "$d/sink.addrs" ] && break; sleep 0.1; done
	[ -s "$d/sink.addrs" ] || die "sink did not start: $(cat "$d/sink.log")"
	SINK_SMTP=$(sed -n 's/^smtp=//p' "$d/sink.addrs")
	SINK_HTTP=$(sed -n 's/^http=//p' "$d/sink.addrs")
}

wait_idle() {
	[ "$WAIT_IDLE" -gt 0 ] || return 0
	# A shared machine skews every figure: wait (bounded) for a quiet moment.
	local idle_deadline=$(($(date +%s) + WAIT_IDLE)) s0 s1 busy
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
}

# run_load ADDR DIR PROCS_ARGS...: smtp-source and the probe session against
# ADDR, the relay's processes (probe procs PROCS_ARGS) sampled from before the
# load until stop_watch. Sets SRC, T0, T1, SRC_RC, SRC_CPU, SINK_CPU0, SYS0,
# LOADAVG and WATCH_PID; the files go to DIR. HOOK, if set, runs just before
# the load starts (the certgate run's profilers).
run_load() {
	local addr=$1 d=$2
	shift 2
	SRC=(smtp-source -c -s "$SESSIONS" -m "$COUNT" -F "$MSG" -f sender@ca.example -t rcpt@sink.example)
	[ "$REUSE" = 1 ] && SRC+=(-d)
	SRC+=("$addr")
	wait_idle
	log "load: ${SRC[*]}$([ "$PROBE" = 1 ] && echo " + 1 probe session") (message $MSG_BYTES bytes on the wire)"
	"$WORK/probe" procs "$@" -max-duration "$((TIMEOUT * 2 + 60))s" -out "$d/procs.json" 2>"$d/procs.log" &
	WATCH_PID=$!
	PIDS+=("$WATCH_PID")
	sleep 0.3 # its first sample, the baseline, before the load
	${HOOK:-}
	SINK_CPU0=$(proc_cpu "$SINK_PID")
	SYS0=$(sys_cpu)
	times >"$d/times0" # a builtin in this shell: a subshell would count only its own children
	LOADAVG=$(cut -d" " -f1-3 /proc/loadavg)
	T0=$(now)
	# In the background so that a signal to this script is handled at once
	# (bash runs traps only between foreground commands); wait reaps it, so
	# `times` counts its CPU.
	timeout "$TIMEOUT" "${SRC[@]}" >"$d/smtp-source.out" 2>"$d/smtp-source.err" &
	local src_pid=$! probe_pid=
	PIDS+=("$src_pid")
	if [ "$PROBE" = 1 ]; then
		local pargs=(-addr "$addr" -msg "$MSG" -from sender@ca.example -to rcpt@sink.example
			-interval "${PROBE_INTERVAL}ms" -max-duration "$((TIMEOUT + 60))s" -out "$d/probe.json")
		[ "$REUSE" = 1 ] && pargs+=(-reuse)
		"$WORK/probe" smtp "${pargs[@]}" 2>"$d/probe.log" &
		probe_pid=$!
		PIDS+=("$probe_pid")
	fi
	SRC_RC=0
	wait "$src_pid" || SRC_RC=$?
	T1=$(now)
	# The probe ends its transaction under way and reports.
	[ -n "$probe_pid" ] && stop_pid "$probe_pid" 30
	times >"$d/times1"
	SRC_CPU=$(echo "$(children_cpu "$d/times1") - $(children_cpu "$d/times0")" | bc -l)
	[ "$SRC_RC" = 0 ] || log "smtp-source exit $SRC_RC: $(tail -3 "$d/smtp-source.err")"
	return 0
}

# drain ACCEPTED SETTLED: waits (bounded) until the sink has received and
# verified at least ACCEPTED messages and the command SETTLED succeeds (the
# relay's queue is empty). Sets GOT and STATS.
drain() {
	local accepted=$1 settled=$2 deadline last_progress prev=-1 pending
	deadline=$(($(date +%s) + TIMEOUT))
	last_progress=$(date +%s)
	while :; do
		STATS=$(curl -fsS -m 5 "http://$SINK_HTTP/stats")
		GOT=$(sink_field "$STATS" messages)
		pending=$(sink_field "$STATS" pending)
		if [ "$GOT" -ge "$accepted" ] && [ "${pending:-0}" = 0 ] && $settled; then break; fi
		[ "$GOT" != "$prev" ] && last_progress=$(date +%s) && prev=$GOT
		if [ "$(date +%s)" -ge "$deadline" ] || [ $(($(date +%s) - last_progress)) -ge 60 ]; then
			log "drain stopped: sink has $GOT of $accepted accepted messages"
			break
		fi
		sleep 0.2
	done
}

# after_load DIR: the figures common to both runs, once the sink has it all:
# ends the sampling, reads the sink, the probe and the sampler. Sets T2,
# WALL, STATS, GOT, E2E_S, E2E_RATE, SUB_S, SINK_CPU, SINK_HWM, SYS_BUSY,
# SYS_BUSY_S, DKIM, DKIM_WAITS, CONNS_IN and the P_* (probe) and W_*
# (sampler) figures.
after_load() {
	local d=$1 sys1 sink_cpu1 last_ns
	T2=$(now)
	sink_cpu1=$(proc_cpu "$SINK_PID")
	sys1=$(sys_cpu)
	stop_pid "$WATCH_PID" 10
	SINK_HWM=$(awk '/^VmHWM/ {print $2}' "/proc/$SINK_PID/status")
	STATS=$(curl -fsS -m 5 "http://$SINK_HTTP/stats")
	printf '%s\n' "$STATS" >"$d/sink-stats.json"
	GOT=$(sink_field "$STATS" messages)
	last_ns=$(sink_field "$STATS" last_unix_ns)
	CONNS_IN=$(sink_field "$STATS" connections)
	SUB_S=$(echo "$T1 - $T0" | bc -l)
	E2E_S=$(echo "scale=6; ($last_ns / 1000000000) - $T0" | bc -l)
	E2E_RATE=n/a
	[ "${last_ns:-0}" -gt 0 ] && E2E_RATE=$(rate "$GOT" "$E2E_S")
	SINK_CPU=$(echo "$sink_cpu1 - $SINK_CPU0" | bc -l)
	WALL=$(echo "$T2 - $T0" | bc -l)
	SYS_BUSY=$(echo "$SYS0 $sys1" | awk '{if ($4 > $2) printf "%.0f", 100 * ($3 - $1) / ($4 - $2); else print "?"}')
	SYS_BUSY_S=$(echo "$SYS0 $sys1" | awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($3 - $1) / hz}')
	if [ "$VERIFY" = 1 ]; then
		DKIM_PASS=$(sink_field "$STATS" pass)
		DKIM="pass $DKIM_PASS, fail $(sink_field "$STATS" fail), unsigned $(sink_field "$STATS" none)"
		DKIM_WAITS=$(sink_field "$STATS" verify_waits)
	else
		DKIM_PASS=n/a
		DKIM="not verified (VERIFY=0)"
		DKIM_WAITS=0
	fi
	P_OK=$(file_field "$d/probe.json" ok)
	P_FAILED=$(file_field "$d/probe.json" failed)
	P_P50=$(file_field "$d/probe.json" accept_p50_ms)
	P_P99=$(file_field "$d/probe.json" accept_p99_ms)
	P_MEAN=$(file_field "$d/probe.json" accept_mean_ms)
	P_TP50=$(file_field "$d/probe.json" transaction_p50_ms)
	P_TP99=$(file_field "$d/probe.json" transaction_p99_ms)
	W_CPU=$(file_field "$d/procs.json" cpu_seconds)
	W_RSS=$(file_field "$d/procs.json" peak_rss_kib)
	W_PSS=$(file_field "$d/procs.json" peak_pss_kib)
	W_PROCS=$(file_field "$d/procs.json" peak_procs)
	W_SEEN=$(file_field "$d/procs.json" procs_seen)
	W_TOP=$(sed -n 's/.*"cpu_top": "\(.*\)".*/\1/p' "$d/procs.json" 2>/dev/null || true)
	if [ "$PROBE" = 1 ]; then
		if [ -n "$P_OK" ]; then
			PROBE_LINE="$P_P50 ms / $P_P99 ms   (mean $P_MEAN ms; $P_OK transactions, $P_FAILED failed)"
			PROBE_TXN="$P_TP50 ms / $P_TP99 ms"
		else
			PROBE_LINE="n/a (the probe reported nothing: $(tail -1 "$d/probe.log" 2>/dev/null))"
			PROBE_TXN=n/a
		fi
	else
		PROBE_LINE="n/a (PROBE=0)"
		PROBE_TXN=n/a
	fi
}
mib() { [ -n "$1" ] && echo $(($1 / 1024)) || echo n/a; }

declare -A R # results by "run.figure", for the table
record() { # record RUN NAME: the common figures of the run that just ended, and a word on it
	local run=$1
	if [ "$(echo "$OTHER_CPU / $WALL > 0.25" | bc -l)" = 1 ]; then
		log "WARNING: other processes used $(cores "$OTHER_CPU") cores during the run (load average before: $LOADAVG); the figures understate $2"
	fi
	R[$run.complete]=1
	if [ "$SRC_RC" != 0 ] || [ "$GOT" -lt "$ACCEPTED" ]; then R[$run.complete]=0; fi
	R[$run.e2e]=$E2E_RATE
	R[$run.sub]=$SUB_RATE
	R[$run.p50]=${P_P50:-n/a}
	R[$run.p99]=${P_P99:-n/a}
	R[$run.rss]=$(mib "$W_RSS")
	R[$run.pss]=$(mib "$W_PSS")
	R[$run.cpu]=$(echo "scale=3; ${W_CPU:-0} * 1000 / ($GOT + 1)" | bc -l | sed 's/^\./0./')
	R[$run.cores]=$(cores "${W_CPU:-0}")
	R[$run.dkim]="$DKIM_PASS of $GOT"
}

# --- certgate's histograms ---------------------------------------------------
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
		}' "$METRICS_TXT"
}
metric_sum() { # metric_sum NAME [LABEL=VALUE...]: the sum of the series of NAME with those labels
	local name=$1; shift
	awk -v name="$name" -v want="$*" '
		BEGIN { n = split(want, w, " ") }
		index($0, name "{") == 1 || index($0, name " ") == 1 {
			for (i = 1; i <= n; i++) { split(w[i], kv, "="); if (index($0, kv[1] "=\"" kv[2] "\"") == 0) next }
			s += $NF
		}
		END { printf "%d\n", s }' "$METRICS_TXT"
}
hist_mean() {
	awk -v m="$1" 'index($0, m "_sum") == 1 {s += $NF} index($0, m "_count") == 1 {n += $NF}
		END {if (n) printf "%.2f ms\n", s / n * 1000; else print "n/a"}' "$METRICS_TXT"
}

# --- certgate -----------------------------------------------------------------
write_config() {
	cat >"$WORK/certgate.yaml" <<EOC
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
EOC
}
accepted_total() {
	curl -fsS -m 5 "$METRICS/metrics" | awk '/^certgate_smtp_accepted_messages_total/ {s += $NF} END {printf "%d\n", s}'
}
# cg_profilers: PERF_DATA and PROFILE, started just before the load.
cg_profilers() {
	PERF_PID=
	if [ -n "$PERF_DATA" ]; then
		perf record -F 499 -g -p "$CG_PID" -o "$PERF_DATA" >"$D/perf.log" 2>&1 &
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
}

run_certgate() {
	D=$WORK/run-certgate
	mkdir -p "$D"
	start_sink "$D"
	(umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/admin-token")
	CG_PID=
	for attempt in 1 2 3 4 5; do
		SMTP_PORT=$(pick_port)
		HTTP_PORT=$(pick_port)
		[ "$SMTP_PORT" != "$HTTP_PORT" ] || continue
		write_config
		"$CG" check-config --config "$WORK/certgate.yaml" >/dev/null 2>"$D/check.log" || die "configuration: $(cat "$D/check.log")"
		"$CG" serve --config "$WORK/certgate.yaml" 2>"$D/certgate.log" &
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
		if kill -0 "$CG_PID" 2>/dev/null; then die "certgate not ready after 30 s: $(tail -5 "$D/certgate.log")"; fi
		grep -q "address already in use" "$D/certgate.log" || die "certgate exited: $(tail -5 "$D/certgate.log")"
		log "port taken, retrying ($attempt)"
		CG_PID=
	done
	[ -n "$CG_PID" ] || die "could not start certgate on a free port"
	log "certgate pid $CG_PID smtp 127.0.0.1:$SMTP_PORT http $METRICS; sink $SINK_SMTP (stats http://$SINK_HTTP/stats)"

	HOOK=cg_profilers run_load "127.0.0.1:$SMTP_PORT" "$D" -pid "$CG_PID"

	# Drain: wait for the sink to receive everything certgate accepted.
	ACCEPTED=$(accepted_total)
	drain "$ACCEPTED" true
	[ -n "$PERF_PID" ] && { kill -INT "$PERF_PID" 2>/dev/null; wait "$PERF_PID" 2>/dev/null || true; }
	if [ -n "$PROF_PID" ]; then
		if wait "$PROF_PID"; then log "CPU profile in $PROFILE"; else log "CPU profile failed"; fi
	fi
	CG_CPU1=$(proc_cpu "$CG_PID")
	CG_SPLIT1=$(proc_cpu_split "$CG_PID")
	after_load "$D"
	CG_HWM=$(awk '/^VmHWM/ {print $2}' "/proc/$CG_PID/status")
	METRICS_TXT=$D/metrics.txt
	curl -fsS -m 5 "$METRICS/metrics" >"$METRICS_TXT"

	SUB_RATE=$(rate "$ACCEPTED" "$SUB_S")
	CG_CPU=$(echo "$CG_CPU1 - $CG_CPU0" | bc -l)
	CG_SYS_PCT=$(echo "$CG_SPLIT0 $CG_SPLIT1" | awk '{u = $3 - $1; s = $4 - $2; if (u + s > 0) printf "%.0f", 100 * s / (u + s); else print 0}')
	OTHER_CPU=$(echo "$SYS_BUSY_S - $CG_CPU - $SINK_CPU - $SRC_CPU" | bc -l)
	DELIVERED=$(metric_sum certgate_delivery_attempts_total provider=sink result=delivered)
	DEFERRED=$(metric_sum certgate_delivery_attempts_total result=deferred)
	REJECTED=$(metric_sum certgate_smtp_rejected_total)
	CONNS=$(metric_sum certgate_delivery_connections_total)

	cat <<EOR

certgate relay benchmark  ($(date -u +%FT%TZ), $(nproc) CPUs, $(go version | awk '{print $3}'))
  load:     ${SRC[*]}$([ "$PROBE" = 1 ] && echo " + 1 probe session")
  message:  $MSG_BYTES bytes (multipart: text, HTML, base64 certificate), 1 recipient each
  certgate: DKIM $DKIM_ALGORITHM, SQLite spool (WAL, synchronous=FULL) in $WORK/data, log level $LOG_LEVEL
  sink:     $SINK_SMTP, DKIM verification $([ "$VERIFY" = 1 ] && echo "on ($VERIFY_WORKERS worker(s), $([ "$VERIFY_LIVE" = 1 ] && echo "after each 250" || echo "after the load"))" || echo off)

  -----------------------------------------------------------------------------
  messages accepted by certgate                $ACCEPTED   (smtp-source $COUNT, exit $SRC_RC; probe ${P_OK:-0}; refusals $REJECTED)
  messages received at the sink                $GOT   (delivered $DELIVERED, deferred $DEFERRED, $CONNS connections)
  submission rate  (smtp-source wall time)     $SUB_RATE msg/s   ($(f "$SUB_S") s)
  end-to-end rate  (first submit -> last sink) $E2E_RATE msg/s   ($(f "$E2E_S") s)
  accept latency p50 / p99  (server side)      $(quantile 0.5 certgate_smtp_accept_duration_seconds) / $(quantile 0.99 certgate_smtp_accept_duration_seconds)   (mean $(hist_mean certgate_smtp_accept_duration_seconds))
  accept latency p50 / p99  (client side)      $PROBE_LINE
  transaction p50 / p99 (connect -> 250)       $PROBE_TXN
  DKIM signing p50 / p99    (server side)      $(quantile 0.5 certgate_dkim_sign_duration_seconds) / $(quantile 0.99 certgate_dkim_sign_duration_seconds)
  delivery latency p50 / p99 (accept -> sink)  $(quantile 0.5 certgate_delivery_latency_seconds) / $(quantile 0.99 certgate_delivery_latency_seconds)
  certgate peak RSS (VmHWM)                    $((CG_HWM / 1024)) MiB   (sampled: RSS $(mib "$W_RSS") MiB, PSS $(mib "$W_PSS") MiB)
  DKIM at the sink                             $DKIM   (verify waits $DKIM_WAITS)
  CPU, in cores over $(f "$WALL") s            certgate $(cores "$CG_CPU") ($(echo "scale=0; $CG_CPU * 1000000 / ($ACCEPTED + 1)" | bc -l) us/msg, $CG_SYS_PCT% in the kernel), smtp-source+probe $(cores "$SRC_CPU"), sink $(cores "$SINK_CPU")
                                               other processes $(cores "$OTHER_CPU"); machine busy $SYS_BUSY% of $(nproc) CPUs
  sink peak RSS                                $((SINK_HWM / 1024)) MiB
  -----------------------------------------------------------------------------
  Accept latency (server side) is certgate's histogram certgate_smtp_accept_duration_seconds
  (end of DATA to reply: preparation, signing, durable spooling), interpolated within
  buckets; (client side) is the probe session's end of DATA to reply, every transaction.
  Rates are wall clock as seen by this script. Work dir: $WORK$([ "$KEEP" = 1 ] || echo " (removed)")
EOR
	record certgate certgate
	stop_pid "$CG_PID" 30
	stop_pid "$SINK_PID" 10
}

# --- Postfix with OpenDKIM ------------------------------------------------------
# A private instance, as cmd/certgate/e2e_test.go starts one: its own
# config, queue and data directories, no chroot, loopback only, started as
# root (the master drops to the postfix user), so the directory must be
# reachable by that user.
closed_ancestor() { # the first of $1 and the directories above it that others cannot search
	local d=$1 perm
	while :; do
		perm=$(stat -c %a "$d")
		if [ $((8#$perm & 1)) = 0 ]; then echo "$d"; return; fi
		[ "$d" = / ] && return
		d=$(dirname "$d")
	done
}
pf_dir() {
	chmod 0711 "$WORK" # searchable, not listable: the rest of WORK stays private
	local closed
	closed=$(closed_ancestor "$WORK")
	if [ -z "$closed" ]; then
		PF_DIR=$WORK/run-postfix/instance
		mkdir -p "$PF_DIR"
		chmod 0755 "$WORK/run-postfix" "$PF_DIR"
		return
	fi
	[ -z "$(closed_ancestor /tmp)" ] || die "neither $closed nor /tmp is searchable by other users: Postfix's daemons could not reach their queue"
	PF_ALT=$(mktemp -d /tmp/certgate-relay-postfix.XXXXXX)
	chmod 0755 "$PF_ALT"
	PF_DIR=$PF_ALT
}

# pf_pids CONF: the processes of the instance whose config_directory is CONF
# (Postfix passes MAIL_CONFIG to every daemon).
pf_pids() {
	grep -lzxF "MAIL_CONFIG=$1" /proc/[0-9]*/environ 2>/dev/null | sed 's|^/proc/||; s|/environ$||' || true
}
pf_stop() {
	local conf=$PF_CONF pids
	PF_CONF=
	timeout 60 postfix -c "$conf" stop >/dev/null 2>&1 || true
	for _ in $(seq 200); do
		pids=$(pf_pids "$conf")
		[ -z "$pids" ] && return 0
		sleep 0.1
	done
	log "Postfix processes $(echo "$pids" | tr '\n' ' ')still running 20 s after stop; killing them"
	# shellcheck disable=SC2086 # one pid a word
	kill -KILL $pids 2>/dev/null || true
}
pf_accepted() { # messages Postfix took (cleanup logs a message-id for each), less milter refusals
	local n r
	n=$(grep -cE 'postfix/cleanup\[[0-9]+\]: [0-9A-Za-z]+: message-id=' "$PF_LOG" || true)
	r=$(grep -cE 'postfix/cleanup\[[0-9]+\]: [0-9A-Za-z]+: milter-(reject|discard)' "$PF_LOG" || true)
	echo $((n - r))
}
pf_queue_empty() { timeout 20 postqueue -c "$PF_CONF" -p 2>/dev/null | grep -q "Mail queue is empty"; }
pf_count() { grep -c "$1" "$PF_LOG" || true; }

od_listening() { # OpenDKIM's socket is there
	if [ "$PF_MILTER" = unix ]; then [ -S "$PF_DIR/opendkim-run/milter.sock" ]; else ! port_free "$OD_PORT"; fi
}

write_opendkim_conf() {
	cat >"$PF_DIR/opendkim.conf" <<EOC
# bench/relay.sh: a private OpenDKIM that signs what Postfix hands it
Mode                    s
Canonicalization        relaxed/relaxed
SignatureAlgorithm      rsa-sha256
Domain                  ca.example
Selector                $PF_SELECTOR
KeyFile                 $PF_DIR/opendkim/key.pem
# The key is opendkim's and mode 0600, but its path runs through /tmp,
# which others may write: the safety check would refuse it.
RequireSafeKeys         no
InternalHosts           127.0.0.1
OversignHeaders         From
Socket                  $OD_SOCKET
UserID                  opendkim:opendkim
# The unix socket must be writable by Postfix's smtpd (user postfix); the
# directory that holds it is opendkim's.
UMask                   000
Syslog                  yes
SyslogSuccess           no
EOC
}

write_postfix_conf() {
	local limit=$PF_PROCESS_LIMIT
	[ "$limit" -ge $((SESSIONS * 2 + 10)) ] || limit=$((SESSIONS * 2 + 10))
	PF_LIMIT=$limit
	local cache= # PF_CONN_CACHE=0: the line is a comment
	[ "$PF_CONN_CACHE" = 1 ] || cache="#"
	cat >"$PF_CONF/main.cf" <<EOC
# bench/relay.sh: a private Postfix instance, the issuer's MTA as the field
# runs it: smtpd takes the mail from mynetworks, OpenDKIM signs it through
# the milter before the 250, the queue is Postfix's own (fsynced), smtp
# relays to the sink.
compatibility_level = 3.6
config_directory = $PF_CONF
queue_directory = $PF_DIR/queue
data_directory = $PF_DIR/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mta.bench.example
mydomain = bench.example
myorigin = \$myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
biff = no
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
# certgate does not look the client's name up either.
smtpd_peername_lookup = no
relayhost = [127.0.0.1]:${SINK_SMTP##*:}
# Keep connections to the relay host open between deliveries, not only when
# a backlog builds up (certgate's lanes reuse theirs likewise).
${cache}smtp_connection_cache_destinations = \$relayhost
smtp_dns_support_level = disabled
smtp_tls_security_level = none
smtpd_tls_security_level = none
smtpd_milters = $PF_MILTER_ADDR
non_smtpd_milters =
milter_default_action = tempfail
milter_protocol = 6
default_process_limit = $limit
maillog_file = $PF_LOG
maillog_file_prefixes = $PF_DIR
EOC
	# Every service without chroot: the queue is in a temporary directory.
	cat >"$PF_CONF/master.cf" <<EOC
127.0.0.1:$PF_PORT inet n - n - - smtpd
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
tlsmgr    unix - - n 1000? 1 tlsmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp      unix - - n - - smtp
relay     unix - - n - - smtp
showq     unix n - n - - showq
error     unix - - n - - error
retry     unix - - n - - error
discard   unix - - n - - discard
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
EOC
}

run_postfix() {
	D=$WORK/run-postfix
	mkdir -p "$D"
	start_sink "$D"
	pf_dir
	PF_LOG=$PF_DIR/maillog
	mkdir -p "$PF_DIR/conf" "$PF_DIR/queue" # data_directory is left to Postfix: it must be mail_owner's
	chmod 0755 "$PF_DIR/conf" "$PF_DIR/queue"
	install -d -o opendkim -g opendkim -m 0700 "$PF_DIR/opendkim"
	install -o opendkim -g opendkim -m 0600 "$PF_KEY" "$PF_DIR/opendkim/key.pem"
	PF_SELECTOR=$(basename "$PF_KEY" | sed 's/\._domainkey\..*//')

	# OpenDKIM, in the foreground of a background job: its pid is ours.
	OD_PID=
	for attempt in 1 2 3 4 5; do
		OD_PORT=$(pick_port)
		if [ "$PF_MILTER" = unix ]; then
			install -d -o opendkim -g opendkim -m 0755 "$PF_DIR/opendkim-run"
			OD_SOCKET=local:$PF_DIR/opendkim-run/milter.sock
			PF_MILTER_ADDR=unix:$PF_DIR/opendkim-run/milter.sock
		else
			OD_SOCKET=inet:$OD_PORT@127.0.0.1
			PF_MILTER_ADDR=inet:127.0.0.1:$OD_PORT
		fi
		write_opendkim_conf
		opendkim -n -x "$PF_DIR/opendkim.conf" 2>"$D/opendkim.log" || die "opendkim rejects its configuration: $(cat "$D/opendkim.log")"
		opendkim -f -x "$PF_DIR/opendkim.conf" 2>"$D/opendkim.log" &
		OD_PID=$!
		PIDS+=("$OD_PID")
		for _ in $(seq 100); do
			od_listening && break
			kill -0 "$OD_PID" 2>/dev/null || break
			sleep 0.1
		done
		kill -0 "$OD_PID" 2>/dev/null && od_listening && break
		log "opendkim did not start on port $OD_PORT ($(tail -1 "$D/opendkim.log")), retrying ($attempt)"
		stop_pid "$OD_PID" 5
		OD_PID=
	done
	[ -n "$OD_PID" ] || die "could not start opendkim: $(cat "$D/opendkim.log")"

	PF_CONF=$PF_DIR/conf
	local started=0
	for attempt in 1 2 3; do
		PF_PORT=$(pick_port)
		[ "$PF_PORT" != "$OD_PORT" ] || continue
		write_postfix_conf
		if timeout 120 postfix -c "$PF_CONF" start >"$D/postfix-start.log" 2>&1; then
			for _ in $(seq 300); do
				port_free "$PF_PORT" || { started=1; break; }
				sleep 0.1
			done
			[ "$started" = 1 ] && break
			die "Postfix does not listen on 127.0.0.1:$PF_PORT 30 s after start: $(tail -5 "$PF_LOG" 2>/dev/null)"
		fi
		grep -q "in use" "$PF_LOG" "$D/postfix-start.log" 2>/dev/null ||
			die "postfix -c $PF_CONF start: $(cat "$D/postfix-start.log"; tail -5 "$PF_LOG" 2>/dev/null)"
		log "port taken, retrying ($attempt)"
		pf_stop
		PF_CONF=$PF_DIR/conf
	done
	[ "$started" = 1 ] || die "could not start Postfix on a free port"
	log "Postfix $PF_VERSION in $PF_DIR smtpd 127.0.0.1:$PF_PORT, opendkim $OD_VERSION pid $OD_PID milter $PF_MILTER_ADDR; sink $SINK_SMTP (stats http://$SINK_HTTP/stats)"

	run_load "127.0.0.1:$PF_PORT" "$D" -env "MAIL_CONFIG=$PF_CONF" -pid "$OD_PID"

	# Drain: everything out of Postfix's queue and at the sink. What Postfix
	# accepted comes from its log (written asynchronously); the empty queue
	# is what says it is all out.
	drain "$(pf_accepted)" pf_queue_empty
	after_load "$D"
	for _ in $(seq 20); do # postlogd writes the log asynchronously
		ACCEPTED=$(pf_accepted)
		[ "$ACCEPTED" -ge "$GOT" ] && break
		sleep 0.1
	done
	SUB_RATE=$(rate "$ACCEPTED" "$SUB_S")
	OTHER_CPU=$(echo "$SYS_BUSY_S - ${W_CPU:-0} - $SINK_CPU - $SRC_CPU" | bc -l)
	local delivered deferred bounced od_hwm od_cpu
	delivered=$(pf_count "status=sent")
	deferred=$(pf_count "status=deferred")
	bounced=$(pf_count "status=bounced")
	od_hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$OD_PID/status")
	od_cpu=$(proc_cpu "$OD_PID")

	cat <<EOR

Postfix with OpenDKIM, the same load  ($(date -u +%FT%TZ))
  load:     ${SRC[*]}$([ "$PROBE" = 1 ] && echo " + 1 probe session")
  Postfix:  $PF_VERSION, private instance in $PF_DIR, queue fsynced as always, default_process_limit $PF_LIMIT
  OpenDKIM: $OD_VERSION milter on $PF_MILTER_ADDR, rsa-sha256 (RSA-2048), relaxed/relaxed, selector $PF_SELECTOR
  sink:     $SINK_SMTP (a fresh one), DKIM verification $([ "$VERIFY" = 1 ] && echo "on ($VERIFY_WORKERS worker(s), $([ "$VERIFY_LIVE" = 1 ] && echo "after each 250" || echo "after the load"))" || echo off)

  -----------------------------------------------------------------------------
  messages accepted by Postfix                 $ACCEPTED   (smtp-source $COUNT, exit $SRC_RC; probe ${P_OK:-0})
  messages received at the sink                $GOT   (sent $delivered, deferred $deferred, bounced $bounced, $CONNS_IN connections)
  submission rate  (smtp-source wall time)     $SUB_RATE msg/s   ($(f "$SUB_S") s)
  end-to-end rate  (first submit -> last sink) $E2E_RATE msg/s   ($(f "$E2E_S") s)
  accept latency p50 / p99  (client side)      $PROBE_LINE
  transaction p50 / p99 (connect -> 250)       $PROBE_TXN
  peak RSS, sum over the processes             $(mib "$W_RSS") MiB   (PSS $(mib "$W_PSS") MiB; up to $W_PROCS processes at once, $W_SEEN in all; opendkim VmHWM $((od_hwm / 1024)) MiB)
  DKIM at the sink                             $DKIM   (verify waits $DKIM_WAITS)
  CPU, in cores over $(f "$WALL") s            Postfix and OpenDKIM $(cores "${W_CPU:-0}") ($(echo "scale=0; ${W_CPU:-0} * 1000000 / ($ACCEPTED + 1)" | bc -l) us/msg; opendkim alone $(echo "$od_cpu" | awk '{printf "%.1f", $1}') s), smtp-source+probe $(cores "$SRC_CPU"), sink $(cores "$SINK_CPU")
                                               other processes $(cores "$OTHER_CPU"); machine busy $SYS_BUSY% of $(nproc) CPUs
  CPU by process name, seconds                 ${W_TOP:-n/a}
  sink peak RSS                                $((SINK_HWM / 1024)) MiB
  -----------------------------------------------------------------------------
  Postfix and OpenDKIM figures are those of every process of the instance (MAIL_CONFIG)
  and the opendkim daemon, sampled every 200 ms. Work dir: $WORK$([ "$KEEP" = 1 ] || echo " (removed)")
EOR
	record postfix Postfix
	pf_stop
	stop_pid "$OD_PID" 10
	stop_pid "$SINK_PID" 10
}

# --- the runs, and the table --------------------------------------------------
for arm in "${ARMS[@]}"; do
	"run_$arm"
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2fx", a / b; else print "n/a" }'; }
if [ "${#ARMS[@]}" = 2 ]; then
	row() { printf '  %-36s %16s %18s %12s\n' "$1" "${R[certgate.$2]}" "${R[postfix.$2]}" "$(ratio "${R[certgate.$2]}" "${R[postfix.$2]}")"; }
	cat <<EOT

side by side: smtp-source, $SESSIONS sessions$([ "$PROBE" = 1 ] && echo " + 1 probe session"), $COUNT messages of $MSG_BYTES bytes, $([ "$REUSE" = 1 ] && echo "one connection per session" || echo "one connection per message"), $(nproc) CPUs
  -----------------------------------------------------------------------------------------
EOT
	printf '  %-36s %16s %18s %12s\n' "" "certgate" "Postfix+OpenDKIM" "certgate/Postfix"
	row "end-to-end rate (msg/s)" e2e
	row "submission rate (msg/s)" sub
	row "accept latency p50 (ms, client side)" p50
	row "accept latency p99 (ms, client side)" p99
	row "peak RSS, sum of processes (MiB)" rss
	row "peak PSS, sum of processes (MiB)" pss
	row "relay CPU (ms per message)" cpu
	row "relay CPU (cores)" cores
	printf '  %-36s %16s %18s\n' "DKIM pass at the sink" "${R[certgate.dkim]}" "${R[postfix.dkim]}"
	cat <<EOT
  -----------------------------------------------------------------------------------------
  Rates count the probe's messages too. Latency: the probe session, end of DATA to reply.
  RSS sums count pages shared by processes (libraries) in each; PSS shares them out.
  CPU: every process of the relay (Postfix's instance and opendkim), first to last message.
EOT
	[ "$DKIM_ALGORITHM" = rsa2048 ] || log "note: certgate signed with $DKIM_ALGORITHM, OpenDKIM with RSA-2048"
fi
for arm in "${ARMS[@]}"; do
	if [ "${R[$arm.complete]}" != 1 ]; then
		log "incomplete $arm run (work dir $WORK$([ "$KEEP" = 1 ] || echo ", removed: re-run with KEEP=1 to keep its logs"))"
		exit 1
	fi
done
