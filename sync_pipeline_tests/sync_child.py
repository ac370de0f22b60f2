"""Child process for the kill tests: one sync that reports each moment of its work, and can stop at one.

Run as ``python -m sync_pipeline_tests.sync_child SOURCE_URL TARGET_URL TABLE HOUR CHUNK [PAUSE]``.
Every moment below is printed on its own line of stdout as ``<event> <n>`` (``n`` counts that event)
and flushed, so the parent can SIGKILL the process when it sees the moment it wants:

``scan``       the first key of a key stream arrived (the key scan is under way)
``dense``      the rows of a densely changed key range are about to stream into their stage
``stage``      a chunk of rows is about to be staged (``n - 1`` chunks are already in the stage)
``copy``       a binary COPY into the stage (or, by the bulk path, into the target) has sent 1000 of
               its rows (PostgreSQL targets)
``chunk``      ``on_progress``: a chunk was looked up, fetched and staged
``apply``      everything is staged; the set-based upsert and delete are about to run
``delete``     the upsert ran; the delete statement is about to run
``commit``     the window's transaction is about to send COMMIT
``committed``  the first statement after that COMMIT (PostgreSQL/MySQL: releasing the lock)

With ``PAUSE`` = ``event:n`` the child prints ``paused <event> <n>`` at that moment and then blocks
for ever, holding whatever it holds there (an open transaction, a lock, a half-sent COPY), so the
parent kills it at exactly that point. At the end it prints ``done`` and the stats as JSON.

The hooks wrap the engine's own methods in this process only; the sync itself runs unchanged.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from datetime import datetime
from typing import Any

import psycopg
import sqlalchemy as sa

from sync_pipeline.engine.db.side import TableSide
from sync_pipeline.engine.diff.stats import SyncStats
from sync_pipeline.engine.diff.window import Window
from sync_pipeline.engine.sync import sync_partition
from sync_pipeline.engine.writer import PartitionWriter
from sync_pipeline_tests.helpers import table_config

_seen: Counter[str] = Counter()
_lock = threading.Lock()
_pause: tuple[str, int] | None = None
_state = {"applying": False, "committed": False}


def event(name: str) -> None:
    """Report a moment; block for ever if it is the one to pause at."""
    with _lock:
        _seen[name] += 1
        n = _seen[name]
        paused = _pause == (name, n)
        print(f"{'paused ' if paused else ''}{name} {n}", flush=True)
    if paused:
        threading.Event().wait()  # until SIGKILL


def _hook_key_stream() -> None:
    original = TableSide.key_stream

    def key_stream(self: TableSide, *args: Any, **kwargs: Any) -> Generator[Any, None, None]:
        stream = original(self, *args, **kwargs)
        try:
            first = next(stream)
        except StopIteration:
            return
        event("scan")
        yield first
        yield from stream

    TableSide.key_stream = key_stream  # type: ignore[method-assign,assignment]


def _hook_dense() -> None:
    original = PartitionWriter.dense_stage

    def dense_stage(self: PartitionWriter) -> sa.Table:
        event("dense")
        return original(self)

    PartitionWriter.dense_stage = dense_stage  # type: ignore[method-assign]


def _hook_writer() -> None:
    stage_rows, apply = PartitionWriter.stage_rows, PartitionWriter.apply

    def staged(self: PartitionWriter, rows: list[tuple[Any, ...]]) -> None:
        event("stage")
        stage_rows(self, rows)

    def applied(self: PartitionWriter) -> tuple[int, int]:
        event("apply")
        _state["applying"] = True
        return apply(self)

    PartitionWriter.stage_rows = staged  # type: ignore[method-assign]
    PartitionWriter.apply = applied  # type: ignore[method-assign]


def _hook_copy() -> None:
    """Report (and maybe pause) after the 1000th row of each COPY, while the COPY is open."""
    original = psycopg.Copy.write_row
    written = [0]

    def write_row(self: psycopg.Copy, row: Any) -> None:
        written[0] += 1
        if written[0] == 1000:  # rows are sent in ~32 KiB packets: the server has the first ones
            event("copy")
        original(self, row)

    def write(self: psycopg.Copy, buffer: Any) -> None:
        # The bulk path pipes a PostgreSQL source's binary COPY into the target's in blocks of about
        # 64 KiB (about a thousand rows of the tests' tables): the server has the first block.
        written[0] += 1
        if written[0] == 2:
            event("copy")
        original_write(self, buffer)

    def reset(cursor: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        written[0] = 0
        return copy(cursor, *args, **kwargs)

    copy = psycopg.Cursor.copy
    original_write = psycopg.Copy.write
    psycopg.Copy.write_row = write_row  # type: ignore[method-assign]
    psycopg.Copy.write = write  # type: ignore[method-assign]
    psycopg.Cursor.copy = reset  # type: ignore[assignment,method-assign]


def _hook_transactions(target_url: str) -> None:
    target_db = sa.make_url(target_url).database

    def is_target(conn: sa.Connection) -> bool:
        return conn.engine.url.database == target_db

    def before_execute(conn: sa.Connection, _cursor: Any, statement: str, *_args: Any) -> None:
        if not is_target(conn):
            return
        if _state["applying"] and statement.lstrip().upper().startswith(("DELETE", "UPDATE")):
            event("delete")
        elif _state["committed"]:
            _state["committed"] = False
            event("committed")

    def before_commit(conn: sa.Connection) -> None:
        if is_target(conn) and _state["applying"]:
            _state["applying"] = False
            event("commit")
            _state["committed"] = True

    sa.event.listen(sa.Engine, "before_cursor_execute", before_execute)
    sa.event.listen(sa.Engine, "commit", before_commit)


def main(argv: list[str]) -> None:
    global _pause
    source_url, target_url, table, hour, chunk_size = argv[:5]
    if len(argv) > 5 and argv[5]:
        name, n = argv[5].split(":")
        _pause = (name, int(n))
    _hook_key_stream()
    _hook_dense()
    _hook_writer()
    _hook_copy()
    _hook_transactions(target_url)
    progress: Callable[[SyncStats], None] = lambda _stats: event("chunk")  # noqa: E731 - one-liner
    stats = sync_partition(
        table_config(table, chunk_size=int(chunk_size)),
        source_url,
        target_url,
        Window.hour_starting(datetime.fromisoformat(hour)),
        on_progress=progress,
    )
    print("done", json.dumps(stats.as_dict()), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
