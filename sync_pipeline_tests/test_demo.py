"""Tests of the embedded demo (sync_pipeline.demo): its config, its seeded source and its simulator.

Every test uses its own data folder under ``tmp_path`` and a fixed clock, so runs do not depend on
the hour they run at.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from sync_pipeline.config import DeleteMode, SyncConfig
from sync_pipeline.demo import (
    DATA_DIR_ENV,
    ActivityStats,
    data_dir,
    demo_config,
    ensure_seeded,
    simulate_activity,
)
from sync_pipeline.demo.config import STATE_FILE
from sync_pipeline.demo.seed import COUNTS, NULL_UPDATED_AT_EVENTS
from sync_pipeline.engine.diff.window import Window
from sync_pipeline.engine.sync import sync_partition
from sync_pipeline.errors import ConfigError, SchemaError

NOW = datetime(2026, 5, 14, 10, 37, 12, 345678, tzinfo=UTC)
START = datetime(2026, 5, 12, 10, tzinfo=UTC)  # NOW's hour minus 48 hours
TABLES = ("orders", "customers", "events")


def url_of(config: SyncConfig, connection: str) -> str:
    return config.connections[connection].sqlalchemy_url.render_as_string(hide_password=False)


def source_url(config: SyncConfig) -> str:
    return url_of(config, "demo_source")


def target_url(config: SyncConfig) -> str:
    return url_of(config, "demo_target")


def query(url: str, statement: str, **params: Any) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sa.text(statement), params)]
    finally:
        engine.dispose()


def rows_in(url: str, table: str, window: Window | None = None) -> list[tuple[Any, ...]]:
    """Full rows of ``table`` (columns the source has, reflected types), optionally of one window."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            live = sa.Table(table, sa.MetaData(), autoload_with=conn)
            columns = [c for c in live.c if not c.name.startswith("_sync")]
            statement = sa.select(*columns).order_by(live.c.id)
            if window is not None:
                start, end = window.bounds_in("UTC", naive=True)
                statement = statement.where(live.c.updated_at >= start, live.c.updated_at < end)
            return [tuple(row) for row in conn.execute(statement)]
    finally:
        engine.dispose()


def hours(start: datetime, end: datetime) -> list[Window]:
    """Hourly windows from ``start`` up to the one holding ``end``."""
    windows = []
    while start <= end:
        windows.append(Window.hour_starting(start))
        start += timedelta(hours=1)
    return windows


@pytest.fixture
def seeded(tmp_path: Path) -> SyncConfig:
    """The demo config in tmp_path, with its source seeded as of NOW."""
    config = demo_config(tmp_path, NOW)
    assert ensure_seeded(config, NOW)
    return config


# -- config -----------------------------------------------------------------------------------------


def test_data_dir_defaults_to_data_under_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every process builds the SQLite URLs from this folder, so it is absolute; empty means unset."""
    monkeypatch.chdir(tmp_path)
    assert data_dir({}) == tmp_path.resolve() / "data"
    assert data_dir({DATA_DIR_ENV: ""}) == tmp_path.resolve() / "data"
    assert data_dir({DATA_DIR_ENV: "elsewhere"}) == tmp_path.resolve() / "elsewhere"
    assert data_dir({DATA_DIR_ENV: str(tmp_path / "x")}) == tmp_path.resolve() / "x"


def test_demo_config_describes_three_tables_over_two_sqlite_files(tmp_path: Path) -> None:
    """The demo is an ordinary config: SQLite files in the data folder, keyed by id, starting 48 h back."""
    config = demo_config(tmp_path, NOW)
    assert source_url(config) == f"sqlite:///{tmp_path.resolve() / 'demo_source.db'}"
    assert target_url(config) == f"sqlite:///{tmp_path.resolve() / 'demo_target.db'}"
    assert [t.name for t in config.tables] == list(TABLES)
    for table in config.tables:
        assert (table.source.connection, table.target.connection) == ("demo_source", "demo_target")
        assert table.source.table == table.target.table == table.name
        assert table.primary_key == ["id"]
        assert table.updated_at == "updated_at"
        assert table.start_in("UTC") == START
        assert table.description
    delete_modes = {t.name: t.delete_mode for t in config.tables}
    assert delete_modes == {
        "orders": DeleteMode.HARD,
        "customers": DeleteMode.SOFT,
        "events": DeleteMode.HARD,
    }


def test_demo_config_start_is_fixed_by_the_first_call_and_opens_no_database(tmp_path: Path) -> None:
    """Definitions load in many processes over many hours; a start that moved would make partitions vanish."""
    folder = tmp_path / "new" / "data"
    first = demo_config(folder, NOW)
    later = demo_config(folder, NOW + timedelta(hours=5, minutes=3))
    assert first == later
    assert json.loads((folder / STATE_FILE).read_text())["start"] == START.isoformat()
    assert sorted(p.name for p in folder.iterdir()) == [STATE_FILE]  # no .db, no temp file left


def test_demo_config_start_agrees_across_racing_processes(tmp_path: Path) -> None:
    """Processes starting together on either side of an hour still agree: the first writer wins."""
    script = (
        "import sys; from datetime import datetime; from pathlib import Path;"
        "from sync_pipeline.demo import demo_config;"
        "c = demo_config(Path(sys.argv[1]), datetime.fromisoformat(sys.argv[2]));"
        "print(c.tables[0].start.isoformat())"
    )
    nows = [NOW.replace(minute=59, second=59) + timedelta(seconds=i) for i in range(6)]  # straddle 11:00
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path), now.isoformat()], stdout=subprocess.PIPE, text=True
        )
        for now in nows
    ]
    starts = {proc.communicate(timeout=120)[0].strip() for proc in procs}
    assert all(proc.returncode == 0 for proc in procs)
    assert len(starts) == 1
    assert starts == {json.loads((tmp_path / STATE_FILE).read_text())["start"]}


def test_demo_config_refuses_a_damaged_state_file(tmp_path: Path) -> None:
    """A hand-edited demo.json fails while definitions load, naming the file and the way out."""
    (tmp_path / STATE_FILE).write_text('{"start": "2026-05-12T10:30:00+00:00"}')
    with pytest.raises(ConfigError, match=r"demo\.json.*not an aware time on the hour.*delete"):
        demo_config(tmp_path, NOW)
    (tmp_path / STATE_FILE).write_text("{")
    with pytest.raises(ConfigError, match=r"unreadable demo state"):
        demo_config(tmp_path, NOW)


# -- seed -------------------------------------------------------------------------------------------


def test_ensure_seeded_seeds_once_and_leaves_the_target_alone(tmp_path: Path) -> None:
    """A second call (every sync step makes one) finds the tables and changes nothing."""
    config = demo_config(tmp_path, NOW)
    assert ensure_seeded(config, NOW) is True
    url = source_url(config)
    counts = {t: query(url, f"SELECT count(*) FROM {t}")[0][0] for t in TABLES}
    assert counts == COUNTS
    assert ensure_seeded(config, NOW + timedelta(hours=1)) is False
    assert {t: query(url, f"SELECT count(*) FROM {t}")[0][0] for t in TABLES} == counts
    assert not (tmp_path / "demo_target.db").exists()


def test_ensure_seeded_twice_at_once_seeds_once(tmp_path: Path) -> None:
    """Two step processes starting together: one seeds, the other waits for it and finds the rows."""
    config = demo_config(tmp_path, NOW)
    with ThreadPoolExecutor(2) as pool:
        results = sorted(pool.map(lambda _: ensure_seeded(config, NOW), range(2)))
    assert results == [False, True]
    assert query(source_url(config), "SELECT count(*) FROM orders")[0][0] == COUNTS["orders"]


def test_seeded_rows_span_the_history_with_a_daily_rhythm(seeded: SyncConfig) -> None:
    """Every hour of the 48 has rows, afternoons more than nights; a few events have no updated_at."""
    url = source_url(seeded)
    first_hour, last_hour = START.replace(tzinfo=None), NOW.replace(tzinfo=None)
    for table in TABLES:
        low, high = query(url, f"SELECT min(updated_at), max(updated_at) FROM {table}")[0]
        assert first_hour <= datetime.fromisoformat(low) < first_hour + timedelta(hours=2)
        assert last_hour - timedelta(hours=2) < datetime.fromisoformat(high) < last_hour
    per_hour = Counter(
        datetime.fromisoformat(ts).replace(minute=0, second=0, microsecond=0)
        for (ts,) in query(url, "SELECT updated_at FROM events WHERE updated_at IS NOT NULL")
    )
    assert len(per_hour) == 49  # 48 full hours and the current, partial one
    by_hour_of_day = Counter({hour.hour: 0 for hour in per_hour})
    for hour, count in per_hour.items():
        by_hour_of_day[hour.hour] += count
    assert by_hour_of_day[15] > 2 * by_hour_of_day[3]
    assert query(url, "SELECT count(*) FROM events WHERE updated_at IS NULL")[0][0] == NULL_UPDATED_AT_EVENTS
    order_status = dict(query(url, "SELECT status, count(*) FROM orders GROUP BY status"))
    assert set(order_status) == {"pending", "paid", "shipped", "cancelled"}


def test_same_start_seeds_the_same_rows(tmp_path: Path) -> None:
    """Seeding is a function of the start, so a rebuilt demo (or a second machine) has the same data."""
    configs = [demo_config(tmp_path / name, NOW) for name in ("a", "b")]
    for config in configs:
        ensure_seeded(config, NOW)
    first, second = ([rows_in(source_url(c), t) for t in TABLES] for c in configs)
    assert first == second


# -- simulator --------------------------------------------------------------------------------------


def test_simulate_activity_changes_recent_and_older_hours(seeded: SyncConfig) -> None:
    """A round inserts, updates, deletes and moves rows, so the current, previous and older hours change."""
    url = source_url(seeded)
    before = {t: rows_in(url, t) for t in TABLES}
    later = NOW + timedelta(minutes=5)
    stats = simulate_activity(url, later, random.Random(7), scale=3)
    current = later.replace(minute=0, second=0, microsecond=0)
    assert stats.inserted > 0
    assert stats.updated > 0
    assert stats.deleted > 0
    assert stats.moved > 0
    assert {current, current - timedelta(hours=1)} <= stats.hours
    assert min(stats.hours) < current - timedelta(hours=3)
    for table in TABLES:
        activity = stats.tables[table]
        after = rows_in(url, table)
        assert len(after) == len(before[table]) + activity.inserted - activity.deleted
        old = {row[0]: row for row in before[table]}
        changed = [row for row in after if old.get(row[0]) != row]
        assert len(changed) == activity.inserted + activity.updated + activity.moved
    assert "inserted" in str(stats)


def test_simulate_activity_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    """Same data, clock and seed give the same changes; another seed gives others."""
    configs = [demo_config(tmp_path / name, NOW) for name in ("a", "b", "c")]
    results: list[ActivityStats] = []
    for config, seed in zip(configs, (11, 11, 12), strict=True):
        ensure_seeded(config, NOW)
        results.append(simulate_activity(source_url(config), NOW + timedelta(minutes=1), random.Random(seed)))
    contents = [[rows_in(source_url(c), t) for t in TABLES] for c in configs]
    assert results[0] == results[1]
    assert contents[0] == contents[1]
    assert contents[0] != contents[2]


def test_simulate_activity_needs_a_seeded_source(tmp_path: Path) -> None:
    """The simulator does not create an empty database where the demo source should be."""
    config = demo_config(tmp_path, NOW)
    with pytest.raises(SchemaError, match="ensure_seeded"):
        simulate_activity(source_url(config), NOW)
    assert not (tmp_path / "demo_source.db").exists()
    with pytest.raises(ValueError, match="timezone-aware"):
        simulate_activity(source_url(config), NOW.replace(tzinfo=None))


# -- end to end -------------------------------------------------------------------------------------


@pytest.mark.parametrize("table_name", TABLES)
def test_sync_then_simulate_then_resync_converges(seeded: SyncConfig, table_name: str) -> None:
    """The demo works as a whole: every hour syncs, and re-syncing the hours a round touched converges.

    Each simulated change is found exactly once by the sync of the hours it touched: an insert as
    inserted, an update or move as updated (in its old or new hour, whichever is synced first), a
    delete as deleted, or marked deleted in the soft-delete table.
    """
    table = seeded.table(table_name)
    source, target = source_url(seeded), target_url(seeded)
    windows = hours(START, NOW)
    first = [sync_partition(table, source, target, w) for w in windows]
    assert sum(s.inserted for s in first) == COUNTS[table_name] - (
        NULL_UPDATED_AT_EVENTS if table_name == "events" else 0
    )
    in_some_window = [row for row in rows_in(source, table_name) if row[-1] is not None]  # updated_at
    assert rows_in(target, table_name) == in_some_window

    later = NOW + timedelta(minutes=25)  # 11:02: the current hour turned since the first syncs
    activity = simulate_activity(source, later, random.Random(3), scale=10).tables[table_name]
    assert min(activity.inserted, activity.updated, activity.moved, activity.deleted) > 0
    touched = sorted(activity.hours)
    second = [sync_partition(table, source, target, Window.hour_starting(h)) for h in touched]

    for hour in touched:
        window = Window.hour_starting(hour)
        live_target = rows_in(target, table_name, window)
        if table.delete_mode is DeleteMode.SOFT:
            deleted_ids = {r[0] for r in query(target, f"SELECT id FROM {table_name} WHERE _sync_deleted")}
            live_target = [r for r in live_target if r[0] not in deleted_ids]
        assert live_target == rows_in(source, table_name, window), f"{table_name} {window}"
    assert sum(s.inserted for s in second) == activity.inserted
    assert sum(s.updated for s in second) == activity.updated + activity.moved
    assert sum(s.deleted for s in second) == activity.deleted
    again = [sync_partition(table, source, target, Window.hour_starting(h)) for h in touched]
    assert sum(s.changed for s in again) == 0
