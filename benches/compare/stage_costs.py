#!/usr/bin/env python3
"""What each stage of a replay costs per event, in instructions, from callgrind runs.

Usage: stage_costs.py EVENTS LABEL=PREFIX [LABEL=PREFIX ...]

Each PREFIX is the `--callgrind-out-file` of one `valgrind --tool=callgrind
--separate-threads=yes gridwatch replay ...` run (callgrind writes PREFIX-01, PREFIX-02, ...,
one file per thread); each LABEL becomes a column. A stage's cost is the inclusive cost of the
functions that do it, summed over the threads: a function's own instructions plus those of every
call it makes (callgrind's `calls=` lines), divided by EVENTS. What no stage names (thread
hand-offs, start-up, the output file's creation) is the last row, so a column adds up to the
run's total. benches/stage_costs.sh runs the replays and calls this; the README's per-stage
table is its output.

A function named here that no run contains (renamed, or inlined away by a change) is named in a
warning: a silently empty row would misstate where the instructions went.
"""
import collections
import glob
import re
import sys

CHECK = "gridwatch::pipeline::admission::Admission::check"
PSEUDONYMIZE = "gridwatch::privacy::Pseudonymizer::pseudonymize_event"
RESOLVE = "gridwatch::grid::resolution::<impl gridwatch::grid::model::GridRegistry>::resolve"
RULES = "gridwatch::pipeline::rule_stage::RuleStage::apply"
ON_EVENT = "gridwatch::rules::RuleEngine::on_event"
ON_WATERMARK = "gridwatch::rules::RuleEngine::on_watermark"
SCAN = "<gridwatch::rules::scan::ScanRule as gridwatch::rules::kind::RuleKind>::on_watermark::{{closure}}"
EXPECTED_COUNT = "gridwatch::rules::baseline::BaselineView::expected_count"
CUSUM_LIMITS = "gridwatch::rules::cusum::lattice_average_run_length"

# (row, functions added, functions subtracted, why gridwatch does it)
STAGES = [
    ("reading and framing records", ["gridwatch::source::file::FileReader<R>::next_framed"], [],
     "—"),
    ("decoding (JSON: `decode/common_shape.rs`, serde_json for uncommon lines; protobuf: "
     "`decode/flat_protobuf.rs`)", ["gridwatch::pipeline::admission::Decoding::decode_encoded"],
     [], "the event, its JSON timestamps checked as RFC 3339"),
    ("pseudonymization", [PSEUDONYMIZE], [],
     "phone and ID-card numbers in ids replaced before anything keeps them (README \"Privacy\")"),
    ("grid resolution", [RESOLVE], [],
     "grid id → cell; events without one by device or coordinates (a point costs thousands: "
     "GCJ-02 inversion, polygon test)"),
    ("validation, input limits, id hashes", [CHECK], [PSEUDONYMIZE, RESOLVE],
     "bad input to dead letters with a reason; the dedup and source-clock hashes"),
    ("counting: dedup, windows, watermark, metrics", ["gridwatch::pipeline::Pipeline::count_admitted"],
     [], "exact event-time windows with lateness, duplicates dropped"),
    ("rules", [RULES], [], "the rules file's rules; windows only: one rule that never fires, "
     "its per-event dispatch"),
    ("writing windows, alerts, dead letters", ["gridwatch::sink::file::JsonlFileSink::write"], [],
     "proto3 JSON lines, byte-identical to serde_json's"),
    ("the grid registry, loaded once",
     ["gridwatch::grid::loading::<impl gridwatch::grid::model::GridRegistry>::from_seed_texts"],
     [], "—"),
]

# Parts of the rules row.
RULE_PARTS = [
    ("space-time scan (hourly Monte Carlo evaluations)", [SCAN], []),
    ("baselines' expected counts", [EXPECTED_COUNT], []),
    ("CUSUM decision limits (Brook–Evans chains)", [CUSUM_LIMITS], []),
    ("the other rules' watermark work (spike, data gap, CUSUM charts)", [ON_WATERMARK],
     [SCAN, EXPECTED_COUNT, CUSUM_LIMITS]),
    ("every rule that counts an event, per event", [ON_EVENT], []),
    ("the rule stage's own dispatch", [RULES], [ON_EVENT, ON_WATERMARK]),
]

NAME_LINE = re.compile(r"c?fn=\((\d+)\)(?: (.*))?")


def inclusive_costs(prefix: str) -> tuple[collections.Counter, int]:
    """Inclusive instructions per function name, and the total, over the threads of a run."""
    inclusive: collections.Counter = collections.Counter()
    total = 0
    paths = sorted(glob.glob(f"{prefix}-*")) or [prefix]
    for path in paths:
        names: dict[str, str] = {}
        function = callee = ""
        positions = 1
        cost_of_next_line_is_a_call = False
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith(("fn=", "cfn=")):
                    match = NAME_LINE.match(line.rstrip("\n"))
                    if match is None:
                        continue
                    if match.group(2):
                        names[match.group(1)] = match.group(2)
                    name = names.get(match.group(1), "")
                    if line.startswith("fn="):
                        function = name
                    else:
                        callee = name
                elif line.startswith("calls="):
                    cost_of_next_line_is_a_call = True
                elif line.startswith("positions:"):
                    positions = len(line.split()) - 1
                elif line.startswith("totals:"):
                    total += int(line.split()[1])
                elif line[:1].isdigit() or line[:1] in "+-*":
                    fields = line.split()
                    if len(fields) <= positions:
                        continue
                    cost = int(fields[positions])
                    if cost_of_next_line_is_a_call:
                        cost_of_next_line_is_a_call = False
                        # A recursive call's cost is already the caller's own.
                        if callee == function:
                            continue
                    inclusive[function] += cost
    return inclusive, total


def stage_cost(inclusive: collections.Counter, added: list[str], subtracted: list[str]) -> int:
    return sum(inclusive[name] for name in added) - sum(inclusive[name] for name in subtracted)


def main() -> int:
    if len(sys.argv) < 3 or "=" not in "".join(sys.argv[2:]):
        print(__doc__, file=sys.stderr)
        return 2
    events = int(sys.argv[1])
    columns = [argument.split("=", 1) for argument in sys.argv[2:]]
    absent = [prefix for _, prefix in columns if not glob.glob(f"{prefix}*")]
    if absent:
        print("no callgrind files: " + ", ".join(absent), file=sys.stderr)
        return 1
    runs = [(label, *inclusive_costs(prefix)) for label, prefix in columns]
    named = {name for _, added, subtracted, *_ in STAGES + RULE_PARTS for name in added + subtracted}
    missing = sorted(name for name in named if not any(name in costs for _, costs, _ in runs))
    if missing:
        # Expected for the rules' parts when every run is windows only; otherwise a rename.
        print("warning: functions in no run, their rows are 0 (renamed or inlined?): "
              + "; ".join(missing), file=sys.stderr)

    def per_event(instructions: int) -> str:
        return f"{round(instructions / events):,}"

    header = "| stage | " + " | ".join(label for label, _, _ in runs) + " | why gridwatch does it |"
    rows = [header, "|---" * (len(runs) + 2) + "|"]
    staged = [0] * len(runs)
    for stage, added, subtracted, why in STAGES:
        costs = [stage_cost(inclusive, added, subtracted) for _, inclusive, _ in runs]
        staged = [sum(pair) for pair in zip(staged, costs)]
        rows.append(f"| {stage} | " + " | ".join(map(per_event, costs)) + f" | {why} |")
        if added == [RULES]:
            for part, part_added, part_subtracted in RULE_PARTS:
                part_costs = [stage_cost(inclusive, part_added, part_subtracted)
                              for _, inclusive, _ in runs]
                rows.append(f"| &nbsp;&nbsp;of which {part} | "
                            + " | ".join(map(per_event, part_costs)) + " | |")
    rest = [total - done for (_, _, total), done in zip(runs, staged)]
    rows.append("| the rest (thread hand-offs, start-up) | " + " | ".join(map(per_event, rest))
                + " | — |")
    rows.append("| **total** | " + " | ".join(f"**{per_event(total)}**" for _, _, total in runs)
                + " | |")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
