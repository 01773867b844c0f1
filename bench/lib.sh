# shellcheck shell=bash
# repo, csv, commands, SERIES and MACHINE are set by the sourcing script:
# shellcheck disable=SC2154
# Functions shared by bench/compare.sh and bench/profiles.sh. Sourced, never run.
#
# The sourcing script sets `repo` (the repository root) and LOG_NAME, fills the tables
# ACK_SYNCED, VERIFY and CREATE_DB (declared here) for each system it runs, sets `csv`,
# `commands` and SERIES, and then calls, in order:
#   build_binaries        sets RINGEST and BENCH (release build unless both are given)
#   start_work            temporary work dir; everything started is stopped on exit
#   start_ringest_with DIR ARGS...   `ringest serve` on 127.0.0.1 (sets server_pid, url)
#   start_influxdb DIR    `influxd` 1.x with its defaults on 127.0.0.1 (sets server_pid, url)
#   bench SYSTEM ROUND DB ARGS...    one ringest-bench run, appended to $csv
#   stop_server
# Counters the caller reads at the end: failures (runs that found acknowledged points
# missing, exit 2 of ringest-bench) and run_errors (runs that exited otherwise non-zero).

declare -A ACK_SYNCED=() VERIFY=() CREATE_DB=()
failures=0
run_errors=0
server_pid=""
url=""
work=""

log() { printf '[%s %s] %s\n' "${LOG_NAME:-bench}" "$(date -u +%H:%M:%S)" "$*" >&2; }

# RINGEST and BENCH from the environment name prebuilt binaries (the tests use the ones
# cargo built); otherwise both are built in release mode.
build_binaries() {
  if [[ -z "${RINGEST:-}" || -z "${BENCH:-}" ]]; then
    log "building ringest and ringest-bench (release)"
    (cd "$repo" && cargo build --release --quiet --bin ringest --bin ringest-bench)
  fi
  RINGEST=${RINGEST:-$repo/target/release/ringest}
  BENCH=${BENCH:-$repo/target/release/ringest-bench}
}

stop_server() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  server_pid=""
}

cleanup() {
  stop_server
  if [[ -n "$work" ]]; then rm -rf "$work"; fi
}

start_work() {
  work=$(mktemp -d "${TMPDIR:-/tmp}/ringest-${LOG_NAME:-bench}.XXXXXX")
  trap cleanup EXIT
  trap 'exit 130' INT TERM
}

# start_ringest_with DIR ARGS...: `ringest serve ARGS` on a free loopback port with data in
# DIR/data; waits for its ready line (printed once every shard listens). 1 if it did not
# get there (the last lines of its stderr are logged).
start_ringest_with() {
  local dir=$1 port
  shift
  port=$("$BENCH" free-port)
  "$RINGEST" serve --listen "127.0.0.1:$port" --data-dir "$dir/data" "$@" >"$dir/stdout" 2>"$dir/stderr" &
  server_pid=$!
  url="http://127.0.0.1:$port"
  for _ in $(seq 200); do
    grep -q '^ringest: ready on ' "$dir/stdout" 2>/dev/null && return 0
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  log "ringest serve $* did not print its ready line; its stderr ends with:"
  tail -5 "$dir/stderr" | sed 's/^/    /' >&2
  stop_server
  return 1
}

# start_influxdb DIR: influxd (1.6.7 from Debian) on free loopback ports with every file under
# DIR; waits until /ping answers. 1 if it did not get there.
start_influxdb() {
  local dir=$1 http rpc
  http=$("$BENCH" free-port); rpc=$("$BENCH" free-port)
  # Defaults everywhere except paths, loopback ports, and the noise we turn off
  # (usage reporting, the self-monitoring database, per-request access log).
  cat >"$dir/influxdb.conf" <<EOF
reporting-disabled = true
bind-address = "127.0.0.1:$rpc"
[meta]
  dir = "$dir/meta"
[data]
  dir = "$dir/data"
  wal-dir = "$dir/wal"
  wal-fsync-delay = "0s"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:$http"
  log-enabled = false
[monitor]
  store-enabled = false
[logging]
  level = "warn"
[continuous_queries]
  enabled = false
EOF
  influxd -config "$dir/influxdb.conf" >"$dir/stdout" 2>"$dir/stderr" &
  server_pid=$!
  url="http://127.0.0.1:$http"
  "$BENCH" wait --url "$url" --path /ping --timeout 30 >/dev/null || { stop_server; return 1; }
}

# bench SYSTEM ROUND DB ARGS...: one ringest-bench run against $url, logged to $commands
# and appended to $csv; the server's peak resident set is read after it (--server-pid).
bench() {
  local system=$1 round=$2 db=$3; shift 3
  local args=(run --url "$url" --db "$db" --label "$system" --ack-synced "${ACK_SYNCED[$system]}"
              --round "$round" --verify "${VERIFY[$system]}" --series "$SERIES" --csv "$csv" "$@")
  [[ ${CREATE_DB[$system]:-} == yes ]] && args+=(--create-db)
  echo "ringest-bench ${args[*]}" | sed -e "s#$url#<$system>#" -e "s#$repo/##" >>"$commands"
  [[ -n "$server_pid" ]] && args+=(--server-pid "$server_pid")
  local rc=0
  "$BENCH" "${args[@]}" >"$work/run.out" 2>&1 || rc=$?
  sed 's/^/    /' "$work/run.out" >&2
  if [[ $rc -eq 2 ]]; then
    failures=$((failures + 1))
    log "$system: ACKNOWLEDGED POINTS MISSING (see above)"
  elif [[ $rc -ne 0 ]]; then
    run_errors=$((run_errors + 1))
    log "$system: run exited $rc"
  fi
}

# The machine and commit lines at the top of a results .md.
machine_lines() {
  echo "- machine: $MACHINE, $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -r)"
  echo "- cpu: $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)"
  echo "- commit: $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$repo" diff --quiet 2>/dev/null || echo ' (dirty)')"
}

# The commands block at the end of a results .md.
commands_block() {
  echo "Commands (one per run, in order; <system> is the loopback URL the script started):"
  echo
  echo '```'
  cat "$commands"
  echo '```'
}
