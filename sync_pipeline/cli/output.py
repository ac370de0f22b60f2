"""What the commands print: the human layout of counts and sample keys, and the ``--json`` document.

The JSON output is the stable, machine-readable form (every field of the sync statistics); the
text layout is for a person at a terminal, with the counts an operator reads first, in order.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import click

from sync_pipeline.config import TableConfig
from sync_pipeline.engine.diff.stats import HEADLINE_COUNTS, SyncStats
from sync_pipeline.engine.diff.window import Window

__all__ = [
    "CHANGE_KINDS",
    "DEFAULT_SAMPLE_LIMIT",
    "STAT_FIELDS",
    "Samples",
    "arrow",
    "echo_json",
    "echo_stats",
    "header",
    "jsonable",
    "key_text",
]

DEFAULT_SAMPLE_LIMIT = 20

# The counts an operator reads first, in this order; the JSON output carries every field of SyncStats.
STAT_FIELDS = (
    *HEADLINE_COUNTS,
    "null_updated_at",
    "unplaced_updated_at",
    "skipped_newer",
    "kept_deleted",
)

# Kinds reported through ``on_change``; "moved_in"/"moved_out" are updates of rows changing window.
CHANGE_KINDS = ("inserted", "updated", "moved_in", "moved_out", "deleted")


def arrow() -> str:
    """A pretty arrow where the terminal can show it, ASCII where it cannot (a C-locale cron job)."""
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        "→".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return "->"
    return "→"


def jsonable(value: Any) -> Any:
    """Keys are ints and strings mostly, but may be UUIDs, decimals or dates: JSON gets their text."""
    if isinstance(value, tuple | list):
        return [jsonable(item) for item in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def key_text(key: Any) -> str:
    """A key as an operator would type it in a WHERE clause: ``42``, ``'abc'``, ``(1, 'x')``."""
    if isinstance(key, tuple):
        return "(" + ", ".join(key_text(part) for part in key) + ")"
    if isinstance(key, str):
        return repr(key)
    return str(jsonable(key))


@dataclass
class Samples:
    """Up to ``limit`` keys per kind of change, and how many changes of each kind were reported."""

    limit: int
    keys: dict[str, list[Any]] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)

    def __call__(self, kind: str, key: Any) -> None:
        self.totals[kind] = self.totals.get(kind, 0) + 1
        kept = self.keys.setdefault(kind, [])
        if len(kept) < self.limit:
            kept.append(key)

    def kinds(self) -> Iterator[str]:
        yield from (kind for kind in CHANGE_KINDS if kind in self.totals)
        yield from (kind for kind in sorted(self.totals) if kind not in CHANGE_KINDS)

    def as_json(self) -> dict[str, list[Any]]:
        return {kind: [jsonable(key) for key in self.keys.get(kind, [])] for kind in self.kinds()}


def header(verb: str, table: TableConfig, key: str, window: Window) -> dict[str, Any]:
    return {
        "command": verb,
        "table": table.name,
        "partition": key,
        "window": {"start": window.start.isoformat(), "end": window.end.isoformat()},
    }


def echo_json(document: dict[str, Any]) -> None:
    click.echo(json.dumps(document, indent=2, sort_keys=False, default=str))


def echo_stats(stats: SyncStats) -> None:
    width = max(len(name) for name in STAT_FIELDS) + 2
    for name in STAT_FIELDS:
        value = getattr(stats, name)
        detail = ""
        if name == "updated" and (stats.moved_in or stats.moved_out):
            detail = f"  (moved in: {stats.moved_in}, moved out: {stats.moved_out})"
        if name == "unplaced_updated_at" and value:
            # Rows no hour holds are never synced: say so where the count is read, with the fix.
            detail = "  (not synced: updated_at is a number or has a UTC offset other than 0; store UTC text)"
        click.echo(f"  {name:<{width}}{value:>10}{detail}")
    if stats.vanished_during_sync:
        click.echo(f"  {'vanished_during_sync':<{width}}{stats.vanished_during_sync:>10}")
    if "total" in stats.timings:
        click.echo(f"  {'seconds':<{width}}{stats.timings['total']:>10.3f}")
