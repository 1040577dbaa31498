#!/usr/bin/env bash
# Runs every cargo-fuzz target of the workspace and records how many inputs
# each executed and whether it crashed, hung or ran out of memory.
#
#   scripts/fuzz-all.sh [SECONDS_PER_TARGET] [PARALLEL] [RUNS]
#
#   SECONDS_PER_TARGET  longest a target runs (default 600)
#   PARALLEL            targets run side by side, one core each (default 1)
#   RUNS                stop a target once it has executed this many inputs
#                       (default 0: run for SECONDS_PER_TARGET)
#
#   scripts/fuzz-all.sh 3600 2 10000000   # every target to 10 M executions
#
# Environment: FUZZ_SANITIZER (default "none", or "address"), FUZZ_ONLY (a
# regular expression on "crate/target" choosing which targets run).
#
# All builds come first, then the runs (the built binaries, directly), so the
# time limit is spent fuzzing and sources may change meanwhile.
# Output: target/fuzz-report/report.md (a Markdown table) and one log per
# target beside it; crashing inputs stay in each crate's fuzz/artifacts/ and
# the corpus each run grows in fuzz/corpus/. Uses the stable toolchain with
# RUSTC_BOOTSTRAP=1 (cargo-fuzz needs nightly flags); installs cargo-fuzz if it
# is missing. Exits non-zero if a target crashed, hung, or fell short of RUNS.
#
# Why no AddressSanitizer by default: every target is safe Rust, where a
# memory error cannot happen without `unsafe`, and what is looked for is a
# panic, a hang (an input taking over 10 s) or an allocation past 2 GiB,
# which libFuzzer catches without it; ASan makes each execution several times
# slower. FUZZ_SANITIZER=address turns it back on.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-600}"
parallel="${2:-1}"
runs="${3:-0}"
sanitizer="${FUZZ_SANITIZER:-none}"
only="${FUZZ_ONLY:-.}"
export RUSTC_BOOTSTRAP=1
# Targets that write files (the oci crate's unpack temporary layouts) run
# several times faster on tmpfs.
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then
  export TMPDIR=/dev/shm
fi
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
out=target/fuzz-report
rm -rf "$out"
mkdir -p "$out/rows"

# Which targets, in a stable order.
targets=()
for fuzz in crates/*/fuzz; do
  crate_dir="$(dirname "$fuzz")"
  crate="$(basename "$crate_dir")"
  for target in $(cd "$crate_dir" && cargo fuzz list); do
    if [[ "$crate/$target" =~ $only ]]; then
      targets+=("$crate/$target")
    fi
  done
done
[ "${#targets[@]}" -gt 0 ] || { echo "no fuzz target matches FUZZ_ONLY=$only" >&2; exit 2; }

# Builds, one crate after another (each is a workspace of its own).
for crate in $(printf '%s\n' "${targets[@]}" | cut -d/ -f1 | sort -u); do
  echo "== building crates/$crate/fuzz (sanitizer $sanitizer)" >&2
  (cd "crates/$crate" && cargo fuzz build -O --sanitizer "$sanitizer") >&2
done

# One target: run it, then write its row of the table.
run_one() {
  local crate="${1%/*}" target="${1#*/}"
  local crate_dir="crates/$crate" log="$out/$crate-$target.log"
  local status=0 started ended
  started=$(date +%s)
  local limits=(-max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=2048
    -malloc_limit_mb=2048 -max_len=65536 -timeout=10)
  [ "$runs" -gt 0 ] && limits+=(-runs="$runs")
  # The binary built above, run directly (as `cargo fuzz run` would, with
  # its corpus and artifact directories), so that sources edited meanwhile
  # are not rebuilt half-way through a run.
  local fuzz_dir="$crate_dir/fuzz"
  mkdir -p "$fuzz_dir/corpus/$target" "$fuzz_dir/artifacts/$target"
  "$fuzz_dir/target/$triple/release/$target" -artifact_prefix="$fuzz_dir/artifacts/$target/" "${limits[@]}" \
    "$fuzz_dir/corpus/$target" > "$log" 2>&1 || status=$?
  ended=$(date +%s)
  local elapsed=$(( ended - started > 0 ? ended - started : 1 ))
  local execs
  execs=$(grep -h "stat::number_of_executed_units" "$log" | awk '{s+=$2} END {print s+0}')
  local verdict="ok"
  if grep -q "ERROR: libFuzzer: timeout" "$log"; then
    verdict="hang"
  elif grep -q "out-of-memory\|malloc limit" "$log"; then
    verdict="out of memory"
  elif [ "$status" -ne 0 ] || grep -q "panicked at\|SUMMARY: " "$log"; then
    verdict="crash"
  elif [ "$runs" -gt 0 ] && [ "$execs" -lt "$runs" ]; then
    verdict="short of $runs"
  fi
  local rate
  rate=$(grep -h "stat::average_exec_per_sec" "$log" | awk '{s+=$2} END {print s+0}')
  local corpus
  corpus=$(find "$crate_dir/fuzz/corpus/$target" -type f 2>/dev/null | wc -l)
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$crate" "$target" "$execs" \
    "$rate" "$elapsed" "$corpus" "$verdict" > "$out/rows/$crate-$target"
  echo "== $crate/$target: $execs executions in $elapsed s, $verdict" >&2
}
triple="$(rustc -vV | sed -n 's/^host: //p')"
export -f run_one
export out secs runs sanitizer triple

printf '%s\n' "${targets[@]}" | xargs -P "$parallel" -I{} bash -c 'run_one "$@"' _ {}

report="$out/report.md"
{
  echo "Fuzzing run of $(date -u +%Y-%m-%d) on $(nproc) cores: ${#targets[@]} targets, $parallel at a time," \
    "each up to ${secs} s$( [ "$runs" -gt 0 ] && echo " or $runs executions"), sanitizer $sanitizer."
  echo
  echo "| crate | target | executions | exec/s | seconds | corpus | result |"
  echo "|---|---|---|---|---|---|---|"
  for t in "${targets[@]}"; do cat "$out/rows/${t%/*}-${t#*/}"; done
} > "$report"
cat "$report"
! grep -q " | \(crash\|hang\|out of memory\|short of [0-9]*\) |$" "$report"
