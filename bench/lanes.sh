#!/usr/bin/env bash
# bench/lanes.sh: how soon a lane changes state after the reply or the
# placement that triggers it (issue 11: "a lane changes state within 1 s
# of the reply or placement that triggers it").
#
#   bench/reaction: certgate's delivery queue --SMTP--> a simulated
#   Outlook.com that answers 451 4.7.650 above 5/s (sim.Distrust)
#
# Each round runs a fresh queue and receiver on loopback, sends 60 bulk
# mails at 50/s, and times the receiver's first refusal (as it notes it,
# answering) against the moment the outlook lane reads "slowed" (polled
# every 100 µs: that is the resolution). Then it times the placement rule:
# the seed copy whose fate crosses the threshold, to the lane's change.
# Prints p50/p90/p99/max of each and a PASS or FAIL line for the target.
#
# Usage: bench/lanes.sh [ROUNDS]   (default 20)
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROUNDS=${1:-20}
case $ROUNDS in '' | *[!0-9]*) echo "lanes.sh: ROUNDS must be a whole number" >&2; exit 2 ;; esac
exec go run ./bench/reaction -rounds "$ROUNDS"
