# bench/lib.sh: what bench/backlog.sh and bench/shaping.sh share. Sourced,
# not run; bench/relay.sh could source it too.
#
# The sourcing script sets BENCH (its name, for log lines) and KEEP (1: keep
# the work directory), then calls bench_setup, which makes the work
# directory WORK and installs the cleanup: every process started through
# track is ended by its pid (SIGTERM, a bounded wait, SIGKILL), never by
# name. Everything listens on 127.0.0.1 only, and every wait is bounded.
# shellcheck shell=bash
# shellcheck disable=SC2034 # the globals set here are the sourcing script's

log() { printf '[%s %s] %s\n' "$BENCH" "$(date +%T)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }
now() { date +%s.%N; }

# whole NAME...: each variable must hold a whole number.
whole() {
	local v
	for v; do
		case ${!v} in '' | *[!0-9]*) echo "$BENCH: $v must be a whole number, not '${!v}'" >&2; exit 2 ;; esac
	done
}
# flag NAME...: each variable must be 0 or 1.
flag() {
	local v
	for v; do
		case ${!v} in 0 | 1) ;; *) echo "$BENCH: $v must be 0 or 1, not '${!v}'" >&2; exit 2 ;; esac
	done
}

BENCH_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PATH=$PATH:/usr/sbin:/sbin

# need_tools TOOL...: the tools must be on PATH; smtp-source comes with
# Postfix, installed (not configured, not started) when missing and root.
need_tools() {
	local t
	if ! command -v smtp-source >/dev/null; then
		[ "$(id -u)" = 0 ] || die "smtp-source is missing: apt-get install postfix (as root)"
		log "installing postfix for smtp-source (not configured, not started)"
		export DEBIAN_FRONTEND=noninteractive
		printf '%s\n' "postfix postfix/main_mailer_type select No configuration" \
			"postfix postfix/mailname string bench.invalid" | debconf-set-selections
		timeout 600 apt-get install -y --no-install-recommends postfix >/dev/null 2>&1 ||
			{ timeout 300 apt-get update >/dev/null && timeout 600 apt-get install -y --no-install-recommends postfix >/dev/null; } ||
			die "could not install postfix"
		command -v smtp-source >/dev/null || die "postfix installed, smtp-source still missing"
	fi
	for t; do command -v "$t" >/dev/null || die "$t is required"; done
}

# --- work directory, processes, cleanup ---------------------------------------
PIDS=()
track() { PIDS+=("$1"); }

# stop_pid PID [SECONDS]: SIGTERM, up to SECONDS (10) for it to exit, SIGKILL.
stop_pid() {
	local pid=$1 tenths=$((${2:-10} * 10)) i
	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < tenths; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

bench_cleanup() {
	local rc=$? i
	trap - EXIT INT TERM
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}" 10; done
	if [ "${KEEP:-0}" = 1 ]; then
		log "work directory kept: $WORK"
	else
		rm -rf "$WORK"
	fi
	exit "$rc"
}

bench_setup() {
	WORK=$(mktemp -d "${TMPDIR:-/tmp}/certgate-$BENCH.XXXXXX")
	trap bench_cleanup EXIT
	trap 'exit 130' INT TERM
}

# build_tools: bench/sink and certgate (or a copy of CERTGATE_BIN) into
# WORK; CG is certgate's path. A fresh DKIM key for ca.example: KEY, TXT.
build_tools() {
	log "building into $WORK"
	(cd "$BENCH_REPO" && timeout 600 go build -buildvcs=false -o "$WORK/sink" ./bench/sink) || die "building bench/sink"
	if [ -n "${CERTGATE_BIN:-}" ]; then
		cp "$CERTGATE_BIN" "$WORK/certgate" || die "copying $CERTGATE_BIN"
	else
		(cd "$BENCH_REPO" && timeout 600 go build -buildvcs=false -o "$WORK/certgate" ./cmd/certgate) || die "building certgate"
	fi
	CG=$WORK/certgate
	mkdir -p "$WORK/dkim"
	"$CG" dkim keygen --domain ca.example --selector bench --out "$WORK/dkim" >/dev/null || die "certgate dkim keygen"
	KEY=$WORK/dkim/bench._domainkey.ca.example.pem
	TXT=$WORK/dkim/bench._domainkey.ca.example.txt
	if [ ! -s "$KEY" ] || [ ! -s "$TXT" ]; then die "certgate dkim keygen wrote no key"; fi
	(umask 077 && od -An -tx1 -N24 /dev/urandom | tr -d ' \n' >"$WORK/admin-token")
}

# cert_mail FILE SIZE [HEADER...]: a certificate notice as an issuer sends
# it, about SIZE bytes on the wire: a text part and a base64 PKCS#12
# attachment, with the given extra header lines. Lines end in LF, as
# smtp-source -F wants (it sends CRLF); crlf FILE makes FILE.crlf, the
# message as it goes on the wire after DATA (CRLF, dot-stuffed).
cert_mail() {
	local file=$1 size=$2 h
	shift 2
	{
		echo "From: Certificados CA <certificados@ca.example>"
		echo "To: <titular@sink.example>"
		echo "Subject: Your certificate is ready"
		echo "Date: $(LC_ALL=C date -R)"
		for h; do echo "$h"; done
		echo "MIME-Version: 1.0"
		echo 'Content-Type: multipart/mixed; boundary="cg-bench-outer"'
		echo
		echo "--cg-bench-outer"
		echo "Content-Type: text/plain; charset=UTF-8"
		echo
		echo "Dear customer,"
		echo
		echo "your qualified certificate has been issued. It is attached to this"
		echo "message; you can also download it from"
		echo "https://ca.example/download/?token=Zx81kQ2mVb7RtLp0Yw4s"
		echo "The link expires in 30 days."
		echo
		echo "--cg-bench-outer"
		echo 'Content-Type: application/x-pkcs12; name="certificate.p12"'
		echo 'Content-Disposition: attachment; filename="certificate.p12"'
		echo "Content-Transfer-Encoding: base64"
		echo
	} >"$file"
	local have raw
	have=$(($(wc -c <"$file") + $(wc -l <"$file")))
	raw=$(((size - have - 30) * 57 / 78)) # base64 lines of 76 characters and CRLF
	[ "$raw" -ge 57 ] || raw=57
	head -c "$raw" /dev/urandom | base64 -w 76 >>"$file"
	printf '\n--cg-bench-outer--\n' >>"$file"
}
crlf() { sed 's/^\./../; s/$/\r/' "$1" >"$1.crlf"; }
wire_bytes() { echo $(($(wc -c <"$1") + $(wc -l <"$1"))); }

# --- ports, certgate, the sink --------------------------------------------------
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# pick_port VAR: sets VAR to a free loopback port, not one given before,
# below the kernel's ephemeral range (or
# above it), so that no outgoing connection takes it as its local port
# meanwhile: not another engineer's, nor certgate's own dials to a port
# where nothing listens yet (a dial to a port in the ephemeral range can
# even connect to itself).
pick_port() {
	local lo=32768 hi=60999 from=20000 span=40000 p i
	read -r lo hi </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
	if [ "$lo" -ge 3072 ]; then
		from=$((lo > 21024 ? lo - 20000 : 1024)) span=$((lo - from))
	elif [ "$hi" -le 63487 ]; then
		from=$((hi + 1)) span=$((65535 - hi))
	fi
	for ((i = 0; i < 64; i++)); do
		p=$((from + (RANDOM * 32768 + RANDOM) % span))
		if port_free "$p" && [[ " ${PORTS_TAKEN:-} " != *" $p "* ]]; then
			PORTS_TAKEN="${PORTS_TAKEN:-} $p"
			printf -v "$1" %s "$p"
			return
		fi
	done
	die "no free port on 127.0.0.1"
}

# bench_config ROUTE_HOST PROVIDER [DELIVERY_LINE...]: writes
# $WORK/certgate.yaml: SMTP on 127.0.0.1:SMTP_PORT for SESSIONS sessions,
# HTTP on 127.0.0.1:HTTP_PORT, one tenant submitting from 127.0.0.0/8 for
# ca.example with the bench's DKIM key, one route for every domain to
# ROUTE_HOST without TLS, the provider PROVIDER (a YAML flow mapping), each
# DELIVERY_LINE as a key under delivery:, the admin token, LOG_LEVEL.
bench_config() {
	local route=$1 provider=$2 line
	shift 2
	{
		cat <<EOC
hostname: relay.bench.example
data_dir: $WORK/data
storage: {driver: sqlite}
smtp:
  listen: ["127.0.0.1:$SMTP_PORT"]
  max_connections: $((SESSIONS * 2 + 10))
  max_connections_per_ip: $((SESSIONS * 2 + 10))
http:
  listen: "127.0.0.1:$HTTP_PORT"
tenants:
  - {name: bench, trusted_networks: [127.0.0.0/8], from_domains: [ca.example]}
dkim:
  - {domain: ca.example, selector: bench, key_file: $KEY}
api:
  tokens: [{name: bench, token_file: $WORK/admin-token, scopes: [admin]}]
log: {level: $LOG_LEVEL}
providers:
  - $provider
delivery:
  routes:
    - {domains: ["*"], host: "$route", tls: none}
EOC
		for line; do printf '  %s\n' "$line"; done
	} >"$WORK/certgate.yaml"
}

# start_certgate WRITE_CONFIG: picks SMTP_PORT and HTTP_PORT, has the
# function WRITE_CONFIG write the configuration CG_CONF with them, and starts
# certgate, retrying on another pair of ports when one was taken meanwhile.
# Sets CG_PID and CG_URL (its HTTP listener). CG_CONF and CG_LOG (its log)
# are $WORK/certgate.yaml and $WORK/certgate.log unless set: a script that
# runs several nodes sets them for each.
start_certgate() {
	local write=$1 attempt i conf=${CG_CONF:-$WORK/certgate.yaml} cglog=${CG_LOG:-$WORK/certgate.log}
	CG_PID=
	for attempt in 1 2 3 4; do
		pick_port SMTP_PORT
		pick_port HTTP_PORT
		"$write"
		"$CG" check-config --config "$conf" >/dev/null 2>"$WORK/check.log" ||
			die "bench configuration refused: $(cat "$WORK/check.log")"
		"$CG" serve --config "$conf" 2>>"$cglog" &
		CG_PID=$!
		track "$CG_PID"
		CG_URL=http://127.0.0.1:$HTTP_PORT
		for ((i = 0; i < 300; i++)); do
			curl -fsS -m 1 "$CG_URL/readyz" >/dev/null 2>&1 && return 0
			kill -0 "$CG_PID" 2>/dev/null || break
			sleep 0.1
		done
		kill -0 "$CG_PID" 2>/dev/null && die "certgate not ready after 30 s: $(tail -3 "$cglog")"
		grep -q "address already in use" "$cglog" || die "certgate exited: $(tail -3 "$cglog")"
		log "a port was taken meanwhile; again ($attempt)"
	done
	die "could not start certgate on free ports"
}

# start_sink SMTP_ADDR [ARGS...]: bench/sink on SMTP_ADDR (a fixed port, or
# :0), its statistics on an ephemeral port. Sets SINK_PID, SINK_SMTP,
# SINK_HTTP, and SINK_UP (when it began to listen, in Unix seconds).
start_sink() {
	local addr=$1 i attempt
	shift
	# A fixed port may be held for a moment by a connection that took it
	# as its local port: try again for up to 15 s.
	for ((attempt = 1; attempt <= 30; attempt++)); do
		rm -f "$WORK/sink.addrs"
		"$WORK/sink" -smtp "$addr" -http 127.0.0.1:0 -addr-file "$WORK/sink.addrs" \
			-max-duration "$((TIMEOUT + 600))s" "$@" >"$WORK/sink.out" 2>"$WORK/sink.log" &
		SINK_PID=$!
		track "$SINK_PID"
		for ((i = 0; i < 500; i++)); do
			[ -s "$WORK/sink.addrs" ] && break
			kill -0 "$SINK_PID" 2>/dev/null || break
			sleep 0.02
		done
		[ -s "$WORK/sink.addrs" ] && break
		grep -q "address already in use" "$WORK/sink.log" || break
		log "sink: $addr is in use ($(ss -Htan "sport = :${addr##*:}" 2>/dev/null | head -1 | tr -s ' ')); again ($attempt)"
		wait "$SINK_PID" 2>/dev/null || true
		sleep 0.5
	done
	[ -s "$WORK/sink.addrs" ] || die "sink did not start: $(cat "$WORK/sink.log")"
	# The sink writes the file once it listens: its time is when it came up.
	SINK_UP=$(stat -c %.9Y "$WORK/sink.addrs")
	SINK_SMTP=$(sed -n 's/^smtp=//p' "$WORK/sink.addrs")
	SINK_HTTP=$(sed -n 's/^http=//p' "$WORK/sink.addrs")
}

# sink_stat KEY: one number from the sink's /stats (empty if unreachable).
sink_stat() {
	curl -fsS -m 5 "http://$SINK_HTTP/stats" 2>/dev/null | tr -d ' \n' |
		sed -n "s/.*\"$1\":\([-0-9.e+]*\).*/\1/p" | head -1
}

# --- certgate's metrics and process ---------------------------------------------
scrape() { curl -fsS -m 5 "$CG_URL/metrics" >"$1" 2>/dev/null || : >"$1"; }

# msum FILE NAME [LABEL=VALUE...]: the sum of NAME's series with those labels.
msum() {
	local file=$1 name=$2
	shift 2
	awk -v name="$name" -v want="$*" '
		BEGIN { n = split(want, w, " ") }
		index($0, name "{") == 1 || index($0, name " ") == 1 {
			for (i = 1; i <= n; i++) { split(w[i], kv, "="); if (index($0, kv[1] "=\"" kv[2] "\"") == 0) next }
			s += $NF
		}
		END { printf "%.0f\n", s }' "$file"
}

# hquantile FILE Q NAME [LABEL=VALUE...]: a histogram's quantile in ms over
# the series with those labels, interpolated within the bucket.
hquantile() {
	local file=$1 q=$2 name=$3
	shift 3
	awk -v q="$q" -v m="${name}_bucket{" -v want="$*" '
		BEGIN { n = split(want, w, " ") }
		index($0, m) == 1 {
			for (i = 1; i <= n; i++) { split(w[i], kv, "="); if (index($0, kv[1] "=\"" kv[2] "\"") == 0) next }
			le = $0; sub(/.*le="/, "", le); sub(/".*/, "", le)
			cum[le] += $NF
		}
		END {
			total = cum["+Inf"]
			if (total == 0) { print "n/a"; exit }
			k = 0
			for (le in cum) if (le != "+Inf") bound[++k] = le + 0
			for (i = 2; i <= k; i++) for (j = i; j > 1 && bound[j-1] > bound[j]; j--) { t = bound[j]; bound[j] = bound[j-1]; bound[j-1] = t }
			rank = q * total; below = 0; lo = 0
			for (i = 1; i <= k; i++) {
				c = 0; for (le in cum) if (le != "+Inf" && le + 0 == bound[i]) c = cum[le]
				if (c >= rank) { printf "%.1f ms\n", 1000 * (lo + (bound[i] - lo) * (rank - below) / (c - below)); exit }
				below = c; lo = bound[i]
			}
			printf "> %.0f ms\n", 1000 * lo
		}' "$file"
}

vm_kib() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$2/status" 2>/dev/null; }
mib() { awk -v k="$1" 'BEGIN { if (k == "") print "n/a"; else printf "%.0f\n", k / 1024 }'; }
proc_cpu() { awk -v hz="$(getconf CLK_TCK)" '{sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / hz}' "/proc/$1/stat" 2>/dev/null || echo 0; }
calc() { awk "BEGIN { printf \"$1\\n\", $2 }"; }

# cg_profile KIND FILE [SECONDS]: a pprof profile of certgate (heap,
# goroutine, or profile for CPU over SECONDS) through the admin token.
cg_profile() {
	local url="$CG_URL/debug/pprof/$1"
	[ "$1" = profile ] && url="$url?seconds=${3:-10}"
	curl -fsS -m $((${3:-10} + 30)) -H "Authorization: Bearer $(cat "$WORK/admin-token")" -o "$2" "$url"
}

# sys_busy: CPU seconds the whole machine has been busy (not idle, not
# waiting for I/O); the difference of two readings, less what the bench's
# own processes used, is what others took of a shared machine.
sys_busy() { awk -v hz="$(getconf CLK_TCK)" '/^cpu / {t = 0; for (i = 2; i <= NF; i++) t += $i; printf "%.2f\n", (t - $5 - $6) / hz}' /proc/stat; }
# children_cpu: sets CHILD_CPU to the CPU seconds of this shell's reaped
# children (smtp-source, curl, the sampler), from the builtin times, which
# must run in this shell, not in a subshell (it would count only its own).
children_cpu() {
	times >"$WORK/times.txt"
	CHILD_CPU=$(awk 'NR == 2 {s = 0; for (i = 1; i <= 2; i++) {split($i, p, "m"); s += p[1] * 60 + p[2]}; printf "%.2f\n", s}' "$WORK/times.txt")
}
