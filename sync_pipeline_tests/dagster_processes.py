"""Dagster's own processes, driven from outside: start on a free port, wait until they answer, talk
GraphQL, launch and follow a backfill, stop; and a whole deployment of a config file (a fresh
``DAGSTER_HOME``, one hour synced through the Dagster CLI as the schedule would, ``dagster dev``).

The end-to-end tests (``dagster dev``, the alerting run, colliding runs, the Celery deployment) and
the benchmarks of the Dagster path (``benchmarks/long_lived.py``, ``benchmarks/backfill.py``) drive
real ``dagster`` processes the way an operator or the UI does. What they share is here, once, so that
each waits, queries and cleans up alike: a wait that fails fast when the process it waits on has died,
GraphQL errors raised, a backfill launched and followed as the UI does it, and a stop that takes the
whole process group down. Nothing here needs pytest: a failure is an exception, which a test reports
as its failure and a benchmark as its error.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from dagster import DagsterInstance, RunsFilter
from dagster._core.storage.dagster_run import DagsterRun

import sync_pipeline
from sync_pipeline.config import CONFIG_ENV_VAR
from sync_pipeline.demo.config import DATA_DIR_ENV
from sync_pipeline_tests.helpers import free_port
from sync_pipeline_tests.webhook_server import Receiver

BIN = Path(sys.executable).parent
DAGSTER = BIN / "dagster"
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
    ... on PartitionBackfill { status }
    ... on PythonError { message }
  }
}
"""

BACKFILL_RUNS = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status runs { runId status tags { key value } } }
    ... on PythonError { message }
  }
}
"""


class ProcessDied(RuntimeError):
    """A process a wait depended on exited; the message says which, with what it wrote last."""


class GraphQLError(RuntimeError):
    """The webserver answered a GraphQL request with errors."""


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, alive: Callable[[], str | None]) -> T:
    """Poll ``probe`` until it returns a value; raise at the deadline or as soon as a process died.

    ``alive`` returns ``None`` while the processes live and a description once one has died (it may
    raise instead): a dead server fails the wait at once rather than at its deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if (dead := alive()) is not None:
            raise ProcessDied(f"while waiting for {what}: {dead}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)


def graphql(url: str, query: str, *, timeout: float = 60, **variables: Any) -> dict[str, Any]:
    """The ``data`` of a GraphQL request to the webserver at ``url``; errors raise :class:`GraphQLError`."""
    body = json.dumps({"query": query, "variables": variables}).encode()
    # S310: the URL is the local http:// server the caller started, never a file: or custom scheme.
    request = urllib.request.Request(  # noqa: S310
        f"{url}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        document = json.load(response)
    if document.get("errors"):
        raise GraphQLError(f"GraphQL errors: {document['errors']}")
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
    """``True`` once the workspace's one code location has loaded; a load error raises.

    A code server started apart may not answer yet when the webserver first asks; then the webserver
    is asked to look again, and the wait goes on.
    """
    data = graphql(
        url,
        "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus"
        " locationOrLoadError { __typename ... on PythonError { message } } } } } }",
    )
    [entry] = data["workspaceOrError"]["locationEntries"]
    error = entry["locationOrLoadError"]
    if error and error["__typename"] == "PythonError":
        if "DagsterUserCodeUnreachableError" in error["message"]:
            graphql(
                url,
                "mutation($name: String!) { reloadRepositoryLocation(repositoryLocationName: $name)"
                " { __typename } }",
                name=entry["name"],
            )
            return None
        raise RuntimeError(f"the code location failed to load: {error['message']}")
    return True if entry["loadStatus"] == "LOADED" and error else None


def grpc_serving(port: int, env: Mapping[str, str], cwd: Path) -> bool | None:
    """``True`` once a code server (``dagster code-server start``) answers on ``port``."""
    check = subprocess.run(
        [str(DAGSTER), "api", "grpc-health-check", "-h", "127.0.0.1", "-p", str(port)],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        check=False,
    )
    return True if check.returncode == 0 else None


def start_logged(
    argv: Sequence[str], env: Mapping[str, str], cwd: Path, log: IO[bytes]
) -> subprocess.Popen[bytes]:
    """Start ``argv`` as the leader of a new process group (see :func:`stop_group`), output to ``log``."""
    return subprocess.Popen(
        list(argv), cwd=cwd, env=dict(env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def launch_backfill(
    url: str, tables: Sequence[str], partition_keys: Sequence[str], *, job: str | None = None
) -> str:
    """Backfill ``sync/<table>`` of each table for each partition through the webserver at ``url``;
    returns the backfill's id.

    By default the assets are selected, with every check on them, as Catalog > Materialize... does;
    with ``job`` the job's partitions are, as Jobs > <job> > Partitions does (its selection only).
    """
    params: dict[str, Any] = {"partitionNames": list(partition_keys)}
    if job is None:
        params["assetSelection"] = [{"path": ["sync", table]} for table in tables]
    else:
        params["selector"] = {
            "partitionSetName": f"{job}_partition_set",
            "repositorySelector": {
                "repositoryName": "__repository__",
                "repositoryLocationName": _location_name(url),
            },
        }
    launched = graphql(url, LAUNCH_BACKFILL, params=params)["launchPartitionBackfill"]
    if launched["__typename"] != "LaunchBackfillSuccess":
        raise GraphQLError(f"backfill not launched: {launched}")
    backfill_id: str = launched["backfillId"]
    return backfill_id


def backfill_status(url: str, backfill_id: str) -> str:
    """The backfill's status (``REQUESTED``, ``COMPLETED_SUCCESS``, ...), as the UI shows it."""
    backfill = graphql(url, BACKFILL_STATUS, id=backfill_id)["partitionBackfillOrError"]
    if backfill["__typename"] != "PartitionBackfill":
        raise GraphQLError(f"backfill status: {backfill}")
    status: str = backfill["status"]
    return status


def cancel_backfill(url: str, backfill_id: str) -> None:
    graphql(
        url,
        "mutation($id: String!) { cancelPartitionBackfill(backfillId: $id) { __typename } }",
        id=backfill_id,
    )


def _location_name(url: str) -> str:
    data = graphql(url, "{ workspaceOrError { ... on Workspace { locationEntries { name } } } }")
    [entry] = data["workspaceOrError"]["locationEntries"]
    name: str = entry["name"]
    return name


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
        backfill: dict[str, Any] = graphql(url, BACKFILL_RUNS, id=backfill_id)["partitionBackfillOrError"]
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


# -- a deployment of a config file ------------------------------------------------------------------


@dataclass(frozen=True)
class Deployment:
    """A running ``dagster dev``: its URL, process group, ``DAGSTER_HOME``, environment and output."""

    url: str
    process: subprocess.Popen[bytes]
    home: Path
    env: dict[str, str]
    log: Path

    def dead(self) -> str | None:
        """``None`` while ``dagster dev`` runs; once it has exited, why, with what it wrote last."""
        code = self.process.poll()
        return None if code is None else f"dagster dev exited with {code}:\n{self.log_tail()}"

    def log_tail(self, lines: int = 60) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        return graphql(self.url, query, **variables)


def deployment_env(home: Path, config: Path, **extra: str) -> dict[str, str]:
    """A fresh ``DAGSTER_HOME`` at ``home`` (the packaged instance file) and the environment that runs
    ``config`` in it: this process's environment without any other home, config or demo folder.
    """
    home.mkdir()
    shutil.copyfile(INSTANCE_YAML, home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if k not in (CONFIG_ENV_VAR, "DAGSTER_HOME", DATA_DIR_ENV)}
    env.update({"DAGSTER_HOME": str(home), CONFIG_ENV_VAR: str(config), **extra})
    return env


def execute_hour(env: Mapping[str, str], cwd: Path, partition_key: str, job: str = "sync_hourly") -> str:
    """Run ``job`` for one hour through the Dagster CLI, as the schedule would; returns its output."""
    done = subprocess.run(
        [
            *(str(DAGSTER), "job", "execute", "-m", "sync_pipeline.definitions", "-j", job),
            *("--tags", json.dumps({"dagster/partition": partition_key})),
        ],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise RuntimeError(f"dagster job execute {job} {partition_key} failed:\n{output[-8000:]}")
    return output


@contextmanager
def dagster_dev(cwd: Path, env: Mapping[str, str], port: int | None = None) -> Iterator[Deployment]:
    """``dagster dev`` on ``sync_pipeline.definitions`` until its code location has loaded; stopped,
    with all its processes, when the block ends. Its output goes to ``cwd/dagster.log``.
    """
    port = port or free_port()
    log = cwd / "dagster.log"
    with log.open("wb") as output:
        process = start_logged(
            [str(DAGSTER), "dev", "-m", "sync_pipeline.definitions", "-h", "127.0.0.1", "-p", str(port)],
            env,
            cwd,
            output,
        )
    try:
        deployment = Deployment(
            f"http://127.0.0.1:{port}", process, Path(env["DAGSTER_HOME"]), dict(env), log
        )
        wait_for("the webserver", lambda: server_info(deployment.url), 180, deployment.dead)
        wait_for("the code location", lambda: location_loaded(deployment.url), 180, deployment.dead)
        yield deployment
    finally:
        stop_group(process)


def alerts_for(
    receiver: Receiver, kind: str, table: str | None = None, partition_key: str | None = None
) -> list[dict[str, Any]]:
    """The alerts of ``kind`` a webhook receiver got, of ``table`` and ``partition_key`` when given."""
    return [
        alert
        for alert in receiver.alerts(kind)
        if table in (None, alert["table"]) and partition_key in (None, alert["partition_key"])
    ]


def wait_for_alerts(
    receiver: Receiver,
    kind: str,
    timeout: float,
    alive: Callable[[], str | None],
    table: str | None = None,
    partition_key: str | None = None,
) -> list[dict[str, Any]]:
    """Wait until ``receiver`` got an alert of ``kind`` (as :func:`alerts_for` selects); all of those."""
    return wait_for(
        f"a {kind} alert", lambda: alerts_for(receiver, kind, table, partition_key) or None, timeout, alive
    )


def finished_runs(instance: DagsterInstance) -> list[DagsterRun] | None:
    """Every run of the instance once none is unfinished, else ``None``."""
    runs = [r.dagster_run for r in instance.get_run_records(RunsFilter())]
    return None if any(not r.is_finished for r in runs) else runs
