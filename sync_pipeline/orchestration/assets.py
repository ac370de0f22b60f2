"""The asset factory: one hourly-partitioned asset per configured table.

One asset per table (not one multi-asset) gives every table its own step, process, retry and
concurrency pool. The asset body is thin: it turns the partition into a window, asks the
:class:`~sync_pipeline.orchestration.resources.SyncResource` to sync it, and turns the stats into metadata.
"""

import hashlib
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, timedelta
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetsDefinition,
    BackfillPolicy,
    Backoff,
    BetaWarning,
    Failure,
    HourlyPartitionsDefinition,
    Jitter,
    MaterializeResult,
    MetadataValue,
    RetryPolicy,
    TableColumn,
    TableSchema,
    asset,
)

from sync_pipeline.config import RetryConfig, SyncConfig, TableConfig
from sync_pipeline.engine.diff.stats import HEADLINE_COUNTS, SyncStats
from sync_pipeline.engine.diff.window import PARTITION_KEY_FORMAT, Window
from sync_pipeline.engine.sync import Compare
from sync_pipeline.engine.verify import Verification
from sync_pipeline.errors import TerminalError
from sync_pipeline.orchestration.checks import IN_SYNC_CHECK, in_sync_spec
from sync_pipeline.orchestration.ranged import sync_hours
from sync_pipeline.orchestration.resources import SyncResource

ASSET_PREFIX = "sync"
LOOKBACK_TAG = "sync_pipeline/lookback_hours"
COMPARE_TAG = "sync_pipeline/compare"  # "row": compare every column (drift repair), not updated_at
REASON_TAG = "sync_pipeline/reason"  # why a run was requested (drift)
TABLE_TAG = "sync_pipeline/table"

# Stats that become materialization metadata (SPEC section 3 requires the headline six).
METADATA_COUNTS = (
    *HEADLINE_COUNTS,
    "null_updated_at",
    "unplaced_updated_at",
    "moved_in",
    "moved_out",
    "skipped_newer",
    "kept_deleted",
    "rows_fetched",
    "keys_scanned",
    "ranges_compared",
    "ranges_streamed",
    "rows_streamed",
    "rows_direct",
    "ranges_dense",
    "rows_dense",
)


# Transient failures (connection lost, deadlock, lock timeout) are retried with backoff; terminal
# ones (config, schema, data) raise Failure(allow_retries=False) and fail at once.
def sync_retry_policy(settings: RetryConfig) -> RetryPolicy:
    """Dagster's retry policy for a sync step: exponential backoff with jitter (``retry:`` in the config)."""
    return RetryPolicy(
        max_retries=settings.max_retries,
        delay=settings.delay_seconds,
        backoff=Backoff.EXPONENTIAL,
        jitter=Jitter.PLUS_MINUS,
    )


ENGINE_KINDS = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql", "sqlite": "sqlite"}


def asset_key(table: TableConfig) -> AssetKey:
    return AssetKey([ASSET_PREFIX, table.name])


def pool_name(table: TableConfig) -> str:
    """The concurrency pool of a table: limited to one step at a time by the instance."""
    return f"sync_{table.name}"


def partitions_def(table: TableConfig, config: SyncConfig) -> HourlyPartitionsDefinition:
    start = table.start_in(config.partition_timezone)
    return HourlyPartitionsDefinition(
        start_date=start.strftime(PARTITION_KEY_FORMAT), timezone=config.partition_timezone
    )


def code_version(table: TableConfig) -> str:
    """A hash of the table's configuration: a config change shows in the UI as a code change."""
    return hashlib.sha256(table.model_dump_json().encode()).hexdigest()[:16]


def stats_metadata(stats: SyncStats) -> dict[str, Any]:
    metadata: dict[str, Any] = {name: getattr(stats, name) for name in METADATA_COUNTS}
    metadata["dagster/row_count"] = stats.target_rows
    metadata["dagster/table_name"] = stats.target_table
    metadata["dagster/column_schema"] = TableSchema(
        columns=[TableColumn(name, type_) for name, type_ in stats.target_columns]
    )
    metadata["timings_seconds"] = MetadataValue.json(stats.timings)
    return metadata


def build_sync_asset(
    table: TableConfig, config: SyncConfig, *, retry_policy: RetryPolicy | None = None
) -> AssetsDefinition:
    """The asset of one table: ``sync/<name>``, hourly partitions from the table's ``start``.

    ``retry_policy`` governs transient failures; tests pass one without delay.
    """
    connections = config.connections
    kinds = {
        ENGINE_KINDS[connections[table.source.connection].backend],
        ENGINE_KINDS[connections[table.target.connection].backend],
    }
    partitions = partitions_def(table, config)
    key = asset_key(table)

    # BackfillPolicy is marked beta in Dagster 1.13; it is the documented way to ranged runs, and the
    # warning would otherwise print wherever the definitions load (the UI, the CLI, every step).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BetaWarning)
        return _sync_asset(table, config, key, partitions, kinds, retry_policy)


def _sync_asset(
    table: TableConfig,
    config: SyncConfig,
    key: AssetKey,
    partitions: HourlyPartitionsDefinition,
    kinds: set[str],
    retry_policy: RetryPolicy | None,
) -> AssetsDefinition:
    @asset(
        key=key,
        partitions_def=partitions,
        group_name=table.source.connection,
        kinds=kinds,
        description=table.description
        or f"{table.source.table} from {table.source.connection} into {table.target.connection}",
        code_version=code_version(table),
        retry_policy=retry_policy or sync_retry_policy(config.retry),
        pool=pool_name(table),
        tags={TABLE_TAG: table.name},
        metadata={"dagster/table_name": table.target.table},
        check_specs=[in_sync_spec(key)] if table.verify else None,
        # A backfill runs blocks of hours as one run each (orchestration.ranged); the hourly
        # schedule still asks for one hour. Not on Celery: its pool processes are daemonic and may
        # not start the hours' processes, so there a backfill keeps one run per hour.
        backfill_policy=None
        if config.executor.kind == "celery"
        else BackfillPolicy.multi_run(config.backfill.max_partitions_per_run),
        # A ranged step yields one materialization per hour as it commits, not one output for all.
        output_required=False,
    )
    def _sync(
        context: AssetExecutionContext, sync: SyncResource
    ) -> Iterator[MaterializeResult | AssetMaterialization | AssetCheckResult]:  # type: ignore[type-arg]
        compare: Compare = "row" if context.run.tags.get(COMPARE_TAG) == "row" else "updated_at"
        # A ranged run of one hour (start = end, as multi_run(1) makes) is an hourly run too.
        hours = context.partition_keys
        if len(hours) > 1:
            yield from sync_hours(
                context,
                sync,
                table.name,
                key,
                partitions,
                compare=compare,
                verify=table.verify,
                start_method=config.executor.start_method,
                metadata_of=stats_metadata,
            )
            return
        yield _sync_one_hour(context, sync, compare, hours[0])

    def _sync_one_hour(
        context: AssetExecutionContext, sync: SyncResource, compare: Compare, partition_key: str
    ) -> MaterializeResult:  # type: ignore[type-arg]
        """The hourly run: one partition, synced in this step process, then its lookback."""
        hour = context.partition_time_window
        # Bounds in UTC first: in the partition time zone they compare as wall times, fold ignored,
        # so the first of a repeated DST hour (02:00+02:00 .. 02:00+01:00) would look empty.
        window = Window(hour.start.astimezone(UTC), hour.end.astimezone(UTC))

        def progress(stats: SyncStats) -> None:
            context.log.info(
                f"{table.name} {partition_key}: {stats.inserted} inserted, {stats.updated} updated, "
                f"{stats.deleted} deleted so far ({stats.keys_scanned} keys scanned)"
            )

        stats = _run(sync, table.name, window, progress, compare)
        context.log.info(
            f"{table.name} {partition_key}: {stats.inserted} inserted, {stats.updated} updated, "
            f"{stats.deleted} deleted, {stats.unchanged} unchanged in {stats.timings.get('total', 0):.2f}s"
        )
        lookback = int(context.run.tags.get(LOOKBACK_TAG, "0"))
        for hours_back in range(1, lookback + 1):
            earlier = Window.hour_starting(window.start - timedelta(hours=hours_back))
            if earlier.start < partitions.start:
                break
            # Dagster's key, not a formatted wall time: a repeated DST hour is 02:00+0100.
            earlier_key = partitions.get_partition_key_for_timestamp(earlier.start.timestamp())
            recheck = _run(sync, table.name, earlier, None, "updated_at")
            if recheck.changed:
                context.log.info(f"late commits in {earlier_key}: re-synced {recheck.changed} rows")
                context.log_event(
                    AssetMaterialization(
                        asset_key=key, partition=earlier_key, metadata=stats_metadata(recheck)
                    )
                )
        if not table.verify:
            return MaterializeResult(metadata=stats_metadata(stats))
        verification = sync.verify(table.name, window)
        return MaterializeResult(metadata=stats_metadata(stats), check_results=[in_sync_result(verification)])

    return _sync


def _run(
    sync: SyncResource,
    table: str,
    window: Window,
    progress: Callable[[SyncStats], None] | None,
    compare: Compare,
) -> SyncStats:
    try:
        return sync.sync(table, window, on_progress=progress, compare=compare)
    except TerminalError as error:
        # Retrying cannot fix a config, schema or data error: fail now, with the reason.
        raise Failure(description=str(error), allow_retries=False) from error


def in_sync_result(verification: Verification) -> AssetCheckResult:
    """The in_sync check of the partition just written: fails with the size of the difference."""
    return AssetCheckResult(
        check_name=IN_SYNC_CHECK,
        passed=verification.in_sync,
        severity=AssetCheckSeverity.ERROR,
        description=(
            "source and target rows of the partition are equal"
            if verification.in_sync
            else f"{verification.rows_differing} rows differ between source and target"
        ),
        metadata={
            "rows_differing": verification.rows_differing,
            "source_rows": verification.source_rows,
            "target_rows": verification.target_rows,
            "seconds": round(verification.seconds, 3),
        },
    )


def build_sync_assets(config: SyncConfig) -> list[AssetsDefinition]:
    return [build_sync_asset(table, config) for table in config.tables]
