"""A densely changed window, synced with and without the dense-change path, against its COPY.

For each window size N and engine pair it builds the suite's ``events`` source and target
(:mod:`benchmarks.workload`, spread ``dense``: a quarter of the window updated over every key, 1.8%
deleted, moved and inserted), then, ``--repeat`` times, side by side, each in a fresh child process
(:mod:`benchmarks.methods`) and each sync on its own clone of the target:

* ``limit_copy``: the window streamed once by COPY into a staging temporary table: the floor;
* ``dense``: :func:`sync_partition` as it runs by default (densely changed ranges travel whole);
* ``merge``: the same with the dense-change path switched off (``methods.engine(dense=False)``):
  the key merge, what the window cost before that path.

* ``before`` (with ``--before DIR``): the default sync run from the code in ``DIR`` (an export of
  an earlier commit, ``git archive``), so a change to the path is measured against what it changed.

The syncs alternate their order from one repeat to the next. The first run of each is checked
equal to the source, every column (:func:`benchmarks.workload.compare_window`). Every run is printed
with the load average beside it and the sync's phase timings (its stats' ``timings``: stream into the
stage, stage index, target-only anti-join, key check, counting join, upsert, commit), and written to
``--out`` as ``dense.json``.

With ``--explain`` one more sync runs in this process on a clone of the target, and every statement
of the dense apply (the counting join, the upsert) is first run under ``EXPLAIN (ANALYZE, BUFFERS)``
inside a savepoint rolled back, the plans printed (``explain.txt`` in ``--out``).

    .venv/bin/python -m benchmarks.dense --sizes 200000,1000000 --repeat 3 --explain
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from benchmarks.suite import PAIRS, ROOT, add_server_arguments, run_child
from benchmarks.workload import Layout, Servers, apply_changes, build, compare_window

VARIANTS = ("dense", "merge")


def _log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _load() -> float:
    return round(os.getloadavg()[0], 1)


def _database(url: str) -> str:
    name = sa.make_url(url).database
    assert name is not None
    return name


def run_from(code: Path | None, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """:func:`~benchmarks.suite.run_child`, or the same child with the code of ``code`` imported."""
    if code is None:
        return run_child(method, params)
    started = time.perf_counter()
    completed = subprocess.run(  # noqa: S603 - our own interpreter and module, arguments we built
        [sys.executable, "-m", "benchmarks.methods", method],
        input=json.dumps(params),
        cwd=code,
        env={**os.environ, "PYTHONPATH": str(code)},
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{method} from {code} failed:\n{completed.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    result["process_seconds"] = round(time.perf_counter() - started, 4)
    return result


def measure(
    servers: Servers, pair: str, rows: int, repeat: int, explain: bool, before: Path | None = None
) -> dict[str, Any]:
    """Every run of one pair and size: the COPY, and both syncs on clones of the target."""
    kinds = PAIRS[pair]
    label = f"dense_{pair.replace('-', '')}_{rows}"
    layout = Layout(rows, "dense")
    source = servers.create(kinds[0], f"{label}_src")
    template = servers.create(kinds[1], f"{label}_tgt")
    scratch = servers.create(kinds[1], f"{label}_scratch")
    runs: list[dict[str, Any]] = []
    plans: list[str] = []
    try:
        build(source, layout)
        build(template, layout)
        apply_changes(source, layout)
        for r in range(repeat):
            load = _load()
            copy = run_child("limit_copy", {"source_url": source, "target_url": scratch})
            runs.append({"variant": "copy", "repeat": r, "seconds": copy["seconds"], "load": load})
            _log(f"{pair} N={rows:,} #{r} copy {copy['seconds']:.3f}s (load {load})")
            variants = [*VARIANTS, *(["before"] if before is not None else [])]
            for variant in variants if r % 2 == 0 else reversed(variants):
                target = servers.create(kinds[1], f"{label}_{variant}{r}", template=_database(template))
                try:
                    load = _load()
                    params = {"source_url": source, "target_url": target, "dense": variant != "merge"}
                    result = run_from(before if variant == "before" else None, "engine", params)
                    detail = result["detail"]
                    equal = compare_window(source, target).equal if r == 0 else None
                    runs.append(
                        {
                            "variant": variant,
                            "repeat": r,
                            "seconds": result["seconds"],
                            "load": load,
                            "load_after": _load(),
                            "peak_rss_kib": result["peak_rss_kib"],
                            "equal": equal,
                            "rows_dense": detail["rows_dense"],
                            "rows_fetched": detail["rows_fetched"],
                            "counts": {k: detail[k] for k in ("inserted", "updated", "deleted", "unchanged")},
                            "timings": detail["timings"],
                        }
                    )
                    _log(
                        f"{pair} N={rows:,} #{r} {variant} {result['seconds']:.3f}s "
                        f"({result['seconds'] / copy['seconds']:.2f}x the copy, load {load}, "
                        f"equal {equal}) {detail['timings']}"
                    )
                finally:
                    servers.drop(target)
        if explain:
            target = servers.create(kinds[1], f"{label}_explain", template=_database(template))
            try:
                plans = explained_sync(source, target)
            finally:
                servers.drop(target)
    finally:
        for url in (source, template, scratch):
            servers.drop(url)
    return {"pair": pair, "rows": rows, "runs": runs, "plans": plans}


def explained_sync(source_url: str, target_url: str) -> list[str]:
    """Sync the window in this process, each statement of the dense apply first run under
    ``EXPLAIN (ANALYZE, BUFFERS)`` in a savepoint that is rolled back; the plans, in order."""
    from benchmarks.methods import engine

    plans: list[str] = []
    with _explaining(plans):
        engine(source_url, target_url)
    return plans


@contextmanager
def _explaining(plans: list[str]) -> Iterator[None]:
    from sync_pipeline.engine.writer import STAGE_DENSE

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        head = statement.lstrip().upper()
        if STAGE_DENSE not in statement or many or not head.startswith(("SELECT", "INSERT", "WITH")):
            return
        if head.startswith("SELECT") and "count(" not in statement:
            return  # the target-only anti-join and the key checks: timed by the sync's own phases
        driver = conn.connection.driver_connection
        with driver.cursor() as explain:
            explain.execute("SAVEPOINT explained")
            explain.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
            plan = "\n".join(row[0] for row in explain.fetchall())
            explain.execute("ROLLBACK TO SAVEPOINT explained")
        plans.append(f"{statement}\n{parameters}\n{plan}\n")

    sa.event.listen(sa.Engine, "before_cursor_execute", before)
    try:
        yield
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", before)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="200000", help="comma-separated window sizes")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pairs", default=",".join(PAIRS), help=f"comma-separated, of {', '.join(PAIRS)}")
    parser.add_argument("--explain", action="store_true", help="EXPLAIN ANALYZE the dense apply once")
    parser.add_argument("--before", type=Path, help="also sync with the code exported to this directory")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "dense")
    add_server_arguments(parser)
    args = parser.parse_args(argv)
    servers = Servers(args.pg_url, args.mysql_url)
    command = ".venv/bin/python -m benchmarks.dense " + " ".join(
        shlex.quote(a) for a in (argv or sys.argv[1:])
    )
    results: dict[str, Any] = {"command": command, "started": datetime.now().isoformat(), "measured": []}
    try:
        for rows in (int(s) for s in args.sizes.split(",")):
            for pair in (p for p in args.pairs.split(",") if p):
                measured = measure(servers, pair, rows, args.repeat, args.explain, args.before)
                results["measured"].append(measured)
    finally:
        servers.drop_all()
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "dense.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
        (args.out / "explain.txt").write_text(
            "\n".join(plan for measured in results["measured"] for plan in measured["plans"])
        )


if __name__ == "__main__":
    main()
