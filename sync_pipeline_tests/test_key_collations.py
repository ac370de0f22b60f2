"""Key collations on PostgreSQL and SQLite (issue 13): distinct keys stay distinct, or are refused.

* An existing target whose text key compares other than by code points (a PostgreSQL
  nondeterministic ICU collation, SQLite ``COLLATE NOCASE`` or ``RTRIM``, on the column or on its
  unique index) would merge "a", "A" and "a " into one row. The sync refuses it before writing, and
  ``validate`` (the plan alone) says so, naming the column and its collation. The MariaDB case is
  in ``test_mariadb_edges.py``.
* A source keyed under such a collation is fine: its keys are unique under it, and its key stream
  is read in binary order like the target's, so the merge agrees and every key arrives once.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from sync_pipeline.engine.db.engine import open_engine
from sync_pipeline.engine.plan import plan_sync
from sync_pipeline.engine.verify import verify_partition
from sync_pipeline.errors import SchemaError
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
    insert,
    make_pair,
    read_rows,
    stamp,
    table_config,
    update,
)

# Distinct keys that a case- or pad-insensitive collation makes equal.
FOLDED_KEYS = ["a", "A", "a ", "b", "B", "é", "e"]
COLUMNS = ["code", "updated_at", "payload"]


def execute(side: Side, *statements: str) -> None:
    with side.engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)


def row_count(side: Side) -> int:
    with side.engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT COUNT(*) FROM codes").scalar_one())


def validate(pair: Pair, config: Any) -> None:
    """What ``sync-pipeline validate`` runs for a table: the plan, creating and writing nothing."""
    with open_engine(pair.source.url) as source, open_engine(pair.target.url) as target:
        plan_sync(config, source, target, create_target=False)


def codes_table() -> sa.Table:
    return sa.Table(
        "codes",
        sa.MetaData(),
        sa.Column("code", sa.String(40), primary_key=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("payload", sa.String(40)),
    )


def code_rows(keys: list[str]) -> list[dict[str, Any]]:
    return [{"code": c, "updated_at": stamp(W, n), "payload": c} for n, c in enumerate(keys)]


ICU_CI = "CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)"

# (target engine, DDL of an existing target whose key merges keys, the collation the error names)
INEXACT_TARGETS = [
    pytest.param(
        "postgresql",
        [ICU_CI, 'CREATE TABLE codes (code text COLLATE ci PRIMARY KEY, updated_at timestamptz NOT NULL, '
         "payload text)"],
        "ci",
        id="postgresql-icu-nondeterministic-column",
    ),
    pytest.param(
        "postgresql",
        [ICU_CI, "CREATE TABLE codes (code text NOT NULL, updated_at timestamptz NOT NULL, payload text)",
         "CREATE UNIQUE INDEX codes_code ON codes (code COLLATE ci)"],
        "ci",
        id="postgresql-icu-nondeterministic-unique-index",
    ),
    pytest.param(
        "sqlite",
        ["CREATE TABLE codes (code TEXT COLLATE NOCASE PRIMARY KEY, updated_at DATETIME NOT NULL, "
         "payload TEXT)"],
        "NOCASE",
        id="sqlite-nocase-column",
    ),
    pytest.param(
        "sqlite",
        ["CREATE TABLE codes (code TEXT COLLATE RTRIM PRIMARY KEY, updated_at DATETIME NOT NULL, "
         "payload TEXT)"],
        "RTRIM",
        id="sqlite-rtrim-column",
    ),
    pytest.param(
        "sqlite",
        ["CREATE TABLE codes (code TEXT NOT NULL, updated_at DATETIME NOT NULL, payload TEXT)",
         "CREATE UNIQUE INDEX codes_code ON codes (code COLLATE NOCASE)"],
        "NOCASE",
        id="sqlite-nocase-unique-index",
    ),
    pytest.param(
        "sqlite",
        ["CREATE TABLE codes (code TEXT COLLATE NOCASE NOT NULL, updated_at DATETIME NOT NULL, "
         "payload TEXT)",
         "CREATE UNIQUE INDEX codes_code ON codes (code COLLATE BINARY)"],
        "NOCASE",
        id="sqlite-nocase-column-binary-index",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("target_kind", "ddl", "collation"), INEXACT_TARGETS)
def test_existing_target_whose_key_collation_merges_keys_is_refused(
    make_db_url: MakeDbUrl, target_kind: str, ddl: list[str], collation: str
) -> None:
    """Without the check, "a", "A" and "a " became one row (or a lookup by "a" deleted "A" too), and
    every later run inserted them again. Refused before writing, by the sync and by validate."""
    pair = make_pair(make_db_url, "postgresql", target_kind)
    codes_table().create(pair.source.engine)
    execute(pair.target, *ddl)
    insert(pair.source, codes_table(), code_rows(FOLDED_KEYS))
    config = table_config("codes", primary_key=["code"])

    with pytest.raises(SchemaError, match=rf"'codes'.*key column 'code' has collation {collation}") as caught:
        pair.sync(config)
    assert "binary" in str(caught.value)
    assert row_count(pair.target) == 0
    with pytest.raises(SchemaError, match=rf"'code' has collation {collation}"):
        validate(pair, config)


@pytest.mark.parametrize(
    ("target_kind", "ddl"),
    [
        pytest.param(
            "postgresql",
            'CREATE TABLE codes (code text COLLATE "en_US" PRIMARY KEY, updated_at timestamptz NOT NULL, '
            "payload text)",
            id="postgresql-deterministic",
        ),
        pytest.param(
            "sqlite",
            "CREATE TABLE codes (code TEXT COLLATE BINARY PRIMARY KEY, updated_at DATETIME NOT NULL, "
            "payload TEXT)",
            id="sqlite-binary",
        ),
    ],
)
def test_existing_target_with_an_exact_key_collation_syncs_every_key(
    make_db_url: MakeDbUrl, target_kind: str, ddl: str
) -> None:
    """A deterministic PostgreSQL collation (equal means identical, whatever the order) and SQLite's
    BINARY are accepted: seven keys stay seven rows, and a second run writes nothing."""
    pair = make_pair(make_db_url, "postgresql", target_kind)
    codes_table().create(pair.source.engine)
    if target_kind == "postgresql":
        with pair.target.engine.connect() as conn:
            known = conn.exec_driver_sql("SELECT 1 FROM pg_collation WHERE collname = 'en_US'").first()
        if known is None:
            ddl = ddl.replace('"en_US"', '"und-x-icu"')
    execute(pair.target, ddl)
    insert(pair.source, codes_table(), code_rows(FOLDED_KEYS))
    config = table_config("codes", primary_key=["code"])

    assert pair.sync(config).inserted == len(FOLDED_KEYS)
    assert_same_rows(pair, "codes", "codes", ["code"], COLUMNS)
    assert counts(pair.sync(config), *CHANGE_COUNTS) == NOTHING_CHANGED


@pytest.mark.parametrize(
    ("source_kind", "ddl"),
    [
        pytest.param(
            "sqlite",
            ["CREATE TABLE codes (code TEXT COLLATE NOCASE PRIMARY KEY, updated_at DATETIME NOT NULL, "
             "payload TEXT)"],
            id="sqlite-nocase",
        ),
        pytest.param(
            "postgresql",
            [ICU_CI, "CREATE TABLE codes (code text COLLATE ci PRIMARY KEY, updated_at timestamptz NOT NULL, "
             "payload text)"],
            id="postgresql-icu-nondeterministic",
        ),
    ],
)  # fmt: skip
@pytest.mark.parametrize("target_kind", ["postgresql", "sqlite"])
def test_source_keyed_under_a_folding_collation_syncs_every_key_once(
    make_db_url: MakeDbUrl, source_kind: str, ddl: list[str], target_kind: str
) -> None:
    """Keys unique under the source's collation sort differently there ("a" < "B") than by code
    point ("B" < "a"). Both streams are read in binary order, so the merge agrees: every key once,
    an update lands on its key, a second run writes nothing, verification passes."""
    pair = make_pair(make_db_url, source_kind, target_kind)
    execute(pair.source, *ddl)
    keys = ["B", "a", "C", "d", "É", "f", "_x", "Z", "y", "a b", *(f"k{i:02d}" for i in range(6))]
    insert(pair.source, codes_table(), code_rows(keys))
    config = table_config("codes", primary_key=["code"], chunk_size=3)

    assert pair.sync(config).inserted == len(keys)
    assert_same_rows(pair, "codes", "codes", ["code"], COLUMNS)
    table = codes_table()
    update(pair.source, table, table.c.code == "d", updated_at=at(W, 3599), payload="changed")
    stats = pair.sync(config)
    assert counts(stats, *CHANGE_COUNTS, "unchanged") == {
        "inserted": 0,
        "updated": 1,
        "deleted": 0,
        "unchanged": len(keys) - 1,
    }
    assert read_rows(pair.target, "codes", ["code"], COLUMNS)["d"][2] == "changed"
    assert counts(pair.sync(config), *CHANGE_COUNTS) == NOTHING_CHANGED
    assert verify_partition(config, pair.source.url, pair.target.url, W).in_sync
