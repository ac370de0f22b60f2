"""The benchmark suite measures what it claims to (a smoke test of ``benchmarks.suite --quick``).

Timings are never asserted (SPEC section 8): what is checked is that every method produced a
well-formed result, that the workload is what the report says it is, and that sync_pipeline's target
ends equal to the source while the count-comparing job is shown to miss an in-window update. A
benchmark whose engine run silently did nothing, or whose naive job silently failed, would otherwise
publish fast and wrong numbers.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.dense import main as dense_main
from benchmarks.read_order import main as read_order_main
from benchmarks.suite import QUICK_SIZE, run_suite
from benchmarks.workload import Comparison, Layout, _window_rows, build, compare_window, engine_for
from sync_pipeline_tests.conftest import MYSQL_ADMIN_URL, PG_ADMIN_URL, _admin_engine

HAS_PANDAS = importlib.util.find_spec("pandas") is not None
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def _pairs() -> list[str]:
    """Both pairs; MariaDB's is skipped outside CI when the server is not there (as conftest does)."""
    _admin_engine(PG_ADMIN_URL, "PostgreSQL").dispose()
    try:
        _admin_engine(MYSQL_ADMIN_URL, "MariaDB").dispose()
    except pytest.skip.Exception:
        return ["pg-pg"]
    return ["pg-pg", "mariadb-pg"]


def _check_well_formed(run: dict[str, Any]) -> None:
    assert run["seconds"] > 0, run
    assert run["process_seconds"] >= run["seconds"], run
    assert run["start_rss_kib"] > 0, run
    assert run["peak_rss_kib"] >= run["start_rss_kib"], run
    assert run["rows_read"] >= 0, run
    assert run["rows_written"] >= 0, run


def _applied(detail: dict[str, Any]) -> tuple[int, int, int, int]:
    """What an engine run reports it did: inserted, updated, deleted, moved out."""
    return detail["inserted"], detail["updated"], detail["deleted"], detail["moved_out"]


def _workload_changes(layout: Layout) -> tuple[int, int, int, int]:
    """The same counts as the workload made them (moved rows are updated to their current version)."""
    return layout.inserted, layout.updated + layout.moved, layout.deleted, layout.moved


def _quick_suite(tmp_path: Path, pairs: list[str], **options: Any) -> dict[str, Any]:
    """The suite at its smallest size, on the local servers, quietly, its results in ``tmp_path``."""
    return run_suite(
        sizes=[QUICK_SIZE],
        repeat=1,
        pairs=pairs,
        out=tmp_path,
        pg_admin=PG_ADMIN_URL,
        mysql_admin=MYSQL_ADMIN_URL,
        command="pytest",
        log=lambda message: None,
        **options,
    )


@pytest.mark.slow
def test_quick_suite_measures_correct_runs(tmp_path: Path) -> None:
    """Every method runs and reports; the engine converges; counts miss what the engine catches."""
    pairs = _pairs()
    results = _quick_suite(tmp_path, pairs, charts=HAS_MATPLOTLIB)
    layout = Layout(QUICK_SIZE)
    expected_names = {"limit_copy", "limit_keys", "engine_changed", "engine_unchanged", "engine_counts_equal"}
    if HAS_PANDAS:
        expected_names |= {"naive", "naive_counts_equal"}
    assert [w["baseline_equal"] for w in results["workloads"]] == [True] * len(pairs)

    for pair in pairs:
        runs = {r["name"]: r for r in results["runs"] if r["pair"] == pair}
        assert set(runs) == expected_names, pair
        for run in runs.values():
            _check_well_formed(run)

        # The limit moved the whole window, and read both windows' keys.
        assert runs["limit_copy"]["rows_written"] == layout.source_rows_after
        assert runs["limit_keys"]["rows_read"] == layout.source_rows_after + layout.rows

        # sync_pipeline did exactly the workload's changes, and the target equals the source.
        changed = runs["engine_changed"]
        detail = changed["detail"]
        assert _applied(detail) == _workload_changes(layout)
        assert changed["equal"] is True
        assert changed["source_window_rows"] == changed["target_window_rows"] == layout.source_rows_after

        # The steady state: nothing streamed, nothing written, still equal.
        unchanged = runs["engine_unchanged"]
        assert unchanged["rows_written"] == 0
        assert unchanged["detail"]["keys_scanned"] == 0
        assert unchanged["equal"] is True

        # Stale rows with equal counts: the engine repairs exactly them.
        assert runs["engine_counts_equal"]["rows_written"] == layout.stale
        assert runs["engine_counts_equal"]["equal"] is True

        if HAS_PANDAS:
            naive = runs["naive"]
            assert naive["equal"] is True  # counts differed, so it rewrote the whole window
            assert naive["rows_written"] == layout.rows + layout.source_rows_after
            missed = runs["naive_counts_equal"]
            assert missed["rows_written"] == 0
            assert missed["equal"] is False
            assert missed["differing"] == layout.stale

    saved = json.loads((tmp_path / "results.json").read_text())
    assert len(saved["runs"]) == len(results["runs"])
    table = (tmp_path / "results.md").read_text()
    assert "Ratios and targets" in table
    assert "sync_pipeline: changed window" in table
    if HAS_MATPLOTLIB:
        for chart in ("time.png", "rss.png"):
            assert (tmp_path / chart).read_bytes().startswith(b"\x89PNG")


def test_peers_are_dropped_with_a_reason_when_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the ``peers`` extra the suite skips dlt and Sling, saying why, and runs the rest."""
    from benchmarks import peers
    from benchmarks.suite import available_methods

    monkeypatch.setattr(peers, "missing", lambda method: f"{method} not installed")
    logged: list[str] = []
    assert available_methods(["limit_copy", "dlt", "sling", "engine"], logged.append) == [
        "limit_copy",
        "engine",
    ]
    assert logged == ["dlt not installed: skipping dlt", "sling not installed: skipping sling"]


@pytest.mark.slow
def test_quick_suite_measures_the_peers(tmp_path: Path) -> None:
    """dlt and Sling run from their own seeded state; the comparison and the change counts are recorded.

    The peers are the optional ``peers`` extra, which CI does not install: skipped there.
    """
    reason = "the 'peers' extra (dlt, pyarrow, sling-linux-amd64) is not installed; CI does not install it"
    pytest.importorskip("dlt", reason=reason)
    pytest.importorskip("pyarrow", reason=reason)
    pytest.importorskip("sling_linux_amd64", reason=reason)
    _admin_engine(PG_ADMIN_URL, "PostgreSQL").dispose()
    results = _quick_suite(tmp_path, ["pg-pg"], methods=["dlt", "dlt_pyarrow", "sling"], charts=False)
    layout = Layout(QUICK_SIZE)
    assert [w["baseline_equal"] for w in results["workloads"]] == [True]
    runs = {r["name"]: r for r in results["runs"]}
    peer_names = ("dlt", "dlt_pyarrow", "sling")
    assert set(runs) == {n for p in peer_names for n in (p, f"{p}_initial")}
    for run in runs.values():
        _check_well_formed(run)
        assert run["json_not_objects"] >= 0  # the payload check ran on every peer's target

    for peer in peer_names:
        # The seed: the whole unchanged source loaded into an emptied target, equal to it.
        initial = runs[f"{peer}_initial"]
        assert initial["rows_written"] == layout.rows + 2 * layout.margin, peer
        assert initial["equal"] is True, peer

        # The incremental run started from that state, and was compared with the changed source.
        run = runs[peer]
        assert run["equal"] is not None, peer
        assert run["source_window_rows"] == layout.source_rows_after, peer
        changes = run["changes_applied"]
        assert {k: v["expected"] for k, v in changes.items()} == {
            "updated": layout.updated,
            "inserted": layout.inserted,
            "deleted": layout.deleted,
            "moved": layout.moved,
        }
        missed = sum(v["expected"] - v["applied"] for v in changes.values())
        assert 0 <= missed <= run["differing"], peer  # every missed change is a differing row
        assert changes["deleted"]["applied"] == 0, peer  # an updated_at cursor cannot see a delete
        if peer.startswith("dlt"):
            assert run["detail"]["cursor_before"] == initial["detail"]["cursor_after"] is not None
        else:
            assert '"updated_at" >' in run["detail"]["source_query"]

    table = (tmp_path / "results.md").read_text()
    assert "Peers: changes that reached the target" in table
    assert "Sling: incremental, update key updated_at" in table


@pytest.mark.slow
def test_recent_spread_makes_as_many_changes_and_the_descent_reads_only_their_keys(tmp_path: Path) -> None:
    """The ``recent`` spread makes the same changes in the newest tenth of the window's keys only: the
    engine applies exactly them, and its descent streams the keys of that tenth, not the window's."""
    _admin_engine(PG_ADMIN_URL, "PostgreSQL").dispose()
    uniform, recent = Layout(QUICK_SIZE), Layout(QUICK_SIZE, "recent")
    counts = ("inserted", "updated", "deleted", "moved")
    assert [getattr(recent, c) for c in counts] == [getattr(uniform, c) for c in counts]
    assert recent.changed_positions == (QUICK_SIZE - QUICK_SIZE // 10 + 1, QUICK_SIZE)

    results = _quick_suite(
        tmp_path, ["pg-pg"], methods=["engine"], charts=False, spread="recent", chunk_size=1000
    )
    assert results["config"]["spread"] == "recent"
    changed = next(r for r in results["runs"] if r["name"] == "engine_changed")
    detail = changed["detail"]
    assert _applied(detail) == _workload_changes(recent)
    assert changed["equal"] is True
    # Both windows' keys would be about 2 x QUICK_SIZE; the changed tenth's are a tenth of that,
    # whether its keys were merged or, found densely changed, its source rows streamed by range.
    assert 0 < detail["keys_scanned"] + detail["rows_dense"] < QUICK_SIZE // 2, detail


# Enough rows that every pair's source spends some clock ticks (0.01 s): at 5,000 the minimum of
# each component's CPU could be 0.00 on all of them.
CAPACITY_ROWS = 20_000


@pytest.mark.slow
def test_dense_comparison_measures_both_paths_on_equal_windows(tmp_path: Path) -> None:
    """``benchmarks.dense`` syncs the densely changed window with the dense-change path and without it
    (the key merge), side by side with the COPY: both end equal to the source with the workload's
    counts, only the first streams the window's rows, and ``--explain`` captures the upsert's plan."""
    _admin_engine(PG_ADMIN_URL, "PostgreSQL").dispose()
    layout = Layout(QUICK_SIZE, "dense")
    servers = ["--pg-url", PG_ADMIN_URL, "--mysql-url", MYSQL_ADMIN_URL]
    size = ["--sizes", str(QUICK_SIZE), "--repeat", "1", "--pairs", "pg-pg"]
    dense_main([*size, "--explain", "--out", str(tmp_path), *servers])
    (measured,) = json.loads((tmp_path / "dense.json").read_text())["measured"]
    runs = {run["variant"]: run for run in measured["runs"]}
    assert set(runs) == {"copy", "dense", "merge"}
    expected = {
        "inserted": layout.inserted,
        "updated": layout.updated + layout.moved,
        "deleted": layout.deleted,
        "unchanged": layout.rows - layout.updated - layout.deleted - layout.moved,
    }
    for variant in ("dense", "merge"):
        assert runs[variant]["equal"] is True, variant
        assert runs[variant]["counts"] == expected, variant
    assert runs["dense"]["rows_dense"] > 0
    assert runs["merge"]["rows_dense"] == 0
    assert "dense_upsert" in runs["dense"]["timings"]
    assert "Insert on events" in (tmp_path / "explain.txt").read_text()


@pytest.mark.slow
def test_read_order_compares_a_key_ordered_read_with_the_sources_own(tmp_path: Path) -> None:
    """``benchmarks.read_order`` syncs the new hour once with the source asked for key order and once
    without, every row straight into the target both times; on a window whose keys are unrelated to
    ``updated_at`` only the first writes them in key order, so each run measured the read it names."""
    _admin_engine(PG_ADMIN_URL, "PostgreSQL").dispose()
    servers = ["--pg-url", PG_ADMIN_URL, "--mysql-url", MYSQL_ADMIN_URL]
    rows = 2000
    only = ["--engines", "postgresql", "--cases", "random"]
    read_order_main(["--rows", str(rows), "--repeat", "1", *only, "--out", str(tmp_path), *servers])
    (result,) = json.loads((tmp_path / "read_order.json").read_text())
    (ordered,), (unordered,) = result["runs"]["ordered"], result["runs"]["unordered"]
    assert ordered["key_falls"] == 0
    assert unordered["key_falls"] > rows // 4
    assert min(ordered["wall"], unordered["wall"]) > 0


@pytest.mark.slow
def test_capacity_totals_are_the_components_times_their_counts(tmp_path: Path) -> None:
    """The capacity table (docs/capacity.md) at a small size: every component measured on both
    pairs, the counts per table-hour those of the defaults, and each total the sum it claims."""
    from benchmarks.capacity import COMPONENTS, run_capacity

    pairs = _pairs()
    report = run_capacity(
        sizes=[CAPACITY_ROWS],
        repeat=2,
        pairs=pairs,
        out=tmp_path,
        step_seconds=1.5,
        pg_admin=PG_ADMIN_URL,
        mysql_admin=MYSQL_ADMIN_URL,
        command="pytest",
        log=lambda message: None,
    )
    counts = report["counts"]
    # The defaults: lookback_hours 3, verify on, one drift comparison (at 23 h), so one drift run an
    # hour (the sensor starts none while no hour is due).
    assert counts == {"first_sync": 1, "in_sync": 1, "resync_unchanged": 3, "drift": 1, "steps": 2}
    assert [(r["pair"], r["rows"]) for r in report["results"]] == [(p, CAPACITY_ROWS) for p in pairs]
    parts = ("first_sync", "in_sync", "resync_unchanged", "drift")
    for result in report["results"]:
        wall, cpu, totals = result["wall"], result["source_cpu"], result["totals"]
        assert set(wall) == set(COMPONENTS)
        assert all(len(runs) == 2 and min(runs) > 0 for runs in result["wall_all"].values())
        assert all(seconds >= 0 for seconds in cpu.values())
        # The source's connections were found and their server processes read.
        assert sum(cpu.values()) > 0
        work = sum(wall[p] * counts[p] for p in parts)
        assert totals["step_work_s"] == pytest.approx(work)
        assert totals["step_fixed_s"] == pytest.approx(2 * 1.5)
        assert totals["step_s"] == pytest.approx(work + 2 * 1.5)
        assert totals["step_ratio"] == pytest.approx((work + 2 * 1.5) / wall["copy"])
        source = sum(cpu[p] * counts[p] for p in parts)
        assert totals["source_cpu_s"] == pytest.approx(source)
        assert totals["source_us_per_row"] == pytest.approx(source / CAPACITY_ROWS * 1e6)
        extra = 3 * (wall["resync_changed"] - wall["resync_unchanged"])
        assert totals["step_s_changed"] == pytest.approx(work + 2 * 1.5 + extra)
        if result["pair"] == "pg-pg":
            assert result["verification_rows_differing"] == 0
    saved = json.loads((tmp_path / "capacity.json").read_text())
    assert saved["counts"] == counts
    table = (tmp_path / "capacity.md").read_text()
    for result in report["results"]:
        assert f"| {result['pair']} | {CAPACITY_ROWS:,} | {result['totals']['step_s']:.2f} (" in table


# -- the harness's window comparison -------------------------------------------------------------------
_TARGET_CHANGES = (
    "UPDATE events SET amount = amount + 0.01 WHERE id = {m} + 10",
    "UPDATE events SET payload = jsonb_set(payload, '{{tags,2}}', '99') WHERE id = {m} + 20",
    "UPDATE events SET updated_at = updated_at + interval '1 microsecond' WHERE id = {m} + 30",
    "DELETE FROM events WHERE id = {m} + 40",
    "INSERT INTO events SELECT id + 10000000, account_id, kind, amount, payload, updated_at "
    "FROM events WHERE id = {m} + 50",
)


@pytest.mark.parametrize("source_kind", ["postgresql", "mysql"], ids=["pg-pg", "mariadb-pg"])
def test_compare_window_finds_every_kind_of_difference(make_db_url: Any, source_kind: str) -> None:
    """A changed amount, a changed JSON value, an instant one microsecond later, a missing row and an
    extra row in the target are each counted once, on top of the ones before (across engines, where
    the JSON texts differ in key order and only their values are compared)."""
    layout = Layout(2_000)
    source, target = make_db_url(source_kind, "src"), make_db_url("postgresql", "tgt")
    build(source, layout)
    build(target, layout)
    assert compare_window(source, target, chunk=300) == Comparison(layout.rows, layout.rows, 0)

    engine = engine_for(target)
    try:
        for done, change in enumerate(_TARGET_CHANGES, start=1):
            with engine.begin() as conn:
                conn.exec_driver_sql(change.format(m=layout.margin))
            comparison = compare_window(source, target, chunk=300)
            assert comparison.differing == done, change
            assert comparison.source_rows == layout.rows
    finally:
        engine.dispose()
    assert comparison.target_rows == layout.rows  # one row deleted, one added
    assert not comparison.equal


def test_compare_window_fetches_one_chunk_at_a_time(pg_url: str) -> None:
    """The window is read from a server-side cursor a chunk at a time, never whole: at 5M rows a
    ``FETCH FORWARD ALL`` held 12.5 GB in the benchmark's process."""
    build(pg_url, Layout(1_000))
    engine = engine_for(pg_url)
    try:
        with engine.connect() as streaming, engine.connect() as watcher:
            pid = streaming.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            rows = _window_rows(streaming, 100)
            ids = [next(rows)[0] for _ in range(150)]
            last = watcher.exec_driver_sql(
                "SELECT query FROM pg_stat_activity WHERE pid = %(pid)s", {"pid": pid}
            ).scalar_one()
            rows.close()
    finally:
        engine.dispose()
    assert ids == sorted(ids)
    assert last.startswith("FETCH FORWARD 100 "), last
