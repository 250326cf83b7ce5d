#!/usr/bin/env bash
# Wave-detection power of the fraud rules beside an exact Poisson reference (issue 14 item 6).
# A measurement, never a test: see the header of benches/power.rs for what is drawn and counted.
#
#   benches/power.sh [--draws N] [--rules a,b] [--scope district] [--normal-weeks W]
#     (defaults: 100 draws, the five fraud rules, every scope; --rules and --scope narrow a
#     tuning run to some rules and the waves whose scope name contains the word;
#     --normal-weeks W measures false alarms instead, on N normal streams of W weeks)
#
# Results: stdout and target/power/results.md (the README's table is copied from there), or
# target/power/normal-weeks.md with --normal-weeks.
set -euo pipefail
cd "$(dirname "$0")/.."
draws=100
narrow=()
while [ $# -gt 0 ]; do
  case "$1" in
    --draws) draws="$2"; shift 2 ;;
    --rules|--scope|--normal-weeks) narrow+=("$1" "$2"); shift 2 ;;
    *) echo "unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
cargo bench --locked --bench power -- --draws "$draws" "${narrow[@]}"
echo
echo "machine: $(nproc) cores; $(git rev-parse --short HEAD)"
