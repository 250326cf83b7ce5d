#!/usr/bin/env bash
# A long fuzz run: every target of tests/it/fuzz.rs for MINUTES (default 10), all targets at once,
# in a release build of the tests with overflow checks kept on for gridwatch's own code (so an
# arithmetic overflow is found as a panic, as in a debug build, at release speed).
#
#   scripts/fuzz-long.sh [MINUTES]
#
# Prints one line per target (inputs executed, inputs that got past parsing) and a summary:
# total inputs executed, wall time, panics found. Exits non-zero when a panic was found; the
# failing target prints the shrunk input that panicked (turn it into a regression test at the
# end of tests/it/fuzz.rs).
set -euo pipefail

minutes="${1:-10}"
seconds="${FUZZ_LONG_SECONDS:-$((minutes * 60))}" # FUZZ_LONG_SECONDS: a shorter smoke run
cd "$(dirname "$0")/.."

cargo_test=(cargo test --release --locked
    --config 'profile.release.package.gridwatch.overflow-checks=true'
    --test it)

"${cargo_test[@]}" --no-run

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
started=$(date +%s)
set +e
# Every target runs for the whole budget, on its own test thread.
GRIDWATCH_FUZZ_SECONDS=$seconds "${cargo_test[@]}" -- fuzz:: --nocapture --test-threads 16 \
    >"$log" 2>&1
status=$?
set -e
elapsed=$(($(date +%s) - started))

grep -E '^fuzz target|found a panic' "$log" | cut -c1-2000 || true
inputs=$(sed -nE 's/^fuzz target [a-z_]+: ([0-9]+) inputs executed.*/\1/p' "$log" |
    awk '{ total += $1 } END { print total + 0 }')
panics=$(grep -c 'found a panic' "$log" || true)
if [ "$status" -ne 0 ] && [ "$panics" -eq 0 ]; then
    tail -40 "$log"
    echo "fuzz-long: the test run failed (status $status) without a fuzz finding"
fi
echo "fuzz-long: ${inputs:-0} inputs executed in ${elapsed} s wall time; panics found: ${panics}"
exit "$status"
