"""The decisions of :mod:`sync_pipeline.engine.classify`, on plain values: no database needed.

Each differing key gets one fate (insert, update, move in, move out, delete, or left alone and
counted), decided from what the key merge and the lookups said; these tests pin the rules of SPEC 4.2
and 4.9 and of the whole-row repair (issue 13 defect 9) where they are decided.
"""

from __future__ import annotations

from sync_pipeline.engine.classify import KeyBatch, classify
from sync_pipeline.engine.diff.stats import SyncStats


def test_hourly_sync_never_overwrites_a_newer_target_row() -> None:
    """Comparing ``updated_at``: a new key is inserted, a key the target holds older elsewhere moves
    in, one it holds newer is left alone and counted; a key gone from the source is deleted, one moved
    to a later hour moves out, and one set back to an earlier hour is left alone and counted."""
    batch = KeyBatch(source_only=[(1, 100), (2, 100), (3, 100)], target_only=[(4, 50), (5, 50), (6, 50)])
    stats = SyncStats()
    decision = classify(
        batch,
        in_target={2: 90, 3: 110},
        in_source={5: 70, 6: 30},
        compare="updated_at",
        stats=stats,
    )
    assert decision.to_write == {1: "inserted", 2: "moved_in", 5: "moved_out"}
    assert decision.to_delete == [4]
    assert decision.forced == []
    assert stats.skipped_newer == 2  # keys 3 and 6


def test_whole_row_repair_forces_rows_whose_source_went_back() -> None:
    """Comparing whole rows (the batch carries row hashes, so each side's ``updated_at`` is looked up):
    the source is the truth, so a key the target holds newer is moved in anyway, a changed key is
    overwritten whatever its stamps, and a key set back to an earlier hour is updated, not moved out;
    all three are forced past the never-overwrite-newer guard, and nothing is counted as skipped."""
    hashes = 123_456_789
    batch = KeyBatch(source_only=[(3, hashes)], changed=[7], target_only=[(6, hashes), (8, hashes)])
    stats = SyncStats()
    decision = classify(
        batch,
        in_target={3: 110},
        in_source={6: 30, 8: 90},
        compare="row",
        stats=stats,
        source_at={3: 100},
        target_at={6: 50, 8: 50},
    )
    assert decision.to_write == {3: "moved_in", 7: "updated", 6: "updated", 8: "moved_out"}
    assert sorted(decision.forced) == [3, 6, 7]
    assert stats.skipped_newer == 0


def test_batches_split_under_the_lookup_limit() -> None:
    """A batch is looked up in parts of at most ``size`` keys, every key once, in order."""
    batch = KeyBatch(source_only=[(k, 0) for k in range(5)], changed=[10, 11], target_only=[(20, 0)])
    parts = list(batch.split(3))
    assert [len(p) for p in parts] == [3, 3, 2]
    assert [k for p in parts for k, _ in p.source_only] == list(range(5))
    assert [k for p in parts for k in p.changed] == [10, 11]
    assert [k for p in parts for k, _ in p.target_only] == [20]
