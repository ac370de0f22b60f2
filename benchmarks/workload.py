"""The benchmark's workload: one hourly window of ``events`` in a source and an exact copy in a target.

Rows are generated inside the servers (``generate_series`` on PostgreSQL, the ``seq_1_to_N`` sequence
engine on MariaDB) by the same arithmetic on both engines, so a source and a target built apart hold
the same values: no row crosses the network while building, and a 1M-row window takes seconds.
:func:`compare_window` proves that (and every method's result) by reading both sides in key order.

Layout of the ``events`` ids for a window of ``n`` rows, with ``m = n // 10`` rows on each side of it
so that "the window" is a range filter, not the whole table:

* ``1 .. m``: the hour before the window;
* ``m + 1 .. m + n``: the window (08:00 to 09:00 UTC);
* ``m + n + 1 .. m + n + m``: the hour after the window;
* above that: rows inserted into the window by :func:`apply_changes`.

The changes made in the source after the target is built, by window position ``i = id - m``, are
disjoint sets: 1% updated within the hour (``i % 100 == 1``), 0.2% deleted (``i % 500 == 2``), 0.1%
moved into the next hour (``i % 1000 == 3``), and 0.5% inserted (new ids). That is the ``uniform``
spread: changes over every key, the hardest case for a range-hash descent. The ``recent`` spread makes
as many changes in the newest tenth of the window's keys only (``i % 10 == 1``, ``i % 50 == 2``,
``i % 100 == 3`` there): an hour where updates touch recent rows, as orders and tickets are. The
``dense`` spread updates a quarter of the window (``i % 4 == 1``), deletes and moves as ``uniform``
does: changes dense over every key, the case of the dense-change path (``engine/dense.py``).
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

WINDOW_START = datetime(2026, 11, 30, 8, tzinfo=UTC)
WINDOW_END = WINDOW_START + timedelta(hours=1)
HOUR_MICROS = 3_600_000_000
COLUMNS = ("id", "account_id", "kind", "amount", "payload", "updated_at")

PG_DDL = """
CREATE TABLE events (id bigint PRIMARY KEY, account_id int, kind text, amount numeric(12,2),
                     payload jsonb, updated_at timestamptz NOT NULL);
CREATE INDEX events_updated_at ON events (updated_at)
"""
MARIADB_DDL = """
CREATE TABLE events (id BIGINT PRIMARY KEY, account_id INT, kind TEXT, amount DECIMAL(12,2),
                     payload JSON, updated_at DATETIME(6) NOT NULL, KEY events_updated_at (updated_at))
ENGINE=InnoDB DEFAULT CHARSET=utf8mb4
"""

# One block of rows: ids first..last spread evenly over the hour starting at {hour}, in whole
# microseconds (so both engines store exactly the same instants, sub-second digits included).
PG_ROWS = """
INSERT INTO events
SELECT g, mod(g, 1000), 'kind-' || mod(g, 17), mod(g, 100000) / 100.0,
       jsonb_build_object('n', g, 'tags', jsonb_build_array('a', 'b', mod(g, 7)), 'note', repeat('x', 80)),
       timestamptz '{hour}' + ((g - {first}) * {step}) * interval '1 microsecond'
FROM generate_series({first}::bigint, {last}) AS g
"""
MARIADB_ROWS = """
INSERT INTO events
SELECT seq, MOD(seq, 1000), CONCAT('kind-', MOD(seq, 17)), MOD(seq, 100000) / 100,
       JSON_OBJECT('n', seq, 'tags', JSON_ARRAY('a', 'b', MOD(seq, 7)), 'note', REPEAT('x', 80)),
       TIMESTAMP '{hour}' + INTERVAL ((seq - {first}) * {step}) MICROSECOND
FROM seq_{first}_to_{last}
"""

# Changes, by window position i = id - {m}, for positions {lo}..{hi} (see Layout.change_params).
PG_CHANGES = """
UPDATE events SET amount = amount + 1, kind = 'kind-updated', updated_at = updated_at + interval '1 ms'
WHERE id BETWEEN {m} + {lo} AND {m} + {hi} AND mod(id - {m}, {update_mod}) = 1;
DELETE FROM events WHERE id BETWEEN {m} + {lo} AND {m} + {hi} AND mod(id - {m}, {delete_mod}) = 2;
UPDATE events SET account_id = account_id + 1, updated_at = updated_at + interval '1 hour'
WHERE id BETWEEN {m} + {lo} AND {m} + {hi} AND mod(id - {m}, {move_mod}) = 3
"""
MARIADB_CHANGES = """
UPDATE events
SET amount = amount + 1, kind = 'kind-updated', updated_at = updated_at + INTERVAL 1000 MICROSECOND
WHERE id BETWEEN {m} + {lo} AND {m} + {hi} AND MOD(id - {m}, {update_mod}) = 1;
DELETE FROM events WHERE id BETWEEN {m} + {lo} AND {m} + {hi} AND MOD(id - {m}, {delete_mod}) = 2;
UPDATE events SET account_id = account_id + 1, updated_at = updated_at + INTERVAL 1 HOUR
WHERE id BETWEEN {m} + {lo} AND {m} + {hi} AND MOD(id - {m}, {move_mod}) = 3
"""

# Where the changes fall: (the fraction of the window's newest positions they touch, the moduli of
# the updated, deleted and moved positions there). uniform and recent change as many rows.
SPREADS: dict[str, tuple[int, tuple[int, int, int]]] = {
    "uniform": (1, (100, 500, 1000)),
    "recent": (10, (10, 50, 100)),
    "dense": (1, (4, 500, 1000)),
}

# In the target only: an in-window update the target has not seen, with the row count unchanged.
# Used to show what a count comparison misses (the source is left alone; the target looks older).
PG_STALE_TARGET = """
UPDATE events SET amount = amount - 1, updated_at = updated_at - interval '1 ms'
WHERE id BETWEEN {m} + 1 AND {m} + {n} AND mod(id - {m}, 100) = 7
"""


@dataclass(frozen=True)
class Layout:
    """Where the window's rows sit, which of them the changes touch, and how many."""

    rows: int
    spread: str = "uniform"  # a key of SPREADS

    @property
    def margin(self) -> int:
        return self.rows // 10

    @property
    def changed_positions(self) -> tuple[int, int]:
        """The first and last window position a change may touch."""
        share, _ = SPREADS[self.spread]
        return self.rows - self.rows // share + 1, self.rows

    def change_params(self) -> dict[str, int]:
        """The parameters of the CHANGES templates (and of the peers' coverage query)."""
        lo, hi = self.changed_positions
        update_mod, delete_mod, move_mod = SPREADS[self.spread][1]
        return {
            "m": self.margin,
            "lo": lo,
            "hi": hi,
            "update_mod": update_mod,
            "delete_mod": delete_mod,
            "move_mod": move_mod,
        }

    def _changed(self, modulus_key: str, residue: int) -> int:
        lo, hi = self.changed_positions
        modulus = self.change_params()[modulus_key]
        return _count_mod(hi, modulus, residue) - _count_mod(lo - 1, modulus, residue)

    @property
    def inserted(self) -> int:
        return self.rows // 200

    @property
    def updated(self) -> int:
        return self._changed("update_mod", 1)

    @property
    def deleted(self) -> int:
        return self._changed("delete_mod", 2)

    @property
    def moved(self) -> int:
        return self._changed("move_mod", 3)

    @property
    def stale(self) -> int:
        return _count_mod(self.rows, 100, 7)

    @property
    def source_rows_after(self) -> int:
        """The source window's rows once the changes are applied."""
        return self.rows - self.deleted - self.moved + self.inserted

    def blocks(self) -> list[tuple[datetime, int, int]]:
        """``(hour, first id, last id)`` of the base rows: the hour before, the window, the hour after."""
        m, n = self.margin, self.rows
        blocks = [(WINDOW_START, m + 1, m + n)]
        if m:
            blocks = [(WINDOW_START - timedelta(hours=1), 1, m), *blocks, (WINDOW_END, m + n + 1, m + n + m)]
        return blocks

    def insert_block(self) -> tuple[datetime, int, int]:
        first = self.rows + 2 * self.margin + 1
        return WINDOW_START, first, first + self.inserted - 1


def _count_mod(n: int, modulus: int, residue: int) -> int:
    """How many of 1..n are ``residue`` modulo ``modulus``."""
    return 0 if n < residue else (n - residue) // modulus + 1


def _rows_sql(template: str, hour: datetime, first: int, last: int) -> str:
    step = (HOUR_MICROS - 1_000_000) // (last - first + 1)  # the last row stays a second inside the hour
    literal = hour.strftime("%Y-%m-%d %H:%M:%S") + ("+00" if template is PG_ROWS else "")
    return template.format(hour=literal, first=first, last=last, step=step)


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


# -- servers and databases ---------------------------------------------------------------------------
@dataclass
class Servers:
    """Admin URLs of the local servers, and every database this run created (dropped at the end)."""

    pg_admin: str
    mysql_admin: str
    prefix: str = field(default_factory=lambda: f"bench_{uuid.uuid4().hex[:8]}")
    created: list[tuple[str, str]] = field(default_factory=list)  # (kind, name)

    def _admin(self, kind: str) -> sa.Engine:
        url = self.pg_admin if kind == "postgresql" else self.mysql_admin
        return sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)

    def url(self, kind: str, name: str) -> str:
        admin = sa.make_url(self.pg_admin if kind == "postgresql" else self.mysql_admin)
        url = admin.set(database=name)
        if kind == "mysql":
            url = url.update_query_dict({"charset": "utf8mb4"})
        return url.render_as_string(hide_password=False)

    def create(self, kind: str, label: str, *, template: str | None = None) -> str:
        """A new empty database (or, on PostgreSQL, a file copy of ``template``); returns its URL."""
        name = f"{self.prefix}_{label}"
        admin = self._admin(kind)
        try:
            with admin.connect() as conn:
                if kind == "postgresql":
                    # FILE_COPY copies the template's files instead of WAL-logging every page: a
                    # 1M-row target is cloned in seconds, and the clone's first write is not slowed.
                    clone = f' TEMPLATE "{template}" STRATEGY FILE_COPY' if template else ""
                    conn.exec_driver_sql(f'CREATE DATABASE "{name}"{clone}')
                else:
                    assert template is None, "MariaDB databases are not cloned"
                    conn.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        finally:
            admin.dispose()
        self.created.append((kind, name))
        return self.url(kind, name)

    def drop(self, url: str) -> None:
        parsed = sa.make_url(url)
        kind = "postgresql" if parsed.get_backend_name() == "postgresql" else "mysql"
        name = parsed.database
        assert name is not None
        admin = self._admin(kind)
        try:
            with admin.connect() as conn:
                if kind == "postgresql":
                    conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                else:
                    conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        finally:
            admin.dispose()
        with contextlib.suppress(ValueError):
            self.created.remove((kind, name))

    def drop_all(self) -> None:
        for kind, name in list(reversed(self.created)):
            self.drop(self.url(kind, name))

    def versions(self) -> dict[str, str]:
        versions = {}
        for kind in ("postgresql", "mysql"):
            admin = self._admin(kind)
            try:
                with admin.connect() as conn:
                    versions[kind] = str(conn.exec_driver_sql("SELECT version()").scalar_one())
            except sa.exc.OperationalError:
                versions[kind] = "unreachable"
            finally:
                admin.dispose()
        return versions


def engine_for(url: str) -> sa.Engine:
    """An engine that keeps no pooled connection (a template database must have none to be cloned)."""
    parsed = sa.make_url(url)
    args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        args["options"] = "-c timezone=UTC"
    else:
        args["init_command"] = "SET time_zone = '+00:00'"
    return sa.create_engine(parsed, poolclass=sa.pool.NullPool, connect_args=args)


def build(url: str, layout: Layout) -> None:
    """Create ``events`` with the base rows (before the changes) in the database at ``url``."""
    engine = engine_for(url)
    pg = engine.dialect.name == "postgresql"
    template = PG_ROWS if pg else MARIADB_ROWS
    try:
        with engine.begin() as conn:
            for statement in _statements(PG_DDL if pg else MARIADB_DDL):
                conn.exec_driver_sql(statement)
            for hour, first, last in layout.blocks():
                conn.exec_driver_sql(_rows_sql(template, hour, first, last))
        _analyze(engine)
    finally:
        engine.dispose()


def apply_changes(url: str, layout: Layout) -> None:
    """Update, delete, move and insert rows of the window in the source (see the module docstring)."""
    engine = engine_for(url)
    pg = engine.dialect.name == "postgresql"
    try:
        with engine.begin() as conn:
            script = (PG_CHANGES if pg else MARIADB_CHANGES).format(**layout.change_params())
            for statement in _statements(script):
                conn.exec_driver_sql(statement)
            conn.exec_driver_sql(_rows_sql(PG_ROWS if pg else MARIADB_ROWS, *layout.insert_block()))
        _analyze(engine)
    finally:
        engine.dispose()


def make_target_stale(url: str, layout: Layout) -> None:
    """Age 1% of the target window's rows (count unchanged): a change only a row comparison sees."""
    engine = engine_for(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(PG_STALE_TARGET.format(m=layout.margin, n=layout.rows))
    finally:
        engine.dispose()


def _analyze(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        conn.exec_driver_sql(
            "ANALYZE events" if engine.dialect.name == "postgresql" else "ANALYZE TABLE events"
        )
        conn.commit()


# -- comparing a window ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Comparison:
    """The outcome of reading both windows in key order, every column compared."""

    source_rows: int
    target_rows: int
    differing: int  # keys on one side only, or with any column different

    @property
    def equal(self) -> bool:
        return self.differing == 0


# Each column as the database renders it, so that Python compares plain values and parses nothing it
# need not: the key and account as integers, the amount as its decimal text, the instant as UTC text
# to the microsecond, the payload as JSON text (parsed only where the two texts differ).
_SELECT = {
    "postgresql": (
        "SELECT id, account_id, kind, amount::text, payload::text, "
        "to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') "
        "FROM events WHERE updated_at >= :lo AND updated_at < :hi ORDER BY id"
    ),
    "mysql": (  # DATETIME(6) holds UTC (the workload writes it so); no time zone to convert
        "SELECT id, account_id, kind, CAST(amount AS CHAR), CAST(payload AS CHAR), "
        "DATE_FORMAT(updated_at, '%Y-%m-%d %H:%i:%s.%f') "
        "FROM events WHERE updated_at >= :lo AND updated_at < :hi ORDER BY id"
    ),
}


def _window_rows(conn: sa.Connection, chunk: int) -> Iterator[tuple[Any, ...]]:
    """The window's rows in id order, ``chunk`` at a time from a server-side cursor.

    The chunk is passed to ``partitions`` itself: with ``yield_per`` set only on the connection,
    SQLAlchemy's ``partitions()`` fetched one row and then the rest with ``fetchall`` (``FETCH FORWARD
    ALL`` on PostgreSQL), which held a 5M-row window whole in memory.
    """
    lo, hi = WINDOW_START, WINDOW_END
    kind = "postgresql" if conn.dialect.name == "postgresql" else "mysql"
    if kind == "mysql":
        lo, hi = lo.replace(tzinfo=None), hi.replace(tzinfo=None)
    result = conn.execution_options(stream_results=True).execute(sa.text(_SELECT[kind]), {"lo": lo, "hi": hi})
    try:
        for partition in result.partitions(chunk):
            yield from partition
    finally:
        result.close()


def _same_row(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    """Whether two rows of the same id hold the same values (amounts as numbers, payloads as JSON)."""
    if a[1] != b[1] or a[2] != b[2] or a[5] != b[5]:
        return False
    if a[3] != b[3] and (a[3] is None or b[3] is None or Decimal(a[3]) != Decimal(b[3])):
        return False
    # PostgreSQL's jsonb text orders keys its own way; MariaDB keeps them as written.
    return bool(
        a[4] == b[4] or (a[4] is not None and b[4] is not None and json.loads(a[4]) == json.loads(b[4]))
    )


def compare_window(source_url: str, target_url: str, chunk: int = 20_000) -> Comparison:
    """Read both windows in id order through server-side cursors and count rows that differ.

    Independent of sync_pipeline's own hashing, so a wrong engine cannot certify itself. Memory is
    one chunk per side (a 5M-row window is compared in the same memory as a 20k one).
    """
    source, target = engine_for(source_url), engine_for(target_url)
    counts = [0, 0]
    differing = 0
    try:
        with source.connect() as s, target.connect() as t:
            src, tgt = _window_rows(s, chunk), _window_rows(t, chunk)
            a, b = next(src, None), next(tgt, None)
            while a is not None or b is not None:
                if b is None or (a is not None and a[0] < b[0]):
                    counts[0] += 1
                    differing += 1
                    a = next(src, None)
                elif a is None or b[0] < a[0]:
                    counts[1] += 1
                    differing += 1
                    b = next(tgt, None)
                else:
                    counts[0] += 1
                    counts[1] += 1
                    differing += not _same_row(a, b)
                    a, b = next(src, None), next(tgt, None)
    finally:
        source.dispose()
        target.dispose()
    return Comparison(counts[0], counts[1], differing)
