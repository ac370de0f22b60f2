"""Shared builders for the sync tests: engine pairs, source tables, configs, and normalised reads.

Tests create their source tables with SQLAlchemy Core, let the sync create the target, and compare
both sides by reading them back with SQLAlchemy and normalising what legitimately differs between
engines (an aware timestamp vs a naive UTC wall time, JSON as text vs parsed, ``memoryview`` vs
``bytes``). Everything else must be equal as Python values.
"""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from sync_pipeline.config import TableConfig, parse_config
from sync_pipeline.engine.diff.stats import SyncStats
from sync_pipeline.engine.diff.window import Window
from sync_pipeline.engine.sync import sync_partition

# The partition most tests sync, and its neighbours.
W = Window.from_partition_key("2026-11-30-08:00")
W_BEFORE = Window.from_partition_key("2026-11-30-07:00")
W_AFTER = Window.from_partition_key("2026-11-30-09:00")

# Source -> target pairs: every engine is a source and a target at least once.
PAIRS = [
    ("sqlite", "sqlite"),
    ("postgresql", "postgresql"),
    ("mysql", "postgresql"),
    ("postgresql", "sqlite"),
    ("postgresql", "mysql"),
    ("sqlite", "mysql"),
]
PAIR_IDS = [f"{s}->{t}" for s, t in PAIRS]

# Timestamps: timestamptz on PostgreSQL, DATETIME(6) (naive, read as UTC) on MariaDB, text on SQLite.
TS: sa.types.TypeEngine[Any] = sa.DateTime(timezone=True).with_variant(
    mysql.DATETIME(fsp=6), "mysql", "mariadb"
)
# Text keys tell case, accents and trailing spaces apart on MariaDB only with a binary NO PAD
# collation (utf8mb4_bin pads with spaces): the sync refuses a target key under any other.
KEY_TEXT: sa.types.TypeEngine[Any] = sa.String(40).with_variant(
    mysql.VARCHAR(40, charset="utf8mb4", collation="utf8mb4_nopad_bin"), "mysql", "mariadb"
)


@dataclass
class Side:
    """One database of a test: its engine kind, the URL the sync gets, and an engine for the test."""

    kind: str
    url: str
    engine: sa.Engine

    @property
    def stores_naive(self) -> bool:
        """Whether aware datetimes must be written as naive UTC wall times (DATETIME, SQLite text)."""
        return self.kind != "postgresql"

    def sqlite_path(self) -> Path:
        assert self.kind == "sqlite"
        database = sa.make_url(self.url).database
        assert database is not None
        return Path(database)


@dataclass
class Pair:
    source: Side
    target: Side

    def sync(self, config: TableConfig, window: Window = W, **options: Any) -> SyncStats:
        return sync_partition(config, self.source.url, self.target.url, window, **options)


def make_pair(make_db_url: Callable[[str, str], str], source_kind: str, target_kind: str) -> Pair:
    """A fresh source and target database of the given engines, with engines for the test's own use."""
    source_url = make_db_url(source_kind, "source")
    target_url = make_db_url(target_kind, "target")
    return Pair(
        Side(source_kind, source_url, engine_for(source_kind, source_url)),
        Side(target_kind, target_url, engine_for(target_kind, target_url)),
    )


def open_pair(make_db_url: Callable[[str, str], str], source_kind: str, target_kind: str) -> Iterator[Pair]:
    """:func:`make_pair` for a fixture to ``yield from``: the test's engines are disposed after it."""
    made = make_pair(make_db_url, source_kind, target_kind)
    yield made
    made.source.engine.dispose()
    made.target.engine.dispose()


def engine_for(kind: str, url: str) -> sa.Engine:
    """An engine for the test's own reads and writes: sessions in UTC, no pooled connections kept."""
    connect_args: dict[str, Any] = {}
    if kind == "postgresql":
        connect_args = {"options": "-c timezone=UTC"}
    elif kind == "mysql":
        connect_args = {"init_command": "SET time_zone = '+00:00'"}
    return sa.create_engine(url, connect_args=connect_args, poolclass=sa.pool.NullPool)


def table_config(
    source_table: str,
    target_table: str | None = None,
    *,
    primary_key: Sequence[str] = ("id",),
    updated_at: str = "updated_at",
    chunk_size: int = 100,
    **options: Any,
) -> TableConfig:
    """A validated TableConfig, built through ``parse_config`` as a deployment's YAML would be.

    JSON is YAML, so the document is written with ``json.dumps``: any identifier survives quoting.
    The connections are placeholders; tests pass real URLs to ``sync_partition``.
    """
    document = {
        "connections": {"src": {"url": "sqlite:///unused-src.db"}, "dst": {"url": "sqlite:///unused-dst.db"}},
        "tables": [
            {
                "name": "t",
                "source": {"connection": "src", "table": source_table},
                "target": {"connection": "dst", "table": target_table or source_table},
                "primary_key": list(primary_key),
                "updated_at": updated_at,
                "start": "2026-11-01T00:00:00",
                "chunk_size": chunk_size,
                **options,
            }
        ],
    }
    return parse_config(json.dumps(document, ensure_ascii=False), environ={}).tables[0]


def items_table(*extra: sa.schema.SchemaItem) -> sa.Table:
    """The ``items`` source table of the sync tests: integer key, nullable ``updated_at``, two values.

    ``extra`` adds schema items (an index, say) to the one definition the tests share.
    """
    return sa.Table(
        "items",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("updated_at", TS, nullable=True),
        sa.Column("name", sa.String(100)),
        sa.Column("qty", sa.Integer),
        *extra,
    )


def at(window: Window, seconds: float = 0) -> datetime:
    """An instant ``seconds`` after the window's start (aware, UTC)."""
    return window.start + timedelta(seconds=seconds)


def stamp(window: Window, i: int) -> datetime:
    """A distinct in-window timestamp with microseconds for row number ``i``."""
    return window.start + timedelta(seconds=i % 3599, microseconds=(i * 7919) % 1_000_000)


def storable(side: Side, value: Any) -> Any:
    """``value`` as the test writes it: aware datetimes become naive UTC where the column is naive."""
    if isinstance(value, datetime) and value.tzinfo is not None and side.stores_naive:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def insert(side: Side, table: sa.Table, rows: Iterable[Mapping[str, Any]]) -> None:
    prepared = [{k: storable(side, v) for k, v in row.items()} for row in rows]
    if prepared:
        with side.engine.begin() as conn:
            conn.execute(table.insert(), prepared)


def update(side: Side, table: sa.Table, where: sa.ColumnElement[bool], **values: Any) -> None:
    with side.engine.begin() as conn:
        conn.execute(table.update().where(where).values({k: storable(side, v) for k, v in values.items()}))


def delete(side: Side, table: sa.Table, where: sa.ColumnElement[bool]) -> None:
    with side.engine.begin() as conn:
        conn.execute(table.delete().where(where))


def reflect(side: Side, name: str) -> sa.Table:
    """The live table, as the test reads it."""
    metadata = sa.MetaData()
    sa.event.listen(metadata, "column_reflect", _reflected_column)
    return sa.Table(name, metadata, autoload_with=side.engine)


def _reflected_column(inspector: sa.Inspector, _table: sa.Table, column: dict[str, Any]) -> None:
    # Work around SQLAlchemy's MySQL reflection: a DOUBLE would read as a Decimal rounded to 10
    # places, and a backtick in a column name comes back doubled.
    if isinstance(column["type"], sa.Float):
        column["type"].asdecimal = False
    if inspector.dialect.name == "mysql":
        column["name"] = column["name"].replace("``", "`")


def has_table(side: Side, name: str) -> bool:
    return sa.inspect(side.engine).has_table(name)


def normalise(value: Any, *, json_text: bool = False) -> Any:
    """A value in the one shape every engine's reading of it must match.

    Timestamps become aware UTC instants (a naive one is a UTC wall time: ``naive_timezone`` is UTC
    unless a test says otherwise); ``memoryview`` becomes ``bytes``; JSON stored as text is parsed.
    Decimals stay ``Decimal`` and compare exactly by value (``Decimal.__eq__`` does not round).
    """
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    if json_text and isinstance(value, str | bytes):
        return json.loads(value)
    return value


def read_rows(
    side: Side,
    name: str,
    key: Sequence[str],
    columns: Sequence[str],
    *,
    json_columns: Iterable[str] = (),
    where: Any = None,
) -> dict[Any, tuple[Any, ...]]:
    """Every row of table ``name`` as ``key -> normalised values of columns``."""
    table = reflect(side, name)
    # JSON kept as text (MariaDB's JSON is LONGTEXT) is parsed; a JSON column's reading already is.
    json_set = {c for c in json_columns if not isinstance(table.c[c].type, sa.JSON)}
    stmt = sa.select(*(table.c[c] for c in columns))
    if where is not None:
        stmt = stmt.where(where(table))
    rows: dict[Any, tuple[Any, ...]] = {}
    with side.engine.connect() as conn:
        for row in conn.execute(stmt):
            values = tuple(normalise(v, json_text=c in json_set) for c, v in zip(columns, row, strict=True))
            k = tuple(values[columns.index(c)] for c in key)
            rows[k[0] if len(k) == 1 else k] = values
    return rows


def assert_same_rows(
    pair: Pair,
    source_name: str,
    target_name: str,
    key: Sequence[str],
    columns: Sequence[str],
    *,
    json_columns: Iterable[str] = (),
    where: Any = None,
) -> None:
    """Source and target hold the same keys with the same normalised values (optionally filtered)."""
    json_columns = list(json_columns)
    source = read_rows(pair.source, source_name, key, columns, json_columns=json_columns, where=where)
    target = read_rows(pair.target, target_name, key, columns, json_columns=json_columns, where=where)
    assert set(target) == set(source), (
        f"keys only in source: {sorted(set(source) - set(target), key=repr)[:10]}; "
        f"only in target: {sorted(set(target) - set(source), key=repr)[:10]}"
    )
    differing = {k: (source[k], target[k]) for k in source if source[k] != target[k]}
    assert not differing, f"{len(differing)} rows differ, e.g. {next(iter(differing.items()))}"


def fingerprint(side: Side, name: str, key: Sequence[str]) -> list[str]:
    """The target as stored, to prove a run wrote nothing.

    The raw values of every row in key order; on PostgreSQL also each row version's ``xmin`` and
    ``ctid`` (an UPDATE that writes the same values still makes a new row version); on SQLite a hash
    of the database file itself.
    """
    table = reflect(side, name)
    columns: list[Any] = list(table.c)
    if side.kind == "postgresql":
        columns += [sa.literal_column("xmin::text"), sa.literal_column("ctid::text")]
    with side.engine.connect() as conn:
        rows = conn.execute(sa.select(*columns).order_by(*(table.c[k] for k in key))).all()
    lines = [repr(tuple(row)) for row in rows]
    if side.kind == "sqlite":
        lines.append(hashlib.sha256(side.sqlite_path().read_bytes()).hexdigest())
    return lines


def counts(stats: SyncStats, *names: str) -> dict[str, int]:
    """The named counters of ``stats``, for one readable assertion."""
    return {name: getattr(stats, name) for name in names}


CHANGE_COUNTS = ("inserted", "updated", "deleted")
ALL_COUNTS = ("inserted", "updated", "deleted", "unchanged", "source_rows", "target_rows")
NOTHING_CHANGED = {"inserted": 0, "updated": 0, "deleted": 0}


def all_counts(
    *, rows: int, inserted: int = 0, updated: int = 0, deleted: int = 0, unchanged: int = 0
) -> dict[str, int]:
    """What ``counts(stats, *ALL_COUNTS)`` must be after a run that leaves ``rows`` rows in the window
    on both sides: every one of the six counters, those not given 0.
    """
    return {
        "inserted": inserted,
        "updated": updated,
        "deleted": deleted,
        "unchanged": unchanged,
        "source_rows": rows,
        "target_rows": rows,
    }


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (a server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
