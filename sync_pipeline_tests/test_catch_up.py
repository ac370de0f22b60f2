"""Catch-up of missed hours (orchestration.catch_up): which hours the automation condition requests, and
the real daemon catching up a gap by itself.

The condition is evaluated as the daemon's automation sensor evaluates it, by Dagster's own
``evaluate_automation_conditions`` at chosen instants, on a real instance where the syncs (and a
failing one) have run for real. The end-to-end test runs ``dagster dev`` on a table whose hours
since ten hours ago were never synced but the last, and waits for the daemon to sync them all with
nobody at the UI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    DagsterRunStatus,
    Definitions,
    evaluate_automation_conditions,
    instance_for_test,
)
from dagster._core.execution.backfill import PartitionBackfill
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.dagster_run import DagsterRun

from sync_pipeline.cli.dev import sync_last_hour
from sync_pipeline.config import CONFIG_ENV_VAR, load_config, parse_config
from sync_pipeline.demo.config import DATA_DIR_ENV, demo_config
from sync_pipeline.engine.diff.window import Window
from sync_pipeline.errors import ConfigError
from sync_pipeline.orchestration.assets import asset_key
from sync_pipeline.orchestration.catch_up import (
    CATCH_UP_SENSOR,
    RetryBackoff,
    catch_up_condition,
    catch_up_note,
    next_retry,
)
from sync_pipeline.orchestration.freshness import evaluate_freshness
from sync_pipeline.orchestration.schedules import build_jobs
from sync_pipeline_tests.conftest import MakeDbUrl
from sync_pipeline_tests.dagster_helpers import (
    create_source,
    in_hour,
    load_definitions,
    row,
    rows_in,
    side,
    source_table,
    utc,
    write_orders_config,
)
from sync_pipeline_tests.dagster_processes import (
    INSTANCE_YAML,
    Deployment,
    dagster_dev,
    deployment_env,
    execute_hour,
    finished_runs,
    wait_for,
)
from sync_pipeline_tests.helpers import delete, insert
from sync_pipeline_tests.webhook_server import serve

KEY = AssetKey(["sync", "orders"])


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as temp:
        yield temp


def requested(
    defs: Definitions, instance: DagsterInstance, at: str, cursor: object = None
) -> tuple[list[str], object]:
    """The hours of ``sync/orders`` the catch-up requests at ``at``, and the cursor for the next tick."""
    result = evaluate_automation_conditions(
        defs,
        instance,
        evaluation_time=utc(at),
        cursor=cursor,  # type: ignore[arg-type]
    )
    return sorted(k for k in result.get_requested_partitions(KEY) if k is not None), result.cursor


def test_catch_up_requests_missed_hours_within_the_horizon_but_not_the_newest(
    make_db_url: MakeDbUrl, tmp_path: Path, instance: DagsterInstance
) -> None:
    """At 10:05 with max_hours 6: 04:00 .. 08:00 are requested except the synced 06:00; not 09:00 (the
    schedule's, waiting for late commits), not 00:00 .. 03:00 (beyond the horizon: a backfill's job);
    an hour in a run not started yet is not requested again (no pile-up). (Failed hours wait their
    backoff: ``test_a_failed_hour_waits_a_doubling_backoff_before_it_is_requested_again``.)
    """
    source = side("sqlite", make_db_url("sqlite", "source"))
    create_source(
        source, [row(i, in_hour(Window.from_partition_key(f"2026-11-30-0{i}:00"), 5)) for i in range(9)]
    )
    path = write_orders_config(
        tmp_path / "sync.yaml",
        source,
        side("sqlite", make_db_url("sqlite", "target")),
        start="2026-11-30T00:00:00",
        catch_up={"max_hours": 6},
    )
    defs = load_definitions(str(path))
    job = defs.resolve_job_def("sync_hourly")
    assert job.execute_in_process(instance=instance, partition_key="2026-11-30-06:00").success

    first, cursor = requested(defs, instance, "2026-11-30T10:05")
    assert first == ["2026-11-30-04:00", "2026-11-30-05:00", "2026-11-30-07:00", "2026-11-30-08:00"]

    # 07:00 in a run not started yet.
    instance.create_run_for_job(
        job_def=job,
        tags={"dagster/partition": "2026-11-30-07:00"},
        status=DagsterRunStatus.NOT_STARTED,
        asset_selection=frozenset({KEY}),
    )
    second, cursor = requested(defs, instance, "2026-11-30T10:20", cursor)
    assert second == ["2026-11-30-04:00", "2026-11-30-05:00", "2026-11-30-08:00"]

    assert job.execute_in_process(instance=instance, partition_key="2026-11-30-05:00").success
    after, _ = requested(defs, instance, "2026-11-30T10:45", cursor)
    assert after == ["2026-11-30-04:00", "2026-11-30-08:00"]


def test_the_retry_backoff_doubles_with_each_failure_up_to_its_cap() -> None:
    """The n-th failure of an hour waits first * 2**(n-1), never more than the cap; an hour that never
    failed has no retry time; the next retry counts from the newest failure, whatever the order.
    """
    backoff = RetryBackoff(timedelta(minutes=2), timedelta(minutes=60))
    waits = [backoff.delay(n) for n in range(1, 9)]
    assert waits == [timedelta(minutes=m) for m in (2, 4, 8, 16, 32, 60, 60, 60)]
    assert backoff.delay(10_000) == timedelta(minutes=60)
    assert backoff.due([]) is None
    first, second = utc("2026-12-05T10:00"), utc("2026-12-05T10:03")
    assert backoff.due([first]) == utc("2026-12-05T10:02")
    assert backoff.due([second, first]) == utc("2026-12-05T10:07")  # second failure: 4 minutes
    assert backoff.words() == "failed ones after 2 min, the wait doubling up to 60 min"
    daily = RetryBackoff(timedelta(hours=1), timedelta(hours=24))
    assert daily.words() == "failed ones after 60 min, the wait doubling up to 24 h"
    assert [daily.delay(n) for n in (5, 6)] == [timedelta(hours=16), timedelta(hours=24)]
    fixed = RetryBackoff(timedelta(minutes=30), timedelta(minutes=30))
    assert fixed.words() == "failed ones every 30 min"


def test_a_failed_hour_waits_a_doubling_backoff_before_it_is_requested_again(
    make_db_url: MakeDbUrl, tmp_path: Path, instance: DagsterInstance
) -> None:
    """An hour whose run failed (its source table was gone) is not requested until 10 minutes after
    the failure, then is; failed a second time it waits 20 minutes from then. The count and the
    times come from Dagster's run records, and the run-failure alert's words say when.
    """
    now = current_hour()
    hours = [Window.hour_starting(now - timedelta(hours=h)) for h in range(4, 0, -1)]
    failing = hours[1].partition_key()
    source = side("sqlite", make_db_url("sqlite", "source"))
    create_source(source, [row(i, in_hour(w, 5)) for i, w in enumerate(hours)])
    path = write_orders_config(
        tmp_path / "sync.yaml",
        source,
        side("sqlite", make_db_url("sqlite", "target")),
        start=hours[0].start.strftime("%Y-%m-%dT%H:%M:%S"),
        catch_up={"retry_failed_after_minutes": 10, "retry_failed_max_minutes": 60},
    )
    config = load_config(path)
    [(_, partitions)] = build_jobs(config)
    defs = load_definitions(str(path))
    job = defs.resolve_job_def("sync_hourly")

    def fail() -> datetime:
        with source.engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE orders RENAME TO orders_away"))
        result = job.execute_in_process(instance=instance, partition_key=failing, raise_on_error=False)
        assert not result.success
        with source.engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE orders_away RENAME TO orders"))
        record = instance.get_run_record_by_id(result.run_id)
        assert record is not None
        assert record.end_time is not None
        return datetime.fromtimestamp(record.end_time, UTC)

    def asks_for_failing(at: datetime) -> bool:
        result = evaluate_automation_conditions(defs, instance, evaluation_time=at)
        return failing in result.get_requested_partitions(KEY)

    assert asks_for_failing(datetime.now(UTC)), "missed, never failed: requested at once"
    failed_once = fail()
    assert not asks_for_failing(failed_once + timedelta(minutes=9))
    assert asks_for_failing(failed_once + timedelta(minutes=11))
    assert next_retry(instance, KEY, partitions, failing, config) == (1, failed_once + timedelta(minutes=10))

    failed_twice = fail()
    assert not asks_for_failing(failed_twice + timedelta(minutes=11))
    assert asks_for_failing(failed_twice + timedelta(minutes=21))
    retry = next_retry(instance, KEY, partitions, failing, config)
    assert retry == (2, failed_twice + timedelta(minutes=20))
    note = catch_up_note(config, partitions, [failing], failed_twice, retry)
    due = (failed_twice + timedelta(minutes=20)).strftime("%Y-%m-%d %H:%M")
    assert note == (
        f"the catch-up requests it again at {due} UTC (failed 2 times: next wait 20 min; "
        "failed ones after 10 min, the wait doubling up to 60 min)"
    )
    # The other missed hours never failed: the backoff does not hold them back.
    others = evaluate_automation_conditions(
        defs, instance, evaluation_time=failed_twice + timedelta(minutes=1)
    )
    assert {hours[0].partition_key(), hours[2].partition_key()} <= set(others.get_requested_partitions(KEY))


def test_hours_of_a_ui_backfill_in_progress_are_left_to_it(
    make_db_url: MakeDbUrl, tmp_path: Path, instance: DagsterInstance
) -> None:
    """A backfill launched from the UI for 04:00 and 05:00 and not finished: the catch-up requests only
    the other missed hour, so the two never sync one hour side by side (the engine's lock would
    serialise them anyway) and no hour is requested twice.
    """
    source = side("sqlite", make_db_url("sqlite", "source"))
    create_source(source, [])
    path = write_orders_config(
        tmp_path / "sync.yaml",
        source,
        side("sqlite", make_db_url("sqlite", "target")),
        start="2026-11-30T04:00:00",
    )
    defs = load_definitions(str(path))
    ui_backfill = PartitionBackfill.from_asset_partitions(
        backfill_id="ui",
        asset_graph=defs.resolve_asset_graph(),
        partition_names=["2026-11-30-04:00", "2026-11-30-05:00"],
        asset_selection=[KEY],
        backfill_timestamp=utc("2026-11-30T07:01").timestamp(),
        tags={},
        dynamic_partitions_store=instance,
        all_partitions=False,
        title=None,
        description=None,
        run_config=None,
    )
    instance.add_backfill(ui_backfill)

    hours, _ = requested(defs, instance, "2026-11-30T08:05")

    assert hours == ["2026-11-30-06:00"]  # 04:00 and 05:00 are the backfill's; 07:00 the schedule's


def test_catch_up_off_and_its_settings_are_validated() -> None:
    """``catch_up.enabled: false`` attaches no condition; a horizon beyond freshness's is refused."""
    base = json.dumps(
        {
            "connections": {"a": {"url": "sqlite:///a.db"}},
            "tables": [
                {
                    "name": "t",
                    "source": {"connection": "a", "table": "t"},
                    "target": {"connection": "a", "table": "u"},
                    "primary_key": ["id"],
                    "updated_at": "ts",
                    "start": "2026-11-01T00:00:00",
                }
            ],
        }
    )[:-1]
    message = r"catch_up.*max_hours.*400 is beyond freshness.horizon_hours \(336\)"
    with pytest.raises(ConfigError, match=message):
        parse_config(base + ', "catch_up": {"max_hours": 400}}', environ={})
    config = parse_config(
        base + ', "catch_up": {"retry_failed_after_minutes": 5, "retry_failed_max_minutes": 120}}', environ={}
    )
    assert RetryBackoff.of(config) == RetryBackoff(timedelta(minutes=5), timedelta(hours=2))
    assert catch_up_condition(config) is not None
    defaults = RetryBackoff.of(parse_config(base + "}", environ={}))
    assert defaults == RetryBackoff(timedelta(hours=1), timedelta(hours=24))
    renamed = r"catch_up.retry_failed_every_minutes.*replaced by retry_failed_after_minutes"
    with pytest.raises(ConfigError, match=renamed):
        parse_config(base + ', "catch_up": {"retry_failed_every_minutes": 60}}', environ={})
    with pytest.raises(
        ConfigError, match=r"retry_failed_max_minutes.*10 is below retry_failed_after_minutes"
    ):
        parse_config(
            base + ', "catch_up": {"retry_failed_after_minutes": 30, "retry_failed_max_minutes": 10}}',
            environ={},
        )
    for minutes in (0, 7 * 24 * 60 + 1):
        with pytest.raises(ConfigError, match="retry_failed_after_minutes"):
            parse_config(base + f', "catch_up": {{"retry_failed_after_minutes": {minutes}}}}}', environ={})
    off = parse_config(base + ', "catch_up": {"enabled": false, "max_hours": 400}}', environ={})
    assert catch_up_condition(off) is None


# -- the real daemon --------------------------------------------------------------------------------


def current_hour() -> datetime:
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


@contextmanager
def deployed(tmp_path: Path, config: Path, newest: str) -> Iterator[tuple[Deployment, DagsterInstance]]:
    """``newest`` synced through the hourly job (as the schedule would), then ``dagster dev`` running
    ``config`` with a fresh ``DAGSTER_HOME``, until its code location has loaded; and its instance.
    """
    env = deployment_env(tmp_path / "dagster_home", config)
    execute_hour(env, tmp_path, newest)
    with (
        dagster_dev(tmp_path, env) as server,
        DagsterInstance.from_ref(InstanceRef.from_dir(str(server.home))) as instance,
    ):
        yield server, instance


def created(instance: DagsterInstance, run: DagsterRun) -> datetime:
    record = instance.get_run_record_by_id(run.run_id)
    assert record is not None
    return record.create_timestamp


def ended(instance: DagsterInstance, run: DagsterRun) -> datetime:
    record = instance.get_run_record_by_id(run.run_id)
    assert record is not None
    assert record.end_time is not None
    return datetime.fromtimestamp(record.end_time, UTC)


def covers_hour(run: DagsterRun, partition_key: str) -> bool:
    """Whether ``run`` syncs the hour: its partition, or within its range (UTC keys sort as times)."""
    if run.tags.get("dagster/partition") == partition_key:
        return True
    first = run.tags.get("dagster/asset_partition_range_start")
    last = run.tags.get("dagster/asset_partition_range_end")
    return first is not None and last is not None and first <= partition_key <= last


def materialized_once(instance: DagsterInstance, keys: list[str]) -> None:
    """Each hour materialized exactly once: no second request while a run of it was in progress."""
    for key in keys:
        records = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=KEY, asset_partitions=[key]), limit=10
        ).records
        assert len(records) == 1, key


@pytest.mark.slow
def test_dagster_dev_catches_up_a_gap_by_itself(make_db_url: MakeDbUrl, tmp_path: Path) -> None:
    """Ten hours since the table's start, only the last one synced, the schedule stopped: ``dagster dev``
    syncs the nine missed hours by itself, through one backfill of ranged runs, each hour once, and
    each equals the source.
    """
    now = current_hour()
    hours = [Window.hour_starting(now - timedelta(hours=h)) for h in range(10, 0, -1)]
    source = side("sqlite", f"sqlite:///{tmp_path / 'source.db'}")
    target = side("postgresql", make_db_url("postgresql", "target"))
    create_source(
        source, [row(i, in_hour(w, i)) for n, w in enumerate(hours) for i in range(n * 10 + 1, n * 10 + 4)]
    )
    config = write_orders_config(
        tmp_path / "sync.yaml",
        source,
        target,
        start=hours[0].start.strftime("%Y-%m-%dT%H:%M:%S"),
        schedule={"enabled": False},
        catch_up={"interval_seconds": 30},
        freshness={"interval_seconds": 30, "grace_minutes": 0},
        drift={"enabled": False},
    )
    missed = [w.partition_key() for w in hours[:-1]]
    with deployed(tmp_path, config, hours[-1].partition_key()) as (server, instance):

        def caught_up() -> bool | None:
            return True if set(missed) <= instance.get_materialized_partitions(KEY) else None

        wait_for("the catch-up of nine hours", caught_up, 420, server.dead)
        runs = wait_for("the catch-up runs to finish", lambda: finished_runs(instance), 300, server.dead)
        catch_up_runs = [r for r in runs if r.tags.get("dagster/sensor_name") == CATCH_UP_SENSOR]
        assert catch_up_runs, server.log_tail()
        assert all(r.status == DagsterRunStatus.SUCCESS for r in catch_up_runs), server.log_tail()
        assert len(catch_up_runs) < len(missed), "ranged runs: many hours a run"
        assert len({r.tags["dagster/backfill"] for r in catch_up_runs}) == 1, "one backfill"
        materialized_once(instance, missed)
    for window in hours:
        assert rows_in(target, "orders", window) == rows_in(source, "orders", window), window.partition_key()


@pytest.mark.slow
def test_a_failing_hour_is_alerted_and_retried_by_the_catch_up_with_a_backoff(
    make_db_url: MakeDbUrl, tmp_path: Path
) -> None:
    """Five missed hours, the third holding bad data (a duplicate key): the catch-up's run fails at it,
    and the run-failure alert names the hour and says when the catch-up retries it (1 minute after
    the failure). The retry fails too: it was requested no earlier than that, and its alert says the
    wait is now 2 minutes. Once the data is fixed, the next retry (again no earlier than its time)
    syncs the failed hour and the ones after it, each once.
    """
    now = current_hour()
    hours = [Window.hour_starting(now - timedelta(hours=h)) for h in range(6, 0, -1)]
    source = side("sqlite", f"sqlite:///{tmp_path / 'source.db'}")
    target = side("postgresql", make_db_url("postgresql", "target"))
    plain = sa.Table("orders", sa.MetaData(), *(sa.Column(c.name, c.type) for c in source_table().columns))
    plain.metadata.create_all(source.engine)
    bad = hours[2]
    insert(
        source,
        plain,
        [row(i, in_hour(w, i)) for n, w in enumerate(hours) for i in range(n * 10 + 1, n * 10 + 4)],
    )
    insert(source, plain, [row(21, in_hour(bad, 40))])  # id 21 is already in that hour
    with serve() as receiver:
        config = write_orders_config(
            tmp_path / "sync.yaml",
            source,
            target,
            start=hours[0].start.strftime("%Y-%m-%dT%H:%M:%S"),
            schedule={"enabled": False},
            catch_up={"interval_seconds": 30, "retry_failed_after_minutes": 1, "retry_failed_max_minutes": 4},
            freshness={"enabled": False},
            drift={"enabled": False},
            alerts=[{"webhook": receiver.url(), "format": "json"}],
        )
        missed = [w.partition_key() for w in hours[:-1]]
        with deployed(tmp_path, config, hours[-1].partition_key()) as (server, instance):

            def failure_alerts(count: int) -> list[dict[str, Any]] | None:
                alerts = receiver.alerts("run_failure")
                return alerts if len(alerts) >= count else None

            [alert] = wait_for("the run-failure alert", lambda: failure_alerts(1), 420, server.dead)
            assert alert["partition_key"] == bad.partition_key(), alert
            retry_note = (
                r"the catch-up requests it again at \d{{4}}-\d\d-\d\d \d\d:\d\d UTC \(failed {}: next "
                r"wait {} min; failed ones after 1 min, the wait doubling up to 4 min\)"
            )
            assert re.fullmatch(retry_note.format("once", 1), alert["facts"]["catch_up"]), alert
            # The step's own error, naming the key ("... key 21 ...; the primary_key columns must be unique").
            assert "21" in alert["facts"]["error"], alert
            assert "unique" in alert["facts"]["error"], alert

            [second_alert] = wait_for("the retry's failure", lambda: failure_alerts(2), 420, server.dead)[1:]
            assert second_alert["partition_key"] == bad.partition_key(), second_alert
            assert re.fullmatch(retry_note.format("2 times", 2), second_alert["facts"]["catch_up"])
            delete(source, plain, (plain.c.id == 21) & (plain.c.updated_at == in_hour(bad, 40)))

            def caught_up() -> bool | None:
                return True if set(missed) <= instance.get_materialized_partitions(KEY) else None

            wait_for("the retry of the failed hours", caught_up, 420, server.dead)
            runs = wait_for("the catch-up runs to finish", lambda: finished_runs(instance), 300, server.dead)
            catch_up_runs = sorted(
                (r for r in runs if r.tags.get("dagster/sensor_name") == CATCH_UP_SENSOR),
                key=lambda r: created(instance, r),
            )
            failed = [r for r in catch_up_runs if r.status == DagsterRunStatus.FAILURE]
            assert len(failed) == 2, [(r.run_id, r.status, r.tags) for r in catch_up_runs]
            assert len(catch_up_runs) <= 4, "no pile-up of requests for the failed hours"
            # Each retry was requested no earlier than its backoff allowed: 1, then 2 minutes.
            first_retry, second_retry = [r for r in catch_up_runs if covers_hour(r, bad.partition_key())][1:3]
            assert created(instance, first_retry) >= ended(instance, failed[0]) + timedelta(minutes=1)
            assert created(instance, second_retry) >= ended(instance, failed[1]) + timedelta(minutes=2)
            materialized_once(instance, missed)
        assert len(receiver.alerts("run_failure")) == 2
    for window in hours:
        assert rows_in(target, "orders", window) == rows_in(source, "orders", window), window.partition_key()


@pytest.mark.slow
def test_the_demo_catches_up_its_history_by_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo's first start as ``sync-pipeline dev`` does it: the last hour synced first, then
    ``dagster dev``; the 47 earlier hours of every table are synced by the catch-up within minutes,
    with nobody at the UI, and the freshness check then reports no missing hour.
    """
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(INSTANCE_YAML, home / "dagster.yaml")
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k not in (CONFIG_ENV_VAR, "DAGSTER_HOME")}
    env.update({"DAGSTER_HOME": str(home), DATA_DIR_ENV: str(data)})
    monkeypatch.setenv(DATA_DIR_ENV, str(data))  # sync_last_hour reads the demo's folder from here
    config = demo_config(data)
    [(_, partitions)] = build_jobs(config)
    sync_last_hour(env)
    keys = {asset_key(t): t for t in config.tables}

    with (
        dagster_dev(tmp_path, env) as server,
        DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance,
    ):
        first = {k: len(instance.get_materialized_partitions(k)) for k in keys}
        assert set(first.values()) == {1}, f"only the last hour synced at first start: {first}"

        def caught_up() -> bool | None:
            for key in keys:
                status = evaluate_freshness(instance, key, partitions, config, datetime.now(UTC))
                if status.partition_key is None or status.missing:
                    return None
            return True

        wait_for("the demo's catch-up", caught_up, 420, server.dead)
        for key in keys:
            assert len(instance.get_materialized_partitions(key)) >= 48, key
