"""The merge of two key-ordered streams of ``(key, updated_at)``: the heart of the diff.

Both sides arrive sorted by key in the same (binary) order; one pass tells, with memory independent of
the window's size, which keys exist only in the source, only in the target, or in both with different
or equal last-update times. The merge also proves its own precondition: a key that does not strictly
increase means duplicate keys or an order the two databases disagree on, and stops the sync.
"""

from __future__ import annotations

import operator
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from itertools import islice
from operator import itemgetter
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
_first = itemgetter(0)


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


@dataclass(slots=True)
class ChunkDiff:
    """What one stretch of keys holds: counts for the equal keys, and only the differing ones listed.

    The hourly window is mostly unchanged keys; counting them rather than describing each one is what
    makes the merge cost little more than reading the keys.
    """

    source_keys: int
    target_keys: int
    unchanged: int
    changed: list[tuple[Key, int, int]]  # (key, source fingerprint, target fingerprint)
    source_only: list[tuple[Key, int]]
    target_only: list[tuple[Key, int]]


class _ChunkChecker:
    """The merge's precondition, proved a chunk at a time: non-NULL keys in strictly increasing order."""

    def __init__(self, side: str) -> None:
        self.side = side
        self.last: Key = _END

    def check(self, chunk: list[tuple[Key, int]]) -> None:
        keys = list(map(_first, chunk))
        if None in keys or (isinstance(keys[0], tuple) and any(None in key for key in keys)):
            # The per-key check names the offending key.
            for _ in _checked(self.side, chunk):
                pass
        in_order = all(map(operator.lt, keys, islice(keys, 1, None)))
        if not in_order or (self.last is not _END and not self.last < keys[0]):
            previous = [] if self.last is _END else [(self.last, 0)]
            for _ in _checked(self.side, previous + chunk):
                pass
        self.last = keys[-1]


def _chunks(side: str, chunks: Iterable[list[tuple[Key, int]]]) -> Iterator[list[tuple[Key, int]]]:
    checker = _ChunkChecker(side)
    for chunk in chunks:
        if chunk:
            checker.check(chunk)
            yield chunk


_LEAF = 32  # below this many source keys, compare as sets rather than split further


def _compare(source: list[tuple[Key, int]], target: list[tuple[Key, int]]) -> ChunkDiff:
    diff = ChunkDiff(len(source), len(target), 0, [], [], [])
    _walk(source, target, diff)
    return diff


def _walk(source: list[tuple[Key, int]], target: list[tuple[Key, int]], diff: ChunkDiff) -> None:
    """Split both stretches at the same key until the halves are equal lists (one C comparison each).

    Most keys are unchanged, so most halves compare equal at once; only the few small pieces around a
    change are looked at pair by pair. Pieces are visited in key order, so the lists stay sorted.
    """
    if source == target:
        diff.unchanged += len(source)
        return
    if len(source) <= _LEAF or not target:
        _small(source, target, diff)
        return
    mid = len(source) // 2
    cut = bisect_left(target, source[mid][0], key=_first)
    _walk(source[:mid], target[:cut], diff)
    _walk(source[mid:], target[cut:], diff)


def _small(source: list[tuple[Key, int]], target: list[tuple[Key, int]], diff: ChunkDiff) -> None:
    in_target = set(target)
    source_extra = [pair for pair in source if pair not in in_target]
    diff.unchanged += len(source) - len(source_extra)
    in_source = set(source)
    target_extra = dict(pair for pair in target if pair not in in_source)
    for key, fingerprint in source_extra:
        if key in target_extra:
            diff.changed.append((key, fingerprint, target_extra.pop(key)))
        else:
            diff.source_only.append((key, fingerprint))
    diff.target_only.extend(target_extra.items())  # in key order: dicts keep insertion order


def diff_chunks(
    source: Iterable[list[tuple[Key, int]]], target: Iterable[list[tuple[Key, int]]]
) -> Iterator[ChunkDiff]:
    """The merge of :func:`merge_keys`, over streams of key-ordered chunks, one stretch at a time.

    Each step takes from both sides the keys up to the smaller of the two chunks' last keys (so a key
    is never compared against a chunk that could still hold it), and compares the two stretches as
    sets of ``(key, fingerprint)`` pairs in C: only the pairs on one side alone are looked at in
    Python. At most one chunk per side is held.
    """
    src = _chunks("source", source)
    tgt = _chunks("target", target)
    s_buf: list[tuple[Key, int]] = []
    t_buf: list[tuple[Key, int]] = []
    s_done = t_done = False
    while True:
        if not s_buf and not s_done:
            s_buf = next(src, [])
            s_done = not s_buf
        if not t_buf and not t_done:
            t_buf = next(tgt, [])
            t_done = not t_buf
        if not s_buf and not t_buf:
            return
        if s_buf and t_buf:
            bound = min(s_buf[-1][0], t_buf[-1][0])
            i = bisect_right(s_buf, bound, key=_first)
            j = bisect_right(t_buf, bound, key=_first)
        else:
            i, j = len(s_buf), len(t_buf)  # the other side has ended
        s_part, s_buf = s_buf[:i], s_buf[i:]
        t_part, t_buf = t_buf[:j], t_buf[j:]
        yield _compare(s_part, t_part)
