"""A ranged run whose hour process is SIGKILLed in the middle of writing its hour.

In a ranged backfill step each hour is synced by a process forked from the run's planner
(:mod:`~sync_pipeline.orchestration.hours`). When that process dies (SIGKILL, the OOM killer) the
hour's transaction rolls back with its session, and the step fails naming the hour
(``HourProcessDied``). These tests kill it for real, at a point the test controls: the test holds an
uncommitted row of the hour's window in the target, under a key the hour is about to write, so the
hour's session blocks on that key in the middle of its write; the test finds the blocked session,
the process behind its client port, and kills that process.

What must hold after the kill: the hours before it committed and materialized, the killed hour's
window exactly as before or as after (never half), no later hour touched, the failure naming the
hour, and a re-execution from failure syncing the rest until target equals source. The hour's own
process killed leaves its window as before; the planner killed instead leaves the hour's process to
finish, and the window as after.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import sqlalchemy as sa
from dagster import DagsterEventType, DagsterInstance, ReexecutionOptions, execute_job, instance_for_test

from sync_pipeline.engine.diff.window import Window
from sync_pipeline.orchestration.ranged import RANGE_END_TAG, RANGE_START_TAG, failed_hour
from sync_pipeline_tests.conftest import MakeDbUrl
from sync_pipeline_tests.dagster_helpers import (
    create_source,
    in_hour,
    reconstructable_sync_job,
    row,
    rows_in,
    side,
    table_entry,
    write_config,
)
from sync_pipeline_tests.helpers import Side
from sync_pipeline_tests.test_backfill import (
    check_evaluations,
    hourly_rows,
    hours,
    materializations,
    run_range,
)

PER_HOUR = 40
FIND_SECONDS = 240.0  # how long the killer looks for the blocked session (a run starts in seconds)
LOCK_TIMEOUT = 300  # longer than that: the hour waits for the test's row until it is killed


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """The first truthy value of ``condition()``, polled until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen within {timeout}s")
        time.sleep(0.1)  # polling interval of a condition with a deadline


@dataclass(frozen=True)
class Blocked:
    """A target session waiting for the test's row lock: its server id, client port and statement."""

    session: int
    port: int
    statement: str


def _blocked_on(target: Side, holder: int) -> Blocked | None:
    """The target session that waits for a lock of session ``holder``, if one does."""
    with target.engine.connect() as conn:
        if target.kind == "postgresql":
            found = conn.execute(
                sa.text(
                    "SELECT pid, client_port, query FROM pg_stat_activity"
                    " WHERE :holder = ANY(pg_blocking_pids(pid))"
                ),
                {"holder": holder},
            ).first()
            return Blocked(found[0], found[1], found[2]) if found else None
        found = conn.execute(
            sa.text(
                "SELECT p.ID, p.HOST, p.INFO FROM information_schema.INNODB_TRX t"
                " JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id"
                " WHERE t.trx_state = 'LOCK WAIT' AND p.DB = DATABASE() AND p.ID <> :holder"
            ),
            {"holder": holder},
        ).first()
        return Blocked(found[0], int(found[1].rsplit(":", 1)[1]), found[2] or "") if found else None


def _session_gone(target: Side, session: int) -> bool:
    """Whether the killed process's session has ended (its transaction rolled back with it)."""
    with target.engine.connect() as conn:
        if target.kind == "postgresql":
            query = "SELECT count(*) FROM pg_stat_activity WHERE pid = :id"
        else:
            query = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = :id"
        return conn.execute(sa.text(query), {"id": session}).scalar_one() == 0


def _process_with_port(port: int) -> psutil.Process | None:
    """The process under this test's tree whose TCP connection has local port ``port``."""
    for process in psutil.Process().children(recursive=True):
        try:
            if any(c.laddr and c.laddr.port == port for c in process.net_connections(kind="tcp")):
                return process
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


@dataclass
class Killer:
    """In a thread: waits for the hour to block on the test's row, then SIGKILLs its process (or,
    with ``planner``, the run's planner process that forked it, leaving the hour's process running).
    """

    target: Side
    holder: int
    planner: bool = False
    blocked: Blocked | None = None
    hour: psutil.Process | None = None
    killed: psutil.Process | None = None
    error: BaseException | None = None

    def run(self) -> None:
        try:
            self.blocked = wait_until(
                lambda: _blocked_on(self.target, self.holder), FIND_SECONDS, "a session blocked on the row"
            )
            process = _process_with_port(self.blocked.port)
            assert process is not None, f"no process of this test has port {self.blocked.port}"
            self.hour = process
            if self.planner:
                parent = process.parent()
                assert parent is not None
                process = parent
            os.kill(process.pid, signal.SIGKILL)
            self.killed = process
        except BaseException as error:  # noqa: BLE001 - reported by the test's thread
            self.error = error


def _hold_row(target: Side, conn: sa.Connection, id_: int, at: Any) -> int:
    """Insert, without committing, a target row under key ``id_``; returns the holding session's id."""
    orders = sa.Table("orders", sa.MetaData(), autoload_with=conn)
    conn.execute(orders.insert().values(row(id_, at, customer="held by the test")))
    query = "SELECT pg_backend_pid()" if target.kind == "postgresql" else "SELECT CONNECTION_ID()"
    return int(conn.execute(sa.text(query)).scalar_one())


def _step_failure(instance: DagsterInstance, run_id: str) -> Any:
    [failure] = [
        e.dagster_event
        for e in instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE)
        if e.dagster_event is not None
    ]
    return failure


def _arranged(
    make_db_url: MakeDbUrl, tmp_path: Path, target_kind: str
) -> tuple[Side, Side, list[Window], Path]:
    """A PostgreSQL source with PER_HOUR rows in each of six hours, an empty target, and the config."""
    source = side("postgresql", make_db_url("postgresql", "source"))
    target = side(target_kind, make_db_url(target_kind, "target"))
    windows: list[Window] = hours(6)
    create_source(source, hourly_rows(windows, PER_HOUR))
    path = write_config(
        tmp_path / "sync.yaml",
        {"app": source.url, "warehouse": target.url},
        [
            table_entry(
                "orders", "app", "warehouse", start="2026-11-30T00:00:00", lock_timeout_seconds=LOCK_TIMEOUT
            )
        ],
        retry={"max_retries": 0},
    )
    return source, target, windows, path


def _reexecuted_from_failure(
    instance: DagsterInstance, path: Path, run_id: str, first: str, last: str
) -> str:
    """Re-execute the failed ranged run from its failure, as the UI does; the new run's id."""
    with execute_job(
        reconstructable_sync_job(str(path)),
        instance=instance,
        reexecution_options=ReexecutionOptions.from_failure(run_id, instance),
        tags={RANGE_START_TAG: first, RANGE_END_TAG: last},
        raise_on_error=False,
    ) as rerun:
        assert rerun.success
        return rerun.run_id


@pytest.mark.parametrize("target_kind", ["postgresql", "mysql"])
def test_hour_process_killed_mid_write_fails_the_run_naming_it_and_the_rerun_finishes(
    target_kind: str, make_db_url: MakeDbUrl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hours 1-5 of a table whose hour 0 is already synced: hour 3's process blocks in its write on a
    key the test holds uncommitted and is SIGKILLed there. The run fails naming hour 3 (its process
    died), hours 1-2 are committed and materialized, hour 3's window is as before (empty: the write
    rolled back, never half), hours 4-5 never ran. Re-executed from failure, the run syncs hours
    3-5 only and the target equals the source in every hour.
    """
    monkeypatch.setenv("SYNC_PIPELINE_DATA_DIR", str(tmp_path / "demo"))
    source, target, windows, path = _arranged(make_db_url, tmp_path, target_kind)
    killed_hour = windows[3]
    held_id = 4 * PER_HOUR  # the last key of hour 3
    first, last = windows[1].partition_key(), windows[-1].partition_key()

    with instance_for_test() as instance:
        # Hour 0 creates the target table, which the test's row needs.
        assert run_range(instance, path, windows[0].partition_key(), windows[0].partition_key())[0]
        with target.engine.connect() as holding:
            killer = Killer(target, _hold_row(target, holding, held_id, in_hour(killed_hour, 59)))
            thread = threading.Thread(target=killer.run, name="killer")
            thread.start()
            try:
                ok, run_id = run_range(instance, path, first, last)
            finally:
                thread.join()
                holding.rollback()
        assert killer.error is None, killer.error
        assert killer.blocked is not None
        statement = killer.blocked.statement.lstrip().upper()
        print(f"blocked in: {statement[:120]!r}; killed {killer.killed}")  # shown with -s
        assert statement.startswith(("INSERT", "COPY", "UPDATE", "DELETE")), statement  # mid-write
        wait_until(lambda: _session_gone(target, killer.blocked.session), 90, "the killed session ended")

        assert not ok
        assert [p for p, _, _ in materializations(instance, run_id)] == [
            w.partition_key() for w in windows[1:3]
        ]
        failure = _step_failure(instance, run_id)
        message = failure.step_failure_data.user_failure_data.description
        assert f"partition {killed_hour.partition_key()} failed: its process died" in message
        run = instance.get_run_by_id(run_id)
        assert run is not None
        assert failed_hour(run, [failure]) == killed_hour.partition_key()
        for window in windows[:3]:
            assert rows_in(target, "orders", window) == rows_in(source, "orders", window)
        assert rows_in(target, "orders", killed_hour) in ({}, rows_in(source, "orders", killed_hour))
        assert rows_in(target, "orders", killed_hour) == {}  # killed before its commit: as before
        for window in windows[4:]:
            assert rows_in(target, "orders", window) == {}

        rerun_id = _reexecuted_from_failure(instance, path, run_id, first, last)
        assert [p for p, _, _ in materializations(instance, rerun_id)] == [
            w.partition_key() for w in windows[3:]
        ]
    for window in windows:
        assert rows_in(target, "orders", window) == rows_in(source, "orders", window)


def test_planner_killed_while_its_hour_writes_fails_the_run_and_the_orphaned_hour_commits_whole(
    make_db_url: MakeDbUrl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same run, but the run's planner process is SIGKILLed while hour 3's process (its child)
    waits in its COPY: the step fails naming hour 3 (the planner's pool broke). The hour's process is
    left alone; once the test's row is rolled back it finishes and commits the hour whole (after:
    never half), unmaterialized. Hours 4-5 never ran; the re-execution from failure syncs hours 3-5
    (hour 3 already equal: nothing written) and the target equals the source.
    """
    monkeypatch.setenv("SYNC_PIPELINE_DATA_DIR", str(tmp_path / "demo"))
    source, target, windows, path = _arranged(make_db_url, tmp_path, "postgresql")
    killed_hour = windows[3]
    first, last = windows[1].partition_key(), windows[-1].partition_key()

    with instance_for_test() as instance:
        assert run_range(instance, path, windows[0].partition_key(), windows[0].partition_key())[0]
        with target.engine.connect() as holding:
            killer = Killer(
                target, _hold_row(target, holding, 4 * PER_HOUR, in_hour(killed_hour, 59)), planner=True
            )
            thread = threading.Thread(target=killer.run, name="killer")
            thread.start()
            try:
                ok, run_id = run_range(instance, path, first, last)
            finally:
                thread.join()
                holding.rollback()
        assert killer.error is None, killer.error
        assert killer.hour is not None
        killer.hour.wait(timeout=120)  # the orphaned hour finishes once the row is released
        wait_until(lambda: _session_gone(target, killer.blocked.session), 90, "the hour's session ended")

        assert not ok
        assert [p for p, _, _ in materializations(instance, run_id)] == [
            w.partition_key() for w in windows[1:3]
        ]
        message = _step_failure(instance, run_id).step_failure_data.user_failure_data.description
        assert f"partition {killed_hour.partition_key()} failed: its process died" in message
        [check] = check_evaluations(instance, run_id)  # hours 1-2, compared by a fresh planner
        assert check.passed
        assert check.metadata["hours_verified"].value == 2
        for window in windows[:3]:
            assert rows_in(target, "orders", window) == rows_in(source, "orders", window)
        assert rows_in(target, "orders", killed_hour) in ({}, rows_in(source, "orders", killed_hour))
        assert rows_in(target, "orders", killed_hour) == rows_in(source, "orders", killed_hour)  # after
        for window in windows[4:]:
            assert rows_in(target, "orders", window) == {}

        rerun_id = _reexecuted_from_failure(instance, path, run_id, first, last)
        found = materializations(instance, rerun_id)
        assert [p for p, _, _ in found] == [w.partition_key() for w in windows[3:]]
        assert found[0][1]["inserted"] == 0  # hour 3 was already whole
    for window in windows:
        assert rows_in(target, "orders", window) == rows_in(source, "orders", window)
