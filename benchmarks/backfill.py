"""A backfill as the UI launches it, in ranged runs: partitions a minute, and its cost against one COPY.

The production-shaped deployment of :mod:`benchmarks.long_lived` (``deploy/dagster.yaml``: PostgreSQL
instance storage, the queued run coordinator, one step per table pool; ``dagster-daemon``,
``dagster-webserver`` and a code server started apart) syncs one PostgreSQL table seeded with
``--rows-per-hour`` rows in each of ``--hours`` hours into an empty PostgreSQL target. The backfill
is launched through GraphQL ``launchPartitionBackfill`` with the asset selected, as Catalog >
Materialize does; the assets' ``BackfillPolicy`` (``backfill.max_partitions_per_run``, here
``--per-run``) makes the daemon launch one run per block of hours. The clock runs from the launch to
the end of the last run.

Reported: partitions a minute; how the time splits (run and step start, the hours' child processes
and their syncs, from the runs' own event logs and each hour's ``timings_seconds``: ``plan`` where an
hour planned the tables itself, ``plan_check`` where it checked the run's one plan); whether every
target hour equals its source; and, for the same rows, the floor: one ``COPY (SELECT ...) TO STDOUT``
from the source piped into ``COPY ... FROM STDIN`` of a target table with the sync's primary key and
``updated_at`` index, timed after the deployment has stopped.

    .venv/bin/python -m benchmarks.backfill --hours 720 --rows-per-hour 100
    .venv/bin/python -m benchmarks.backfill --hours 720 --rows-per-hour 20000

The source table has an index on ``updated_at``, as a table synced by it should (the target is
created with one); ``--no-source-index`` leaves it out, and then every hour's window is read by a
scan of the whole source table: a backfill of N hours reads the table N times.
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
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa

from benchmarks.deployment import ROOT, databases, deployment, seed, sync_config, window_counts
from benchmarks.long_lived import log, partition_key
from sync_pipeline_tests.dagster_processes import BACKFILL_DONE, BACKFILL_STATUS, LAUNCH_BACKFILL, wait_for

TABLE = "orders"


def copy_floor(source_url: str, target_url: str, rows: int) -> dict[str, float]:
    """Seconds to COPY every source row into an indexed copy of the target table, once."""
    text = {
        side: sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        for side, url in (("source", source_url), ("target", target_url))
    }
    with psycopg.connect(text["target"], autocommit=True) as out:
        out.execute(
            "CREATE TABLE copy_floor (id bigint PRIMARY KEY, account_id int NOT NULL,"
            " amount numeric(12,2), note text, updated_at timestamptz NOT NULL)"
        )
        out.execute("CREATE INDEX ON copy_floor (updated_at)")
    started = time.perf_counter()
    with psycopg.connect(text["source"]) as src, psycopg.connect(text["target"]) as dst:
        with (
            src.cursor().copy(f"COPY (SELECT * FROM {TABLE}) TO STDOUT (FORMAT BINARY)") as reader,
            dst.cursor().copy("COPY copy_floor FROM STDIN (FORMAT BINARY)") as writer,
        ):
            for block in reader:
                writer.write(block)
        dst.commit()
    seconds = time.perf_counter() - started
    with psycopg.connect(text["target"], autocommit=True) as out:
        copied = out.execute("SELECT count(*) FROM copy_floor").fetchone()
        out.execute("DROP TABLE copy_floor")
    if copied is None or copied[0] != rows:
        raise RuntimeError(f"COPY floor copied {copied} rows, expected {rows}")
    return {"copy_s": round(seconds, 2)}


# The events of a run, in the order they happen, whose first occurrence splits launch -> run end.
MILESTONES = (
    "RUN_ENQUEUED",
    "RUN_DEQUEUED",
    "RUN_STARTING",
    "RUN_START",
    "STEP_START",
    "ASSET_MATERIALIZATION",
    "ASSET_CHECK_EVALUATION",
    "RUN_SUCCESS",
)


def run_breakdown(home: Path, run_ids: list[str], launched_at: float | None = None) -> dict[str, Any]:
    """From the runs' event logs: each run's span, its step's start, and each hour's interval and sync.

    With ``launched_at``, each run's milestones (:data:`MILESTONES`) in seconds after the launch:
    where the time from the launch to the first hour goes (the backfill daemon's tick, the queue,
    the run worker, the step worker, the planner).
    """
    from dagster import DagsterEventType, DagsterInstance

    runs = []
    hours: list[dict[str, float]] = []
    with DagsterInstance.from_config(str(home)) as instance:
        for run_id in run_ids:
            first: dict[str, float] = {}
            last: dict[str, float] = {}
            last_t: float | None = None
            record_of_run = instance.get_run_record_by_id(run_id)
            for record in instance.all_logs(run_id):
                event = record.dagster_event
                if event is None:
                    continue
                first.setdefault(event.event_type.name, record.timestamp)
                last[event.event_type.name] = record.timestamp
                if event.event_type == DagsterEventType.STEP_START:
                    last_t = record.timestamp
                if event.event_type == DagsterEventType.ASSET_MATERIALIZATION and last_t is not None:
                    metadata = event.step_materialization_data.materialization.metadata
                    timings = metadata["timings_seconds"].value  # type: ignore[attr-defined]
                    total = float(timings.get("total", 0.0))  # type: ignore[union-attr]
                    plan = float(timings.get("plan", 0.0))  # type: ignore[union-attr]
                    check = float(timings.get("plan_check", 0.0))  # type: ignore[union-attr]
                    hours.append(
                        {
                            "interval_s": record.timestamp - last_t,
                            "sync_s": total,
                            "plan_s": plan,
                            "plan_check_s": check,
                        }
                    )
                    last_t = record.timestamp
            if "RUN_START" in first and "STEP_START" in first:
                entry: dict[str, Any] = {
                    "run_id": run_id,
                    "run_start_to_step_start_s": first["STEP_START"] - first["RUN_START"],
                    "run_s": first.get("RUN_SUCCESS", first.get("RUN_FAILURE", 0.0)) - first["RUN_START"],
                }
                if launched_at is not None:
                    after = (
                        {"RUN_CREATED": record_of_run.create_timestamp.timestamp()} if record_of_run else {}
                    )
                    after.update({name: first[name] for name in MILESTONES if name in first})
                    if "ASSET_MATERIALIZATION" in last:
                        after["LAST_MATERIALIZATION"] = last["ASSET_MATERIALIZATION"]
                    entry["after_launch_s"] = {k: round(v - launched_at, 2) for k, v in after.items()}
                runs.append(entry)
    # The first interval of each run also holds the step's own start-up (forkserver, first child).
    return {
        "runs": runs,
        "hours": len(hours),
        "hour_interval_median_s": statistics.median(h["interval_s"] for h in hours) if hours else None,
        "hour_sync_median_s": statistics.median(h["sync_s"] for h in hours) if hours else None,
        "hour_sync_sum_s": sum(h["sync_s"] for h in hours),
        # Reflecting and checking both tables: by every hour's sync where the engine plans per call,
        # else once per run (not in any hour's timings) and each hour checks the plan.
        "hour_plan_median_s": statistics.median(h["plan_s"] for h in hours) if hours else None,
        "hour_plan_check_median_s": statistics.median(h["plan_check_s"] for h in hours) if hours else None,
        "hour_interval_sum_s": sum(h["interval_s"] for h in hours),
        "run_median_s": statistics.median(r["run_s"] for r in runs) if runs else None,
        "run_start_to_step_start_median_s": (
            statistics.median(r["run_start_to_step_start_s"] for r in runs) if runs else None
        ),
    }


RUNS_OF_BACKFILL = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    ... on PartitionBackfill { runs { runId status startTime endTime tags { key value } } }
  }
}
"""


def _git(*argv: str) -> str:
    done = subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, check=False)  # noqa: S603,S607 - git, fixed arguments
    return done.stdout.strip()


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = now - timedelta(hours=args.hours + 2)
    keys = [partition_key(start + timedelta(hours=h)) for h in range(args.hours)]
    result: dict[str, Any] = {
        "command": command,
        "measured_at": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "hours": args.hours,
        "rows_per_hour": args.rows_per_hour,
        "per_run": args.per_run,
        "source_index": args.source_index,
    }
    import dagster

    result["dagster"] = dagster.__version__
    result["commit"] = _git("rev-parse", "--short", "HEAD")
    # Other work in progress in the same tree is measured too: say so beside the figures.
    result["uncommitted"] = len(_git("status", "--short", "--", "sync_pipeline").splitlines())
    with tempfile.TemporaryDirectory(prefix="sp_backfill_") as tmp, databases(args.keep) as dbs:
        work = Path(tmp)
        with dbs.admin.connect() as conn:
            result["postgresql"] = conn.exec_driver_sql("SHOW server_version").scalar()
        t = time.perf_counter()
        seed(dbs.url_text("source"), [TABLE], start, args.hours, args.rows_per_hour)
        if args.source_index:
            with psycopg.connect(
                dbs.url("source", "postgresql").render_as_string(hide_password=False)
            ) as conn:
                conn.execute(f"CREATE INDEX ON {TABLE} (updated_at)")
        log(f"seeded {args.hours} hours x {args.rows_per_hour} rows in {time.perf_counter() - t:.1f}s")
        config = sync_config(dbs.url_text("source"), dbs.url_text("target"), [TABLE], start)
        config = config.replace(
            "tables:\n", f"backfill: {{max_partitions_per_run: {args.per_run}}}\ntables:\n"
        )
        from sync_pipeline.config import SyncConfig

        if "catch_up" in SyncConfig.model_fields:  # declarative catch-up would launch runs of its own
            config = config.replace("tables:\n", "catch_up: {enabled: false}\ntables:\n")
        with deployment(work, dbs, config) as deploy:
            params = {"partitionNames": keys, "assetSelection": [{"path": ["sync", TABLE]}]}
            load_at_launch = os.getloadavg()[0]
            launched_at = time.time()
            launched = deploy.graphql(LAUNCH_BACKFILL, params=params)["launchPartitionBackfill"]
            if launched["__typename"] != "LaunchBackfillSuccess":
                raise RuntimeError(f"backfill not launched: {launched}")
            backfill_id = launched["backfillId"]
            log(f"backfill {backfill_id}: {len(keys)} partitions")

            def finished() -> str | None:
                status: str = deploy.graphql(BACKFILL_STATUS, id=backfill_id)["partitionBackfillOrError"][
                    "status"
                ]
                return status if status in BACKFILL_DONE else None

            status = wait_for("the backfill", finished, args.timeout, deploy.check)
            load_at_end = os.getloadavg()[0]
            runs = deploy.graphql(RUNS_OF_BACKFILL, id=backfill_id)["partitionBackfillOrError"]["runs"]
            breakdown = run_breakdown(deploy.home, [r["runId"] for r in runs], launched_at)
        ends = [r["endTime"] for r in runs if r["endTime"]]
        seconds = max(ends) - launched_at
        source = window_counts(dbs.url_text("source"), [TABLE], start, args.hours)
        target = window_counts(dbs.url_text("target"), [TABLE], start, args.hours)
        result["floor"] = copy_floor(
            dbs.url_text("source"), dbs.url_text("target"), args.hours * args.rows_per_hour
        )
    result.update(
        {
            "status": status,
            "runs": len(runs),
            "runs_succeeded": sum(r["status"] == "SUCCESS" for r in runs),
            "seconds": round(seconds, 1),
            "partitions_per_minute": round(len(keys) / seconds * 60, 1),
            "targets_equal": source == target and all(n == args.rows_per_hour for n in source[TABLE]),
            "load_at_launch": round(load_at_launch, 1),
            "load_at_end": round(load_at_end, 1),
            "breakdown": breakdown,
        }
    )
    result["vs_copy"] = round(seconds / result["floor"]["copy_s"], 2)
    return result


def markdown(r: dict[str, Any]) -> str:
    b = r["breakdown"]

    def f(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    return "\n".join(
        [
            f"`{r['command']}` ({r['measured_at']}, {r['machine']}, Dagster {r['dagster']}, "
            f"PostgreSQL {r['postgresql']}; commit {r.get('commit')}"
            + (f" with {r['uncommitted']} files of sync_pipeline/ modified" if r.get("uncommitted") else "")
            + f"; load average {r['load_at_launch']} at launch, {r['load_at_end']} at the end)",
            "",
            "| hours x rows | runs | backfill s | partitions/min | run median s | run start -> step start s "
            "| per hour: interval / sync (of it plan) s | COPY of all rows s | backfill / COPY "
            "| target = source |",
            "|---|---|---|---|---|---|---|---|---|---|",
            f"| {r['hours']} x {r['rows_per_hour']:,}"
            + ("" if r.get("source_index") else " (source without an updated_at index)")
            + f" | {r['runs']} ({r['per_run']}/run) | {r['seconds']} "
            f"| **{r['partitions_per_minute']}** | {f(b['run_median_s'])} "
            f"| {f(b['run_start_to_step_start_median_s'])} "
            f"| {f(b['hour_interval_median_s'])} / {f(b['hour_sync_median_s'])} "
            f"({f(b.get('hour_plan_median_s'))} plan, {f(b.get('hour_plan_check_median_s'))} plan check) "
            f"| {r['floor']['copy_s']} | {r['vs_copy']}x | {r['targets_equal']} |",
            "",
            *(
                f"run {i + 1}, seconds after the launch: "
                + ", ".join(f"{k} {v}" for k, v in run.get("after_launch_s", {}).items())
                for i, run in enumerate(b["runs"])
            ),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hours", type=int, default=720, help="hourly partitions in the backfill")
    p.add_argument("--rows-per-hour", type=int, default=100)
    p.add_argument("--per-run", type=int, default=168, help="backfill.max_partitions_per_run")
    p.add_argument("--timeout", type=float, default=7200.0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--keep", action="store_true", help="keep the PostgreSQL databases")
    p.add_argument(
        "--source-index",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="index the source's updated_at (the default)",
    )
    args = p.parse_args(argv)
    shown = list(sys.argv[1:] if argv is None else argv)
    result = run(args, shlex.join([".venv/bin/python", "-m", "benchmarks.backfill", *shown]))
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"backfill_{args.hours}x{args.rows_per_hour}" + ("" if args.source_index else "_unindexed")
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))


if __name__ == "__main__":
    main()
