"""The step's peak memory is bounded by the chunk size, not by the window (SPEC section 5)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from sync_pipeline_tests.conftest import MakeDbUrl

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


def _peak_kib(source: str, target: str, chunk_size: int) -> dict[str, int]:
    result = subprocess.run(
        [sys.executable, str(PROBE), source, target, HOUR, str(chunk_size)],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


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
