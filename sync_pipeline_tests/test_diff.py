"""The pure parts of the diff engine: key merge, key-range descent, windows. No database needed."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync_pipeline.engine.diff.merge import Outcome, diff_chunks, merge_keys
from sync_pipeline.engine.diff.segments import Checksum, Descent, KeyRange
from sync_pipeline.engine.diff.window import Window
from sync_pipeline.errors import DataError


def test_merge_classifies_every_key() -> None:
    """Each key on either side gets exactly one outcome, in key order."""
    source = [(1, 10), (2, 20), (4, 40), (5, 50)]
    target = [(2, 20), (3, 30), (4, 41), (6, 60)]
    result = [(d.outcome, d.key) for d in merge_keys(source, target)]
    assert result == [
        (Outcome.SOURCE_ONLY, 1),
        (Outcome.UNCHANGED, 2),
        (Outcome.TARGET_ONLY, 3),
        (Outcome.CHANGED, 4),
        (Outcome.SOURCE_ONLY, 5),
        (Outcome.TARGET_ONLY, 6),
    ]


@given(
    st.dictionaries(st.integers(-1000, 1000), st.integers(0, 3)),
    st.dictionaries(st.integers(-1000, 1000), st.integers(0, 3)),
)
def test_merge_agrees_with_set_arithmetic(source: dict[int, int], target: dict[int, int]) -> None:
    """For any two key sets, the merge equals the answer of dictionaries compared naively."""
    diffs = list(merge_keys(sorted(source.items()), sorted(target.items())))
    got = {d.key: d.outcome for d in diffs}
    expected = {}
    for key in source.keys() | target.keys():
        if key not in target:
            expected[key] = Outcome.SOURCE_ONLY
        elif key not in source:
            expected[key] = Outcome.TARGET_ONLY
        else:
            expected[key] = Outcome.UNCHANGED if source[key] == target[key] else Outcome.CHANGED
    assert got == expected
    assert [d.key for d in diffs] == sorted(expected)


def test_merge_composite_keys() -> None:
    """Tuple keys compare column by column, like ORDER BY a, b."""
    source = [((1, "a"), 1), ((1, "b"), 1), ((2, "a"), 1)]
    target = [((1, "b"), 1), ((2, "a"), 2)]
    outcomes = [d.outcome for d in merge_keys(source, target)]
    assert outcomes == [Outcome.SOURCE_ONLY, Outcome.UNCHANGED, Outcome.CHANGED]


def test_merge_rejects_duplicate_keys() -> None:
    """A source without a unique key cannot be synced by key: the merge stops with a clear error."""
    with pytest.raises(DataError, match="duplicate key 2"):
        list(merge_keys([(1, 1), (2, 1), (2, 2)], []))


def test_merge_rejects_null_keys() -> None:
    """A NULL key identifies no row: clear error naming the side."""
    with pytest.raises(DataError, match="source has a row whose key is NULL"):
        list(merge_keys([(None, 1)], []))


def test_merge_rejects_disagreeing_order() -> None:
    """Keys out of order mean the two databases sort differently: refuse rather than mis-diff."""
    with pytest.raises(DataError, match="out of order"):
        list(merge_keys([], [("b", 1), ("a", 1)]))


def test_key_range_split_covers_range_without_overlap() -> None:
    """Buckets tile [lo, hi) exactly, so a row is compared in one bucket only."""
    width, buckets = KeyRange(10, 1000).split(32)
    assert buckets[0].lo == 10
    assert buckets[-1].hi == 1000
    for left, right in itertools.pairwise(buckets):
        assert left.hi == right.lo
    assert all(b.hi - b.lo <= width for b in buckets)  # type: ignore[operator]


def _buckets(rows: dict[int, int]):  # type: ignore[no-untyped-def]
    def checksums(krange: KeyRange, width: int) -> dict[int, Checksum]:
        out: dict[int, list[int]] = {}
        for key, value in rows.items():
            assert krange.lo is not None
            assert krange.hi is not None
            if krange.lo <= key < krange.hi:
                out.setdefault((key - krange.lo) // width, []).append(value)
        return {b: Checksum(len(v), sum(v)) for b, v in out.items()}

    return checksums


def test_descent_narrows_sparse_changes_to_small_ranges() -> None:
    """Two changed keys in 100k rows: only small ranges around them are left to stream."""
    source = {k: k for k in range(100_000)}
    target = dict(source)
    target[12_345] = -1
    target[87_654] = -1
    descent = Descent(_buckets(source), _buckets(target), fan_out=16, leaf_rows=1000)
    ranges = list(descent.differing(KeyRange(0, 100_000), 100_000))
    assert len(ranges) == 2
    assert ranges[0].lo <= 12_345 < ranges[0].hi  # type: ignore[operator]
    assert ranges[1].lo <= 87_654 < ranges[1].hi  # type: ignore[operator]
    assert all(r.hi - r.lo <= 1000 for r in ranges)  # type: ignore[operator]
    assert descent.rows_proved_equal == 100_000 - sum(r.hi - r.lo for r in ranges)  # type: ignore[operator]


def test_descent_stops_when_changes_are_dense() -> None:
    """When most buckets differ, splitting further costs more than streaming: hand them over."""
    source = {k: k for k in range(10_000)}
    target = {k: k + (k % 7 == 0) for k in range(10_000)}
    descent = Descent(_buckets(source), _buckets(target), fan_out=8, leaf_rows=100)
    ranges = list(descent.differing(KeyRange(0, 10_000), 10_000))
    assert ranges == [KeyRange(0, 10_000)]  # adjacent differing buckets coalesce
    assert descent.ranges_compared == 8


def test_descent_probes_a_large_range_before_splitting_it() -> None:
    """Changes everywhere: a few probed buckets all differ, and the range goes to the merge whole.

    Without the probe, proving the range dense would cost a bucket query over all its rows."""
    source = {k: k for k in range(0, 400_000, 2)}
    target = {k: k + (k % 100 == 0) for k in source}
    descent = Descent(_buckets(source), _buckets(target), fan_out=32, leaf_rows=1000, probe_min_rows=100_000)
    ranges = list(descent.differing(KeyRange(0, 400_000), 200_000))
    assert ranges == [KeyRange(0, 400_000)]
    assert (descent.ranges_compared, descent.ranges_differing) == (4, 4)


def test_descent_probe_that_matches_falls_back_to_the_full_level() -> None:
    """Changes in one corner: a probe matches, so every bucket is compared and the rest skipped."""
    source = {k: k for k in range(200_000)}
    target = dict(source)
    for k in range(150_000, 150_050):
        target[k] = -k
    descent = Descent(_buckets(source), _buckets(target), fan_out=32, leaf_rows=1000, probe_min_rows=100_000)
    ranges = list(descent.differing(KeyRange(0, 200_000), 200_000))
    (found,) = ranges
    assert found.lo is not None
    assert found.hi is not None
    assert found.lo <= 150_000
    assert found.hi > 150_049
    assert found.hi - found.lo <= 1000
    assert descent.rows_proved_equal >= 190_000


def test_descent_finds_rows_missing_on_one_side() -> None:
    """A bucket present on one side only differs from the empty bucket of the other."""
    source = dict.fromkeys(range(5000), 1)
    target = {k: 1 for k in range(5000) if k != 4321}
    ranges = list(
        Descent(_buckets(source), _buckets(target), leaf_rows=100).differing(KeyRange(0, 5000), 5000)
    )
    assert any(r.lo <= 4321 < r.hi for r in ranges)  # type: ignore[operator]


def test_window_from_partition_key_in_a_zone() -> None:
    """Partition keys are wall times in the partition zone; windows are UTC instants."""
    window = Window.from_partition_key("2026-11-30-09:00", "Europe/Berlin")
    assert window.start == datetime(2026, 11, 30, 8, tzinfo=UTC)
    assert window.end == datetime(2026, 11, 30, 9, tzinfo=UTC)
    assert window.partition_key("Europe/Berlin") == "2026-11-30-09:00"


def test_window_rejects_malformed_keys() -> None:
    """A typo in a partition key gets a message showing the expected form."""
    with pytest.raises(ValueError, match="YYYY-MM-DD-HH:MM"):
        Window.from_partition_key("2026-11-30 08:00")


def test_window_bounds_for_naive_columns() -> None:
    """Naive columns are compared with wall-clock bounds in their zone."""
    window = Window.from_partition_key("2026-11-30-08:00")
    lo, hi = window.bounds_in("Asia/Tokyo", naive=True)
    assert (lo, hi) == (datetime(2026, 11, 30, 17), datetime(2026, 11, 30, 18))


def _chunked(pairs: list[tuple[int, int]], sizes: list[int]) -> list[list[tuple[int, int]]]:
    chunks, at = [], 0
    for size in itertools.cycle(sizes):
        if at >= len(pairs):
            return chunks
        chunks.append(pairs[at : at + size])
        at += size
    return chunks


@given(
    st.dictionaries(st.integers(-3000, 3000), st.integers(0, 2), max_size=400),
    st.dictionaries(st.integers(-3000, 3000), st.integers(0, 2), max_size=400),
    st.lists(st.integers(1, 70), min_size=1, max_size=4),
    st.lists(st.integers(1, 70), min_size=1, max_size=4),
)
def test_chunked_merge_agrees_with_the_key_by_key_merge(
    source: dict[int, int], target: dict[int, int], source_sizes: list[int], target_sizes: list[int]
) -> None:
    """Whatever the chunk boundaries of either side, the chunk merge finds what merge_keys finds."""
    src, tgt = sorted(source.items()), sorted(target.items())
    expected = list(merge_keys(src, tgt))
    chunks = list(diff_chunks(_chunked(src, source_sizes), _chunked(tgt, target_sizes)))
    changed = [(k, s, t) for c in chunks for k, s, t in c.changed]
    source_only = [pair for c in chunks for pair in c.source_only]
    target_only = [pair for c in chunks for pair in c.target_only]
    assert changed == [(d.key, d.source_ts, d.target_ts) for d in expected if d.outcome is Outcome.CHANGED]
    assert source_only == [(d.key, d.source_ts) for d in expected if d.outcome is Outcome.SOURCE_ONLY]
    assert target_only == [(d.key, d.target_ts) for d in expected if d.outcome is Outcome.TARGET_ONLY]
    assert sum(c.unchanged for c in chunks) == sum(d.outcome is Outcome.UNCHANGED for d in expected)
    assert sum(c.source_keys for c in chunks) == len(src)
    assert sum(c.target_keys for c in chunks) == len(tgt)


def test_chunked_merge_on_a_large_mostly_equal_window() -> None:
    """10k keys with spread changes, unequal chunk sizes: exact counts, nothing unchanged listed."""
    source = [(k, 1) for k in range(10_000) if k % 500 != 2] + [(k, 1) for k in range(20_000, 20_050)]
    target = [(k, 2 if k % 100 == 1 else 1) for k in range(10_000)]
    chunks = list(diff_chunks(_chunked(source, [997]), _chunked(target, [1024])))
    assert sum(len(c.changed) for c in chunks) == 100
    assert sum(len(c.source_only) for c in chunks) == 50
    assert [k for c in chunks for k, _ in c.target_only] == [k for k in range(10_000) if k % 500 == 2]
    assert sum(c.unchanged for c in chunks) == 10_000 - 100 - 20


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ([[(1, 1), (2, 1)], [(2, 2)]], "duplicate key 2"),
        ([[(1, 1), (3, 1)], [(2, 1)]], "out of order"),
        ([[(1, 1)], [(None, 1)]], "source has a row whose key is NULL"),
    ],
)
def test_chunked_merge_checks_order_across_chunks(source: list[list[tuple[Any, int]]], message: str) -> None:
    """A duplicate or a step back that straddles two chunks is caught like one inside a chunk."""
    with pytest.raises(DataError, match=message):
        list(diff_chunks(source, []))
