#!/usr/bin/env bash
# ringest against InfluxDB 1.6.7 and VictoriaMetrics 1.79.5 on loopback, side by side.
#
#   bench/compare.sh            # the full comparison (about 15 minutes on 2 cores)
#   QUICK=1 bench/compare.sh    # 1 round, 3-second runs: a smoke test of the script
#
# What it does, in order:
#   1. installs the peers from Debian if they are missing (apt-get install influxdb victoria-metrics);
#   2. builds ringest and ringest-bench (release);
#   3. runs interleaved rounds: in each round every system is started on its own temporary
#      data directory on 127.0.0.1, gets the same closed-loop workloads, is verified, and is
#      stopped before the next system starts (so no system's background work steals CPU from
#      another's measurement);
#   4. open loop at fractions of each system's own median maximum (latency vs offered load);
#   5. a scaling run: ringest at 1 shard beside ringest at every core (its default);
#   6. prints the medians table with ratios against ringest and writes
#      bench/results/<machine>/<date>.csv, .md (table and commands) and two SVG charts.
# Everything it started is stopped on exit, failure or Ctrl-C.
#
# Systems and what their acknowledgement means:
#   ringest           204 after fdatasync of its WAL (group commit)             ack_synced=yes
#   ringest-1shard    the same, --shards 1 (scaling run)                        ack_synced=yes
#   influxdb          1.6.7 defaults: WAL fsync on every write (wal-fsync-delay=0) ack_synced=yes
#   victoria-metrics  1.79.5 defaults: acknowledges before data is durable or queryable  ack_synced=no
#   discard           ringest-bench's own server: reads and drops bodies: the generator's ceiling  ack_synced=no
#
# Knobs (environment): ROUNDS (3), DURATION (10 s per closed-loop run), OPEN_DURATION (10),
# CONNECTIONS (8), OPEN_CONNECTIONS (16), LINES (1000), SERIES (1000), FRACTIONS ("0.25 0.5 0.75"),
# SYSTEMS ("ringest ringest-1shard influxdb victoria-metrics discard"), MACHINE (hostname-Nc), QUICK,
# PERF=1 (perf profile of PERF_SYSTEM, default ringest, during round 1's cpu run; needs linux-perf),
# RINGEST and BENCH (prebuilt binaries: no build).
# Tuning profiles against each other: bench/profiles.sh (shares bench/lib.sh with this script).
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)
LOG_NAME=compare
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
OPEN_DURATION=${OPEN_DURATION:-10}
CONNECTIONS=${CONNECTIONS:-8}
OPEN_CONNECTIONS=${OPEN_CONNECTIONS:-16}
LINES=${LINES:-1000}
SERIES=${SERIES:-1000}
FRACTIONS=${FRACTIONS:-"0.25 0.5 0.75"}
SYSTEMS=${SYSTEMS:-"ringest ringest-1shard influxdb victoria-metrics discard"}
MACHINE=${MACHINE:-$(hostname -s 2>/dev/null || echo machine)-$(nproc)c}
if [[ -n "${QUICK:-}" ]]; then
  ROUNDS=1 DURATION=3 OPEN_DURATION=3 FRACTIONS="0.5"
fi
# gzip bodies are compressed before each run (never while it runs), so a gzip run is sized in
# points: about DURATION seconds at the system's own plain cpu rate, at most GZIP_POINTS_MAX.
GZIP_POINTS_MAX=${GZIP_POINTS_MAX:-5000000}
ACK_SYNCED=([ringest]=yes [ringest-1shard]=yes [influxdb]=yes [victoria-metrics]=no [discard]=no)
VERIFY=([ringest]=influxql [ringest-1shard]=influxql [influxdb]=influxql
        [victoria-metrics]=victoria [discard]=none)
CREATE_DB=([influxdb]=yes)

# --- 1. peers -------------------------------------------------------------------------------
if ! command -v influxd >/dev/null || ! command -v victoria-metrics >/dev/null; then
  log "installing the peers from Debian: influxdb victoria-metrics"
  sudo_cmd=""; [[ $(id -u) -ne 0 ]] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq influxdb victoria-metrics >/dev/null
fi
influx_version=$(influxd version 2>/dev/null | head -1 || true)
vm_version=$(dpkg-query -W -f='${Version}' victoria-metrics 2>/dev/null || echo unknown)

# --- 2. build; everything started is stopped on exit, whatever happens -----------------------
build_binaries
start_work

# start_<system> DIR: starts the server in the background, sets server_pid and url; 1 if unavailable
# (start_influxdb is in lib.sh: bench/query.sh starts it too).
start_ringest() { start_ringest_with "$1" --shards "$(nproc)"; }
start_ringest-1shard() { start_ringest_with "$1" --shards 1; }

start_victoria-metrics() {
  local dir=$1 port
  port=$("$BENCH" free-port)
  # -search.disableCache: verification polls the same query and must not see a cached answer.
  victoria-metrics -storageDataPath "$dir/data" -httpListenAddr "127.0.0.1:$port" \
    -search.disableCache -loggerLevel WARN >"$dir/stdout" 2>"$dir/stderr" &
  server_pid=$!
  url="http://127.0.0.1:$port"
  "$BENCH" wait --url "$url" --path /health --timeout 30 >/dev/null || { stop_server; return 1; }
}

start_discard() {
  local dir=$1
  "$BENCH" discard --listen 127.0.0.1:0 >"$dir/stdout" 2>"$dir/stderr" &
  server_pid=$!
  for _ in $(seq 100); do
    if grep -q ' ready on ' "$dir/stdout" 2>/dev/null; then
      url="http://$(sed -n 's/.* ready on //p' "$dir/stdout" | head -1)"
      return 0
    fi
    sleep 0.1
  done
  stop_server
  return 1
}

# --- results --------------------------------------------------------------------------------
stamp=$(date -u +%Y-%m-%dT%H%MZ)
results="$repo/bench/results/$MACHINE"
mkdir -p "$results"
csv="$results/$stamp.csv"
md="$results/$stamp.md"
commands="$work/commands.txt"
: >"$commands"

declare -A available
for system in $SYSTEMS; do available[$system]=1; done

closed_round() {
  local round=$1 system dir
  for system in $SYSTEMS; do
    [[ ${available[$system]} == 1 ]] || continue
    dir="$work/$system-r$round"; mkdir -p "$dir"
    log "round $round: $system"
    if ! "start_$system" "$dir"; then log "$system: skipped"; available[$system]=0; continue; fi
    local profiler=""
    if [[ -n "${PERF:-}" && $system == "${PERF_SYSTEM:-ringest}" && $round == 1 ]] && command -v perf >/dev/null; then
      # Where the time goes: sample the server (call graphs) during round 1's cpu run.
      perf record -q -F 499 -g -p "$server_pid" -o "$work/perf.data" -- sleep "$DURATION" >/dev/null 2>&1 &
      profiler=$!
    fi
    bench "$system" "$round" "r${round}_cpu" --workload cpu --lines "$LINES" \
      --connections "$CONNECTIONS" --duration "$DURATION"
    if [[ -n "$profiler" ]]; then
      wait "$profiler" || true
      perf report -i "$work/perf.data" --stdio --no-children -g none --percent-limit 0.5 2>/dev/null \
        | head -150 >"$results/$stamp-$system-profile.txt" || true
      log "profile of $system: $results/$stamp-$system-profile.txt"
    fi
    bench "$system" "$round" "r${round}_iot" --workload iot --lines "$LINES" \
      --connections "$CONNECTIONS" --duration "$DURATION"
    local rate gzip_points
    rate=$("$BENCH" max --csv "$csv" --system "$system" --workload cpu 2>/dev/null || echo 0)
    gzip_points=$(awk -v r="$rate" -v d="$DURATION" -v lo=$((LINES * CONNECTIONS * 4)) -v hi="$GZIP_POINTS_MAX" \
      'BEGIN { p = r * d; if (p < lo) p = lo; if (p > hi) p = hi; printf "%d", p }')
    bench "$system" "$round" "r${round}_gz" --workload cpu --lines "$LINES" \
      --connections "$CONNECTIONS" --gzip --points "$gzip_points"
    stop_server
    rm -rf "$dir"
  done
}

open_round() {
  local round=$1 system dir max rate fraction
  for system in $SYSTEMS; do
    [[ ${available[$system]} == 1 ]] || continue
    max=$("$BENCH" max --csv "$csv" --system "$system" --workload cpu)
    [[ $max -gt 0 ]] || continue
    dir="$work/$system-open-r$round"; mkdir -p "$dir"
    log "open loop round $round: $system (max $max points/s)"
    if ! "start_$system" "$dir"; then continue; fi
    for fraction in $FRACTIONS; do
      rate=$(awk -v m="$max" -v f="$fraction" 'BEGIN { printf "%d", m * f }')
      bench "$system" "$round" "o${round}_${fraction/./_}" --workload cpu --lines "$LINES" \
        --connections "$OPEN_CONNECTIONS" --duration "$OPEN_DURATION" --rate "$rate"
    done
    stop_server
    rm -rf "$dir"
  done
}

log "results: $csv"
for round in $(seq "$ROUNDS"); do closed_round "$round"; done
for round in $(seq "$ROUNDS"); do open_round "$round"; done

# --- report ---------------------------------------------------------------------------------
{
  echo "# ringest-bench comparison, $stamp"
  echo
  machine_lines
  echo "- peers: $influx_version; VictoriaMetrics $vm_version (Debian)"
  echo "- rounds: $ROUNDS, closed loop $DURATION s × $CONNECTIONS connections, open loop $OPEN_DURATION s × $OPEN_CONNECTIONS connections at $FRACTIONS of each system's own maximum"
  echo "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  for system in $SYSTEMS; do
    [[ ${available[$system]} == 1 ]] || echo "- $system: NOT MEASURED (did not start or become ready)"
  done
  echo
  "$BENCH" report --csv "$csv" --out-dir "$results" | grep -v '^chart: '
  echo
  echo "Charts: [throughput]($stamp-throughput.svg), [latency vs offered load]($stamp-latency.svg)"
  echo
  commands_block
} >"$md"
cat "$md"
log "wrote $csv, $md and charts in $results"
if [[ $failures -gt 0 ]]; then
  log "$failures run(s) found acknowledged points missing"
  exit 2
fi
