#!/usr/bin/env bash
# Runs every cargo-fuzz target of the workspace for a while and records how
# many inputs each executed and whether it crashed.
#
#   scripts/fuzz-all.sh [SECONDS_PER_TARGET] [JOBS]     (default 600 s, 1 job)
#
# Output: target/fuzz-report/report.md (a Markdown table) and one log per
# target beside it; crashing inputs stay in each crate's fuzz/artifacts/.
# Uses the stable toolchain with RUSTC_BOOTSTRAP=1 (cargo-fuzz needs nightly
# flags); installs cargo-fuzz if it is missing. Exits non-zero if a target
# crashed.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-600}"
jobs="${2:-1}"
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
out=target/fuzz-report
mkdir -p "$out"
report="$out/report.md"
{
  echo "Fuzzing run of $(date -u +%Y-%m-%d), ${secs} s per target, ${jobs} job(s), $(nproc) cores."
  echo
  echo "| crate | target | executions | exec/s | crashes |"
  echo "|---|---|---|---|---|"
} > "$report"
failed=0
for fuzz in crates/*/fuzz; do
  crate_dir="$(dirname "$fuzz")"
  crate="$(basename "$crate_dir")"
  for target in $(cd "$crate_dir" && cargo fuzz list); do
    log="$out/$crate-$target.log"
    echo "== $crate/$target (${secs} s)" >&2
    status=0
    (cd "$crate_dir" && cargo fuzz run "$target" --jobs "$jobs" -- \
        -max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=2048 -max_len=65536) \
      > "$log" 2>&1 || status=$?
    execs=$(grep -h "stat::number_of_executed_units" "$log" "$crate_dir"/fuzz-*.log 2>/dev/null \
      | awk '{s+=$2} END {print s+0}')
    rate=$(( execs / secs ))
    crashes=0
    if [ "$status" -ne 0 ] || grep -q "SUMMARY: \|panicked at" "$log"; then
      crashes=1
      failed=1
    fi
    rm -f "$crate_dir"/fuzz-*.log
    echo "| $crate | $target | $execs | $rate | $crashes |" >> "$report"
  done
done
cat "$report"
exit "$failed"
