"""What reading a new hour in key order costs the source, and what it buys the target.

The first sync of an hour writes rows whose keys lie above every target key straight into the
target. Until 82f473c the source was asked for them ``ORDER BY`` key; since, in the order it reads
them. This script measures both on the same data, with the engine itself: the order is forced back
for the runs labelled ``ordered`` (the bulk path's ``rows_select`` asked for ``ordered=True``).

For each source engine (PostgreSQL, MariaDB) and each way the window's rows can be stored
(``--cases``), it builds an ``events`` source of an hour before and the window of ``--rows`` rows,
inserted in ``updated_at`` order (as rows arrive), whose keys are

* ``sorted``: rising with ``updated_at`` (an auto-increment id, rows never updated);
* ``jitter``: rising, ``updated_at`` off by up to 2 s (ids taken before a commit's time is stamped);
* ``random``: unrelated to ``updated_at`` (ids taken long before the rows reach this hour).

Each run also counts how often a row reached the target with a smaller key than the row before it
(``key_falls``: 0 for a read in key order), which shows the order each run read.

A PostgreSQL target holds the hour before (synced by the engine) and an index on ``updated_at``.
Each run syncs the window into a fresh copy of that target, alternating ``ordered`` and
``unordered``, ``--repeat`` times each, and records the wall time and the CPU seconds of the source's
and the target's server processes for every connection the sync opens (read from ``/proc``, as
:mod:`benchmarks.capacity` does; PostgreSQL without parallel workers). Minimum and maximum are
printed (markdown) and written to ``<out>/read_order.json``.

    .venv/bin/python -m benchmarks.read_order --rows 1000000 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

import sync_pipeline.engine.bulk as bulk
from benchmarks.capacity import SourceCpu, _no_parallel_workers
from benchmarks.drift_check import events_table
from benchmarks.first_sync import _database
from benchmarks.suite import add_server_arguments
from benchmarks.workload import Servers
from sync_pipeline.engine.diff.window import Window
from sync_pipeline.engine.sync import sync_partition

BEFORE = datetime(2026, 11, 30, 7, tzinfo=UTC)
HOUR = datetime(2026, 11, 30, 8, tzinfo=UTC)
CASES = ("sorted", "jitter", "random")
# Seconds after the hour's start of the window's row g of n: PostgreSQL, MariaDB.
STAMPS = {
    "sorted": ("g * 3599.0 / {n}", "seq * 3599.0 / {n}"),
    "jitter": (
        "greatest(0, least(3599.9, g * 3599.0 / {n} + random() * 2))",
        "greatest(0, least(3599.9, seq * 3599.0 / {n} + rand() * 2))",
    ),
    "random": ("random() * 3599.9", "rand() * 3599.9"),
}
POSTGRESQL = """
CREATE TABLE events (id bigint PRIMARY KEY, account_id int, kind text, amount numeric(12,2),
                     payload jsonb, updated_at timestamptz NOT NULL);
INSERT INTO events SELECT g, mod(g, 1000), 'kind-' || mod(g, 17), mod(g, 100000) / 100.0,
       jsonb_build_object('n', g, 'tags', jsonb_build_array('a', 'b', mod(g, 7))),
       timestamptz '2026-11-30 07:00:00+00' + (g * 3599.0 / {n}) * interval '1 second'
FROM generate_series(1, {n}) AS g;
INSERT INTO events SELECT * FROM (
  SELECT {n} + g, mod(g, 1000), 'kind-' || mod(g, 17), mod(g, 100000) / 100.0,
         jsonb_build_object('n', g, 'tags', jsonb_build_array('a', 'b', mod(g, 7))),
         timestamptz '2026-11-30 08:00:00+00' + ({stamp}) * interval '1 second' AS updated_at
  FROM generate_series(1, {n}) AS g) AS window_rows ORDER BY updated_at;
CREATE INDEX ON events (updated_at);
ANALYZE events
"""
MARIADB = """
CREATE TABLE events (id bigint PRIMARY KEY, account_id int, kind varchar(40), amount decimal(12,2),
                     payload varchar(200), updated_at datetime(6) NOT NULL, KEY (updated_at));
INSERT INTO events SELECT seq, seq %% 1000, concat('kind-', seq %% 17), (seq %% 100000) / 100.0,
       concat('{{"n": ', seq, '}}'), timestamp '2026-11-30 07:00:00' + interval (seq * 3599.0 / {n}) second
FROM seq_1_to_{n};
INSERT INTO events SELECT * FROM (
  SELECT {n} + seq, seq %% 1000, concat('kind-', seq %% 17), (seq %% 100000) / 100.0,
         concat('{{"n": ', seq, '}}'),
         timestamp '2026-11-30 08:00:00' + interval ({stamp}) second AS updated_at
  FROM seq_1_to_{n}) AS window_rows ORDER BY updated_at;
ANALYZE TABLE events
"""


def _run_script(url: str, script: str) -> None:
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            for statement in script.split(";"):
                if statement.strip():
                    conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


def _build_source(servers: Servers, kind: str, case: str, rows: int) -> str:
    url = servers.create(kind, f"order_{case}")
    pg_stamp, my_stamp = STAMPS[case]
    if kind == "postgresql":
        _run_script(url, POSTGRESQL.format(n=rows, stamp=pg_stamp.format(n=rows)))
        _no_parallel_workers(url)
    else:
        _run_script(url, MARIADB.format(n=rows, stamp=my_stamp.format(n=rows)))
    return url


def _ordered_read() -> Any:
    """``bulk.rows_select`` asking for key order whatever the caller says: the code before 82f473c."""
    unforced = bulk.rows_select

    def ordered(*args: Any, **kwargs: Any) -> Any:
        kwargs["ordered"] = True
        return unforced(*args, **kwargs)

    return unforced, ordered


def _key_falls(target: str, rows: int) -> int:
    """How often a window row written to the target has a smaller key than the one written before it
    (PostgreSQL's ``ctid`` order): 0 when the rows came in key order. It shows which order was read."""
    engine = sa.create_engine(target, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return int(
                conn.exec_driver_sql(
                    "SELECT count(*) FROM (SELECT id < lag(id) OVER (ORDER BY ctid) AS fell FROM events"
                    f" WHERE id > {rows}) AS written WHERE fell"
                ).scalar_one()
            )
    finally:
        engine.dispose()


def measure(servers: Servers, kind: str, case: str, rows: int, repeat: int) -> dict[str, Any]:
    """``repeat`` first syncs of the window each way, alternated; wall and both servers' CPU seconds."""
    source = _build_source(servers, kind, case, rows)
    base = servers.create("postgresql", f"order_{case}_base")
    sync_partition(events_table(source, base), source, base, Window.hour_starting(BEFORE))
    _run_script(base, "CREATE INDEX events_updated_at ON events (updated_at)")
    unforced, ordered = _ordered_read()
    runs: dict[str, list[dict[str, float]]] = {"ordered": [], "unordered": []}
    try:
        for _ in range(repeat):
            for mode in runs:
                target = servers.create("postgresql", f"order_{case}_{mode}", template=_database(base))
                bulk.rows_select = ordered if mode == "ordered" else unforced
                source_cpu, target_cpu = SourceCpu(_database(source)), SourceCpu(_database(target))
                try:
                    with source_cpu.measuring(), target_cpu.measuring():
                        started = time.perf_counter()
                        stats = sync_partition(
                            events_table(source, target), source, target, Window.hour_starting(HOUR)
                        )
                        wall = time.perf_counter() - started
                    falls = _key_falls(target, rows)
                finally:
                    bulk.rows_select = unforced
                    servers.drop(target)
                assert (stats.inserted, stats.rows_direct) == (rows, rows), stats
                spent = {"source_cpu": source_cpu.spent, "target_cpu": target_cpu.spent}
                runs[mode].append({"wall": wall, **spent, "key_falls": falls})
    finally:
        servers.drop(base)
        servers.drop(source)
    return {"engine": kind, "case": case, "rows": rows, "runs": runs}


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| source | keys vs `updated_at` | read | wall s | source CPU s | target CPU s |",
        "|---|---|---|---|---|---|",
    ]
    for res in results:
        for mode, runs in res["runs"].items():
            cells = " | ".join(
                f"{min(r[f] for r in runs):.2f}-{max(r[f] for r in runs):.2f}"
                for f in ("wall", "source_cpu", "target_cpu")
            )
            lines.append(f"| {res['engine']} | {res['case']} | {mode} | {cells} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--engines", default="postgresql,mysql", help="source engines, comma-separated")
    parser.add_argument("--cases", default=",".join(CASES), help=f"of {', '.join(CASES)}")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    add_server_arguments(parser)
    args = parser.parse_args(argv)
    servers = Servers(args.pg_url, args.mysql_url)
    results = []
    try:
        for kind in args.engines.split(","):
            for case in args.cases.split(","):
                results.append(measure(servers, kind, case, args.rows, args.repeat))
                print(markdown(results[-1:]), flush=True)
    finally:
        servers.drop_all()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "read_order.json").write_text(json.dumps(results, indent=2))
    print(markdown(results))


if __name__ == "__main__":
    main()
