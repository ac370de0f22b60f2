"""The merge of two key-ordered streams of ``(key, updated_at)``: the heart of the diff.

Both sides arrive sorted by key in the same (binary) order; one pass tells, with memory independent of
the window's size, which keys exist only in the source, only in the target, or in both with different
or equal last-update times. The merge also proves its own precondition: a key that does not strictly
increase means duplicate keys or an order the two databases disagree on, and stops the sync.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

from sync_pipeline.errors import DataError

Key = Any  # a scalar for one key column, a tuple for several


class Outcome(Enum):
    SOURCE_ONLY = "source_only"  # new, or moved into the window: upsert
    TARGET_ONLY = "target_only"  # moved to another window, or deleted at the source
    CHANGED = "changed"  # in both, different updated_at
    UNCHANGED = "unchanged"


@dataclass(frozen=True, slots=True)
class KeyDiff:
    outcome: Outcome
    key: Key
    source_ts: int | None  # updated_at as integer microseconds (see Adapter.epoch_micros)
    target_ts: int | None


_END = object()


def _checked(side: str, pairs: Iterable[tuple[Key, int]]) -> Iterator[tuple[Key, int]]:
    previous: Key = _END
    for key, ts in pairs:
        if key is None or (isinstance(key, tuple) and None in key):
            raise DataError(f"{side} has a row whose key is NULL: {key!r}; keys must be non-NULL")
        if previous is not _END and not previous < key:
            if previous == key:
                raise DataError(
                    f"{side} has duplicate key {key!r} in the window; the primary_key columns must be "
                    "unique in the source"
                )
            raise DataError(
                f"{side} returned keys out of order ({previous!r} then {key!r}); the key columns' "
                "collation does not sort like the other side"
            )
        previous = key
        yield key, ts


def merge_keys(source: Iterable[tuple[Key, int]], target: Iterable[tuple[Key, int]]) -> Iterator[KeyDiff]:
    """Yield one :class:`KeyDiff` per key present on either side, in key order."""
    src = _checked("source", source)
    tgt = _checked("target", target)
    s = next(src, None)
    t = next(tgt, None)
    while s is not None and t is not None:
        if s[0] == t[0]:
            outcome = Outcome.UNCHANGED if s[1] == t[1] else Outcome.CHANGED
            yield KeyDiff(outcome, s[0], s[1], t[1])
            s = next(src, None)
            t = next(tgt, None)
        elif s[0] < t[0]:
            yield KeyDiff(Outcome.SOURCE_ONLY, s[0], s[1], None)
            s = next(src, None)
        else:
            yield KeyDiff(Outcome.TARGET_ONLY, t[0], None, t[1])
            t = next(tgt, None)
    while s is not None:
        yield KeyDiff(Outcome.SOURCE_ONLY, s[0], s[1], None)
        s = next(src, None)
    while t is not None:
        yield KeyDiff(Outcome.TARGET_ONLY, t[0], None, t[1])
        t = next(tgt, None)
