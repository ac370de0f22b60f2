"""The Dagster path under load: long-lived processes' memory across a backfill, and its throughput.

A production-shaped deployment on this machine (:mod:`benchmarks.deployment`: ``deploy/dagster.yaml``
on PostgreSQL, ``dagster-daemon run``, ``dagster-webserver`` and a separate code server), syncing
PostgreSQL source tables seeded with ``--rows-per-hour`` rows per hourly window.

The script launches, through the webserver's GraphQL API as the UI's "Launch backfill" does, one
backfill of ``--partitions`` hourly partitions of ``--tables`` tables, and samples every
``--interval`` seconds the RSS of each long-lived process (the process and its helper children:
the code server's gRPC child; never the run workers and step processes the code server launches,
which end with their run and are reported apart) until the backfill completes. It then checks that
every run succeeded and each target window equals its source's row count, and writes
``<name>.json``, ``<name>.png`` and ``<name>.md`` into ``--out`` (:mod:`benchmarks.long_lived_report`).

With ``--cli-runs N`` it first times ``dagster asset materialize`` of one partition from a shell, N
times, split into interpreter and definitions start-up, run, step process start and step, from the
run's own event log.

    .venv/bin/python -m benchmarks.long_lived --partitions 200 --tables 1
    .venv/bin/python -m benchmarks.dagster_path            # 48 partitions x 3 tables, CLI timings
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

from benchmarks.deployment import (
    ROLES,
    ROOT,
    Service,
    databases,
    deployment,
    seed,
    sync_config,
    window_counts,
)
from benchmarks.long_lived_report import (
    CLI_FIELDS,
    MIB,
    backfill_stats,
    chart,
    cpu_per_sync,
    markdown,
    summarize_rss,
)
from sync_pipeline_tests.dagster_processes import (
    BACKFILL_DONE,
    DAGSTER,
    backfill_status,
    cancel_backfill,
    launch_backfill,
    wait_for,
)

TABLE_NAMES = ("orders", "customers", "events", "payments", "shipments", "invoices")
# A process whose command line holds one of these belongs to a run (the run worker the code server
# spawns, its forkserver, step processes, orphan watchers): it ends with its run, so it is not part of
# a long-lived process's footprint. (multiprocessing's resource tracker stays: it lives as long as
# the code server.)
RUN_MARKERS = ("execute_run", "resume_run", "execute_step", "forkserver", "spawn_main", "watch_orphans")


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


# -- RSS sampling ----------------------------------------------------------------------------------


def _is_run_process(proc: psutil.Process) -> bool:
    try:
        cmdline = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return any(marker in cmdline for marker in RUN_MARKERS)


def footprint(pid: int) -> tuple[int, int, int, int]:
    """(RSS of the process and its helpers, helper count, RSS of run processes, run process count).

    Walks the tree below ``pid``; a run worker's whole subtree (forkserver, step processes) counts
    as run work, not as the long-lived process.
    """
    try:
        root = psutil.Process(pid)
        own = root.memory_info().rss
    except psutil.NoSuchProcess:
        return 0, 0, 0, 0
    helpers = runs = run_rss = 0
    stack = [root]
    while stack:
        proc = stack.pop()
        try:
            children = proc.children()
        except psutil.NoSuchProcess:
            continue
        for child in children:
            try:
                if _is_run_process(child):
                    for member in [child, *child.children(recursive=True)]:
                        run_rss += member.memory_info().rss
                        runs += 1
                    continue
                own += child.memory_info().rss
                helpers += 1
            except psutil.NoSuchProcess:
                continue
            stack.append(child)
    return own, helpers, run_rss, runs


def cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and everything below it, alive or already reaped.

    A reaped process's time is in its parent's ``children_*`` fields (run workers are reaped by the
    code server, their step processes by the forkserver or the run worker), a live one's in its own:
    each second is counted once. Unlike wall time, this does not depend on what else the machine runs.
    """
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


class Sampler(threading.Thread):
    """Samples each long-lived process's footprint every ``interval`` seconds until stopped."""

    def __init__(self, services: dict[str, Service], interval: float, t0: float) -> None:
        super().__init__(daemon=True)
        self.services = services
        self.interval = interval
        self.t0 = t0
        self.samples: list[dict[str, Any]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            sample: dict[str, Any] = {"t": round(time.monotonic() - self.t0, 2)}
            run_rss = runs = 0
            for role in ROLES:
                rss, helpers, r_rss, r_n = footprint(self.services[role].process.pid)
                sample[role] = rss
                sample[f"{role}_procs"] = 1 + helpers
                sample[f"{role}_cpu_s"] = round(cpu_seconds(self.services[role].process.pid), 2)
                run_rss += r_rss
                runs += r_n
            sample["run_processes"] = runs
            sample["run_processes_rss"] = run_rss
            self.samples.append(sample)
            self.stopped.wait(self.interval)


def partition_key(hour: datetime) -> str:
    return f"{hour:%Y-%m-%d-%H:%M}"


# -- the CLI path ----------------------------------------------------------------------------------


def _events(home: Path, run_id: str) -> dict[str, float]:
    """First timestamp of each event type of one run, read from the instance in this process."""
    from dagster import DagsterInstance

    with DagsterInstance.from_config(str(home)) as instance:
        first: dict[str, float] = {}
        for record in instance.all_logs(run_id):
            event = record.dagster_event
            if event is not None:
                first.setdefault(event.event_type.name, record.timestamp)
                if event.step_key:
                    first.setdefault(f"{event.event_type.name}:{event.step_key}", record.timestamp)
        return first


def _latest_run(home: Path, key: str) -> str:
    from dagster import DagsterInstance, RunsFilter

    with DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs(filters=RunsFilter(tags={"dagster/partition": key}), limit=1)
        return runs[0].run_id


def time_cli(home: Path, env: dict[str, str], work: Path, table: str, key: str) -> dict[str, Any]:
    """One ``dagster asset materialize`` of one partition, split by the run's own event timestamps."""
    argv = [
        str(DAGSTER),
        *("asset", "materialize", "-m", "sync_pipeline.definitions"),
        *("--select", f"sync/{table}", "--partition", key),
    ]
    started = time.time()
    done = subprocess.run(argv, env=env, cwd=work, capture_output=True, text=True, timeout=600, check=False)  # noqa: S603
    ended = time.time()
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    run_id = _latest_run(home, key)
    ev = _events(home, run_id)
    return {
        "partition": key,
        "run_id": run_id,
        "wall_s": round(ended - started, 3),
        "startup_s": round(ev["RUN_START"] - started, 3),
        "run_start_to_step_start_s": round(ev["STEP_START"] - ev["RUN_START"], 3),
        "step_worker_start_s": round(ev["STEP_START"] - ev["STEP_WORKER_STARTING"], 3),
        "step_s": round(ev["STEP_SUCCESS"] - ev["STEP_START"], 3),
        "step_end_to_run_end_s": round(ev["RUN_SUCCESS"] - ev["STEP_SUCCESS"], 3),
        "run_end_to_exit_s": round(ended - ev["RUN_SUCCESS"], 3),
        "steps": {
            name.split(":", 1)[1]: round(ev[f"STEP_SUCCESS:{name.split(':', 1)[1]}"] - ev[name], 3)
            for name in ev
            if name.startswith("STEP_START:") and f"STEP_SUCCESS:{name.split(':', 1)[1]}" in ev
        },
        "command": shlex.join(["dagster", *argv[1:]]),
    }


def time_imports(env: dict[str, str], work: Path, repeat: int) -> dict[str, float]:
    """Median seconds to start an interpreter that imports Dagster, and one that loads the definitions."""
    out: dict[str, float] = {}
    for name, code in (
        ("python_import_dagster_s", "import dagster"),
        ("python_load_definitions_s", "import sync_pipeline.definitions"),
    ):
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], env=env, cwd=work, check=True)  # noqa: S603
            times.append(time.perf_counter() - t)
        out[name] = round(statistics.median(times), 3)
    return out


# -- the backfill ----------------------------------------------------------------------------------


def run_records(home: Path, backfill_id: str, keys: Sequence[str]) -> list[dict[str, Any]]:
    """The backfill's runs, each with the partitions of ``keys`` it synced (one, or a ranged run's)."""
    from dagster import DagsterInstance, RunsFilter

    def partitions(tags: dict[str, str]) -> list[str]:
        if "dagster/partition" in tags:
            return [tags["dagster/partition"]]
        first = keys.index(tags["dagster/asset_partition_range_start"])
        return list(keys[first : keys.index(tags["dagster/asset_partition_range_end"]) + 1])

    with DagsterInstance.from_config(str(home)) as instance:
        records = instance.get_run_records(filters=RunsFilter(tags={"dagster/backfill": backfill_id}))
        return [
            {
                "run_id": r.dagster_run.run_id,
                "partitions": partitions(dict(r.dagster_run.tags)),
                "status": r.dagster_run.status.value,
                "created": r.create_timestamp.timestamp(),
                "start": r.start_time,
                "end": r.end_time,
                "assets": len(r.dagster_run.asset_selection or ()),
                "checks": len(r.dagster_run.asset_check_selection or ()),
            }
            for r in records
        ]


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    tables = list(TABLE_NAMES[: args.tables])
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    hours = args.partitions + args.cli_runs
    start = now - timedelta(hours=hours + 2)
    keys = [partition_key(start + timedelta(hours=h)) for h in range(args.partitions)]
    cli_keys = [partition_key(start + timedelta(hours=args.partitions + i)) for i in range(args.cli_runs)]
    result: dict[str, Any] = {
        "title": args.title,
        "command": command,
        "measured_at": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "tables": tables,
        "rows_per_hour": args.rows_per_hour,
        "interval": args.interval,
        "via": "of the assets, as Catalog > Materialize"
        if args.via == "assets"
        else "of the sync_hourly job",
    }
    import dagster

    result["dagster"] = dagster.__version__
    with tempfile.TemporaryDirectory(prefix="sp_long_lived_") as tmp, databases(args.keep) as dbs:
        work = Path(tmp)
        with dbs.admin.connect() as conn:
            result["postgresql"] = conn.exec_driver_sql("SHOW server_version").scalar()
        seed(dbs.url_text("source"), tables, start, hours, args.rows_per_hour)
        config = sync_config(dbs.url_text("source"), dbs.url_text("target"), tables, start)
        log(f"seeded {len(tables)} table(s) x {hours} hours; starting the deployment in {work}")
        with deployment(work, dbs, config) as deploy:
            if args.cli_runs:
                imports = time_imports(deploy.env, work, 3)
                cli_runs = []
                for key in cli_keys:
                    cli_runs.append(time_cli(deploy.home, deploy.env, work, tables[0], key))
                    log(f"CLI materialize {key}: {cli_runs[-1]['wall_s']} s")
                result["cli"] = {
                    "runs": cli_runs,
                    "imports": imports,
                    "median": {k: statistics.median(r[k] for r in cli_runs) for k in CLI_FIELDS},
                }
            t0 = time.monotonic()
            sampler = Sampler(deploy.services, args.interval, t0)
            sampler.start()
            # A short idle baseline before the backfill, on the sampler's own clock.
            idle_until = time.monotonic() + args.idle_seconds
            wait_for(
                "the idle baseline",
                lambda: True if time.monotonic() >= idle_until else None,
                args.idle_seconds + 5,
                deploy.dead,
            )
            # "assets": as the UI's Catalog > Materialize... does, the assets with every check on them;
            # "job": as Jobs > sync_hourly > Partitions does, the hourly job's selection (the syncs and
            # their in_sync checks; drift and freshness stay with their sensors).
            backfill_id = launch_backfill(
                deploy.webserver_url, tables, keys, job=None if args.via == "assets" else "sync_hourly"
            )
            launched_at, launched_t = time.time(), time.monotonic() - t0
            load_at_launch = os.getloadavg()[0]
            log(f"backfill {backfill_id}: {len(keys)} partitions x {len(tables)} table(s)")
            last_report = [time.monotonic()]

            def finished() -> str | None:
                status = backfill_status(deploy.webserver_url, backfill_id)
                if time.monotonic() - last_report[0] > 60:
                    last_report[0] = time.monotonic()
                    s = sampler.samples[-1] if sampler.samples else {}
                    log(
                        f"  {status}; RSS MiB "
                        + ", ".join(f"{r}={s.get(r, 0) / MIB:.0f}" for r in ROLES)
                        + f"; run processes {s.get('run_processes', 0)}"
                    )
                return status if status in BACKFILL_DONE else None

            try:
                status = wait_for("the backfill", finished, args.timeout, deploy.dead)
            except TimeoutError:
                # Keep what was measured: the samples cover the syncs done so far.
                status = f"INCOMPLETE (stopped after --timeout {args.timeout:.0f} s)"
                cancel_backfill(deploy.webserver_url, backfill_id)
                log(f"backfill {backfill_id} timed out; cancelled, writing what was measured")
            done_t = time.monotonic() - t0
            load_at_end = os.getloadavg()[0]
            # A few samples after the backfill, to see the processes settle.
            settle_until = time.monotonic() + args.idle_seconds
            wait_for(
                "the settle period",
                lambda: True if time.monotonic() >= settle_until else None,
                args.idle_seconds + 5,
                deploy.dead,
            )
            sampler.stopped.set()
            sampler.join()
            runs = run_records(deploy.home, backfill_id, keys)
        source = window_counts(dbs.url_text("source"), tables, start, args.partitions)
        target = window_counts(dbs.url_text("target"), tables, start, args.partitions)

    result["backfill"] = {
        "id": backfill_id,
        "status": status,
        "partitions": len(keys),
        "keys": keys,
        "syncs": len(keys) * len(tables),
        "launched_at": launched_at,
        "load_at_launch": load_at_launch,
        "load_at_end": load_at_end,
        "launched_t": round(launched_t, 1),
        "done_t": round(done_t, 1),
        "run_records": runs,
    }
    backfill_stats(result)
    done_hours = [keys.index(k) for k in result["backfill"]["done_keys"]]
    # Only the windows whose run succeeded (all of them, unless the backfill was stopped).
    result["targets_equal"] = bool(done_hours) and all(
        source[t][h] == target[t][h] and source[t][h] > 0 for t in tables for h in done_hours
    )
    result["source_rows"] = {t: sum(v) for t, v in source.items()}
    result["target_rows"] = {t: sum(v) for t, v in target.items()}
    result["samples"] = sampler.samples
    result["cpu"] = cpu_per_sync(sampler.samples, launched_t, len(done_hours) * len(tables))
    result["rss"] = summarize_rss(sampler.samples, launched_t, done_t)
    result["run_processes_peak_mib"] = max(s["run_processes_rss"] for s in sampler.samples) / MIB
    result["run_processes_peak"] = max(s["run_processes"] for s in sampler.samples)
    result["processes"] = {role: max(s[f"{role}_procs"] for s in sampler.samples) for role in ROLES}
    return result


def parser(defaults: dict[str, Any] | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--partitions", type=int, default=200, help="hourly partitions in the backfill")
    p.add_argument("--tables", type=int, default=1, choices=range(1, len(TABLE_NAMES) + 1))
    p.add_argument("--rows-per-hour", type=int, default=100, help="rows in each hourly window")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between RSS samples")
    p.add_argument("--idle-seconds", type=float, default=30.0, help="sampling before and after the backfill")
    p.add_argument("--cli-runs", type=int, default=0, help="time `dagster asset materialize` this many times")
    p.add_argument("--timeout", type=float, default=7200.0, help="seconds the backfill may take")
    p.add_argument(
        "--via",
        choices=("assets", "job"),
        default="assets",
        help="backfill the assets (with all their checks, as Catalog > Materialize) or the sync_hourly job",
    )
    p.add_argument("--name", default="long_lived", help="basename of the result files")
    p.add_argument("--title", default="Long-lived processes across a backfill")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--keep", action="store_true", help="keep the PostgreSQL databases")
    p.add_argument("--render", type=Path, help="only redraw <name>.png and <name>.md from this <name>.json")
    if defaults:
        p.set_defaults(**defaults)
    return p


def main(argv: Sequence[str] | None = None, defaults: dict[str, Any] | None = None, module: str = "") -> None:
    args = parser(defaults).parse_args(argv)
    if args.render:
        # Redraw the chart and the markdown of an earlier run from its JSON.
        result = json.loads(args.render.read_text())
        backfill_stats(result)
        chart(result, args.render.with_suffix(".png"))
        args.render.with_suffix(".md").write_text(markdown(result))
        print(markdown(result))
        return
    shown = list(sys.argv[1:] if argv is None else argv)
    command = shlex.join([".venv/bin/python", "-m", module or "benchmarks.long_lived", *shown])
    result = run(args, command)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    chart(result, args.out / f"{args.name}.png")
    (args.out / f"{args.name}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
