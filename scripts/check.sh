#!/usr/bin/env bash
# check.sh is certgate's full test run, the one CI runs (through `make check`)
# and the one to run before pushing. On a Debian machine with only Go on it,
# it installs what the tests need (the Debian packages the end-to-end suite
# drives, and staticcheck), then runs every check and prints a summary.
# Running it twice is safe: it only installs what is missing.
#
# Environment:
#   CHECK_SKIP_INSTALL=1   do not install anything (use what is there)
#   CHECK_TEST_TIMEOUT     go test -timeout (default 20m)
#   CHECK_RACE=0           run go test without -race
set -Eeuo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

# Debian packages the tests use, by the tool they provide.
#   postfix, libsasl2-modules  the issuer's MTA relaying through certgate
#                              (its SMTP client needs the SASL PLAIN/LOGIN module)
#   swaks, libnet-ssleay-perl  the submitting client (STARTTLS needs Net::SSLeay)
#   python3-dkim, python3-nacl the independent DKIM verifier (nacl: Ed25519)
#   gcc, libc6-dev             cgo, which go test -race needs
#   ca-certificates            HTTPS to the Go module proxy
#   chromium, fonts-dejavu-core the headless browser that opens the gate's
#                              pages (quarantine/browser_test.go), and a font
#   e2fsprogs, mount           the disk-full and I/O-error crash tests mount a
#                              small tmpfs and an ext4 image as data_dir
#   libssl3                    libcrypto.so.3, the OpenSSL engine of DKIM signing
#   dovecot-imapd              the seed mailboxes the placement watcher reads
#                              (internal/testdovecot starts private instances)
#   postgresql                 the PostgreSQL store's conformance tests
#                              (internal/testpg runs private clusters as the
#                              postgres user; the Debian cluster it makes is
#                              never started: install_without_services)
#   prometheus                 promtool, which checks and unit-tests
#                              deploy/prometheus/alerts.yml; the Prometheus
#                              server it also ships is never started
#                              (install_without_services)
#   redis-server               the shared limits of a cluster (internal/testredis
#                              starts private instances on loopback); the
#                              system daemon it ships is never started
#                              (install_without_services)
PACKAGES=(dovecot-imapd postfix libsasl2-modules swaks libnet-ssleay-perl python3 python3-dkim python3-nacl gcc libc6-dev ca-certificates chromium fonts-dejavu-core e2fsprogs mount libssl3 prometheus redis-server postgresql)
# Packages whose postinst starts and enables a daemon the tests never use.
QUIET_PACKAGES=(prometheus redis-server postgresql)

# The tests run with TMPDIR inside TMP, so whatever they leave behind (when
# killed, say) goes with it. The private Postfix instances live there too and
# their daemons run as the postfix user, hence mode 0755.
TMP=$(mktemp -d "${TMPDIR:-/tmp}/certgate-check.XXXXXX")
chmod 0755 "$TMP"
TEST_PGID=""
POLICY_RC_D=""   # the policy-rc.d install_without_services wrote, while it is there
cleanup() {
	# go test runs in its own process group: stop it with the test binaries,
	# certgate servers and clients it started.
	if [ -n "$TEST_PGID" ]; then
		kill -TERM -- "-$TEST_PGID" 2>/dev/null || true
		sleep 1
		kill -KILL -- "-$TEST_PGID" 2>/dev/null || true
	fi
	# Postfix's master detaches into a session of its own; stop every
	# instance a test left running under TMP.
	local cf
	while IFS= read -r cf; do
		postfix -c "$(dirname "$cf")" abort >/dev/null 2>&1 || true
	done < <(find "$TMP" -name main.cf 2>/dev/null)
	rm -rf "$TMP"
	if [ -n "$POLICY_RC_D" ]; then
		as_root rm -f "$POLICY_RC_D" || true
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

STEPS=()   # "name|status|seconds"
FAILED=0
log() { printf '\n==> %s\n' "$*"; }

# run NAME CMD...: runs one check, records how it went and how long it took,
# and goes on to the next check either way, so one run reports everything.
run() {
	local name=$1 start rc
	shift
	log "$name"
	start=$(date +%s)
	set +e
	"$@"
	rc=$?
	set -e
	local took=$(( $(date +%s) - start ))
	if [ "$rc" -eq 0 ]; then
		STEPS+=("$name|ok|$took")
	else
		STEPS+=("$name|FAIL (exit $rc)|$took")
		FAILED=1
	fi
}

as_root() {
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	elif command -v sudo >/dev/null; then
		sudo "$@"
	else
		echo "check.sh: $* needs root and there is no sudo" >&2
		return 1
	fi
}

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'; }

install_packages() {
	local missing=() p
	for p in "${PACKAGES[@]}"; do
		installed "$p" || missing+=("$p")
	done
	if [ ${#missing[@]} -eq 0 ]; then
		echo "Debian packages: all present (${PACKAGES[*]})"
		return 0
	fi
	echo "Debian packages to install: ${missing[*]}"
	# Postfix asks how to configure itself; the tests run private instances
	# with their own configuration, so the system one gets none and never
	# starts.
	echo "postfix postfix/main_mailer_type select No configuration" | as_root debconf-set-selections
	echo "postfix postfix/mailname string localhost" | as_root debconf-set-selections
	local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=600)
	local plain=() quiet=() rc=0
	for p in "${missing[@]}"; do
		if [[ " ${QUIET_PACKAGES[*]} " == *" $p "* ]]; then quiet+=("$p"); else plain+=("$p"); fi
	done
	as_root "${apt[@]}" update
	if [ ${#plain[@]} -gt 0 ]; then
		as_root "${apt[@]}" install --no-install-recommends "${plain[@]}" || rc=$?
	fi
	if [ ${#quiet[@]} -gt 0 ]; then
		install_without_services "${apt[@]}" -- "${quiet[@]}" || rc=$?
	fi
	return "$rc"
}

# install_without_services APT... -- PKG...: installs packages whose
# postinst would start their daemon (invoke-rc.d without systemd,
# deb-systemd-invoke with it) and leaves the daemon stopped and disabled at
# boot. Both ask /usr/sbin/policy-rc.d first, and its exit status 101
# forbids the start; a machine that has one already (a container) keeps
# its own.
install_without_services() {
	local apt=() p rc=0
	while [ "$1" != -- ]; do apt+=("$1"); shift; done
	shift
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		POLICY_RC_D=/usr/sbin/policy-rc.d
		printf '#!/bin/sh\n# scripts/check.sh of certgate: no daemon starts while it installs %s\nexit 101\n' "$*" |
			as_root tee "$POLICY_RC_D" >/dev/null
		as_root chmod 0755 "$POLICY_RC_D"
	fi
	as_root "${apt[@]}" install --no-install-recommends "$@" || rc=$?
	if [ -n "$POLICY_RC_D" ]; then
		as_root rm -f "$POLICY_RC_D"
		POLICY_RC_D=""
	fi
	[ "$rc" -eq 0 ] || return "$rc"
	# Not at the next boot either (the packages enable their service).
	for p in "$@"; do
		as_root deb-systemd-helper disable "$p.service" >/dev/null 2>&1 || true
		if [ -x "/etc/init.d/$p" ]; then
			as_root update-rc.d "$p" disable >/dev/null 2>&1 || true
		fi
	done
}

# check_alert_rules checks the Prometheus alerting rules and runs their
# unit tests with promtool.
check_alert_rules() {
	if ! command -v promtool >/dev/null; then
		echo "promtool is not installed (Debian's prometheus package)"
		return 1
	fi
	promtool check rules deploy/prometheus/alerts.yml &&
		promtool test rules deploy/prometheus/alerts_test.yml
}

install_staticcheck() {
	if command -v staticcheck >/dev/null; then
		echo "staticcheck: $(command -v staticcheck) ($(staticcheck -version 2>/dev/null || echo unknown version))"
		return 0
	fi
	go install honnef.co/go/tools/cmd/staticcheck@latest
	command -v staticcheck >/dev/null
}

check_gofmt() {
	local files
	# Only tracked and new files of the module, not vendored or generated trees.
	files=$(gofmt -l $(git ls-files --cached --others --exclude-standard -- '*.go' 2>/dev/null || find . -name '*.go' -not -path './.git/*'))
	if [ -n "$files" ]; then
		echo "gofmt: these files are not formatted (run gofmt -w):"
		echo "$files"
		return 1
	fi
	echo "gofmt: all files formatted"
}

run_tests() {
	local race=(-race) rc
	[ "${CHECK_RACE:-1}" = 0 ] && race=()
	mkdir -p "$TMP/tmp"
	chmod 0755 "$TMP/tmp"
	# setsid: a process group of its own, which cleanup can stop as a whole.
	# The output also goes to a file, for the summary's list of failures.
	TMPDIR=$TMP/tmp CERTGATE_E2E=1 setsid go test "${race[@]}" -count=1 \
		-timeout "${CHECK_TEST_TIMEOUT:-20m}" ./... > >(tee "$TMP/go-test.log") 2>&1 &
	TEST_PGID=$!
	rc=0
	wait "$TEST_PGID" || rc=$?
	sleep 0.5 # let tee write the last lines
	TEST_PGID=""
	return "$rc"
}

summary() {
	local total=$(( $(date +%s) - START )) s name status took
	printf '\n==> Summary\n'
	for s in "${STEPS[@]}"; do
		IFS='|' read -r name status took <<<"$s"
		printf '  %-28s %-16s %5ss\n' "$name" "$status" "$took"
	done
	printf '  %-28s %-16s %5ss\n' "total" "$([ "$FAILED" = 0 ] && echo PASS || echo FAIL)" "$total"
	if [ -s "$TMP/go-test.log" ] && grep -qE '^(--- FAIL|FAIL|panic:)' "$TMP/go-test.log"; then
		printf '\n  failed tests and packages:\n'
		grep -E '^(--- FAIL|FAIL|panic:)' "$TMP/go-test.log" | grep -v '^FAIL$' | sed 's/^/    /'
	fi
}

START=$(date +%s)

# Go: /usr/local/go is where the official tarball goes; GOBIN holds staticcheck.
if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then
	export PATH=/usr/local/go/bin:$PATH
fi
command -v go >/dev/null || { echo "check.sh: go is not installed" >&2; exit 1; }
GOBIN=$(go env GOBIN)
[ -n "$GOBIN" ] || GOBIN=$(go env GOPATH)/bin
export PATH=$GOBIN:$PATH:/usr/sbin:/sbin
export GOFLAGS=${GOFLAGS:--buildvcs=false}
echo "$(go version); $(nproc) CPUs; $(id -un)"

if [ "${CHECK_SKIP_INSTALL:-0}" != 1 ]; then
	run "install Debian packages" install_packages
	run "install staticcheck" install_staticcheck
fi
run "gofmt -l" check_gofmt
run "go vet" go vet ./...
if command -v staticcheck >/dev/null; then
	run "staticcheck" staticcheck ./...
else
	STEPS+=("staticcheck|FAIL (missing)|0")
	FAILED=1
fi
run "promtool (alert rules)" check_alert_rules
run "go test -race (with e2e)" run_tests

summary
exit "$FAILED"
