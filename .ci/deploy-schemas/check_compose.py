"""Parses compose files with compose-spec (Python bindings of the Rust compose_spec crate, which
implements the Compose Specification: unknown keys, bad types, ports, durations, depends_on
conditions are errors). Usage: python check_compose.py FILE... ; exit 1 on the first invalid one.
"""
import sys

import compose_spec

failed = False
for path in sys.argv[1:]:
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    try:
        compose = compose_spec.PyCompose.from_yaml(text)
    except Exception as error:  # the bindings raise ValueError with the YAML path and line
        print(f"{path}: INVALID: {error}")
        failed = True
        continue
    print(f"{path}: valid ({', '.join(compose.service_names())})")
sys.exit(1 if failed else 0)
