"""The first sync of an hour into an empty target window, against COPYing that window into the same table.

Every hourly run syncs an hour the target has never seen. For each window size N and engine pair
(PostgreSQL to PostgreSQL, MariaDB to PostgreSQL) it builds the ``events`` source of
:mod:`benchmarks.workload` (the hour before, the window of N rows, the hour after) and a PostgreSQL
target template holding the ``events`` table (primary key and ``updated_at`` index) with the hour
before already synced, the window empty. Then, each in a fresh child process
(:mod:`benchmarks.methods`) on its own clone of the template, side by side, ``--repeat`` times in
alternating order:

* ``copy_indexed``: the window streamed by COPY into the target's ``events`` table and committed,
  with no comparison at all: the floor of a first load;
* ``engine``: :func:`sync_partition` of the window, as a Dagster step runs it.

After the first run of each, the target's window is compared with the source's, every column
(:func:`benchmarks.workload.compare_window`). The table printed (and written to ``--out``) gives the
median seconds, the ratio engine / COPY, each one's peak RSS, and the engine's phase timings. The
engine is given twice: the method's wall time (its imports and config parsing included) and the
``sync_partition`` call alone (what a step forked from the preloading forkserver pays).

    .venv/bin/python -m benchmarks.first_sync --sizes 200000,1000000 --repeat 3
    .venv/bin/python -m benchmarks.first_sync --quick        # N=20000, one run
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from benchmarks.suite import PAIRS, ROOT, add_server_arguments, run_child
from benchmarks.workload import (
    PG_DDL,
    PG_ROWS,
    WINDOW_START,
    Layout,
    Servers,
    _rows_sql,
    _statements,
    build,
    compare_window,
    engine_for,
)

METHODS = ("copy_indexed", "engine")
QUICK_SIZE = 20_000

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def build_target(url: str, layout: Layout) -> None:
    """``events`` with its indexes and the hour before the window: the state after the last hourly run."""
    engine = engine_for(url)
    try:
        with engine.begin() as conn:
            for statement in _statements(PG_DDL):
                conn.exec_driver_sql(statement)
            if layout.margin:
                conn.exec_driver_sql(_rows_sql(PG_ROWS, WINDOW_START - timedelta(hours=1), 1, layout.margin))
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE events")
    finally:
        engine.dispose()


def _database(url: str) -> str:
    name = sa.make_url(url).database
    assert name is not None
    return name


def _window_rows(url: str) -> int:
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            return int(
                conn.exec_driver_sql(
                    "SELECT count(*) FROM events WHERE updated_at >= %(lo)s AND updated_at < %(hi)s",
                    {"lo": WINDOW_START, "hi": WINDOW_START + timedelta(hours=1)},
                ).scalar_one()
            )
    finally:
        engine.dispose()


def measure(
    servers: Servers,
    pair: str,
    rows: int,
    repeat: int,
    chunk_size: int,
    log: Log,
    compare: bool = True,
) -> list[dict[str, Any]]:
    """Every run of both methods for one pair and size (``compare``: every column after the first run)."""
    source_kind, _ = PAIRS[pair]
    layout = Layout(rows)
    label = f"{pair.replace('-', '')}_{rows}"
    log(f"{label}: building the source and the target template")
    source = servers.create(source_kind, f"fs_src_{label}")
    build(source, layout)
    template = servers.create("postgresql", f"fs_tpl_{label}")
    build_target(template, layout)
    runs: list[dict[str, Any]] = []
    try:
        for r in range(repeat):
            order = METHODS if r % 2 == 0 else tuple(reversed(METHODS))
            for method in order:
                clone = servers.create("postgresql", f"fs_{method}_{label}_{r}", template=_database(template))
                try:
                    result = run_child(
                        method, {"source_url": source, "target_url": clone, "chunk_size": chunk_size}
                    )
                    result.update(pair=pair, rows=rows, repeat=r, load_average=os.getloadavg()[0])
                    in_window = _window_rows(clone)
                    assert in_window == rows, f"{method}: {in_window} rows in the window, expected {rows}"
                    result["compared"] = compare and r == 0
                    if result["compared"]:
                        comparison = compare_window(source, clone)
                        assert comparison.equal, f"{method}: the target's window differs from the source's"
                    runs.append(result)
                    log(
                        f"{label} {method} #{r}: {result['seconds']:.2f} s, "
                        f"{result['peak_rss_kib'] // 1024} MiB"
                    )
                finally:
                    servers.drop(clone)
    finally:
        servers.drop(template)
        servers.drop(source)
    return runs


def table(runs: list[dict[str, Any]]) -> str:
    """The results as a markdown table: medians per pair and size, side by side."""
    lines = [
        "| rows | pair | COPY into indexed `events` s | sync method s (min-max) | ratio "
        "| `sync_partition` call s | ratio | peak RSS COPY / sync MiB | sync phases (median run) "
        "| load avg |",
        "|---:|---|---:|---:|---:|---:|---:|---|---|---|",
    ]
    keys = sorted({(run["rows"], run["pair"]) for run in runs})
    for rows, pair in keys:
        by = {
            m: [run for run in runs if (run["rows"], run["pair"], run["method"]) == (rows, pair, m)]
            for m in METHODS
        }
        copy_s = statistics.median(run["seconds"] for run in by["copy_indexed"])
        sync_s = statistics.median(run["seconds"] for run in by["engine"])
        # The call alone, without the imports and the config parsing a step's forkserver preloads.
        call_s = statistics.median(run["detail"]["timings"]["total"] for run in by["engine"])
        rss = [max(run["peak_rss_kib"] for run in by[m]) // 1024 for m in METHODS]
        middle = sorted(by["engine"], key=lambda run: run["seconds"])[len(by["engine"]) // 2]
        phases = ", ".join(
            f"{k} {v:.2f}"
            for k, v in middle["detail"].get("timings", {}).items()
            if v >= 0.01 and k != "total"
        )
        loads = [run.get("load_average", 0.0) for m in METHODS for run in by[m]]
        load = f"{min(loads):.1f}-{max(loads):.1f}"
        spread = "-".join(f"{f(run['seconds'] for run in by['engine']):.2f}" for f in (min, max))
        lines.append(
            f"| {rows:,} | {pair} | {copy_s:.2f} | {sync_s:.2f} ({spread}) | {sync_s / copy_s:.2f}x | "
            f"{call_s:.2f} | {call_s / copy_s:.2f}x | {rss[0]} / {rss[1]} | {phases} | {load} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help=f"N={QUICK_SIZE:,}, one run")
    parser.add_argument("--sizes", help="comma-separated window sizes (default 200000,1000000)")
    parser.add_argument("--repeat", type=int, help="runs per method; the median is reported (default 3)")
    parser.add_argument("--pairs", default=",".join(PAIRS), help=f"comma-separated, of {', '.join(PAIRS)}")
    parser.add_argument("--chunk-size", type=int, default=10_000, help="the engine's chunk_size")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    add_server_arguments(parser)
    parser.add_argument(
        "--no-compare",
        action="store_true",
        help="check only the window's row count, not every column (a 5M-row comparison takes minutes)",
    )
    args = parser.parse_args(argv)
    sizes = (
        [int(s) for s in args.sizes.split(",")]
        if args.sizes
        else ([QUICK_SIZE] if args.quick else [200_000, 1_000_000])
    )
    repeat = args.repeat or (1 if args.quick else 3)
    pairs = [p for p in args.pairs.split(",") if p]
    unknown = set(pairs) - set(PAIRS)
    if unknown:
        parser.error(f"unknown pair: {', '.join(sorted(unknown))}")
    command = ".venv/bin/python -m benchmarks.first_sync " + " ".join(
        shlex.quote(a) for a in (argv or sys.argv[1:])
    )
    results = run_first_sync(
        sizes=sizes,
        repeat=repeat,
        pairs=pairs,
        chunk_size=args.chunk_size,
        out=args.out,
        pg_admin=args.pg_url,
        mysql_admin=args.mysql_url,
        command=command.strip(),
        compare=not args.no_compare,
    )
    print(results["markdown"])


def run_first_sync(
    *,
    sizes: Sequence[int],
    repeat: int,
    pairs: Sequence[str],
    out: Path,
    chunk_size: int = 10_000,
    pg_admin: str = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
    mysql_admin: str = "mysql+pymysql://root@127.0.0.1:3306/",
    command: str = "",
    log: Log = _stderr,
    compare: bool = True,
) -> dict[str, Any]:
    """Measure every size and pair; write ``first_sync.json`` and ``first_sync.md`` into ``out``."""
    servers = Servers(pg_admin, mysql_admin)
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    runs: list[dict[str, Any]] = []
    try:
        for rows in sizes:
            for pair in pairs:
                runs.extend(measure(servers, pair, rows, repeat, chunk_size, log, compare))
    finally:
        servers.drop_all()
    markdown = table(runs)
    results = {
        "command": command,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": servers.versions(),
        "load_average_at_start": load_at_start,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "runs": runs,
        "markdown": markdown,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "first_sync.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    loads = f"load average {load_at_start} at the start, {results['load_average_at_end']} at the end"
    (out / "first_sync.md").write_text(f"`{command}`\n\n{markdown}\n{loads}\n")
    return results


if __name__ == "__main__":
    main()
