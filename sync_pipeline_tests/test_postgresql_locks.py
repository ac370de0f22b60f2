"""No PostgreSQL lock is waited for longer than ``lock_timeout_seconds`` (issue 13, defect 5).

Every session the engine opens for a sync carries the table's bound as its ``lock_timeout``: a column
the sync adds while another session has the table in an open transaction, a row another session
holds, or a read queued behind someone else's pending ALTER fails the run as a :class:`LockTimeout`
(transient: Dagster retries it) naming the table, instead of waiting for ever and making every
reader of the table wait behind it. The MariaDB side of this is in ``test_mariadb_edges.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from sync_pipeline.engine.db.dialects import adapter_for
from sync_pipeline.engine.db.engine import open_engine
from sync_pipeline.errors import LockTimeout, TransientError
from sync_pipeline_tests.conftest import MakeDbUrl
from sync_pipeline_tests.helpers import (
    CHANGE_COUNTS,
    Pair,
    W,
    at,
    counts,
    fingerprint,
    insert,
    items_table,
    make_pair,
    read_rows,
    reflect,
    stamp,
    table_config,
    update,
)

LOCK_TIMEOUT = 1.0
# What a failing run may take beyond its lock timeout: planning, connecting, a loaded machine.
MARGIN = 20.0


def synced_items(make_db_url: MakeDbUrl) -> tuple[Pair, Any]:
    """PostgreSQL to PostgreSQL, five rows of ``items`` synced, with a 1 s lock timeout."""
    pair = make_pair(make_db_url, "postgresql", "postgresql")
    table = items_table()
    table.create(pair.source.engine)
    insert(
        pair.source,
        table,
        [{"id": i, "updated_at": stamp(W, i), "name": f"n{i}", "qty": i} for i in range(5)],
    )
    config = table_config("items", lock_timeout_seconds=LOCK_TIMEOUT)
    assert pair.sync(config).inserted == 5
    return pair, config


def timed(call: Callable[[], object]) -> float:
    started = time.monotonic()
    call()
    return time.monotonic() - started


def wait_for(what: str, condition: Callable[[], bool], seconds: float = 30) -> None:
    """Poll the server until ``condition`` holds (observable state, not a guessed delay)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


@pytest.mark.timeout(90)
def test_adding_a_column_while_another_session_uses_the_table_fails_within_the_lock_timeout(
    make_db_url: MakeDbUrl,
) -> None:
    """A column added to the source makes the sync ALTER the target, which needs the table's
    ACCESS EXCLUSIVE lock. While another session is inside a transaction that read the table, the
    ALTER waits, and every new reader waits behind it. It gives up after lock_timeout_seconds with a
    LockTimeout naming the table and the column; once the other transaction ends, the next run adds
    and fills the column. Without a bound it waited as long as the other transaction lasted:
    pytest-timeout guards against that hang."""
    pair, config = synced_items(make_db_url)
    with pair.source.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE items ADD COLUMN tier INTEGER DEFAULT 7")

    with pair.target.engine.connect() as holder:
        holder.execute(sa.text("SELECT COUNT(*) FROM items")).scalar_one()  # inside its transaction
        caught: list[BaseException] = []

        def run() -> None:
            try:
                pair.sync(config)
            except LockTimeout as error:
                caught.append(error)

        assert timed(run) < LOCK_TIMEOUT + MARGIN
        assert len(caught) == 1, "the sync did not fail with a LockTimeout"
        assert isinstance(caught[0], TransientError)
        assert "'items'" in str(caught[0])
        assert "'tier'" in str(caught[0])
        holder.rollback()

    assert "tier" not in reflect(pair.target, "items").c
    assert counts(pair.sync(config), *CHANGE_COUNTS) == {"inserted": 0, "updated": 5, "deleted": 0}
    assert {row[1] for row in read_rows(pair.target, "items", ["id"], ["id", "tier"]).values()} == {7}


@pytest.mark.timeout(90)
def test_a_row_locked_by_another_session_fails_the_sync_within_its_lock_timeout(
    make_db_url: MakeDbUrl,
) -> None:
    """A target row locked by another session (SELECT ... FOR UPDATE) makes the sync's upsert wait:
    no longer than lock_timeout_seconds, then the run fails as a LockTimeout naming the table's sync,
    with nothing written; once the row is free the next run applies the change."""
    pair, config = synced_items(make_db_url)
    source = items_table()
    update(pair.source, source, source.c.id.in_([1, 2]), updated_at=at(W, 3599), name="changed")
    before = fingerprint(pair.target, "items", ["id"])

    with pair.target.engine.connect() as holder:
        holder.execute(sa.text("SELECT * FROM items WHERE id = 1 FOR UPDATE")).all()
        started = time.monotonic()
        with pytest.raises(LockTimeout, match=r"sync of t .*lock_timeout_seconds"):
            pair.sync(config)
        assert time.monotonic() - started < LOCK_TIMEOUT + MARGIN
        holder.rollback()

    assert fingerprint(pair.target, "items", ["id"]) == before
    assert counts(pair.sync(config), *CHANGE_COUNTS) == {"inserted": 0, "updated": 2, "deleted": 0}


@pytest.mark.timeout(90)
def test_reads_queued_behind_another_sessions_alter_fail_within_the_lock_timeout(
    make_db_url: MakeDbUrl,
) -> None:
    """Someone else's ALTER of the target waits for a transaction that read the table, and every new
    reader queues behind the ALTER. The sync's reads wait there no longer than lock_timeout_seconds:
    the run fails as a LockTimeout, nothing is written, and it succeeds once the ALTER is through."""
    pair, config = synced_items(make_db_url)
    source = items_table()
    update(pair.source, source, source.c.id == 1, updated_at=at(W, 3599), name="changed")

    with pair.target.engine.connect() as holder, pair.target.engine.connect() as alterer:
        holder.execute(sa.text("SELECT COUNT(*) FROM items")).scalar_one()  # inside its transaction
        alter_pid = alterer.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        alterer.commit()
        # Should the run wait regardless, the ALTER gives up first, and the test fails, not hangs.
        alterer.exec_driver_sql("SET lock_timeout = '30s'")
        alter = threading.Thread(
            target=lambda: alterer.exec_driver_sql("ALTER TABLE items ADD COLUMN other INTEGER"), daemon=True
        )
        alter.start()

        def alter_waits() -> bool:
            with pair.target.engine.connect() as probe:
                waiting = probe.execute(
                    sa.text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"),
                    {"pid": alter_pid},
                ).scalar()
            return waiting == "Lock"

        wait_for("the ALTER to wait for the table's lock", alter_waits)
        started = time.monotonic()
        with pytest.raises(LockTimeout):
            pair.sync(config)
        assert time.monotonic() - started < LOCK_TIMEOUT + MARGIN
        holder.rollback()
        alter.join()
        alterer.commit()

    assert "other" in reflect(pair.target, "items").c
    assert counts(pair.sync(config), *CHANGE_COUNTS) == {"inserted": 0, "updated": 1, "deleted": 0}


def test_every_postgresql_session_of_the_engine_is_bounded(pg_url: str) -> None:
    """Each pooled session starts with the bound (not only the first), and the advisory lock, which
    sets its own wait, returns the session to it."""
    with open_engine(pg_url, lock_timeout_seconds=2.5) as engine:
        with engine.connect() as first, engine.connect() as second:
            for conn in (first, second):
                assert conn.exec_driver_sql("SHOW lock_timeout").scalar_one() == "2500ms"
        with engine.connect() as conn:
            assert adapter_for("postgresql").acquire_lock(conn, "some lock", 0.5)
            assert conn.exec_driver_sql("SHOW lock_timeout").scalar_one() == "2500ms"
            adapter_for("postgresql").release_lock(conn, "some lock")
    with open_engine(pg_url) as engine, engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW lock_timeout").scalar_one() == "0"
