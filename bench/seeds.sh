#!/usr/bin/env bash
# bench/seeds.sh: how fast the seed-mailbox watcher finds where a copy
# landed, what it costs in memory, and whether it misses anything (issue
# 10: "N seed mailboxes on Dovecot (N = 100), copies filed at random into
# INBOX and Junk; detection delay p50/p99 after the copy lands (target: p99
# under 2 s), certgate's extra RSS for the watchers (target: under 50 MB for
# 100 mailboxes), and misses (target: 0, including across a Dovecot
# restart)").
#
#   bench/seedbench --IMAP IDLE (2 per mailbox)--> private Dovecot <--APPEND-- bench/seedbench
#
# bench/seedbench (Go) starts a private Dovecot on loopback with N users
# (internal/testdovecot: passwd-file, Maildir, a \Junk mailbox each), stores
# COPIES seed copies per mailbox in a fresh SQLite spool as delivered, runs
# certgate's watcher on every mailbox (INBOX and Junk, one connection each),
# and files the copies by IMAP APPEND at RATE per second, each at random
# into INBOX or Junk, as a provider's filter would; halfway it restarts
# Dovecot. A copy's detection delay runs from its APPEND's tagged OK to the
# watcher's report. Dovecot itself tells IDLE clients of new mail about half
# a second after it lands (its IDLE notification delay): that is the floor.
#
# Usage: bench/seeds.sh   (as root: Dovecot drops to the mail user)
#   MAILBOXES=100 COPIES=10 RATE=50 RESTART=1
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MAILBOXES=${MAILBOXES:-100}
COPIES=${COPIES:-10}
RATE=${RATE:-50}
RESTART=${RESTART:-1}
for v in MAILBOXES COPIES RATE; do
	case ${!v} in '' | *[!0-9]*) echo "seeds.sh: $v must be a whole number" >&2; exit 2 ;; esac
done
[ "$(id -u)" = 0 ] || { echo "seeds.sh: run as root (a private Dovecot drops to the mail user)" >&2; exit 2; }
if ! command -v dovecot >/dev/null && [ ! -x /usr/sbin/dovecot ]; then
	echo "seeds.sh: installing dovecot-imapd (not configured, not started)" >&2
	DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=600 install --no-install-recommends dovecot-imapd >&2
fi
# Each IDLE connection is an imap process with an inotify instance of the
# mail user's; past the kernel's default of 128, Dovecot falls back to
# looking every 30 s, which would measure the kernel, not the watcher.
need=$((2 * MAILBOXES + 64))
have=$(cat /proc/sys/fs/inotify/max_user_instances)
if [ "$have" -lt "$need" ]; then
	sysctl -q -w fs.inotify.max_user_instances="$need" ||
		echo "seeds.sh: could not raise fs.inotify.max_user_instances to $need; Dovecot may poll every 30 s" >&2
fi
restart=true
[ "$RESTART" = 1 ] || restart=false
exec go run ./bench/seedbench -mailboxes "$MAILBOXES" -copies "$COPIES" -rate "$RATE" -restart="$restart"
