# The inputs of the replay benchmarks (benches/compare.sh, benches/stage_costs.sh), sourced:
# `compare_inputs EVENTS GRIDWATCH` generates whatever is missing in target/compare and sets
# `work`, `skewed`, `sim_jsonl`, `sim_pb` and `windows_only` (the config of "rules reduced to
# windows": one rule that cannot fire, since a rules file needs at least one).
compare_inputs() {
  local events="$1" gridwatch="$2"
  work="target/compare"
  mkdir -p "$work"
  skewed="$work/skewed-$events.jsonl"
  sim_jsonl="$work/sim-$events.jsonl"
  sim_pb="$work/sim-$events.pb"
  windows_only="$work/windows-only.toml"
  [ -s "$skewed" ] || python3 benches/compare/skewed_stream.py --events "$events" --out "$skewed"
  [ -s "$sim_jsonl" ] || "$gridwatch" simulate --events "$events" --out "$sim_jsonl" --quiet >/dev/null
  [ -s "$sim_pb" ] || "$gridwatch" simulate --events "$events" --format protobuf --out "$sim_pb" --quiet >/dev/null
  printf '[rules]\npath = "%s"\n' "$PWD/benches/compare/windows-only-rules.toml" >"$windows_only"
}
