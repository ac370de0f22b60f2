"""Sensors that watch the syncs: missed hours, drift with its repair, failed runs. All alert.

The sensors run in the long-lived code server, so they only read Dagster's own event log and post
alerts; every database query (the drift comparison included) runs in a step process:

- ``freshness_sensor`` evaluates each table's ``partition_freshness`` check from the event log
  (every due hour of the horizon), records the result in the UI when it changes, and alerts once
  per gap of missed hours, naming them as ranges and what the catch-up will do about them, and
  once more when the gap is closed (the cursor keeps the open gaps).
- ``drift_sensor`` requests a ``drift_check`` run (the ``drift`` checks of every table, in step
  processes, each comparing the hours its rolling schedule says are due) at an interval when some
  table has an hour due (read from the event log and the configuration file, as the step will
  read them), unless a check or a repair is still queued or running. A run with nothing due would
  still cost a Dagster run and a step per table, about 1.2 CPU-s each: with the hours due at full
  hours, one run an hour instead of one per interval. Every drift evaluation, from that job or from any
  run that selected the asset's checks (a UI materialization, a backfill, the catch-up), is
  handled once: it alerts on every drifted partition and requests a full-row re-sync of exactly
  those partitions (one run per drift, by ``run_key``).
- ``unplaced_sensor`` reads each new materialization's ``unplaced_updated_at`` (source rows whose
  ``updated_at`` no hour holds, never synced), records the table's ``updated_at_placed`` check
  when that count changes, and alerts when it changes to one above zero: once for rows that stay
  (a number is counted by every hour's sync), again if more appear.
- ``sync_failure_sensor`` alerts when a run fails, with the tables whose steps failed, the
  partition, the first step's error and whether the catch-up will request the hour again.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetKey,
    AssetRecordsFilter,
    AssetSelection,
    DagsterEvent,
    DefaultSensorStatus,
    HourlyPartitionsDefinition,
    RunFailureSensorContext,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    define_asset_job,
    run_failure_sensor,
    sensor,
)

from sync_pipeline.alerts import Alert, AlertKind
from sync_pipeline.config import SyncConfig, TableConfig
from sync_pipeline.errors import SyncPipelineError
from sync_pipeline.orchestration.assets import COMPARE_TAG, REASON_TAG
from sync_pipeline.orchestration.catch_up import catch_up_note, next_retry
from sync_pipeline.orchestration.checks import (
    DRIFT_CHECK,
    FRESHNESS_CHECK,
    IN_SYNC_CHECK,
    UNPLACED_CHECK,
    drift_plan,
    evaluate_freshness,
    freshness_result,
    placement_result,
    unplaced_counts,
)
from sync_pipeline.orchestration.freshness import Freshness, collapse, describe, follow_gaps, parse_gaps
from sync_pipeline.orchestration.ranged import failed_hour
from sync_pipeline.orchestration.resources import AlertResource, SyncResource
from sync_pipeline.orchestration.schedules import IN_FLIGHT_STATUSES, PARTITION_TAG, AssetJob

DRIFT_JOB = "drift_check"
_RECENT_EVALUATIONS = 20  # per table and tick; far more than one drift interval produces
_MATERIALIZATIONS_PER_TICK = 200  # per table; a backfill's rest is read by the next ticks


@dataclass(frozen=True)
class WatchedTable:
    """What the sensors need of one table: its asset, partitions and the job that syncs it."""

    table: TableConfig
    key: AssetKey
    partitions: HourlyPartitionsDefinition
    job_name: str


def asset_link(config: SyncConfig, key: AssetKey, partition_key: str | None) -> str:
    """The asset's partition view in the Dagster UI."""
    url = f"{config.ui_url.rstrip('/')}/assets/{'/'.join(key.path)}?view=partitions"
    # Quoted: the key of a repeated DST hour (2026-10-25-02:00+0100) holds a "+", read as a space.
    return url + (f"&partition={quote(partition_key, safe=':')}" if partition_key else "")


def build_freshness_sensor(config: SyncConfig, tables: Sequence[WatchedTable]) -> SensorDefinition:
    status = DefaultSensorStatus.RUNNING if config.freshness.enabled else DefaultSensorStatus.STOPPED

    @sensor(
        name="freshness_sensor",
        minimum_interval_seconds=config.freshness.interval_seconds,
        default_status=status,
        description=(
            "Flags every due hour (hour + 1h + grace) of the last "
            f"{config.freshness.horizon_hours} hours that is not synced, in the partition_freshness "
            "check, and alerts once per gap (and once more when the gap is closed)."
        ),
    )
    def _freshness(context: SensorEvaluationContext, alerts: AlertResource) -> SensorResult:
        now = datetime.now(UTC)
        state = json.loads(context.cursor or "{}")
        reported: dict[str, object] = state.get("reported", {})
        gaps: dict[str, list[list[str]]] = {}
        events: list[AssetCheckEvaluation] = []
        for watched in tables:
            result = evaluate_freshness(context.instance, watched.key, watched.partitions, config, now)
            name = watched.table.name
            check = freshness_result(watched.key, result)
            # Recorded when what the check says changes, not at every tick.
            if check.description != reported.get(name):
                events.append(
                    AssetCheckEvaluation(
                        asset_key=watched.key,
                        check_name=FRESHNESS_CHECK,
                        passed=check.passed,
                        severity=AssetCheckSeverity.ERROR,
                        description=check.description,
                        metadata=check.metadata,
                    )
                )
                reported[name] = check.description
            synced = context.instance.get_materialized_partitions(watched.key)
            change = follow_gaps(parse_gaps(state, name), result, synced)
            if change.new:
                alerts.send(_missed_alert(config, watched, change.new, result, now), context.log)
            for closed in change.closed:
                alerts.send(_recovered_alert(config, watched, closed, now), context.log)
            if change.gaps:
                gaps[name] = change.gaps
        return SensorResult(asset_events=events, cursor=json.dumps({"gaps": gaps, "reported": reported}))

    return _freshness


def _missed_alert(
    config: SyncConfig, watched: WatchedTable, hours: Sequence[str], status: Freshness, now: datetime
) -> Alert:
    """One alert for a new gap, however many hours it holds, naming them and what happens next."""
    name = watched.table.name
    ranges = describe(collapse(hours, watched.partitions))
    deadline = watched.partitions.time_window_for_partition_key(hours[-1]).end.astimezone(UTC)
    deadline += timedelta(minutes=config.freshness.grace_minutes)
    return Alert(
        kind=AlertKind.MISSED_SYNC,
        table=name,
        partition_key=hours[0],
        summary=(
            f"Missed sync: {name} has {len(hours)} due hours not synced: {ranges}; "
            + catch_up_note(config, watched.partitions, hours, now)
        ),
        facts={
            "hours": ranges,
            "missing_hours": len(hours),
            "missing_in_horizon": len(status.missing),
            "deadline": deadline.isoformat(),
            "grace_minutes": config.freshness.grace_minutes,
        },
        link=asset_link(config, watched.key, hours[0]),
        occurred_at=now,
    )


def _recovered_alert(config: SyncConfig, watched: WatchedTable, hours: Sequence[str], now: datetime) -> Alert:
    name = watched.table.name
    ranges = describe(collapse(hours, watched.partitions))
    return Alert(
        kind=AlertKind.RECOVERED,
        table=name,
        partition_key=hours[0],
        summary=f"Recovered: {name} has synced every hour of its gap {ranges}",
        facts={"hours": ranges, "missing_hours": len(hours)},
        link=asset_link(config, watched.key, hours[0]),
        occurred_at=now,
    )


def build_drift_job(drift_checks: Sequence[AssetChecksDefinition]) -> AssetJob:
    """The ``drift`` checks of every table: each table's comparison in its own step process."""
    return define_asset_job(
        DRIFT_JOB,
        selection=AssetSelection.checks(*drift_checks),
        description="Compare recent synced partitions of every table with the source, every column.",
    )


def build_drift_sensor(
    config: SyncConfig,
    tables: Sequence[WatchedTable],
    drift_job: AssetJob,
    sync_jobs: Sequence[AssetJob],
) -> SensorDefinition:
    status = DefaultSensorStatus.RUNNING if config.drift.enabled else DefaultSensorStatus.STOPPED

    @sensor(
        name="drift_sensor",
        minimum_interval_seconds=config.drift.interval_seconds,
        default_status=status,
        jobs=[drift_job, *sync_jobs],
        description=(
            f"Every {config.drift.interval_seconds}s, when the rolling schedule says some synced hours "
            f"of the last {config.drift.lookback_hours} are due: compare them (at most "
            f"{config.drift.max_partitions_per_run} a table) with the source; alert on drift and "
            "re-sync exactly the drifted partitions."
        ),
    )
    def _drift(context: SensorEvaluationContext, alerts: AlertResource, sync: SyncResource) -> SensorResult:
        now = datetime.now(UTC)
        state = json.loads(context.cursor or "{}")
        # Evaluations already handled, by table: the storage ids of the recent ones (older cursors
        # held run ids; they name no evaluation and are dropped).
        handled: dict[str, list[int]] = state if isinstance(state, dict) else {}
        seen: dict[str, list[int]] = {}
        requests: list[RunRequest] = []
        for watched in tables:
            name, key = watched.table.name, watched.key
            done = set(handled.get(name, []))
            # Every drift evaluation, whichever run made it: the drift_check job's, and the runs
            # that select the asset's checks too (a UI materialization, a backfill, the catch-up).
            evaluations = _recent_drift_evaluations(context, key)
            seen[name] = [record_id for record_id, _, _ in evaluations]
            repair_checks = [AssetCheckKey(key, IN_SYNC_CHECK)] if watched.table.verify else []
            for record_id, run_id, drifted in reversed(evaluations):
                if record_id in done:
                    continue
                for partition_key, rows in drifted.items():
                    alerts.send(
                        Alert(
                            kind=AlertKind.DRIFT,
                            table=name,
                            partition_key=partition_key,
                            summary=(
                                f"Drift in {name} partition {partition_key}: {rows} rows "
                                "differ between source and target; a re-sync has been requested"
                            ),
                            facts={"rows_differing": rows, "check_run_id": run_id},
                            link=asset_link(config, key, partition_key),
                            occurred_at=now,
                        ),
                        context.log,
                    )
                    requests.append(
                        RunRequest(
                            run_key=f"drift-repair:{name}:{partition_key}:{run_id}",
                            job_name=watched.job_name,
                            partition_key=partition_key,
                            asset_selection=[key],
                            # Without an explicit check selection Dagster would run every check of
                            # the asset (drift, freshness) in the repair run.
                            asset_check_keys=repair_checks,
                            tags={COMPARE_TAG: "row", REASON_TAG: "drift"},
                        )
                    )
        # A check started before a repair has finished would find the same drift again, alert twice
        # and request a second repair: no new check while one is in flight (queued counts) or repairs
        # are, nor in the tick that requests repairs (their runs do not exist yet).
        in_flight = [
            RunsFilter(job_name=DRIFT_JOB, statuses=IN_FLIGHT_STATUSES),
            RunsFilter(tags={REASON_TAG: "drift"}, statuses=IN_FLIGHT_STATUSES),
        ]
        busy = bool(requests) or any(context.instance.get_run_records(f, limit=1) for f in in_flight)
        if not busy and _any_hour_due(context, _current_config(context, sync, config), tables, now):
            requests.append(RunRequest(run_key=f"drift-check:{now.isoformat()}", job_name=DRIFT_JOB))
        return SensorResult(run_requests=requests, cursor=json.dumps(seen))

    return _drift


def _current_config(context: SensorEvaluationContext, sync: SyncResource, loaded: SyncConfig) -> SyncConfig:
    """The configuration file as the drift check's step reads it (its milestones may have changed
    since the code location loaded it); the loaded one if the file cannot be read now."""
    try:
        return sync.load()
    except SyncPipelineError as error:
        context.log.warning(
            f"drift schedule: the configuration cannot be read, the loaded one is used: {error}"
        )
        return loaded


def _any_hour_due(
    context: SensorEvaluationContext, config: SyncConfig, tables: Sequence[WatchedTable], now: datetime
) -> bool:
    """Whether a drift check run now would compare any hour of any table (the event log alone)."""
    return any(drift_plan(context.instance, w.key, w.partitions, config, now)[0].compare for w in tables)


def _recent_drift_evaluations(
    context: SensorEvaluationContext, key: AssetKey
) -> list[tuple[int, str, dict[str, int]]]:
    """(storage id, run id, drifted partition -> rows) of a table's recent drift evaluations, newest first."""
    found = []
    records = context.instance.event_log_storage.get_asset_check_execution_history(
        AssetCheckKey(key, DRIFT_CHECK), limit=_RECENT_EVALUATIONS
    )
    for record in records:
        event = record.event.dagster_event if record.event else None
        evaluation = event.event_specific_data if event else None
        if not isinstance(evaluation, AssetCheckEvaluation):
            continue  # planned, not evaluated yet: handled once it is
        drifted = None if evaluation.passed else evaluation.metadata.get("drifted_partitions")
        value = getattr(drifted, "value", None) or getattr(drifted, "data", None)
        partitions = {str(k): int(v) for k, v in value.items()} if isinstance(value, dict) else {}
        found.append((record.id, record.run_id, partitions))
    return found


def build_unplaced_sensor(config: SyncConfig, tables: Sequence[WatchedTable]) -> SensorDefinition:
    @sensor(
        name="unplaced_sensor",
        minimum_interval_seconds=config.freshness.interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            "Records the updated_at_placed check from each new sync's unplaced_updated_at count (source "
            "rows no hour holds, never synced) when it changes, and alerts when it rises above zero."
        ),
    )
    def _unplaced(context: SensorEvaluationContext, alerts: AlertResource) -> SensorResult:
        state = json.loads(context.cursor or "{}")
        # Per table: the storage id of the last materialization read, and the count last recorded.
        after: dict[str, int] = state.get("after", {})
        reported: dict[str, int] = state.get("reported", {})
        events: list[AssetCheckEvaluation] = []
        now = datetime.now(UTC)
        for watched in tables:
            name, key = watched.table.name, watched.key
            records = context.instance.fetch_materializations(
                AssetRecordsFilter(asset_key=key, after_storage_id=after.get(name)),
                limit=_MATERIALIZATIONS_PER_TICK,
                ascending=True,
            ).records
            for record in records:
                after[name] = record.storage_id
                materialization = record.asset_materialization
                if materialization is None:
                    continue
                unplaced, null = unplaced_counts(materialization)
                if unplaced == reported.get(name, 0):
                    continue
                reported[name] = unplaced
                check = placement_result(key, record.partition_key, unplaced, null)
                events.append(
                    AssetCheckEvaluation(
                        asset_key=key,
                        check_name=UNPLACED_CHECK,
                        passed=check.passed,
                        severity=AssetCheckSeverity.WARN,
                        description=check.description,
                        metadata=check.metadata,
                    )
                )
                if unplaced:
                    alerts.send(
                        _unplaced_alert(config, watched, record.partition_key, unplaced, null, now),
                        context.log,
                    )
        return SensorResult(asset_events=events, cursor=json.dumps({"after": after, "reported": reported}))

    return _unplaced


def _unplaced_alert(
    config: SyncConfig,
    watched: WatchedTable,
    partition_key: str | None,
    unplaced: int,
    null: int,
    now: datetime,
) -> Alert:
    name = watched.table.name
    where = f" (sync of partition {partition_key})" if partition_key else ""
    return Alert(
        kind=AlertKind.UNPLACED_ROWS,
        table=name,
        partition_key=partition_key,
        summary=(
            f"Unplaced rows: {unplaced} rows of {name} have an updated_at that no hour holds{where}, so "
            "they are not synced: a number, or text with a UTC offset other than +00:00; store it as "
            "UTC text or a wall time in naive_timezone"
        ),
        facts={"unplaced_updated_at": unplaced, "null_updated_at": null},
        link=asset_link(config, watched.key, partition_key),
        occurred_at=now,
    )


def build_failure_sensor(config: SyncConfig, tables: Sequence[WatchedTable]) -> SensorDefinition:
    names = {w.key: w.table.name for w in tables}
    by_name = {w.table.name: w for w in tables}
    # Step keys of each table: its sync step and its checks' steps (<asset>_<check name>).
    steps: dict[str, str] = {}
    for w in tables:
        for suffix in ("", f"_{DRIFT_CHECK}", f"_{FRESHNESS_CHECK}", f"_{UNPLACED_CHECK}"):
            steps[w.key.to_python_identifier() + suffix] = w.table.name

    @run_failure_sensor(
        name="sync_failure_sensor",
        default_status=DefaultSensorStatus.RUNNING,
        description="Alerts when a run of this code location fails: table, partition and error.",
    )
    def _failed(context: RunFailureSensorContext, alerts: AlertResource) -> None:
        run = context.dagster_run
        failures = context.get_step_failure_events()
        # The tables whose steps failed (a scheduled run has no asset selection), else those selected.
        tables_in_run = sorted({steps[e.step_key] for e in failures if e.step_key in steps}) or [
            names[k] for k in (run.asset_selection or ()) if k in names
        ]
        tables_in_run = tables_in_run or [run.job_name]
        # A ranged backfill run has no partition tag: the hour its step failed at stands for it.
        partition_key = run.tags.get(PARTITION_TAG) or failed_hour(run, failures)
        # The run's own message only says which steps failed; the first step's error says why.
        reason = _step_error(failures[0]) if failures else context.failure_event.message
        error = ((reason or "").strip() or "run failed").splitlines()[0][:500]
        subject = ", ".join(sorted(tables_in_run))
        now = datetime.now(UTC)
        facts: dict[str, str | int] = {"run_id": run.run_id, "job": run.job_name, "error": error}
        summary = (
            f"Run failure: sync of {subject}"
            + (f" partition {partition_key}" if partition_key else "")
            + f" failed: {error}"
        )
        failed_tables = [by_name[t] for t in tables_in_run if t in by_name]
        if partition_key and failed_tables:
            # The step's own retries are spent; say whether the catch-up will try the hour again, and when.
            failed = failed_tables[0]
            retry = next_retry(context.instance, failed.key, failed.partitions, partition_key, config)
            facts["catch_up"] = catch_up_note(config, failed.partitions, [partition_key], now, retry)
            summary += f"; {facts['catch_up']}"
        alerts.send(
            Alert(
                kind=AlertKind.RUN_FAILURE,
                table=subject,
                partition_key=partition_key,
                summary=summary,
                facts=facts,
                link=f"{config.ui_url.rstrip('/')}/runs/{run.run_id}",
                occurred_at=now,
            ),
            context.log,
        )

    return _failed


def _step_error(event: DagsterEvent) -> str | None:
    """Why a step failed: the description of a ``Failure``, else the error (past a retry wrapper)."""
    data = event.step_failure_data
    if data.user_failure_data is not None and data.user_failure_data.description:
        return data.user_failure_data.description
    error = data.error
    if error is None:
        return None
    # After the retry policy gives up the error is "Exceeded max_retries of N"; its cause says why.
    while error.cause is not None and error.message.startswith("Exceeded max_retries"):
        error = error.cause
    return error.message
