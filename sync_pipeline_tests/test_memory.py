"""The step's peak memory is bounded by the chunk size and byte budget, not by the window or the row
width (SPEC section 5)."""

from __future__ import annotations

import json
import subprocess
import sys
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from sync_pipeline.engine.streams import batches_by_bytes, row_bytes
from sync_pipeline.engine.verify import verify_partition
from sync_pipeline_tests.conftest import MakeDbUrl
from sync_pipeline_tests.helpers import (
    W,
    assert_same_rows,
    at,
    delete,
    insert,
    make_pair,
    stamp,
    table_config,
    update,
)

HOUR = "2026-11-30T08:00:00+00:00"
PROBE = Path(__file__).with_name("memory_probe.py")


def _seed_events(url: str, rows: int) -> None:
    """A window of ``rows`` events with realistic widths (text, numeric, jsonb), generated in the server."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE events (id bigint PRIMARY KEY, account_id int, kind text, amount numeric(12,2),"
            " payload jsonb, updated_at timestamptz NOT NULL)"
        )
        conn.exec_driver_sql(
            "INSERT INTO events SELECT g, mod(g, 1000), 'kind-' || mod(g, 17), mod(g, 100000) / 100.0,"
            " jsonb_build_object('n', g, 'tags', jsonb_build_array('a', 'b', mod(g, 7)),"
            " 'note', repeat('x', 80)),"
            f" timestamptz '{HOUR}' + mod(g, 3600) * interval '1 second'"
            f" FROM generate_series(1, {rows}) AS g"
        )
    engine.dispose()


def _peak_kib(source: str, target: str, chunk_size: int, *options: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, str(PROBE), source, target, HOUR, str(chunk_size), *options],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# -- rows of 1 MB ------------------------------------------------------------------------------------
WIDE_ROWS = 400  # 400 MB a window: held whole, it alone would exceed the step's budget
STEP_BUDGET_KIB = 250 * 1024  # the step's peak RSS, Dagster's code location included (see the probe)
_TEXT, _BYTES, _JSON = 512 * 1024, 256 * 1024, 256 * 1024  # about 1 MB a row

_WIDE_SEED = {
    "postgresql": (
        "CREATE TABLE wide (id bigint PRIMARY KEY, body text, data bytea, doc jsonb,"
        " updated_at timestamptz NOT NULL)",
        "INSERT INTO wide SELECT g, repeat(chr(97 + mod(g, 26)), {text}),"
        " decode(repeat(lpad(to_hex(mod(g, 256)), 2, '0'), {data}), 'hex'),"
        " jsonb_build_object('n', g, 'note', repeat('j', {json})),"
        " timestamptz '{hour}' + g * interval '1 second' FROM generate_series(1, {rows}) AS g",
        "UPDATE wide SET updated_at = updated_at + interval '1 second'",
    ),
    "mysql": (
        "CREATE TABLE wide (id BIGINT PRIMARY KEY, body LONGTEXT, data LONGBLOB, doc JSON,"
        " updated_at DATETIME(6) NOT NULL)",
        "INSERT INTO wide SELECT seq, REPEAT(CHAR(97 + MOD(seq, 26)), {text}),"
        " REPEAT(UNHEX(LPAD(HEX(MOD(seq, 256)), 2, '0')), {data}),"
        " JSON_OBJECT('n', seq, 'note', REPEAT('j', {json})),"
        " TIMESTAMP '{hour}' + INTERVAL seq SECOND FROM seq_1_to_{rows}",
        "UPDATE wide SET updated_at = updated_at + INTERVAL 1 SECOND",
    ),
}


def _seed_wide(url: str, engine: str, rows: int) -> None:
    """``rows`` rows of about 1 MB each (text, bytes and a JSON document), generated in the server."""
    create, insert, _ = _WIDE_SEED[engine]
    # MariaDB's DATETIME is naive: read in the table's naive_timezone, UTC.
    hour = HOUR if engine == "postgresql" else HOUR[:19].replace("T", " ")
    engine_ = sa.create_engine(url)
    with engine_.begin() as conn:
        conn.exec_driver_sql(create)
        conn.exec_driver_sql(insert.format(text=_TEXT, data=_BYTES, json=_JSON, hour=hour, rows=rows))
    engine_.dispose()


def _touch_wide(url: str, engine: str) -> None:
    """Every row changes within the hour: the next sync fetches each by key (the per-key path)."""
    engine_ = sa.create_engine(url)
    with engine_.begin() as conn:
        conn.exec_driver_sql(_WIDE_SEED[engine][2])
    engine_.dispose()


def wide_rows_peaks(
    make_db_url: MakeDbUrl, source_engine: str, target_engine: str, *options: str
) -> dict[str, dict[str, Any]]:
    """The probe's results for a first sync (the bulk path) and a changed window (fetch by key)."""
    source = make_db_url(source_engine, "wide_src")
    target = make_db_url(target_engine, "wide_tgt")
    _seed_wide(source, source_engine, WIDE_ROWS)
    first = _peak_kib(source, target, 10_000, "--table", "wide", *options)
    _touch_wide(source, source_engine)
    changed = _peak_kib(source, target, 10_000, "--table", "wide", "--verify", *options)
    return {"first": first, "changed": changed}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("source_engine", "target_engine"),
    [("postgresql", "postgresql"), ("mysql", "postgresql"), ("postgresql", "mysql")],
    ids=["postgresql->postgresql", "mysql->postgresql", "postgresql->mysql"],
)
def test_rows_of_one_megabyte_stay_within_the_step_budget(
    make_db_url: MakeDbUrl, source_engine: str, target_engine: str
) -> None:
    """400 rows of about 1 MB at the default chunk size (10,000 rows): the first sync (rows by range)
    and a sync of the changed window (rows fetched by key, then the window verified whole) each peak
    under 250 MB, Dagster's code location included. Bounded in rows only, each batch held the window:
    400 MB and more."""
    peaks = wide_rows_peaks(make_db_url, source_engine, target_engine)
    assert peaks["first"]["inserted"] == WIDE_ROWS, peaks
    assert peaks["changed"]["updated"] == WIDE_ROWS, peaks
    assert peaks["changed"]["in_sync"] is True, peaks
    for path, result in peaks.items():
        assert result["peak_kib"] < STEP_BUDGET_KIB, f"{path}: {result['peak_kib'] / 1024:.0f} MiB, {peaks}"


@pytest.mark.slow
def test_peak_rss_does_not_grow_with_the_window(make_db_url: MakeDbUrl) -> None:
    """Syncing 500k rows peaks within a small factor of syncing 50k rows (both into an empty target).

    An empty target is the worst case: every row is fetched and copied. Were any phase to hold the
    window, the tenfold window would show as a tenfold increment over the interpreter's baseline.
    """
    peaks = {}
    for rows in (50_000, 500_000):
        source, target = make_db_url("postgresql", f"src{rows}"), make_db_url("postgresql", f"tgt{rows}")
        _seed_events(source, rows)
        result = _peak_kib(source, target, chunk_size=5_000)
        assert result["inserted"] == rows
        assert result["source_rows"] == rows
        peaks[rows] = result["peak_kib"]
    assert peaks[500_000] <= peaks[50_000] * 1.25, peaks


# -- the byte budget itself, on SQLite files ---------------------------------------------------------
def test_batches_follow_the_widest_row_and_a_row_over_the_budget_comes_alone(tmp_path: Path) -> None:
    """Narrow rows come a whole chunk at a time; after the first wide row, no batch weighs more than
    the budget unless it is a single row; every row comes once, in order."""
    budget, narrow, wide, huge = 64 * 1024, 40, 20 * 1024, 100 * 1024
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'rows.db'}")
    widths = [narrow] * 1_190 + [wide] * 40 + [huge] * 3 + [narrow] * 5
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
        conn.exec_driver_sql(
            "INSERT INTO t VALUES (?, ?)", [(i, "x" * width) for i, width in enumerate(widths)]
        )
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, max_row_buffer=1).execute(
            sa.text("SELECT id, body FROM t ORDER BY id")
        )
        batches = [list(rows) for rows in batches_by_bytes(result, 300, budget)]
    engine.dispose()
    assert [row[0] for rows in batches for row in rows] == list(range(len(widths)))
    sizes = [len(rows) for rows in batches]
    # The first look, then whole chunks of narrow rows; the fifth meets the first wide rows.
    assert sizes[:5] == [1, 300, 300, 300, 300], sizes
    # Each fetch is sized by the widest row of the one before (the last may find fewer rows).
    for before, rows in pairwise(batches[:-1]):
        assert len(rows) == max(1, min(300, budget // max(map(row_bytes, before)))), sizes
    assert sizes[5] == budget // row_bytes((0, "x" * wide)), sizes  # as many wide rows as fit
    # Over the budget only where rows grew wider (narrow to wide, wide to huge); a huge row then
    # comes alone.
    over = [i for i, rows in enumerate(batches) if len(rows) > 1 and sum(map(row_bytes, rows)) > budget]
    assert len(over) == 2, (over, sizes)
    huge_batches = [rows for rows in batches if any(len(row[1]) == huge for row in rows)]
    assert [len(rows) for rows in huge_batches[1:]] == [1, 1], sizes


@pytest.mark.parametrize("engines", [("sqlite", "sqlite"), ("postgresql", "mysql")], ids="->".join)
def test_rows_wider_than_the_budget_sync_exactly(make_db_url: MakeDbUrl, engines: tuple[str, str]) -> None:
    """With the smallest budget (64 KiB) and rows of 100-300 KB, every batch is a single row: the first
    sync (by range), a changed window (by key) and a deletion give exact counts and equal rows, the
    verification agrees, and a second sync writes nothing."""
    pair = make_pair(make_db_url, *engines)
    table = sa.Table(
        "docs",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.Text),
        sa.Column("data", sa.LargeBinary(length=2**24)),
    )
    table.create(pair.source.engine)
    rows = 12
    insert(
        pair.source,
        table,
        [
            {
                "id": i,
                "updated_at": stamp(W, i),
                "body": chr(97 + i) * (100_000 * (1 + i % 3)),
                "data": bytes([i]) * 70_000,
            }
            for i in range(1, rows + 1)
        ],
    )
    config = table_config("docs", chunk_size=10_000, chunk_bytes=64 * 1024)
    assert config.chunk_bytes == 64 * 1024
    assert pair.sync(config).inserted == rows
    update(pair.source, table, table.c.id <= 5, updated_at=at(W, 3000), body="changed" * 20_000)
    delete(pair.source, table, table.c.id == rows)
    stats = pair.sync(config)
    assert (stats.updated, stats.deleted, stats.inserted) == (5, 1, 0)
    assert_same_rows(pair, "docs", "docs", ["id"], ["id", "body", "data"])
    assert verify_partition(config, pair.source.url, pair.target.url, W).in_sync
    again = pair.sync(config)
    assert (again.inserted, again.updated, again.deleted) == (0, 0, 0)
    pair.source.engine.dispose()
    pair.target.engine.dispose()
