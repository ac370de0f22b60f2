"""Tests of the asset factory (sync_pipeline.orchestration.assets) run through Dagster's ``materialize``.

Each test builds a table's asset with ``build_sync_asset`` from a config file on real databases,
binds ``SyncResource`` to that file, and materializes a partition in process: the target must then
equal the source for the window, and the materialization's metadata must report exactly what moved.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from dagster import (
    AssetKey,
    AssetsDefinition,
    DagsterEventType,
    ExecuteInProcessResult,
    IntMetadataValue,
    PartitionKeyRange,
    RetryPolicy,
    TableColumn,
    TableSchema,
    execute_job,
    instance_for_test,
    materialize,
)

from sync_pipeline.config import RetryConfig, load_config
from sync_pipeline.demo.config import DATA_DIR_ENV
from sync_pipeline.engine.diff.window import Window
from sync_pipeline.orchestration.assets import LOOKBACK_TAG, build_sync_asset, sync_retry_policy
from sync_pipeline.orchestration.resources import SyncResource
from sync_pipeline_tests.conftest import MakeDbUrl
from sync_pipeline_tests.dagster_helpers import (
    H07,
    H08,
    H09,
    create_source,
    in_hour,
    reconstructable_sync_job,
    row,
    rows_in,
    side,
    table_entry,
    write_config,
    write_orders_config,
)
from sync_pipeline_tests.helpers import ALL_COUNTS, Side, all_counts, delete, insert, update

KEY = AssetKey(["sync", "orders"])


def asset_for(config_path: Path, **options: Any) -> AssetsDefinition:
    config = load_config(config_path)
    return build_sync_asset(config.tables[0], config, **options)


def run(asset: AssetsDefinition, config_path: Path, partition: str, **options: Any) -> ExecuteInProcessResult:
    return materialize(
        [asset],
        partition_key=partition,
        resources={"sync": SyncResource(config_path=str(config_path))},
        **options,
    )


def metadata_of(result: ExecuteInProcessResult, partition: str) -> dict[str, Any]:
    """The metadata of the one materialization of ``partition``, as plain values."""
    [event] = [m for m in result.get_asset_materialization_events() if m.partition == partition]
    materialization = event.materialization
    assert materialization.asset_key == KEY
    return {name: getattr(value, "value", value) for name, value in materialization.metadata.items()}


def materialized_partitions(result: ExecuteInProcessResult) -> list[str]:
    """The partitions a run recorded materializations of, sorted."""
    return sorted(str(m.partition) for m in result.get_asset_materialization_events())


def counts(metadata: dict[str, Any]) -> dict[str, int]:
    return {name: metadata[name] for name in ALL_COUNTS}


def step_events(result: ExecuteInProcessResult, kind: DagsterEventType) -> list[Any]:
    return [e for e in result.all_events if e.event_type == kind]


@pytest.fixture(params=["sqlite", "mysql"], ids=["sqlite->postgresql", "mysql->postgresql"])
def databases(
    request: pytest.FixtureRequest, make_db_url: MakeDbUrl, tmp_path: Path
) -> tuple[Side, Side, Path]:
    """A source (SQLite or MariaDB) and a PostgreSQL target, and a config file syncing ``orders``."""
    source = side(request.param, make_db_url(request.param, "source"))
    target = side("postgresql", make_db_url("postgresql", "target"))
    return source, target, write_orders_config(tmp_path / "sync.yaml", source, target)


def test_materialize_syncs_the_window_and_reports_exact_metadata(databases: tuple[Side, Side, Path]) -> None:
    """One partition materializes into a target equal to the source for its window, with exact counts.

    The first run inserts; after an update, a delete and an insert in the source the second reports
    exactly those; the third reports nothing to do. Rows of the neighbouring hours are not touched.
    """
    source, target, path = databases
    orders = create_source(
        source,
        [row(i, in_hour(H08, i)) for i in range(1, 6)] + [row(10, in_hour(H07, 5)), row(11, in_hour(H09, 5))],
    )
    asset = asset_for(path)

    first = metadata_of(run(asset, path, "2026-11-30-08:00"), "2026-11-30-08:00")
    assert counts(first) == all_counts(rows=5, inserted=5)
    assert first["dagster/row_count"] == 5
    assert first["rows_streamed"] == 5  # the first sync of an hour travels by range (the bulk path)
    assert first["dagster/table_name"] == "orders"
    schema = first["dagster/column_schema"]
    assert isinstance(schema, TableSchema)
    assert [column.name for column in schema.columns] == ["id", "customer", "amount", "note", "updated_at"]
    assert all(isinstance(column, TableColumn) and column.type for column in schema.columns)
    assert rows_in(target, "orders", H08) == rows_in(source, "orders", H08)
    assert rows_in(target, "orders", H07) == {}
    assert rows_in(target, "orders", H09) == {}

    update(source, orders, orders.c.id == 1, amount=12345, updated_at=in_hour(H08, 50))
    delete(source, orders, orders.c.id == 2)
    insert(source, orders, [row(6, in_hour(H08, 55))])
    second = metadata_of(run(asset, path, "2026-11-30-08:00"), "2026-11-30-08:00")
    assert counts(second) == all_counts(rows=5, inserted=1, updated=1, deleted=1, unchanged=3)
    assert second["dagster/row_count"] == 5
    assert rows_in(target, "orders", H08) == rows_in(source, "orders", H08)

    third = metadata_of(run(asset, path, "2026-11-30-08:00"), "2026-11-30-08:00")
    assert counts(third) == all_counts(rows=5, unchanged=5)
    assert third["dagster/row_count"] == 5
    assert (third["rows_streamed"], third["rows_fetched"]) == (0, 0)


def test_missing_source_table_fails_once_without_retry(databases: tuple[Side, Side, Path]) -> None:
    """A terminal error (the source table does not exist) fails the step at once: one attempt, no retry.

    The asset keeps its production retry policy: Failure(allow_retries=False) must override it.
    """
    _, target, path = databases
    asset = asset_for(path)
    assert asset.op.retry_policy == sync_retry_policy(RetryConfig())

    result = run(asset, path, "2026-11-30-08:00", raise_on_error=False)

    assert not result.success
    assert len(step_events(result, DagsterEventType.STEP_START)) == 1
    assert step_events(result, DagsterEventType.STEP_UP_FOR_RETRY) == []
    [failure] = step_events(result, DagsterEventType.STEP_FAILURE)
    assert (
        "source table 'orders' (connection 'app') does not exist" in failure.step_failure_data.error.message
    )
    assert result.get_asset_materialization_events() == []
    assert not sa.inspect(target.engine).has_table("orders")


def test_unreachable_source_is_retried_by_the_retry_policy(make_db_url: MakeDbUrl, tmp_path: Path) -> None:
    """A transient error (connection refused: DatabaseUnavailable) is retried per the asset's RetryPolicy.

    With two retries and no delay the step starts three times, is up for retry twice, then fails.
    """
    target = make_db_url("postgresql", "target")
    path = write_config(
        tmp_path / "sync.yaml",
        {"app": "postgresql+psycopg://sync:pw-not-in-logs@127.0.0.1:1/app", "warehouse": target},
        [table_entry("orders", "app", "warehouse")],
    )
    asset = asset_for(path, retry_policy=RetryPolicy(max_retries=2, delay=0))

    result = run(asset, path, "2026-11-30-08:00", raise_on_error=False)

    assert not result.success
    retries = step_events(result, DagsterEventType.STEP_UP_FOR_RETRY)
    assert len(retries) == 2
    assert len(step_events(result, DagsterEventType.STEP_RESTARTED)) == 2
    [failure] = step_events(result, DagsterEventType.STEP_FAILURE)
    assert all("DatabaseUnavailable" in e.event_specific_data.error.to_string() for e in retries)
    assert "Exceeded max_retries of 2" in failure.step_failure_data.error.message
    assert not [e for e in result.all_events if "pw-not-in-logs" in repr(e)]


def test_lookback_tag_resyncs_earlier_hours_that_changed(databases: tuple[Side, Side, Path]) -> None:
    """A run tagged ``sync_pipeline/lookback_hours=2`` on hour H also re-syncs H-1 and H-2 when they changed.

    Each re-synced earlier hour gets its own materialization event with its counts; an earlier hour
    without changes gets none, and an untagged run looks back at nothing.
    """
    source, target, path = databases
    orders = create_source(
        source,
        [
            row(i, in_hour(window, i))
            for window, ids in ((H07, (1, 2)), (H08, (3, 4)), (H09, (5, 6)))
            for i in ids
        ],
    )
    asset = asset_for(path)
    for window in (H07, H08, H09):
        run(asset, path, window.partition_key())

    # Late commits: rows stamped in hours that were already synced.
    update(source, orders, orders.c.id == 1, note="late", updated_at=in_hour(H07, 59))
    delete(source, orders, orders.c.id == 4)
    result = run(asset, path, "2026-11-30-09:00", tags={LOOKBACK_TAG: "2"})

    assert materialized_partitions(result) == [
        "2026-11-30-07:00",
        "2026-11-30-08:00",
        "2026-11-30-09:00",
    ]
    assert counts(metadata_of(result, "2026-11-30-07:00"))["updated"] == 1
    assert counts(metadata_of(result, "2026-11-30-08:00"))["deleted"] == 1
    assert counts(metadata_of(result, "2026-11-30-09:00"))["unchanged"] == 2
    for window in (H07, H08, H09):
        assert rows_in(target, "orders", window) == rows_in(source, "orders", window)

    # Only H-1 changes now: only it is materialized besides H itself.
    update(source, orders, orders.c.id == 3, note="later", updated_at=in_hour(H08, 59))
    result = run(asset, path, "2026-11-30-09:00", tags={LOOKBACK_TAG: "2"})
    assert materialized_partitions(result) == [
        "2026-11-30-08:00",
        "2026-11-30-09:00",
    ]
    assert rows_in(target, "orders", H08) == rows_in(source, "orders", H08)

    # Without the tag the run syncs its own hour only.
    update(source, orders, orders.c.id == 2, note="unseen", updated_at=in_hour(H07, 58))
    result = run(asset, path, "2026-11-30-09:00")
    assert materialized_partitions(result) == ["2026-11-30-09:00"]
    assert rows_in(target, "orders", H07) != rows_in(source, "orders", H07)


def test_lookback_stops_at_the_first_partition(make_db_url: MakeDbUrl, tmp_path: Path) -> None:
    """Looking back from the first partition re-checks nothing before the table's start."""
    source = side("sqlite", make_db_url("sqlite", "source"))
    target = side("postgresql", make_db_url("postgresql", "target"))
    create_source(source, [row(1, in_hour(H07, 1)), row(2, in_hour(H08, 1))])
    path = write_orders_config(tmp_path / "sync.yaml", source, target, start="2026-11-30T08:00:00")
    result = run(asset_for(path), path, "2026-11-30-08:00", tags={LOOKBACK_TAG: "3"})

    assert materialized_partitions(result) == ["2026-11-30-08:00"]
    assert rows_in(target, "orders", H07) == {}


def test_lookback_across_the_autumn_dst_change_uses_dagster_partition_keys(
    make_db_url: MakeDbUrl, tmp_path: Path
) -> None:
    """In Paris the hour 02:00 repeats on 2026-10-25; the lookback materializes each under Dagster's key.

    Looking back two hours from 03:00 CET re-syncs 02:00 CET (key ``2026-10-25-02:00+0100``) and
    02:00 CEST (key ``2026-10-25-02:00``), the same keys Dagster's partitions definition uses.
    """
    source = side("sqlite", make_db_url("sqlite", "source"))
    target = side("postgresql", make_db_url("postgresql", "target"))
    first_0200, second_0200, at_0300 = (
        Window.from_partition_key(f"2026-10-25-{h:02d}:00")
        for h in (0, 1, 2)  # UTC hours
    )
    create_source(
        source, [row(1, in_hour(first_0200, 1)), row(2, in_hour(second_0200, 1)), row(3, in_hour(at_0300, 1))]
    )
    path = write_orders_config(
        tmp_path / "sync.yaml", source, target, start="2026-10-24T00:00:00", partition_timezone="Europe/Paris"
    )
    asset = asset_for(path)
    assert asset.partitions_def is not None
    keys = asset.partitions_def.get_partition_keys_in_range(
        PartitionKeyRange("2026-10-25-02:00", "2026-10-25-03:00")
    )
    assert keys == ["2026-10-25-02:00", "2026-10-25-02:00+0100", "2026-10-25-03:00"]

    result = run(asset, path, "2026-10-25-03:00", tags={LOOKBACK_TAG: "2"})

    assert materialized_partitions(result) == keys
    assert metadata_of(result, "2026-10-25-02:00")["inserted"] == 1
    assert metadata_of(result, "2026-10-25-02:00+0100")["inserted"] == 1
    assert metadata_of(result, "2026-10-25-03:00")["inserted"] == 1
    for window in (first_0200, second_0200, at_0300):
        assert rows_in(target, "orders", window) == rows_in(source, "orders", window)


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_multiprocess_executor_runs_each_table_in_its_own_process(
    make_db_url: MakeDbUrl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start_method: str
) -> None:
    """The code location's job runs on Dagster's multiprocess executor: one OS process per table's step.

    Both tables of the partition are synced in one run; each step started in its own process, none
    of them the orchestrating (test) process.
    """
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "demo"))  # what a preloading forkserver imports
    source = side("mysql", make_db_url("mysql", "source"))
    target = side("postgresql", make_db_url("postgresql", "target"))
    create_source(source, [row(i, in_hour(H08, i)) for i in range(1, 4)], name="orders")
    create_source(source, [row(i, in_hour(H08, i)) for i in range(1, 6)], name="items")
    path = write_config(
        tmp_path / "sync.yaml",
        {"app": source.url, "warehouse": target.url},
        [table_entry("orders", "app", "warehouse"), table_entry("items", "app", "warehouse", table="items")],
        executor={"start_method": start_method, "max_concurrent": 2},
    )

    with instance_for_test() as instance:
        with execute_job(
            reconstructable_sync_job(str(path)),
            instance=instance,
            tags={"dagster/partition": "2026-11-30-08:00"},
            raise_on_error=True,
        ) as result:
            assert result.success
            run_id = result.run_id
        records = instance.all_logs(run_id)

    events = [r.dagster_event for r in records if r.dagster_event is not None]

    def pids(kind: DagsterEventType) -> dict[str | None, int | None]:
        return {e.step_key: e.pid for e in events if e.event_type == kind}

    [parent] = [e for e in events if "Executing steps using multiprocess executor" in (e.message or "")]
    assert parent.pid == os.getpid()
    assert f"parent process (pid: {os.getpid()})" in (parent.message or "")
    started = pids(DagsterEventType.STEP_START)
    assert set(started) == {"sync__orders", "sync__items"}
    assert len(set(started.values())) == 2
    assert os.getpid() not in started.values()
    assert pids(DagsterEventType.STEP_SUCCESS) == started
    materialized = {
        (e.step_key, e.pid, e.materialization.partition, e.materialization.metadata["inserted"])
        for e in events
        if e.event_type == DagsterEventType.ASSET_MATERIALIZATION
    }
    assert materialized == {
        ("sync__orders", started["sync__orders"], "2026-11-30-08:00", IntMetadataValue(3)),
        ("sync__items", started["sync__items"], "2026-11-30-08:00", IntMetadataValue(5)),
    }
    assert rows_in(target, "orders", H08) == rows_in(source, "orders", H08)
    assert rows_in(target, "items", H08) == rows_in(source, "items", H08)
