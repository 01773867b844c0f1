#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for a set time, one after
# another, at the lowest CPU priority, and prints per target the executions,
# the coverage (libFuzzer's `cov:` edges and `ft:` features at the end), the
# corpus size and the peak memory. Exits non-zero if any target found a
# crash, a timeout (an input slower than `timeout_of` below) or an
# out-of-memory (more than $FUZZ_RSS_MB), or did not run.
#
#   tests/fuzz/run.sh [seconds-per-target] [target ...]
#
# Seconds default to 600. New corpus entries go to tests/fuzz/target/corpus/<target>
# (not checked in); the checked-in seeds in tests/fuzz/corpus/<target> are
# only read. A finding is written to tests/fuzz/artifacts/<target>/ and the
# libFuzzer log of each target to tests/fuzz/target/logs/<target>.log.
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`); on a stable
# toolchain RUSTC_BOOTSTRAP=1 (set here) lets it use the nightly flags.
set -uo pipefail
cd "$(dirname "$0")/../.."

seconds=${1:-600}
shift || true
all_targets=(http_head http_body line_protocol gzip wal_segment packed manifest influxql)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")
rss_mb=${FUZZ_RSS_MB:-2048}
export RUSTC_BOOTSTRAP=1

# Slowest input allowed, in seconds: 10, except influxql. There the largest
# answer the query limits allow (1,000,000 GROUP BY time buckets) takes
# about 1 s in a release build but 10-16 s in this AddressSanitizer build on
# a shared 2-core machine (tests/fuzz/README.md), so only what takes longer
# than 60 s (work past the limits) is a finding. FUZZ_TIMEOUT_S overrides.
timeout_of() {
  if [ -n "${FUZZ_TIMEOUT_S:-}" ]; then echo "$FUZZ_TIMEOUT_S"; return; fi
  case $1 in
    influxql) echo 60 ;;
    *) echo 10 ;;
  esac
}

# Longest input per target: large enough for a few WAL records, a gzip
# member with its header, a request with a body.
max_len() {
  case $1 in
    gzip | wal_segment | packed) echo 16384 ;;
    http_head | manifest) echo 8192 ;;
    *) echo 4096 ;;
  esac
}

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "run.sh: cargo-fuzz is not installed (cargo install cargo-fuzz --locked)" >&2
  exit 2
fi

# Build every target first, so that build time is not fuzzing time. A
# failed build is tried once more (a link that failed for a passing cause,
# such as a full disk that the first failure's cleanup freed, succeeds the
# second time; a real error fails twice). The linker's own messages follow
# its one very long command line; they are printed again on their own,
# with the free disk space, so that a CI log that cuts long lines still
# shows why.
build_log=$(mktemp)
trap 'rm -f "$build_log"' EXIT
for target in "${targets[@]}"; do
  for attempt in 1 2; do
    # (pipefail, set above: the pipeline fails when the build does)
    if nice -n 19 cargo fuzz build --fuzz-dir tests/fuzz "$target" 2>&1 | tee "$build_log"; then
      break
    fi
    echo "run.sh: build of $target failed (attempt $attempt); the compiler's and linker's messages:" >&2
    grep -vE '^ *= note: +"cc"' "$build_log" | grep -E 'error|ld:|undefined|No space|note:|collect2|killed' >&2 || true
    df -h tests/fuzz "${TMPDIR:-/tmp}" >&2 || true
    if [ "$attempt" = 2 ]; then
      echo "run.sh: build of $target failed" >&2
      exit 1
    fi
  done
done

logs=tests/fuzz/target/logs
mkdir -p "$logs"
failed=()
summary=()
for target in "${targets[@]}"; do
  corpus=tests/fuzz/target/corpus/$target
  seeds=tests/fuzz/corpus/$target
  mkdir -p "$corpus" "tests/fuzz/artifacts/$target"
  timeout_s=$(timeout_of "$target")
  args=(-max_total_time="$seconds" -timeout="$timeout_s" -rss_limit_mb="$rss_mb"
    -max_len="$(max_len "$target")" -print_final_stats=1)
  [ -f "tests/fuzz/dict/$target.dict" ] && args+=(-dict="tests/fuzz/dict/$target.dict")
  dirs=("$corpus")
  [ -d "$seeds" ] && dirs+=("$seeds")
  echo "== $target: ${seconds}s (timeout ${timeout_s}s per input, rss limit ${rss_mb} MB)"
  log=$logs/$target.log
  nice -n 19 cargo fuzz run --fuzz-dir tests/fuzz "$target" "${dirs[@]}" -- "${args[@]}" >"$log" 2>&1
  status=$?
  last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -n 1)
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -n 1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  files=$(find "$corpus" -type f | wc -l)
  bytes=$(find "$corpus" -type f -printf '%s\n' | awk '{ n += $1 } END { print n + 0 }')
  verdict=ok
  if [ "$status" != 0 ]; then
    verdict=FAILED
    grep -qE 'ERROR: libFuzzer: timeout|SUMMARY: libFuzzer: timeout' "$log" && verdict=TIMEOUT
    grep -qE 'out-of-memory|SUMMARY: libFuzzer: out-of-memory' "$log" && verdict=OOM
    grep -qE 'deadly signal|panicked at|AddressSanitizer' "$log" && verdict=CRASH
    failed+=("$target")
    tail -n 40 "$log" >&2
  fi
  line=$(printf '%-14s %-8s runs %-10s cov %-6s ft %-7s corpus %s files %s B  peak rss %s MB' \
    "$target" "$verdict" "${runs:-?}" "${cov:-?}" "${ft:-?}" "$files" "$bytes" "${rss:-?}")
  echo "$line"
  summary+=("$line")
done

echo "== summary ($(date -u +%Y-%m-%dT%H:%M:%SZ), ${seconds}s per target, $(nproc) cores)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "run.sh: findings in: ${failed[*]} (inputs under tests/fuzz/artifacts/, logs under $logs/)" >&2
  exit 1
fi
