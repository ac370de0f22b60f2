"""Ranged runs: a backfill step that syncs many hours of one table, each hour in a process of its own.

A backfill of a year is 8,760 hours; one Dagster run per hour spends seconds per hour launching runs
and step processes. With the asset's ``BackfillPolicy`` (``backfill.max_partitions_per_run``) the
backfill daemon launches one run per block of hours instead, and its step lands here with a range of
partition keys. The step keeps every promise of a single-hour run:

- hours are synced oldest first, each by the engine's ``sync_partition`` in its own transaction
  under its own lock;
- each hour runs in a fresh process of its own (SPEC 5: a sync never accumulates memory in a
  long-lived process); the step process itself opens no database connection;
- the tables are planned (reflected, checked) once per run, not once per hour;
- each hour is materialized, with its own metadata, as soon as it commits, so a failure in hour k
  leaves the hours before k materialized and fails the step naming k; a retry of the step, or a
  re-execution of the run, skips the hours its run group already materialized;
- the ``in_sync`` check reports once per run, naming every hour that differs.

How the processes are laid out, and why (:mod:`~sync_pipeline.orchestration.hours`): the step
starts one *planner* process per run, from a forkserver that imports the engine but not Dagster. The
planner plans the table once and, for each hour, forks a child that inherits the plan and the
engines, syncs the hour on fresh connections, sends its stats back and exits. Two other layouts were
weighed: a picklable plan sent to a fresh forkserver child per hour costs the same fork but also an
unpickling of the reflected tables, a cold SQLAlchemy statement cache and a cold dialect in every
hour (the compile of the reflection queries alone is 13-40 ms), and every field a plan ever gains
would have to pickle; dynamic steps cost a step process per hour, seconds each. Profiled on 100-row
hours at load 8-9: an hour was 0.69 s in its own forkserver child planning for itself (0.47 of it the
plan), 0.21 s forked from the planner (0.06 of it checking the plan).

A plan is checked at the start of every hour (one catalog query a side, against the columns and
primary keys it was made from): a table altered during the run makes the hour raise
:class:`~sync_pipeline.errors.PlanOutdated`, and the planner plans again and tries that hour once
more, as the hour would have planned by itself; a table that changes again fails the hour naming it.
Hours after a plan that added columns to the target compare whole rows, as that plan's hour does.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
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
    MetadataValue,
    TimeWindowPartitionsDefinition,
)
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)

from sync_pipeline.engine.diff.stats import SyncStats
from sync_pipeline.engine.diff.window import Window
from sync_pipeline.engine.sync import Compare
from sync_pipeline.engine.verify import Verification
from sync_pipeline.errors import TerminalError
from sync_pipeline.orchestration.checks import IN_SYNC_CHECK
from sync_pipeline.orchestration.hours import (
    PLANNER_PRELOAD_MODULES,
    HourProcessDied,
    HourResult,
    sync_hour,
    verify_hours,
)
from sync_pipeline.orchestration.resources import SyncResource

__all__ = [
    "RANGE_END_TAG",
    "RANGE_START_TAG",
    "covers",
    "failed_hour",
    "run_range",
    "sync_hours",
]

# The tags Dagster's backfill daemon puts on a ranged run. Dagster's own constants, from a module it
# does not export: an upgrade that renames the tags fails this import rather than every ranged run.
RANGE_START_TAG: Final = ASSET_PARTITION_RANGE_START_TAG
RANGE_END_TAG: Final = ASSET_PARTITION_RANGE_END_TAG

# How the run's planner process starts. Not "fork": the step process runs threads (Dagster's).
StartMethod = Literal["forkserver", "spawn"]
T = TypeVar("T")


def _sync_hour_here(config_path: str, table: str, window: Window, compare: Compare) -> HourResult:
    """An hour synced (and planned) in this process, where no child process may be started."""
    stats = SyncResource(config_path=config_path).sync(table, window, compare=compare)
    return HourResult(stats, os.getpid())


def _verify_here(config_path: str, table: str, window: Window) -> Verification:
    return SyncResource(config_path=config_path).verify(table, window)


def run_range(run: DagsterRun) -> tuple[str, str] | None:
    """The (first, last) partition keys of a ranged run, or ``None`` for a run of one partition."""
    start, end = run.tags.get(RANGE_START_TAG), run.tags.get(RANGE_END_TAG)
    return (start, end) if start and end else None


def covers(run: DagsterRun, partitions: TimeWindowPartitionsDefinition, partition_key: str) -> bool:
    """Whether ``run`` syncs ``partition_key``: as its one partition, or inside its range."""
    if run.tags.get(PARTITION_NAME_TAG) == partition_key:
        return True
    bounds = run_range(run)
    if bounds is None:
        return False
    first, last = (partitions.time_window_for_partition_key(k).start for k in bounds)
    return first <= partitions.time_window_for_partition_key(partition_key).start <= last


def _window(partitions: TimeWindowPartitionsDefinition, key: str) -> Window:
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


def _hour_processes(
    context: AssetExecutionContext, start_method: StartMethod
) -> tuple[
    Executor, Callable[[str, str, Window, Compare], HourResult], Callable[[str, str, Window], Verification]
]:
    """The run's planner process, and what syncs (and verifies) an hour through it, in a fork.

    A daemonic process may not start children (Python refuses): a Celery worker's pool process is
    one. There, which only a ranged run launched by hand can reach (Celery deployments get no ranged
    backfill policy), the hours run in the step's own process, one after the other, each planned.
    """
    if multiprocessing.current_process().daemon:
        context.log.warning("this step runs in a daemonic process: its hours sync in this process")
        return _InThisProcess(), _sync_hour_here, _verify_here
    ctx = multiprocessing.get_context(start_method)
    if start_method == "forkserver":
        ctx.set_forkserver_preload(PLANNER_PRELOAD_MODULES)
    return ProcessPoolExecutor(max_workers=1, mp_context=ctx), sync_hour, verify_hours


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
    partitions: TimeWindowPartitionsDefinition,
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
    broken = False  # the planner process died: its pool takes no more work
    totals: Counter[str] = Counter()
    synced = 0
    executor, sync_hour, verify_hour = _hour_processes(context, start_method)
    with executor as pool:
        for partition_key in todo:
            window = _window(partitions, partition_key)
            try:
                result = pool.submit(sync_hour, sync.config_path, table, window, compare).result()
            except TerminalError as error:
                failure = _hour_failure(table, partition_key, str(error), retry=False)
            except (BrokenProcessPool, HourProcessDied) as error:
                # The child died (killed, out of memory): its transaction rolled back with it. When
                # the planner died instead, the hour's process may still finish and commit: whole
                # either way, and unmaterialized, so the retry syncs it again.
                failure = _hour_failure(table, partition_key, f"its process died ({error})", retry=True)
                broken = isinstance(error, BrokenProcessPool)
            except Exception as error:  # noqa: BLE001 - any error of an hour fails the step naming it
                # Transient (a lost connection, a lock timeout) or unforeseen: the retry policy runs
                # the step again, and it starts at this hour.
                failure = _hour_failure(table, partition_key, f"{type(error).__name__}: {error}", retry=True)
            if failure is not None:
                failed_at = keys.index(partition_key)
                break
            stats = result.stats
            if result.planned_seconds is not None:
                context.log.info(
                    f"{table}: planned the tables for this run in {result.planned_seconds:.2f}s "
                    f"(at {partition_key}); its hours reuse the plan"
                )
            # Each hour's counts are in its materialization; no log line of its own (each event is
            # a write to the instance's storage, and it would double them), one summary at the end.
            totals.update(inserted=stats.inserted, updated=stats.updated, deleted=stats.deleted)
            synced += 1
            metadata = {**metadata_of(stats), "sync_pid": result.pid}
            yield AssetMaterialization(asset_key=key, partition=partition_key, metadata=metadata)
        if synced:
            context.log.info(
                f"{table}: {synced} hours synced: {totals['inserted']} rows inserted, "
                f"{totals['updated']} updated, {totals['deleted']} deleted (each hour's counts are "
                "in its materialization)"
            )
        if verify and failed_at:
            checked = [(k, _window(partitions, k)) for k in keys[:failed_at]]
            try:
                if broken:
                    # A broken pool would fail the check, and the step with it, without naming the
                    # hour: the hours that committed are compared by a fresh planner.
                    with _hour_processes(context, start_method)[0] as fresh:
                        result_of_check = _in_sync_result(
                            fresh, verify_hour, sync.config_path, table, checked
                        )
                else:
                    result_of_check = _in_sync_result(pool, verify_hour, sync.config_path, table, checked)
            except Exception as error:
                if failure is None:
                    raise
                # The hour's failure is what the step reports; a check that cannot run now runs
                # with the retry.
                context.log.warning(
                    f"{table}: in_sync of the hours before {keys[failed_at]} not checked: {error}"
                )
            else:
                yield result_of_check
    if failure is not None:
        raise failure


def _hour_failure(table: str, partition_key: str, reason: str, *, retry: bool) -> Failure:
    return Failure(
        description=f"sync of {table} partition {partition_key} failed: {reason}",
        metadata={"partition_key": partition_key, "table": table},
        allow_retries=retry,
    )


def _in_sync_result(
    pool: Executor,
    verify: Callable[[str, str, Window], Verification],
    config_path: str,
    table: str,
    hours: list[tuple[str, Window]],
) -> AssetCheckResult:
    """One ``in_sync`` result for the hours a run has materialized.

    The hours are one contiguous span, compared at once (one plan, one count and hash per key range
    over the span, in a child process); only when it differs is each hour compared, to name them.
    """
    span = Window(hours[0][1].start, hours[-1][1].end)
    whole = pool.submit(verify, config_path, table, span).result()
    differing: dict[str, int] = {}
    if not whole.in_sync:
        for partition_key, window in hours:
            hour = pool.submit(verify, config_path, table, window).result()
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
