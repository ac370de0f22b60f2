"""Reading a stream on a thread of its own, a few items ahead of its reader.

The sync reads the source's and the target's keys at the same time: each side's stream runs on its own
thread and hands chunks over a small queue, so both servers and the comparison work at once while no
more than a few chunks are ever held.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class _Failed:
    error: BaseException


_DONE = object()


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
