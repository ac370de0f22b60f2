"""Tests of the code location (sync_pipeline.definitions): what it serves, and what loading it must not do.

Loading runs in the webserver, the daemon, the code server and every step process, so besides the
shape of the definitions these tests pin that loading opens no database connection and that no
password reaches what the UI is sent.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from dagster import (
    AssetKey,
    AssetsDefinition,
    Backoff,
    DefaultScheduleStatus,
    Definitions,
    HourlyPartitionsDefinition,
    Jitter,
    instance_for_test,
    multiprocess_executor,
)
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._serdes import serialize_value

from sync_pipeline.config import CONFIG_ENV_VAR, RetryConfig
from sync_pipeline.demo.config import DATA_DIR_ENV, demo_config
from sync_pipeline.orchestration.assets import sync_retry_policy
from sync_pipeline.orchestration.executors import PRELOAD_MODULES
from sync_pipeline.orchestration.resources import SyncResource
from sync_pipeline_tests.conftest import MakeDbUrl
from sync_pipeline_tests.dagster_helpers import load_definitions, table_entry, write_config

ORDERS, ITEMS, EVENTS = (AssetKey(["sync", name]) for name in ("orders", "items", "events"))
SECRET = "pw-not-in-ui"  # noqa: S105 - the marker the test looks for, not a credential


@pytest.fixture(autouse=True)
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No config file in the environment, and the demo's data folder under ``tmp_path``."""
    monkeypatch.delenv(CONFIG_ENV_VAR, raising=False)
    demo = tmp_path / "demo-data"
    monkeypatch.setenv(DATA_DIR_ENV, str(demo))
    return demo


def assets_def(defs: Definitions, key: AssetKey) -> AssetsDefinition:
    return defs.get_repository_def().asset_graph.assets_def_for_key(key)


def executor_config(defs: Definitions, job: str) -> dict[str, Any]:
    """The run config the code location's executor gives Dagster's multiprocess executor."""
    executor = defs.resolve_job_def(job).executor_def
    assert executor.executor_creation_fn is multiprocess_executor.executor_creation_fn
    resolved = executor.config_schema.resolve_config({})  # type: ignore[attr-defined]
    assert resolved.success, resolved.errors
    config: dict[str, Any] = resolved.value["config"]
    return config


def warehouse_config(tmp_path: Path, make_db_url: MakeDbUrl, **top: Any) -> Path:
    """Orders from PostgreSQL and items and events from MariaDB into a PostgreSQL warehouse.

    Events go to a SQLite file. The databases exist but hold no tables: loading never looks.
    """
    return write_config(
        tmp_path / "sync.yaml",
        {
            "app": make_db_url("postgresql", "app"),
            "shop": make_db_url("mysql", "shop"),
            "warehouse": make_db_url("postgresql", "warehouse"),
            "lake": make_db_url("sqlite", "lake"),
        },
        [
            table_entry("orders", "app", "warehouse", start="2026-11-01T00:00:00"),
            table_entry(
                "items", "shop", "warehouse", table="items", start="2026-11-30T05:00:00+00:00", chunk_size=500
            ),
            table_entry("events", "shop", "lake", table="events", start="2026-11-30T05:00:00+00:00"),
        ],
        **top,
    )


def test_demo_definitions(environment: Path) -> None:
    """Without a config the code location serves the demo: three assets, its jobs and running schedules.

    Every job runs on Dagster's multiprocess executor with a forkserver that preloads the code
    location, and loading created the demo's state file but no database.
    """
    defs = load_definitions("")

    repository = defs.get_repository_def()
    assert set(repository.asset_graph.get_all_asset_keys()) == {
        AssetKey(["sync", "orders"]),
        AssetKey(["sync", "customers"]),
        AssetKey(["sync", "events"]),
        # The source tables, as external assets upstream of their syncs.
        AssetKey(["source", "demo_source", "orders"]),
        AssetKey(["source", "demo_source", "customers"]),
        AssetKey(["source", "demo_source", "events"]),
    }
    assert {job.name for job in repository.get_all_jobs()} >= {"sync_hourly", "demo_activity_job"}
    schedules = {s.name: s for s in repository.schedule_defs}
    assert set(schedules) == {"sync_hourly_schedule", "demo_activity_schedule"}
    assert all(s.default_status == DefaultScheduleStatus.RUNNING for s in schedules.values())
    assert schedules["sync_hourly_schedule"].job_name == "sync_hourly"
    assert schedules["demo_activity_schedule"].job_name == "demo_activity_job"
    for job in ("sync_hourly", "demo_activity_job"):
        config = executor_config(defs, job)
        assert config["start_method"] == {"forkserver": {"preload_modules": PRELOAD_MODULES}}
        assert config["max_concurrent"] == 2
    assert sorted(p.name for p in environment.iterdir()) == ["demo.json"]


def test_yaml_definitions_describe_each_table(tmp_path: Path, make_db_url: MakeDbUrl) -> None:
    """A config on PostgreSQL and MariaDB gives one asset per table, grouped by source connection.

    Kinds name both engines; partitions are hourly in ``partition_timezone`` from each table's start
    (a naive start is local, an aware one converted); tables with different starts get a job each;
    each asset carries the retry policy, its own pool and the target table's name.
    """
    defs = load_definitions(
        str(warehouse_config(tmp_path, make_db_url, partition_timezone="America/New_York"))
    )

    expected = {
        ORDERS: ("app", {"postgres"}, "2026-11-01-00:00"),
        ITEMS: ("shop", {"mysql", "postgres"}, "2026-11-30-00:00"),
        EVENTS: ("shop", {"mysql", "sqlite"}, "2026-11-30-00:00"),
    }
    for key, (group, kinds, first_partition) in expected.items():
        asset = assets_def(defs, key)
        spec = asset.specs_by_key[key]
        assert spec.group_name == group, key
        assert set(spec.kinds) == kinds, key
        partitions = asset.partitions_def
        assert isinstance(partitions, HourlyPartitionsDefinition)
        assert partitions.timezone == "America/New_York"
        assert partitions.get_first_partition_key() == first_partition
        assert asset.op.retry_policy == sync_retry_policy(RetryConfig())
        assert asset.op.pool == f"sync_{key.path[-1]}"
        assert spec.metadata["dagster/table_name"] == key.path[-1]
        assert spec.code_version
    jobs = {job.name for job in defs.get_repository_def().get_all_jobs()} - {"__ASSET_JOB"}
    assert jobs == {"sync_hourly_from_2026110100", "sync_hourly_from_2026113000", "drift_check"}
    hourly = jobs - {"drift_check"}  # the drift check runs from its sensor, not a schedule
    assert {s.name for s in defs.get_repository_def().schedule_defs} == {f"{job}_schedule" for job in hourly}
    assert executor_config(defs, "sync_hourly_from_2026110100")["start_method"] == {
        "forkserver": {"preload_modules": PRELOAD_MODULES}
    }


def test_every_preloaded_module_exists() -> None:
    """The forkserver skips a preload that fails to import, silently: a module renamed by a Dagster
    upgrade would quietly bring back the per-step import cost. Each one must import here (the test
    environment has every extra, dagster_postgres included)."""
    assert PRELOAD_MODULES[0] == "sync_pipeline.definitions"
    for name in PRELOAD_MODULES:
        importlib.import_module(name)


def test_code_version_follows_the_table_config(tmp_path: Path, make_db_url: MakeDbUrl) -> None:
    """Changing a table's config changes its asset's code version, and only its own."""
    path = warehouse_config(tmp_path, make_db_url)
    before = {
        key: assets_def(load_definitions(str(path)), key).specs_by_key[key].code_version
        for key in (ORDERS, ITEMS)
    }
    again = {
        key: assets_def(load_definitions(str(path)), key).specs_by_key[key].code_version
        for key in (ORDERS, ITEMS)
    }
    assert again == before

    document = json.loads(path.read_text())
    document["tables"][1]["chunk_size"] = 5000
    path.write_text(json.dumps(document))
    after = {
        key: assets_def(load_definitions(str(path)), key).specs_by_key[key].code_version
        for key in (ORDERS, ITEMS)
    }

    assert after[ORDERS] == before[ORDERS]
    assert after[ITEMS] != before[ITEMS]


def test_executor_settings_come_from_the_config(tmp_path: Path) -> None:
    """The ``executor:`` section sets the start method and the number of step processes at once."""
    path = write_config(
        tmp_path / "sync.yaml",
        {"app": "sqlite:///app.db", "warehouse": "sqlite:///warehouse.db"},
        [table_entry("orders", "app", "warehouse")],
        executor={"start_method": "spawn", "max_concurrent": 3},
    )
    config = executor_config(load_definitions(str(path)), "sync_hourly")
    assert (config["max_concurrent"], config["start_method"]) == (3, {"spawn": {}})


def test_retry_settings_become_each_assets_retry_policy(tmp_path: Path) -> None:
    """``retry:`` sets how often and after how long Dagster retries a transiently failed sync."""
    path = write_config(
        tmp_path / "sync.yaml",
        {"app": "sqlite:///app.db", "warehouse": "sqlite:///warehouse.db"},
        [table_entry("orders", "app", "warehouse")],
        retry={"max_retries": 5, "delay_seconds": 2},
    )
    policy = assets_def(load_definitions(str(path)), AssetKey(["sync", "orders"])).op.retry_policy
    assert policy is not None
    assert (policy.max_retries, policy.delay) == (5, 2)
    assert (policy.backoff, policy.jitter) == (Backoff.EXPONENTIAL, Jitter.PLUS_MINUS)


@pytest.fixture
def silent_server() -> Iterator[socket.socket]:
    """A TCP socket that listens but never answers: any connection attempt would queue up here."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setblocking(False)
        yield server


def test_loading_opens_no_database_connection(tmp_path: Path, silent_server: socket.socket) -> None:
    """Loading definitions connects to nothing: unreachable servers and a SQLite file that cannot exist load.

    One server URL points at a closed port, the others at a socket that records connection attempts
    (none may arrive), and the SQLite file lies in a folder that does not exist (none may be made).
    """
    port = silent_server.getsockname()[1]
    missing = tmp_path / "no" / "such" / "folder"
    path = write_config(
        tmp_path / "sync.yaml",
        {
            "closed": "postgresql+psycopg://sync@127.0.0.1:1/app",
            "pg": f"postgresql+psycopg://sync@127.0.0.1:{port}/app?connect_timeout=2",
            "maria": f"mysql+pymysql://sync@127.0.0.1:{port}/shop?connect_timeout=2",
            "lake": f"sqlite:///{missing / 'lake.db'}",
        },
        [
            table_entry("orders", "closed", "lake"),
            table_entry("items", "maria", "pg"),
            table_entry("events", "pg", "maria"),
        ],
    )

    defs = load_definitions(str(path))
    RepositorySnap.from_def(defs.get_repository_def())  # what the code server sends the UI

    # Three sync assets and the three source tables upstream of them.
    assert len(list(defs.get_repository_def().asset_graph.get_all_asset_keys())) == 6
    with pytest.raises(BlockingIOError):
        silent_server.accept()
    assert not (tmp_path / "no").exists()


def test_password_from_the_environment_stays_out_of_the_ui(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_db_url: MakeDbUrl
) -> None:
    """A password given through ``${VAR}`` appears nowhere the UI is sent.

    Neither the resource's config nor the repository snapshot the code server serves holds it.
    """
    warehouse = make_db_url("postgresql", "warehouse")
    url = warehouse.replace("postgres@", f"sync:{SECRET}@", 1)
    assert SECRET in url
    monkeypatch.setenv("WAREHOUSE_URL", url)
    path = write_config(
        tmp_path / "sync.yaml",
        {"app": make_db_url("sqlite", "app"), "warehouse": "${WAREHOUSE_URL}"},
        [table_entry("orders", "app", "warehouse")],
    )

    defs = load_definitions(str(path))

    resource = (defs.resources or {})["sync"]
    assert isinstance(resource, SyncResource)
    assert resource.config_path == str(path)
    assert SECRET not in repr(resource)
    snapshot = RepositorySnap.from_def(defs.get_repository_def())
    [resource_snap] = [r for r in snapshot.resources or [] if r.name == "sync"]
    assert str(path) in repr(resource_snap.configured_values)  # the UI does show resource config
    assert SECRET not in serialize_value(snapshot)
    # The step still gets the real URL, from the file and its own environment.
    assert SECRET in resource.load().connections["warehouse"].url.get_secret_value()


def test_module_defs_follow_the_config_environment_variable(tmp_path: Path) -> None:
    """``sync_pipeline.definitions.defs`` serves the file named by SYNC_PIPELINE_CONFIG, else the demo."""
    path = write_config(
        tmp_path / "sync.yaml",
        {"app": "sqlite:///app.db", "warehouse": "sqlite:///warehouse.db"},
        [table_entry("orders", "app", "warehouse"), table_entry("items", "app", "warehouse")],
    )
    script = (
        "from sync_pipeline.definitions import defs\n"
        "keys = defs.get_repository_def().asset_graph.get_all_asset_keys()\n"
        "print(sorted(k.to_user_string() for k in keys))"
    )

    def keys(**env: str) -> str:
        environ = {k: v for k, v in os.environ.items() if k not in (CONFIG_ENV_VAR, DATA_DIR_ENV)}
        done = subprocess.run(
            [sys.executable, "-c", script],
            env={**environ, **env},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        return done.stdout.strip().splitlines()[-1]

    # Both tables read app's orders: one source asset upstream of both.
    assert keys(**{CONFIG_ENV_VAR: str(path)}) == "['source/app/orders', 'sync/items', 'sync/orders']"
    demo = tmp_path / "demo"
    assert keys(**{DATA_DIR_ENV: str(demo)}) == (
        "['source/demo_source/customers', 'source/demo_source/events', 'source/demo_source/orders',"
        " 'sync/customers', 'sync/events', 'sync/orders']"
    )
    assert (demo / "demo.json").exists()


def test_demo_activity_job_seeds_and_changes_the_demo_source(environment: Path) -> None:
    """The demo's heartbeat job runs with the code location's resource.

    It seeds the demo source on first use and applies one round of simulated activity, logging
    what it changed.
    """
    defs = load_definitions("")

    with instance_for_test() as instance:
        result = defs.resolve_job_def("demo_activity_job").execute_in_process(instance=instance)
        assert result.success
        messages = [record.user_message for record in instance.all_logs(result.run_id)]

    assert any(message.startswith("demo source changed: ") for message in messages), messages
    source = demo_config(environment).connections["demo_source"].url.get_secret_value()
    engine = sa.create_engine(source, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM orders")).scalar_one() > 0
    finally:
        engine.dispose()
