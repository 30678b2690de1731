"""Run every benchmark in turn (`make bench`). `python -m bench NAME...` runs some."""

from __future__ import annotations

import importlib
import sys
import traceback

ALL = ["pipeline", "service", "soak", "kb", "stages", "devices", "dbus", "quality", "gpu"]


USAGE = f"""usage: python -m bench [NAME ...]

Runs the named benchmarks (default: all, in this order) and prints a Markdown table for each:
  {" ".join(ALL)}
Benchmarks need a quiet machine: anything else running on the CPU skews their figures."""


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    unknown = [a for a in argv if a not in ALL]
    if unknown:
        print(f"unknown benchmark: {', '.join(unknown)} (choose from: {', '.join(ALL)})", file=sys.stderr)
        return 2
    names = argv or ALL
    failed = []
    for name in names:
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"bench.{name}":
                print(f"(bench.{name}: not present)", file=sys.stderr)
                continue
            raise
        print(f"\n## bench.{name}\n", flush=True)
        try:
            module.main()
        except Exception:
            traceback.print_exc()
            failed.append(name)
        sys.stdout.flush()
    if failed:
        print(f"\nbenchmarks that failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
