"""Verifying a synced partition: do source and target hold the same rows, every column compared?

A sync compares keys and ``updated_at``; verification compares whole rows, so it also sees a value
changed in the target without touching ``updated_at``, or a row deleted behind the pipeline's back.
It is a dry run of a full-row sync: counts and hashes of key ranges in each database first, and keys
only for the ranges that differ, so an intact partition costs one aggregate query per side.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.engine import URL

from sync_pipeline.engine.diff.window import Window
from sync_pipeline.engine.settings import TableConfig
from sync_pipeline.engine.sync import sync_partition


@dataclass(frozen=True)
class Verification:
    """How far the target's window is from the source's."""

    rows_differing: int  # rows missing on one side or different in any column
    moved_out: int  # updated in the source into a later hour: the next hourly sync moves them, not drift
    source_rows: int
    target_rows: int
    kept_deleted: int  # gone from the source but kept on purpose (delete_mode: ignore)
    keys_scanned: int  # keys streamed because their key range differed (0 when intact)
    seconds: float
    # Seconds by phase (``plan``, ``checksum``, ...): where a verification's time went.
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def in_sync(self) -> bool:
        return self.rows_differing == 0


def verify_partition(
    table: TableConfig, source_url: str | URL, target_url: str | URL, window: Window
) -> Verification:
    """Compare every synced column of the window's rows in source and target; write nothing."""
    stats = sync_partition(table, source_url, target_url, window, dry_run=True, compare="row")
    return Verification(
        rows_differing=stats.inserted + stats.updated - stats.moved_out + stats.deleted + stats.skipped_newer,
        moved_out=stats.moved_out,
        source_rows=stats.source_rows,
        target_rows=stats.target_rows_before,
        kept_deleted=stats.kept_deleted,
        keys_scanned=stats.keys_scanned,
        seconds=stats.timings.get("total", 0.0),
        timings=dict(stats.timings),
    )
