"""The measured methods, each run alone in a fresh child process.

A fresh interpreter per measurement is what a Dagster step process is, and it makes the child's peak
RSS (``VmHWM`` of the process itself) the method's own: nothing imported, allocated or retained
by an earlier measurement counts. Each method imports only what it needs, inside the function, so the
baseline it reports (RSS after its imports) is its own too.

    echo '{"source_url": ..., "target_url": ...}' | .venv/bin/python -m benchmarks.methods METHOD

prints one JSON line: the method's own wall time (connections included, interpreter start excluded),
peak and starting RSS in KiB (see :func:`peak_rss_kib`), rows read and rows written, and details.

The methods:

* ``limit_copy``: the floor for moving the window: ``COPY (SELECT ...) TO STDOUT`` from a PostgreSQL
  source piped block by block into ``COPY ... FROM STDIN`` of a temporary stage table (binary, no
  parsing); from MariaDB an unbuffered SELECT whose rows are written into a text COPY.
* ``copy_indexed``: the same stream COPYed into the target's indexed ``events`` table and committed:
  what the first sync of an hour must at least write (:mod:`benchmarks.first_sync`).
* ``limit_keys``: the floor for the key scan: the window's ``(id, updated_at)`` in id order, read from
  both sides at once (PostgreSQL as COPY bytes, MariaDB through an unbuffered cursor).
* ``naive``: the job sync_pipeline replaces (SPEC section 1): compare the window's row counts; if they
  differ, delete the target's window and insert every source row of it, read with ``pandas.read_sql``.
* ``engine``: :func:`sync_pipeline.engine.sync.sync_partition` with the project's default chunk size.
* ``dlt``, ``dlt_pyarrow``, ``sling``: the peers, in :mod:`benchmarks.peers`.
"""

from __future__ import annotations

import json
import resource
import sys
import threading
from collections.abc import Callable
from time import perf_counter
from typing import Any

from benchmarks import peers
from benchmarks.workload import COLUMNS, WINDOW_END, WINDOW_START

Result = dict[str, Any]


def _status_kib(field: str) -> int:
    """A memory figure of this process from ``/proc/self/status`` (Linux), in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_rss_kib() -> int:
    """This process's own peak RSS (``VmHWM``), in KiB.

    Not ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux keeps the high-water mark of the address space
    replaced by ``execve``, so a child started by ``subprocess`` reports at least its parent's RSS at
    the moment of the fork (the suite's, or pytest's); ``RUSAGE_CHILDREN`` in the parent inherits the
    same error. ``VmHWM`` belongs to the address space the child built itself.
    """
    return _status_kib("VmHWM")


def _is_pg(url: str) -> bool:
    return url.startswith("postgresql")


def _pg_conninfo(url: str) -> str:
    """A libpq connection string for a SQLAlchemy URL, with the session in UTC."""
    import sqlalchemy as sa

    parsed = sa.make_url(url)
    parts = {
        "host": parsed.host or "127.0.0.1",
        "port": parsed.port or 5432,
        "user": parsed.username or "postgres",
        "dbname": parsed.database,
        "options": "-c timezone=UTC",
    }
    if parsed.password:
        parts["password"] = parsed.password
    return " ".join(f"{k}='{v}'" for k, v in parts.items())


def _mysql_connect(url: str, *, unbuffered: bool) -> Any:
    import pymysql
    import pymysql.cursors
    import sqlalchemy as sa

    parsed = sa.make_url(url)
    return pymysql.connect(
        host=parsed.host or "127.0.0.1",
        port=parsed.port or 3306,
        user=parsed.username or "root",
        password=parsed.password or "",
        database=parsed.database,
        charset="utf8mb4",
        init_command="SET time_zone = '+00:00'",
        cursorclass=pymysql.cursors.SSCursor if unbuffered else pymysql.cursors.Cursor,
    )


_WINDOW_PG = f"updated_at >= '{WINDOW_START.isoformat()}' AND updated_at < '{WINDOW_END.isoformat()}'"
_WINDOW_MYSQL = "updated_at >= '{lo}' AND updated_at < '{hi}'".format(
    lo=WINDOW_START.replace(tzinfo=None).isoformat(sep=" "),
    hi=WINDOW_END.replace(tzinfo=None).isoformat(sep=" "),
)
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM events WHERE {{window}}"


# -- the limit ---------------------------------------------------------------------------------------
def limit_copy(source_url: str, target_url: str, **_: Any) -> Result:
    """Stream the window once from the source into a stage table of the target."""
    import psycopg

    rows = 0
    with psycopg.connect(_pg_conninfo(target_url)) as target:
        # Like the engine's stage: session-private, no index, not WAL-logged, gone at commit.
        target.execute(
            "CREATE TEMPORARY TABLE stage (id bigint, account_id int, kind text, amount numeric(12,2),"
            " payload jsonb, updated_at timestamptz) ON COMMIT DROP"
        )
        with target.cursor() as cursor:
            _copy_window(source_url, cursor, "COPY stage FROM STDIN")
        rows = target.execute("SELECT count(*) FROM stage").fetchone()[0]  # type: ignore[index]
        target.commit()
    return {"rows_read": rows, "rows_written": rows}


def copy_indexed(source_url: str, target_url: str, **_: Any) -> Result:
    """COPY the window into the target's ``events`` table itself (primary key and ``updated_at`` index),
    committed: what the first load of an hour must write, with no comparison at all."""
    import psycopg

    with psycopg.connect(_pg_conninfo(target_url)) as target:
        with target.cursor() as cursor:
            _copy_window(source_url, cursor, f"COPY events ({', '.join(COLUMNS)}) FROM STDIN")
            rows = cursor.rowcount
        target.commit()
    return {"rows_read": rows, "rows_written": rows}


def _copy_window(source_url: str, cursor: Any, copy_in: str) -> None:
    """The source's window into the target's ``copy_in`` statement: binary COPY to COPY from
    PostgreSQL, rows of an unbuffered cursor from MariaDB."""
    import psycopg

    binary = _is_pg(source_url)
    with cursor.copy(copy_in + (" (FORMAT BINARY)" if binary else "")) as sink:
        if binary:
            with psycopg.connect(_pg_conninfo(source_url)) as source:
                query = f"COPY ({_SELECT.format(window=_WINDOW_PG)}) TO STDOUT (FORMAT BINARY)"
                with source.cursor().copy(query) as stream:
                    for block in stream:
                        sink.write(block)
            return
        source = _mysql_connect(source_url, unbuffered=True)
        try:
            with source.cursor() as reader:
                reader.execute(_SELECT.format(window=_WINDOW_MYSQL))
                while chunk := reader.fetchmany(5000):
                    for row in chunk:
                        sink.write_row(row)
        finally:
            source.close()


def _read_keys(url: str) -> tuple[int, int, float]:
    """(rows, bytes, seconds) of reading the window's ``(id, updated_at)`` in id order."""
    started = perf_counter()
    rows = size = 0
    if _is_pg(url):
        import psycopg

        with psycopg.connect(_pg_conninfo(url)) as conn:
            query = f"COPY (SELECT id, updated_at FROM events WHERE {_WINDOW_PG} ORDER BY id) TO STDOUT"
            with conn.cursor().copy(query) as stream:
                for block in stream:
                    size += len(block)
                    rows += bytes(block).count(b"\n")
    else:
        conn = _mysql_connect(url, unbuffered=True)
        try:
            with conn.cursor() as cursor:
                cursor.execute(f"SELECT id, updated_at FROM events WHERE {_WINDOW_MYSQL} ORDER BY id")
                while chunk := cursor.fetchmany(10_000):
                    rows += len(chunk)
        finally:
            conn.close()
    return rows, size, perf_counter() - started


def limit_keys(source_url: str, target_url: str, **_: Any) -> Result:
    """Read the keys and timestamps of both windows concurrently, as the engine's merge must."""
    results: dict[str, tuple[int, int, float]] = {}

    def read(side: str, url: str) -> None:
        results[side] = _read_keys(url)

    threads = [
        threading.Thread(target=read, args=(s, u))
        for s, u in (("source", source_url), ("target", target_url))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        "rows_read": results["source"][0] + results["target"][0],
        "rows_written": 0,
        "detail": {f"{side}_seconds": round(r[2], 4) for side, r in results.items()},
    }


# -- the naive job -----------------------------------------------------------------------------------
def naive(source_url: str, target_url: str, **_: Any) -> Result:
    """Counts differ: delete the window in the target, re-insert the source's window via pandas.

    As the original job did: the whole window is one DataFrame, and ``to_sql`` appends it. From
    MariaDB the JSON column arrives as text and DATETIME as naive UTC, so they are parsed and
    localised first (the least any working version of that job had to do).
    """
    import pandas as pd
    import sqlalchemy as sa
    from sqlalchemy.dialects.postgresql import JSONB

    from benchmarks.workload import engine_for

    source, target = engine_for(source_url), engine_for(target_url)
    pg_source = _is_pg(source_url)
    window = _WINDOW_PG if pg_source else _WINDOW_MYSQL
    try:
        with source.connect() as conn:
            source_count = conn.exec_driver_sql(f"SELECT count(*) FROM events WHERE {window}").scalar_one()
        with target.connect() as conn:
            target_count = conn.exec_driver_sql(
                f"SELECT count(*) FROM events WHERE {_WINDOW_PG}"
            ).scalar_one()
        detail = {"source_count": source_count, "target_count": target_count}
        if source_count == target_count:
            return {
                "rows_read": 0,
                "rows_written": 0,
                "detail": {**detail, "action": "counts equal: nothing"},
            }
        with source.connect() as conn:
            frame = pd.read_sql(sa.text(_SELECT.format(window=window)), conn)
        if not pg_source:
            frame["payload"] = frame["payload"].map(json.loads)
            frame["updated_at"] = pd.to_datetime(frame["updated_at"]).dt.tz_localize("UTC")
        with target.begin() as conn:
            deleted = conn.exec_driver_sql(f"DELETE FROM events WHERE {_WINDOW_PG}").rowcount
            frame.to_sql(
                "events",
                conn,
                if_exists="append",
                index=False,
                dtype={"payload": JSONB(none_as_null=True), "amount": sa.Numeric(12, 2)},
            )
        detail["frame_bytes"] = int(frame.memory_usage(deep=True).sum())
        return {
            "rows_read": len(frame),
            "rows_written": deleted + len(frame),
            "detail": {**detail, "action": "delete + reinsert", "deleted": deleted, "inserted": len(frame)},
        }
    finally:
        source.dispose()
        target.dispose()


# -- sync_pipeline -----------------------------------------------------------------------------------
def engine(
    source_url: str, target_url: str, chunk_size: int = 10_000, dense: bool = True, **_: Any
) -> Result:
    """One :func:`sync_partition` of the window, as a Dagster step runs it.

    ``dense=False`` turns the dense-change path off (no range is ever estimated changed enough), so
    the same window is measured with the key merge alone: the comparison of :mod:`benchmarks.dense`.
    """
    from sync_pipeline.config import parse_config
    from sync_pipeline.engine import sync
    from sync_pipeline.engine.diff.window import Window
    from sync_pipeline.engine.sync import sync_partition

    if not dense:
        sync.MIN_CHANGED_SHARE = float("inf")  # this child process only: a benchmark's switch

    table = parse_config(
        f"""
connections: {{s: {{url: "{source_url}"}}, t: {{url: "{target_url}"}}}}
tables:
  - {{name: events, source: {{connection: s, table: events}}, target: {{connection: t, table: events}},
     primary_key: [id], updated_at: updated_at, start: "2026-11-01T00:00:00", chunk_size: {chunk_size}}}
"""
    ).tables[0]
    stats = sync_partition(table, source_url, target_url, Window.hour_starting(WINDOW_START))
    keep = [
        *("inserted", "updated", "deleted", "unchanged", "moved_in", "moved_out", "skipped_newer"),
        *("source_rows", "target_rows", "rows_fetched", "keys_scanned"),
        *("rows_streamed", "rows_direct", "ranges_streamed", "rows_dense", "ranges_dense"),
        *("ranges_compared", "ranges_differing"),
    ]
    return {
        "rows_read": stats.rows_fetched,
        "rows_written": stats.changed,
        "detail": {**{k: getattr(stats, k) for k in keep}, "timings": stats.timings},
    }


METHODS: dict[str, Callable[..., Result]] = {
    "limit_copy": limit_copy,
    "copy_indexed": copy_indexed,
    "limit_keys": limit_keys,
    "naive": naive,
    "engine": engine,
    **peers.METHODS,
}


def run(method: str, params: dict[str, Any]) -> Result:
    """Run one method in this process and add its wall time and memory to its result."""
    function = METHODS[method]
    start_rss = _status_kib("VmRSS")
    started = perf_counter()
    result = function(**params)
    seconds = perf_counter() - started
    return {
        "method": method,
        "seconds": round(seconds, 4),
        # A method whose work runs in another process (Sling's binary) reports that process's peak.
        "peak_rss_kib": max(peak_rss_kib(), result.get("peak_rss_kib", 0)),
        "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,  # see peak_rss_kib()
        "start_rss_kib": start_rss,
        "rows_read": result["rows_read"],
        "rows_written": result["rows_written"],
        "detail": result.get("detail", {}),
    }


def main() -> None:
    # Import the method's modules before the baseline is taken: run() measures the work only.
    # Parameters (database URLs, which may hold passwords) come on stdin, out of the process list.
    method = sys.argv[1]
    params = json.loads(sys.argv[2] if len(sys.argv) > 2 else sys.stdin.read())
    _preload(method)
    print(json.dumps(run(method, params)))


def _preload(method: str) -> None:
    import psycopg  # noqa: F401 - every method talks to PostgreSQL
    import sqlalchemy  # noqa: F401

    if method == "naive":
        import pandas  # noqa: F401
    elif method == "engine":
        import sync_pipeline.engine.sync  # noqa: F401
    elif method in peers.METHODS:
        peers.preload(method)
    import pymysql  # noqa: F401 - the MariaDB source's driver


if __name__ == "__main__":
    main()
