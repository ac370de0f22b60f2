"""Every benchmark of BENCHMARKS.md, one after the other, with one command.

    .venv/bin/python -m benchmarks --out /tmp/bench            # the whole suite: about two hours
    .venv/bin/python -m benchmarks --quick --out /tmp/bench    # every script at its smallest size

Each part is its own script (run alone to redo one table of BENCHMARKS.md) and runs here in a child
process of its own, one at a time: the machine has few cores and the parts measure time and memory,
so running two at once would spoil both. A part's output goes to ``<out>/<part>.log``; the scripts
that write result files (the suite, the Dagster path, the long-lived processes) write them into
``<out>``. A failing part is reported and the next one runs; the exit status says whether all passed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

Part = tuple[str, list[str]]


def parts(out: Path, quick: bool) -> list[Part]:
    """``(name, module arguments)`` of each part, in the order they run."""
    o = str(out)
    if quick:
        return [
            ("suite", ["benchmarks.suite", "--quick", "--out", o]),
            ("first_sync", ["benchmarks.first_sync", "--quick", "--out", o]),
            ("step_start", ["benchmarks.step_start", "--runs", "1", "--out", o]),
            ("drift_check", ["benchmarks.drift_check", "--rows", "20000", "--repeat", "1"]),
            ("capacity", ["benchmarks.capacity", "--quick", "--out", o]),
            ("dagster_path", ["benchmarks.dagster_path", "--partitions", "2", "--cli-runs", "1", "--out", o]),
            ("long_lived", ["benchmarks.long_lived", "--partitions", "4", "--via", "job", "--out", o]),
        ]
    return [
        ("suite", ["benchmarks.suite", "--sizes", "200000,1000000", "--repeat", "3", "--out", o]),
        ("first_sync", ["benchmarks.first_sync", "--sizes", "200000,1000000", "--repeat", "3", "--out", o]),
        (
            "suite_5m",
            [
                "benchmarks.suite",
                "--sizes",
                "5000000",
                "--repeat",
                "1",
                "--pairs",
                "pg-pg",
                "--methods",
                "limit_copy,limit_keys,engine",
                "--out",
                str(out / "5m"),
            ],
        ),
        ("step_start", ["benchmarks.step_start", "--runs", "3", "--out", o]),
        ("drift_check", ["benchmarks.drift_check", "--rows", "1000000", "--repeat", "5"]),
        ("capacity", ["benchmarks.capacity", "--sizes", "200000,1000000", "--repeat", "3", "--out", o]),
        ("dagster_path", ["benchmarks.dagster_path", "--out", o]),
        (
            "long_lived",
            ["benchmarks.long_lived", "--partitions", "200", "--tables", "1", "--via", "job", "--out", o],
        ),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="every part at its smallest size")
    parser.add_argument("--out", type=Path, required=True, help="folder for logs and result files")
    parser.add_argument("--only", default="", help="comma-separated part names to run (default: all)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    chosen = [p for p in parts(args.out, args.quick) if not args.only or p[0] in args.only.split(",")]
    failed: list[str] = []
    for name, command in chosen:
        started = time.monotonic()
        print(f"[{time.strftime('%H:%M:%S')}] {name}: python -m {' '.join(command)}", flush=True)
        with (args.out / f"{name}.log").open("w") as log:
            # S603: the commands are the fixed list above, run with this interpreter.
            code = subprocess.call([sys.executable, "-m", *command], stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
        verdict = "ok" if code == 0 else f"FAILED (exit {code}; see {args.out / f'{name}.log'})"
        print(f"    {verdict} in {time.monotonic() - started:.0f} s", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
