#!/usr/bin/env bash
# gridwatch against the naive single-purpose program (../shared/peers/naive-gw), side by side.
#
# Builds both (release), generates the inputs (a skewed stream and simulator output, 1 M
# events each by default), then alternates the runs (--runs rounds, each case once per round,
# in the same order) and prints, per case, the median wall time and CPU time, events/s, peak RSS,
# and the ratio to the naive program on the same input, of the medians and of the fastest runs.
# Also checks that the window counts agree with the naive program's (exactly on the skewed
# stream, which holds only valid, distinct, on-time events) and prints the sha256 of every
# output file, so that two commits can be compared for byte-identical results. A measurement,
# never a test: nothing here fails on a slow machine.
#
#   benches/compare.sh [--events N] [--runs R] [--naive DIR] [--keep]
#
# Results: stdout and target/compare/results.md (the README's table is copied from there).
set -euo pipefail
cd "$(dirname "$0")/.."

events=1000000
runs=3
naive_dir="../shared/peers/naive-gw"
while [ $# -gt 0 ]; do
  case "$1" in
    --events) events="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --naive) naive_dir="$2"; shift 2 ;;
    *) echo "unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done

target="${CARGO_TARGET_DIR:-target}"

echo "== build" >&2
cargo build --release --locked --quiet
gridwatch="$target/release/gridwatch"
CARGO_TARGET_DIR="$PWD/target/naive-gw" cargo build --release --quiet \
  --manifest-path "$naive_dir/Cargo.toml"
naive="$PWD/target/naive-gw/release/naive-gw"

echo "== inputs ($events events each)" >&2
# shellcheck source=benches/compare/inputs.sh
. benches/compare/inputs.sh
compare_inputs "$events" "$gridwatch"

# case name | input | program | extra arguments
cases=(
  "naive skewed|$skewed|naive|"
  "gridwatch skewed, default rules|$skewed|gridwatch|--format jsonl"
  "gridwatch skewed, windows only|$skewed|gridwatch|--format jsonl --config $windows_only"
  "naive simulator|$sim_jsonl|naive|"
  "gridwatch simulator JSONL, default rules|$sim_jsonl|gridwatch|--format jsonl"
  "gridwatch simulator JSONL, windows only|$sim_jsonl|gridwatch|--format jsonl --config $windows_only"
  "gridwatch simulator protobuf, default rules|$sim_pb|gridwatch|--format protobuf"
  "gridwatch simulator protobuf, windows only|$sim_pb|gridwatch|--format protobuf --config $windows_only"
)

timings="$work/timings.tsv"
: >"$timings"
for round in $(seq 1 "$runs"); do
  for index in "${!cases[@]}"; do
    IFS='|' read -r name input program extra <<<"${cases[$index]}"
    out="$work/out-$index"
    rm -rf "$out"; mkdir -p "$out"
    if [ "$program" = naive ]; then
      /usr/bin/time -f "%e %M %U %S" -o "$work/time" "$naive" "$input" "$out/naive.csv" 2>/dev/null
    else
      # shellcheck disable=SC2086
      /usr/bin/time -f "%e %M %U %S" -o "$work/time" "$gridwatch" replay --input "$input" \
        --output-dir "$out" --no-progress --max-rejected-share 1 $extra >/dev/null 2>"$work/stderr" \
        || { cat "$work/stderr" >&2; exit 1; }
    fi
    read -r seconds rss_kb user_seconds system_seconds <"$work/time"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$index" "$name" "$seconds" "$rss_kb" "$user_seconds" \
      "$system_seconds" >>"$timings"
    echo "round $round: $name: $seconds s, $((rss_kb / 1024)) MB" >&2
  done
done

echo "== agreement with the naive program (window counts)" >&2
agree_skewed="$(python3 benches/compare/agree.py "$work/out-1/windows.jsonl" "$work/out-0/naive.csv" --exact)" \
  || { echo "skewed stream: window counts differ from the naive program: $agree_skewed" >&2; exit 1; }
agree_skewed_windows="$(python3 benches/compare/agree.py "$work/out-2/windows.jsonl" "$work/out-0/naive.csv" --exact)" \
  || { echo "skewed stream, windows only: counts differ: $agree_skewed_windows" >&2; exit 1; }
agree_sim="$(python3 benches/compare/agree.py "$work/out-4/windows.jsonl" "$work/out-3/naive.csv")"

python3 - "$timings" "$events" "$work/results.md" <<'PY'
import statistics, sys
from collections import defaultdict
timings, events, results = sys.argv[1], int(sys.argv[2]), sys.argv[3]
seconds, rss, cpu, names = defaultdict(list), defaultdict(list), defaultdict(list), {}
for line in open(timings, encoding="utf-8"):
    index, name, wall, kb, user_seconds, system_seconds = line.rstrip("\n").split("\t")
    seconds[int(index)].append(float(wall)); rss[int(index)].append(int(kb))
    cpu[int(index)].append(float(user_seconds) + float(system_seconds)); names[int(index)] = name
# /usr/bin/time reports wall time in hundredths: a tiny --events run can take "0.00 s", so
# every time divided by is at least that resolution (the ratios of such runs say little).
RESOLUTION_SECONDS = 0.01
shown_median = {i: statistics.median(v) for i, v in seconds.items()}
median = {i: max(m, RESOLUTION_SECONDS) for i, m in shown_median.items()}
fastest = {i: max(min(v), RESOLUTION_SECONDS) for i, v in seconds.items()}
naive_of = {1: 0, 2: 0, 4: 3, 5: 3, 6: 3, 7: 3}
# The fastest run beside the median: on a machine whose two CPUs sometimes slow each other
# (docs/performance-journal.md), the multi-threaded replay's runs are bimodal and
# the single-threaded naive program's are not; CPU time shows which mode a run was in.
rows = ["| case | median s (runs) | CPU s, median | events/s | peak RSS | × naive on the same events | × naive, fastest runs |", "|---|---|---|---|---|---|---|"]
for i in sorted(names):
    ratio = f"**{median[naive_of[i]] / median[i]:.2f}×**" if i in naive_of else "—"
    fastest_ratio = f"{fastest[naive_of[i]] / fastest[i]:.2f}×" if i in naive_of else "—"
    runs = ", ".join(f"{s:.2f}" for s in seconds[i])
    rows.append(f"| {names[i]} | {shown_median[i]:.2f} ({runs}) | {statistics.median(cpu[i]):.2f} | {events / median[i] / 1e6:.2f} M | {max(rss[i]) / 1024:.0f} MB | {ratio} | {fastest_ratio} |")
rows.append("")
rows.append(f"protobuf ÷ JSONL speed, default rules: **{median[4] / median[6]:.2f}×**; windows only: **{median[5] / median[7]:.2f}×**")
text = "\n".join(rows)
print(text)
open(results, "w", encoding="utf-8").write(text + "\n")
PY
{
  echo
  echo "skewed, default rules: $agree_skewed"
  echo "skewed, windows only: $agree_skewed_windows"
  echo "simulator: $agree_sim"
  echo
  echo "sha256 of gridwatch's outputs (compare across commits for byte-identical results):"
  for index in 1 2 4 5 6 7; do
    IFS='|' read -r name _ <<<"${cases[$index]}"
    for file in windows.jsonl alerts.jsonl dead_letter.jsonl; do
      printf '  %s  %s / %s\n' "$(sha256sum "$work/out-$index/$file" | cut -c1-16)" "$name" "$file"
    done
  done
  echo
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB; $(git rev-parse --short HEAD)"
} | tee -a "$work/results.md"
