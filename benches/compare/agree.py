#!/usr/bin/env python3
"""Do gridwatch's windows.jsonl and the naive program's CSV report the same window counts?

Usage: agree.py WINDOWS_JSONL NAIVE_CSV [--exact]

Both are keyed by (grid id, event type, window start in epoch ms). Prints how many windows
agree, differ or exist on one side only. With --exact, exits 1 unless every window agrees
(used on the skewed stream, which holds only valid, distinct, on-time events). On simulator
output the two differ by design where gridwatch deduplicates re-sent events, rejects invalid
ones and resolves a grid from the device id; the numbers say how much.
"""
import csv
import json
import sys
from datetime import datetime


def millis(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def main() -> int:
    exact = "--exact" in sys.argv
    paths = [argument for argument in sys.argv[1:] if not argument.startswith("--")]
    if len(paths) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    ours: dict[tuple[str, str, int], int] = {}
    with open(paths[0], encoding="utf-8") as handle:
        for line in handle:
            window = json.loads(line)
            grid = window.get("gridId", window.get("grid_id", ""))
            event_type = window.get("eventType", window.get("event_type"))
            start = window.get("windowStart", window.get("window_start"))
            key = (grid, str(event_type), millis(start))
            ours[key] = ours.get(key, 0) + int(window.get("count", 0))
    theirs: dict[tuple[str, str, int], int] = {}
    with open(paths[1], encoding="utf-8") as handle:
        for grid, event_type, start, count, _severity_sum in csv.reader(handle):
            key = (grid, event_type, int(start))
            theirs[key] = theirs.get(key, 0) + int(count)
    same = sum(1 for key, count in ours.items() if theirs.get(key) == count)
    different = sum(1 for key, count in ours.items() if key in theirs and theirs[key] != count)
    only_ours = sum(1 for key in ours if key not in theirs)
    only_theirs = sum(1 for key in theirs if key not in ours)
    events_ours, events_theirs = sum(ours.values()), sum(theirs.values())
    print(
        f"windows agree {same} of {len(theirs)} (naive) / {len(ours)} (gridwatch); "
        f"counts differ {different}; only gridwatch {only_ours}; only naive {only_theirs}; "
        f"events counted {events_ours} (gridwatch) vs {events_theirs} (naive)"
    )
    if exact and (different or only_ours or only_theirs):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
