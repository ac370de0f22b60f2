"""A webhook receiver on loopback for the alerting tests: records every POST and answers 200.

The sensors post alerts to it over real HTTP, from the test process (sensor ticks evaluated in
process) or from ``dagster dev``'s daemon and code server (the end-to-end test). ``wait_for`` polls
what arrived against a deadline, so a test never sleeps to synchronise.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

T = TypeVar("T")

# Fake tokens, in the path and in the query as Slack and WeCom carry theirs; the tests look for leaks.
PATH_TOKEN = "tok-SECRET-1"  # noqa: S105 - not a credential
QUERY_TOKEN = "tok-SECRET-2"  # noqa: S105 - not a credential
SECRETS = (PATH_TOKEN, QUERY_TOKEN)
HOOK_PATH = f"/hook/{PATH_TOKEN}?key={QUERY_TOKEN}"


@dataclass(frozen=True)
class Delivery:
    """One POST as received: the request path (tokens included) and the JSON body."""

    path: str
    body: Any


@dataclass
class Receiver:
    """What a running receiver has been sent, safe to read from the test while it serves."""

    port: int = 0
    _deliveries: list[Delivery] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = HOOK_PATH) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def record(self, delivery: Delivery) -> None:
        with self._lock:
            self._deliveries.append(delivery)

    @property
    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._deliveries)

    def alerts(self, kind: str | None = None) -> list[dict[str, Any]]:
        """The JSON alert bodies received so far, optionally only those of one ``kind``."""
        return [d.body for d in self.deliveries if kind is None or d.body.get("kind") == kind]

    def wait_for(self, what: str, probe: Callable[[], T | None], timeout: float = 30.0) -> T:
        """Poll ``probe`` until it returns a value; fail with what arrived when the deadline passes."""
        deadline = time.monotonic() + timeout
        while True:
            value = probe()
            if value is not None:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout:.0f}s waiting for {what}; got {self.alerts()}"
                )
            time.sleep(0.2)


@contextmanager
def serve() -> Iterator[Receiver]:
    """A receiver listening on 127.0.0.1 on a free port until the block ends."""
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw)
            except ValueError:
                body = {"unparsed": raw.decode("utf-8", "replace")}
            receiver.record(Delivery(self.path, body))
            answer = b'{"errcode":0,"errmsg":"ok"}'  # also what a WeCom robot answers
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the request line holds the tokens; keep it out of the test output

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
