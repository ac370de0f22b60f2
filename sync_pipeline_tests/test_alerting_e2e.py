"""End to end: ``dagster dev`` alerts a missed hour and a drift, and repairs the drift, with nobody at the UI.

The real ``dagster dev`` (webserver, daemon, code server) runs a config file syncing a SQLite file
into PostgreSQL (its URL, with a password, given through ``${WAREHOUSE_URL}``) with the sensors at
their 30-second minimum and the schedule stopped, alerting a JSON receiver on loopback whose URL
carries tokens.
One older hour is synced through the Dagster CLI and then tampered with behind the pipeline's back;
the newest due hour is never synced. The sensors start RUNNING by default, so the alerts, the drift
check and the repair happen on their own; the test only watches, polling against deadlines.

It is also issue 6's search for secrets: the database password and the webhook tokens appear in
none of the processes' output, anything Dagster stored (runs, events, compute logs, ticks), and none
of the GraphQL responses the UI is built from (runs and their config, every run's events and
metadata, asset definitions, resources, sensor ticks).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.instance.ref import InstanceRef

from sync_pipeline.engine.diff.window import Window
from sync_pipeline.orchestration.assets import REASON_TAG
from sync_pipeline.orchestration.checks import IN_SYNC_CHECK
from sync_pipeline_tests.conftest import MakeDbUrl
from sync_pipeline_tests.dagster_helpers import (
    create_source,
    in_hour,
    row,
    rows_in,
    side,
    table_entry,
    write_config,
)
from sync_pipeline_tests.dagster_processes import (
    Deployment,
    alerts_for,
    dagster_dev,
    deployment_env,
    execute_hour,
    wait_for,
    wait_for_alerts,
)
from sync_pipeline_tests.helpers import Side, delete, free_port, update
from sync_pipeline_tests.webhook_server import SECRETS, Receiver, serve

pytestmark = pytest.mark.slow

DB_PASSWORD = "pg-SECRET-3"  # noqa: S105 -- trust auth on loopback accepts it without checking
DEADLINE = 300.0  # seconds for everything the sensors do; at 30 s intervals it takes about two minutes

SENSOR_TICKS = """
query($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status ticks(limit: 50) { status timestamp } } }
    ... on PythonError { message }
  }
}
"""


def current_hour() -> datetime:
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def newest_due() -> str:
    """The newest hour due with no grace: the one that ended last."""
    return Window.hour_starting(current_hour() - timedelta(hours=1)).partition_key()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serve() as running:
        yield running


def test_dagster_dev_alerts_a_missed_hour_and_drift_and_repairs_it(
    tmp_path: Path, receiver: Receiver, make_db_url: MakeDbUrl
) -> None:
    """A missed hour and a drifted hour are both alerted, each once, and the drift is repaired unattended.

    The hours after the tampered one, up to the newest due hour, are alerted as one missed gap,
    exactly once over several freshness ticks. The tampered
    hour (a target row deleted, a target value changed without touching updated_at, a source row
    deleted) is alerted as drift with its three rows; the repair run the drift sensor requests
    makes the target window equal the source, its in_sync check passing.
    """
    now = current_hour()
    tampered = Window.hour_starting(now - timedelta(hours=3))
    missed_at_start = newest_due()
    source = side("sqlite", f"sqlite:///{tmp_path / 'source.db'}")
    target_url = make_db_url("postgresql", "target").replace("postgres@", f"postgres:{DB_PASSWORD}@", 1)
    assert DB_PASSWORD in target_url
    target = side("postgresql", target_url)
    orders = create_source(
        source,
        [row(i, in_hour(tampered, i)) for i in range(1, 6)]
        + [row(i, in_hour(Window.from_partition_key(missed_at_start), i)) for i in range(6, 8)],
    )
    port = free_port()
    config = write_config(
        tmp_path / "sync.yaml",
        {"app": source.url, "warehouse": "${WAREHOUSE_URL}"},
        [table_entry("orders", "app", "warehouse", start=tampered.start.strftime("%Y-%m-%dT%H:%M:%S"))],
        freshness={"interval_seconds": 30, "grace_minutes": 0},
        # The missed hours stay missed: the catch-up is test_catch_up.py's.
        catch_up={"enabled": False},
        # Compared at an hour old: the default (the lookback's last hour) would wait two more hours.
        drift={"interval_seconds": 30, "lookback_hours": 6, "milestones_minutes": [60]},
        schedule={"enabled": False},
        alerts=[{"webhook": receiver.url(), "format": "json"}],
        ui_url=f"http://127.0.0.1:{port}",
    )
    env = deployment_env(tmp_path / "dagster_home", config, WAREHOUSE_URL=target_url)
    home = Path(env["DAGSTER_HOME"])
    secrets = [*SECRETS, DB_PASSWORD]

    # Sync the older hour as the hourly schedule would (its job runs the sync and in_sync only),
    # then change it behind the pipeline's back. (`dagster asset materialize` would run the drift
    # check too, comparing the hour before the tampering: the drift would wait for its next
    # milestone, hours later.)
    output = execute_hour(env, tmp_path, tampered.partition_key())
    assert not [s for s in secrets if s in output]
    assert rows_in(target, "orders", tampered) == rows_in(source, "orders", tampered)
    warehouse = sa.Table("orders", sa.MetaData(), autoload_with=target.engine)
    delete(target, warehouse, warehouse.c.id == 1)
    update(target, warehouse, warehouse.c.id == 2, amount=999, note="edited in the warehouse")
    delete(source, orders, orders.c.id == 3)
    assert rows_in(target, "orders", tampered) != rows_in(source, "orders", tampered)

    with dagster_dev(tmp_path, env, port) as server:
        with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
            _watch(server, instance, receiver, source, target, tampered, missed_at_start)
        responses = _ui_responses(server)
    log = server.log
    # Neither the processes' output, nor anything Dagster stored (runs, events, compute logs, ticks),
    # nor what the UI shows holds the password or a token.
    for path in [log, *(p for p in home.rglob("*") if p.is_file())]:
        content = path.read_bytes()
        assert not [s for s in secrets if s.encode() in content], path
    for query, response in responses:
        assert not [s for s in secrets if s in response], query


def _watch(
    server: Deployment,
    instance: DagsterInstance,
    receiver: Receiver,
    source: Side,
    target: Side,
    tampered: Window,
    missed_at_start: str,
) -> None:
    """What the running deployment must do by itself, each step polled against the deadline."""

    def alerts(kind: str, partition_key: str | None = None) -> list[dict[str, Any]]:
        return alerts_for(receiver, kind, "orders", partition_key)

    missed = wait_for_alerts(receiver, "missed_sync", DEADLINE, server.dead, "orders")
    drift = wait_for_alerts(receiver, "drift", DEADLINE, server.dead, "orders", tampered.partition_key())
    assert drift[0]["facts"]["rows_differing"] == 3
    assert drift[0]["link"].startswith(f"{server.url}/assets/sync/orders?view=partitions")

    def repaired() -> Any:
        runs = instance.get_run_records(RunsFilter(tags={REASON_TAG: "drift"}))
        finished = [
            r for r in runs if r.dagster_run.status in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE)
        ]
        return finished[0] if finished else None

    repair = wait_for("the repair run", repaired, DEADLINE, server.dead)
    assert repair.dagster_run.status == DagsterRunStatus.SUCCESS, server.log_tail()
    assert repair.dagster_run.tags["dagster/partition"] == tampered.partition_key()
    assert rows_in(target, "orders", tampered) == rows_in(source, "orders", tampered)
    steps = {
        e.dagster_event.step_key
        for e in instance.all_logs(repair.dagster_run.run_id, of_type=DagsterEventType.STEP_START)
        if e.dagster_event is not None
    }
    assert steps == {"sync__orders"}, (
        "the repair re-syncs the partition; no drift or freshness check rides along"
    )

    # The repair verified the hour (its in_sync check); the hour is not compared again before its next
    # milestone, and no drift run starts while none is due.
    checks = [
        e.dagster_event.event_specific_data
        for e in instance.all_logs(repair.dagster_run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
        if e.dagster_event is not None
    ]
    assert [(getattr(c, "check_name", None), getattr(c, "passed", None)) for c in checks] == [
        (IN_SYNC_CHECK, True)
    ]

    # Several freshness ticks have seen the missed hour since it was first alerted.
    first_alert = datetime.fromisoformat(missed[0]["occurred_at"]).timestamp()

    def ticks_since_alert() -> int | None:
        ticks = _sensor_ticks(server, "freshness_sensor")
        count = sum(1 for t in ticks if t["timestamp"] > first_alert and t["status"] != "STARTED")
        return count if count >= 3 else None

    wait_for("three freshness ticks after the alert", ticks_since_alert, DEADLINE, server.dead)

    # One gap (the hours after the tampered one, up to the newest due), alerted once, even if the
    # hour turned during the test and the gap grew.
    [gap] = alerts("missed_sync")
    first_missed = Window.hour_starting(tampered.end).partition_key()
    assert gap["partition_key"] == first_missed, gap
    assert gap["facts"]["missing_hours"] >= 2, gap  # the hour after the tampered one .. missed_at_start
    assert len(alerts("drift", tampered.partition_key())) == 1, receiver.alerts("drift")
    assert receiver.alerts("run_failure") == [], server.log_tail()


def _sensor_ticks(server: Deployment, name: str) -> list[dict[str, Any]]:
    entries = server.graphql("{ workspaceOrError { ... on Workspace { locationEntries { name } } } }")
    [location] = [e["name"] for e in entries["workspaceOrError"]["locationEntries"]]
    selector = {"repositoryLocationName": location, "repositoryName": "__repository__", "sensorName": name}
    sensor = server.graphql(SENSOR_TICKS, selector=selector)["sensorOrError"]
    assert sensor["__typename"] == "Sensor", sensor
    assert sensor["sensorState"]["status"] == "RUNNING"
    ticks: list[dict[str, Any]] = sensor["sensorState"]["ticks"]
    return ticks


_METADATA = """
  label description
  ... on TextMetadataEntry { text }
  ... on JsonMetadataEntry { jsonString }
  ... on MarkdownMetadataEntry { mdStr }
  ... on UrlMetadataEntry { url }
  ... on PathMetadataEntry { path }
  ... on TableSchemaMetadataEntry { schema { columns { name type description } } }
"""
RUNS = "{ runsOrError { ... on Runs { results { runId jobName runConfigYaml tags { key value } } } } }"
RUN_EVENTS = """query($runId: ID!) {
  logsForRun(runId: $runId, limit: 10000) { __typename ... on EventConnection { events { __typename
    ... on MessageEvent { message }
    ... on MaterializationEvent { metadataEntries { METADATA } }
    ... on ObservationEvent { metadataEntries { METADATA } }
    ... on ExecutionStepFailureEvent { error { message stack causes { message stack } } }
    ... on RunFailureEvent { error { message stack } }
    ... on AssetCheckEvaluationEvent { evaluation { metadataEntries { METADATA } } }
    ... on EngineEvent { metadataEntries { METADATA } }
  } } } }""".replace("METADATA", _METADATA)
ASSETS = """{ assetNodes { assetKey { path } description opName jobNames
  metadataEntries { METADATA } } }""".replace("METADATA", _METADATA)
RESOURCES = """query($selector: RepositorySelector!) {
  allTopLevelResourceDetailsOrError(repositorySelector: $selector) { __typename
    ... on ResourceDetailsList { results { name description configuredValues { key value } } } } }"""


def _ui_responses(server: Deployment) -> list[tuple[str, str]]:
    """What the UI is sent about this deployment: every run with its events, the assets, resources
    and sensor ticks, as raw JSON text, each with a name for the failure message.
    """
    responses: list[tuple[str, str]] = []

    def ask(name: str, query: str, **variables: Any) -> dict[str, Any]:
        data = server.graphql(query, **variables)
        responses.append((name, json.dumps(data)))
        return data

    runs = ask("runs", RUNS)["runsOrError"]["results"]
    assert len(runs) >= 3, "the CLI sync, the drift check and the repair at least"
    for run in runs:
        events = ask(f"events of {run['runId']}", RUN_EVENTS, runId=run["runId"])["logsForRun"]
        assert events["__typename"] == "EventConnection", events
    assets = ask("assets", ASSETS)["assetNodes"]
    assert ["sync", "orders"] in [a["assetKey"]["path"] for a in assets]
    entries = server.graphql("{ workspaceOrError { ... on Workspace { locationEntries { name } } } }")
    [location] = [e["name"] for e in entries["workspaceOrError"]["locationEntries"]]
    selector = {"repositoryLocationName": location, "repositoryName": "__repository__"}
    resources = ask("resources", RESOURCES, selector=selector)["allTopLevelResourceDetailsOrError"]
    assert resources["__typename"] == "ResourceDetailsList", resources
    for sensor in ("freshness_sensor", "drift_sensor", "sync_failure_sensor", "unplaced_sensor"):
        responses.append((f"{sensor} ticks", json.dumps(_sensor_ticks(server, sensor))))
    return responses
