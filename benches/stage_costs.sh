#!/usr/bin/env bash
# What each stage of a replay costs per event, in instructions: the README's per-stage table.
#
# Builds gridwatch (release), generates the inputs of benches/compare.sh when missing, replays
# the simulator's events under callgrind (exact instruction counts, one file per thread) as
# JSONL and as protobuf, with the default rules and with rules reduced to windows, two runs at
# a time, and prints the table of benches/compare/stage_costs.py. A measurement, never a test.
# Needs valgrind; about four minutes for 1 M events on two cores.
#
#   benches/stage_costs.sh [--events N]
#
# Results: stdout and target/compare/stage_costs.md; the callgrind files stay in
# target/compare/callgrind/ for callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")/.."

events=1000000
while [ $# -gt 0 ]; do
  case "$1" in
    --events) events="$2"; shift 2 ;;
    *) echo "unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 2; }

echo "== build" >&2
cargo build --release --locked --quiet
gridwatch="${CARGO_TARGET_DIR:-target}/release/gridwatch"

echo "== inputs ($events events)" >&2
# shellcheck source=benches/compare/inputs.sh
. benches/compare/inputs.sh
compare_inputs "$events" "$gridwatch"
runs="$work/callgrind"
rm -rf "$runs"; mkdir -p "$runs"

# column label | callgrind file prefix | input | replay arguments
cases=(
  "JSONL, default rules|$runs/jsonl-default|$sim_jsonl|--format jsonl"
  "JSONL, windows only|$runs/jsonl-windows|$sim_jsonl|--format jsonl --config $windows_only"
  "protobuf, default rules|$runs/protobuf-default|$sim_pb|--format protobuf"
  "protobuf, windows only|$runs/protobuf-windows|$sim_pb|--format protobuf --config $windows_only"
)

replay_under_callgrind() {
  local prefix="$1" input="$2" extra="$3"
  rm -rf "$prefix.out"
  # shellcheck disable=SC2086
  valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$prefix" \
    "$gridwatch" replay --input "$input" --output-dir "$prefix.out" --no-progress \
    --max-rejected-share 1 $extra >/dev/null 2>"$prefix.log" \
    || { cat "$prefix.log" >&2; return 1; }
  rm -rf "$prefix.out"
}

echo "== callgrind (two replays at a time)" >&2
columns=()
pids=()
for case in "${cases[@]}"; do
  IFS='|' read -r label prefix input extra <<<"$case"
  replay_under_callgrind "$prefix" "$input" "$extra" &
  pids+=("$!")
  columns+=("$label=$prefix")
  if [ "${#pids[@]}" -eq 2 ]; then
    for pid in "${pids[@]}"; do wait "$pid"; done
    pids=()
  fi
done
for pid in "${pids[@]}"; do wait "$pid"; done

{
  python3 benches/compare/stage_costs.py "$events" "${columns[@]}"
  echo
  echo "instructions per event, inclusive, $events simulator events; machine: $(nproc) cores," \
    "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(git rev-parse --short HEAD)"
} | tee "$work/stage_costs.md"
