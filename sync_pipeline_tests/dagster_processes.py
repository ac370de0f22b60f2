"""Dagster's own processes in tests: start on a free port, wait until they answer, talk GraphQL, stop.

The end-to-end tests (``dagster dev``, the alerting run, colliding runs, the Celery deployment) drive
real ``dagster`` processes the way an operator or the UI does. What they share is here, so that each
waits, queries and cleans up alike: a wait that fails fast when the process it waits on has died,
GraphQL errors raised as assertion failures, a backfill launched and awaited as the UI does it, and
a stop that takes the whole process group down.
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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

import sync_pipeline

DAGSTER = Path(sys.executable).with_name("dagster")
INSTANCE_YAML = Path(sync_pipeline.__file__).with_name("instance") / "dagster.yaml"

T = TypeVar("T")

BACKFILL_DONE = {"COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}

LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on UnauthorizedError { message }
    ... on PartitionKeysNotFoundError { message }
    ... on InvalidSubsetError { message }
  }
}
"""

BACKFILL_STATUS = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status runs { runId status tags { key value } } }
    ... on PythonError { message }
  }
}
"""


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


def launch_backfill(url: str, tables: Sequence[str], partition_keys: Sequence[str]) -> str:
    """Backfill ``sync/<table>`` of each table for each partition, as the UI's Materialize… dialog
    launches it through the webserver at ``url``; returns the backfill's id.
    """
    launched = graphql(
        url,
        LAUNCH_BACKFILL,
        params={
            "assetSelection": [{"path": ["sync", table]} for table in tables],
            "partitionNames": list(partition_keys),
        },
    )["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id: str = launched["backfillId"]
    return backfill_id


def wait_for_backfill(
    url: str,
    backfill_id: str,
    partition_keys: Sequence[str],
    timeout: float,
    alive: Callable[[], str | None],
    logs: Callable[[], str],
) -> dict[str, Any]:
    """Wait until the backfill is done, then assert that it succeeded, one successful run a partition.

    ``alive`` is as for :func:`wait_for`; ``logs`` gives what the processes wrote, for a failure's message.
    Returns the backfill as GraphQL reports it (``status`` and ``runs``).
    """

    def finished() -> dict[str, Any] | None:
        backfill: dict[str, Any] = graphql(url, BACKFILL_STATUS, id=backfill_id)["partitionBackfillOrError"]
        assert backfill["__typename"] == "PartitionBackfill", backfill
        return backfill if backfill["status"] in BACKFILL_DONE else None

    backfill = wait_for(f"backfill {backfill_id}", finished, timeout, alive)
    runs = {key: run["status"] for run in backfill["runs"] for key in run_partitions(run, partition_keys)}
    assert backfill["status"] == "COMPLETED_SUCCESS", f"{backfill['status']}: runs {runs}\n{logs()}"
    assert runs == dict.fromkeys(partition_keys, "SUCCESS")
    return backfill


def run_partitions(run: dict[str, Any], partition_keys: Sequence[str]) -> list[str]:
    """The partitions of ``partition_keys`` a run (as GraphQL reports it) syncs: its one partition, or
    those within its range (a ranged backfill run, see ``orchestration.ranged``).
    """
    tags = {tag["key"]: tag["value"] for tag in run["tags"]}
    if "dagster/partition" in tags:
        return [tags["dagster/partition"]]
    first = partition_keys.index(tags["dagster/asset_partition_range_start"])
    last = partition_keys.index(tags["dagster/asset_partition_range_end"])
    return list(partition_keys[first : last + 1])


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
