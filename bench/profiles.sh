#!/usr/bin/env bash
# ringest's tuning profiles (tuning/*.toml) against each other on loopback: what each one
# changes in throughput, ack latency and server memory (issue 8).
#
#   bench/profiles.sh            # the full run: 3 interleaved rounds, 10-s runs (about 12 min on 2 cores)
#   QUICK=1 bench/profiles.sh    # 1 round, 3-second runs: a smoke test of the script (about 2 min)
#
# What it does, in order:
#   1. builds ringest and ringest-bench (release), unless RINGEST and BENCH name binaries;
#   2. finds the profiles: every tuning/NAME.toml except reference.toml (the key reference,
#      not a profile), BASELINE (default) first; a file the binary does not know as a profile
#      fails to start, and that fails the run;
#   3. closed-loop rounds, interleaved (every profile once, then again): each profile's server
#      `ringest serve --profile NAME` on a fresh temporary data directory on 127.0.0.1 gets two
#      workloads, the big one (cpu, LINES=1000-line requests, CONNECTIONS=8) and the small one
#      (cpu, SMALL_LINES=10-line requests, SMALL_CONNECTIONS=64: per-request costs and the time
#      to each 204 dominate), every acknowledged point is read back, and the server is stopped
#      before the next profile starts;
#   4. open-loop rounds, interleaved the same way: each profile at OPEN_FRACTION (0.5) of its
#      own median maximum of each workload; p50/p99/p99.9 ack latency from the intended send
#      time (OPEN_CONNECTIONS=16 for the big workload, SMALL_OPEN_CONNECTIONS=64 for the small);
#   5. the server's peak resident set (VmHWM of /proc/PID/status) right after it is ready, and
#      after every run (the last run of a server reads it just before the server is stopped);
#   6. writes bench/results/<machine>/<date>-profiles.csv, .md (the table: profile, workload,
#      points/s median, range and ratio to BASELINE, latency at OPEN_FRACTION, whether the
#      rounds separate a profile from BASELINE, peak RSS; the commands) and two SVG charts.
# Exit code: 0 all good; 2 a run found acknowledged points missing; 1 a profile did not start
# or a run failed otherwise (no acknowledgement, verification impossible). Everything it
# started is stopped on exit, failure or Ctrl-C.
#
# Knobs (environment): ROUNDS (3), DURATION (10 s per closed-loop run), OPEN_DURATION (10),
# LINES (1000), CONNECTIONS (8), OPEN_CONNECTIONS (16), SMALL_LINES (10), SMALL_CONNECTIONS (64),
# SMALL_OPEN_CONNECTIONS (64), SERIES (1000), OPEN_FRACTION (0.5), PROFILES (the ones found in
# TUNING_DIR, default tuning/), BASELINE (default), SHARDS (unset: the profile's, i.e. one per
# core), MACHINE (hostname-Nc), RESULTS_DIR (bench/results/<machine>), RINGEST and BENCH
# (prebuilt binaries: no build; tests/bench_harness.rs runs this script at tiny size so),
# QUICK (1 round of 3-second runs).
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)
LOG_NAME=profiles
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
OPEN_DURATION=${OPEN_DURATION:-10}
LINES=${LINES:-1000}
CONNECTIONS=${CONNECTIONS:-8}
OPEN_CONNECTIONS=${OPEN_CONNECTIONS:-16}
SMALL_LINES=${SMALL_LINES:-10}
SMALL_CONNECTIONS=${SMALL_CONNECTIONS:-64}
SMALL_OPEN_CONNECTIONS=${SMALL_OPEN_CONNECTIONS:-64}
SERIES=${SERIES:-1000}
OPEN_FRACTION=${OPEN_FRACTION:-0.5}
BASELINE=${BASELINE:-default}
TUNING_DIR=${TUNING_DIR:-$repo/tuning}
SHARDS=${SHARDS:-}
MACHINE=${MACHINE:-$(hostname -s 2>/dev/null || echo machine)-$(nproc)c}
RESULTS_DIR=${RESULTS_DIR:-$repo/bench/results/$MACHINE}
if [[ -n "${QUICK:-}" ]]; then
  ROUNDS=1 DURATION=3 OPEN_DURATION=3
fi
if [[ $LINES == "$SMALL_LINES" ]]; then
  echo "profiles.sh: LINES and SMALL_LINES must differ (the report tells the workloads apart by lines per request)" >&2
  exit 1
fi

# --- profiles: baseline first, then the rest in name order ----------------------------------
if [[ -z "${PROFILES:-}" ]]; then
  PROFILES=""
  for file in "$TUNING_DIR"/*.toml; do
    name=$(basename "$file" .toml)
    [[ $name == reference ]] && continue
    PROFILES+=" $name"
  done
fi
ordered="$BASELINE"
for name in $PROFILES; do [[ $name == "$BASELINE" ]] || ordered+=" $name"; done
PROFILES=$ordered
declare -A available
for profile in $PROFILES; do
  ACK_SYNCED[$profile]=yes   # every profile keeps the fdatasync before the 204
  VERIFY[$profile]=influxql
  available[$profile]=1
done
start_failures=0

build_binaries
start_work

# The workloads, by name: lines per request, closed-loop and open-loop connections.
declare -A WORKLOAD_LINES=([big]=$LINES [small]=$SMALL_LINES)
declare -A WORKLOAD_CONNECTIONS=([big]=$CONNECTIONS [small]=$SMALL_CONNECTIONS)
declare -A WORKLOAD_OPEN_CONNECTIONS=([big]=$OPEN_CONNECTIONS [small]=$SMALL_OPEN_CONNECTIONS)

# Peak resident set of each server right after its ready line, before any load (KiB,
# space-separated, one per server started): what the profile costs before data arrives.
declare -A start_kib=()

# start_profile DIR PROFILE: its server, or 1 (logged, counted, never measured again).
start_profile() {
  local dir=$1 profile=$2 kib
  local args=(--profile "$profile")
  [[ -n "$SHARDS" ]] && args+=(--shards "$SHARDS")
  if ! start_ringest_with "$dir" "${args[@]}"; then
    log "PROFILE $profile DID NOT START"
    start_failures=$((start_failures + 1))
    available[$profile]=0
    return 1
  fi
  kib=$(awk '/^VmHWM:/ { print $2 }' "/proc/$server_pid/status" 2>/dev/null || true)
  start_kib[$profile]+="${kib:-0} "
}

# median_mib KIB...: the median in MiB (one decimal), or n/a.
median_mib() {
  printf '%s\n' "$@" | sort -n | awk '$1 + 0 > 0 { v[++n] = $1 }
    END { if (n == 0) { print "n/a"; exit }
          m = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2; printf "%.1f\n", m / 1024 }'
}

# --- results --------------------------------------------------------------------------------
stamp=$(date -u +%Y-%m-%dT%H%MZ)
mkdir -p "$RESULTS_DIR"
csv="$RESULTS_DIR/$stamp-profiles.csv"
md="$RESULTS_DIR/$stamp-profiles.md"
commands="$work/commands.txt"
: >"$commands"
load_at_start=$(cut -d' ' -f1-3 /proc/loadavg)

closed_round() {
  local round=$1 profile dir workload
  for profile in $PROFILES; do
    [[ ${available[$profile]} == 1 ]] || continue
    dir="$work/$profile-r$round"; mkdir -p "$dir"
    log "round $round: $profile"
    start_profile "$dir" "$profile" || continue
    for workload in big small; do
      bench "$profile" "$round" "r${round}_$workload" --workload cpu --lines "${WORKLOAD_LINES[$workload]}" \
        --connections "${WORKLOAD_CONNECTIONS[$workload]}" --duration "$DURATION"
    done
    stop_server
    rm -rf "$dir"
  done
}

open_round() {
  local round=$1 profile dir workload max rate
  for profile in $PROFILES; do
    [[ ${available[$profile]} == 1 ]] || continue
    dir="$work/$profile-open-r$round"; mkdir -p "$dir"
    log "open loop round $round: $profile"
    start_profile "$dir" "$profile" || continue
    for workload in big small; do
      max=$("$BENCH" max --csv "$csv" --system "$profile" --workload cpu --lines "${WORKLOAD_LINES[$workload]}" 2>/dev/null || echo 0)
      [[ $max -gt 0 ]] || { log "$profile: no $workload maximum, no open loop"; continue; }
      rate=$(awk -v m="$max" -v f="$OPEN_FRACTION" 'BEGIN { r = m * f; if (r < 1) r = 1; printf "%d", r }')
      bench "$profile" "$round" "o${round}_$workload" --workload cpu --lines "${WORKLOAD_LINES[$workload]}" \
        --connections "${WORKLOAD_OPEN_CONNECTIONS[$workload]}" --duration "$OPEN_DURATION" --rate "$rate"
    done
    stop_server
    rm -rf "$dir"
  done
}

log "profiles: $PROFILES; results: $csv"
for round in $(seq "$ROUNDS"); do closed_round "$round"; done
for round in $(seq "$ROUNDS"); do open_round "$round"; done

# --- report ---------------------------------------------------------------------------------
# What a profile sets, on one line: `[wal] batch_bytes_max = 1048576, …`.
profile_keys() {
  awk '/^[[:space:]]*(#|$)/ { next }
       /^\[/ { section = $0; next }
       { gsub(/[[:space:]]+/, " "); keys = keys (keys ? ", " : "") section " " $0 }
       END { print (keys ? keys : "nothing (the built-in defaults)") }' "$1"
}
shards_text=${SHARDS:-"as the profile says (default: one per core)"}
{
  echo "# ringest tuning profiles, $stamp"
  echo
  machine_lines
  echo "- rounds: $ROUNDS, closed loop $DURATION s per workload, open loop $OPEN_DURATION s at $OPEN_FRACTION of each profile's own maximum; series $SERIES; shards $shards_text"
  echo "- workloads (all cpu lines, 204 after fdatasync): big = $LINES lines/request × $CONNECTIONS connections (open loop × $OPEN_CONNECTIONS), small = $SMALL_LINES lines/request × $SMALL_CONNECTIONS connections (open loop × $SMALL_OPEN_CONNECTIONS)"
  echo "- load average at the start: $load_at_start; at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  echo "Profiles (what each sets; \`tuning/NAME.toml\`):"
  echo
  for profile in $PROFILES; do
    if [[ ${available[$profile]} == 1 ]]; then
      if [[ -f "$TUNING_DIR/$profile.toml" ]]; then
        echo "- $profile: $(profile_keys "$TUNING_DIR/$profile.toml")"
      else
        echo "- $profile"
      fi
    else
      echo "- $profile: NOT MEASURED (did not start)"
    fi
  done
  echo
  if [[ -s "$csv" ]]; then
    "$BENCH" report --profiles --baseline "$BASELINE" --csv "$csv" --out-dir "$RESULTS_DIR" | grep -v '^chart: '
    echo
    echo
    echo "Peak resident set right after the ready line, before any load (what the profile costs"
    echo "before data arrives), MiB, median over every server started:"
    echo
    echo "| profile | at start | ÷ $BASELINE |"
    echo "|---|---|---|"
    # shellcheck disable=SC2086 # the lists are space-separated numbers
    base_mib=$(median_mib ${start_kib[$BASELINE]:-})
    for profile in $PROFILES; do
      # shellcheck disable=SC2086
      mib=$(median_mib ${start_kib[$profile]:-})
      echo "| $profile | $mib | $(awk -v m="$mib" -v b="$base_mib" 'BEGIN { if (m + 0 > 0 && b + 0 > 0) printf "%.2f×", m / b; else print "n/a" }') |"
    done
    echo
    echo "Charts: [throughput]($stamp-profiles-throughput.svg), [latency vs offered load]($stamp-profiles-latency.svg)"
  else
    echo "No run completed."
  fi
  echo
  commands_block
} >"$md"
cat "$md"
log "wrote $csv, $md and charts in $RESULTS_DIR"
if [[ $failures -gt 0 ]]; then
  log "$failures run(s) found acknowledged points missing"
  exit 2
fi
if [[ $start_failures -gt 0 || $run_errors -gt 0 ]]; then
  log "$start_failures profile start(s) failed, $run_errors run(s) failed otherwise"
  exit 1
fi
