"""Three requesters of one hour at once, on a real ``dagster dev``: the catch-up, a backfill launched
as the UI launches it, and the hourly schedule, whose run re-checks the hours before its own.

Hour Y (two hours ago) was never synced; the hour after it was. When ``dagster dev`` starts, the
catch-up requests the missed hours (Y among them) and a backfill of Y is launched through GraphQL's
``launchPartitionBackfill`` at once. As soon as Y's first sync has landed, the source of Y changes
(a row updated, one inserted, one deleted) while the other requester's run of Y may still be queued
or running. Once both backfills are done Y changes again, and the schedule is moved to the next
minutes (the config file rewritten, the code location reloaded as the UI's Reload does) so that its
tick comes after that, and its run re-syncs Y from its lookback. Any wrong order (a sync that read Y
before a change committing after one that read it after) would leave old rows in the target.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    RunsFilter,
)
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.dagster_run import DagsterRun

from sync_pipeline.engine.diff.window import Window
from sync_pipeline.orchestration.catch_up import CATCH_UP_SENSOR
from sync_pipeline_tests.conftest import MakeDbUrl
from sync_pipeline_tests.dagster_helpers import (
    create_source,
    in_hour,
    row,
    rows_in,
    side,
    write_orders_config,
)
from sync_pipeline_tests.dagster_processes import (
    BACKFILL_DONE,
    Deployment,
    alerts_for,
    dagster_dev,
    deployment_env,
    execute_hour,
    finished_runs,
    launch_backfill,
    location_loaded,
    wait_for,
)
from sync_pipeline_tests.helpers import delete, insert, update
from sync_pipeline_tests.webhook_server import Receiver, serve

pytestmark = pytest.mark.slow

KEY = AssetKey(["sync", "orders"])
SCHEDULE = "sync_hourly_schedule"
ROWS_IN_Y = 20_000  # enough that Y's sync takes a while, so the requests overlap it
DEADLINE = 420.0

SCHEDULE_CRON = """
query($selector: ScheduleSelector!) {
  scheduleOrError(scheduleSelector: $selector) {
    __typename
    ... on Schedule { cronSchedule scheduleState { status } }
    ... on PythonError { message }
  }
}
"""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serve() as running:
        yield running


def covers(run: DagsterRun, partition_key: str) -> bool:
    """Whether ``run`` targets the hour: its partition, or within its range (UTC keys sort as times)."""
    if run.tags.get("dagster/partition") == partition_key:
        return True
    first = run.tags.get("dagster/asset_partition_range_start")
    last = run.tags.get("dagster/asset_partition_range_end")
    return first is not None and last is not None and first <= partition_key <= last


def sync_step_spans(instance: DagsterInstance, run: DagsterRun) -> list[tuple[float, float]]:
    """(start, end) of each attempt of the run's ``sync/orders`` step, from its events."""
    spans, started = [], None
    for event in instance.all_logs(run.run_id):
        dagster_event = event.dagster_event
        if dagster_event is None or dagster_event.step_key != "sync__orders":
            continue
        if dagster_event.event_type == DagsterEventType.STEP_START:
            started = event.timestamp
        elif dagster_event.event_type in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
            assert started is not None, run.run_id
            spans.append((started, event.timestamp))
            started = None
    return spans


def backfills_done(instance: DagsterInstance) -> bool | None:
    """``True`` once every backfill (the catch-up's and the UI's) is done."""
    backfills = instance.get_backfills()
    return True if backfills and all(b.status.value in BACKFILL_DONE for b in backfills) else None


def move_schedule_to(server: Deployment, config_path: Path, write: Any, minute: int) -> None:
    """Rewrite the config with ``schedule.minute`` and reload the code location, as the UI's Reload does."""
    write(minute)
    entries = server.graphql("{ workspaceOrError { ... on Workspace { locationEntries { name } } } }")
    [location] = [e["name"] for e in entries["workspaceOrError"]["locationEntries"]]
    server.graphql(
        "mutation($name: String!) { reloadRepositoryLocation(repositoryLocationName: $name) { __typename } }",
        name=location,
    )
    wait_for("the reloaded code location", lambda: location_loaded(server.url), 180, server.dead)
    selector = {
        "repositoryLocationName": location,
        "repositoryName": "__repository__",
        "scheduleName": SCHEDULE,
    }

    def moved() -> bool | None:
        schedule = server.graphql(SCHEDULE_CRON, selector=selector)["scheduleOrError"]
        assert schedule["__typename"] == "Schedule", schedule
        return True if schedule["cronSchedule"] == f"{minute} * * * *" else None

    wait_for("the schedule's new minute", moved, 120, server.dead)


def test_schedule_ui_backfill_and_catch_up_colliding_on_one_hour_end_with_one_correct_result(
    make_db_url: MakeDbUrl, tmp_path: Path, receiver: Receiver
) -> None:
    """The hour the three requesters collide on ends equal to its source after a change made between
    the requests; the syncs of it never overlapped; at most one run each of the backfills targeted
    it (no pile-up), the schedule's one run re-synced it; no alert was sent twice and no run failed.
    """
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    hours = [Window.hour_starting(now - timedelta(hours=h)) for h in range(4, 0, -1)]
    y = hours[2]
    source = side("sqlite", f"sqlite:///{tmp_path / 'source.db'}")
    target = side("postgresql", make_db_url("postgresql", "target"))
    orders = create_source(
        source,
        [
            row(i, in_hour(w, i % 60))
            for n, w in enumerate(hours)
            if w != y
            for i in range(n * 10 + 1, n * 10 + 4)
        ]
        + [row(i, in_hour(y, i % 60)) for i in range(1000, 1000 + ROWS_IN_Y)],
    )
    config_path = tmp_path / "sync.yaml"

    def write(minute: int) -> None:
        write_orders_config(
            config_path,
            source,
            target,
            start=hours[0].start.strftime("%Y-%m-%dT%H:%M:%S"),
            schedule={"minute": minute, "lookback_hours": 3},
            catch_up={"interval_seconds": 30},
            freshness={"interval_seconds": 30, "grace_minutes": 0},
            drift={"enabled": False},
            alerts=[{"webhook": receiver.url(), "format": "json"}],
        )

    # The schedule's tick is half an hour away until the test moves it.
    write((datetime.now(UTC).minute + 30) % 60)
    env = deployment_env(tmp_path / "dagster_home", config_path)
    execute_hour(env, tmp_path, hours[3].partition_key())  # the newest hour, as the schedule would

    with (
        dagster_dev(tmp_path, env) as server,
        DagsterInstance.from_ref(InstanceRef.from_dir(str(server.home))) as instance,
    ):
        ui_backfill = launch_backfill(server.url, ["orders"], [y.partition_key()])

        def y_synced() -> bool | None:
            return True if y.partition_key() in instance.get_materialized_partitions(KEY) else None

        wait_for("the first sync of Y", y_synced, DEADLINE, server.dead)
        # First change: while the other requester's run of Y may still be queued or running.
        update(source, orders, orders.c.id == 1000, amount=1, updated_at=in_hour(y, 59))
        insert(source, orders, [row(999, in_hour(y, 58))])
        delete(source, orders, orders.c.id == 1001)
        wait_for("the backfills to finish", lambda: backfills_done(instance), DEADLINE, server.dead)
        wait_for("their runs to finish", lambda: finished_runs(instance), DEADLINE, server.dead)
        # Second change, after both backfills: only the schedule's run (its lookback) can bring it.
        update(source, orders, orders.c.id == 1002, amount=2, updated_at=in_hour(y, 59))
        changed_at = datetime.now(UTC)

        # The schedule's next tick two minutes on: after the change, and after the daemon has
        # reloaded the workspace (it does every minute).
        tick = (changed_at + timedelta(minutes=2, seconds=30)).replace(second=0, microsecond=0)
        move_schedule_to(server, config_path, write, tick.minute)

        def scheduled_run_done() -> DagsterRun | None:
            records = instance.get_run_records(RunsFilter(tags={"dagster/schedule_name": SCHEDULE}))
            done = [r.dagster_run for r in records if r.dagster_run.is_finished]
            return done[0] if done else None

        scheduled = wait_for("the schedule's run", scheduled_run_done, DEADLINE, server.dead)
        runs = wait_for("every run to finish", lambda: finished_runs(instance), DEADLINE, server.dead)
        log = server.log_tail()

        # One correct result: Y equals its changed source, and so does every other hour.
        for window in hours:
            assert rows_in(target, "orders", window) == rows_in(source, "orders", window), window
        assert all(r.status == DagsterRunStatus.SUCCESS for r in runs), [(r.run_id, r.status) for r in runs]

        # The schedule ticked once, after the second change, and its run re-synced Y in its lookback.
        assert scheduled.tags["dagster/partition"] >= hours[3].partition_key(), scheduled.tags
        [scheduled_record] = instance.get_run_records(RunsFilter(tags={"dagster/schedule_name": SCHEDULE}))
        assert scheduled_record.create_timestamp > changed_at
        y_materializations = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=KEY, asset_partitions=[y.partition_key()]), limit=20
        ).records
        assert scheduled.run_id in {m.run_id for m in y_materializations}, log

        # No pile-up: the catch-up and the UI backfill each targeted Y with one run at most.
        targeting = [r for r in runs if covers(r, y.partition_key())]
        from_catch_up = [r for r in targeting if r.tags.get("dagster/sensor_name") == CATCH_UP_SENSOR]
        from_ui = [r for r in targeting if r.tags.get("dagster/backfill") == ui_backfill]
        assert len(from_catch_up) <= 1, [r.tags for r in targeting]
        assert len(from_ui) == 1, [r.tags for r in targeting]
        assert len(targeting) == len(from_catch_up) + len(from_ui), [r.tags for r in targeting]

        # At most one run synced Y at a time: the sync steps of the runs that touched it never overlap.
        spans = sorted(span for r in [*targeting, scheduled] for span in sync_step_spans(instance, r))
        assert len(spans) >= len(targeting) + 1, spans
        for (_, end), (start, _) in pairwise(spans):
            assert end <= start, spans

    # No alert twice: one missed_sync per gap, one recovered per gap, no run failure.
    assert alerts_for(receiver, "run_failure") == []
    for kind in ("missed_sync", "recovered"):
        keys = [a["partition_key"] for a in alerts_for(receiver, kind, "orders")]
        assert len(keys) == len(set(keys)), receiver.alerts(kind)
    missed_with_y = [
        a for a in alerts_for(receiver, "missed_sync", "orders") if a["partition_key"] <= y.partition_key()
    ]
    assert len(missed_with_y) <= 1, missed_with_y
