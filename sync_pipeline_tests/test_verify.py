"""Full-row comparison: verification after a sync, drift found and repaired, on real databases."""

from __future__ import annotations

import datetime as dt
import os
from decimal import Decimal

import pytest
import sqlalchemy as sa

from sync_pipeline.config import TableConfig, parse_config
from sync_pipeline.engine.db.canonical import in_database, python_text, sql_text
from sync_pipeline.engine.db.dialects import adapter_for
from sync_pipeline.engine.db.dialects.sqlite import hash60
from sync_pipeline.engine.db.engine import open_engine
from sync_pipeline.engine.db.schema import Family, family_of
from sync_pipeline.engine.diff.window import Window
from sync_pipeline.engine.sync import sync_partition
from sync_pipeline.engine.verify import verify_partition
from sync_pipeline_tests.conftest import MakeDbUrl

HOUR = dt.datetime(2026, 11, 30, 8, tzinfo=dt.UTC)
WINDOW = Window.hour_starting(HOUR)

PORTABLE = {Family.INTEGER, Family.TEXT, Family.TIMESTAMP, Family.BOOLEAN, Family.BINARY, Family.DATE}

PAIRS = [
    ("postgresql", "postgresql"),
    ("mysql", "postgresql"),
    ("postgresql", "sqlite"),
    ("sqlite", "mysql"),
]


def _table() -> TableConfig:
    return parse_config(
        """
connections: {a: {url: "sqlite://"}}
tables:
  - {name: events, source: {connection: a, table: events}, target: {connection: a, table: events},
     primary_key: [id], updated_at: updated_at, start: "2026-11-01T00:00:00", chunk_size: 200}
"""
    ).tables[0]


def _source(url: str, rows: int = 1500) -> sa.Table:
    engine = sa.create_engine(url)
    metadata = sa.MetaData()
    events = sa.Table(
        "events",
        metadata,
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(40)),
        sa.Column("amount", sa.Numeric(12, 2)),
        sa.Column("active", sa.Boolean),
        sa.Column("blob", sa.LargeBinary),
        sa.Column("payload", sa.JSON),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            events.insert(),
            [
                {
                    "id": i,
                    "kind": f"kind-{i % 7}",
                    "amount": Decimal(i) / 100,
                    "active": i % 2 == 0,
                    "blob": bytes([i % 256, 0, 255]),
                    "payload": {"n": i, "tags": ["a", i % 3]} if i % 5 else None,
                    "updated_at": HOUR + dt.timedelta(seconds=i),
                }
                for i in range(1, rows + 1)
            ],
        )
    engine.dispose()
    return events


def _execute(url: str, sql: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(sql))
    engine.dispose()


@pytest.mark.parametrize(("source_engine", "target_engine"), PAIRS, ids=[f"{s}->{t}" for s, t in PAIRS])
def test_drift_behind_the_pipelines_back_is_found_and_repaired(
    make_db_url: MakeDbUrl, source_engine: str, target_engine: str
) -> None:
    """A value changed without touching updated_at, a target row deleted and a source row deleted are
    invisible to nobody: verification counts all three, a full-row sync repairs them, and after it the
    partition verifies clean. An updated_at sync alone cannot see the changed value."""
    source, target = make_db_url(source_engine, "src"), make_db_url(target_engine, "tgt")
    _source(source)
    table = _table()
    sync_partition(table, source, target, WINDOW)
    clean = verify_partition(table, source, target, WINDOW)
    assert clean.in_sync
    assert (clean.source_rows, clean.target_rows) == (1500, 1500)

    _execute(target, "UPDATE events SET kind = 'tampered' WHERE id = 10")
    _execute(target, "DELETE FROM events WHERE id = 20")
    _execute(source, "DELETE FROM events WHERE id = 30")
    drift = verify_partition(table, source, target, WINDOW)
    assert drift.rows_differing == 3

    by_updated_at = sync_partition(table, source, target, WINDOW, dry_run=True)
    assert (by_updated_at.inserted, by_updated_at.updated, by_updated_at.deleted) == (1, 0, 1)

    repair = sync_partition(table, source, target, WINDOW, compare="row")
    assert (repair.inserted, repair.updated, repair.deleted) == (1, 1, 1)
    after = verify_partition(table, source, target, WINDOW)
    assert after.in_sync
    assert after.keys_scanned == 0 or not in_database_everywhere(source, target)


def in_database_everywhere(source: str, target: str) -> bool:
    """Whether every column of the test table is compared inside the databases for this pair."""
    with open_engine(source) as s, open_engine(target) as t:
        src = sa.Table("events", sa.MetaData(), autoload_with=s)
        tgt = sa.Table("events", sa.MetaData(), autoload_with=t)
        return all(in_database(src.c[c.name], s.dialect.name, tgt.c[c.name], t.dialect.name) for c in src.c)


def test_intact_partition_costs_only_aggregates_on_postgresql(make_db_url: MakeDbUrl) -> None:
    """PostgreSQL to PostgreSQL, every column compares in the database: an intact partition streams
    no key at all, and one tampered row is narrowed to a small key range."""
    source, target = make_db_url("postgresql", "src"), make_db_url("postgresql", "tgt")
    _source(source, rows=3500)
    table = _table()
    sync_partition(table, source, target, WINDOW)
    intact = verify_partition(table, source, target, WINDOW)
    assert intact.in_sync
    assert intact.keys_scanned == 0
    _execute(target, "UPDATE events SET amount = amount + 1 WHERE id = 1234")
    drift = verify_partition(table, source, target, WINDOW)
    assert drift.rows_differing == 1
    assert 0 < drift.keys_scanned < 3500


def test_a_mariadb_datetime_synced_into_the_datetime6_target_verifies_in_sync(
    make_db_url: MakeDbUrl,
) -> None:
    """MariaDB to MariaDB: the target the pipeline creates holds a source's DATETIME (whole seconds)
    as DATETIME(6). Each side prints its own ("08:00:01" and "08:00:01.000000"), so the two are not
    hashed as stored but through their canonical text: an intact partition verifies in sync (it
    reported every row differing), and a timestamp changed by a second is still found (a
    microsecond is not: the two compare at the source's precision, whole seconds)."""
    source, target = make_db_url("mysql", "src"), make_db_url("mysql", "tgt")
    _source(source, rows=50)
    table = _table()
    sync_partition(table, source, target, WINDOW)
    verification = verify_partition(table, source, target, WINDOW)
    assert verification.in_sync, verification
    assert verification.keys_scanned == 0
    _execute(target, "UPDATE events SET updated_at = updated_at + INTERVAL 1 SECOND WHERE id = 7")
    assert verify_partition(table, source, target, WINDOW).rows_differing == 1


@pytest.mark.parametrize("engine", ["postgresql", "mysql"])
def test_an_intact_partition_opens_one_connection_a_side_and_leaves_none_open(
    make_db_url: MakeDbUrl, engine: str
) -> None:
    """An intact partition is settled by one aggregate a side: no connection is opened for key
    lookups or row fetches it does not need, none stays open after it, and the next verification
    of the same databases reuses the engines (their dialects initialised), not their connections."""
    source, target = make_db_url(engine, "src"), make_db_url(engine, "tgt")
    _source(source, rows=300)
    table = _table()
    sync_partition(table, source, target, WINDOW)
    connects: list[str] = []

    def count(dbapi_connection: object, record: object) -> None:
        connects.append("connect")

    sa.event.listen(sa.pool.Pool, "connect", count)
    try:
        for _ in range(2):
            assert verify_partition(table, source, target, WINDOW).in_sync
    finally:
        sa.event.remove(sa.pool.Pool, "connect", count)
    assert len(connects) == 4  # two a verification: the plan's connection to each side, reused
    names = [sa.make_url(url).database for url in (source, target)]
    admin = sa.create_engine(source)
    with admin.connect() as conn:
        if engine == "postgresql":
            mine = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
            query = "SELECT count(*) FROM pg_stat_activity WHERE datname IN (:a, :b) AND pid <> :mine"
        else:
            mine = conn.execute(sa.text("SELECT connection_id()")).scalar_one()
            query = "SELECT count(*) FROM information_schema.processlist WHERE db IN (:a, :b) AND id <> :mine"
        assert conn.execute(sa.text(query), {"a": names[0], "b": names[1], "mine": mine}).scalar_one() == 0
    admin.dispose()
    with open_engine(source) as first, open_engine(source) as second:
        assert first is second


def test_a_process_forked_while_an_engine_is_kept_opens_its_own_connections(make_db_url: MakeDbUrl) -> None:
    """Forked while a unit of work holds a kept engine (its pool holding a connection), the child
    gets a fresh engine for the same URL, never the parent's socket; the parent's connection is
    still good after the child's sessions end (SQLAlchemy's advice for ``os.fork()``)."""
    url = make_db_url("postgresql", "src")
    with open_engine(url) as engine:
        with engine.connect() as conn:
            parent_pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        read, write = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - the child reports through the pipe
            code = 1
            try:
                with open_engine(url) as mine, mine.connect() as conn:
                    pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
                os.write(write, f"{pid} {int(mine is engine)}".encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        _, status = os.waitpid(child, 0)
        with os.fdopen(read) as pipe:
            reported = pipe.read().split()
        assert os.waitstatus_to_exitcode(status) == 0
        child_pid, same_engine = int(reported[0]), reported[1]
        assert same_engine == "0"
        assert child_pid != parent_pid
        with engine.connect() as conn:  # the parent's pooled connection, untouched by the child
            assert conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one() == parent_pid


@pytest.mark.parametrize("engine", ["sqlite", "postgresql", "mysql"])
def test_sql_canonical_text_agrees_with_python(make_db_url: MakeDbUrl, engine: str) -> None:
    """The canonical text each engine computes in SQL hashes exactly like the Python reference, so
    rows compared in a database and rows compared in Python agree."""
    url = make_db_url(engine, "db")
    events = _source(url, rows=50)
    adapter = adapter_for(engine)
    with open_engine(url) as db:
        live = sa.Table("events", sa.MetaData(), autoload_with=db)
        # Columns every engine prints alike in SQL (decimals print their scale in SQL and are
        # normalised in Python: the two forms are never mixed within one comparison).
        portable = [c for c in live.c if family_of(c.type) in PORTABLE]
        parts = [
            sql_text(adapter, c, naive=adapter.is_naive(c.type), zone="UTC", divisor=1) for c in portable
        ]
        texts = [python_text(family_of(c.type), zone="UTC", divisor=1) for c in portable]
        with db.connect() as conn:
            in_sql = dict(conn.execute(sa.select(live.c.id, adapter.row_hash(parts))).all())
            rows = conn.execute(sa.select(live.c.id, *portable)).all()
    in_python = {row[0]: hash60(*(text(v) for text, v in zip(texts, row[1:], strict=True))) for row in rows}
    assert len(in_sql) == 50
    assert in_sql == in_python
    assert events.name == "events"


def test_null_bytes_verify_clean_into_sqlite(make_db_url: MakeDbUrl) -> None:
    """SQLite's hex(NULL) is '' where the other engines' is NULL: a NULL bytes column synced from
    PostgreSQL into SQLite verified as different on every run (and NULL vs empty bytes as equal)."""
    source, target = make_db_url("postgresql", "src"), make_db_url("sqlite", "tgt")
    engine = sa.create_engine(source)
    blobs = sa.Table(
        "events",
        sa.MetaData(),
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("blob", sa.LargeBinary),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    blobs.create(engine)
    with engine.begin() as conn:
        conn.execute(
            blobs.insert(),
            [{"id": i, "blob": blob, "updated_at": HOUR} for i, blob in enumerate([None, b"", b"\x00"], 1)],
        )
    engine.dispose()
    table = _table()
    sync_partition(table, source, target, WINDOW)
    assert verify_partition(table, source, target, WINDOW).in_sync
    _execute(target, "UPDATE events SET blob = x'' WHERE id = 1")
    assert verify_partition(table, source, target, WINDOW).rows_differing == 1


def test_negative_zero_copied_into_mariadb_verifies_clean(make_db_url: MakeDbUrl) -> None:
    """MariaDB stores a double -0.0 as 0: the copy of a PostgreSQL -0.0 must verify clean (it was
    reported as a differing row on every run, and re-synced by every drift repair)."""
    source, target = make_db_url("postgresql", "src"), make_db_url("mysql", "tgt")
    engine = sa.create_engine(source)
    floats = sa.Table(
        "events",
        sa.MetaData(),
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("x", sa.Double),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    floats.create(engine)
    with engine.begin() as conn:
        conn.execute(
            floats.insert(),
            [{"id": i, "x": x, "updated_at": HOUR} for i, x in enumerate([-0.0, 0.0, 1.5], 1)],
        )
    engine.dispose()
    table = _table()
    sync_partition(table, source, target, WINDOW)
    assert verify_partition(table, source, target, WINDOW).in_sync
    _execute(target, "UPDATE events SET x = 1e-300 WHERE id = 1")
    assert verify_partition(table, source, target, WINDOW).rows_differing == 1


def test_mariadb_connections_share_one_tls_context_and_stay_in_preferred_mode(
    make_db_url: MakeDbUrl,
) -> None:
    """A verification opens several connections per side; PyMySQL would build a TLS context (the
    CA store read from disk) for each. Every connection of the process, of any engine, uses one,
    and TLS stays what PyMySQL makes it without options: tried, not required."""
    url = make_db_url("mysql", "tls")
    drivers = []
    with open_engine(url) as first, open_engine(url) as second:
        for engine in (first, second, first):
            with engine.connect() as conn, engine.connect() as other:
                drivers += [conn.connection.driver_connection, other.connection.driver_connection]
            engine.dispose()  # the next connection is a new one
        assert len({id(driver) for driver in drivers}) == len(drivers)
        assert len({id(driver.ctx) for driver in drivers}) == 1
        assert all(driver.ssl and not driver._ssl_required for driver in drivers)


def test_floats_one_ulp_apart_differ_between_two_sqlite_files(make_db_url: MakeDbUrl) -> None:
    """SQLite prints a REAL with 15 significant digits (6.343350908687068e16 and ...069e16 both as
    6.34335090868707e+16): two SQLite tables compare floats by their Python text, which sees it."""
    source, target = make_db_url("sqlite", "src"), make_db_url("sqlite", "tgt")
    engine = sa.create_engine(source)
    events = sa.Table(
        "events",
        sa.MetaData(),
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("ratio", sa.Double),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    events.create(engine)
    with engine.begin() as conn:
        conn.execute(
            events.insert(),
            [{"id": i, "ratio": 6.343350908687068e16 + i, "updated_at": HOUR} for i in range(1, 4)],
        )
    engine.dispose()
    table = _table()
    sync_partition(table, source, target, WINDOW)
    assert verify_partition(table, source, target, WINDOW).in_sync
    _execute(target, "UPDATE events SET ratio = 6.343350908687069e16 WHERE id = 2")
    assert verify_partition(table, source, target, WINDOW).rows_differing == 1


def test_json_keys_reordered_between_two_sqlite_files_are_the_same_document(make_db_url: MakeDbUrl) -> None:
    """SQLite keeps a JSON document as the text it was given: the same keys in another order are the
    same document to the canonical text (keys sorted), and a changed value is not."""
    source, target = make_db_url("sqlite", "src"), make_db_url("sqlite", "tgt")
    _source(source, rows=20)
    table = _table()
    sync_partition(table, source, target, WINDOW)
    _execute(target, """UPDATE events SET payload = '{"tags": ["a", 1], "n": 1}' WHERE id = 1""")
    assert verify_partition(table, source, target, WINDOW).in_sync
    _execute(target, """UPDATE events SET payload = '{"tags": ["a", 2], "n": 1}' WHERE id = 1""")
    assert verify_partition(table, source, target, WINDOW).rows_differing == 1


def test_mariadb_json_reflected_as_text_verifies_clean_against_a_jsonb_target(make_db_url: MakeDbUrl) -> None:
    """MariaDB's JSON is a LONGTEXT alias and reflects as text; a PostgreSQL target created with
    ``jsonb`` normalises the same documents (key order, spacing). Every row was reported as differing,
    so every in_sync check failed and every drift milestone asked for a repair."""
    source, target = make_db_url("mysql", "src"), make_db_url("postgresql", "tgt")
    _execute(
        source,
        "CREATE TABLE events (id BIGINT PRIMARY KEY, payload JSON, updated_at DATETIME(6) NOT NULL)",
    )
    documents = [
        '{"b": 1, "a": [1, 2.5]}',
        '{"n": 1e2, "m": 1.50}',
        '{"z":{"y":"é","x":null}}',
        "[3, 2, 1]",
        '"text"',
        None,
    ]
    engine = sa.create_engine(source)
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO events VALUES (:id, :payload, :updated_at)"),
            [
                {"id": i, "payload": doc, "updated_at": HOUR.replace(tzinfo=None)}
                for i, doc in enumerate(documents, 1)
            ],
        )
    engine.dispose()
    _execute(
        target,
        "CREATE TABLE events (id BIGINT PRIMARY KEY, payload JSONB, updated_at TIMESTAMPTZ(6) NOT NULL)",
    )
    table = _table()
    sync_partition(table, source, target, WINDOW)
    assert verify_partition(table, source, target, WINDOW).in_sync
    _execute(target, """UPDATE events SET payload = '{"a": [1, 2.5], "b": 2}' WHERE id = 1""")
    assert verify_partition(table, source, target, WINDOW).rows_differing == 1
