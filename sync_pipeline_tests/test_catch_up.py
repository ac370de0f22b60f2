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
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    DagsterRunStatus,
    Definitions,
    RunsFilter,
    evaluate_automation_conditions,
    instance_for_test,
)
from dagster._core.execution.backfill import PartitionBackfill
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.dagster_run import DagsterRun

from sync_pipeline.cli.dev import sync_last_hour
from sync_pipeline.config import CONFIG_ENV_VAR, parse_config
from sync_pipeline.demo.config import DATA_DIR_ENV, demo_config
from sync_pipeline.engine.diff.window import Window
from sync_pipeline.errors import ConfigError
from sync_pipeline.orchestration.assets import asset_key
from sync_pipeline.orchestration.catch_up import CATCH_UP_SENSOR, catch_up_condition, retry_cron
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
    DAGSTER,
    INSTANCE_YAML,
    location_loaded,
    server_info,
    stop_group,
    wait_for,
)
from sync_pipeline_tests.helpers import delete, free_port, insert
from sync_pipeline_tests.test_dagster_dev import Demo, DevServer
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
    an hour in a run not started yet is not requested again (no pile-up); a failed hour waits for
    the retry tick at minute 40, then is requested again.
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

    # 07:00 in a run not started yet; 05:00 failed (its source table was gone while it ran).
    instance.create_run_for_job(
        job_def=job,
        tags={"dagster/partition": "2026-11-30-07:00"},
        status=DagsterRunStatus.NOT_STARTED,
        asset_selection=frozenset({KEY}),
    )
    with source.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE orders RENAME TO orders_away"))
    failed = job.execute_in_process(instance=instance, partition_key="2026-11-30-05:00", raise_on_error=False)
    assert not failed.success
    with source.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE orders_away RENAME TO orders"))

    second, cursor = requested(defs, instance, "2026-11-30T10:20", cursor)
    assert second == ["2026-11-30-04:00", "2026-11-30-08:00"]
    third, cursor = requested(defs, instance, "2026-11-30T10:39", cursor)
    assert third == ["2026-11-30-04:00", "2026-11-30-08:00"]
    retry, cursor = requested(defs, instance, "2026-11-30T10:41", cursor)  # the retry tick, 10:40, passed
    assert retry == ["2026-11-30-04:00", "2026-11-30-05:00", "2026-11-30-08:00"]

    assert job.execute_in_process(instance=instance, partition_key="2026-11-30-05:00").success
    after, _ = requested(defs, instance, "2026-11-30T10:45", cursor)
    assert after == ["2026-11-30-04:00", "2026-11-30-08:00"]


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
        base + ', "catch_up": {"retry_failed_every_minutes": 180}, "schedule": {"minute": 50}}', environ={}
    )
    assert retry_cron(config) == "20 */3 * * *"
    assert catch_up_condition(config) is not None
    every_five = parse_config(base + ', "catch_up": {"retry_failed_every_minutes": 5}}', environ={})
    assert retry_cron(every_five) == "*/5 * * * *"
    for minutes in (0, 7, 90, 300):
        with pytest.raises(ConfigError, match="retry_failed_every_minutes"):
            parse_config(base + f', "catch_up": {{"retry_failed_every_minutes": {minutes}}}}}', environ={})
    off = parse_config(base + ', "catch_up": {"enabled": false, "max_hours": 400}}', environ={})
    assert catch_up_condition(off) is None


# -- the real daemon --------------------------------------------------------------------------------


def current_hour() -> datetime:
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


@contextmanager
def deployed(tmp_path: Path, config: Path, newest: str) -> Iterator[tuple[DevServer, DagsterInstance]]:
    """``newest`` synced through the hourly job (as the schedule would), then ``dagster dev`` running
    ``config`` with a fresh ``DAGSTER_HOME``, until its code location has loaded; and its instance.
    """
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(INSTANCE_YAML, home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if k not in (CONFIG_ENV_VAR, "DAGSTER_HOME", DATA_DIR_ENV)}
    env.update({"DAGSTER_HOME": str(home), CONFIG_ENV_VAR: str(config)})
    done = subprocess.run(
        [
            *(str(DAGSTER), "job", "execute", "-m", "sync_pipeline.definitions", "-j", "sync_hourly"),
            *("--tags", json.dumps({"dagster/partition": newest})),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    port = free_port()
    log = tmp_path / "dagster.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(DAGSTER), "dev", "-m", "sync_pipeline.definitions", "-h", "127.0.0.1", "-p", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        server = DevServer(f"http://127.0.0.1:{port}", process, Demo(home, tmp_path / "data", env, log))
        wait_for("the webserver", lambda: server_info(server.url), 180, server.dead)
        wait_for("the code location", lambda: location_loaded(server.url), 180, server.dead)
        with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
            yield server, instance
    finally:
        stop_group(process)


def finished_runs(instance: DagsterInstance) -> list[DagsterRun] | None:
    """Every run of the instance once none is unfinished, else ``None``."""
    runs = [r.dagster_run for r in instance.get_run_records(RunsFilter())]
    return None if any(not r.is_finished for r in runs) else runs


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
        assert catch_up_runs, server.demo.log_tail()
        assert all(r.status == DagsterRunStatus.SUCCESS for r in catch_up_runs), server.demo.log_tail()
        assert len(catch_up_runs) < len(missed), "ranged runs: many hours a run"
        assert len({r.tags["dagster/backfill"] for r in catch_up_runs}) == 1, "one backfill"
        materialized_once(instance, missed)
    for window in hours:
        assert rows_in(target, "orders", window) == rows_in(source, "orders", window), window.partition_key()


@pytest.mark.slow
def test_a_failing_hour_is_alerted_and_retried_by_the_catch_up(
    make_db_url: MakeDbUrl, tmp_path: Path
) -> None:
    """Five missed hours, the third holding bad data (a duplicate key): the catch-up's run fails at it,
    the run-failure alert names the hour and says the catch-up will retry it and when; once the data
    is fixed, the catch-up's retry tick syncs the failed hour and the ones after it, each once.
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
            catch_up={"interval_seconds": 30, "retry_failed_every_minutes": 2},
            freshness={"enabled": False},
            drift={"enabled": False},
            alerts=[{"webhook": receiver.url(), "format": "json"}],
        )
        missed = [w.partition_key() for w in hours[:-1]]
        with deployed(tmp_path, config, hours[-1].partition_key()) as (server, instance):
            [alert] = wait_for(
                "the run-failure alert", lambda: receiver.alerts("run_failure") or None, 420, server.dead
            )
            assert alert["partition_key"] == bad.partition_key(), alert
            assert (
                alert["facts"]["catch_up"] == "the catch-up requests it again (failed ones every 2 minutes)"
            )
            # The step's own error, naming the key ("... key 21 ...; the primary_key columns must be unique").
            assert "21" in alert["facts"]["error"], alert
            assert "unique" in alert["facts"]["error"], alert
            delete(source, plain, (plain.c.id == 21) & (plain.c.updated_at == in_hour(bad, 40)))

            def caught_up() -> bool | None:
                return True if set(missed) <= instance.get_materialized_partitions(KEY) else None

            wait_for("the retry of the failed hours", caught_up, 420, server.dead)
            runs = wait_for("the catch-up runs to finish", lambda: finished_runs(instance), 300, server.dead)
            catch_up_runs = [r for r in runs if r.tags.get("dagster/sensor_name") == CATCH_UP_SENSOR]
            failed = [r for r in catch_up_runs if r.status == DagsterRunStatus.FAILURE]
            assert len(failed) == 1, [(r.run_id, r.status, r.tags) for r in catch_up_runs]
            assert len(catch_up_runs) <= 3, "no pile-up of requests for the failed hours"
            materialized_once(instance, missed)
        assert len(receiver.alerts("run_failure")) == 1
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

    port = free_port()
    log = tmp_path / "dagster.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(DAGSTER), "dev", "-m", "sync_pipeline.definitions", "-h", "127.0.0.1", "-p", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        server = DevServer(f"http://127.0.0.1:{port}", process, Demo(home, data, env, log))
        wait_for("the webserver", lambda: server_info(server.url), 180, server.dead)
        wait_for("the code location", lambda: location_loaded(server.url), 180, server.dead)
        with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
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
    finally:
        stop_group(process)
