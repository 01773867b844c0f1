#!/usr/bin/env bash
# The dashboard query benchmark (issue 19 item 5): ringest and InfluxDB 1.6.7 loaded with the
# same points, asked the same fixed query set, side by side.
#
#   bench/query.sh            # 10 M points, 5 timed runs of each query per system and state
#   QUICK=1 bench/query.sh    # 20 000 points, 1 timed run: a smoke test of the script
#
# What it does, in order:
#   1. installs InfluxDB from Debian if it is missing (apt-get install influxdb);
#   2. builds ringest and ringest-bench (release), unless RINGEST and BENCH name binaries;
#   3. ringest: `ringest serve --profile default --retention-default-period inf` on a fresh
#      temporary data directory on 127.0.0.1; `ringest-bench query` loads POINTS unique cpu
#      points (SERIES hosts, one point per host every STEP_MS ms, the last one a step before
#      now, so the `now() - 2h` and `now() - 1h` queries cover data; retention inf so that no
#      point of a long history is refused) and runs the query set at once ("ringest-fresh":
#      what the last snapshot has not yet persisted is still in memory, and the persister may
#      be at work); then again after every row is in Parquet (`ringest_store_bytes` 0) and
#      the server's CPU went quiet ("ringest-persisted"), followed by the dashboard check:
#      DASHBOARD_S seconds of load alone, then as long again while the six panels refresh
#      every 5 s (ingest with the panels ÷ ingest alone, writes not acknowledged, panel
#      times); the server is stopped;
#   4. ringest with persistence off ("ringest-memory", `[persist] enabled = false`, otherwise
#      the same), the same load and queries: every row in memory, which the default profile
#      never keeps for long (it snapshots at 256 MiB of rows or every 10 s, so most rows are in
#      Parquet before the fresh runs end); the server is stopped;
#   5. InfluxDB 1.6.7 (its defaults; `CREATE DATABASE` first) on a fresh temporary directory:
#      the same load and queries ("influxdb"), then again once its CPU went quiet, i.e.
#      its compactions are done ("influxdb-settled"); the server is stopped;
#   6. `ringest-bench query-report`: all side by side; ratios of InfluxDB's median times (and
#      CPU seconds) to ringest's: fresh ÷ fresh, settled ÷ persisted, settled ÷ memory; and whether each answer agrees with ringest-fresh's (exactly, or in shape
#      for the now()-relative queries, whose values move with the time they are asked);
#      writes bench/results/<machine>/<date>-query.csv and .md (settings, the tables, every
#      command).
# Only one server runs at a time. The server's CPU seconds per query (utime + stime from
# /proc/PID/stat) are reported beside the wall times: on a shared machine they are the
# steadier figure.
# Exit code: 0 all good; 2 a count after a load was not the points loaded, or two answers
# that must agree did not; 1 a server did not start, a load failed or a query failed.
#
# Knobs (environment): POINTS (10000000), SERIES (100), STEP_MS (1000), REPEAT (5), DASHBOARD_S (20), LINES
# (1000), CONNECTIONS (8), SYSTEMS ("ringest ringest-memory influxdb"), MACHINE (hostname-Nc), RESULTS_DIR
# (bench/results/<machine>), RINGEST and BENCH (prebuilt binaries: no build;
# tests/bench_harness.rs runs this script at tiny size so), QUICK (POINTS=20000 REPEAT=1).
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)
LOG_NAME=query
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"

POINTS=${POINTS:-10000000}
SERIES=${SERIES:-100}
STEP_MS=${STEP_MS:-1000}
REPEAT=${REPEAT:-5}
LINES=${LINES:-1000}
CONNECTIONS=${CONNECTIONS:-8}
SYSTEMS=${SYSTEMS:-"ringest ringest-memory influxdb"}
MACHINE=${MACHINE:-$(hostname -s 2>/dev/null || echo machine)-$(nproc)c}
DASHBOARD_S=${DASHBOARD_S:-20}
if [[ -n "${QUICK:-}" ]]; then
  POINTS=20000 REPEAT=1 DASHBOARD_S=1
fi
RESULTS_DIR=${RESULTS_DIR:-$repo/bench/results/$MACHINE}

# --- 1. the peer ----------------------------------------------------------------------------
if [[ " $SYSTEMS " == *" influxdb "* ]] && ! command -v influxd >/dev/null; then
  log "installing InfluxDB from Debian: influxdb"
  sudo_cmd=""; [[ $(id -u) -ne 0 ]] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq influxdb >/dev/null
fi

# --- 2. build; everything started is stopped on exit, whatever happens -----------------------
build_binaries
start_work

stamp=$(date -u +%Y-%m-%dT%H%MZ)
mkdir -p "$RESULTS_DIR"
csv="$RESULTS_DIR/$stamp-query.csv"
md="$RESULTS_DIR/$stamp-query.md"
commands="$work/commands.txt"
: >"$commands"
load_at_start=$(cut -d' ' -f1-3 /proc/loadavg)
mismatches=0
query_errors=0
declare -A outputs=()

# query LABEL ARGS...: one `ringest-bench query` against $url (the server's pid added), logged
# for the .md with the URL and pid made readable, its output kept for the report.
query() {
  local label=$1; shift
  local args=(query --url "$url" --label "$label" --series "$SERIES" --step-ms "$STEP_MS"
              --lines "$LINES" --connections "$CONNECTIONS" --repeat "$REPEAT" --csv "$csv" "$@")
  echo "ringest-bench ${args[*]} --server-pid <pid>" \
    | sed -e "s#$url#<$label>#" -e "s#$repo/##" >>"$commands"
  local rc=0
  "$BENCH" "${args[@]}" --server-pid "$server_pid" >"$work/$label.out" 2>&1 || rc=$?
  sed 's/^/    /' "$work/$label.out" >&2
  outputs[$label]="$work/$label.out"
  if [[ $rc -eq 2 ]]; then
    mismatches=$((mismatches + 1))
    log "$label: THE COUNT IS NOT THE POINTS LOADED (see above)"
  elif [[ $rc -ne 0 ]]; then
    query_errors=$((query_errors + 1))
    log "$label: ringest-bench query exited $rc"
  fi
  return 0
}

measured=()
for system in $SYSTEMS; do
  dir="$work/$system"; mkdir -p "$dir"
  case $system in
    ringest)
      log "ringest: load $POINTS points, then the queries; again once every row is in Parquet"
      start_ringest_with "$dir" --profile default --retention-default-period inf || exit 1
      echo "ringest serve --profile default --retention-default-period inf --data-dir <fresh>" >>"$commands"
      query ringest-fresh --load-points "$POINTS"
      query ringest-persisted --load-points 0 --wait-persisted --settle --dashboard-seconds "$DASHBOARD_S"
      measured+=(ringest-fresh ringest-persisted)
      ;;
    ringest-memory)
      log "ringest-memory: persistence off, load $POINTS points, then the queries"
      printf '[persist]\nenabled = false\n' >"$dir/memory.toml"
      start_ringest_with "$dir" --profile default --config "$dir/memory.toml" \
        --retention-default-period inf || exit 1
      echo "ringest serve --profile default --config <[persist] enabled = false> --retention-default-period inf --data-dir <fresh>" >>"$commands"
      query ringest-memory --load-points "$POINTS"
      measured+=(ringest-memory)
      ;;
    influxdb)
      log "influxdb: load $POINTS points, then the queries; again once its CPU is quiet"
      start_influxdb "$dir" || { log "influxd did not start; its stderr ends with:"; tail -5 "$dir/stderr" >&2; exit 1; }
      echo "influxd -config <influxdb.conf: defaults, loopback ports, fresh directories>" >>"$commands"
      query influxdb --create-db --load-points "$POINTS"
      query influxdb-settled --load-points 0 --settle
      measured+=(influxdb influxdb-settled)
      ;;
    *)
      log "unknown system $system (known: ringest ringest-memory influxdb)"
      exit 1
      ;;
  esac
  stop_server
  rm -rf "$dir"
done

# --- report ---------------------------------------------------------------------------------
influx_version=$(influxd version 2>/dev/null | head -1 || echo "not installed")
report_rc=0
# Each InfluxDB state against the ringest state it resembles (of those measured).
ratios=()
for pair in influxdb:ringest-fresh influxdb-settled:ringest-persisted influxdb-settled:ringest-memory; do
  if [[ " ${measured[*]} " == *" ${pair%%:*} "* && " ${measured[*]} " == *" ${pair##*:} "* ]]; then
    ratios+=(--ratio "$pair")
  fi
done
"$BENCH" query-report --csv "$csv" "${ratios[@]}" >"$work/report.md" 2>&1 || report_rc=$?
{
  echo "# ringest query benchmark, $stamp"
  echo
  machine_lines
  echo "- peer: $influx_version (Debian), its defaults"
  echo "- load: $POINTS unique cpu points, $SERIES hosts, one point per host every $STEP_MS ms ending one step before the load began, $LINES-line requests × $CONNECTIONS connections; $REPEAT timed runs of each query after one warm-up"
  echo "- load average at the start: $load_at_start; at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  cat "$work/report.md"
  echo
  echo "Each run's own output (load, waits, its table):"
  for label in "${measured[@]}"; do
    echo
    echo "**$label**"
    echo
    echo '```'
    grep -v '^|' "${outputs[$label]}" | grep -v '^$' || true
    echo '```'
  done
  echo
  commands_block
} >"$md"
cat "$md"
log "wrote $csv and $md"
if [[ $report_rc -ne 0 ]]; then exit 1; fi
if grep -q '| DIFFERENT |' "$work/report.md"; then
  log "ANSWERS DIFFER between systems or states (see the answers table)"
  mismatches=$((mismatches + 1))
fi
if [[ $query_errors -gt 0 ]]; then exit 1; fi
if [[ $mismatches -gt 0 ]]; then exit 2; fi
