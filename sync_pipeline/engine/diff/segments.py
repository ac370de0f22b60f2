"""Key ranges and the descent through them (the reladiff idea).

Each side reports a count and a sum of row hashes per key range, computed inside its database. Equal
ranges are done without moving a row; differing ranges are split and compared again while the changes
are sparse, and handed to the key merge once they are small or densely changed (where splitting further
would cost more queries than streaming the keys).

Finding out that a range is densely changed costs a whole level of bucket queries over it, as much
server time as the window's checksum, and buys nothing. So before splitting a large range the descent
probes a few of its buckets spread across it (each a narrow key-range query); if every probe differs,
the range is taken as dense and goes to the key merge without the full level.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

# Hash sums from different engines are compared modulo this (SQLite's aggregate wraps at 2**63).
HASH_MODULUS = 1 << 63

# The widest key range a bucket query may cover: each row's bucket is ``(key - lo) // width``,
# computed by the database in signed 64 bits (unsigned on MySQL), so ``key - lo`` must fit in one.
# Random 64-bit ids span up to 2**64 - 1; such a range is halved in Python, bounds pushed as
# parameters, until each part fits (two or four queries instead of one, only for such tables).
MAX_BUCKET_SPAN = 1 << 62


@dataclass(frozen=True, slots=True)
class KeyRange:
    """Integer keys ``lo <= k < hi``; ``None`` bounds mean the whole window (any key type)."""

    lo: int | None = None
    hi: int | None = None

    @property
    def bounded(self) -> bool:
        return self.lo is not None and self.hi is not None

    @property
    def span(self) -> int:
        assert self.lo is not None
        assert self.hi is not None
        return self.hi - self.lo

    def halves(self) -> list[KeyRange]:
        """Two ranges covering this one, split at its middle (computed in Python, exact at any size)."""
        assert self.lo is not None
        assert self.hi is not None
        middle = self.lo + self.span // 2
        return [KeyRange(self.lo, middle), KeyRange(middle, self.hi)]

    def split(self, parts: int) -> tuple[int, list[KeyRange]]:
        """Width of each bucket and the buckets, numbered from 0, covering this range."""
        assert self.lo is not None
        assert self.hi is not None
        width = max(1, -(-(self.hi - self.lo) // parts))
        buckets = [KeyRange(lo, min(lo + width, self.hi)) for lo in range(self.lo, self.hi, width)]
        return width, buckets


@dataclass(frozen=True, slots=True)
class Checksum:
    count: int
    hash_sum: int

    @classmethod
    def of(cls, count: object, hash_sum: object) -> Checksum:
        return cls(int(count or 0), int(hash_sum or 0) % HASH_MODULUS)  # type: ignore[call-overload]


BucketChecksums = Callable[[KeyRange, int], dict[int, Checksum]]
Both = Callable[
    [Callable[[], dict[int, Checksum]], Callable[[], dict[int, Checksum]]],
    tuple[dict[int, Checksum], dict[int, Checksum]],
]


def one_after_the_other(
    first: Callable[[], dict[int, Checksum]], second: Callable[[], dict[int, Checksum]]
) -> tuple[dict[int, Checksum], dict[int, Checksum]]:
    return first(), second()


@dataclass
class Descent:
    """Walks differing ranges; counts what it compared and what it proved equal."""

    source_buckets: BucketChecksums
    target_buckets: BucketChecksums
    fan_out: int = 32
    leaf_rows: int = 20_000
    dense_fraction: float = 0.5
    # Buckets probed before a full level (0: never probe), and the smallest range worth probing: the
    # probe's cost is about probe_buckets / fan_out of the level it may save.
    probe_buckets: int = 4
    probe_min_rows: int = 200_000
    # Runs the source's and the target's bucket query; the sync runs them at the same time.
    both: Both = one_after_the_other
    ranges_compared: int = 0
    ranges_differing: int = 0
    rows_proved_equal: int = 0

    def differing(self, whole: KeyRange, rows: int) -> Iterator[KeyRange]:
        """Ranges whose keys must be merged, coalesced where adjacent, in key order."""
        pending: KeyRange | None = None
        for found, _ in self._descend(whole, rows):
            if pending is not None and pending.hi == found.lo:
                pending = KeyRange(pending.lo, found.hi)
                continue
            if pending is not None:
                yield pending
            pending = found
        if pending is not None:
            yield pending

    def differing_kinds(self, whole: KeyRange, rows: int) -> Iterator[tuple[KeyRange, bool]]:
        """:meth:`differing`, each range with whether it was handed over for being densely changed
        (rather than small enough); adjacent ranges are coalesced only with ranges of their kind."""
        pending: tuple[KeyRange, bool] | None = None
        for found, dense in self._descend(whole, rows):
            if pending is not None and pending[0].hi == found.lo and pending[1] == dense:
                pending = (KeyRange(pending[0].lo, found.hi), dense)
                continue
            if pending is not None:
                yield pending
            pending = (found, dense)
        if pending is not None:
            yield pending

    def _descend(self, krange: KeyRange, rows: int) -> Iterator[tuple[KeyRange, bool]]:
        if rows <= self.leaf_rows or not krange.bounded:
            yield krange, False
            return
        if krange.span > MAX_BUCKET_SPAN:
            # Too wide for the database's bucket arithmetic: compare the halves (each row is in one).
            for half in krange.halves():
                yield from self._descend(half, rows)
            return
        width, buckets = krange.split(self.fan_out)
        if self._probed_dense(buckets, width, rows):
            yield krange, True
            return
        src, tgt = self.both(
            lambda: self.source_buckets(krange, width), lambda: self.target_buckets(krange, width)
        )
        self.ranges_compared += len(buckets)
        empty = Checksum(0, 0)
        differing = [(i, b) for i, b in enumerate(buckets) if src.get(i, empty) != tgt.get(i, empty)]
        self.ranges_differing += len(differing)
        differing_ids = {i for i, _ in differing}
        self.rows_proved_equal += sum(c.count for i, c in src.items() if i not in differing_ids)
        dense = len(differing) > self.dense_fraction * len(buckets)
        for i, bucket in differing:
            size = max(src.get(i, empty).count, tgt.get(i, empty).count)
            if dense:
                yield bucket, True
            else:
                yield from self._descend(bucket, size)

    def _probed_dense(self, buckets: list[KeyRange], width: int, rows: int) -> bool:
        """Whether every one of a few buckets, spread over the range, differs between the sides.

        Each probe is one bucket's checksum on each side (a query over that bucket's keys alone). A
        probe that matches proves nothing about the others, so the full level runs; probes that all
        differ are what a densely changed range looks like, and the range goes to the merge whole.
        """
        if self.probe_buckets <= 0 or rows < self.probe_min_rows or len(buckets) <= self.probe_buckets:
            return False
        step = len(buckets) / self.probe_buckets
        for i in range(self.probe_buckets):
            probe = buckets[int(i * step + step / 2)]
            src, tgt = self.both(
                partial(self.source_buckets, probe, width), partial(self.target_buckets, probe, width)
            )
            self.ranges_compared += 1
            if src == tgt:
                return False
            self.ranges_differing += 1
        return True
