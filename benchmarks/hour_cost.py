"""What one hour of a ranged backfill costs in the engine, phase by phase, against COPYing its rows.

Seeds a PostgreSQL source as :mod:`benchmarks.backfill` does (``--hours`` x ``--rows-per-hour``,
``updated_at`` indexed), then drives the ranged step's process layout without Dagster: one planner
(:func:`~sync_pipeline.orchestration.hours.sync_hour`, which plans once and forks a process per
hour), oldest hour first, into an empty target. For each hour it records the wall time of the call
(fork, sync, the answer's trip back) and the sync's own ``timings_seconds``; then, for the same
hours, the floor: one ``COPY (SELECT ... window) TO STDOUT`` piped into ``COPY ... FROM STDIN`` of an
indexed table, on connections opened for it, committed.

With ``--profile`` the hours are synced again into a fresh target inside this process (no fork)
under cProfile, and the functions holding the most time are printed: the fixed cost of an hour is
what is left once the COPY is subtracted.

    .venv/bin/python -m benchmarks.hour_cost --hours 40 --rows-per-hour 20000 --profile
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa

from benchmarks.deployment import databases, seed, sync_config

TABLE = "orders"


def _copy_hour(source: str, target: str, start: datetime, end: datetime) -> float:
    """Seconds to pipe one hour's rows by binary COPY into an indexed table, connections included."""
    began = time.perf_counter()
    with psycopg.connect(source) as src, psycopg.connect(target) as dst:
        query = (
            f"COPY (SELECT * FROM {TABLE} WHERE updated_at >= '{start.isoformat()}'"
            f" AND updated_at < '{end.isoformat()}' ORDER BY id) TO STDOUT (FORMAT BINARY)"
        )
        with (
            src.cursor().copy(query) as reader,
            dst.cursor().copy("COPY copy_floor FROM STDIN (FORMAT BINARY)") as writer,
        ):
            for block in reader:
                writer.write(block)
        dst.commit()
    return time.perf_counter() - began


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hours", type=int, default=40)
    p.add_argument("--rows-per-hour", type=int, default=20000)
    p.add_argument("--profile", action="store_true", help="also cProfile the hours, in this process")
    args = p.parse_args(argv)

    from sync_pipeline.engine.diff.window import Window
    from sync_pipeline.orchestration import hours as planner

    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = now - timedelta(hours=args.hours + 2)
    windows = [Window(start + timedelta(hours=h), start + timedelta(hours=h + 1)) for h in range(args.hours)]
    with tempfile.TemporaryDirectory(prefix="sp_hour_cost_") as tmp, databases(False) as dbs:
        seed(dbs.url_text("source"), [TABLE], start, args.hours, args.rows_per_hour)
        raw = {
            r: dbs.url("source" if r == "source" else r, "postgresql")
            for r in ("source", "target", "dagster")
        }
        text = {r: u.render_as_string(hide_password=False) for r, u in raw.items()}
        with psycopg.connect(text["source"], autocommit=True) as conn:
            conn.execute(f"CREATE INDEX ON {TABLE} (updated_at)")
            conn.execute(f"VACUUM ANALYZE {TABLE}")
        config = Path(tmp) / "sync.yaml"
        config.write_text(sync_config(dbs.url_text("source"), dbs.url_text("target"), [TABLE], start))
        os.environ["BENCH_SOURCE_URL"] = dbs.url_text("source")
        os.environ["BENCH_TARGET_URL"] = dbs.url_text("target")
        print(f"load average at start {os.getloadavg()[0]:.1f}")

        walls: list[float] = []
        phases: dict[str, list[float]] = defaultdict(list)
        for window in windows:
            began = time.perf_counter()
            result = planner.sync_hour(str(config), TABLE, window, "updated_at")
            walls.append(time.perf_counter() - began)
            for phase, seconds in result.stats.timings.items():
                phases[phase].append(seconds)
            if result.stats.inserted != args.rows_per_hour:
                raise RuntimeError(f"{window}: {result.stats.inserted} rows inserted")

        with psycopg.connect(text["dagster"], autocommit=True) as out:
            out.execute(
                "CREATE TABLE copy_floor (id bigint PRIMARY KEY, account_id int NOT NULL,"
                " amount numeric(12,2), note text, updated_at timestamptz NOT NULL)"
            )
            out.execute("CREATE INDEX ON copy_floor (updated_at)")
        floors = [_copy_hour(text["source"], text["dagster"], w.start, w.end) for w in windows]
        print(f"load average at end {os.getloadavg()[0]:.1f}")

        def med(values: list[float]) -> str:
            return f"{statistics.median(values):.3f}"

        rows: list[tuple[str, str]] = [("hour through the planner (fork, sync, answer)", med(walls))]
        rows += [(f"  {phase}", med(v)) for phase, v in sorted(phases.items(), key=lambda kv: -sum(kv[1]))]
        rows.append(("COPY of the hour (floor, own connections)", med(floors)))
        print(f"{args.hours} hours x {args.rows_per_hour} rows: medians, seconds")
        for name, value in rows:
            print(f"{name:55} {value}")
        ratio = sum(walls) / sum(floors)
        print(f"sums: planner {sum(walls):.2f} s, COPY {sum(floors):.2f} s, ratio {ratio:.2f}")

        if args.profile:
            _profile(dbs, text, windows, start)


def _profile(dbs: Any, text: dict[str, str], windows: list[Any], start: datetime) -> None:
    """The same hours again, into a fresh target, in this process under cProfile."""
    from sync_pipeline.config import load_config
    from sync_pipeline.engine.run_plan import plan_run
    from sync_pipeline.engine.sync import sync_partition

    with psycopg.connect(text["target"], autocommit=True) as conn:
        conn.execute(f"DROP TABLE {TABLE}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sync.yaml"
        path.write_text(sync_config(dbs.url_text("source"), dbs.url_text("target"), [TABLE], start))
        table = load_config(path).table(TABLE)
    source_url, target_url = dbs.url_text("source"), dbs.url_text("target")
    plan = plan_run(table, source_url, target_url)
    profiler = cProfile.Profile()
    began = time.perf_counter()
    profiler.enable()
    for window in windows:
        sync_partition(table, source_url, target_url, window, plan=plan)
    profiler.disable()
    print(f"in process, cProfiled: {(time.perf_counter() - began) / len(windows):.3f} s an hour")
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(60)
    print(out.getvalue())
    _ = sa  # SQLAlchemy is what the profile mostly names


if __name__ == "__main__":
    main()
