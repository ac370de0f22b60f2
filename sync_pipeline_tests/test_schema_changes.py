"""Issue 6.5: the source's schema changes after the target exists; never silent data loss.

The policy (README, "Schema changes"):

- **Column added to the source** (and synced: ``columns`` unset, or listing it): added to the target
  as a nullable column of the type a new target would get, and the window being synced is compared
  whole-row, so its rows get their values even though their ``updated_at`` did not change. Rows of
  other windows hold NULL there until re-synced with ``compare: row`` (the drift check reports them).
  With ``add_missing_columns: false`` the sync fails instead, naming the column; nothing is written.
- **Column dropped from the source**: the target keeps the column and its values; rows written from
  now on get NULL (or the column's default). A NOT NULL column without a default cannot take such
  rows, so the sync fails first, naming it and saying how to fix it.
- **Column type changed**: a type of another family that cannot hold the values, or a narrower one
  (fewer integer bits, shorter length, fewer decimal digits), is refused before writing, naming the
  column and both types and saying what to do; a wider or equal type is accepted.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from sync_pipeline.engine.verify import verify_partition
from sync_pipeline.errors import SchemaError
from sync_pipeline_tests.conftest import MakeDbUrl
from sync_pipeline_tests.helpers import (
    CHANGE_COUNTS,
    NOTHING_CHANGED,
    PAIR_IDS,
    PAIRS,
    TS,
    W_AFTER,
    Pair,
    Side,
    W,
    counts,
    fingerprint,
    insert,
    make_pair,
    read_rows,
    reflect,
    stamp,
    table_config,
)


def orders(*, without: str | None = None) -> sa.Table:
    """The source table; ``without`` leaves a column out, as the source is after dropping it."""
    columns = [
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("note", sa.String(50)),
        sa.Column("qty", sa.Integer),
        sa.Column("amount", sa.Numeric(8, 2)),
    ]
    return sa.Table("orders", sa.MetaData(), *(c for c in columns if c.name != without))


def seeded(make_db_url: MakeDbUrl, source_kind: str, target_kind: str) -> Pair:
    """Ten rows in W and five in the hour after, synced into a target the sync creates."""
    pair = make_pair(make_db_url, source_kind, target_kind)
    table = orders()
    table.create(pair.source.engine)
    rows = [
        {"id": i, "updated_at": stamp(W if i <= 10 else W_AFTER, i), "note": f"n{i}", "qty": i, "amount": i}
        for i in range(1, 16)
    ]
    insert(pair.source, table, rows)
    assert pair.sync(table_config("orders")).inserted == 10
    assert pair.sync(table_config("orders"), W_AFTER).inserted == 5
    return pair


def execute(side: Side, *statements: str) -> None:
    with side.engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)


def retype(kind: str, column: str, sql_type: str) -> str:
    """The engine's ALTER that changes ``column`` of ``orders`` to ``sql_type``."""
    if kind == "postgresql":
        return f"ALTER TABLE orders ALTER COLUMN {column} TYPE {sql_type} USING {column}::{sql_type}"
    return f"ALTER TABLE orders MODIFY {column} {sql_type}"


# -- a column added to the source -----------------------------------------------------------------
@pytest.mark.parametrize(("source_kind", "target_kind"), PAIRS, ids=PAIR_IDS)
def test_added_column_is_added_to_the_target_and_filled_for_the_synced_window(
    make_db_url: MakeDbUrl, source_kind: str, target_kind: str
) -> None:
    """``ALTER TABLE ... ADD COLUMN tier ... DEFAULT 7`` in the source gives every existing row a
    value without touching ``updated_at``. The next sync adds ``tier`` to the target (nullable) and
    compares W whole-row, so all ten rows get 7; the hour after keeps NULL, which the drift check
    (``verify_partition``) reports and a ``compare="row"`` sync repairs. Then nothing is left to do.
    """
    pair = seeded(make_db_url, source_kind, target_kind)
    execute(pair.source, "ALTER TABLE orders ADD COLUMN tier INTEGER DEFAULT 7")
    config = table_config("orders")

    stats = pair.sync(config)

    assert counts(stats, *CHANGE_COUNTS) == {"inserted": 0, "updated": 10, "deleted": 0}
    tier = reflect(pair.target, "orders").c["tier"]
    assert tier.nullable
    target = read_rows(pair.target, "orders", ["id"], ["id", "tier"])
    assert {k: v[1] for k, v in target.items()} == {
        **dict.fromkeys(range(1, 11), 7),
        **dict.fromkeys(range(11, 16)),
    }

    later = verify_partition(config, pair.source.url, pair.target.url, W_AFTER)
    assert later.rows_differing == 5
    repaired = pair.sync(config, W_AFTER, compare="row")
    assert counts(repaired, *CHANGE_COUNTS) == {"inserted": 0, "updated": 5, "deleted": 0}
    assert verify_partition(config, pair.source.url, pair.target.url, W_AFTER).in_sync
    assert counts(pair.sync(config), *CHANGE_COUNTS) == NOTHING_CHANGED


def test_added_column_outside_an_explicit_column_list_is_not_synced(make_db_url: MakeDbUrl) -> None:
    """With ``columns`` listed, a new source column is not part of the sync: the target is not
    altered and nothing is written.
    """
    pair = make_pair(make_db_url, "postgresql", "postgresql")
    table = orders()
    table.create(pair.source.engine)
    insert(pair.source, table, [{"id": i, "updated_at": stamp(W, i), "note": f"n{i}"} for i in range(1, 6)])
    config = table_config("orders", columns=["id", "updated_at", "note"])
    assert pair.sync(config).inserted == 5
    execute(pair.source, "ALTER TABLE orders ADD COLUMN tier INTEGER DEFAULT 7")
    before = fingerprint(pair.target, "orders", ["id"])

    assert counts(pair.sync(config), *CHANGE_COUNTS) == NOTHING_CHANGED

    assert "tier" not in reflect(pair.target, "orders").c
    assert fingerprint(pair.target, "orders", ["id"]) == before


# -- a column dropped from the source -------------------------------------------------------------
@pytest.mark.parametrize(("source_kind", "target_kind"), PAIRS, ids=PAIR_IDS)
def test_dropped_column_keeps_its_target_values_and_new_rows_get_null(
    make_db_url: MakeDbUrl, source_kind: str, target_kind: str
) -> None:
    """After ``DROP COLUMN note`` in the source, the target keeps ``note`` and every value in it;
    a row inserted later gets NULL there; the other columns keep syncing.
    """
    pair = seeded(make_db_url, source_kind, target_kind)
    execute(pair.source, "ALTER TABLE orders DROP COLUMN note")
    insert(pair.source, orders(without="note"), [{"id": 20, "updated_at": stamp(W, 20), "qty": 20}])

    stats = pair.sync(table_config("orders"))

    assert counts(stats, *CHANGE_COUNTS) == {"inserted": 1, "updated": 0, "deleted": 0}
    target = read_rows(pair.target, "orders", ["id"], ["id", "note", "qty"])
    assert target[20] == (20, None, 20)
    assert target[3] == (3, "n3", 3)
    assert counts(pair.sync(table_config("orders")), *CHANGE_COUNTS) == NOTHING_CHANGED


@pytest.mark.parametrize("target_kind", ["postgresql", "mysql"])
def test_dropped_column_that_is_not_null_in_the_target_is_refused(
    make_db_url: MakeDbUrl, target_kind: str
) -> None:
    """A target column no longer synced must take rows without it: NOT NULL with no default cannot,
    so the sync is refused before writing, naming the column and how to fix it.
    """
    pair = seeded(make_db_url, "postgresql", target_kind)
    make_not_null = {
        "postgresql": "ALTER TABLE orders ALTER COLUMN note SET NOT NULL",
        "mysql": "ALTER TABLE orders MODIFY note VARCHAR(50) NOT NULL",
    }
    execute(pair.target, make_not_null[target_kind])
    execute(pair.source, "ALTER TABLE orders DROP COLUMN note")
    before = fingerprint(pair.target, "orders", ["id"])

    with pytest.raises(SchemaError, match=r"column 'note' is NOT NULL without a default") as caught:
        pair.sync(table_config("orders"))

    assert "make it nullable or give it a default" in str(caught.value)
    assert "target table 'orders'" in str(caught.value)
    assert fingerprint(pair.target, "orders", ["id"]) == before


# -- a column whose type changed ------------------------------------------------------------------
REFUSED_TYPE_CHANGES = [
    pytest.param("qty", "text", r"column 'qty' is .*\(integer\) but the source's is .*\(text\)", id="text"),
    pytest.param(
        "qty", "bigint", r"column 'qty' is .*\(31 bits\) but the source's is .*\(63 bits\)", id="int"
    ),
    pytest.param("note", "varchar(200)", r"column 'note' is VARCHAR\(50\) .* VARCHAR\(200\)", id="length"),
    pytest.param(
        "amount",
        "numeric(12,4)",
        r"column 'amount' is (NUMERIC|DECIMAL)\(8, 2\) but the source's is NUMERIC\(12, 4\)",
        id="digits",
    ),
]


@pytest.mark.parametrize("target_kind", ["postgresql", "mysql"])
@pytest.mark.parametrize(("column", "new_type", "message"), REFUSED_TYPE_CHANGES)
def test_type_change_the_target_cannot_hold_is_refused(
    make_db_url: MakeDbUrl, target_kind: str, column: str, new_type: str, message: str
) -> None:
    """A source column retyped to another family, or to a wider type than the target's, is refused
    before writing: the error names the column and both types and says what to do.
    """
    pair = seeded(make_db_url, "postgresql", target_kind)
    execute(pair.source, retype("postgresql", column, new_type))
    before = fingerprint(pair.target, "orders", ["id"])

    with pytest.raises(SchemaError, match=message) as caught:
        pair.sync(table_config("orders"))

    assert "then backfill" in str(caught.value)
    assert fingerprint(pair.target, "orders", ["id"]) == before


@pytest.mark.parametrize("target_kind", ["postgresql", "mysql"])
def test_type_change_the_target_can_hold_is_accepted(make_db_url: MakeDbUrl, target_kind: str) -> None:
    """Narrowing the source (``varchar(20)``, ``smallint``) leaves the target wide enough: the sync
    goes on and finds nothing to do.
    """
    pair = seeded(make_db_url, "postgresql", target_kind)
    execute(pair.source, retype("postgresql", "note", "varchar(20)"), retype("postgresql", "qty", "smallint"))

    assert counts(pair.sync(table_config("orders")), *CHANGE_COUNTS) == NOTHING_CHANGED
