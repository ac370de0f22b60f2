"""Deciding what each differing key needs, from what the two sides say about it. Pure: no database.

The merge of the two key streams says which keys are only in the source's window, only in the
target's, or in both with different fingerprints. Lookups then say where else each side holds those
keys (``updated_at`` as integer microseconds, ``None`` when NULL). From both this module decides, for
every key, one of: insert, update, move in (the target held it in another hour), move out (the source
moved it to a later hour), delete, or leave alone, and it counts what it leaves alone.

Two rules shape the decisions:

* comparing ``updated_at`` (the hourly sync), a target row newer than the source's is never
  overwritten (SPEC 4.9): it is counted in ``skipped_newer``;
* comparing whole rows (``compare="row"``: drift repair), the source is the truth: a row that differs
  is overwritten even where the source's ``updated_at`` moved backwards. Such keys are *forced*: the
  apply overwrites them whatever the target's ``updated_at``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

from sync_pipeline.engine.diff.merge import ChunkDiff, Key
from sync_pipeline.engine.diff.stats import SyncStats

Compare = Literal["updated_at", "row"]
Kind = Literal["inserted", "updated", "moved_in", "moved_out"]


@dataclass
class KeyBatch:
    """Keys awaiting lookup and fetch; flushed every chunk so memory stays bounded.

    ``source_only`` and ``target_only`` carry the side's fingerprint of the key: ``updated_at``
    micros, or under ``compare="row"`` a row hash (which :func:`classify` must not read as a time).
    """

    source_only: list[tuple[Key, int]] = field(default_factory=list)
    changed: list[Key] = field(default_factory=list)
    target_only: list[tuple[Key, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.source_only) + len(self.changed) + len(self.target_only)

    def split(self, size: int) -> Iterator[KeyBatch]:
        """Batches of at most ``size`` keys: one lookup's ``IN (...)`` stays under the parameter limit."""
        part = KeyBatch()
        for name in ("source_only", "changed", "target_only"):
            for item in getattr(self, name):
                getattr(part, name).append(item)
                if len(part) >= size:
                    yield part
                    part = KeyBatch()
        if len(part):
            yield part


def take(chunk: ChunkDiff, batch: KeyBatch, stats: SyncStats, compare: Compare, *, count_rows: bool) -> None:
    """Count a compared stretch of keys and queue its differing keys for lookup and fetch."""
    stats.keys_scanned += chunk.source_keys + chunk.target_keys
    if count_rows:
        stats.source_rows += chunk.source_keys
        stats.target_rows_before += chunk.target_keys
    stats.unchanged += chunk.unchanged
    for key, source_fp, target_fp in chunk.changed:
        # A row fingerprint is a hash, not a time: any difference is a change to copy.
        if compare == "row" or source_fp > target_fp:
            batch.changed.append(key)
        else:
            stats.skipped_newer += 1  # the target holds a newer version: never overwrite it
    batch.source_only.extend(chunk.source_only)
    batch.target_only.extend(chunk.target_only)


@dataclass
class Decision:
    """What to do with a batch's keys: rows to fetch and write (by kind), keys to delete.

    ``forced`` keys (a subset of ``to_write``) are overwritten even where the target's ``updated_at``
    is newer: only ever under ``compare="row"``.
    """

    to_write: dict[Key, Kind] = field(default_factory=dict)
    to_delete: list[Key] = field(default_factory=list)
    forced: list[Key] = field(default_factory=list)


def classify(
    batch: KeyBatch,
    *,
    in_target: Mapping[Key, int | None],
    in_source: Mapping[Key, int | None],
    compare: Compare,
    stats: SyncStats,
    source_at: Mapping[Key, int | None] | None = None,
    target_at: Mapping[Key, int | None] | None = None,
) -> Decision:
    """Decide every key of ``batch``.

    ``in_target``: where the target holds the ``source_only`` keys, anywhere in the table (micros);
    ``in_source``: the same for the ``target_only`` keys in the source. Under ``compare="row"`` the
    batch carries row hashes, so ``source_at`` (micros of the ``source_only`` keys in the source) and
    ``target_at`` (of the ``target_only`` keys in the target) must be given.
    """
    row = compare == "row"
    if row and (source_at is None or target_at is None):
        raise ValueError("compare='row' needs each side's updated_at of the keys only it holds")
    decision = Decision()
    for key, fingerprint in batch.source_only:
        source_ts = source_at.get(key) if source_at is not None else fingerprint
        if key not in in_target:
            decision.to_write[key] = "inserted"
            continue
        target_ts = in_target[key]
        if target_ts is not None and source_ts is not None and target_ts > source_ts:
            if not row:
                stats.skipped_newer += 1
                continue
            decision.forced.append(key)
        decision.to_write[key] = "moved_in"
    for key in batch.changed:
        decision.to_write[key] = "updated"
        if row:
            decision.forced.append(key)
    for key, fingerprint in batch.target_only:
        target_ts = target_at.get(key) if target_at is not None else fingerprint
        if key not in in_source:
            decision.to_delete.append(key)
        elif (now_at := in_source[key]) is None:
            # A source row whose updated_at became NULL is in no window: it is counted in
            # null_updated_at and its target row is left as it is, never deleted.
            pass
        elif target_ts is not None and now_at < target_ts:
            # Stamped earlier than the target's version (after a NULL, or a clock set back): into an
            # earlier hour, not a later one. The hourly sync never overwrites the newer row; a
            # whole-row repair makes the target equal to the source.
            if not row:
                stats.skipped_newer += 1
                continue
            decision.to_write[key] = "updated"
            decision.forced.append(key)
        else:
            decision.to_write[key] = "moved_out"
    return decision


def count(stats: SyncStats, kind: Kind) -> None:
    """Count one written row of ``kind`` (``updated`` includes moves in and out)."""
    if kind == "inserted":
        stats.inserted += 1
        return
    stats.updated += 1
    if kind == "moved_in":
        stats.moved_in += 1
    elif kind == "moved_out":
        stats.moved_out += 1
