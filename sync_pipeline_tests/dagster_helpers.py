"""Builders for the tests of the Dagster layer: config files on real databases, a source table, reads.

The Dagster tests go through the same door a deployment does: a YAML file (written here as JSON,
which is YAML) naming real databases, loaded by ``build_definitions`` or by ``SyncResource``. The
module also holds :func:`sync_job`, the importable, module-level job factory that
``reconstructable`` needs so that the multiprocess executor can rebuild the job in each step
process.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from dagster import Definitions, JobDefinition, build_reconstructable_job
from dagster._core.definitions.reconstruct import ReconstructableJob

from sync_pipeline.engine.diff.window import Window
from sync_pipeline_tests.helpers import TS, Side, engine_for, insert, normalise

# The hours most Dagster tests sync (UTC partition keys) and the tables' first partition.
H07, H08, H09 = (Window.from_partition_key(f"2026-11-30-{h:02d}:00") for h in (7, 8, 9))
START = "2026-11-30T00:00:00"

COLUMNS = ("id", "customer", "amount", "note", "updated_at")


def side(kind: str, url: str) -> Side:
    """A database of a test, with an engine the test uses for its own reads and writes."""
    return Side(kind, url, engine_for(kind, url))


def source_table(name: str = "orders") -> sa.Table:
    """An application table: integer key, text, an exact decimal, a nullable text and a timestamp."""
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("customer", sa.String(40), nullable=False),
        sa.Column("amount", sa.Numeric(12, 2), nullable=False),
        sa.Column("note", sa.Text),
        sa.Column("updated_at", TS, nullable=False),
    )


def row(i: int, at: datetime, **values: Any) -> dict[str, Any]:
    """Row ``i`` stamped ``at``: every column filled, the note NULL for odd ids."""
    return {
        "id": i,
        "customer": f"customer-{i} é",
        "amount": Decimal(i * 100 + 7) / 100,
        "note": None if i % 2 else f"note {i}",
        "updated_at": at,
        **values,
    }


def in_hour(window: Window, minute: int) -> datetime:
    """An instant ``minute`` minutes (and some microseconds) into ``window``."""
    return window.start + timedelta(minutes=minute, microseconds=123456)


def create_source(db: Side, rows: Iterable[Mapping[str, Any]], name: str = "orders") -> sa.Table:
    """Create the source table in ``db`` and fill it."""
    table = source_table(name)
    table.metadata.create_all(db.engine)
    insert(db, table, rows)
    return table


def rows_in(db: Side, name: str, window: Window) -> dict[int, tuple[Any, ...]]:
    """The rows of table ``name`` whose ``updated_at`` is in ``window``, normalised, by id."""
    table = sa.Table(name, sa.MetaData(), autoload_with=db.engine)
    with db.engine.connect() as conn:
        result = conn.execute(sa.select(*(table.c[c] for c in COLUMNS)))
        values = [tuple(normalise(v) for v in r) for r in result]
    return {v[0]: v for v in values if window.start <= v[-1] < window.end}


def table_entry(
    name: str, source: str, target: str, *, table: str = "orders", start: str = START, **options: Any
) -> dict[str, Any]:
    """One ``tables:`` entry of a config file."""
    return {
        "name": name,
        "source": {"connection": source, "table": table},
        "target": {"connection": target, "table": table},
        "primary_key": ["id"],
        "updated_at": "updated_at",
        "start": start,
        **options,
    }


def write_config(
    path: Path, connections: Mapping[str, str], tables: Sequence[Mapping[str, Any]], **top: Any
) -> Path:
    """Write a config file naming ``connections`` (name -> URL) and ``tables``; returns its path."""
    document = {
        "connections": {name: {"url": url} for name, url in connections.items()},
        "tables": list(tables),
        **top,
    }
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def write_orders_config(path: Path, source: Side, target: Side, *, start: str = START, **top: Any) -> Path:
    """Write the config most Dagster tests deploy: one table, ``orders``, from ``app`` (``source``) to
    ``warehouse`` (``target``), first partition ``start``; ``top`` adds top-level sections.
    """
    return write_config(
        path,
        {"app": source.url, "warehouse": target.url},
        [table_entry("orders", "app", "warehouse", start=start)],
        **top,
    )


def load_definitions(config_path: str) -> Definitions:
    """``build_definitions(config_path)``: the code location for that config ('' for the demo).

    Imported on call because importing ``sync_pipeline.definitions`` also builds its module-level
    ``defs`` from the environment; tests point ``SYNC_PIPELINE_DATA_DIR`` at a temporary folder first.
    """
    from sync_pipeline.definitions import build_definitions

    return build_definitions(config_path)


def sync_job(config_path: str, job_name: str = "sync_hourly") -> JobDefinition:
    """The code location's job for the config at ``config_path``, as each step process rebuilds it."""
    return load_definitions(config_path).resolve_job_def(job_name)


def reconstructable_sync_job(config_path: str) -> ReconstructableJob:
    """:func:`sync_job` as a pointer every step process follows to rebuild the same job.

    The config path travels inside the pointer rather than in an environment variable: a forkserver
    starts once per test process and its children keep the environment it started with.
    """
    return build_reconstructable_job(
        __name__,
        sync_job.__name__,
        reconstructable_kwargs={"config_path": config_path},
        # The project root, where this test package is importable from (it is not installed).
        reconstructor_working_directory=str(Path(__file__).resolve().parent.parent),
    )


def utc(text: str) -> datetime:
    """``2026-11-30T09:10`` as an aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)
