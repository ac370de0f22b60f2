"""Streams of rows and keys that hold a bounded number of bytes, and reading them ahead.

A batch is bounded by a row count (``chunk_size``) and by a weight (``chunk_bytes``): rows are read
from a server-side (or unbuffered) cursor in fetches whose size follows the widest row of the previous
fetch (:func:`batches_by_bytes`), so 1 MB rows travel a few at a time and narrow rows a whole chunk
at a time, from the same code. The weight is a cheap estimate of the values (:func:`row_bytes`), not
an exact measure of Python's memory; a single row wider than the budget still travels, alone.

The sync reads the source's and the target's keys at the same time: each side's stream runs on its own
thread and hands chunks over a small queue, so both servers and the comparison work at once while no
more than a few chunks are ever held.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from itertools import islice
from typing import Any, Protocol, TypeVar
from uuid import UUID

T = TypeVar("T")


@dataclass(frozen=True)
class _Failed:
    error: BaseException


_DONE = object()

# Values whose size does not grow with their content: a fixed estimate (object plus pointer).
_FIXED = {
    type(None): 8,
    bool: 8,
    int: 32,
    float: 32,
    Decimal: 104,
    datetime: 56,
    date: 40,
    time: 48,
    timedelta: 48,
    UUID: 64,
}
_SIZED = (str, bytes, bytearray, memoryview)
_OBJECT = 56  # what a str, bytes or container costs before its content


_SAMPLE = 32  # rows of a fetch, and items of a parsed JSON container, weighed to size the next fetch


def value_bytes(value: object) -> int:
    """About what a value read from a driver weighs: its length for text and bytes, its items for
    parsed JSON (a sample of them, scaled). Cheap, and meant to compare rows, not to account memory."""
    fixed = _FIXED.get(type(value))
    if fixed is not None:
        return fixed
    if isinstance(value, _SIZED):
        return _OBJECT + len(value)
    if isinstance(value, dict):
        items = list(islice(value.items(), _SAMPLE))
        sampled = sum(value_bytes(k) + value_bytes(v) for k, v in items)
        return _OBJECT + sampled * len(value) // max(1, len(items))
    if isinstance(value, list | tuple):
        step = max(1, len(value) // _SAMPLE)
        sample = value[::step]
        return _OBJECT + sum(map(value_bytes, sample)) * len(value) // max(1, len(sample))
    return 64


def row_bytes(row: Sequence[object]) -> int:
    """About what a row weighs (see :func:`value_bytes`)."""
    return _OBJECT + sum(map(value_bytes, row))


class Fetching(Protocol):
    """A result read a few rows at a time: SQLAlchemy's ``Result`` or a DBAPI cursor."""

    def fetchmany(self, size: int) -> Sequence[Any]: ...


def batches_by_bytes(
    result: Fetching,
    chunk_size: int,
    chunk_bytes: int,
    weigh: Callable[[Any], int] = row_bytes,
) -> Iterator[Sequence[Any]]:
    """The rows of ``result`` in fetches of at most ``chunk_size`` rows and about ``chunk_bytes``.

    The first fetch is one row; each next one is sized by the widest row of the fetch before (of an
    even sample of its rows: weighing costs a few microseconds a row, too much for every narrow row),
    so a batch exceeds the budget only where rows suddenly grow wider. Open ``result`` with
    ``stream_results=True, max_row_buffer=1`` so that neither the driver nor SQLAlchemy reads ahead.
    """
    size = 1
    while True:
        rows = result.fetchmany(size)
        if not rows:
            return
        widest = max(map(weigh, rows[:: max(1, len(rows) // _SAMPLE)]))
        size = max(1, min(chunk_size, chunk_bytes // max(1, widest)))
        yield rows
        del rows  # not held while the next fetch is read


@contextmanager
def read_ahead(
    produce: Callable[[], Generator[T, None, None]], name: str, depth: int = 2
) -> Iterator[Iterator[T]]:
    """Run a stream on a thread of its own, at most ``depth`` items ahead of its reader.

    The stream's generator is created, drained and closed on that thread (its connection is used by
    no other thread meanwhile); its error is raised to the reader. Leaving the block early stops the
    thread at its next item and waits for it, so the stream's cursor is closed when the block ends.
    """
    items: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        end: object = _DONE
        try:
            stream = produce()
            try:
                for item in stream:
                    if not put(item):
                        return
            finally:
                stream.close()
        except BaseException as error:  # noqa: BLE001 - handed to the reader, who raises it
            end = _Failed(error)
        put(end)

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()

    def read() -> Iterator[T]:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item  # type: ignore[misc]

    try:
        yield read()
    finally:
        stop.set()
        thread.join()
