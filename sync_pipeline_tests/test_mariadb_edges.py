"""MariaDB at the edges of types, collations and locks (issue 13, defects 1, 4, 5 and 10).

* A key column whose collation folds case, accents or trailing spaces would merge distinct source
  keys into one target row: an existing target like that is refused before anything is written,
  and ``validate`` (the plan alone) says so, naming the column and its collation. A source with such
  a collation is fine: its keys are unique under it, and the key streams are read in binary order.
* ``INT UNSIGNED`` and ``BIGINT UNSIGNED`` (keys too) arrive exactly in PostgreSQL and MariaDB
  targets; SQLite, whose integers end at 2**63 - 1, is refused a ``BIGINT UNSIGNED`` column.
* No MariaDB lock is waited for longer than ``lock_timeout_seconds``: a column the sync adds while
  another session reads the table, or a row another session holds, fails the run as a transient
  error (Dagster retries it) instead of hanging for a day and blocking every reader behind it.
* Text longer than 255 characters (PostgreSQL ``text``) fits the MariaDB table the sync creates,
  keys included up to what an index can hold; every session is strict, so nothing is truncated.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from sync_pipeline.engine.db.engine import open_engine
from sync_pipeline.engine.plan import plan_sync
from sync_pipeline.engine.verify import verify_partition
from sync_pipeline.errors import LockTimeout, SchemaError, TransientError
from sync_pipeline_tests.conftest import MakeDbUrl
from sync_pipeline_tests.helpers import (
    CHANGE_COUNTS,
    NOTHING_CHANGED,
    TS,
    Pair,
    Side,
    W,
    assert_same_rows,
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

pytestmark = pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")


def execute(side: Side, *statements: str) -> None:
    with side.engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)


def row_count(side: Side, name: str) -> int:
    with side.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(reflect(side, name))).scalar_one())


def validate(pair: Pair, config: Any) -> None:
    """What ``sync-pipeline validate`` runs for a table: the plan, creating and writing nothing."""
    with open_engine(pair.source.url) as source, open_engine(pair.target.url) as target:
        plan_sync(config, source, target, create_target=False)


# -- 1. key collations --------------------------------------------------------------------------------
# Distinct keys that a case-, accent- or pad-insensitive collation makes equal: "a" = "A" = "a " under
# utf8mb4_general_ci; "a" = "a " under utf8mb4_bin (PAD SPACE); "é" = "e" under the _ci ones.
FOLDED_KEYS = ["a", "A", "a ", "é", "e", "e\u0301"]


def codes_table(key_type: sa.types.TypeEngine[Any] | None = None) -> sa.Table:
    return sa.Table(
        "codes",
        sa.MetaData(),
        sa.Column("code", key_type if key_type is not None else sa.String(40), primary_key=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("payload", sa.String(40)),
    )


@pytest.mark.parametrize("collation", ["utf8mb4_general_ci", "utf8mb4_unicode_ci", "utf8mb4_bin"])
def test_existing_mariadb_target_whose_key_collation_merges_keys_is_refused(
    make_db_url: MakeDbUrl, collation: str
) -> None:
    """An existing target keyed by a column whose collation folds case, accents or trailing spaces
    (the server default utf8mb4_general_ci, or the PAD SPACE utf8mb4_bin) would store "a", "A" and
    "a " as one row, and every later run would insert them again. The sync refuses it before writing
    anything, and the plan alone (``validate``) refuses it too, naming the column and its collation.
    """
    pair = make_pair(make_db_url, "postgresql", "mysql")
    codes_table().create(pair.source.engine)
    codes_table(mysql.VARCHAR(40, charset="utf8mb4", collation=collation)).create(pair.target.engine)
    insert(
        pair.source,
        codes_table(),
        [{"code": c, "updated_at": stamp(W, n), "payload": c} for n, c in enumerate(FOLDED_KEYS)],
    )
    config = table_config("codes", primary_key=["code"])

    with pytest.raises(SchemaError, match=rf"'codes'.*'code'.*{collation}") as caught:
        pair.sync(config)
    assert "binary" in str(caught.value)
    assert row_count(pair.target, "codes") == 0
    with pytest.raises(SchemaError, match=rf"'code'.*{collation}"):
        validate(pair, config)


def test_existing_mariadb_target_with_a_binary_no_pad_key_collation_syncs_every_key(
    make_db_url: MakeDbUrl,
) -> None:
    """The collation the sync gives the targets it creates (utf8mb4_nopad_bin) is accepted when
    the user created the table: the six keys stay six rows, and a second run writes nothing."""
    pair = make_pair(make_db_url, "postgresql", "mysql")
    codes_table().create(pair.source.engine)
    codes_table(mysql.VARCHAR(40, charset="utf8mb4", collation="utf8mb4_nopad_bin")).create(
        pair.target.engine
    )
    rows = [{"code": c, "updated_at": stamp(W, n), "payload": c} for n, c in enumerate(FOLDED_KEYS)]
    insert(pair.source, codes_table(), rows)
    config = table_config("codes", primary_key=["code"])

    assert pair.sync(config).inserted == len(FOLDED_KEYS)
    assert_same_rows(pair, "codes", "codes", ["code"], ["code", "updated_at", "payload"])
    assert counts(pair.sync(config), *CHANGE_COUNTS) == NOTHING_CHANGED


def test_case_insensitive_mariadb_source_keys_sync_into_a_created_mariadb_target(
    make_db_url: MakeDbUrl,
) -> None:
    """A source keyed under utf8mb4_unicode_ci (the test database's default) holds keys that are
    unique under it and sort differently there than in binary order ("a" < "B" there, "B" < "a" by
    code point). Both key streams are read in binary order, so the merge agrees: every key arrives
    once, a change lands on its own key, a second run writes nothing and verification passes."""
    pair = make_pair(make_db_url, "mysql", "mysql")
    table = codes_table()
    table.create(pair.source.engine)
    keys = ["B", "a", "Ö", "é", "z", "C", "_x", "中", "😀", "a b", *(f"K{i:02d}" for i in range(10))]
    insert(
        pair.source, table, [{"code": c, "updated_at": stamp(W, n), "payload": c} for n, c in enumerate(keys)]
    )
    config = table_config("codes", primary_key=["code"], chunk_size=3)
    columns = ["code", "updated_at", "payload"]

    assert pair.sync(config).inserted == len(keys)
    assert_same_rows(pair, "codes", "codes", ["code"], columns)
    update(pair.source, table, table.c.code == "é", updated_at=at(W, 3599), payload="changed")
    stats = pair.sync(config)
    assert counts(stats, *CHANGE_COUNTS, "unchanged") == {
        "inserted": 0,
        "updated": 1,
        "deleted": 0,
        "unchanged": len(keys) - 1,
    }
    assert read_rows(pair.target, "codes", ["code"], columns)["é"][2] == "changed"
    assert counts(pair.sync(config), *CHANGE_COUNTS) == NOTHING_CHANGED
    assert verify_partition(config, pair.source.url, pair.target.url, W).in_sync


# -- 4. unsigned integers -------------------------------------------------------------------------------
UNSIGNED_KEYS = [0, 1, 2**31, 2**32 - 1, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1]


def unsigned_table(key: sa.types.TypeEngine[Any]) -> sa.Table:
    return sa.Table(
        "counters",
        sa.MetaData(),
        sa.Column("id", key, primary_key=True, autoincrement=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("small", mysql.SMALLINT(unsigned=True)),
        sa.Column("medium", mysql.INTEGER(unsigned=True)),
        sa.Column("big", mysql.BIGINT(unsigned=True)),
    )


def unsigned_rows(keys: list[int]) -> list[dict[str, Any]]:
    return [
        {
            "id": k,
            "updated_at": stamp(W, n),
            "small": 65535 - n,
            "medium": 4294967295 - n,
            "big": 18446744073709551615 - n,
        }
        for n, k in enumerate(keys)
    ]


@pytest.mark.parametrize("target_kind", ["postgresql", "mysql"])
@pytest.mark.parametrize(
    ("key_type", "keys"),
    [
        (mysql.INTEGER(unsigned=True), [k for k in UNSIGNED_KEYS if k < 2**32]),
        (mysql.BIGINT(unsigned=True), UNSIGNED_KEYS),
    ],
    ids=["int-unsigned-key", "bigint-unsigned-key"],
)
def test_unsigned_integers_sync_exactly(
    make_db_url: MakeDbUrl, target_kind: str, key_type: sa.types.TypeEngine[Any], keys: list[int]
) -> None:
    """MariaDB's unsigned integers up to their maximum (4294967295, 18446744073709551615), keys
    included, arrive exactly in the target the sync creates: the same unsigned types on MariaDB,
    wider types on PostgreSQL (BIGINT for INT UNSIGNED, NUMERIC(20,0) for BIGINT UNSIGNED). A
    second run writes nothing and verification passes; a change to the largest key is synced."""
    pair = make_pair(make_db_url, "mysql", target_kind)
    table = unsigned_table(key_type)
    table.create(pair.source.engine)
    insert(pair.source, table, unsigned_rows(keys))
    config = table_config("counters")
    columns = ["id", "updated_at", "small", "medium", "big"]

    assert pair.sync(config).inserted == len(keys)
    assert_same_rows(pair, "counters", "counters", ["id"], columns)
    before = fingerprint(pair.target, "counters", ["id"])
    assert counts(pair.sync(config), *CHANGE_COUNTS) == NOTHING_CHANGED
    assert fingerprint(pair.target, "counters", ["id"]) == before
    assert verify_partition(config, pair.source.url, pair.target.url, W).in_sync

    update(pair.source, table, table.c.id == max(keys), updated_at=at(W, 3599), big=7)
    assert counts(pair.sync(config), *CHANGE_COUNTS) == {"inserted": 0, "updated": 1, "deleted": 0}
    assert_same_rows(pair, "counters", "counters", ["id"], columns)


def test_bigint_unsigned_keys_above_2_63_sync_when_updated_at_has_whole_seconds(
    make_db_url: MakeDbUrl,
) -> None:
    """With a DATETIME (whole seconds) ``updated_at`` the range checksums of MariaDB to MariaDB use the
    cross-engine integer mix, which reads keys as signed 64-bit: keys from 2**63 up wrapped to
    negatives, fell out of every key range and were never copied, silently. They are all copied, a
    change to the largest is synced, and a second run writes nothing."""
    pair = make_pair(make_db_url, "mysql", "mysql")
    table = sa.Table(
        "wide",
        sa.MetaData(),
        sa.Column("id", mysql.BIGINT(unsigned=True), primary_key=True, autoincrement=False),
        sa.Column("updated_at", mysql.DATETIME(), nullable=False),
        sa.Column("v", sa.Integer),
    )
    table.create(pair.source.engine)
    keys = [0, 5, 2**63 - 1, 2**63, 2**63 + 7, 2**64 - 1]
    start = W.start.replace(tzinfo=None)
    insert(pair.source, table, [{"id": k, "updated_at": start, "v": n} for n, k in enumerate(keys)])
    config = table_config("wide")
    columns = ["id", "updated_at", "v"]

    assert pair.sync(config).inserted == len(keys)
    assert_same_rows(pair, "wide", "wide", ["id"], columns)
    update(pair.source, table, table.c.id == 2**64 - 1, updated_at=start.replace(minute=30), v=99)
    assert counts(pair.sync(config), *CHANGE_COUNTS) == {"inserted": 0, "updated": 1, "deleted": 0}
    assert_same_rows(pair, "wide", "wide", ["id"], columns)
    assert counts(pair.sync(config), *CHANGE_COUNTS) == NOTHING_CHANGED


def test_int_unsigned_syncs_into_sqlite_and_bigint_unsigned_is_refused(make_db_url: MakeDbUrl) -> None:
    """SQLite's integers are signed 64-bit: INT UNSIGNED fits and syncs exactly; a BIGINT UNSIGNED
    column could hold values SQLite cannot store, so the plan refuses it before creating or writing
    anything, naming the column (``validate`` too)."""
    pair = make_pair(make_db_url, "mysql", "sqlite")
    fits = sa.Table(
        "fits",
        sa.MetaData(),
        sa.Column("id", mysql.INTEGER(unsigned=True), primary_key=True, autoincrement=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("medium", mysql.INTEGER(unsigned=True)),
    )
    fits.create(pair.source.engine)
    insert(pair.source, fits, [{"id": 2**32 - 1, "updated_at": at(W), "medium": 2**32 - 1}])
    fits_config = table_config("fits")
    assert pair.sync(fits_config).inserted == 1
    assert_same_rows(pair, "fits", "fits", ["id"], ["id", "updated_at", "medium"])
    assert counts(pair.sync(fits_config), *CHANGE_COUNTS) == NOTHING_CHANGED

    table = unsigned_table(mysql.BIGINT(unsigned=True))
    table.create(pair.source.engine)
    insert(pair.source, table, unsigned_rows([1]))
    config = table_config("counters")
    with pytest.raises(SchemaError, match=r"'counters'.*'id'.*BIGINT UNSIGNED.*SQLite"):
        validate(pair, config)
    with pytest.raises(SchemaError, match=r"'id'.*BIGINT UNSIGNED.*SQLite"):
        pair.sync(config)
    assert not sa.inspect(pair.target.engine).has_table("counters")


def test_existing_target_too_narrow_for_unsigned_values_is_refused(make_db_url: MakeDbUrl) -> None:
    """A PostgreSQL target created by hand with BIGINT for a BIGINT UNSIGNED column cannot hold its
    upper half: the plan says so, naming the column, before anything is written."""
    pair = make_pair(make_db_url, "mysql", "postgresql")
    unsigned_table(mysql.INTEGER(unsigned=True)).create(pair.source.engine)
    sa.Table(
        "counters",
        sa.MetaData(),
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("small", sa.Integer),
        sa.Column("medium", sa.BigInteger),
        sa.Column("big", sa.BigInteger),
    ).create(pair.target.engine)
    with pytest.raises(SchemaError, match=r"column 'big'.*64 bits"):
        validate(pair, table_config("counters"))


# -- 5. lock waits ----------------------------------------------------------------------------------
def synced_items(make_db_url: MakeDbUrl) -> tuple[Pair, Any]:
    """MariaDB to MariaDB, five rows of ``items`` synced, with a 1 s lock timeout."""
    pair = make_pair(make_db_url, "mysql", "mysql")
    table = items_table()
    table.create(pair.source.engine)
    insert(
        pair.source,
        table,
        [{"id": i, "updated_at": stamp(W, i), "name": f"n{i}", "qty": i} for i in range(5)],
    )
    config = table_config("items", lock_timeout_seconds=1)
    assert pair.sync(config).inserted == 5
    return pair, config


@pytest.mark.timeout(60)
def test_adding_a_column_while_another_session_uses_the_table_fails_transiently(
    make_db_url: MakeDbUrl,
) -> None:
    """A column added to the source makes the sync ALTER the target. While another session is inside
    a transaction that read the table (another sync's, say), the ALTER waits for its metadata lock,
    and every new reader of the table queues behind the ALTER. The ALTER gives up after the table's
    lock_timeout_seconds with a LockTimeout (transient: Dagster retries it) naming the table, and
    readers are free again; once the other transaction ends, the next run adds and fills the column.
    Without a bound the ALTER waited for the server's lock_wait_timeout (a day): pytest-timeout
    guards against that hang.
    """
    pair, config = synced_items(make_db_url)
    execute(pair.source, "ALTER TABLE items ADD COLUMN tier INTEGER DEFAULT 7")

    with pair.target.engine.connect() as holder:
        holder.execute(sa.text("SELECT COUNT(*) FROM items")).scalar_one()  # inside its transaction
        with pytest.raises(LockTimeout, match=r"'items'.*'tier'") as caught:
            pair.sync(config)
        assert isinstance(caught.value, TransientError)
        holder.rollback()

    assert "tier" not in reflect(pair.target, "items").c
    assert counts(pair.sync(config), *CHANGE_COUNTS) == {"inserted": 0, "updated": 5, "deleted": 0}
    assert {row[1] for row in read_rows(pair.target, "items", ["id"], ["id", "tier"]).values()} == {7}


@pytest.mark.timeout(40)
def test_a_row_locked_by_another_session_fails_the_sync_within_its_lock_timeout(
    make_db_url: MakeDbUrl,
) -> None:
    """A target row locked by another session (SELECT ... FOR UPDATE) makes the sync's upsert wait:
    no longer than lock_timeout_seconds, then the run fails as a transient error with nothing
    written, instead of waiting the server's innodb_lock_wait_timeout (50 s here, up to a year)."""
    pair, config = synced_items(make_db_url)
    source = items_table()
    update(pair.source, source, source.c.id.in_([1, 2]), updated_at=at(W, 3599), name="changed")
    before = fingerprint(pair.target, "items", ["id"])

    with pair.target.engine.connect() as holder:
        holder.execute(sa.text("SELECT * FROM items WHERE id = 1 FOR UPDATE")).all()
        with pytest.raises(TransientError):
            pair.sync(config)
        holder.rollback()

    assert fingerprint(pair.target, "items", ["id"]) == before
    assert counts(pair.sync(config), *CHANGE_COUNTS) == {"inserted": 0, "updated": 2, "deleted": 0}


def wait_for(what: str, condition: Callable[[], bool], seconds: float = 30) -> None:
    """Poll the server until ``condition`` holds (observable state, not a guessed delay)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


@pytest.mark.timeout(60)
def test_reads_queued_behind_another_sessions_alter_fail_within_the_lock_timeout(
    make_db_url: MakeDbUrl,
) -> None:
    """Someone else's ALTER of the target waits for a transaction that read the table, and every new
    reader queues behind the ALTER. A run's reads of the target wait there no longer than
    lock_timeout_seconds either (verification, which only reads, waited a day), nor does a sync:
    both fail as a transient error, nothing is written, and the sync succeeds once the ALTER is
    through."""
    pair, config = synced_items(make_db_url)
    source = items_table()
    update(pair.source, source, source.c.id == 1, updated_at=at(W, 3599), name="changed")

    with pair.target.engine.connect() as holder, pair.target.engine.connect() as alterer:
        holder.execute(sa.text("SELECT COUNT(*) FROM items")).scalar_one()  # inside its transaction
        alter_id = alterer.execute(sa.text("SELECT CONNECTION_ID()")).scalar_one()
        # Should the run wait regardless, the ALTER gives up first, and the test fails, not hangs.
        alterer.exec_driver_sql("SET SESSION lock_wait_timeout = 20")
        alter = threading.Thread(
            target=lambda: alterer.exec_driver_sql("ALTER TABLE items ADD COLUMN other INTEGER"), daemon=True
        )
        alter.start()

        def alter_waits() -> bool:
            with pair.target.engine.connect() as probe:
                state = probe.execute(
                    sa.text("SELECT STATE FROM information_schema.PROCESSLIST WHERE ID = :id"),
                    {"id": alter_id},
                ).scalar()
            return state == "Waiting for table metadata lock"

        wait_for("the ALTER to wait for the metadata lock", alter_waits)
        with pytest.raises(TransientError):
            verify_partition(config, pair.source.url, pair.target.url, W)  # reads only
        with pytest.raises(TransientError):
            pair.sync(config)
        holder.rollback()
        alter.join()

    assert "other" in reflect(pair.target, "items").c
    assert counts(pair.sync(config), *CHANGE_COUNTS) == {"inserted": 0, "updated": 1, "deleted": 0}


def test_every_mariadb_session_of_the_engine_is_strict_and_bounded(mysql_url: str) -> None:
    """Each session the engine opens is strict (a value too long or out of range is an error, never
    truncated, whatever the server's default sql_mode), whatever table it touches."""
    with open_engine(mysql_url) as engine, engine.connect() as conn:
        modes = set(conn.execute(sa.text("SELECT @@SESSION.sql_mode")).scalar_one().split(","))
    assert {"STRICT_ALL_TABLES", "NO_ENGINE_SUBSTITUTION"} <= modes


# -- 10. long text ----------------------------------------------------------------------------------
def long_text_table(name: str = "notes", key_type: sa.types.TypeEngine[Any] | None = None) -> sa.Table:
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("id", key_type if key_type is not None else sa.Text(), primary_key=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("body", sa.Text),
        sa.Column("title", sa.String(300)),
    )


def test_postgresql_text_longer_than_255_characters_fits_a_created_mariadb_target(
    make_db_url: MakeDbUrl,
) -> None:
    """PostgreSQL ``text`` keys of 300 and 768 characters (multi-byte ones too) and a 100 000
    character body fit the MariaDB table the sync creates: the first run copies them exactly, the
    second writes nothing, and verification passes. (The created key column was VARCHAR(255):
    "Data too long" on every run.)"""
    pair = make_pair(make_db_url, "postgresql", "mysql")
    table = long_text_table()
    table.create(pair.source.engine)
    keys = ["k" * 300, "x" * 767 + "y", "é" * 700, "a"]
    rows = [
        {"id": k, "updated_at": stamp(W, n), "body": "b" * 100_000 + k, "title": "t" * 300}
        for n, k in enumerate(keys)
    ]
    insert(pair.source, table, rows)
    config = table_config("notes")
    columns = ["id", "updated_at", "body", "title"]

    assert pair.sync(config).inserted == len(keys)
    assert_same_rows(pair, "notes", "notes", ["id"], columns)
    assert counts(pair.sync(config), *CHANGE_COUNTS) == NOTHING_CHANGED
    assert verify_partition(config, pair.source.url, pair.target.url, W).in_sync


def test_composite_text_keys_share_what_a_mariadb_index_holds(make_db_url: MakeDbUrl) -> None:
    """Two undeclared (PostgreSQL ``text``) key columns share the 3072 bytes of one index: 384
    characters each, and values that long sync exactly; with an integer beside a text key the text
    gets what the integer leaves (764). A second run writes nothing."""
    pair = make_pair(make_db_url, "postgresql", "mysql")
    pairs = sa.Table(
        "pairs",
        sa.MetaData(),
        sa.Column("a", sa.Text, primary_key=True),
        sa.Column("b", sa.Text, primary_key=True),
        sa.Column("updated_at", TS, nullable=False),
    )
    mixed = sa.Table(
        "mixed",
        sa.MetaData(),
        sa.Column("n", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("code", sa.Text, primary_key=True),
        sa.Column("updated_at", TS, nullable=False),
    )
    for table in (pairs, mixed):
        table.create(pair.source.engine)
    insert(pair.source, pairs, [{"a": "é" * 384, "b": "b" * 384, "updated_at": at(W)}])
    insert(pair.source, mixed, [{"n": -(2**63), "code": "c" * 764, "updated_at": at(W)}])

    for name, key in (("pairs", ["a", "b"]), ("mixed", ["n", "code"])):
        config = table_config(name, primary_key=key)
        assert pair.sync(config).inserted == 1
        assert_same_rows(pair, name, name, key, [*key, "updated_at"])
        assert counts(pair.sync(config), *CHANGE_COUNTS) == NOTHING_CHANGED
    lengths = {
        (name, column): reflect(pair.target, name).c[column].type.length  # type: ignore[attr-defined]
        for name, column in (("pairs", "a"), ("pairs", "b"), ("mixed", "code"))
    }
    assert lengths == {("pairs", "a"): 384, ("pairs", "b"): 384, ("mixed", "code"): 764}


def test_a_text_key_longer_than_a_mariadb_index_holds_is_refused_naming_the_column(
    make_db_url: MakeDbUrl,
) -> None:
    """A key value of 769 characters does not fit the longest key MariaDB can index (768 characters
    of utf8mb4): the sync fails naming the table and the column, and nothing is written (the other
    row of the run is not either). A source column declared longer than that is refused by the plan
    before the target is created."""
    pair = make_pair(make_db_url, "postgresql", "mysql")
    table = long_text_table()
    table.create(pair.source.engine)
    insert(
        pair.source,
        table,
        [
            {"id": "a", "updated_at": at(W), "body": "", "title": ""},
            {"id": "k" * 769, "updated_at": at(W, 1), "body": "", "title": ""},
        ],
    )
    with pytest.raises(Exception, match=r"'id'") as caught:
        pair.sync(table_config("notes"))
    assert "notes" in str(caught.value)
    assert row_count(pair.target, "notes") == 0

    declared = long_text_table("declared", sa.String(1000))
    declared.create(pair.source.engine)
    config = table_config("declared")
    with pytest.raises(SchemaError, match=r"'declared'.*'id'.*1000.*768"):
        validate(pair, config)
    with pytest.raises(SchemaError, match=r"'id'.*1000.*768"):
        pair.sync(config)
    assert not sa.inspect(pair.target.engine).has_table("declared")
