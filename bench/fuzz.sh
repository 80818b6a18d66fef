#!/usr/bin/env bash
# bench/fuzz.sh: run every fuzz target of the module for a while, and keep
# what it finds as seed corpus.
#
# Finds every Fuzz function (go test -list in each package with one), runs
# each in turn with `go test -fuzz` for FUZZTIME, then copies the inputs the
# run found interesting from Go's fuzz cache
# ($(go env GOCACHE)/fuzz/<import path>/<FuzzName>/) into the package's
# testdata/fuzz/<FuzzName>/, smallest first, until that directory holds
# MAX_FILES inputs (files over MAX_BYTES are left out). `go test` replays
# testdata/fuzz on every plain run, so commit what it adds.
#
# Prints a table (target, time, execs, new interesting, kept, result) and
# exits 1 if any target failed: the failing input is in the package's
# testdata/fuzz/<FuzzName>/ (its path is printed), and
# `go test -run=<FuzzName>/<file> <pkg>` replays it. Fix the bug before you
# commit a failing input: CI replays it too. Not for CI: minutes per target.
#
# Usage: bench/fuzz.sh [--fuzztime D] [--parallel N] [--only REGEXP]
#                      [--max-files N] [--max-bytes N] [--no-copy] [--list]
#                      [--timeout SECONDS] [--keep]
# or the same through the environment:
#   FUZZTIME=3m        per target (go test -fuzztime: 90s, 3m, 1h or 10000x)
#   PARALLEL=1         fuzzing workers per target (go test -parallel); 1 keeps
#                      a shared machine usable
#   MINIMIZE=10s       go test -fuzzminimizetime: how long each new input
#                      (or failure) is minimized; Go's default of 60s stalls
#                      the run on every new input
#   ONLY=              run only targets whose "<import path>.<FuzzName>"
#                      matches this extended regexp (grep -E)
#   MAX_FILES=24       inputs a target's testdata/fuzz/<FuzzName>/ may hold
#   MAX_BYTES=16384    larger inputs are not copied
#   COPY=1             0: leave testdata/fuzz alone (the cache still grows)
#   TIMEOUT=           bound on the whole run in seconds; default: per target
#                      FUZZTIME + 10 minutes. Targets not started in time
#                      are reported as skipped (exit 1)
#   NICE=10            run go test under nice -n NICE
#   KEEP=0             1: keep the logs of every target (always kept on failure)
#   SUMMARY=           also write the table to this file
#
# Needs go and a checkout; works on a fresh clone (the cache is made by the
# first run). Every wait is bounded; only processes it started are stopped.
set -Eeuo pipefail

FUZZTIME=${FUZZTIME:-3m}
PARALLEL=${PARALLEL:-1}
MINIMIZE=${MINIMIZE:-10s}
ONLY=${ONLY:-}
MAX_FILES=${MAX_FILES:-24}
MAX_BYTES=${MAX_BYTES:-16384}
COPY=${COPY:-1}
TIMEOUT=${TIMEOUT:-}
NICE=${NICE:-10}
KEEP=${KEEP:-0}
SUMMARY=${SUMMARY:-}
LIST=0

usage() { sed -n '2,/^set -E/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
	case $1 in
	--fuzztime) FUZZTIME=$2; shift 2 ;;
	--parallel) PARALLEL=$2; shift 2 ;;
	--only) ONLY=$2; shift 2 ;;
	--max-files) MAX_FILES=$2; shift 2 ;;
	--max-bytes) MAX_BYTES=$2; shift 2 ;;
	--no-copy) COPY=0; shift ;;
	--list) LIST=1; shift ;;
	--timeout) TIMEOUT=$2; shift 2 ;;
	--keep) KEEP=1; shift ;;
	-h|--help) usage 0 ;;
	*) echo "fuzz.sh: unknown argument $1" >&2; usage 2 >&2 ;;
	esac
done
for v in PARALLEL MAX_FILES MAX_BYTES NICE; do
	case ${!v} in ''|*[!0-9]*) echo "fuzz.sh: $v must be a whole number, not '${!v}'" >&2; exit 2 ;; esac
done
[ "$PARALLEL" -ge 1 ] || { echo "fuzz.sh: PARALLEL must be at least 1" >&2; exit 2; }
case $TIMEOUT in ''|*[!0-9]*) [ -z "$TIMEOUT" ] || { echo "fuzz.sh: TIMEOUT must be seconds" >&2; exit 2; } ;; esac

log() { printf '[fuzz.sh %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FAILED: $*"; exit 2; }

# seconds turns a -fuzztime into seconds for the time bounds; a count of
# executions (10000x) gets ten minutes.
seconds() {
	case $1 in
	*x) echo 600 ;;
	*ms) echo 1 ;;
	*h) echo $(( ${1%h} * 3600 )) ;;
	*m) echo $(( ${1%m} * 60 )) ;;
	*s) echo "${1%s}" ;;
	*) return 1 ;;
	esac
}
if ! FUZZ_S=$(seconds "$FUZZTIME" 2>/dev/null) || ! [ "$FUZZ_S" -ge 1 ] 2>/dev/null; then
	die "FUZZTIME must look like 90s, 3m, 1h or 10000x, not '$FUZZTIME'"
fi

command -v go >/dev/null || die "go is required"
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
CACHE=$(go env GOCACHE)/fuzz
[ "$(go env GOCACHE)" != off ] || die "GOCACHE is off: go test -fuzz needs the build cache"

# --- targets -------------------------------------------------------------------
# Only packages with a Fuzz function in a test file are compiled for -list.
TARGETS=() # "import path|dir|FuzzName"
while read -r pkg dir; do
	grep -qs '^func Fuzz' "$dir"/*_test.go || continue
	names=$(timeout 600 go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true)
	[ -n "$names" ] || die "go test -list found no target in $pkg, which has a Fuzz function (does it build?)"
	for name in $names; do
		if [ -z "$ONLY" ] || printf '%s.%s\n' "$pkg" "$name" | grep -Eq -- "$ONLY"; then
			TARGETS+=("$pkg|$dir|$name")
		fi
	done
done < <(go list -f '{{.ImportPath}} {{.Dir}}' ./...)
[ ${#TARGETS[@]} -gt 0 ] || die "no fuzz target${ONLY:+ matches $ONLY}"
MODULE=$(go list -m)
short() { local p=${1#"$MODULE"}; echo "${p#/}"; }

if [ "$LIST" = 1 ]; then
	for t in "${TARGETS[@]}"; do IFS='|' read -r pkg _ name <<<"$t"; echo "$(short "$pkg") $name"; done
	exit 0
fi

PER_TARGET=$((FUZZ_S + 600)) # a cold build, the baseline run over the corpus, slack
[ -n "$TIMEOUT" ] || TIMEOUT=$(( ${#TARGETS[@]} * PER_TARGET ))
log "${#TARGETS[@]} targets, $FUZZTIME each, -parallel $PARALLEL, at most ${TIMEOUT}s in all"

# --- work directory and cleanup -----------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/certgate-fuzz.XXXXXX")
RUN_PID=
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [ -n "$RUN_PID" ]; then
		# timeout(1) passes the signal on to go test's whole process group.
		kill -TERM "$RUN_PID" 2>/dev/null || true
		for _ in $(seq 100); do kill -0 "$RUN_PID" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$RUN_PID" 2>/dev/null || true
		wait "$RUN_PID" 2>/dev/null || true
	fi
	if [ "$KEEP" = 1 ] || [ "${FAILED:-0}" -gt 0 ]; then
		log "logs kept in $WORK"
	else
		rm -rf "$WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- run -----------------------------------------------------------------------
START=$(date +%s)
FAILED=0 SKIPPED=0
ROWS=()     # target|time|execs|new|kept|result
FAILURES=() # paths of failing inputs
for t in "${TARGETS[@]}"; do
	IFS='|' read -r pkg dir name <<<"$t"
	label="$(short "$pkg").$name"
	[ "$label" != ".$name" ] || label=$name
	left=$((START + TIMEOUT - $(date +%s)))
	if [ "$left" -lt $((FUZZ_S + 30)) ]; then
		ROWS+=("$label|-|-|-|-|skipped: out of time")
		SKIPPED=$((SKIPPED + 1))
		continue
	fi
	limit=$((left < PER_TARGET ? left : PER_TARGET))
	out=$WORK/${label//\//_}.log
	stamp=$WORK/${label//\//_}.stamp
	touch "$stamp"
	sleep 1 # cache files written in the same second as the stamp still count as new
	log "$label: fuzzing for $FUZZTIME"
	t0=$(date +%s)
	# In the background so that a signal to this script is handled at once.
	timeout -k 30 "$limit" nice -n "$NICE" go test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" \
		-fuzzminimizetime "$MINIMIZE" -parallel "$PARALLEL" -timeout "$((limit - 15))s" "$pkg" >"$out" 2>&1 &
	RUN_PID=$!
	rc=0
	wait "$RUN_PID" || rc=$?
	RUN_PID=
	secs=$(($(date +%s) - t0))

	# The last progress line: "fuzz: elapsed: 3m0s, execs: 123 (456/sec), new interesting: 7 (total: 30)".
	last=$(grep -E '^fuzz: elapsed: .*execs: ' "$out" | tail -n 1 || true)
	execs=$(sed -nE 's/.*execs: ([0-9]+).*/\1/p' <<<"$last")
	newi=$(sed -nE 's/.*new interesting: ([0-9]+).*/\1/p' <<<"$last")

	kept=0
	cachedir=$CACHE/$pkg/$name
	if [ "$COPY" = 1 ] && [ -d "$cachedir" ]; then
		dest=$dir/testdata/fuzz/$name
		have=0
		[ ! -d "$dest" ] || have=$(find "$dest" -maxdepth 1 -type f | wc -l)
		room=$((MAX_FILES - have))
		if [ "$room" -gt 0 ]; then
			while read -r size f; do
				[ "$room" -gt 0 ] || break
				[ "$size" -le "$MAX_BYTES" ] || continue
				base=$(basename "$f")
				[ -e "$dest/$base" ] && continue
				mkdir -p "$dest"
				cp "$f" "$dest/$base"
				kept=$((kept + 1)) room=$((room - 1))
			done < <(find "$cachedir" -maxdepth 1 -type f -newer "$stamp" -printf '%s %p\n' | sort -n)
		fi
	fi

	if [ "$rc" = 0 ] && grep -q '^ok ' "$out"; then
		result=ok
	else
		FAILED=$((FAILED + 1))
		input=$(sed -nE 's/.*Failing input written to ([^ ]+).*/\1/p' "$out" | tail -n 1)
		case $input in ''|/*) ;; *) input=$dir/$input ;; esac
		if [ -n "$input" ]; then
			result="FAIL: $input"
			FAILURES+=("$label: $input (replay: go test -run=$name/$(basename "$input") $pkg)")
		elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
			result="FAIL: timed out after ${secs}s (log $out)"
			FAILURES+=("$label: timed out; see $out")
		else
			result="FAIL: exit $rc (log $out)"
			FAILURES+=("$label: exit $rc; see $out")
		fi
		log "$label: failed; the end of its log:"
		tail -n 30 "$out" >&2
	fi
	log "$label: ${execs:-?} execs in ${secs}s, ${newi:-?} new interesting, $kept kept; $result"
	ROWS+=("$label|${secs}s|${execs:--}|${newi:--}|$kept|$result")
done

# --- summary -------------------------------------------------------------------
table() {
	printf '%-38s %7s %12s %6s %5s  %s\n' target time execs new kept result
	for r in "${ROWS[@]}"; do
		IFS='|' read -r a b c d e f <<<"$r"
		printf '%-38s %7s %12s %6s %5s  %s\n' "$a" "$b" "$c" "$d" "$e" "$f"
	done
	printf '\nfuzztime %s, -parallel %s, -fuzzminimizetime %s, %ss in all; %s\n' \
		"$FUZZTIME" "$PARALLEL" "$MINIMIZE" "$(($(date +%s) - START))" "$(go version | cut -d' ' -f3-)"
}
echo
table
[ -z "$SUMMARY" ] || table >"$SUMMARY"
if [ "$FAILED" -gt 0 ]; then
	echo
	echo "$FAILED target(s) failed:"
	printf '  %s\n' "${FAILURES[@]}"
fi
if [ "$COPY" = 1 ]; then
	echo
	echo "new corpus files (commit them once every target passes):"
	git -C "$REPO" status --short --untracked-files=all -- "*testdata/fuzz/*" 2>/dev/null | sed "s/^/  /" || true
fi
[ "$FAILED" = 0 ] && [ "$SKIPPED" = 0 ] || exit 1
