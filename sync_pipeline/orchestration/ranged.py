"""Ranged runs: a backfill step that syncs many hours of one table, each hour in a process of its own.

A backfill of a year is 8,760 hours; one Dagster run per hour spends seconds per hour launching runs
and step processes. With the asset's ``BackfillPolicy`` (``backfill.max_partitions_per_run``) the
backfill daemon launches one run per block of hours instead, and its step lands here with a range of
partition keys. The step keeps every promise of a single-hour run:

- hours are synced oldest first, each by the engine's ``sync_partition`` in its own transaction
  under its own lock;
- each hour runs in a fresh child process (SPEC 5: a sync never accumulates memory in a long-lived
  process), started by a forkserver that has preloaded the engine, so a child costs a fork rather
  than an interpreter start; the step process itself opens no database connection;
- each hour is materialized, with its own metadata, as soon as it commits, so a failure in hour k
  leaves the hours before k materialized and fails the step naming k; a retry of the step, or a
  re-execution of the run, skips the hours its run group already materialized;
- the ``in_sync`` check reports once per run, naming every hour that differs.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import UTC
from typing import Any, Final, Literal, TypeVar

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    DagsterEvent,
    DagsterEventType,
    DagsterRun,
    Failure,
    HourlyPartitionsDefinition,
    MetadataValue,
)

from sync_pipeline.engine.diff.stats import SyncStats
from sync_pipeline.engine.diff.window import Window
from sync_pipeline.engine.sync import Compare
from sync_pipeline.engine.verify import Verification
from sync_pipeline.errors import TerminalError
from sync_pipeline.orchestration.checks import IN_SYNC_CHECK
from sync_pipeline.orchestration.resources import SyncResource

__all__ = [
    "HOUR_PRELOAD_MODULES",
    "RANGE_END_TAG",
    "RANGE_START_TAG",
    "HourResult",
    "covers",
    "failed_hour",
    "run_range",
    "sync_hours",
]

# The tags Dagster's backfill daemon puts on a ranged run (its constants are private).
RANGE_START_TAG: Final = "dagster/asset_partition_range_start"
RANGE_END_TAG: Final = "dagster/asset_partition_range_end"

# Not "fork": a fresh process per task (max_tasks_per_child) needs a start method that execs or forkservers.
StartMethod = Literal["forkserver", "spawn"]
T = TypeVar("T")

# What an hour's child needs, imported once by the forkserver so that each child is a cheap fork of
# a warm interpreter: the engine, its drivers and the resource that reads the configuration file.
HOUR_PRELOAD_MODULES: Final = [
    "sync_pipeline.orchestration.resources",
    "sync_pipeline.engine.sync",
    "sync_pipeline.engine.verify",
    "psycopg",
    "pymysql",
]


@dataclass(frozen=True)
class HourResult:
    """What an hour's child process sends back."""

    stats: SyncStats
    pid: int  # the child that synced the hour (metadata ``sync_pid``)


def _sync_hour(config_path: str, table: str, window: Window, compare: Compare) -> HourResult:
    """The body of an hour's child process: sync the window."""
    stats = SyncResource(config_path=config_path).sync(table, window, compare=compare)
    return HourResult(stats, os.getpid())


def _verify(config_path: str, table: str, window: Window) -> Verification:
    """The body of a verification's child process: compare every column of the window's rows."""
    return SyncResource(config_path=config_path).verify(table, window)


def run_range(run: DagsterRun) -> tuple[str, str] | None:
    """The (first, last) partition keys of a ranged run, or ``None`` for a run of one partition."""
    start, end = run.tags.get(RANGE_START_TAG), run.tags.get(RANGE_END_TAG)
    return (start, end) if start and end else None


def covers(run: DagsterRun, partitions: HourlyPartitionsDefinition, partition_key: str) -> bool:
    """Whether ``run`` syncs ``partition_key``: as its one partition, or inside its range."""
    if run.tags.get("dagster/partition") == partition_key:
        return True
    bounds = run_range(run)
    if bounds is None:
        return False
    first, last = (partitions.time_window_for_partition_key(k).start for k in bounds)
    return first <= partitions.time_window_for_partition_key(partition_key).start <= last


def _window(partitions: HourlyPartitionsDefinition, key: str) -> Window:
    hour = partitions.time_window_for_partition_key(key)
    # Bounds in UTC: in the partition zone they compare as wall times, fold ignored (see assets).
    return Window(hour.start.astimezone(UTC), hour.end.astimezone(UTC))


class _InThisProcess(Executor):
    """Runs each call at once, in this process: where no child process may be started."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(error)
        return future


def _hour_processes(context: AssetExecutionContext, start_method: StartMethod) -> Executor:
    """A fresh process for each hour: one worker that exits after each task, none accumulates.

    A daemonic process may not start children (Python refuses): a Celery worker's pool process is
    one. There, which only a ranged run launched by hand can reach (Celery deployments get no ranged
    backfill policy), the hours run in the step's own process, one after the other.
    """
    if multiprocessing.current_process().daemon:
        context.log.warning("this step runs in a daemonic process: its hours sync in this process")
        return _InThisProcess()
    ctx = multiprocessing.get_context(start_method)
    if start_method == "forkserver":
        ctx.set_forkserver_preload(HOUR_PRELOAD_MODULES)
    return ProcessPoolExecutor(max_workers=1, mp_context=ctx, max_tasks_per_child=1)


def _done_in_run_group(context: AssetExecutionContext, key: AssetKey, wanted: set[str]) -> set[str]:
    """Hours of ``wanted`` that this run, or an earlier run of its group, already materialized.

    A retried step and a re-executed run see the same range again; the hours that committed before
    the failure are not synced a second time.
    """
    run = context.run
    run_ids = {run.run_id}
    if run.root_run_id is not None:
        # The re-executions of one run share its root: the group holds every attempt at this range.
        group = context.instance.get_run_group(run.run_id)
        run_ids.update(r.run_id for r in (group[1] if group else ()))
    done: set[str] = set()
    for run_id in run_ids:
        for entry in context.instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION):
            event = entry.dagster_event
            if event is not None and event.asset_key == key and event.partition in wanted:
                done.add(event.partition)
    return done


def sync_hours(
    context: AssetExecutionContext,
    sync: SyncResource,
    table: str,
    key: AssetKey,
    partitions: HourlyPartitionsDefinition,
    *,
    compare: Compare,
    verify: bool,
    start_method: StartMethod = "forkserver",
    metadata_of: Callable[[SyncStats], dict[str, Any]],
) -> Iterator[AssetMaterialization | AssetCheckResult]:
    """Sync every hour of the step's partition range, oldest first, one child process per hour.

    Yields each hour's materialization as soon as it has committed, then one ``in_sync`` result.
    A failing hour ends the step with a ``Failure`` naming it (terminal errors without retry).
    """
    keys = sorted(context.partition_keys, key=lambda k: partitions.time_window_for_partition_key(k).start)
    done = _done_in_run_group(context, key, set(keys))
    todo = [k for k in keys if k not in done]
    context.log.info(
        f"{table}: {len(keys)} hours {keys[0]} .. {keys[-1]}; {len(todo)} to sync"
        + (f", {len(done)} already materialized by this run group" if done else "")
    )
    failure: Failure | None = None
    failed_at = len(keys)
    with _hour_processes(context, start_method) as pool:
        for partition_key in todo:
            window = _window(partitions, partition_key)
            try:
                result = pool.submit(_sync_hour, sync.config_path, table, window, compare).result()
            except TerminalError as error:
                failure = _hour_failure(table, partition_key, str(error), retry=False)
            except BrokenProcessPool as error:
                # The child died (killed, out of memory): its transaction rolled back with it.
                failure = _hour_failure(table, partition_key, f"its process died ({error})", retry=True)
            except Exception as error:  # noqa: BLE001 - any error of an hour fails the step naming it
                # Transient (a lost connection, a lock timeout) or unforeseen: the retry policy runs
                # the step again, and it starts at this hour.
                failure = _hour_failure(table, partition_key, f"{type(error).__name__}: {error}", retry=True)
            if failure is not None:
                failed_at = keys.index(partition_key)
                break
            stats = result.stats
            context.log.info(
                f"{table} {partition_key}: {stats.inserted} inserted, {stats.updated} updated, "
                f"{stats.deleted} deleted, {stats.unchanged} unchanged "
                f"in {stats.timings.get('total', 0):.2f}s"
            )
            metadata = {**metadata_of(stats), "sync_pid": result.pid}
            yield AssetMaterialization(asset_key=key, partition=partition_key, metadata=metadata)
        if verify and failed_at:
            yield _in_sync_result(
                pool, sync.config_path, table, [(k, _window(partitions, k)) for k in keys[:failed_at]]
            )
    if failure is not None:
        raise failure


def _hour_failure(table: str, partition_key: str, reason: str, *, retry: bool) -> Failure:
    return Failure(
        description=f"sync of {table} partition {partition_key} failed: {reason}",
        metadata={"partition_key": partition_key, "table": table},
        allow_retries=retry,
    )


def _in_sync_result(
    pool: Executor, config_path: str, table: str, hours: list[tuple[str, Window]]
) -> AssetCheckResult:
    """One ``in_sync`` result for the hours a run has materialized.

    The hours are one contiguous span, compared at once (one plan, one count and hash per key range
    over the span, in a child process); only when it differs is each hour compared, to name them.
    """
    span = Window(hours[0][1].start, hours[-1][1].end)
    whole = pool.submit(_verify, config_path, table, span).result()
    differing: dict[str, int] = {}
    if not whole.in_sync:
        for partition_key, window in hours:
            hour = pool.submit(_verify, config_path, table, window).result()
            if not hour.in_sync:
                differing[partition_key] = hour.rows_differing
    return AssetCheckResult(
        check_name=IN_SYNC_CHECK,
        passed=whole.in_sync,
        severity=AssetCheckSeverity.ERROR,
        description=(
            f"source and target rows are equal in all {len(hours)} hours {hours[0][0]} .. {hours[-1][0]}"
            if whole.in_sync
            else f"{len(differing)} of {len(hours)} hours differ: "
            + ", ".join(f"{k} ({n} rows)" for k, n in differing.items())
        ),
        metadata={
            "hours_verified": len(hours),
            "hours_differing": MetadataValue.json(differing),
            "rows_differing": whole.rows_differing,
            "source_rows": whole.source_rows,
            "target_rows": whole.target_rows,
            "seconds": round(whole.seconds, 3),
        },
    )


def failed_hour(run: DagsterRun, failures: Sequence[DagsterEvent]) -> str | None:
    """The hour a ranged run failed at, as its step's ``Failure`` names it (``None`` for other runs)."""
    if run_range(run) is None:
        return None
    for event in failures:
        data = event.step_failure_data.user_failure_data
        value = data.metadata.get("partition_key") if data is not None else None
        if value is not None:
            return str(getattr(value, "value", value))
    return None
