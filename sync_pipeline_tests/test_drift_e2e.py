"""End to end: ``dagster dev`` finds drift at every age of the lookback at its next milestone, and repairs it.

Real time is hours (by default an hour is compared when 23 hours old), so the test sets
the schedule the way an operator would, through ``drift.milestones_minutes``: ages in minutes that
fall a minute or two ahead of the three hours' ages. Nothing else is changed: the real ``dagster dev``
(webserver, daemon, code server), the drift sensor at its 30-second minimum, PostgreSQL to
PostgreSQL and MariaDB to PostgreSQL, alerts to a JSON receiver on loopback.

1. Three hours, the youngest (under an hour old), one about 8 hours old and one about 22 (the
   lookback's oldest milestone), are synced by a backfill and compared clean by the drift checks,
   with every hour of the lookback past its one milestone (1 minute).
2. Each hour of each table then drifts three ways: a source value changed without touching
   ``updated_at``, a target row deleted, an extra target row. The drift sensor's next ticks start
   no drift run: no milestone has passed since their last comparison, a run would compare nothing.
3. The schedule gains a milestone for each hour's age a minute or two ahead. The first drift check
   that runs after the milestones passes compares each hour, at that milestone, and finds its three
   rows: the latency README documents (the wait for the next milestone, plus one drift run).
   Each drift is alerted once, and the repair run the sensor requests makes the target window
   equal the source, its ``in_sync`` check passing.
"""

from __future__ import annotations

import math
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
    RunsFilter,
)
from dagster._core.instance.ref import InstanceRef
from dagster._core.scheduler.instigation import InstigatorTick, TickStatus

from sync_pipeline.engine.diff.window import Window
from sync_pipeline.orchestration.assets import COMPARE_TAG, REASON_TAG
from sync_pipeline.orchestration.checks import DRIFT_CHECK, IN_SYNC_CHECK
from sync_pipeline.orchestration.drift_schedule import in_hours
from sync_pipeline_tests.conftest import MakeDbUrl
from sync_pipeline_tests.dagster_helpers import create_source, in_hour, row, rows_in, side, write_config
from sync_pipeline_tests.dagster_processes import (
    Deployment,
    alerts_for,
    dagster_dev,
    deployment_env,
    launch_backfill,
    wait_for,
    wait_for_backfill,
)
from sync_pipeline_tests.helpers import Side, delete, free_port, insert, update
from sync_pipeline_tests.webhook_server import Receiver, serve

pytestmark = pytest.mark.slow

DEADLINE = 600.0  # seconds for each thing the daemon does by itself; a drift run takes about 30 s
LEAD = timedelta(seconds=75)  # how far ahead of now the new milestones fall
INTERVAL = 30  # drift.interval_seconds, its minimum
LOOKBACK = 24
ROWS = 6  # rows of each hour


@dataclass(frozen=True)
class Table:
    """One synced table of the deployment: its config name, its source side and table names."""

    name: str
    source: Side
    target_table: str

    @property
    def key(self) -> AssetKey:
        return AssetKey(["sync", self.name])


@dataclass(frozen=True)
class Evaluation:
    """One drift check evaluation, as its metadata shows it."""

    run_id: str
    passed: bool
    compared_at: datetime
    compared: dict[str, float]
    drifted: dict[str, int]
    last_compared: dict[str, str]


def drift_evaluations(instance: DagsterInstance, key: AssetKey) -> list[Evaluation]:
    """The table's drift evaluations so far, oldest first (a planned, unfinished one is left out)."""
    found = []
    records = instance.event_log_storage.get_asset_check_execution_history(
        AssetCheckKey(key, DRIFT_CHECK), limit=200
    )
    for record in records:
        event = record.event.dagster_event if record.event else None
        evaluation = event.event_specific_data if event else None
        if not isinstance(evaluation, AssetCheckEvaluation):
            continue
        meta = {k: getattr(v, "value", v) for k, v in evaluation.metadata.items()}
        found.append(
            Evaluation(
                run_id=record.run_id,
                passed=evaluation.passed,
                compared_at=datetime.fromisoformat(str(meta["compared_at"])),
                compared=dict(meta["compared"]),
                drifted=dict(meta["drifted_partitions"]),
                last_compared=dict(meta["last_compared"]),
            )
        )
    return sorted(found, key=lambda e: e.compared_at)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serve() as running:
        yield running


# About 6 minutes at load 8-10 on 2 cores, 11 at load 17 (the backfill, eight drift runs, six repairs).
@pytest.mark.timeout(1800)
def test_drift_at_every_age_is_found_at_its_next_milestone_and_repaired(
    tmp_path: Path, receiver: Receiver, make_db_url: MakeDbUrl
) -> None:
    """Three kinds of drift in the youngest, a middle and the oldest hour of the lookback, in a
    PostgreSQL and a MariaDB source: each hour is compared clean, drifts, is not compared again
    until its next milestone, is found by the first drift run after it (three rows), alerted once
    and repaired (target window equals the source).
    """
    newest_end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    # The youngest hour (under an hour old), one ending 8 hours earlier, and the oldest whose next
    # milestone is still inside the 24-hour lookback.
    hours = [Window.hour_starting(newest_end - timedelta(hours=h)) for h in (1, 9, 23)]
    oldest = hours[-1]
    warehouse = side("postgresql", make_db_url("postgresql", "warehouse"))
    tables = [
        Table("orders", side("postgresql", make_db_url("postgresql", "app")), "orders"),
        Table("orders_my", side("mysql", make_db_url("mysql", "shop")), "orders_my"),
    ]
    for table in tables:
        create_source(
            table.source,
            [row(100 * n + j, in_hour(w, 5 * j + 1)) for n, w in enumerate(hours) for j in range(ROWS)],
        )
    port = free_port()
    config_path = tmp_path / "sync.yaml"

    def deploy(milestones_minutes: list[int]) -> None:
        write_config(
            config_path,
            {"app": tables[0].source.url, "shop": tables[1].source.url, "warehouse": warehouse.url},
            [
                {
                    "name": t.name,
                    "source": {
                        "connection": "app" if t.source.kind == "postgresql" else "shop",
                        "table": "orders",
                    },
                    "target": {"connection": "warehouse", "table": t.target_table},
                    "primary_key": ["id"],
                    "updated_at": "updated_at",
                    "start": oldest.start.strftime("%Y-%m-%dT%H:%M:%S"),
                }
                for t in tables
            ],
            # The hours between the three are never synced: neither alerted nor requested.
            freshness={"enabled": False},
            catch_up={"enabled": False},
            schedule={"enabled": False},
            drift={
                "interval_seconds": INTERVAL,
                "lookback_hours": LOOKBACK,
                "max_partitions_per_run": 8,
                "milestones_minutes": milestones_minutes,
            },
            alerts=[{"webhook": receiver.url(), "format": "json"}],
            ui_url=f"http://127.0.0.1:{port}",
        )

    deploy([1])  # every synced hour is due as soon as it is synced, then not again
    env = deployment_env(tmp_path / "dagster_home", config_path)
    with (
        dagster_dev(tmp_path, env, port) as server,
        DagsterInstance.from_ref(InstanceRef.from_dir(str(server.home))) as instance,
    ):
        _watch(server, instance, receiver, tables, warehouse, hours, deploy)


def _watch(
    server: Deployment,
    instance: DagsterInstance,
    receiver: Receiver,
    tables: list[Table],
    warehouse: Side,
    hours: list[Window],
    deploy: Callable[[list[int]], None],
) -> None:
    keys = [w.partition_key() for w in hours]

    # 1. Synced as the hourly job would (a backfill of its partitions: the syncs and in_sync only),
    # then compared clean by the drift checks the sensor runs.
    backfill = launch_backfill(server.url, [t.name for t in tables], keys, job="sync_hourly")
    wait_for_backfill(server.url, backfill, keys, DEADLINE, server.dead, server.log_tail)
    for table in tables:
        for window in hours:
            assert rows_in(warehouse, table.target_table, window) == rows_in(table.source, "orders", window)

    def compared_clean(table: Table) -> Evaluation | None:
        evaluations = drift_evaluations(instance, table.key)
        if evaluations and set(keys) <= set(evaluations[-1].last_compared):
            assert all(e.passed for e in evaluations), evaluations
            return evaluations[-1]
        return None

    for table in tables:
        wait_for(
            f"{table.name}'s hours compared clean", lambda t=table: compared_clean(t), DEADLINE, server.dead
        )

    # 2. Drift, three kinds in each hour of each table.
    planted = datetime.now(UTC)
    for table in tables:
        source = sa.Table("orders", sa.MetaData(), autoload_with=table.source.engine)
        target = sa.Table(table.target_table, sa.MetaData(), autoload_with=warehouse.engine)
        for n, window in enumerate(hours):
            # A value changed in the application without touching updated_at.
            update(table.source, source, source.c.id == 100 * n, amount=999, note="changed quietly")
            # A row deleted from the warehouse behind the pipeline's back.
            delete(warehouse, target, target.c.id == 100 * n + 1)
            # A row in the warehouse the source never had.
            insert(warehouse, target, [row(100 * n + 99, in_hour(window, 59))])
            assert rows_in(warehouse, table.target_table, window) != rows_in(table.source, "orders", window)

    def run_after(moment: datetime) -> list[Evaluation] | None:
        runs = [[e for e in drift_evaluations(instance, t.key) if e.compared_at > moment] for t in tables]
        return runs if all(runs) else None

    # No milestone has passed since the last comparison: the sensor's ticks after the drift start no
    # drift run (a run would compare nothing), and no evaluation compares the hours.
    def quiet_ticks() -> list[InstigatorTick] | None:
        states = [s for s in instance.all_instigator_state() if s.instigator_name == "drift_sensor"]
        ticks = [
            tick
            for state in states
            for tick in instance.get_ticks(
                state.instigator_origin_id, state.selector_id, after=planted.timestamp()
            )
            if tick.status in (TickStatus.SKIPPED, TickStatus.SUCCESS)
        ]
        return ticks if len(ticks) >= 2 else None

    for tick in wait_for("two drift_sensor ticks after the drift", quiet_ticks, DEADLINE, server.dead):
        assert (tick.status, tick.run_ids) == (TickStatus.SKIPPED, []), tick
    assert not [e for t in tables for e in drift_evaluations(instance, t.key) if e.compared_at > planted]

    # 3. A milestone a little ahead of each hour's age; the runs read the file again, the sensor
    # keeps running.
    crossing = datetime.now(UTC) + LEAD
    ages = {
        window.partition_key(): math.ceil((crossing - window.end) / timedelta(minutes=1)) for window in hours
    }
    crossing = hours[0].end + timedelta(minutes=ages[keys[0]])  # the same whole minute for all three
    deploy([1, *sorted(ages.values())])

    def found(table: Table) -> list[Evaluation] | None:
        after = [e for e in drift_evaluations(instance, table.key) if e.compared_at > planted]
        return after if any(e.compared_at >= crossing for e in after) else None

    reports = []
    for table in tables:
        after = wait_for(
            f"{table.name}'s first drift check after the milestones",
            lambda t=table: found(t),
            DEADLINE,
            server.dead,
        )
        early = [e for e in after if e.compared_at < crossing]
        assert not [k for e in early for k in e.compared if k in keys], early
        first = next(e for e in after if e.compared_at >= crossing)
        # The first run after the milestones compared each hour at its new milestone, and found the
        # three rows of each.
        assert {k: first.compared.get(k) for k in keys} == {
            k: in_hours(timedelta(minutes=ages[k])) for k in keys
        }
        assert {k: first.drifted.get(k) for k in keys} == dict.fromkeys(keys, 3)
        assert not first.passed
        reports.append((table, first))

    # Alerted once each, repaired by one run each, the target window equal to the source again.
    for table, first in reports:
        for window in hours:
            key = window.partition_key()

            def alerted(t: Table = table, k: str = key) -> list[dict[str, Any]] | None:
                return alerts_for(receiver, "drift", t.name, k) or None

            [alert] = wait_for(f"the drift alert of {table.name} {key}", alerted, DEADLINE, server.dead)
            assert alert["facts"]["rows_differing"] == 3
            assert alert["facts"]["check_run_id"] == first.run_id

            def repaired(t: Table = table, k: str = key) -> Any:
                runs = instance.get_run_records(
                    RunsFilter(tags={REASON_TAG: "drift", "dagster/partition": k})
                )
                mine = [r for r in runs if r.dagster_run.asset_selection == {t.key}]
                finished = [
                    r
                    for r in mine
                    if r.dagster_run.status in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE)
                ]
                return finished or None

            [repair] = wait_for(f"the repair of {table.name} {key}", repaired, DEADLINE, server.dead)
            assert repair.dagster_run.status == DagsterRunStatus.SUCCESS, server.log_tail()
            assert repair.dagster_run.tags[COMPARE_TAG] == "row"
            assert rows_in(warehouse, table.target_table, window) == rows_in(table.source, "orders", window)
            checks = [
                e.dagster_event.event_specific_data
                for e in instance.all_logs(
                    repair.dagster_run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION
                )
                if e.dagster_event is not None
            ]
            assert [(c.check_name, c.passed) for c in checks] == [(IN_SYNC_CHECK, True)]
            assert repair.end_time is not None
            found_after = (first.compared_at - crossing).total_seconds()
            repaired_after = repair.end_time - crossing.timestamp()
            age = (planted - window.end) / timedelta(hours=1)
            print(  # the measured latency beside the documented one, for the report (-s)
                f"{table.name} {key}: drift at age {age:.2f} h, milestone {ages[key]} min; "
                f"compared {found_after:.0f} s after it (documented: next run, {INTERVAL} s apart), "
                f"repaired {repaired_after:.0f} s after it"
            )
    assert receiver.alerts("run_failure") == [], server.log_tail()
    assert len(receiver.alerts("drift")) == len(tables) * len(hours), receiver.alerts("drift")
