"""Issue 6.3 through Dagster: colliding runs of one partition, and parallel partitions and tables.

Real ``dagster asset materialize`` processes share one ``DAGSTER_HOME`` (as the schedule, a backfill
and a drift repair would), syncing PostgreSQL into PostgreSQL. The test holds the engine's lock on a
partition itself, from another session, so that what runs while it waits is decided by the code,
not by timing:

- Three runs of the same partition, started while the lock is held, all wait on it; released, they
  apply the changes one after another: one run reports every change, the others none, the counts
  add up, and the target equals the source.
- While one table's partition is blocked, the other table's step in the same run, and another
  partition of the blocked table in another run, finish: they do not wait for it.

The instance here raises the per-table pool limit to 4 so that several steps of one table may run
at once and the engine's lock is what serialises a partition. With the shipped instance (one step
per table at a time, ``pools.default_limit: 1``) Dagster serialises them before they reach the lock.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from dagster import AssetKey, DagsterInstance
from dagster._core.instance.ref import InstanceRef

from sync_pipeline.config import CONFIG_ENV_VAR
from sync_pipeline.demo.config import DATA_DIR_ENV
from sync_pipeline.engine.diff.window import Window
from sync_pipeline.engine.sync import window_lock_name
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
from sync_pipeline_tests.dagster_processes import DAGSTER, INSTANCE_YAML
from sync_pipeline_tests.helpers import Side

pytestmark = pytest.mark.slow

H08 = Window.from_partition_key("2026-11-30-08:00")
H09 = Window.from_partition_key("2026-11-30-09:00")
DEADLINE = 240.0
Procs = list[subprocess.Popen[bytes]]


@pytest.fixture
def deployment(make_db_url: MakeDbUrl, tmp_path: Path) -> tuple[Side, Side, dict[str, str]]:
    """PostgreSQL source with ``orders`` and ``items`` in two hours, an empty PostgreSQL target, a
    config file and a ``DAGSTER_HOME`` whose instance allows four steps of a table at once.
    """
    source = side("postgresql", make_db_url("postgresql", "source"))
    target = side("postgresql", make_db_url("postgresql", "target"))
    hours = [(H08, range(1, 41)), (H09, range(41, 61))]
    for name in ("orders", "items"):
        create_source(source, [row(i, in_hour(hour, i % 60)) for hour, ids in hours for i in ids], name=name)
    config = write_config(
        tmp_path / "sync.yaml",
        {"app": source.url, "warehouse": target.url},
        [
            table_entry("orders", "app", "warehouse", lock_timeout_seconds=DEADLINE),
            table_entry("items", "app", "warehouse", table="items", lock_timeout_seconds=DEADLINE),
        ],
        schedule={"enabled": False},
        freshness={"enabled": False},
        drift={"enabled": False},
    )
    home = tmp_path / "dagster_home"
    home.mkdir()
    instance = yaml.safe_load(INSTANCE_YAML.read_text())
    instance["concurrency"]["pools"]["default_limit"] = 4
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance))
    # Create the instance's storage once: processes started together would race to create its tables.
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))):
        pass
    env = {k: v for k, v in os.environ.items() if k not in (CONFIG_ENV_VAR, "DAGSTER_HOME", DATA_DIR_ENV)}
    env.update({"DAGSTER_HOME": str(home), CONFIG_ENV_VAR: str(config), DATA_DIR_ENV: str(tmp_path / "data")})
    return source, target, env


def materialize(env: dict[str, str], select: str, window: Window, log: Path) -> subprocess.Popen[bytes]:
    """``dagster asset materialize`` of one partition, as an operator or a launched run would."""
    with log.open("ab") as output:
        return subprocess.Popen(
            [
                *(str(DAGSTER), "asset", "materialize", "-m", "sync_pipeline.definitions"),
                *("--select", select, "--partition", window.partition_key()),
            ],
            cwd=log.parent,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


@contextmanager
def holding_lock(target: Side, table: str, window: Window) -> Iterator[Callable[[], int]]:
    """Hold the advisory lock a sync of ``table``'s ``window`` takes; yields a count of its waiters."""
    key = sa.func.hashtextextended(window_lock_name(None, table, window), 0)
    with target.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.pg_try_advisory_lock(key))).scalar() is True
        conn.commit()

        def waiters() -> int:
            with target.engine.connect() as probe:
                waiting = probe.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
                        " WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = current_database()"
                    )
                ).scalar()
            return int(waiting or 0)

        try:
            yield waiters
        finally:
            conn.execute(sa.select(sa.func.pg_advisory_unlock(key)))
            conn.commit()


def wait_until(what: str, condition: Callable[[], Any], procs: Procs, log: Path) -> Any:
    """Poll ``condition`` against the deadline; fail early if a materialize process died."""
    deadline = time.monotonic() + DEADLINE
    while True:
        value = condition()
        if value:
            return value
        failed = [p.returncode for p in procs if p.poll() not in (None, 0)]
        if failed or time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen (exit codes {failed})\n{log.read_text()[-6000:]}")
        time.sleep(0.2)  # polling interval of a condition with a deadline


def finish(procs: Procs, log: Path) -> None:
    for proc in procs:
        assert proc.wait(timeout=DEADLINE) == 0, log.read_text()[-6000:]


def materializations(env: dict[str, str], table: str) -> dict[str, list[dict[str, Any]]]:
    """Every materialization of ``sync/<table>``'s partitions so far: its metadata counts, per partition."""
    found: dict[str, list[dict[str, Any]]] = {}
    with DagsterInstance.from_ref(InstanceRef.from_dir(env["DAGSTER_HOME"])) as instance:
        records = instance.fetch_materializations(AssetKey(["sync", table]), limit=1000).records
        for record in records:
            event = record.asset_materialization
            assert event is not None
            counts = {name: event.metadata[name].value for name in ("inserted", "updated", "deleted")}
            found.setdefault(str(event.partition), []).append(counts)
    return found


def test_colliding_runs_of_one_partition_serialise_and_their_counts_add_up(
    deployment: tuple[Side, Side, dict[str, str]], tmp_path: Path
) -> None:
    """Three runs of orders@08:00 started together wait on the partition's lock, then run one after
    another: one inserts the 40 rows, the other two find nothing; 40 in all; target equals source.
    """
    source, target, env = deployment
    log = tmp_path / "materialize.log"
    with holding_lock(target, "orders", H08) as waiters:
        procs = [materialize(env, "sync/orders", H08, log) for _ in range(3)]
        wait_until("three runs waiting on the lock", lambda: waiters() == 3, procs, log)
        assert materializations(env, "orders") == {}
    finish(procs, log)

    runs = materializations(env, "orders")["2026-11-30-08:00"]
    assert sorted(r["inserted"] for r in runs) == [0, 0, 40]
    assert sum(r["updated"] + r["deleted"] for r in runs) == 0
    assert rows_in(target, "orders", H08) == rows_in(source, "orders", H08)


def test_other_tables_and_partitions_do_not_wait_for_a_blocked_partition(
    deployment: tuple[Side, Side, dict[str, str]], tmp_path: Path
) -> None:
    """orders@08:00 is blocked on its lock. Meanwhile items@08:00 (the same run, its own step) and
    orders@09:00 (another run) both finish; orders@08:00 finishes once released.
    """
    source, target, env = deployment
    log = tmp_path / "materialize.log"
    with holding_lock(target, "orders", H08) as waiters:
        both = materialize(env, "sync/orders,sync/items", H08, log)
        later = materialize(env, "sync/orders", H09, log)
        procs = [both, later]
        wait_until(
            "items@08:00 synced", lambda: "2026-11-30-08:00" in materializations(env, "items"), procs, log
        )
        wait_until("orders@09:00 synced", lambda: later.poll() == 0, procs, log)
        assert waiters() == 1
        assert "2026-11-30-08:00" not in materializations(env, "orders")
        assert both.poll() is None
    finish(procs, log)

    assert materializations(env, "orders")["2026-11-30-08:00"] == [
        {"inserted": 40, "updated": 0, "deleted": 0}
    ]
    for name in ("orders", "items"):
        assert rows_in(target, name, H08) == rows_in(source, name, H08)
    assert rows_in(target, "orders", H09) == rows_in(source, "orders", H09)
