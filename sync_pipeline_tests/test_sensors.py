"""Tests of the sensors (orchestration.sensors), ticked as the daemon ticks them, alerting over real HTTP.

Each test deploys a config file on real databases (a SQLite source, a PostgreSQL target) whose
``alerts:`` section names two webhooks: a WeCom robot on a closed loopback port, listed first, which
fails every delivery, and a JSON receiver on loopback that records what it is sent. Both URLs carry
tokens in the path and the query. Ticks run through ``evaluate_tick`` on a real temporary instance,
with the code location's resources and repository; the runs the sensors react to (syncs, drift
checks, repairs) are executed for real on that instance.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    Definitions,
    ExecuteInProcessResult,
    RunRequest,
    build_run_status_sensor_context,
    build_sensor_context,
    instance_for_test,
)
from dagster._core.definitions.sensor_definition import SensorExecutionData
from dagster._core.remote_origin import (
    InProcessCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from sync_pipeline.config import AlertFormat, parse_config
from sync_pipeline.engine.diff.window import Window
from sync_pipeline.orchestration import sensors
from sync_pipeline.orchestration.assets import COMPARE_TAG, REASON_TAG
from sync_pipeline.orchestration.checks import IN_SYNC_CHECK
from sync_pipeline_tests.conftest import MakeDbUrl
from sync_pipeline_tests.dagster_helpers import (
    create_source,
    in_hour,
    load_definitions,
    row,
    rows_in,
    side,
    utc,
    write_orders_config,
)
from sync_pipeline_tests.helpers import Side, delete, free_port, update
from sync_pipeline_tests.webhook_server import HOOK_PATH, SECRETS, Receiver, serve

KEY = AssetKey(["sync", "orders"])
UI_URL = "http://127.0.0.1:3999"
PARTITION_TAG = "dagster/partition"

Deploy = Callable[..., "Site"]


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Capture every logger from DEBUG up: urllib3 quotes request URLs, tokens included, at DEBUG."""
    caplog.set_level(logging.DEBUG)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serve() as running:
        yield running


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as temp:
        yield temp


@dataclass
class Site:
    """A deployed config: its databases, definitions, instance and the webhook receiving its alerts."""

    source: Side
    target: Side
    defs: Definitions
    instance: DagsterInstance
    receiver: Receiver
    dead_port: int

    def tick(self, sensor_name: str, cursor: str | None = None) -> SensorExecutionData:
        """One evaluation of ``sensor_name``, as the daemon runs it: with the repository and resources."""
        repository = self.defs.get_repository_def()
        with build_sensor_context(
            instance=self.instance,
            cursor=cursor,
            repository_def=repository,
            resources=self.defs.resources,
            sensor_name=sensor_name,
        ) as context:
            return repository.get_sensor_def(sensor_name).evaluate_tick(context)

    def sync(self, partition_key: str) -> ExecuteInProcessResult:
        job = self.defs.resolve_job_def("sync_hourly")
        result = job.execute_in_process(instance=self.instance, partition_key=partition_key)
        assert result.success
        return result

    def drift_check(self) -> ExecuteInProcessResult:
        """Execute the drift_check job the drift sensor requests, for real, on the instance."""
        result = self.defs.resolve_job_def("drift_check").execute_in_process(instance=self.instance)
        assert result.success
        return result

    def execute(self, request: RunRequest) -> ExecuteInProcessResult:
        """Execute a run request as the daemon would launch it: its job, subset, partition and tags."""
        assert request.job_name is not None
        job = self.defs.resolve_job_def(request.job_name)
        if request.asset_selection is not None:
            job = job.get_subset(
                asset_selection=set(request.asset_selection),
                asset_check_selection=None
                if request.asset_check_keys is None
                else set(request.asset_check_keys),
            )
        tags = {k: v for k, v in request.tags.items() if k != PARTITION_TAG}
        result = job.execute_in_process(
            instance=self.instance, partition_key=request.partition_key, tags=tags
        )
        assert result.success
        return result


@pytest.fixture
def deploy(make_db_url: MakeDbUrl, tmp_path: Path, instance: DagsterInstance, receiver: Receiver) -> Deploy:
    """``deploy(start, rows, **top)``: a Site syncing ``orders`` from ``start`` (``rows=None``: no table)."""
    dead_port = free_port()

    def deploy(start: str, rows: list[dict[str, Any]] | None, **top: Any) -> Site:
        source = side("sqlite", make_db_url("sqlite", "source"))
        target = side("postgresql", make_db_url("postgresql", "target"))
        if rows is not None:
            create_source(source, rows)
        alerts = [
            {
                "webhook": f"http://127.0.0.1:{dead_port}{HOOK_PATH}",
                "format": AlertFormat.WECOM.value,
                "timeout_seconds": 1,
                "retries": 1,
            },
            {"webhook": receiver.url(), "format": AlertFormat.JSON.value, "timeout_seconds": 5},
        ]
        path = write_orders_config(
            tmp_path / "sync.yaml", source, target, start=start, alerts=alerts, ui_url=UI_URL, **top
        )
        return Site(source, target, load_definitions(str(path)), instance, receiver, dead_port)

    return deploy


def assert_no_secrets(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str], *values: Any
) -> str:
    """No webhook token in any log record, in the process's stdout/stderr, or in ``values``.

    Returns the captured stderr, for assertions on what the sensors logged.
    """
    out, err = capfd.readouterr()
    for secret in SECRETS:
        assert secret not in out
        assert secret not in err
        for record in caplog.records:
            assert secret not in record.getMessage(), record.name
        for value in values:
            assert secret not in repr(value)
    return err


def assert_delivered_only_to_the_receiver(site: Site, err: str) -> None:
    """Every alert reached the JSON receiver at its URL; the dead WeCom sink's failures were logged."""
    assert {d.path for d in site.receiver.deliveries} == {HOOK_PATH}
    assert f"alert not delivered to http://127.0.0.1:{site.dead_port}/***: connection failed" in err


def check_evaluations(data: SensorExecutionData) -> list[tuple[str, bool, str]]:
    """(check name, passed, partition) of each check evaluation a tick recorded."""
    found = []
    for event in data.asset_events:
        assert isinstance(event, AssetCheckEvaluation)
        assert event.asset_key == KEY
        partition = event.metadata["partition"]
        found.append((event.check_name, event.passed, getattr(partition, "value", partition)))
    return found


# -- freshness_sensor -------------------------------------------------------------------------------


@dataclass
class Clock:
    """The freshness sensor's clock, set by the test: whether an hour is missed depends on nothing else."""

    at: datetime


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock(utc("2026-11-30T10:20"))

    class Now(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return clock.at.astimezone(tz or UTC)

    monkeypatch.setattr(sensors, "datetime", Now)
    return clock


BACKOFF = "failed ones after 60 min, the wait doubling up to 24 h"
CATCH_UP_NOTE = "the catch-up requests {} again (" + BACKOFF + ")"


# -- drift_sensor -----------------------------------------------------------------------------------


def hours_back(hours: int) -> Window:
    """The hour ``hours`` before the current one: the drift check compares the hours before the clock."""
    return Window.hour_starting(
        datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours)
    )


def start_before(hours: int) -> str:
    """A table ``start`` ``hours`` hours before the current hour."""
    return hours_back(hours).start.strftime("%Y-%m-%dT%H:%M:%S")


@pytest.fixture
def drifting(deploy: Deploy) -> tuple[Site, sa.Table, str, str]:
    """Two synced hours of ``orders`` (three and two hours back), then tampered with behind the pipeline.

    Hour A: a target row deleted, a target value changed without touching updated_at, and a source
    row deleted (3 rows). Hour B: one target value changed (1 row).
    """
    a, b = hours_back(3), hours_back(2)
    rows = [row(i, in_hour(a, i)) for i in range(1, 6)] + [row(i, in_hour(b, i)) for i in range(6, 10)]
    # Compared at an hour old (the default waits for the lookback's last hour: this is about the sensor).
    site: Site = deploy(start_before(5), rows, drift={"lookback_hours": 6, "milestones_minutes": [60]})
    key_a, key_b = a.partition_key(), b.partition_key()
    site.sync(key_a)
    site.sync(key_b)
    orders = sa.Table("orders", sa.MetaData(), autoload_with=site.source.engine)
    target = sa.Table("orders", sa.MetaData(), autoload_with=site.target.engine)
    delete(site.target, target, target.c.id == 1)
    update(site.target, target, target.c.id == 2, amount=999, note="edited in the warehouse")
    delete(site.source, orders, orders.c.id == 3)
    update(site.target, target, target.c.id == 7, customer="someone else")
    return site, orders, key_a, key_b


def is_check_request(request: RunRequest) -> bool:
    return request.job_name == "drift_check" and (request.run_key or "").startswith("drift-check:")


def add_run(
    instance: DagsterInstance, job_name: str, status: DagsterRunStatus, tags: dict[str, str] | None = None
) -> DagsterRun:
    """Record a run of ``job_name`` in ``status``, as the daemon would have created it."""
    origin = RemoteJobOrigin(
        RemoteRepositoryOrigin(
            InProcessCodeLocationOrigin(LoadableTargetOrigin(module_name="sync_pipeline.definitions")),
            "__repository__",
        ),
        job_name,
    )
    return instance.add_run(
        DagsterRun(job_name=job_name, status=status, tags=tags or {}, remote_job_origin=origin)
    )


# Compared when an hour old: the hour three back (ended two hours ago) is due once synced.
DUE_AT_AN_HOUR = {"lookback_hours": 6, "milestones_minutes": [60]}


def with_an_hour_due(deploy: Deploy) -> Site:
    """A deployment whose hour three back is synced and due a comparison (none run yet)."""
    site: Site = deploy(start_before(3), [], drift=DUE_AT_AN_HOUR)
    site.sync(hours_back(3).partition_key())
    return site


def test_a_drift_tick_requests_a_check_run_only_when_an_hour_is_due(
    deploy: Deploy, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """A run with nothing to compare would still cost a run and a step per table: none is requested
    before an hour is synced, nor for an hour younger than its milestone; once one is due a tick
    requests a drift_check run (to compare in a step process) and alerts nothing; once that run has
    compared it, no run again until its next milestone."""
    site: Site = deploy(start_before(3), [], drift=DUE_AT_AN_HOUR)
    assert site.tick("drift_sensor").run_requests == []  # nothing synced
    site.sync(hours_back(1).partition_key())  # under an hour old: not due yet
    assert site.tick("drift_sensor").run_requests == []

    site.sync(hours_back(3).partition_key())  # two hours old: due
    data = site.tick("drift_sensor")

    [request] = data.run_requests or []
    assert is_check_request(request)
    assert request.partition_key is None
    assert request.asset_selection is None
    assert json.loads(data.cursor or "") == {"orders": []}
    assert site.receiver.alerts() == []
    assert_no_secrets(caplog, capfd, data)

    [evaluation] = site.drift_check().get_asset_check_evaluations()
    assert evaluation.passed
    assert site.tick("drift_sensor", data.cursor).run_requests == []


@pytest.mark.parametrize("status", [DagsterRunStatus.QUEUED, DagsterRunStatus.STARTED])
def test_no_second_drift_check_while_one_is_in_flight(deploy: Deploy, status: DagsterRunStatus) -> None:
    """A drift_check run queued or running blocks a new request; once it has ended, a tick requests again."""
    site = with_an_hour_due(deploy)
    run = add_run(site.instance, "drift_check", status)

    assert site.tick("drift_sensor").run_requests == []

    site.instance.report_run_canceled(run)
    [request] = site.tick("drift_sensor").run_requests or []
    assert is_check_request(request)


def test_no_drift_check_while_a_repair_is_in_flight(deploy: Deploy) -> None:
    """A repair run still syncing would make a new check find the same drift again: no check until it ends."""
    site = with_an_hour_due(deploy)
    run = add_run(site.instance, "sync_hourly", DagsterRunStatus.STARTED, {REASON_TAG: "drift"})

    assert site.tick("drift_sensor").run_requests == []

    site.instance.report_run_canceled(run)
    [request] = site.tick("drift_sensor").run_requests or []
    assert is_check_request(request)


def test_drift_is_alerted_per_partition_and_repaired_by_the_requested_runs(
    drifting: tuple[Site, sa.Table, str, str],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """After a drift_check run finds drift, a tick alerts once per drifted partition and requests its repair.

    Each alert names the table, the partition, the rows differing and links to the asset; each
    repair request re-syncs exactly that partition of ``sync/orders`` comparing full rows, with only
    the in_sync check, keyed by the check run. The same finished run is never handled twice. Running
    the repairs makes the target equal the source, and the next drift check passes.
    """
    site, _, key_a, key_b = drifting
    check_run = site.drift_check()
    [evaluation] = check_run.get_asset_check_evaluations()
    assert not evaluation.passed

    handled = site.tick("drift_sensor")

    alerts = sorted(site.receiver.alerts("drift"), key=lambda a: a["partition_key"])
    assert [(a["table"], a["partition_key"], a["facts"]) for a in alerts] == [
        ("orders", key_a, {"rows_differing": 3, "check_run_id": check_run.run_id}),
        ("orders", key_b, {"rows_differing": 1, "check_run_id": check_run.run_id}),
    ]
    for alert, key in zip(alerts, (key_a, key_b), strict=True):
        assert alert["link"] == f"{UI_URL}/assets/sync/orders?view=partitions&partition={key}"
        assert f"Drift in orders partition {key}" in alert["summary"]
    requests = sorted(handled.run_requests or [], key=lambda r: r.partition_key or "")
    assert [
        (r.job_name, r.partition_key, r.asset_selection, r.asset_check_keys, r.run_key) for r in requests
    ] == [
        (
            "sync_hourly",
            key,
            [KEY],
            [AssetCheckKey(KEY, IN_SYNC_CHECK)],
            f"drift-repair:orders:{key}:{check_run.run_id}",
        )
        for key in (key_a, key_b)
    ]
    assert all(r.tags[COMPARE_TAG] == "row" and r.tags[REASON_TAG] == "drift" for r in requests)

    # The same finished run is not handled again; both hours were just compared: no new check.
    again = site.tick("drift_sensor", handled.cursor)
    assert again.run_requests == []
    assert len(site.receiver.alerts("drift")) == 2

    for request in requests:
        repair = site.execute(request)
        steps = {e.step_key for e in repair.all_events if e.event_type == DagsterEventType.STEP_START}
        assert steps == {"sync__orders"}  # no drift or freshness check rides along
        [in_sync] = repair.get_asset_check_evaluations()
        assert (in_sync.check_name, in_sync.passed) == (IN_SYNC_CHECK, True)
        assert repair.dagster_run.tags[REASON_TAG] == "drift"
    for key in (key_a, key_b):
        window = Window.from_partition_key(key)
        assert rows_in(site.target, "orders", window) == rows_in(site.source, "orders", window)

    [after] = site.drift_check().get_asset_check_evaluations()
    assert after.passed
    quiet = site.tick("drift_sensor", again.cursor)
    assert quiet.run_requests == []
    assert len(site.receiver.alerts("drift")) == 2

    err = assert_no_secrets(caplog, capfd, handled, again, quiet)
    assert_delivered_only_to_the_receiver(site, err)


def test_drift_found_by_a_run_that_selected_all_checks_is_alerted_and_repaired(
    drifting: tuple[Site, sa.Table, str, str],
) -> None:
    """A materialization from the UI (or a backfill, or the catch-up) runs the asset's drift check too;
    the drift it finds is alerted and repaired like the drift_check job's, once.
    """
    site, _, key_a, key_b = drifting
    job = site.defs.resolve_implicit_global_asset_job_def()
    manual = job.execute_in_process(instance=site.instance, partition_key=key_a, asset_selection=[KEY])
    assert manual.success
    [drift] = [e for e in manual.get_asset_check_evaluations() if e.check_name == "drift"]
    assert not drift.passed

    handled = site.tick("drift_sensor")

    alerts = site.receiver.alerts("drift")
    # The re-sync of key_a fixed the deleted rows but not the value changed without updated_at.
    assert sorted((a["partition_key"], a["facts"]["rows_differing"]) for a in alerts) == [
        (key_a, 1),
        (key_b, 1),
    ]
    assert {a["facts"]["check_run_id"] for a in alerts} == {manual.run_id}
    repairs = [r for r in handled.run_requests or [] if not is_check_request(r)]
    assert sorted(r.partition_key or "" for r in repairs) == [key_a, key_b]
    for request in repairs:
        site.execute(request)
    for key in (key_a, key_b):
        window = Window.from_partition_key(key)
        assert rows_in(site.target, "orders", window) == rows_in(site.source, "orders", window)
    again = site.tick("drift_sensor", handled.cursor)
    assert [r for r in again.run_requests or [] if not is_check_request(r)] == []
    assert len(site.receiver.alerts("drift")) == 2


# -- sync_failure_sensor ----------------------------------------------------------------------------


@pytest.mark.parametrize("selected", [False, True], ids=["scheduled-job-run", "asset-selection-run"])
def test_failed_sync_run_is_alerted_with_table_partition_and_error(
    deploy: Deploy,
    selected: bool,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A sync run that fails (the source table does not exist) is alerted with the table, partition and error.

    The table is named whether the run is the whole hourly job (as the schedule launches it) or an
    asset selection; the error is the step's, not the run's "steps failed" summary. The alert says
    that the catch-up will request the hour again, and when.
    """
    site: Site = deploy("2026-11-30T00:00:00", None)
    job = site.defs.resolve_job_def("sync_hourly")
    failed = job.execute_in_process(
        instance=site.instance,
        partition_key="2026-11-30-08:00",
        asset_selection=[KEY] if selected else None,
        raise_on_error=False,
    )
    assert not failed.success
    repository = site.defs.get_repository_def()
    context = build_run_status_sensor_context(
        sensor_name="sync_failure_sensor",
        dagster_event=failed.get_run_failure_event(),
        dagster_instance=site.instance,
        dagster_run=failed.dagster_run,
        resources=site.defs.resources,
        repository_def=repository,
    ).for_run_failure()

    repository.get_sensor_def("sync_failure_sensor")(context)

    [alert] = site.receiver.alerts()
    error = "source table 'orders' (connection 'app') does not exist"
    assert {k: alert[k] for k in ("kind", "table", "partition_key", "link")} == {
        "kind": "run_failure",
        "table": "orders",
        "partition_key": "2026-11-30-08:00",
        "link": f"{UI_URL}/runs/{failed.run_id}",
    }
    # The hour failed once: it is requested again 60 minutes after its run ended.
    record = site.instance.get_run_record_by_id(failed.run_id)
    assert record is not None
    assert record.end_time is not None
    due = datetime.fromtimestamp(record.end_time, UTC) + timedelta(minutes=60)
    when = f"at {due:%Y-%m-%d %H:%M} UTC (failed once: next wait 60 min; {BACKOFF})"
    note = f"the catch-up requests it again {when}"
    assert alert["facts"] == {"run_id": failed.run_id, "job": "sync_hourly", "error": error, "catch_up": note}
    assert (
        alert["summary"] == f"Run failure: sync of orders partition 2026-11-30-08:00 failed: {error}; {note}"
    )
    err = assert_no_secrets(caplog, capfd)
    assert_delivered_only_to_the_receiver(site, err)


def test_asset_link_quotes_the_repeated_dst_hour() -> None:
    """The link of the second 02:00 of an autumn night keeps its "+" (a bare "+" would read as a space)."""
    parsed = parse_config(
        '{"connections": {"a": {"url": "sqlite:///a.db"}}, "ui_url": "http://ui:3000/",'
        ' "tables": [{"name": "t", "source": {"connection": "a", "table": "t"},'
        ' "target": {"connection": "a", "table": "u"}, "primary_key": ["id"], "updated_at": "ts",'
        ' "start": "2026-10-01T00:00:00"}]}',
        environ={},
    )
    link = sensors.asset_link(parsed, KEY, "2026-10-25-02:00+0100")
    assert link == "http://ui:3000/assets/sync/orders?view=partitions&partition=2026-10-25-02:00%2B0100"


# -- unplaced_sensor --------------------------------------------------------------------------------


def test_rows_whose_updated_at_no_hour_holds_are_checked_and_alerted_once_per_change(
    deploy: Deploy, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """A SQLite ``updated_at`` stored as a number is in no hour: every sync counts it in
    ``unplaced_updated_at`` and none copies it. The sensor records the ``updated_at_placed`` check
    (WARN) failing and alerts once, naming the table, the partition and the count; more syncs
    counting the same row alert nothing more; a second such row alerts again; once the rows are
    fixed the check passes, without an alert. Before, the count was in the metadata only."""
    a, b, c = hours_back(4), hours_back(3), hours_back(2)
    site: Site = deploy(
        start_before(6), [row(1, in_hour(a, 5)), row(2, in_hour(b, 5)), row(3, in_hour(c, 5))]
    )
    with site.source.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO orders (id, customer, amount, updated_at) VALUES (90, 'x', 1, 1796112300)"
        )
    key_a, key_b, key_c = a.partition_key(), b.partition_key(), c.partition_key()

    site.sync(key_a)
    first = site.tick("unplaced_sensor")
    [evaluation] = first.asset_events
    assert isinstance(evaluation, AssetCheckEvaluation)
    assert (evaluation.check_name, evaluation.passed) == ("updated_at_placed", False)
    assert evaluation.severity.value == "WARN"
    assert evaluation.metadata["unplaced_updated_at"].value == 1
    [alert] = site.receiver.alerts("unplaced_rows")
    assert alert["table"] == "orders"
    assert alert["partition_key"] == key_a
    assert alert["facts"]["unplaced_updated_at"] == 1
    assert "not synced" in alert["summary"]

    site.sync(key_b)
    same = site.tick("unplaced_sensor", first.cursor)
    assert same.asset_events == []
    assert len(site.receiver.alerts("unplaced_rows")) == 1

    with site.source.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO orders (id, customer, amount, updated_at) VALUES (91, 'y', 1, 1796112301)"
        )
    site.sync(key_c)
    more = site.tick("unplaced_sensor", same.cursor)
    assert [(e.check_name, e.passed) for e in more.asset_events] == [("updated_at_placed", False)]
    assert [a["facts"]["unplaced_updated_at"] for a in site.receiver.alerts("unplaced_rows")] == [1, 2]
    assert site.receiver.alerts("unplaced_rows")[1]["partition_key"] == key_c

    with site.source.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE orders SET updated_at = '2026-01-01 00:00:00' WHERE id IN (90, 91)")
    site.sync(key_c)
    fixed = site.tick("unplaced_sensor", more.cursor)
    assert [(e.check_name, e.passed) for e in fixed.asset_events] == [("updated_at_placed", True)]
    assert len(site.receiver.alerts("unplaced_rows")) == 2
    assert_no_secrets(caplog, capfd, first, same, more, fixed)


def test_the_placement_check_runs_after_a_materialization_that_selects_it(deploy: Deploy) -> None:
    """Materializing from the UI runs every check of the asset: ``updated_at_placed`` reads the
    count the sync just recorded and fails (WARN) while rows are unplaced: here a row whose text
    has a +02:00 offset, counted in the hour its text names."""
    a = hours_back(3)
    site: Site = deploy(start_before(5), [row(1, in_hour(a, 5))])
    with site.source.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO orders (id, customer, amount, updated_at) VALUES (90, 'x', 1, ?)",
            ((a.start + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S+02:00"),),
        )
    job = site.defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(
        instance=site.instance, partition_key=a.partition_key(), asset_selection=[KEY]
    )
    assert result.success
    [placed] = [e for e in result.get_asset_check_evaluations() if e.check_name == "updated_at_placed"]
    assert not placed.passed
    assert placed.severity.value == "WARN"
    assert placed.metadata["unplaced_updated_at"].value == 1
