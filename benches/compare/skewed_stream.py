#!/usr/bin/env python3
"""A skewed event stream for the speed comparison (benches/compare.sh).

N events over `--hours` of event time across every grid cell of seeds/grids.geojson, the cell
of each event drawn from a Zipf-like law over a fixed shuffle of the cells (a few hot cells
carry much of the load, as a cell with a faulty sensor or a busy gate does), the event type
drawn in proportion to the seeded per-cell daily rates (seeds/baseline_rates.csv). Event times
advance evenly with up to 5 s of disorder (inside the 10 s out-of-orderness both programs
allow), so no event is late and every event is valid and distinct: gridwatch and the naive
program must then report exactly the same window counts, which the script checks.

Deterministic for a given seed. Writes JSONL (proto3 JSON mapping, as gridwatch simulate does).
"""
import argparse
import csv
import json
import os
import random
import sys
from datetime import datetime, timedelta, timezone

SEEDS = os.path.join(os.path.dirname(__file__), "..", "..", "seeds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--hours", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--zipf", type=float, default=1.1, help="exponent of the cell law")
    parser.add_argument("--start", default="2026-03-02T00:00:00+00:00")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    with open(os.path.join(SEEDS, "grids.geojson"), encoding="utf-8") as handle:
        cells = [feature["properties"] for feature in json.load(handle)["features"]]
    rng.shuffle(cells)
    cell_weights = [1.0 / (rank + 1) ** args.zipf for rank in range(len(cells))]

    devices: dict[str, list[str]] = {}
    with open(os.path.join(SEEDS, "devices.csv"), encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            devices.setdefault(row["grid_id"], []).append(row["device_id"])

    types, type_weights = [], []
    with open(os.path.join(SEEDS, "baseline_rates.csv"), encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["unit"] == "per_cell_per_day":
                types.append(row["event_type"])
                type_weights.append(float(row["rate"]))

    start = datetime.fromisoformat(args.start).astimezone(timezone.utc)
    span_ms = args.hours * 3_600_000.0
    # Drawn in blocks: random.choices with cumulative weights is the fast path in CPython.
    cell_cumulative = _cumulative(cell_weights)
    type_cumulative = _cumulative(type_weights)
    block = 65_536
    written = 0
    with open(args.out, "w", encoding="utf-8") as out:
        while written < args.events:
            count = min(block, args.events - written)
            block_cells = rng.choices(cells, cum_weights=cell_cumulative, k=count)
            block_types = rng.choices(types, cum_weights=type_cumulative, k=count)
            lines = []
            for offset in range(count):
                index = written + offset
                cell = block_cells[offset]
                event_type = block_types[offset]
                at_ms = int(index * span_ms / args.events) - rng.randrange(0, 5_000)
                occurred = start + timedelta(milliseconds=max(at_ms, 0))
                grid_devices = devices.get(cell["grid_id"])
                event = {
                    "eventId": f"skew-{args.seed}-{index}",
                    "source": "gateway",
                    "deviceId": rng.choice(grid_devices) if grid_devices else "",
                    "communityId": cell["community_id"],
                    "gridId": cell["grid_id"],
                    "eventType": event_type,
                    "occurredAt": occurred.strftime("%Y-%m-%dT%H:%M:%S.")
                    + f"{occurred.microsecond // 1000:03d}Z",
                }
                lines.append(json.dumps(event, separators=(",", ":")))
            out.write("\n".join(lines))
            out.write("\n")
            written += count
    print(f"wrote {written} events over {args.hours} h to {args.out}", file=sys.stderr)


def _cumulative(weights: list[float]) -> list[float]:
    total, cumulative = 0.0, []
    for weight in weights:
        total += weight
        cumulative.append(total)
    return cumulative


if __name__ == "__main__":
    main()
