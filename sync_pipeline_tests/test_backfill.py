"""Ranged runs for backfills (orchestration.ranged): many hours in one run, each hour on its own.

A backfill of many hours runs as few Dagster runs (the assets' ``BackfillPolicy``). These tests pin
what a ranged run keeps of a single-hour run, on real databases: every hour is synced oldest first,
in a child process of its own, and materialized with its own counts as soon as it commits; a hour
that fails ends the run naming it, with the hours before it materialized, and a re-execution syncs
only what is left; the ``in_sync`` check reports once per run.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from dagster import (
    AssetKey,
    BackfillPolicy,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    ReexecutionOptions,
    execute_job,
    instance_for_test,
)

from sync_pipeline.config import SyncConfig, load_config
from sync_pipeline.engine.diff.window import Window
from sync_pipeline.engine.sync import window_lock_name
from sync_pipeline.errors import SchemaError
from sync_pipeline.orchestration.assets import LOOKBACK_TAG, build_sync_asset
from sync_pipeline.orchestration.hours import HourResult, sync_hour
from sync_pipeline.orchestration.ranged import RANGE_END_TAG, RANGE_START_TAG, failed_hour
from sync_pipeline_tests.conftest import MakeDbUrl
from sync_pipeline_tests.dagster_helpers import (
    create_source,
    in_hour,
    load_definitions,
    reconstructable_sync_job,
    row,
    rows_in,
    side,
    source_table,
    table_entry,
    utc,
    write_config,
    write_orders_config,
)
from sync_pipeline_tests.dagster_processes import (
    BACKFILL_DONE,
    DAGSTER,
    INSTANCE_YAML,
    graphql,
    launch_backfill,
    location_loaded,
    server_info,
    stop_group,
    wait_for,
    wait_for_backfill,
)
from sync_pipeline_tests.helpers import Side, delete, free_port, insert

KEY = AssetKey(["sync", "orders"])
FIRST = Window.from_partition_key("2026-11-30-00:00")
DAEMON_FIRST = Window.from_partition_key("2026-11-01-00:00")
# Nothing but the backfill launches runs in the daemon tests: no hourly ticks, drift checks or catch-up.
QUIET: dict[str, Any] = {"schedule": {"enabled": False}, "drift": {"enabled": False}}
if "catch_up" in SyncConfig.model_fields:  # declarative catch-up (issue 11), where it exists
    QUIET["catch_up"] = {"enabled": False}


def hours(n: int) -> list[Window]:
    return [Window.hour_starting(FIRST.start + timedelta(hours=h)) for h in range(n)]


def hourly_rows(windows: list[Window], per_hour: int) -> list[dict[str, Any]]:
    """``per_hour`` rows in each window, ids numbered across them."""
    return [
        row(h * per_hour + i + 1, in_hour(window, i))
        for h, window in enumerate(windows)
        for i in range(per_hour)
    ]


def run_range(
    instance: DagsterInstance,
    config_path: Path,
    first: str,
    last: str,
    tags_extra: dict[str, str] | None = None,
    **options: Any,
) -> tuple[bool, str]:
    """One ranged run of the code location's job over [first, last], on the multiprocess executor."""
    with execute_job(
        reconstructable_sync_job(str(config_path)),
        instance=instance,
        tags={RANGE_START_TAG: first, RANGE_END_TAG: last, **(tags_extra or {})},
        raise_on_error=False,
        **options,
    ) as result:
        return result.success, result.run_id


def materializations(instance: DagsterInstance, run_id: str) -> list[tuple[str, dict[str, Any], int | None]]:
    """(partition, metadata, pid) of each materialization of a run, in the order they were recorded."""
    found = []
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION):
        event = entry.dagster_event
        assert event is not None
        materialization = event.event_specific_data.materialization  # type: ignore[union-attr]
        metadata = {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
        found.append((str(materialization.partition), metadata, event.pid))
    return found


def check_evaluations(instance: DagsterInstance, run_id: str) -> list[Any]:
    return [
        entry.dagster_event.event_specific_data  # type: ignore[union-attr]
        for entry in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
    ]


@pytest.fixture
def pg_pair(make_db_url: MakeDbUrl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Side, Side]:
    monkeypatch.setenv("SYNC_PIPELINE_DATA_DIR", str(tmp_path / "demo"))
    return side("postgresql", make_db_url("postgresql", "source")), side(
        "postgresql", make_db_url("postgresql", "target")
    )


def test_asset_backfill_policy_comes_from_the_config(tmp_path: Path) -> None:
    """``backfill.max_partitions_per_run`` becomes the asset's multi-run backfill policy (default 168)."""
    path = write_orders_config(
        tmp_path / "sync.yaml",
        Side("sqlite", "sqlite:///a.db", None),  # type: ignore[arg-type]
        Side("sqlite", "sqlite:///b.db", None),  # type: ignore[arg-type]
    )
    config = load_config(path)
    assert build_sync_asset(config.tables[0], config).backfill_policy == BackfillPolicy.multi_run(168)
    path = write_orders_config(
        tmp_path / "sync.yaml",
        Side("sqlite", "sqlite:///a.db", None),  # type: ignore[arg-type]
        Side("sqlite", "sqlite:///b.db", None),  # type: ignore[arg-type]
        backfill={"max_partitions_per_run": 24},
    )
    config = load_config(path)
    assert build_sync_asset(config.tables[0], config).backfill_policy == BackfillPolicy.multi_run(24)


def test_ranged_run_plans_once_and_materializes_each_hour_oldest_first_in_a_process_of_its_own(
    pg_pair: tuple[Side, Side], tmp_path: Path
) -> None:
    """A run over 6 hours records 6 materializations, oldest first, each with that hour's own counts;
    every hour synced in a child process (none in the step process), and one ``in_sync`` result. The
    tables are planned once for the run (one "planned" line in its log); each hour only checks the plan
    (``timings_seconds`` has ``plan_check`` and no ``plan``).
    """
    source, target = pg_pair
    windows = hours(6)
    # Hour h holds h + 1 rows, so each materialization's counts say which hour it was.
    create_source(
        source, [row(h * 10 + i, in_hour(w, i)) for h, w in enumerate(windows) for i in range(h + 1)]
    )
    path = write_orders_config(tmp_path / "sync.yaml", source, target)

    with instance_for_test() as instance:
        ok, run_id = run_range(instance, path, windows[0].partition_key(), windows[-1].partition_key())
        assert ok
        found = materializations(instance, run_id)
        [check] = check_evaluations(instance, run_id)
        step_pid = {
            e.dagster_event.pid
            for e in instance.all_logs(run_id, of_type=DagsterEventType.STEP_START)
            if e.dagster_event is not None
        }
        planned = [
            e.user_message for e in instance.all_logs(run_id) if "planned the tables" in e.user_message
        ]

    assert len(planned) == 1, planned
    assert windows[0].partition_key() in planned[0]
    assert all(
        "plan_check" in m["timings_seconds"] and "plan" not in m["timings_seconds"] for _, m, _ in found
    )
    assert [p for p, _, _ in found] == [w.partition_key() for w in windows]
    assert [m["inserted"] for _, m, _ in found] == [1, 2, 3, 4, 5, 6]
    assert [m["dagster/row_count"] for _, m, _ in found] == [1, 2, 3, 4, 5, 6]
    assert {pid for _, _, pid in found} == step_pid  # recorded by the step ...
    assert {m["sync_pid"] for _, m, _ in found}.isdisjoint(step_pid | {os.getpid()})  # ... synced elsewhere
    assert len({m["sync_pid"] for _, m, _ in found}) == 6  # a fresh process per hour
    assert check.passed
    assert check.metadata["hours_verified"].value == 6
    for window in windows:
        assert rows_in(target, "orders", window) == rows_in(source, "orders", window)


def test_an_hour_after_a_schema_change_in_the_middle_of_a_run_is_planned_again(
    pg_pair: tuple[Side, Side], tmp_path: Path
) -> None:
    """The run's planner process driven as a ranged step drives it. Hour 0 plans; a column is then added
    to the source (a migration during the backfill): hour 1 finds the plan outdated, is planned again
    (the column added to the target too) and synced with the new plan, which hour 2 reuses. A change
    no plan accepts (an integer column turned text) then fails hour 3 naming the column; nothing of it
    is written.
    """
    source, target = pg_pair
    windows = hours(4)
    create_source(source, hourly_rows(windows, 3))
    path = write_orders_config(tmp_path / "sync.yaml", source, target)
    ctx = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as planner:

        def hour(i: int) -> HourResult:
            return planner.submit(sync_hour, str(path), "orders", windows[i], "updated_at").result()

        first = hour(0)
        with source.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE orders ADD COLUMN channel text")
            conn.exec_driver_sql("UPDATE orders SET channel = 'web-' || id")
        second, third = hour(1), hour(2)
        synced = [rows_in(source, "orders", window) for window in windows[:3]]
        with source.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE orders ALTER COLUMN amount TYPE text")
        with pytest.raises(SchemaError, match="'amount'"):
            hour(3)

    assert first.planned_seconds is not None
    assert second.planned_seconds is not None  # planned again
    assert third.planned_seconds is None  # the new plan reused
    assert len({first.pid, second.pid, third.pid}) == 3
    assert [r.stats.inserted for r in (first, second, third)] == [3, 3, 3]
    with target.engine.connect() as conn:
        channels = dict(conn.exec_driver_sql("SELECT id, channel FROM orders").all())
    assert {i: channels[i] for i in (4, 5, 6, 7, 8, 9)} == {i: f"web-{i}" for i in (4, 5, 6, 7, 8, 9)}
    assert [rows_in(target, "orders", window) for window in windows[:3]] == synced
    assert rows_in(target, "orders", windows[3]) == {}


def test_a_ranged_run_of_one_hour_is_an_hourly_run(pg_pair: tuple[Side, Side], tmp_path: Path) -> None:
    """``multi_run(1)`` launches runs whose range starts and ends at one hour, without a partition tag:
    such a run syncs its hour as an hourly run does, in the step process (no ``sync_pid``), with its
    own ``in_sync`` result.
    """
    source, target = pg_pair
    [window] = hours(1)
    create_source(source, hourly_rows([window], 4))
    path = write_orders_config(tmp_path / "sync.yaml", source, target)
    with instance_for_test() as instance:
        ok, run_id = run_range(instance, path, window.partition_key(), window.partition_key())
        [(partition, metadata, _)] = materializations(instance, run_id)
        [check] = check_evaluations(instance, run_id)
    assert ok
    assert (partition, metadata["inserted"]) == (window.partition_key(), 4)
    assert "sync_pid" not in metadata
    assert check.passed
    assert rows_in(target, "orders", window) == rows_in(source, "orders", window)


def test_a_ranged_run_never_looks_back(pg_pair: tuple[Side, Side], tmp_path: Path) -> None:
    """The lookback belongs to the hourly run: a ranged run over hours 3-5, even tagged with a lookback
    of 3, syncs and materializes hours 3-5 only, leaving hours 0-2 (which have rows) untouched.
    """
    source, target = pg_pair
    windows = hours(6)
    create_source(source, hourly_rows(windows, 2))
    path = write_orders_config(tmp_path / "sync.yaml", source, target)
    with instance_for_test() as instance:
        ok, run_id = run_range(
            instance,
            path,
            windows[3].partition_key(),
            windows[5].partition_key(),
            tags_extra={LOOKBACK_TAG: "3"},
        )
        found = [p for p, _, _ in materializations(instance, run_id)]
    assert ok
    assert found == [w.partition_key() for w in windows[3:]]
    for window in windows[:3]:
        assert rows_in(target, "orders", window) == {}
    for window in windows[3:]:
        assert rows_in(target, "orders", window) == rows_in(source, "orders", window)


def test_a_retried_step_starts_at_the_hour_that_failed(pg_pair: tuple[Side, Side], tmp_path: Path) -> None:
    """Hour 3's lock is held by another session: its sync times out (a transient ``LockTimeout``) and the
    retry policy runs the step again, which starts at hour 3 rather than syncing hours 0-2 twice. The
    lock is still held, so the retry fails too, naming hour 3; hours 0-2 are materialized once each.
    """
    source, target = pg_pair
    windows = hours(5)
    create_source(source, hourly_rows(windows, 2))
    path = write_config(
        tmp_path / "sync.yaml",
        {"app": source.url, "warehouse": target.url},
        [table_entry("orders", "app", "warehouse", start="2026-11-30T00:00:00", lock_timeout_seconds=0.5)],
        retry={"max_retries": 1, "delay_seconds": 0},
    )
    lock = sa.func.hashtextextended(window_lock_name(None, "orders", windows[3]), 0)
    with instance_for_test() as instance, target.engine.connect() as holder:
        holder.execute(sa.select(sa.func.pg_advisory_lock(lock)))
        holder.commit()
        ok, run_id = run_range(instance, path, windows[0].partition_key(), windows[-1].partition_key())
        found = [p for p, _, _ in materializations(instance, run_id)]
        retries = list(instance.all_logs(run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY))
        [failure] = [
            e.dagster_event
            for e in instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE)
            if e.dagster_event is not None
        ]
    assert not ok
    assert len(retries) == 1
    assert found == [w.partition_key() for w in windows[:3]]
    assert f"partition {windows[3].partition_key()}" in str(failure.step_failure_data.error)


def test_in_sync_check_reports_once_per_run_naming_every_hour_that_differs(
    pg_pair: tuple[Side, Side], tmp_path: Path
) -> None:
    """Values changed in the target behind the pipeline's back (``updated_at`` untouched) in hours 2 and
    4: a second ranged run over the 6 hours finds nothing to sync by ``updated_at``, and its one
    ``in_sync`` result fails naming exactly those two hours and their rows.
    """
    source, target = pg_pair
    windows = hours(6)
    create_source(source, hourly_rows(windows, 3))
    path = write_orders_config(tmp_path / "sync.yaml", source, target)
    first, last = windows[0].partition_key(), windows[-1].partition_key()
    with instance_for_test() as instance:
        assert run_range(instance, path, first, last)[0]
        orders = sa.Table("orders", sa.MetaData(), autoload_with=target.engine)
        with target.engine.begin() as conn:
            conn.execute(
                orders.update().where(orders.c.id.in_([7, 8, 13])).values(note="changed in the target")
            )

        ok, run_id = run_range(instance, path, first, last)

        [check] = check_evaluations(instance, run_id)
        found = materializations(instance, run_id)
    assert ok  # a failed check shows on the asset; the syncs themselves succeeded
    assert [p for p, _, _ in found] == [w.partition_key() for w in windows]
    assert {m["updated"] for _, m, _ in found} == {0}
    assert not check.passed
    assert check.metadata["hours_differing"].value == {
        windows[2].partition_key(): 2,
        windows[4].partition_key(): 1,
    }
    assert windows[2].partition_key() in (check.description or "")
    assert windows[4].partition_key() in (check.description or "")


def _source_without_key(db: Side) -> sa.Table:
    """The orders table without its primary key, so that bad data (a duplicate key) can exist."""
    plain = sa.Table("orders", sa.MetaData(), *(sa.Column(c.name, c.type) for c in source_table().columns))
    plain.metadata.create_all(db.engine)
    return plain


def test_ranged_run_failing_at_an_hour_keeps_earlier_hours_and_its_rerun_does_what_is_left(
    pg_pair: tuple[Side, Side], tmp_path: Path
) -> None:
    """Hour 3 of 6 holds a duplicate key (bad data): the run fails naming that hour, hours 0-2 stay
    materialized and synced, hours 3-5 untouched. Once the data is fixed, re-executing the run from
    failure syncs hours 3-5 only.
    """
    source, target = pg_pair
    windows = hours(6)
    orders = _source_without_key(source)
    insert(source, orders, hourly_rows(windows, 2))
    bad = windows[3]
    insert(source, orders, [row(7, in_hour(bad, 30))])  # id 7 is already in hour 3
    path = write_orders_config(tmp_path / "sync.yaml", source, target)

    with instance_for_test() as instance:
        ok, run_id = run_range(instance, path, windows[0].partition_key(), windows[-1].partition_key())
        assert not ok
        assert [p for p, _, _ in materializations(instance, run_id)] == [
            w.partition_key() for w in windows[:3]
        ]
        [failure] = [
            e.dagster_event
            for e in instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE)
            if e.dagster_event is not None
        ]
        message = failure.step_failure_data.user_failure_data.description  # type: ignore[union-attr]
        assert f"partition {bad.partition_key()}" in message
        # What the failure sensor names in its alert for a ranged run (which has no partition tag).
        parent = instance.get_run_by_id(run_id)
        assert parent is not None
        assert failed_hour(parent, [failure]) == bad.partition_key()
        for window in windows[:3]:
            assert rows_in(target, "orders", window) == rows_in(source, "orders", window)
        for window in windows[3:]:
            assert rows_in(target, "orders", window) == {}

        delete(source, orders, (orders.c.id == 7) & (orders.c.updated_at == in_hour(bad, 30)))
        with execute_job(
            reconstructable_sync_job(str(path)),
            instance=instance,
            reexecution_options=ReexecutionOptions.from_failure(run_id, instance),
            # The parent's range, as the UI's "Re-execute from failure" copies a run's tags.
            tags={RANGE_START_TAG: windows[0].partition_key(), RANGE_END_TAG: windows[-1].partition_key()},
            raise_on_error=False,
        ) as rerun:
            assert rerun.success
            rerun_id = rerun.run_id
        assert [p for p, _, _ in materializations(instance, rerun_id)] == [
            w.partition_key() for w in windows[3:]
        ]

    for window in windows:
        assert rows_in(target, "orders", window) == rows_in(source, "orders", window)


def _schedule_tick(tmp_path: Path, instance: DagsterInstance, at: str) -> Any:
    """One tick of the hourly schedule at ``at`` (UTC), as the daemon evaluates it."""
    from dagster import build_schedule_context

    path = write_orders_config(
        tmp_path / "sync.yaml",
        Side("sqlite", "sqlite:///app.db", None),  # type: ignore[arg-type]
        Side("sqlite", "sqlite:///warehouse.db", None),  # type: ignore[arg-type]
    )
    defs = load_definitions(str(path))
    [schedule] = [s for s in defs.get_repository_def().schedule_defs if s.name == "sync_hourly_schedule"]
    with build_schedule_context(
        instance=instance, scheduled_execution_time=utc(at), repository_def=defs.get_repository_def()
    ) as context:
        return schedule.evaluate_tick(context)


def _ranged_run(instance: DagsterInstance, first: str, last: str, status: DagsterRunStatus) -> DagsterRun:
    """A backfill's ranged run of ``sync/orders`` over [first, last], as the backfill daemon records it."""
    return instance.add_run(
        DagsterRun(
            job_name="__ASSET_JOB",
            status=status,
            tags={RANGE_START_TAG: first, RANGE_END_TAG: last, "dagster/backfill": "abcdefgh"},
            asset_selection=frozenset({KEY}),
        )
    )


def test_schedule_skips_an_hour_that_an_in_flight_ranged_run_covers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tick for 08:00 skips while a ranged backfill run over 00:00..23:00 is running, naming it; a
    ranged run that ends before the hour, or one that has finished, does not hold it back.
    """
    monkeypatch.setenv("SYNC_PIPELINE_DATA_DIR", str(tmp_path / "demo"))
    monkeypatch.chdir(tmp_path)
    with instance_for_test() as instance:
        before = _ranged_run(instance, "2026-11-30-00:00", "2026-11-30-07:00", DagsterRunStatus.STARTED)
        _ranged_run(instance, "2026-11-30-00:00", "2026-11-30-23:00", DagsterRunStatus.SUCCESS)
        data = _schedule_tick(tmp_path, instance, "2026-11-30T09:10")
        assert [r.partition_key for r in data.run_requests or []] == ["2026-11-30-08:00"], before

        covering = _ranged_run(instance, "2026-11-30-00:00", "2026-11-30-23:00", DagsterRunStatus.STARTING)
        data = _schedule_tick(tmp_path, instance, "2026-11-30T09:10")
        assert data.run_requests == []
        assert data.skip_message is not None
        assert covering.run_id in data.skip_message


# -- through a real daemon --------------------------------------------------------------------------


@contextmanager
def dagster_dev(
    work: Path, config_path: Path
) -> Iterator[tuple[str, Callable[[], str | None], Callable[[], str], Path]]:
    """``dagster dev`` (webserver, daemon, code server) on ``config_path`` with the packaged instance
    settings in a fresh ``DAGSTER_HOME``: (url, dead, log tail, home) once the code location loaded.
    """
    home = work / "dagster_home"
    home.mkdir()
    shutil.copyfile(INSTANCE_YAML, home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "SYNC_PIPELINE_"))}
    env.update({"DAGSTER_HOME": str(home), "SYNC_PIPELINE_CONFIG": str(config_path)})
    log_path = work / "dagster.log"
    port = free_port()

    def logs() -> str:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-80:])

    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(DAGSTER), "dev", "-m", "sync_pipeline.definitions", "-h", "127.0.0.1", "-p", str(port)],
            cwd=work,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def dead() -> str | None:
            code = process.poll()
            return None if code is None else f"dagster dev exited with {code}:\n{logs()}"

        url = f"http://127.0.0.1:{port}"
        wait_for("the webserver", lambda: server_info(url), 180, dead)
        wait_for("the code location", lambda: location_loaded(url), 180, dead)
        yield url, dead, logs, home
    finally:
        stop_group(process)


@pytest.mark.slow
def test_ui_backfill_of_48_hours_runs_as_ranged_runs_and_materializes_every_hour(
    pg_pair: tuple[Side, Side], tmp_path: Path
) -> None:
    """A backfill of 48 hours launched as the UI does (GraphQL ``launchPartitionBackfill``) on ``dagster
    dev`` with ``max_partitions_per_run: 24`` runs as 2 ranged runs through the daemon and its queue;
    every hour is materialized once, with its own counts, and equals the source.
    """
    source, target = pg_pair
    windows = [Window.hour_starting(DAEMON_FIRST.start + timedelta(hours=h)) for h in range(48)]
    create_source(source, hourly_rows(windows, 20))
    keys = [w.partition_key() for w in windows]
    path = write_orders_config(
        tmp_path / "sync.yaml",
        source,
        target,
        start="2026-11-01T00:00:00",
        backfill={"max_partitions_per_run": 24},
        **QUIET,
    )

    with dagster_dev(tmp_path, path) as (url, dead, logs, home):
        backfill_id = launch_backfill(url, ["orders"], keys)
        backfill = wait_for_backfill(url, backfill_id, keys, timeout=600, alive=dead, logs=logs)

    ranges = sorted(
        (tags[RANGE_START_TAG], tags[RANGE_END_TAG])
        for tags in ({t["key"]: t["value"] for t in run["tags"]} for run in backfill["runs"])
    )
    assert ranges == [(keys[0], keys[23]), (keys[24], keys[47])]
    with DagsterInstance.from_config(str(home)) as instance:
        found = [m for run in backfill["runs"] for m in materializations(instance, run["runId"])]
    assert sorted(p for p, _, _ in found) == keys
    assert {m["inserted"] for _, m, _ in found} == {20}
    for window in windows:
        assert rows_in(target, "orders", window) == rows_in(source, "orders", window)


BACKFILL_AND_RUNS = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    ... on PartitionBackfill { status runs { runId status tags { key value } } }
  }
}
"""

RETRY_BACKFILL = """
mutation($params: ReexecutionParams) {
  reexecutePartitionBackfill(reexecutionParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}
"""


@pytest.mark.slow
def test_ui_backfill_failing_at_an_hour_keeps_the_hours_before_and_its_retry_does_what_is_left(
    pg_pair: tuple[Side, Side], tmp_path: Path
) -> None:
    """24 hours in ranged runs of 12 through the daemon; hour 16 holds bad data (a duplicate key). The
    backfill fails; hours 0-15 are materialized and synced, the failed run names hour 16, hours 16-23
    are untouched. With the data fixed, the UI's "Re-execute" of the backfill (from failure) launches
    one ranged run of hours 16-23 only, and then every hour equals the source.
    """
    source, target = pg_pair
    windows = [Window.hour_starting(DAEMON_FIRST.start + timedelta(hours=h)) for h in range(24)]
    keys = [w.partition_key() for w in windows]
    orders = _source_without_key(source)
    insert(source, orders, hourly_rows(windows, 5))
    bad = windows[16]
    insert(source, orders, [row(81, in_hour(bad, 30))])  # id 81 is already in hour 16
    path = write_orders_config(
        tmp_path / "sync.yaml",
        source,
        target,
        start="2026-11-01T00:00:00",
        backfill={"max_partitions_per_run": 12},
        **QUIET,
    )

    with dagster_dev(tmp_path, path) as (url, dead, logs, home):
        backfill_id = launch_backfill(url, ["orders"], keys)

        def finished() -> dict[str, Any] | None:
            backfill: dict[str, Any] = graphql(url, BACKFILL_AND_RUNS, id=backfill_id)[
                "partitionBackfillOrError"
            ]
            return backfill if backfill["status"] in BACKFILL_DONE else None

        failed = wait_for(f"backfill {backfill_id}", finished, 600, dead)
        assert failed["status"] == "COMPLETED_FAILED", logs()
        with DagsterInstance.from_config(str(home)) as instance:
            done = sorted(p for run in failed["runs"] for p, _, _ in materializations(instance, run["runId"]))
            failures = [
                e.dagster_event.step_failure_data.user_failure_data.description  # type: ignore[union-attr]
                for run in failed["runs"]
                for e in instance.all_logs(run["runId"], of_type=DagsterEventType.STEP_FAILURE)
                if e.dagster_event is not None
            ]
        assert done == keys[:16]
        assert len(failures) == 1
        assert f"partition {bad.partition_key()}" in failures[0]
        for window in windows[:16]:
            assert rows_in(target, "orders", window) == rows_in(source, "orders", window)
        for window in windows[16:]:
            assert rows_in(target, "orders", window) == {}

        delete(source, orders, (orders.c.id == 81) & (orders.c.updated_at == in_hour(bad, 30)))
        retried = graphql(
            url, RETRY_BACKFILL, params={"parentRunId": backfill_id, "strategy": "FROM_FAILURE"}
        )
        retry = retried["reexecutePartitionBackfill"]
        assert retry["__typename"] == "LaunchBackfillSuccess", retry
        # Its runs may cover only hours 16-23: wait_for_backfill places every run's range within them.
        again = wait_for_backfill(url, retry["backfillId"], keys[16:], timeout=600, alive=dead, logs=logs)
        with DagsterInstance.from_config(str(home)) as instance:
            redone = sorted(
                p for run in again["runs"] for p, _, _ in materializations(instance, run["runId"])
            )
        assert redone == keys[16:]

    for window in windows:
        assert rows_in(target, "orders", window) == rows_in(source, "orders", window)
