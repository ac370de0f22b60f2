"""What one table-hour costs in steady state with the default settings, against COPYing the hour once.

docs/capacity.md is derived from this script's table; rerun it after the engine changes and the
document's figures follow. For each engine pair (PostgreSQL to PostgreSQL, MariaDB to PostgreSQL)
and window size R it builds the ``events`` source of :mod:`benchmarks.workload` (the hour before,
the window of R rows, the hour after) and a PostgreSQL target with the hour before synced and the
window empty (:func:`benchmarks.first_sync.build_target`), then measures on those same databases:

* ``copy``: the hour COPYed from the source into the target's indexed ``events`` table, in a child
  process (:mod:`benchmarks.methods` ``copy_indexed``), wall time: the yardstick of the issue;
* ``copy_out``: the hour read out of the source once (PostgreSQL binary ``COPY ... TO STDOUT``,
  MariaDB an unbuffered ``SELECT``): the source's CPU for the yardstick;
* ``first_sync``: :func:`sync_partition` of the new hour into the empty window (the bulk path);
* ``in_sync``: :func:`verify_partition` right after it, as the sync step does;
* ``resync_unchanged``: the hourly run's re-check of an earlier, unchanged hour (range-hash descent);
* ``drift``: one comparison of the rolling drift schedule (:func:`verify_partition` again, later);
* ``resync_changed``: the re-check of an hour whose source changed 1.8% (1% updated, 0.2% deleted,
  0.1% moved out, 0.5% inserted: :func:`benchmarks.workload.apply_changes`).

Each is measured ``--repeat`` times: its wall time (median) and the source database's CPU seconds
(minimum), read from ``/proc`` for every connection the operation opens to the source: the backend
process of each PostgreSQL connection, the ``mysqld`` thread of each MariaDB connection (its
``TID``), from the connection's opening to its close. So the CPU figures do not depend on what
else loads the machine; wall times do. The source database is set to run without parallel workers
so that each connection's backend does all of its work.

How many of each a table-hour incurs is read from the configuration's defaults
(:func:`counts_per_table_hour`): one first sync and its ``in_sync``, ``schedule.lookback_hours``
re-checks by the later hourly runs, ``K`` drift comparisons (the milestones of the rolling
schedule: by default one, in the last hour of ``drift.lookback_hours``), and one sync step plus a
drift step per drift run (started only when an hour is due: by default one an hour,
:func:`~sync_pipeline.orchestration.drift_schedule.runs_per_hour`), each paying Dagster's fixed cost per step
(``--step-seconds``, from docs/capacity.md section 5: not measured here). The totals and their
ratios to the COPY are computed from the measured components and printed with them (markdown),
and written to ``<out>/capacity.json`` and ``capacity.md``.

    .venv/bin/python -m benchmarks.capacity --sizes 200000,1000000 --repeat 3
    .venv/bin/python -m benchmarks.capacity --quick          # R = 20,000, one run
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from benchmarks.drift_check import _copy_out, events_table
from benchmarks.first_sync import _database, build_target
from benchmarks.suite import PAIRS, ROOT, add_server_arguments, run_child
from benchmarks.workload import WINDOW_START, Layout, Servers, apply_changes, build, compare_window
from sync_pipeline.config.models import DriftConfig, ScheduleConfig
from sync_pipeline.engine.diff.window import Window
from sync_pipeline.engine.settings import TableConfig
from sync_pipeline.engine.sync import sync_partition
from sync_pipeline.engine.verify import verify_partition
from sync_pipeline.orchestration.drift_schedule import milestone_ages, runs_per_hour

QUICK_SIZE = 20_000
# Dagster's own CPU per step, an upper bound measured on the loaded machine (docs/capacity.md section 5).
DAGSTER_STEP_SECONDS = 1.2
COMPONENTS = ("copy", "copy_out", "first_sync", "in_sync", "resync_unchanged", "drift", "resync_changed")

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the source's CPU, per connection -----------------------------------------------------------------
def _cpu_seconds(stat: Path) -> float:
    """User + system CPU seconds of a process or thread so far (``stat`` fields 14 and 15)."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class SourceCpu:
    """CPU seconds spent by the source server on every connection opened to ``database``.

    Listens to every SQLAlchemy pool: a connection to the source database has its server process
    (PostgreSQL backend) or thread (MariaDB) noted when it opens and read again when it closes, so
    the engine's own connections are measured without changing the engine.
    """

    database: str
    spent: float = 0.0
    open: dict[int, tuple[Path, float]] = field(default_factory=dict)

    def _on_connect(self, dbapi_connection: Any, record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            if type(dbapi_connection).__module__.startswith("psycopg"):
                cursor.execute("SELECT current_database(), pg_backend_pid()")
                name, pid = cursor.fetchone()
                stat = Path(f"/proc/{pid}/stat")
            else:
                cursor.execute(
                    "SELECT DATABASE(), TID, @@pid_file FROM information_schema.PROCESSLIST "
                    "WHERE ID = CONNECTION_ID()"
                )
                name, tid, pid_file = cursor.fetchone()
                stat = Path(f"/proc/{int(Path(pid_file).read_text())}/task/{tid}/stat")
        finally:
            cursor.close()
        if name == self.database:
            self.open[id(dbapi_connection)] = (stat, _cpu_seconds(stat))

    def _on_close(self, dbapi_connection: Any, *_: Any) -> None:
        opened = self.open.pop(id(dbapi_connection), None)
        if opened is not None:
            stat, before = opened
            self.spent += _cpu_seconds(stat) - before

    @contextmanager
    def measuring(self) -> Iterator[SourceCpu]:
        self.spent = 0.0
        events = [("connect", self._on_connect), ("close", self._on_close)]
        events.append(("close_detached", self._on_close))
        for name, listener in events:
            sa.event.listen(sa.pool.Pool, name, listener)
        try:
            yield self
        finally:
            for name, listener in events:
                sa.event.remove(sa.pool.Pool, name, listener)
            for key in list(self.open):  # still pooled: read now (the operation has returned)
                stat, before = self.open.pop(key)
                self.spent += _cpu_seconds(stat) - before


# -- counts per table-hour -----------------------------------------------------------------------------
def counts_per_table_hour() -> dict[str, float]:
    """How many of each component one table-hour incurs with the default settings."""
    drift = DriftConfig()
    ages = milestone_ages(drift.lookback_hours, drift.milestones_minutes)
    return {
        "first_sync": 1,
        "in_sync": 1 if TableConfig.model_fields["verify"].default else 0,
        "resync_unchanged": ScheduleConfig().lookback_hours,
        "drift": len(ages),
        # One sync step, and one drift step per table in each drift run; a run starts only when an
        # hour is due, so with the milestones on whole hours one an hour.
        "steps": 1 + runs_per_hour(ages, drift.interval_seconds),
    }


# -- one pair and size ---------------------------------------------------------------------------------
def _no_parallel_workers(url: str) -> None:
    """One backend does all of a PostgreSQL query's work, so its CPU is all in one process."""
    if sa.make_url(url).get_backend_name() != "postgresql":
        return
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{_database(url)}" SET max_parallel_workers_per_gather = 0')
    finally:
        engine.dispose()


def _read_out(url: str, window: Window) -> None:
    """The hour read out of the source once, on a connection opened while the CPU is measured."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            _copy_out(conn, window)
    finally:
        engine.dispose()


def measure(servers: Servers, pair: str, rows: int, repeat: int, log: Log) -> dict[str, Any]:
    """Every component ``repeat`` times on one pair and size: wall seconds and source CPU seconds."""
    source_kind, _ = PAIRS[pair]
    layout = Layout(rows)
    label = f"cap_{pair.replace('-', '')}_{rows}"
    window = Window.hour_starting(WINDOW_START)
    log(f"{label}: building the source and the target template")
    source = servers.create(source_kind, f"{label}_src")
    build(source, layout)
    _no_parallel_workers(source)
    empty = servers.create("postgresql", f"{label}_empty")
    build_target(empty, layout)
    cpu = SourceCpu(_database(source))
    walls: dict[str, list[float]] = {c: [] for c in COMPONENTS}
    cpus: dict[str, list[float]] = {c: [] for c in COMPONENTS}
    loads: list[float] = []
    differing: list[int] = []  # what in_sync and drift reported on the equal hour: 0 unless a defect

    def timed(component: str, operation: Callable[..., Any], *args: Any) -> Any:
        with cpu.measuring():
            started = time.perf_counter()
            result = operation(*args)
            walls[component].append(time.perf_counter() - started)
        cpus[component].append(cpu.spent)
        loads.append(os.getloadavg()[0])
        return result

    synced = ""
    try:
        for r in range(repeat):
            clone = servers.create("postgresql", f"{label}_copy{r}", template=_database(empty))
            try:
                result = run_child("copy_indexed", {"source_url": source, "target_url": clone})
                walls["copy"].append(result["seconds"])
            finally:
                servers.drop(clone)
            timed("copy_out", _read_out, source, window)
            target = servers.create("postgresql", f"{label}_t{r}", template=_database(empty))
            table = events_table(source, target)
            stats = timed("first_sync", sync_partition, table, source, target, window)
            assert stats.inserted == rows, f"first sync inserted {stats.inserted}, expected {rows}"
            check = timed("in_sync", verify_partition, table, source, target, window)
            differing.append(check.rows_differing)
            again = timed("resync_unchanged", sync_partition, table, source, target, window)
            assert again.changed == 0, "the unchanged hour re-synced rows"
            drift = timed("drift", verify_partition, table, source, target, window)
            differing.append(drift.rows_differing)
            if r == 0:
                # Independent of the engine's hashing: the hour is equal, whatever the verification says.
                assert compare_window(source, target).equal, "the target's window differs from the source's"
                synced = target
            else:
                servers.drop(target)
            log(f"{label} #{r}: " + ", ".join(f"{c} {walls[c][-1]:.2f} s" for c in COMPONENTS if walls[c]))
        servers.drop(empty)
        apply_changes(source, layout)
        for r in range(repeat):
            target = servers.create("postgresql", f"{label}_chg{r}", template=_database(synced))
            try:
                table = events_table(source, target)
                stats = timed("resync_changed", sync_partition, table, source, target, window)
                assert stats.changed > 0, "the changed hour re-synced nothing"
                if r == 0:
                    assert compare_window(source, target).equal, "the changed window differs after re-sync"
            finally:
                servers.drop(target)
            log(f"{label} changed #{r}: {walls['resync_changed'][-1]:.2f} s")
    finally:
        for url in (synced, source):
            if url:
                servers.drop(url)
    return {
        "pair": pair,
        "rows": rows,
        "wall": {c: statistics.median(v) for c, v in walls.items()},
        "wall_all": walls,
        # The minimum: another session's work cannot make a connection's own CPU smaller.
        "source_cpu": {c: min(v) for c, v in cpus.items() if v},
        "load_average": [round(min(loads), 2), round(max(loads), 2)],
        "verification_rows_differing": max(differing),
    }


# -- totals ---------------------------------------------------------------------------------------------
def totals(result: dict[str, Any], counts: dict[str, float], step_seconds: float) -> dict[str, float]:
    """Per table-hour with the defaults: the sum of each component times its count, and the ratios."""
    wall, cpu = result["wall"], result["source_cpu"]
    parts = ("first_sync", "in_sync", "resync_unchanged", "drift")
    work = sum(wall[p] * counts[p] for p in parts)
    fixed = counts["steps"] * step_seconds
    source = sum(cpu[p] * counts[p] for p in parts)
    # The same hour if every lookback re-check found 1.8% changed (late commits in each): an upper bound.
    changed = counts["resync_unchanged"] * (wall["resync_changed"] - wall["resync_unchanged"])
    changed_cpu = counts["resync_unchanged"] * (cpu["resync_changed"] - cpu["resync_unchanged"])
    copy_cpu = cpu["copy_out"] or float("nan")  # under one clock tick: too small a window to say
    return {
        "step_work_s": work,
        "step_fixed_s": fixed,
        "step_s": work + fixed,
        "step_ratio": (work + fixed) / wall["copy"],
        "step_work_ratio": work / wall["copy"],
        "step_s_changed": work + fixed + changed,
        "source_cpu_s": source,
        "source_cpu_ratio": source / copy_cpu,
        "source_cpu_s_changed": source + changed_cpu,
        "source_us_per_row": source / result["rows"] * 1e6,
        # A source core at 50% (its applications need the rest) and at 100%, all tables together.
        "rows_per_core_hour_50": 1800 / (source / result["rows"]) if source else float("nan"),
        "rows_per_core_hour_100": 3600 / (source / result["rows"]) if source else float("nan"),
    }


def markdown(results: list[dict[str, Any]], counts: dict[str, float], step_seconds: float) -> str:
    """The components, and the totals per table-hour with their ratios to the COPY."""
    lines = [
        "Components (wall s median; source CPU s minimum):",
        "",
        "| pair | R | COPY into indexed target, wall | COPY out, source CPU | first sync | in_sync "
        "| re-sync unchanged | drift comparison | re-sync 1.8% changed | load avg |",
        "|---|---:|---:|---:|---|---|---|---|---|---|",
    ]
    for res in results:
        if res["verification_rows_differing"]:
            lines.insert(
                1,
                f"\n**{res['pair']} {res['rows']:,}: in_sync and drift reported "
                f"{res['verification_rows_differing']:,} rows differing on an hour that is equal "
                "(benchmarks.workload.compare_window): a false difference, timed as it is.**",
            )
        w, c = res["wall"], res["source_cpu"]
        cells = " | ".join(
            f"{w[p]:.2f} s / {c[p]:.2f} CPU-s"
            for p in ("first_sync", "in_sync", "resync_unchanged", "drift", "resync_changed")
        )
        lo, hi = res["load_average"]
        lines.append(
            f"| {res['pair']} | {res['rows']:,} | {w['copy']:.2f} s | {c['copy_out']:.2f} CPU-s | {cells} "
            f"| {lo:.1f}-{hi:.1f} |"
        )
    n = counts
    lines += [
        "",
        f"Per table-hour, defaults: {n['first_sync']:g} first sync + {n['in_sync']:g} in_sync + "
        f"{n['resync_unchanged']:g} re-syncs of an unchanged hour + {n['drift']:g} drift comparisons; "
        f"{n['steps']:g} steps at {step_seconds:g} s of Dagster each (not measured here):",
        "",
        "| pair | R | step time s (work + fixed) | ÷ COPY wall | work alone ÷ COPY | source CPU s "
        "| ÷ COPY-out CPU | source CPU µs per row | rows an hour per source core (50% / 100%) "
        "| if each re-check finds 1.8% changed: step s / source CPU s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for res in results:
        t = res["totals"]
        lines.append(
            f"| {res['pair']} | {res['rows']:,} | {t['step_s']:.2f} ({t['step_work_s']:.2f} + "
            f"{t['step_fixed_s']:.2f}) | {t['step_ratio']:.2f}x | {t['step_work_ratio']:.2f}x "
            f"| {t['source_cpu_s']:.2f} | {t['source_cpu_ratio']:.2f}x | {t['source_us_per_row']:.2f} "
            f"| {t['rows_per_core_hour_50'] / 1e6:,.0f}M / {t['rows_per_core_hour_100'] / 1e6:,.0f}M "
            f"| {t['step_s_changed']:.2f} / {t['source_cpu_s_changed']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def run_capacity(
    *,
    sizes: Sequence[int],
    repeat: int,
    pairs: Sequence[str],
    out: Path,
    step_seconds: float = DAGSTER_STEP_SECONDS,
    pg_admin: str = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
    mysql_admin: str = "mysql+pymysql://root@127.0.0.1:3306/",
    command: str = "",
    log: Log = _stderr,
) -> dict[str, Any]:
    """Measure every size and pair; write ``capacity.json`` and ``capacity.md`` into ``out``."""
    import json

    servers = Servers(pg_admin, mysql_admin)
    counts = counts_per_table_hour()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    started = datetime.now(UTC).isoformat(timespec="seconds")
    results: list[dict[str, Any]] = []
    try:
        for rows in sizes:
            for pair in pairs:
                result = measure(servers, pair, rows, repeat, log)
                result["totals"] = totals(result, counts, step_seconds)
                results.append(result)
    finally:
        servers.drop_all()
    report = {
        "command": command,
        "started": started,
        "versions": servers.versions(),
        "load_average_at_start": load_at_start,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "counts": counts,
        "step_seconds": step_seconds,
        "results": results,
        "markdown": markdown(results, counts, step_seconds),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "capacity.json").write_text(json.dumps(report, indent=2, default=str))
    header = (
        f"`{command}` (started {started}, load average {load_at_start} at start, "
        f"{report['load_average_at_end']} at end)\n\n"
    )
    (out / "capacity.md").write_text(header + report["markdown"])
    return report


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help=f"R={QUICK_SIZE:,}, one run")
    parser.add_argument("--sizes", help="comma-separated window sizes (default 200000,1000000)")
    parser.add_argument("--repeat", type=int, help="runs of each component (default 3)")
    parser.add_argument("--pairs", default=",".join(PAIRS), help=f"comma-separated, of {', '.join(PAIRS)}")
    parser.add_argument(
        "--step-seconds",
        type=float,
        default=DAGSTER_STEP_SECONDS,
        help="Dagster's fixed cost per step (default: docs/capacity.md section 5)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    add_server_arguments(parser)
    args = parser.parse_args(argv)
    sizes = (
        [int(s) for s in args.sizes.split(",")]
        if args.sizes
        else ([QUICK_SIZE] if args.quick else [200_000, 1_000_000])
    )
    pairs = [p for p in args.pairs.split(",") if p]
    unknown = set(pairs) - set(PAIRS)
    if unknown:
        parser.error(f"unknown pair: {', '.join(sorted(unknown))}")
    command = ".venv/bin/python -m benchmarks.capacity " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    report = run_capacity(
        sizes=sizes,
        repeat=args.repeat or (1 if args.quick else 3),
        pairs=pairs,
        out=args.out,
        step_seconds=args.step_seconds,
        pg_admin=args.pg_url,
        mysql_admin=args.mysql_url,
        command=command.strip(),
    )
    print(report["markdown"])


if __name__ == "__main__":
    main()
