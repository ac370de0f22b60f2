"""SPEC 4.4 and 4.6 under faults: a sync killed at any moment, and a sync that cannot get its lock.

A change set is synced by a child process (``sync_child.py``) that reports each moment of its work
on stdout; the test SIGKILLs it at those moments. Each of the two ways changed rows travel is killed
at its own moments:

* dense (about 200 thousand changes to a 200 thousand row window: 178k updates, 20k inserts, 2k
  deletes): the rows stream by range into a stage (``engine/dense.py``); killed as the stage is
  created and in the middle of the COPY into it;
* sparse (4% of a 50 thousand row window updated, 0.2% deleted, 1,000 rows inserted): keys are
  merged, the changed rows fetched by key and staged chunk by chunk; killed between two staged
  chunks and in the middle of a chunk's COPY.

Both are then killed before the upsert, between the upsert and the delete, just before COMMIT, just
after it, and at delays after the apply began (inside the upsert statement and around the commit).

After each kill the target's table is compared, whole, with two digests taken beforehand: the
target as it was before the run and the source (what the run would make of it). It must equal one
of them exactly. The killed session must also leave nothing behind once the server has noticed:
no backend or connection, no advisory/``GET_LOCK`` lock, no stage table, no SQLite write lock.
Finally a sync in this process converges and reports exactly the changes still pending.
"""

from __future__ import annotations

import hashlib
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest
import sqlalchemy as sa

from sync_pipeline.engine.db.dialects import adapter_for
from sync_pipeline.engine.db.dialects.mysql import get_lock_name as mysql_lock_name
from sync_pipeline.engine.sync import window_lock_name
from sync_pipeline.errors import LockTimeout, TransientError
from sync_pipeline_tests.conftest import MakeDbUrl
from sync_pipeline_tests.helpers import (
    CHANGE_COUNTS,
    NOTHING_CHANGED,
    Pair,
    Side,
    W,
    counts,
    engine_for,
    fingerprint,
    items_table,
    make_pair,
    table_config,
)

REPO = Path(__file__).resolve().parent.parent
BASE_ROWS = 200_000  # ids 1..BASE_ROWS start in W
NEW_ROWS = 20_000  # inserted by each change set
OUTSIDE = range(1_000_001, 1_001_001)  # never changed: half in the hour before W, half in the hour after
CHUNK = 10_000
LOCK_NAME = window_lock_name(None, "items", W)  # on PostgreSQL, whose advisory locks are per database


def mysql_items_lock(side: Side) -> str:
    """The GET_LOCK name a sync of ``items`` for W takes on a MariaDB target: server-wide, so the
    name carries the target's database."""
    return mysql_lock_name(window_lock_name(sa.make_url(side.url).database, "items", W))


CLEANUP_SECONDS = 90  # a backend killed mid-statement finishes the statement before it notices


def indexed_items_table() -> sa.Table:
    """The sync tests' ``items`` table, indexed on ``updated_at`` as a 200k-row table would be."""
    return items_table(sa.Index("ix_items_updated_at", "updated_at"))


# -- generating rows inside each database ---------------------------------------------------------
# Version v of row `id`: updated_at = W.start + (300 v + id % 300) s + (7919 id % 10^6) µs, always in
# W for v <= 11 and increasing with v; name "item <id> v<v>"; qty 10 id + v. Rows are generated and
# updated by SQL in the server: loading 200k rows through Python would dominate the test's time.
def _mod(kind: str, a: str, b: int) -> str:
    # MOD(): a bare % would be read as a parameter placeholder by psycopg and PyMySQL.
    return f"({a} % {b})" if kind == "sqlite" else f"MOD({a}, {b})"


def _row_sql(kind: str, var: str, version: int, offset_seconds: int = 0) -> tuple[str, str, str]:
    seconds = f"({offset_seconds} + {300 * version} + {_mod(kind, var, 300)})"
    micros = _mod(kind, f"{var} * 7919", 1_000_000)
    start = W.start.strftime("%Y-%m-%d %H:%M:%S")
    if kind == "postgresql":
        ts = (
            f"TIMESTAMPTZ '{start}+00' + {seconds} * INTERVAL '1 second'"
            f" + {_mod(kind, f'{var}::bigint * 7919', 1_000_000)} * INTERVAL '1 microsecond'"
        )
        return ts, f"'item ' || {var} || ' v{version}'", f"{var} * 10 + {version}"
    if kind == "mysql":
        ts = f"TIMESTAMP '{start}' + INTERVAL {seconds} SECOND + INTERVAL {micros} MICROSECOND"
        return ts, f"CONCAT('item ', {var}, ' v{version}')", f"{var} * 10 + {version}"
    ts = (
        f"strftime('%Y-%m-%d %H:%M:%S', '{start}', {seconds} || ' seconds')"
        f" || '.' || printf('%06d', {micros})"
    )
    return ts, f"'item ' || {var} || ' v{version}'", f"{var} * 10 + {version}"


def generate(side: Side, lo: int, hi: int, version: int, offset_seconds: int = 0) -> int:
    """Insert rows ``lo..hi`` at ``version``; returns how many."""
    ts, name, qty = _row_sql(side.kind, "g", version, offset_seconds)
    select = f"SELECT g, {ts}, {name}, {qty}"
    if side.kind == "postgresql":
        sql = f"INSERT INTO items (id, updated_at, name, qty) {select} FROM generate_series({lo}, {hi}) AS g"
    elif side.kind == "mysql":
        series = f"(SELECT CAST(seq AS SIGNED) AS g FROM seq_{lo}_to_{hi}) AS s"  # MariaDB's SEQUENCE engine
        sql = f"INSERT INTO items (id, updated_at, name, qty) {select} FROM {series}"
    else:
        sql = (
            f"WITH RECURSIVE s(g) AS (SELECT {lo} UNION ALL SELECT g + 1 FROM s WHERE g < {hi}) "
            f"INSERT INTO items (id, updated_at, name, qty) {select} FROM s"
        )
    with side.engine.begin() as conn:
        return int(conn.exec_driver_sql(sql).rowcount)


def seed(side: Side, rows: int = BASE_ROWS) -> None:
    """The base state, identical in source and target: the window (ids ``1..rows``) at version 0,
    and rows outside it."""
    indexed_items_table().create(side.engine)
    generate(side, 1, rows, 0)
    generate(side, OUTSIDE.start, OUTSIDE.start + 499, 0, offset_seconds=-3600)
    generate(side, OUTSIDE.start + 500, OUTSIDE.stop - 1, 0, offset_seconds=3600)


# Each row as one line of text, computed in its database, alike on every engine: the id, updated_at as
# integer microseconds since the epoch (UTC), the name and qty. One text column per row keeps reading
# 220k rows quick, even through PyMySQL.
_CANONICAL = {
    "postgresql": "concat_ws('|', id, coalesce(((extract(epoch FROM updated_at) * 1000000)::bigint)::text,"
    " '-'), name, qty)",
    "mysql": "CONCAT_WS('|', id, COALESCE(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', updated_at),"
    " '-'), name, qty)",
    # SQLAlchemy stores a SQLite timestamp as 'YYYY-MM-DD HH:MM:SS.ffffff' (here a UTC wall time).
    "sqlite": "id || '|' || coalesce(CAST(strftime('%s', substr(updated_at, 1, 19)) AS INTEGER) * 1000000"
    " + CAST(substr(updated_at, 21, 6) AS INTEGER), '-') || '|' || name || '|' || qty",
}


def digest(side: Side) -> str:
    """The whole table, every row and column, as one hash: equal digests, equal tables."""
    sha = hashlib.sha256()
    with side.engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=20_000).exec_driver_sql(
            f"SELECT {_CANONICAL[side.kind]} FROM items ORDER BY id"
        )
        for partition in result.partitions():
            for (line,) in partition:
                sha.update(line.encode() + b"\n")
    return sha.hexdigest()


@dataclass
class ChangeSet:
    """Changes made to the source that the target has not received yet, and the two legal outcomes."""

    inserted: int
    updated: int
    deleted: int
    before: str  # digest of the target before any run of this change set
    after: str  # digest of the source: what a completed run makes of the target

    @property
    def counts(self) -> dict[str, int]:
        return {"inserted": self.inserted, "updated": self.updated, "deleted": self.deleted}


@dataclass(frozen=True)
class Workload:
    """The window a kill test syncs and the change sets it makes, shaped for one way rows travel."""

    rows: int  # ids 1..rows start in W
    new_rows: int  # inserted by each change set, after the window's last key
    chunk: int  # the sync's chunk_size
    dense: bool  # 9 rows in 10 updated (the dense-change path), or 1 in 25 (the key merge)

    def updated_where(self, kind: str) -> str:
        return f"{_mod(kind, 'id', 10)} <> 0" if self.dense else f"{_mod(kind, 'id', 25)} = 0"

    @property
    def delete_one_in(self) -> int:
        return 100 if self.dense else 500


# 4% updated stays under the dense-change path's threshold (MIN_CHANGED_SHARE in engine/dense.py, 8%):
# the probes find the ranges thinly changed and the keys are merged. Chunks of 2,000 keys make its
# 3,100 changes three staged chunks, each COPYed in a batch or two (the first batch is small: its rows'
# width sizes the next).
DENSE = Workload(rows=BASE_ROWS, new_rows=NEW_ROWS, chunk=CHUNK, dense=True)
SPARSE = Workload(rows=50_000, new_rows=1_000, chunk=2_000, dense=False)


def change_source(source: Side, k: int, workload: Workload = DENSE) -> tuple[int, int, int]:
    """Change set ``k``: delete 1 row in 100 (sparse: 500), update 9 in 10 (sparse: 1 in 25) to
    version ``k``, insert ``workload.new_rows`` new rows."""
    ts, name, qty = _row_sql(source.kind, "id", k)
    with source.engine.begin() as conn:
        kind = source.kind
        deleted = conn.exec_driver_sql(
            f"DELETE FROM items WHERE id < {OUTSIDE.start}"
            f" AND {_mod(kind, 'id', workload.delete_one_in)} = {k}"
        ).rowcount
        updated = conn.exec_driver_sql(
            f"UPDATE items SET updated_at = {ts}, name = {name}, qty = {qty}"
            f" WHERE id < {OUTSIDE.start} AND {workload.updated_where(kind)}"
        ).rowcount
    start = workload.rows + (k - 1) * workload.new_rows + 1
    inserted = generate(source, start, start + workload.new_rows - 1, k)
    return inserted, updated, deleted


# -- the child process ----------------------------------------------------------------------------
class Child:
    """A sync in a child process whose reported moments arrive on a queue, with their arrival time."""

    def __init__(self, pair: Pair, pause: str, log: IO[str], chunk: int = CHUNK) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sync_pipeline_tests.sync_child",
                pair.source.url,
                pair.target.url,
                "items",
                W.start.isoformat(),
                str(chunk),
                pause,
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        self.lines: queue.Queue[tuple[float, str | None]] = queue.Queue()
        self.seen: dict[str, float] = {}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put((time.monotonic(), line.strip()))
        self.lines.put((time.monotonic(), None))

    def wait_for(self, wanted: str, timeout: float = 120) -> float:
        """Block until the child prints ``wanted`` (e.g. ``paused apply 1``); the time it arrived."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                at, line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"the child did not report {wanted!r} within {timeout}s") from None
            if line is None:
                raise AssertionError(f"the child ended (exit {self.proc.wait()}) before {wanted!r}")
            self.seen[line] = at
            if line == wanted:
                return at

    def finished_within(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for the child to end by itself."""
        try:
            self.proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return False
        return True

    def kill(self) -> None:
        self.proc.kill()  # SIGKILL: no cleanup of any kind runs in the child
        self.proc.wait(timeout=30)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


# -- what a dead session must not leave behind ----------------------------------------------------
def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        last = condition()
        if last is True:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} still not true after {timeout}s: {last}")
        time.sleep(0.1)  # polling interval of a condition with a deadline


def _server_leftovers(side: Side) -> Any:
    """True when no session of the killed sync is left on ``side``; else what is left."""
    with side.engine.connect() as conn:
        if side.kind == "postgresql":
            left = conn.execute(
                sa.text(
                    "SELECT"
                    " (SELECT count(*) FROM pg_stat_activity"
                    "   WHERE datname = current_database() AND application_name = 'sync_pipeline'),"
                    " (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                    "   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())),"
                    " (SELECT count(*) FROM pg_class WHERE starts_with(relname, :stage))"
                ),
                {"stage": "sync_pipeline_stage"},
            ).one()
            return True if tuple(left) == (0, 0, 0) else {"backends, advisory locks, stage tables": left}
        if side.kind == "mysql":
            left = conn.execute(
                sa.text(
                    "SELECT (SELECT COUNT(*) FROM information_schema.PROCESSLIST"
                    "   WHERE DB = DATABASE() AND ID <> CONNECTION_ID()), IS_USED_LOCK(:name)"
                ),
                {"name": mysql_items_lock(side)},
            ).one()
            return True if tuple(left) == (0, None) else {"sessions, lock holder": left}
    return True


def _sqlite_unlocked(side: Side) -> Any:
    """True when the file's write lock is free and no stage table or hot journal is left.

    (Stage tables are TEMP tables, in the connection's own temporary database: they die with it.)
    """
    import sqlite3

    path = side.sqlite_path()
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")  # raises "database is locked" while any writer holds it
        conn.execute("ROLLBACK")
        stages = conn.execute("SELECT name FROM sqlite_master WHERE name LIKE 'sync_pipeline%'").fetchall()
    except sqlite3.OperationalError as error:
        return str(error)
    finally:
        conn.close()
    journal = Path(f"{path}-journal")
    return True if not stages and not journal.exists() else {"stage tables": stages, "journal": journal}


def assert_nothing_left(pair: Pair) -> None:
    for side in (pair.source, pair.target):
        if side.kind == "sqlite":
            wait_until(lambda side=side: _sqlite_unlocked(side), CLEANUP_SECONDS, f"{side.kind} unlocked")
        else:
            wait_until(lambda side=side: _server_leftovers(side), CLEANUP_SECONDS, f"{side.kind} released")


# -- the experiment -------------------------------------------------------------------------------
@dataclass
class KillLab:
    pair: Pair
    log: IO[str]
    workload: Workload = DENSE
    change_sets: int = 0
    pending: ChangeSet | None = None
    outcomes: list[tuple[str, str]] = field(default_factory=list)

    def new_change_set(self) -> None:
        self.change_sets += 1
        before = digest(self.pair.target)
        inserted, updated, deleted = change_source(self.pair.source, self.change_sets, self.workload)
        self.pending = ChangeSet(inserted, updated, deleted, before, digest(self.pair.source))

    def outcome(self, moment: str) -> str:
        """After a kill: the target is exactly as before the run or as after it; nothing is left."""
        assert self.pending is not None
        assert_nothing_left(self.pair)
        now = digest(self.pair.target)
        assert now in (self.pending.before, self.pending.after), f"killed at {moment}: target is half-way"
        result = "before" if now == self.pending.before else "after"
        self.outcomes.append((moment, result))
        if result == "after":  # that run committed: give the next kill something to do
            self.new_change_set()
        return result

    def kill_paused(self, moment: str) -> tuple[str, Child]:
        """Run the child until it pauses at ``moment`` (``event:n``), SIGKILL it there."""
        child = Child(self.pair, moment, self.log, self.workload.chunk)
        event, n = moment.split(":")
        child.wait_for(f"paused {event} {n}")
        child.kill()
        return self.outcome(moment), child

    def kill_after(self, event: str, delay: float) -> str:
        """SIGKILL the child ``delay`` seconds after it reports ``event`` (unless it ended by then)."""
        child = Child(self.pair, "", self.log, self.workload.chunk)
        child.wait_for(event)
        if child.finished_within(delay):
            assert child.proc.returncode == 0, "the sync failed by itself: see child.log"
        else:
            child.kill()
        return self.outcome(f"{event}+{delay:.3f}s")


@dataclass(frozen=True)
class Schedule:
    """Where one engine pair's syncs are killed."""

    paused: tuple[str, ...]  # moments before COMMIT: the target must be exactly as before
    apply_fractions: tuple[float, ...]  # kills at these fractions of the apply -> COMMIT time
    at_commit: bool  # one more kill the instant COMMIT is about to be sent


# Every moment on the pairs the brief names; fewer (the slower MariaDB and SQLite writers) on the others.
# The dense change set updates 9 rows in 10 over every key: the descent finds the window densely
# changed, and its rows stream by range into a stage (engine/dense.py) instead of being scanned key
# by key. The sparse one (4%) takes the key merge: killed with two chunks staged, before the third
# ("stage:3"), and inside the first chunk's COPY ("copy:1", 1,000 rows into it), with fewer kills in
# the apply.
FULL = Schedule(("dense:1", "copy:1", "apply:1", "delete:1", "commit:1"), (0.4, 0.8, 1.0), True)
SHORT = Schedule(("dense:1", "apply:1", "commit:1"), (0.6,), False)
MERGED = Schedule(("stage:3", "copy:1", "apply:1", "delete:1", "commit:1"), (0.5,), True)
KILL_PAIRS = [
    pytest.param("postgresql", "postgresql", FULL, DENSE, id="postgresql->postgresql"),
    pytest.param("mysql", "postgresql", FULL, DENSE, id="mysql->postgresql"),
    pytest.param("postgresql", "mysql", SHORT, DENSE, id="postgresql->mysql"),
    pytest.param("postgresql", "sqlite", SHORT, DENSE, id="postgresql->sqlite"),
    pytest.param("postgresql", "postgresql", MERGED, SPARSE, id="sparse-postgresql->postgresql"),
    pytest.param("mysql", "postgresql", MERGED, SPARSE, id="sparse-mysql->postgresql"),
]


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a dozen 220k-row syncs; on a loaded machine well over the default 600 s
@pytest.mark.parametrize(("source_kind", "target_kind", "schedule", "workload"), KILL_PAIRS)
def test_sync_killed_at_any_moment_leaves_target_before_or_after(
    make_db_url: MakeDbUrl,
    tmp_path: Path,
    source_kind: str,
    target_kind: str,
    schedule: Schedule,
    workload: Workload,
) -> None:
    """SPEC 4.4: a sync SIGKILLed at any moment leaves the target exactly as before or as after the
    run, never half-way; the dead session leaves no lock, connection or stage table; a re-run converges.

    Dense: about 200k changes of a 220k-row window (updates, inserts, deletes), so its rows travel
    by range into a stage; killed while paused as the stage is created and in the middle of the COPY
    into it. Sparse: 3k changes of a 51k-row window, so keys are merged and the changed rows staged
    chunk by chunk; killed while paused between two staged chunks and in the middle of a chunk's
    COPY. Both are killed while paused before the upsert, between upsert and delete, before COMMIT
    (each must leave the target as before), and just after COMMIT with the lock still held (must be
    as after); then at delays after the apply began, inside the upsert statement and around the
    COMMIT (either outcome). The final run in this process reports exactly the changes still
    pending, by the path the workload is shaped for; one more reports none.
    """
    pair = make_pair(make_db_url, source_kind, target_kind)
    seed(pair.source, workload.rows)
    seed(pair.target, workload.rows)
    assert digest(pair.source) == digest(pair.target), "the seeded source and target must be equal"
    with (tmp_path / "child.log").open("w") as log:
        lab = KillLab(pair, log, workload)
        lab.new_change_set()

        for moment in schedule.paused:
            if moment.startswith("copy") and target_kind != "postgresql":
                continue  # only PostgreSQL stages with COPY
            assert lab.kill_paused(moment)[0] == "before", lab.outcomes
        result, child = lab.kill_paused("committed:1")
        assert result == "after", lab.outcomes
        # The run that committed took the path the workload is shaped for, as the killed ones did.
        assert ("dense 1" in child.seen) == workload.dense, sorted(child.seen)
        apply_seconds = child.seen["commit 1"] - child.seen["apply 1"]

        for fraction in schedule.apply_fractions:
            lab.kill_after("apply 1", fraction * apply_seconds)
        if schedule.at_commit:
            lab.kill_after("commit 1", 0.0)

    pending = lab.pending
    assert pending is not None
    stats = pair.sync(table_config("items", chunk_size=workload.chunk))
    assert counts(stats, *CHANGE_COUNTS) == pending.counts, lab.outcomes
    assert (stats.rows_dense > 0) == workload.dense, stats.rows_dense  # the path cannot drift silently
    assert digest(pair.target) == pending.after
    again = pair.sync(table_config("items", chunk_size=workload.chunk))
    assert counts(again, *CHANGE_COUNTS) == NOTHING_CHANGED
    print(f"apply took {apply_seconds:.2f}s; kills and outcomes: {lab.outcomes}")  # shown with -s


# -- a lock held by another session ---------------------------------------------------------------
@contextmanager
def holding_the_lock(target: Side) -> Iterator[None]:
    """Hold, from another session, the lock a sync of ``items`` for W takes on ``target``."""
    if target.kind == "sqlite":
        import sqlite3

        conn = sqlite3.connect(target.sqlite_path(), isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")  # SQLite's write lock: what the sync's writer takes
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    if target.kind == "postgresql":
        key = sa.func.hashtextextended(LOCK_NAME, 0)
        take, release = (
            sa.select(sa.func.pg_try_advisory_lock(key)),
            sa.select(sa.func.pg_advisory_unlock(key)),
        )
    else:
        name = mysql_items_lock(target)
        take, release = sa.select(sa.func.get_lock(name, 0)), sa.select(sa.func.release_lock(name))
    with target.engine.connect() as conn:
        assert conn.execute(take).scalar() in (1, True)
        conn.commit()
        try:
            yield
        finally:
            assert conn.execute(release).scalar() in (1, True)


@pytest.mark.parametrize("target_kind", ["postgresql", "mysql", "sqlite"])
def test_sync_waits_for_a_held_lock_then_raises_lock_timeout(
    make_db_url: MakeDbUrl, target_kind: str
) -> None:
    """SPEC 4.6: while another session holds the lock of the table's window (advisory lock,
    ``GET_LOCK``, SQLite's write lock), a sync waits ``lock_timeout_seconds`` and then raises
    ``LockTimeout``, a ``TransientError`` (so it is retried), having written nothing; once the lock
    is released the next run applies every change.
    """
    pair = make_pair(make_db_url, "postgresql", target_kind)
    indexed_items_table().create(pair.source.engine)
    generate(pair.source, 1, 2_000, 0)
    config = table_config("items", lock_timeout_seconds=1)
    assert pair.sync(config).inserted == 2_000
    inserted, updated, deleted = change_source(pair.source, 1)
    before = fingerprint(pair.target, "items", ["id"])

    with holding_the_lock(pair.target):
        started = time.monotonic()
        with pytest.raises(LockTimeout, match="1s") as caught:
            pair.sync(config)
        waited = time.monotonic() - started
        assert isinstance(caught.value, TransientError)
        assert 0.9 <= waited < 30, f"waited {waited:.2f}s for a 1s lock timeout"
        assert fingerprint(pair.target, "items", ["id"]) == before

    stats = pair.sync(config)
    assert counts(stats, *CHANGE_COUNTS) == {"inserted": inserted, "updated": updated, "deleted": deleted}


def test_mariadb_lock_of_a_same_named_table_in_another_database_is_not_waited_for(
    make_db_url: MakeDbUrl,
) -> None:
    """MariaDB's GET_LOCK names are global to the server: the lock of ``items`` for W in another
    database (another tenant's table of the same name) must not make this sync wait or time out."""
    pair = make_pair(make_db_url, "postgresql", "mysql")
    other_url = make_db_url("mysql", "other_tenant")
    other = Side("mysql", other_url, engine_for("mysql", other_url))
    indexed_items_table().create(pair.source.engine)
    generate(pair.source, 1, 500, 0)
    config = table_config("items", lock_timeout_seconds=1)
    assert sa.make_url(other.url).database != sa.make_url(pair.target.url).database

    # The other tenant's sync of items for W holds its lock, taken as every sync takes it.
    adapter = adapter_for("mysql")
    with other.engine.connect() as conn:
        name = window_lock_name(adapter.lock_scope(conn), "items", W)
        assert adapter.acquire_lock(conn, name, 0)
        stats = pair.sync(config)
        adapter.release_lock(conn, name)
    assert stats.inserted == 500
    with holding_the_lock(pair.target), pytest.raises(LockTimeout):
        pair.sync(config)


# -- the bulk path: the first sync of an hour, killed inside its COPY -----------------------------
FIRST_SYNC_ROWS = 50_000


@pytest.mark.slow
@pytest.mark.parametrize("landing", ["direct", "staged"])
@pytest.mark.parametrize("source_kind", ["postgresql", "mysql"])
def test_first_sync_killed_inside_the_bulk_copy_leaves_target_before_or_after(
    make_db_url: MakeDbUrl, tmp_path: Path, source_kind: str, landing: str
) -> None:
    """SPEC 4.4 on the bulk path (issue 12): the first sync of an hour streams the window's rows by
    range in one COPY (piped byte for byte from PostgreSQL, row by row from MariaDB), straight into
    the target when their keys are above every key it holds (``direct``), or into a stage when the
    target holds higher keys in another hour (``staged``). SIGKILLed in the middle of that COPY, the
    target is exactly as before and nothing is left behind; killed just after COMMIT, as after; the
    next run converges and a second one writes nothing.
    """
    pair = make_pair(make_db_url, source_kind, "postgresql")
    for side in (pair.source, pair.target):
        indexed_items_table().create(side.engine)
        if landing == "staged":  # the hour before, synced, its keys above the window's
            generate(side, OUTSIDE.start, OUTSIDE.start + 499, 0, offset_seconds=-3600)
    generate(pair.source, 1, FIRST_SYNC_ROWS, 0)
    before = digest(pair.target)
    with (tmp_path / "child.log").open("w") as log:
        lab = KillLab(pair, log)
        lab.pending = ChangeSet(FIRST_SYNC_ROWS, 0, 0, before, digest(pair.source))
        result, child = lab.kill_paused("copy:1")
        assert result == "before", lab.outcomes
        assert "scan 1" not in child.seen, "the first sync of an hour must not scan keys"
        result, child = lab.kill_paused("committed:1")
        assert result == "after", lab.outcomes

    pending = lab.pending
    assert pending is not None
    stats = pair.sync(table_config("items", chunk_size=CHUNK))
    assert counts(stats, *CHANGE_COUNTS) == pending.counts, lab.outcomes
    assert digest(pair.target) == pending.after
    again = pair.sync(table_config("items", chunk_size=CHUNK))
    assert counts(again, *CHANGE_COUNTS) == NOTHING_CHANGED
