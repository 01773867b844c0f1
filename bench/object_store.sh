#!/usr/bin/env bash
# ringest with object-store persistence next to local persistence, and an object-store
# outage under load (issue 16's acceptance runs), against a real S3 server on loopback
# (moto's server from PyPI).
#
#   bench/object_store.sh            # 3 rounds × 30 s per mode, then a 150-s run with a 60-s outage
#   QUICK=1 bench/object_store.sh    # 1 round × 5 s, a 30-s run with a 10-s outage
#
# What it does, in order:
#   1. builds ringest and ringest-bench (release), unless RINGEST and BENCH name binaries;
#      starts `python -m moto.server` (PYTHON, default .venv/bin/python: `pip install
#      'moto[server]' pyarrow`) on a free loopback port and creates a bucket;
#   2. side by side, ROUNDS rounds, alternating: a fresh `ringest serve --profile PROFILE`
#      with local persistence only, one closed-loop run (cpu, LINES-line requests, SERIES
#      series, CONNECTIONS connections, DURATION s, unique points, every point read back);
#      then a fresh one with [object_store] pointing at moto, the same run, then the time until
#      the bucket holds everything (ringest_object_store_versions_behind = 0); medians and
#      the ratio object store / local;
#   3. the outage: a fresh server with the object store, an open-loop soak at FRACTION of the
#      local median for OUTAGE_TOTAL s; OUTAGE_AT s in, moto is stopped (SIGSTOP: requests
#      hang until ringest's request timeout, as with a store that went away) for OUTAGE s,
#      then continued; the soak's answers (2xx, 429/503, other) per sample, the WAL's peak
#      size, then the time until the backlog drained, and the rows in the bucket (the node
#      manifest's count and pyarrow's over the Parquet files) against the points
#      acknowledged;
#   4. two appliances (node_id node1, node2) on the bucket: a closed-loop run against each,
#      kill -9 and restart of node1, one more run against it; DuckDB over the bucket counts
#      the rows and the distinct (hostname, time) pairs against the points acknowledged;
#   5. writes bench/results/<machine>/<date>-object-store.csv (the runs of 2), -outage.csv
#      (the soak's samples) and .md (settings, figures, commands).
# Exit code: 0 all good; 2 acknowledged points missing or duplicated (a run's verification,
# the bucket after the outage or of the two nodes); 1 anything else failed.
#
# Knobs (environment): ROUNDS (3), DURATION (30 s), LINES (1000), SERIES (10000),
# CONNECTIONS (8), FRACTION (0.5), OUTAGE_TOTAL (150 s), OUTAGE_AT (30 s), OUTAGE (60 s),
# OPEN_CONNECTIONS (16), SAMPLE_INTERVAL (5 s), PROFILE (default), PYTHON, MACHINE,
# RESULTS_DIR, RINGEST and BENCH (prebuilt binaries: no build), QUICK.
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)
LOG_NAME=object-store
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-30}
LINES=${LINES:-1000}
SERIES=${SERIES:-10000}
CONNECTIONS=${CONNECTIONS:-8}
FRACTION=${FRACTION:-0.5}
OUTAGE_TOTAL=${OUTAGE_TOTAL:-150}
OUTAGE_AT=${OUTAGE_AT:-30}
OUTAGE=${OUTAGE:-60}
OPEN_CONNECTIONS=${OPEN_CONNECTIONS:-16}
SAMPLE_INTERVAL=${SAMPLE_INTERVAL:-5}
PROFILE=${PROFILE:-default}
PYTHON=${PYTHON:-$repo/.venv/bin/python}
MACHINE=${MACHINE:-$(hostname -s 2>/dev/null || echo machine)-$(nproc)c}
if [[ -n "${QUICK:-}" ]]; then
  ROUNDS=1 DURATION=5 OUTAGE_TOTAL=30 OUTAGE_AT=5 OUTAGE=10 SAMPLE_INTERVAL=2
fi
RESULTS_DIR=${RESULTS_DIR:-$repo/bench/results/$MACHINE}
BUCKET=ringest-bench
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1

build_binaries
start_work

stamp=$(date -u +%Y-%m-%dT%H%MZ)
mkdir -p "$RESULTS_DIR"
csv="$RESULTS_DIR/$stamp-object-store.csv"
outage_csv="$RESULTS_DIR/$stamp-object-store-outage.csv"
md="$RESULTS_DIR/$stamp-object-store.md"
commands="$work/commands.txt"
: >"$commands"
ACK_SYNCED[local]=yes VERIFY[local]=influxql
ACK_SYNCED[object-store]=yes VERIFY[object-store]=influxql

# --- 1. the S3 server -----------------------------------------------------------------------------
moto_pid=""
stop_moto() {
  if [[ -n "$moto_pid" ]]; then
    kill -CONT "$moto_pid" 2>/dev/null || true
    kill -KILL "$moto_pid" 2>/dev/null || true
    wait "$moto_pid" 2>/dev/null || true
  fi
  moto_pid=""
}
declare -A node_pid=() node_url=()
# Everything started is stopped on exit, whatever the exit: moto, the servers of step 4.
stop_all() {
  local pid
  for pid in "${node_pid[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  stop_moto
  cleanup
}
trap stop_all EXIT
moto_port=$("$BENCH" free-port)
"$PYTHON" -m moto.server -H 127.0.0.1 -p "$moto_port" >"$work/moto.log" 2>&1 &
moto_pid=$!
endpoint="http://127.0.0.1:$moto_port"
"$BENCH" wait --url "$endpoint" --path / --timeout 60 >/dev/null || { log "moto did not start"; exit 1; }
"$PYTHON" -c "import boto3; boto3.client('s3', endpoint_url='$endpoint').create_bucket(Bucket='$BUCKET')"
echo "python -m moto.server -H 127.0.0.1 -p <port>; create bucket $BUCKET" >>"$commands"

# object_store_config DIR NODE: a config file for a node writing to the bucket.
object_store_config() {
  cat >"$1/ringest.toml" <<EOF
[object_store]
url = "s3://$BUCKET/bench"
endpoint = "$endpoint"
allow_http = true
node_id = "$2"
EOF
  echo "$1/ringest.toml"
}

# metric NAME: the sum of a metric's samples on the running server.
metric() {
  curl -sf "$url/metrics" | awk -v n="$1" 'index($0, n "{") == 1 || index($0, n " ") == 1 { s += $NF } END { printf "%d", s }'
}

# drained: seconds until every acknowledged point is persisted (nothing left in memory: the
# next snapshot, within persist.interval_ms) and the bucket holds every file and the catalog
# naming it (at most 300).
drained() {
  local start now
  start=$(date +%s.%N)
  for _ in $(seq 3000); do
    if [[ $(metric ringest_store_bytes) == 0 && $(metric ringest_object_store_versions_behind) == 0 &&
          $(metric ringest_object_store_files_pending) == 0 ]]; then
      now=$(date +%s.%N)
      awk -v a="$start" -v b="$now" 'BEGIN { printf "%.1f", b - a }'
      return 0
    fi
    sleep 0.1
  done
  echo "not within 300 s"
  return 1
}

# --- 2. side by side --------------------------------------------------------------------------------
declare -a drain_times=()
for round in $(seq "$ROUNDS"); do
  for system in local object-store; do
    dir="$work/$system-$round"
    mkdir -p "$dir"
    args=(--profile "$PROFILE")
    [[ $system == object-store ]] && args+=(--config "$(object_store_config "$dir" "ab-$round")")
    log "round $round: $system"
    start_ringest_with "$dir" "${args[@]}" || exit 1
    echo "ringest serve ${args[*]}" | sed "s#$work/#<work>/#g" >>"$commands"
    bench "$system" "$round" "bench$round" --workload cpu --lines "$LINES" --connections "$CONNECTIONS" \
      --duration "$DURATION"
    if [[ $system == object-store ]]; then
      drain=$(drained) || { log "round $round: the bucket did not catch up: $drain"; exit 1; }
      drain_times+=("$drain")
      log "round $round: the bucket held everything $drain s after the run"
    fi
    stop_server
    rm -rf "$dir/data"
  done
done
local_median=$("$BENCH" max --csv "$csv" --system local --workload cpu)
store_median=$("$BENCH" max --csv "$csv" --system object-store --workload cpu)
ratio=$(awk -v a="$store_median" -v b="$local_median" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }')
log "closed loop: local $local_median, object store $store_median points/s (ratio $ratio)"

# --- 3. the outage under load -------------------------------------------------------------------
rate=$(awk -v b="$local_median" -v f="$FRACTION" 'BEGIN { printf "%d", b * f }')
dir="$work/outage"
mkdir -p "$dir"
start_ringest_with "$dir" --profile "$PROFILE" --config "$(object_store_config "$dir" outage)" || exit 1
echo "ringest serve --profile $PROFILE --config <object store>" >>"$commands"
args=(soak --url "$url" --db outage --data-dir "$dir/data" --server-pid "$server_pid" --workload cpu
      --lines "$LINES" --series "$SERIES" --connections "$OPEN_CONNECTIONS" --rate "$rate"
      --duration "$OUTAGE_TOTAL" --sample-interval "$SAMPLE_INTERVAL"
      --csv "$outage_csv" --svg "$work/outage.svg" --acked-log "$work/outage.acked")
echo "ringest-bench ${args[*]}" | sed -e "s#$url#<ringest>#" -e "s#--server-pid [0-9]*#--server-pid <pid>#" \
  -e "s#$work/#<work>/#g" -e "s#$repo/##g" >>"$commands"
log "outage run: $OUTAGE_TOTAL s at $rate points/s; the store stops at $OUTAGE_AT s for $OUTAGE s"
"$BENCH" "${args[@]}" >"$work/outage.out" 2>&1 &
soak_pid=$!
behind_max=0
sleep "$OUTAGE_AT"
kill -STOP "$moto_pid"
echo "kill -STOP <moto> at $OUTAGE_AT s; kill -CONT after $OUTAGE s" >>"$commands"
log "store stopped"
for _ in $(seq "$OUTAGE"); do
  sleep 1
  behind=$(metric ringest_object_store_versions_behind || echo 0)
  if (( behind > behind_max )); then behind_max=$behind; fi
done
wal_at_resume=$(du -sb "$dir/data/wal" | cut -f1)
kill -CONT "$moto_pid"
log "store continued ($behind_max catalog versions were waiting at most; WAL $wal_at_resume bytes)"
soak_rc=0
wait "$soak_pid" || soak_rc=$?
sed 's/^/    /' "$work/outage.out" >&2
[[ $soak_rc -eq 0 ]] || { log "the soak exited $soak_rc"; exit 1; }
drain_after=$(drained) || { log "the backlog did not drain: $drain_after"; exit 1; }
acked=$(awk '/^soak: / { print $2; exit }' "$work/outage.out")
counted=$("$PYTHON" - "$endpoint" "$BUCKET" <<'EOF'
import json, sys, pyarrow.dataset as ds, pyarrow.fs as pafs
endpoint, bucket = sys.argv[1], sys.argv[2]
fs = pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", region="us-east-1",
                       access_key="bench", secret_key="bench")
base = f"{bucket}/bench/node=outage"
with fs.open_input_stream(base + "/_catalog.json") as f:
    manifest = sum(f["rows"] for f in json.load(f)["files"] if f["database"] == "outage")
files = [i.path for i in fs.get_file_info(pafs.FileSelector(base + "/db=outage", recursive=True))
         if i.path.endswith(".parquet")]
print(manifest, ds.dataset(files, filesystem=fs, format="parquet").count_rows())
EOF
)
read -r manifest_rows parquet_rows <<<"$counted"
log "acknowledged $acked points; the bucket holds $manifest_rows (manifest) / $parquet_rows (Parquet) rows"
stop_server
outage_ok=1
[[ "$acked" == "$manifest_rows" && "$acked" == "$parquet_rows" ]] || outage_ok=0

# --- 4. two appliances, one bucket ---------------------------------------------------------------
# A load run against each (every point read back; a database per run, so each run verifies
# its own points), a kill -9 and restart of the first, one more run against it, then DuckDB
# over the bucket: rows and distinct (hostname, time) pairs.
two_acked=0
two_run() { # NODE ROUND: one closed-loop run against the node at $url; its acked points added
  local out="$work/two-$1-$2.out" start_ns
  # Distinct times per run (points are 1 ms apart per series: a run spans seconds).
  start_ns=$(( ($(date +%s) - 3600 + $1 * 100 + $2 * 10) * 1000000000 ))
  "$BENCH" run --url "$url" --db "fleet_$1_$2" --label "node$1" --workload cpu --lines "$LINES" --series "$SERIES" \
    --connections "$CONNECTIONS" --duration "$DURATION" --start-ns "$start_ns" --verify influxql \
    >"$out" 2>&1 || { sed 's/^/    /' "$out" >&2; log "node $1: run failed"; exit 1; }
  sed 's/^/    /' "$out" >&2
  echo "ringest-bench run --url <node$1> --db fleet_$1_$2 --workload cpu --lines $LINES --series $SERIES --connections $CONNECTIONS --duration $DURATION --start-ns <now - 1 h + node × 100 s + round × 10 s> --verify influxql" >>"$commands"
  two_acked=$(( two_acked + $(awk '/^result: / { for (i = 1; i <= NF; i++) if ($i == "acknowledged") { print $(i - 2); exit } }' "$out") ))
}
for node in 1 2; do
  mkdir -p "$work/node$node"
  start_ringest_with "$work/node$node" --profile "$PROFILE" --config "$(object_store_config "$work/node$node" "node$node")" || exit 1
  node_pid[$node]=$server_pid node_url[$node]=$url
  echo "ringest serve --profile $PROFILE --config <object store, node_id node$node>" >>"$commands"
  two_run "$node" 1
done
log "kill -9 node 1, restart it on the same data directory"
kill -KILL "${node_pid[1]}"
wait "${node_pid[1]}" 2>/dev/null || true
start_ringest_with "$work/node1" --profile "$PROFILE" --config "$work/node1/ringest.toml" || exit 1
node_pid[1]=$server_pid node_url[1]=$url
echo "kill -KILL <node1>; ringest serve (node1 again, same data directory)" >>"$commands"
two_run 1 2
two_drain=""
for node in 1 2; do
  url=${node_url[$node]}
  two_drain+="$(drained || echo never) "
done
two_counted=$("$PYTHON" - "$endpoint" "$BUCKET" <<'PY'
import sys, duckdb, pyarrow.dataset as ds, pyarrow.fs as pafs
endpoint, bucket = sys.argv[1], sys.argv[2]
fs = pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", region="us-east-1",
                       access_key="bench", secret_key="bench")
files = [i.path for i in fs.get_file_info(pafs.FileSelector(f"{bucket}/bench", recursive=True))
         if i.path.endswith(".parquet") and "/db=fleet_" in i.path and "/table=cpu/" in i.path]
d = ds.dataset(files, filesystem=fs, format="parquet", partitioning="hive", partition_base_dir=f"{bucket}/bench")
rows, distinct = duckdb.sql("SELECT count(*), count(DISTINCT (hostname, time)) FROM d").fetchall()[0]
print(rows, distinct)
PY
)
read -r two_rows two_distinct <<<"$two_counted"
log "two nodes: $two_acked points acknowledged; the bucket holds $two_rows rows, $two_distinct distinct (hostname, time)"
server_pid=${node_pid[1]}
stop_server
server_pid=${node_pid[2]}
stop_server
two_ok=1
[[ "$two_acked" == "$two_rows" && "$two_rows" == "$two_distinct" ]] || two_ok=0
echo "DuckDB over pyarrow's S3 dataset of <bucket>/bench/*/db=fleet_*/table=cpu: count(*), count(DISTINCT (hostname, time))" >>"$commands"

# --- 5. the report ------------------------------------------------------------------------------
{
  echo "# ringest: object-store persistence vs local, and a store outage under load ($stamp)"
  echo
  machine_lines
  echo
  echo "Settings: profile $PROFILE, cpu workload, $LINES lines per request, $SERIES series, unique points;"
  echo "S3 server: moto (python -m moto.server) on 127.0.0.1, on the same machine."
  echo
  echo "## Side by side ($ROUNDS rounds × $DURATION s closed loop, $CONNECTIONS connections, every point read back)"
  echo
  echo "| persistence | median points/s |"
  echo "|---|---|"
  echo "| local only | $local_median |"
  echo "| object store (S3, moto) | $store_median |"
  echo
  echo "Ratio object store / local: **$ratio**. After each object-store run, every acknowledged"
  echo "point was persisted and in the bucket after: ${drain_times[*]} s (this includes waiting"
  echo "for the next snapshot, persist.interval_ms)."
  echo
  echo "## Outage: the store stopped for $OUTAGE s under $rate points/s ($FRACTION × local median)"
  echo
  echo '```text'
  sed -n '/^soak: /,$p' "$work/outage.out"
  echo '```'
  echo
  echo "- catalog versions waiting for the store, at most: $behind_max; WAL when it returned: $wal_at_resume bytes"
  echo "- every acknowledged point persisted and in the bucket $drain_after s after the soak ended"
  echo "- acknowledged points: $acked; rows in the bucket: $manifest_rows (node manifest), $parquet_rows (pyarrow over the Parquet files): $([[ $outage_ok == 1 ]] && echo "equal" || echo "NOT EQUAL")"
  echo
  echo "## Two appliances, one bucket"
  echo
  echo "node1 and node2 (node_id), one closed-loop run each ($DURATION s, every point read back),"
  echo "then kill -9 of node1, a restart on its data directory and one more run against it."
  echo "Every acknowledged point persisted and in the bucket after (node1, node2): $two_drain s."
  echo
  echo "- acknowledged points: $two_acked; rows in the bucket (DuckDB): $two_rows; distinct (hostname, time): $two_distinct: $([[ $two_ok == 1 ]] && echo "equal, no duplicates" || echo "NOT EQUAL")"
  echo
  commands_block
} >"$md"
log "wrote $md"
if [[ $failures -gt 0 || $outage_ok == 0 || $two_ok == 0 ]]; then exit 2; fi
[[ $run_errors -eq 0 ]] || exit 1
