#!/usr/bin/env bash
# Wave-detection power of the fraud rules beside an exact Poisson reference (issue 14 item 6).
# A measurement, never a test: see the header of benches/power.rs for what is drawn and counted.
#
#   benches/power.sh [--draws N]      (default 100)
#
# Results: stdout and target/power/results.md (the README's table is copied from there).
set -euo pipefail
cd "$(dirname "$0")/.."
draws=100
while [ $# -gt 0 ]; do
  case "$1" in
    --draws) draws="$2"; shift 2 ;;
    *) echo "unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
cargo bench --locked --bench power -- --draws "$draws"
echo
echo "machine: $(nproc) cores; $(git rev-parse --short HEAD)"
