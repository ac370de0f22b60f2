"""What one partition sync did, as one value that becomes Dagster metadata and CLI output."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

HEADLINE_COUNTS = ("inserted", "updated", "deleted", "unchanged", "source_rows", "target_rows")
"""The counts every report of a sync leads with, in this order: the CLI's, the metadata's (SPEC 3)."""


@dataclass
class SyncStats:
    """Counts of one partition sync.

    ``inserted + updated + deleted`` are the rows the sync changed in the target. ``updated`` includes
    rows that moved into the window from an earlier one (``moved_in``) and rows that left the window for
    a later one and were brought to their current version (``moved_out``).
    """

    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    source_rows: int = 0  # source rows in the window
    target_rows: int = 0  # target rows in the window after the sync
    target_rows_before: int = 0
    null_updated_at: int = 0  # source rows with NULL updated_at: in no window, reported not lost
    # Source rows whose updated_at is neither NULL nor in any window (SQLite: a number, or text with a
    # UTC offset other than zero, counted in the window of its text): reported, never synced.
    unplaced_updated_at: int = 0
    moved_in: int = 0
    moved_out: int = 0
    kept_deleted: int = 0  # vanished from the source but kept, as delete_mode=ignore asks
    skipped_newer: int = 0  # target already had a newer version: never overwritten
    vanished_during_sync: int = 0  # deleted in the source between the key scan and the row fetch
    rows_fetched: int = 0  # full source rows read (by key, or by range)
    rows_streamed: int = 0  # of those, rows that travelled by range with no key compared (bulk path)
    rows_direct: int = 0  # of those, written straight into the target: keys above all it held
    ranges_streamed: int = 0  # key ranges with no target row in the window, whose rows travelled whole
    rows_dense: int = 0  # of rows_fetched, every source row of densely changed ranges (no key merged)
    ranges_dense: int = 0  # densely changed key ranges whose rows travelled whole, sorted by the apply
    keys_scanned: int = 0  # (key, updated_at) pairs streamed from both sides
    ranges_compared: int = 0  # key ranges whose count and hash were compared in the databases
    ranges_differing: int = 0
    dry_run: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    target_table: str = ""  # as the user named it (schema.table), for metadata
    target_columns: list[tuple[str, str]] = field(default_factory=list)  # (name, type) after the sync

    @property
    def changed(self) -> int:
        return self.inserted + self.updated + self.deleted

    def add_time(self, phase: str, seconds: float) -> None:
        self.timings[phase] = round(self.timings.get(phase, 0.0) + seconds, 4)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
