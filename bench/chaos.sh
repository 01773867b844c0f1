#!/usr/bin/env bash
# Mixed load with a crash every few minutes (issue 18 item 4): `ringest-bench chaos` owns one
# ringest process on a fresh data directory and, against it, every kind of client at once
# (v1 and v2 writes, gzip, keep-alive and a new connection per request, a slow client,
# dashboard queries, bad requests that must each get their own status, stalled request
# heads the server must close), SIGKILLs and restarts it every CRASH_EVERY seconds, samples
# its RSS, open fds and disk, and at the end checks that every acknowledged point is stored
# exactly once and nothing else is (bench/ringest_bench/chaos.rs has the ledger and the check).
#
#   bench/chaos.sh                          # one hour, a crash every 5 minutes
#   DURATION=600 CRASH_EVERY=60 bench/chaos.sh
#
# Knobs (environment): DURATION (3600 s), CRASH_EVERY (300 s), RATE (20000 points/s offered by
# the five paced writers together), SAMPLE_INTERVAL (10 s), SERVER_ARGS (extra `ringest serve`
# arguments, e.g. "--shards 2"), MACHINE (hostname-Nc), RESULTS_DIR (bench/results/<machine>),
# RINGEST and BENCH (prebuilt binaries: no build; tests/bench_harness.rs runs this script at
# tiny size so). The data directory lives under TMPDIR (/tmp by default) and is removed at the
# end unless KEEP_DATA=1.
# Writes <results>/<date>-chaos.csv (one row per sample) and .md (the report); the server's
# output is in the work directory (copied beside them with KEEP_DATA=1).
# Exit code: 0 all good; 2 a point lost, duplicated or phantom, an unexpected answer or a
# leaked fd; 1 the run itself failed.
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)
LOG_NAME=chaos
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"

DURATION=${DURATION:-3600}
CRASH_EVERY=${CRASH_EVERY:-300}
RATE=${RATE:-20000}
SAMPLE_INTERVAL=${SAMPLE_INTERVAL:-10}
SERVER_ARGS=${SERVER_ARGS:-}
MACHINE=${MACHINE:-$(hostname -s 2>/dev/null || echo machine)-$(nproc)c}
RESULTS_DIR=${RESULTS_DIR:-$repo/bench/results/$MACHINE}

build_binaries
start_work

stamp=$(date -u +%Y-%m-%dT%H%MZ)
mkdir -p "$RESULTS_DIR"
csv="$RESULTS_DIR/$stamp-chaos.csv"
md="$RESULTS_DIR/$stamp-chaos.md"
server_args=()
for arg in $SERVER_ARGS; do server_args+=("--server-arg=$arg"); done

log "chaos: $DURATION s, a crash every $CRASH_EVERY s, $RATE points/s; report $md"
rc=0
"$BENCH" chaos --ringest "$RINGEST" --data-dir "$work/data" "${server_args[@]}" \
  --duration "$DURATION" --crash-every "$CRASH_EVERY" --rate "$RATE" \
  --sample-interval "$SAMPLE_INTERVAL" --csv "$csv" --report "$md" >/dev/null || rc=$?
{
  echo
  echo "Machine: $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), load at the end $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%Y-%m-%dT%H:%MZ)."
  echo
  echo "Command: \`DURATION=$DURATION CRASH_EVERY=$CRASH_EVERY RATE=$RATE SAMPLE_INTERVAL=$SAMPLE_INTERVAL SERVER_ARGS=\"$SERVER_ARGS\" bench/chaos.sh\`"
} >>"$md" 2>/dev/null || true
if [[ "${KEEP_DATA:-}" == 1 ]]; then
  cp -a "$work/data" "$RESULTS_DIR/$stamp-chaos-data"
  cp "$work/data.log" "$RESULTS_DIR/$stamp-chaos.server.log"
fi
case $rc in
  0) log "PASS: $md" ;;
  2) log "FAIL: $md" ;;
  *) log "the run failed (exit $rc)" ;;
esac
exit "$rc"
