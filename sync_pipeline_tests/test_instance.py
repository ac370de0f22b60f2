"""The Dagster instance configurations shipped with the project load and work as documented."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from sync_pipeline_tests.conftest import MakeDbUrl

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ROOT / "sync_pipeline" / "instance" / "dagster.yaml"
PRODUCTION = ROOT / "deploy" / "dagster.yaml"


@pytest.fixture
def demo_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SYNC_PIPELINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("SYNC_PIPELINE_CONFIG", raising=False)
    return tmp_path / "data"


def _home(tmp_path: Path, template: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    shutil.copyfile(template, home / "dagster.yaml")
    return home


def _sync_one_partition(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    from sync_pipeline.definitions import build_definitions

    defs = build_definitions("")
    job = defs.resolve_job_def("sync_hourly")
    asset = defs.resolve_assets_def(dg.AssetKey(["sync", "orders"]))
    assert asset.partitions_def is not None
    key = asset.partitions_def.get_partition_keys()[-1]
    return job.execute_in_process(instance=instance, partition_key=key)


def test_local_instance_limits_runs_and_table_pools(tmp_path: Path, demo_data: Path) -> None:
    """The local instance queues runs (at most 4 at once) and gives every pool a limit of one."""
    with dg.DagsterInstance.from_config(str(_home(tmp_path, LOCAL))) as instance:
        settings = instance.get_concurrency_config()
        assert settings.run_queue_config is not None
        assert settings.run_queue_config.max_concurrent_runs == 4
        assert settings.pool_config.default_pool_limit == 1
        assert instance.run_monitoring_enabled
        result = _sync_one_partition(instance)
        assert result.success


def test_production_instance_stores_runs_in_postgresql(
    tmp_path: Path, demo_data: Path, make_db_url: MakeDbUrl, monkeypatch: pytest.MonkeyPatch
) -> None:
    """deploy/dagster.yaml keeps runs, events and schedules in PostgreSQL through dagster-postgres
    (psycopg2 named explicitly, as SQLAlchemy 2.1 requires) and applies the same limits."""
    url = sa.make_url(make_db_url("postgresql", "dagster"))
    monkeypatch.setenv("DAGSTER_PG_HOST", url.host or "127.0.0.1")
    monkeypatch.setenv("DAGSTER_PG_PORT", str(url.port or 5432))
    monkeypatch.setenv("DAGSTER_PG_USER", url.username or "postgres")
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", url.password or "")
    monkeypatch.setenv("DAGSTER_PG_DB", url.database or "")
    with dg.DagsterInstance.from_config(str(_home(tmp_path, PRODUCTION))) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        settings = instance.get_concurrency_config()
        assert settings.pool_config.default_pool_limit == 1
        result = _sync_one_partition(instance)
        assert result.success
        run_id = result.run_id
    engine = sa.create_engine(url.set(drivername="postgresql+psycopg"))
    with engine.connect() as conn:
        query = sa.text("SELECT count(*) FROM runs WHERE run_id = :id")
        stored = conn.execute(query, {"id": run_id}).scalar()
    engine.dispose()
    assert stored == 1
