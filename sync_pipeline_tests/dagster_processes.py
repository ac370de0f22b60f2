"""Dagster's own processes in tests: start on a free port, wait until they answer, talk GraphQL, stop.

The end-to-end tests (``dagster dev``, the alerting run, colliding runs, the Celery deployment) drive
real ``dagster`` processes the way an operator or the UI does. What they share is here, so that each
waits, queries and cleans up alike: a wait that fails fast when the process it waits on has died,
GraphQL errors raised as assertion failures, and a stop that takes the whole process group down.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

import sync_pipeline

DAGSTER = Path(sys.executable).with_name("dagster")
INSTANCE_YAML = Path(sync_pipeline.__file__).with_name("instance") / "dagster.yaml"

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, alive: Callable[[], str | None]) -> T:
    """Poll ``probe`` until it returns a value, failing at the deadline or when ``alive`` reports death."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if (dead := alive()) is not None:
            pytest.fail(f"while waiting for {what}: {dead}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)


def graphql(url: str, query: str, **variables: Any) -> dict[str, Any]:
    """The ``data`` of a GraphQL request to the webserver at ``url``; its errors fail the test."""
    body = json.dumps({"query": query, "variables": variables}).encode()
    # S310: the URL is the local http:// server the test started, never a file: or custom scheme.
    request = urllib.request.Request(  # noqa: S310
        f"{url}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        document = json.load(response)
    assert not document.get("errors"), document["errors"]
    data: dict[str, Any] = document["data"]
    return data


def server_info(url: str) -> dict[str, Any] | None:
    """The webserver's ``/server_info``, or ``None`` while it does not answer yet."""
    try:
        with urllib.request.urlopen(f"{url}/server_info", timeout=5) as response:  # noqa: S310
            info: dict[str, Any] = json.load(response)
            return info
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def location_loaded(url: str) -> bool | None:
    """``True`` once the workspace's one code location has loaded; a load error fails the test."""
    data = graphql(
        url,
        "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus"
        " locationOrLoadError { __typename ... on PythonError { message } } } } } }",
    )
    [entry] = data["workspaceOrError"]["locationEntries"]
    error = entry["locationOrLoadError"]
    if error and error["__typename"] == "PythonError":
        pytest.fail(f"the code location failed to load: {error['message']}")
    return True if entry["loadStatus"] == "LOADED" and error else None


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """Interrupt the whole process group as Ctrl-C would; kill what is left after a grace period.

    ``process`` must lead its group (started with ``start_new_session``): ``dagster dev`` and the
    daemon start children that a signal to the leader alone would leave behind.
    """
    group = process.pid
    for sig, grace in ((signal.SIGINT, 20.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; its children may not be, so make sure of the group too.
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
