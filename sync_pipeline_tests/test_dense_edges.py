"""The dense-change path (issue 12) at the edges of real schemas: keys, timestamps, wide rows, values.

``test_dense.py`` proves the path's counts on the ``items`` table; here it meets what real tables
hold, on the engine pairs where each edge exists: integer keys at the extremes of their type
(random 64-bit ids, MariaDB ``BIGINT UNSIGNED`` up to 2**64 - 1, negative keys, gaps), ``updated_at``
on a change of summer time and on the window's edges to the microsecond, rows of a megabyte, and
NULLs, empty strings, odd text and JSON ``null`` in every column. Each test changes rows spread over
every key of a window of more than a descent's leaf (1,000 rows), so the ranges are densely changed
and their source rows travel whole (``rows_dense > 0``); then :func:`converges_densely` checks what
every such run must do: the counts equal those of a dry run (which takes the per-key path), the
target equals the source in every column, verification passes, and a second run writes nothing.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
import sqlalchemy as sa

from sync_pipeline.config import TableConfig
from sync_pipeline.engine.diff.stats import SyncStats
from sync_pipeline.engine.diff.window import Window
from sync_pipeline.engine.verify import verify_partition
from sync_pipeline_tests.conftest import MakeDbUrl
from sync_pipeline_tests.helpers import (
    CHANGE_COUNTS,
    NOTHING_CHANGED,
    TS,
    W_AFTER,
    W_BEFORE,
    Pair,
    W,
    assert_same_rows,
    at,
    counts,
    delete,
    fingerprint,
    insert,
    open_pair,
    stamp,
    table_config,
    update,
)

ENGINES = ("postgresql", "mysql", "sqlite")
ALL_PAIRS = [(s, t) for s in ENGINES for t in ENGINES]
DECIDED = ("inserted", "updated", "deleted", "unchanged", "moved_in", "moved_out", "skipped_newer")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@pytest.fixture(params=ALL_PAIRS, ids=[f"{s}->{t}" for s, t in ALL_PAIRS])
def any_pair(request: pytest.FixtureRequest, make_db_url: MakeDbUrl) -> Iterator[Pair]:
    """A fresh source and target of one of the nine engine pairs."""
    yield from open_pair(make_db_url, *request.param)


def converges_densely(
    pair: Pair,
    config: TableConfig,
    name: str,
    columns: Sequence[str],
    *,
    window: Window = W,
    json_columns: Sequence[str] = (),
) -> SyncStats:
    """Sync ``window`` of a densely changed table and check what the dense path must do.

    Some ranges travel whole (``rows_dense > 0``); the counts are a dry run's (the per-key path);
    the target ends equal to the source in every column of ``columns`` (``id`` the key);
    verification passes; a second run writes nothing, not even a row version.
    """
    predicted = pair.sync(config, window, dry_run=True)
    stats = pair.sync(config, window)
    assert stats.rows_dense > 0, (
        f"the dense path was not taken: {counts(stats, 'ranges_dense', 'keys_scanned')}"
    )
    assert counts(stats, *DECIDED) == counts(predicted, *DECIDED)
    assert (stats.source_rows, stats.target_rows) == (predicted.source_rows, predicted.target_rows)
    assert_same_rows(pair, name, name, ["id"], columns, json_columns=json_columns)
    assert verify_partition(config, pair.source.url, pair.target.url, window).in_sync

    stored = fingerprint(pair.target, name, ["id"])
    again = pair.sync(config, window)
    assert counts(again, *CHANGE_COUNTS) == NOTHING_CHANGED
    assert again.unchanged == stats.source_rows
    assert fingerprint(pair.target, name, ["id"]) == stored
    return stats


# -- integer keys ------------------------------------------------------------------------------------
def keyed_table(key: sa.types.TypeEngine[Any]) -> sa.Table:
    return sa.Table(
        "keyed",
        sa.MetaData(),
        sa.Column("id", key, primary_key=True, autoincrement=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("val", sa.String(40)),
    )


KEYED_COLUMNS = ["id", "updated_at", "val"]


def change_spread_keys(pair: Pair, table: sa.Table, keys: list[int], new_keys: list[int]) -> None:
    """Write ``keys`` (every 13th in the hour before), sync both hours, then change rows spread over
    every key: a third updated, a seventh deleted, an eleventh moved to the next hour, the hour
    before's moved in, and ``new_keys`` inserted. Extremes (first and last keys) are updated."""
    config = table_config(table.name, chunk_size=50)
    before = {k for n, k in enumerate(keys) if n % 13 == 5}
    rows = [
        {"id": k, "updated_at": stamp(W_BEFORE if k in before else W, n), "val": f"v{n}"}
        for n, k in enumerate(keys)
    ]
    insert(pair.source, table, rows)
    assert pair.sync(config, W_BEFORE).inserted == len(before)
    assert pair.sync(config).inserted == len(keys) - len(before)

    c = table.c
    updated = [k for n, k in enumerate(keys) if n % 3 == 0 or n == len(keys) - 1]
    for part in _parts(updated):
        update(pair.source, table, c.id.in_(part), updated_at=at(W, 3599.25), val="updated")
    for part in _parts([k for k in keys[1::7] if k not in before]):
        delete(pair.source, table, c.id.in_(part))
    for part in _parts([k for n, k in enumerate(keys) if n % 11 == 2]):
        update(pair.source, table, c.id.in_(part), updated_at=at(W_AFTER, 1), val="moved out")
    for part in _parts(sorted(before)):
        update(pair.source, table, c.id.in_(part), updated_at=at(W, 7.5), val="moved in")
    insert(pair.source, table, [{"id": k, "updated_at": stamp(W, k % 3599), "val": "new"} for k in new_keys])


def _parts(keys: list[int], size: int = 400) -> Iterator[list[int]]:
    for i in range(0, len(keys), size):
        yield keys[i : i + size]


def random_int64(n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return sorted({rng.randint(INT64_MIN, INT64_MAX) for _ in range(n)} | {INT64_MIN, INT64_MAX})


KEY_SETS: dict[str, tuple[sa.types.TypeEngine[Any], Callable[[], tuple[list[int], list[int]]]]] = {
    # Sparse over all of -2**63 .. 2**63 - 1, the type's extremes included: the descent halves the
    # range in Python, the probes of the changed share are as wide as a few rows, not a few keys.
    "random_int64": (sa.BigInteger(), lambda: (random_int64(1150, seed=12), random_int64(60, seed=13)[1:-1])),
    # Negative keys with gaps: holes of every size, one of 700 keys, the range's bound at -1.
    "negative_gaps": (
        sa.BigInteger(),
        lambda: (
            [k for k in range(-2600, 0) if k % 3 != 0 and not -1900 <= k < -1200],
            [k for k in range(-2600, 0) if k % 30 == 0],
        ),
    ),
    # INTEGER's extremes, spread evenly across the type: one past the largest key is no INTEGER.
    "int32_extremes": (
        sa.Integer(),
        lambda: (
            sorted({-(2**31) + i * 3_734_000 for i in range(1150)} | {-(2**31), 2**31 - 1}),
            [-(2**31) + i * 3_734_000 + 11 for i in range(0, 1150, 25)],
        ),
    ),
}


def test_random_64_bit_ids_and_the_types_extremes_take_the_dense_path(any_pair: Pair) -> None:
    """Keys over all of -2**63 .. 2**63 - 1, both extremes included, on every engine pair: densely
    changed ranges travel whole and are applied exactly (no overflow in a bound, a midpoint or a
    bucket), with the per-key path's counts, and a second run writes nothing.

    Failed before the changed share's probes were sized by rows rather than a floor of keys: probes
    a few billion keys wide found no row among 1e-16 a key, so no change, and the key merge kept
    every range."""
    _dense_integer_keys(any_pair, "random_int64")


@pytest.mark.parametrize("key_set", ["negative_gaps", "int32_extremes"])
def test_negative_keys_gaps_and_integers_extremes_take_the_dense_path(pair: Pair, key_set: str) -> None:
    """Negative keys with holes of every size, and INTEGER keys spread from -2**31 to 2**31 - 1: the
    same, on every engine as source and as target.

    INTEGER's extremes failed on PostgreSQL before its bucket queries computed ``key - lo`` in 64
    bits: ``integer out of range`` in the descent."""
    _dense_integer_keys(pair, key_set)


def _dense_integer_keys(pair: Pair, key_set: str) -> None:
    key_type, make_keys = KEY_SETS[key_set]
    keys, new_keys = make_keys()
    assert not set(keys) & set(new_keys)
    table = keyed_table(key_type)
    table.create(pair.source.engine)
    change_spread_keys(pair, table, keys, new_keys)

    stats = converges_densely(pair, table_config("keyed", chunk_size=50), "keyed", KEYED_COLUMNS)
    assert stats.inserted == len(new_keys)
    assert stats.deleted == len([n for n in range(len(keys)) if n % 7 == 1 and n % 13 != 5])
