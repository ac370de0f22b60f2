"""End-to-end tests through Dagster's own entry points: ``dagster dev`` (UI, daemon, code server) and the CLI.

They run the embedded demo exactly as a new user would, with the project's packaged instance
settings (run queue, one step per table pool) in a temporary ``DAGSTER_HOME``, and check the synced
windows with SQLAlchemy. Slow (a minute or so): the backfill daemon works on its own clock.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from sync_pipeline.cli.dev import sync_last_hour
from sync_pipeline.config import CONFIG_ENV_VAR
from sync_pipeline.demo.config import DATA_DIR_ENV, demo_config, demo_start
from sync_pipeline.engine.diff.window import Window
from sync_pipeline_tests.dagster_processes import (
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
from sync_pipeline_tests.helpers import free_port

pytestmark = pytest.mark.slow

UNFINISHED = ["QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"]


@dataclass
class Demo:
    """A demo deployment: its Dagster home, its data folder and the environment of its processes."""

    home: Path
    data: Path
    env: dict[str, str]
    log: Path

    def urls(self) -> tuple[str, str]:
        """(source, target) SQLAlchemy URLs of the demo's databases."""
        config = demo_config(self.data)
        return tuple(  # type: ignore[return-value]
            config.connections[name].url.get_secret_value() for name in ("demo_source", "demo_target")
        )

    def log_tail(self, lines: int = 60) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@pytest.fixture
def demo(tmp_path: Path) -> Demo:
    """A fresh ``DAGSTER_HOME`` holding the packaged dagster.yaml, and an empty demo data folder."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(INSTANCE_YAML, home / "dagster.yaml")
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k not in (CONFIG_ENV_VAR, "DAGSTER_HOME")}
    env.update({"DAGSTER_HOME": str(home), DATA_DIR_ENV: str(data)})
    return Demo(home, data, env, tmp_path / "dagster.log")


def window_rows(url: str, table: str, window: Window) -> list[tuple[Any, ...]]:
    """The rows of ``table`` in ``window`` (naive UTC ``updated_at``), without the sync's own columns."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            live = sa.Table(table, sa.MetaData(), autoload_with=conn)
            columns = [c for c in live.c if not c.name.startswith("_sync")]
            start, end = window.bounds_in("UTC", naive=True)
            statement = (
                sa.select(*columns)
                .where(live.c.updated_at >= start, live.c.updated_at < end)
                .order_by(live.c.id)
            )
            return [tuple(row) for row in conn.execute(statement)]
    finally:
        engine.dispose()


def assert_synced(demo: Demo, tables: list[str], keys: list[str]) -> None:
    """The demo target holds exactly the source's rows of each table for each partition."""
    source, target = demo.urls()
    for table in tables:
        for key in keys:
            window = Window.from_partition_key(key)
            expected = window_rows(source, table, window)
            assert expected, f"the demo has no {table} rows in {key}: a vacuous check"
            assert window_rows(target, table, window) == expected, f"{table} {key}"


def partition_keys(demo: Demo, hours: list[int]) -> list[str]:
    """Partition keys ``hours`` after the demo's first partition (fixed when the definitions loaded)."""
    start = demo_start(demo.data)
    return [Window.hour_starting(start + timedelta(hours=h)).partition_key() for h in hours]


# -- dagster dev ------------------------------------------------------------------------------------


@dataclass
class DevServer:
    url: str
    process: subprocess.Popen[bytes]
    demo: Demo

    def dead(self) -> str | None:
        code = self.process.poll()
        return None if code is None else f"dagster dev exited with {code}:\n{self.demo.log_tail()}"

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        return graphql(self.url, query, **variables)


@pytest.fixture
def dagster_dev(demo: Demo, tmp_path: Path) -> Iterator[DevServer]:
    """``dagster dev`` on the demo, on a free port, until its code location has loaded."""
    port = free_port()
    with demo.log.open("wb") as log:
        process = subprocess.Popen(
            [str(DAGSTER), "dev", "-m", "sync_pipeline.definitions", "-h", "127.0.0.1", "-p", str(port)],
            cwd=tmp_path,
            env=demo.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            server = DevServer(f"http://127.0.0.1:{port}", process, demo)
            wait_for("the webserver", lambda: server_info(server.url), 180, server.dead)
            wait_for("the code location", lambda: location_loaded(server.url), 180, server.dead)
            yield server
        finally:
            stop_group(process)


def _stop_schedules_and_drain(server: DevServer) -> None:
    """Stop the demo's schedules (as a user would in the UI) and wait for runs they started to end.

    The demo's activity job changes the source every five minutes; the windows must stay still
    between the backfill and the check.
    """
    data = server.graphql(
        "{ repositoriesOrError { ... on RepositoryConnection { nodes { schedules { name id } } } } }"
    )
    schedules = [s for repo in data["repositoriesOrError"]["nodes"] for s in repo["schedules"]]
    assert {s["name"] for s in schedules} == {"sync_hourly_schedule", "demo_activity_schedule"}
    for schedule in schedules:
        result = server.graphql(
            "mutation($id: String) { stopRunningSchedule(id: $id) { __typename"
            " ... on ScheduleStateResult { scheduleState { status } } ... on PythonError { message } } }",
            id=schedule["id"],
        )["stopRunningSchedule"]
        assert result.get("scheduleState", {}).get("status") == "STOPPED", result

    def drained() -> bool | None:
        runs = server.graphql(
            "query($statuses: [RunStatus!]) { runsOrError(filter: {statuses: $statuses})"
            " { ... on Runs { results { runId } } } }",
            statuses=UNFINISHED,
        )["runsOrError"]["results"]
        return True if not runs else None

    wait_for("runs started before the schedules stopped", drained, 120, server.dead)


def test_ui_backfill_of_two_assets_syncs_their_windows(dagster_dev: DevServer, demo: Demo) -> None:
    """A backfill launched as the UI does (two assets, three partitions) completes and syncs those windows.

    The daemon queues the runs, the pools keep one step per table at a time, each step syncs in
    its own process, and the demo target then equals the source for both tables in every window.
    """
    _stop_schedules_and_drain(dagster_dev)
    keys = partition_keys(demo, [2, 3, 4])

    backfill_id = launch_backfill(dagster_dev.url, ["orders", "events"], keys)
    wait_for_backfill(
        dagster_dev.url, backfill_id, keys, timeout=300, alive=dagster_dev.dead, logs=demo.log_tail
    )
    assert_synced(demo, ["orders", "events"], keys)


# -- dagster asset materialize ----------------------------------------------------------------------


def test_cli_materializes_one_partition_of_one_asset(demo: Demo, tmp_path: Path) -> None:
    """``dagster asset materialize --select sync/orders --partition KEY`` exits 0 and syncs that window.

    Only that window of that table: the next hour and the other tables are left alone.
    """
    # The demo's first partition is fixed by whoever loads the definitions first; fix it here.
    demo_config(demo.data)
    [key, next_key] = partition_keys(demo, [5, 6])

    done = subprocess.run(
        [
            *(str(DAGSTER), "asset", "materialize", "-m", "sync_pipeline.definitions"),
            *("--select", "sync/orders", "--partition", key),
        ],
        cwd=tmp_path,
        env=demo.env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert_synced(demo, ["orders"], [key])
    source, target = demo.urls()
    assert window_rows(source, "orders", Window.from_partition_key(next_key))
    assert window_rows(target, "orders", Window.from_partition_key(next_key)) == []
    engine = sa.create_engine(target, poolclass=sa.pool.NullPool)
    try:
        assert not sa.inspect(engine).has_table("events")
    finally:
        engine.dispose()


def test_sync_pipeline_dev_syncs_the_last_completed_hour_first(
    demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sync-pipeline dev`` first runs the hourly job for the hour that ended last, through Dagster's CLI.

    With the clock at ten past the demo's sixth hour, that hour of every table is synced, and the
    run lands in the instance the UI will open.
    """
    # sync_last_hour reads the demo's data folder from this process's environment, as run_dev does.
    monkeypatch.setenv(DATA_DIR_ENV, str(demo.data))
    demo_config(demo.data)
    [key] = partition_keys(demo, [5])
    now = Window.from_partition_key(key).end + timedelta(minutes=10)

    commands = sync_last_hour(demo.env, now)

    assert [json.loads(command[-1]) for command in commands] == [{"dagster/partition": key}]
    assert all(command[1:3] == ["job", "execute"] for command in commands)
    assert_synced(demo, ["orders", "customers", "events"], [key])
    assert list((demo.home / "history" / "runs").glob("*.db")), "no run recorded in DAGSTER_HOME"
