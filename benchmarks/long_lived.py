"""The Dagster path under load: long-lived processes' memory across a backfill, and its throughput.

A production-shaped deployment on this machine: the instance of ``deploy/dagster.yaml`` (run, event
and schedule storage in a fresh PostgreSQL database, the queued run coordinator with its limits, one
step per table pool), ``dagster-daemon run``, ``dagster-webserver`` and a separate code server
(``dagster code-server start``), all four pointing at the same workspace. The sync config names
PostgreSQL source and target databases, seeded with ``--rows-per-hour`` rows per hourly window.

The script launches, through the webserver's GraphQL API as the UI's "Launch backfill" does, one
backfill of ``--partitions`` hourly partitions of ``--tables`` tables, and samples every
``--interval`` seconds the RSS of each long-lived process (the process and its helper children:
the code server's gRPC child; never the run workers and step processes the code server launches,
which end with their run and are reported apart) until the backfill completes. It then checks that
every run succeeded and each target window equals its source's row count, and writes
``<name>.json``, ``<name>.png`` and ``<name>.md`` into ``--out``.

With ``--cli-runs N`` it first times ``dagster asset materialize`` of one partition from a shell, N
times, split into interpreter and definitions start-up, run, step process start and step, from the
run's own event log.

    .venv/bin/python -m benchmarks.long_lived --partitions 200 --tables 1
    .venv/bin/python -m benchmarks.dagster_path            # 48 partitions x 3 tables, CLI timings

Why the processes are started one by one instead of with ``dagster dev``: ``dagster dev`` runs the
code server as a child of the webserver, so its memory could not be told apart, and production runs
them separately.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import psutil
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PRODUCTION_INSTANCE = ROOT / "deploy" / "dagster.yaml"
PG_ADMIN_URL = os.environ.get(
    "SYNC_PIPELINE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
TABLE_NAMES = ("orders", "customers", "events", "payments", "shipments", "invoices")
ROLES = ("webserver", "daemon", "code_server")
BACKFILL_DONE = {"COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
# A process whose command line holds one of these belongs to a run (the run worker the code server
# spawns, its forkserver, step processes, orphan watchers): it ends with its run, so it is not part of
# a long-lived process's footprint. (multiprocessing's resource tracker stays: it lives as long as
# the code server.)
RUN_MARKERS = ("execute_run", "resume_run", "execute_step", "forkserver", "spawn_main", "watch_orphans")
MIB = 1024 * 1024
ASSETS_VIA = "of the assets, as Catalog > Materialize"

T = TypeVar("T")


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, alive: Callable[[], None]) -> T:
    """Poll ``probe`` until it returns a value; raise at the deadline or when ``alive`` raises."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# -- databases --------------------------------------------------------------------------------------


@dataclass
class Databases:
    """Three fresh PostgreSQL databases: the Dagster instance's, the sync source and the sync target."""

    admin: sa.Engine
    prefix: str
    names: dict[str, str] = field(default_factory=dict)

    def url(self, role: str, driver: str = "postgresql+psycopg") -> sa.URL:
        return sa.make_url(PG_ADMIN_URL).set(drivername=driver, database=self.names[role])

    def url_text(self, role: str) -> str:
        return self.url(role).render_as_string(hide_password=False)


@contextmanager
def databases(keep: bool) -> Iterator[Databases]:
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    dbs = Databases(admin, f"sp_bench_{uuid.uuid4().hex[:8]}")
    try:
        with admin.connect() as conn:
            for role in ("dagster", "source", "target"):
                dbs.names[role] = f"{dbs.prefix}_{role}"
                conn.exec_driver_sql(f'CREATE DATABASE "{dbs.names[role]}"')
        yield dbs
    finally:
        if not keep:
            with admin.connect() as conn:
                for name in dbs.names.values():
                    conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def seed(url: str, tables: Sequence[str], start: datetime, hours: int, rows_per_hour: int) -> None:
    """``rows_per_hour`` rows in each hour from ``start``, spread evenly over the hour, in every table."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            for table in tables:
                conn.exec_driver_sql(
                    f"CREATE TABLE {table} (id bigint PRIMARY KEY, account_id int NOT NULL,"
                    " amount numeric(12,2), note text, updated_at timestamptz NOT NULL)"
                )
                conn.execute(
                    sa.text(
                        f"INSERT INTO {table} SELECT g, g % 1000, (g % 100000) / 100.0, md5(g::text),"
                        " CAST(:start AS timestamptz) + ((g - 1) / :per) * interval '1 hour'"
                        " + ((g - 1) % :per) * (interval '1 hour' / :per)"
                        " FROM generate_series(1, :n) AS g"
                    ),
                    {"start": start, "per": rows_per_hour, "n": hours * rows_per_hour},
                )
    finally:
        engine.dispose()


def window_counts(url: str, tables: Sequence[str], start: datetime, hours: int) -> dict[str, list[int]]:
    """Rows per hourly window of each table, ``hours`` windows from ``start``."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    counts: dict[str, list[int]] = {}
    try:
        with engine.connect() as conn:
            for table in tables:
                if not sa.inspect(conn).has_table(table):
                    counts[table] = [0] * hours
                    continue
                rows = conn.execute(
                    sa.text(
                        f"SELECT floor(extract(epoch FROM updated_at - CAST(:start AS timestamptz)) / 3600)"
                        f"::int AS h, count(*) FROM {table} GROUP BY 1"
                    ),
                    {"start": start},
                ).all()
                by_hour = {int(h): int(n) for h, n in rows}
                counts[table] = [by_hour.get(h, 0) for h in range(hours)]
    finally:
        engine.dispose()
    return counts


# -- the deployment ---------------------------------------------------------------------------------


def sync_config(source_url: str, target_url: str, tables: Sequence[str], start: datetime) -> str:
    """A sync config as an operator would write it; drift and the hourly schedule are off.

    Both launch runs of their own, which would mix with the backfill's and blur partitions per
    minute. The freshness sensor stays on (every 60 s): it is evaluated inside the code server, the
    long-lived work this benchmark watches.
    """
    lines = [
        "partition_timezone: UTC",
        "connections:",
        '  source: {url: "${BENCH_SOURCE_URL}"}',
        '  target: {url: "${BENCH_TARGET_URL}"}',
        "defaults:",
        "  source: {connection: source}",
        "  target: {connection: target}",
        "  primary_key: [id]",
        "  updated_at: updated_at",
        f'  start: "{start:%Y-%m-%dT%H:%M:%S}"',
        "schedule: {enabled: false}",
        "drift: {enabled: false}",
        "freshness: {interval_seconds: 60}",
        "tables:",
    ]
    for table in tables:
        lines += [f"  - name: {table}", f"    source: {{table: {table}}}", f"    target: {{table: {table}}}"]
    return "\n".join(lines) + "\n"


@dataclass
class Service:
    role: str
    argv: list[str]
    process: subprocess.Popen[bytes]
    log_path: Path

    def check(self) -> None:
        code = self.process.poll()
        if code is not None:
            tail = self.log_path.read_text(errors="replace").splitlines()[-40:]
            raise RuntimeError(f"{self.role} exited with {code}:\n" + "\n".join(tail))

    def stop(self) -> None:
        """Interrupt the process group as Ctrl-C would; kill what is left after a grace period."""
        for sig, grace in ((signal.SIGINT, 20.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(timeout=grace)
                return
            except subprocess.TimeoutExpired:
                continue


@dataclass
class Deployment:
    home: Path
    env: dict[str, str]
    webserver_url: str
    services: dict[str, Service]

    def check(self) -> None:
        for service in self.services.values():
            service.check()

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables}).encode()
        # S310: the URL is the loopback http:// server this script started.
        request = urllib.request.Request(  # noqa: S310
            f"{self.webserver_url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            document = json.load(response)
        if document.get("errors"):
            raise RuntimeError(f"GraphQL errors: {document['errors']}")
        data: dict[str, Any] = document["data"]
        return data


def _start(role: str, argv: list[str], env: dict[str, str], cwd: Path) -> Service:
    log_path = cwd / f"{role}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(  # noqa: S603 - fixed programs next to this interpreter
            argv, cwd=cwd, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Service(role, argv, process, log_path)


def _server_info(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{url}/server_info", timeout=5) as response:  # noqa: S310
            info: dict[str, Any] = json.load(response)
            return info
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def _grpc_serving(port: int, env: dict[str, str], work: Path) -> bool | None:
    check = subprocess.run(  # noqa: S603
        [str(BIN / "dagster"), "api", "grpc-health-check", "-h", "127.0.0.1", "-p", str(port)],
        env=env,
        cwd=work,
        capture_output=True,
        check=False,
    )
    return True if check.returncode == 0 else None


def _location_loaded(deployment: Deployment) -> bool | None:
    data = deployment.graphql(
        "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus"
        " locationOrLoadError { __typename ... on PythonError { message } } } } } }"
    )
    [entry] = data["workspaceOrError"]["locationEntries"]
    error = entry["locationOrLoadError"]
    if error and error["__typename"] == "PythonError":
        if "DagsterUserCodeUnreachableError" in error["message"]:
            # Asked before the code server answered: ask the webserver to look again.
            deployment.graphql(
                'mutation { reloadRepositoryLocation(repositoryLocationName: "sync_pipeline")'
                " { __typename } }"
            )
            return None
        raise RuntimeError(f"the code location failed to load: {error['message']}")
    return True if entry["loadStatus"] == "LOADED" and error else None


@contextmanager
def deployment(work: Path, dbs: Databases, config_text: str) -> Iterator[Deployment]:
    """The instance, code server, webserver and daemon, started in that order and stopped in reverse."""
    home = work / "dagster_home"
    home.mkdir()
    shutil.copyfile(PRODUCTION_INSTANCE, home / "dagster.yaml")
    config_path = work / "sync.yaml"
    config_path.write_text(config_text)
    instance_url = dbs.url("dagster")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "SYNC_PIPELINE_"))}
    env.update(
        {
            "DAGSTER_HOME": str(home),
            "DAGSTER_PG_HOST": instance_url.host or "127.0.0.1",
            "DAGSTER_PG_PORT": str(instance_url.port or 5432),
            "DAGSTER_PG_USER": instance_url.username or "postgres",
            "DAGSTER_PG_PASSWORD": instance_url.password or "",
            "DAGSTER_PG_DB": instance_url.database or "",
            "SYNC_PIPELINE_CONFIG": str(config_path),
            "BENCH_SOURCE_URL": dbs.url_text("source"),
            "BENCH_TARGET_URL": dbs.url_text("target"),
        }
    )
    # This process reads the instance too (run records, event timestamps).
    os.environ.update({k: v for k, v in env.items() if k.startswith("DAGSTER_PG_")})
    # Create the instance's tables once, here, rather than racing three processes to do it.
    subprocess.run(  # noqa: S603
        [str(BIN / "dagster"), "instance", "migrate"], env=env, cwd=work, check=True, capture_output=True
    )
    grpc_port, web_port = free_port(), free_port()
    (work / "workspace.yaml").write_text(
        f"load_from:\n  - grpc_server: {{host: 127.0.0.1, port: {grpc_port}, location_name: sync_pipeline}}\n"
    )
    services: dict[str, Service] = {}
    deploy = Deployment(home, env, f"http://127.0.0.1:{web_port}", services)
    try:
        services["code_server"] = _start(
            "code_server",
            [
                *(str(BIN / "dagster"), "code-server", "start", "-m", "sync_pipeline.definitions"),
                *("-h", "127.0.0.1", "-p", str(grpc_port)),
            ],
            env,
            work,
        )
        wait_for("the code server", lambda: _grpc_serving(grpc_port, env, work), 240, deploy.check)
        services["webserver"] = _start(
            "webserver",
            [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(web_port)],
            env,
            work,
        )
        services["daemon"] = _start(
            "daemon", [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], env, work
        )
        wait_for("the webserver", lambda: _server_info(deploy.webserver_url), 180, deploy.check)
        wait_for("the code location", lambda: _location_loaded(deploy), 240, deploy.check)
        yield deploy
    finally:
        for role in ("daemon", "webserver", "code_server"):
            if role in services:
                services[role].stop()


# -- RSS sampling ----------------------------------------------------------------------------------


def _is_run_process(proc: psutil.Process) -> bool:
    try:
        cmdline = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return any(marker in cmdline for marker in RUN_MARKERS)


def footprint(pid: int) -> tuple[int, int, int, int]:
    """(RSS of the process and its helpers, helper count, RSS of run processes, run process count).

    Walks the tree below ``pid``; a run worker's whole subtree (forkserver, step processes) counts
    as run work, not as the long-lived process.
    """
    try:
        root = psutil.Process(pid)
        own = root.memory_info().rss
    except psutil.NoSuchProcess:
        return 0, 0, 0, 0
    helpers = runs = run_rss = 0
    stack = [root]
    while stack:
        proc = stack.pop()
        try:
            children = proc.children()
        except psutil.NoSuchProcess:
            continue
        for child in children:
            try:
                if _is_run_process(child):
                    for member in [child, *child.children(recursive=True)]:
                        run_rss += member.memory_info().rss
                        runs += 1
                    continue
                own += child.memory_info().rss
                helpers += 1
            except psutil.NoSuchProcess:
                continue
            stack.append(child)
    return own, helpers, run_rss, runs


def cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and everything below it, alive or already reaped.

    A reaped process's time is in its parent's ``children_*`` fields (run workers are reaped by the
    code server, their step processes by the forkserver or the run worker), a live one's in its own:
    each second is counted once. Unlike wall time, this does not depend on what else the machine runs.
    """
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


class Sampler(threading.Thread):
    """Samples each long-lived process's footprint every ``interval`` seconds until stopped."""

    def __init__(self, services: dict[str, Service], interval: float, t0: float) -> None:
        super().__init__(daemon=True)
        self.services = services
        self.interval = interval
        self.t0 = t0
        self.samples: list[dict[str, Any]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            sample: dict[str, Any] = {"t": round(time.monotonic() - self.t0, 2)}
            run_rss = runs = 0
            for role in ROLES:
                rss, helpers, r_rss, r_n = footprint(self.services[role].process.pid)
                sample[role] = rss
                sample[f"{role}_procs"] = 1 + helpers
                sample[f"{role}_cpu_s"] = round(cpu_seconds(self.services[role].process.pid), 2)
                run_rss += r_rss
                runs += r_n
            sample["run_processes"] = runs
            sample["run_processes_rss"] = run_rss
            self.samples.append(sample)
            self.stopped.wait(self.interval)


# -- GraphQL ---------------------------------------------------------------------------------------

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


def partition_key(hour: datetime) -> str:
    return f"{hour:%Y-%m-%d-%H:%M}"


# -- the CLI path ----------------------------------------------------------------------------------


def _events(home: Path, run_id: str) -> dict[str, float]:
    """First timestamp of each event type of one run, read from the instance in this process."""
    from dagster import DagsterInstance

    with DagsterInstance.from_config(str(home)) as instance:
        first: dict[str, float] = {}
        for record in instance.all_logs(run_id):
            event = record.dagster_event
            if event is not None:
                first.setdefault(event.event_type.name, record.timestamp)
                if event.step_key:
                    first.setdefault(f"{event.event_type.name}:{event.step_key}", record.timestamp)
        return first


def _latest_run(home: Path, key: str) -> str:
    from dagster import DagsterInstance, RunsFilter

    with DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs(filters=RunsFilter(tags={"dagster/partition": key}), limit=1)
        return runs[0].run_id


def time_cli(home: Path, env: dict[str, str], work: Path, table: str, key: str) -> dict[str, Any]:
    """One ``dagster asset materialize`` of one partition, split by the run's own event timestamps."""
    argv = [
        str(BIN / "dagster"),
        *("asset", "materialize", "-m", "sync_pipeline.definitions"),
        *("--select", f"sync/{table}", "--partition", key),
    ]
    started = time.time()
    done = subprocess.run(argv, env=env, cwd=work, capture_output=True, text=True, timeout=600, check=False)  # noqa: S603
    ended = time.time()
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    run_id = _latest_run(home, key)
    ev = _events(home, run_id)
    return {
        "partition": key,
        "run_id": run_id,
        "wall_s": round(ended - started, 3),
        "startup_s": round(ev["RUN_START"] - started, 3),
        "run_start_to_step_start_s": round(ev["STEP_START"] - ev["RUN_START"], 3),
        "step_worker_start_s": round(ev["STEP_START"] - ev["STEP_WORKER_STARTING"], 3),
        "step_s": round(ev["STEP_SUCCESS"] - ev["STEP_START"], 3),
        "step_end_to_run_end_s": round(ev["RUN_SUCCESS"] - ev["STEP_SUCCESS"], 3),
        "run_end_to_exit_s": round(ended - ev["RUN_SUCCESS"], 3),
        "steps": {
            name.split(":", 1)[1]: round(ev[f"STEP_SUCCESS:{name.split(':', 1)[1]}"] - ev[name], 3)
            for name in ev
            if name.startswith("STEP_START:") and f"STEP_SUCCESS:{name.split(':', 1)[1]}" in ev
        },
        "command": shlex.join(["dagster", *argv[1:]]),
    }


def time_imports(env: dict[str, str], work: Path, repeat: int) -> dict[str, float]:
    """Median seconds to start an interpreter that imports Dagster, and one that loads the definitions."""
    out: dict[str, float] = {}
    for name, code in (
        ("python_import_dagster_s", "import dagster"),
        ("python_load_definitions_s", "import sync_pipeline.definitions"),
    ):
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], env=env, cwd=work, check=True)  # noqa: S603
            times.append(time.perf_counter() - t)
        out[name] = round(statistics.median(times), 3)
    return out


# -- the backfill ----------------------------------------------------------------------------------


def run_records(home: Path, backfill_id: str) -> list[dict[str, Any]]:
    from dagster import DagsterInstance, RunsFilter

    with DagsterInstance.from_config(str(home)) as instance:
        records = instance.get_run_records(filters=RunsFilter(tags={"dagster/backfill": backfill_id}))
        return [
            {
                "run_id": r.dagster_run.run_id,
                "partition": r.dagster_run.tags.get("dagster/partition"),
                "status": r.dagster_run.status.value,
                "created": r.create_timestamp.timestamp(),
                "start": r.start_time,
                "end": r.end_time,
                "assets": len(r.dagster_run.asset_selection or ()),
                "checks": len(r.dagster_run.asset_check_selection or ()),
            }
            for r in records
        ]


def summarize_rss(samples: list[dict[str, Any]], start: float, end: float) -> dict[str, dict[str, float]]:
    """First/median/last/max RSS of each role over the samples taken during the backfill, and growth.

    Growth compares the median of the last fifth of those samples with the median of the second
    fifth (the first fifth is warm-up: imports done lazily on the first runs, caches filling).
    """
    during = [s for s in samples if start <= s["t"] <= end] or samples
    out: dict[str, dict[str, float]] = {}
    for role in ROLES:
        values = [s[role] / MIB for s in during if s[role]]
        fifth = max(1, len(values) // 5)
        early = statistics.median(values[fifth : 2 * fifth] or values[:fifth])
        late = statistics.median(values[-fifth:])
        growth = late - early
        out[role] = {
            "first": round(values[0], 1),
            "median": round(statistics.median(values), 1),
            "last": round(values[-1], 1),
            "max": round(max(values), 1),
            "early_median": round(early, 1),
            "late_median": round(late, 1),
            "growth_mib": round(growth, 1),
            "growth_pct": round(100 * growth / early, 1),
            "flat": abs(growth) <= max(8.0, 0.05 * early),
            "samples": len(values),
        }
    return out


def backfill_stats(result: dict[str, Any]) -> None:
    """Derive the backfill's figures from its run records (in place), counting only succeeded runs.

    A run that failed and was retried by the instance's run retries counts once, through its retry.
    """
    b = result["backfill"]
    runs = b["run_records"]
    tables = len(result["tables"])
    succeeded = [r for r in runs if r["status"] == "SUCCESS"]
    done = sorted({r["partition"] for r in succeeded})
    ends = [r["end"] for r in succeeded if r["end"]]
    seconds = max(ends) - b["launched_at"] if ends else float("nan")
    durations = [r["end"] - r["start"] for r in succeeded if r["start"] and r["end"]]
    queued = [r["start"] - r["created"] for r in runs if r["start"]]
    b.update(
        {
            "runs": len(runs),
            "succeeded": len(succeeded),
            "failed": sum(r["status"] == "FAILURE" for r in runs),
            "done_keys": done,
            "partitions_done": len(done),
            "seconds": round(seconds, 1),
            "partitions_per_minute": round(len(done) / seconds * 60, 2),
            "syncs_per_minute": round(len(done) * tables / seconds * 60, 2),
            "run_median_s": round(statistics.median(durations), 2) if durations else None,
            "run_max_s": round(max(durations), 2) if durations else None,
            "queued_median_s": round(statistics.median(queued), 2) if queued else None,
            "queued_max_s": round(max(queued), 2) if queued else None,
            "assets_per_run": statistics.median(r.get("assets", 0) for r in runs) if runs else 0,
            "checks_per_run": statistics.median(r.get("checks", 0) for r in runs) if runs else 0,
        }
    )


def cpu_per_sync(samples: list[dict[str, Any]], start: float, syncs: int) -> dict[str, float]:
    """CPU seconds each role spent from the backfill's launch to the last sample, and per partition sync.

    The code server's figure includes every run worker and step process (it starts them and reaps
    them), so it is the Dagster path's whole cost per partition sync, sync work included.
    """
    before = [s for s in samples if s["t"] <= start] or samples[:1]
    first, last = before[-1], samples[-1]
    out: dict[str, float] = {}
    for role in ROLES:
        spent = last[f"{role}_cpu_s"] - first[f"{role}_cpu_s"]
        out[f"{role}_s"] = round(spent, 1)
        out[f"{role}_per_sync_s"] = round(spent / syncs, 2) if syncs else float("nan")
    return out


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    t = [s["t"] / 60 for s in samples]
    b = result["backfill"]
    fig, (ax, runs_ax) = plt.subplots(
        2, 1, figsize=(9, 6.5), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    for role in ROLES:
        ax.plot(t, [s[role] / MIB for s in samples], label=role.replace("_", " "))
    runs_ax.plot(t, [s["run_processes_rss"] / MIB for s in samples], color="grey", linewidth=0.8)
    for axis in (ax, runs_ax):
        axis.axvspan(b["launched_t"] / 60, b["done_t"] / 60, color="tab:green", alpha=0.07)
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
    ax.set_ylabel("RSS, MiB")
    ax.set_title(
        f"Long-lived Dagster processes during a backfill of {b.get('partitions_done', b['partitions'])}"
        f" partitions x {len(result['tables'])} table(s) (shaded)"
    )
    ax.legend(loc="lower right", fontsize=8)
    runs_ax.set_ylabel("MiB")
    runs_ax.set_title("run workers and step processes together (they end with their runs)", fontsize=9)
    runs_ax.set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cpu_lines(result: dict[str, Any]) -> list[str]:
    cpu = result.get("cpu")
    if not cpu:
        return []
    return [
        "CPU seconds spent during the backfill (process trees, reaped children included; the code"
        " server's tree holds every run worker and step process):"
        + "".join(
            f" {role.replace('_', ' ')} {cpu[f'{role}_s']:.0f} s"
            f" ({cpu[f'{role}_per_sync_s']:.2f} s per partition sync);"
            for role in ROLES
        )
        + (f" {cpu['note']}" if cpu.get("note") else ""),
        "",
    ]


def markdown(result: dict[str, Any]) -> str:
    b = result["backfill"]
    lines = [
        f"### {result['title']}",
        "",
        "```bash",
        result["command"],
        "```",
        "",
        f"Measured {result['measured_at']} on {result['machine']}; Dagster {result['dagster']},"
        f" instance `deploy/dagster.yaml` on PostgreSQL ({result['postgresql']}), PostgreSQL source and"
        f" target, {len(result['tables'])} table(s) ({', '.join(result['tables'])}),"
        f" {result['rows_per_hour']} rows per hourly window, RSS sampled every {result['interval']} s.",
        "",
        f"Backfill ({result.get('via', ASSETS_VIA)}) of {b['partitions']} partitions"
        f" x {len(result['tables'])} table(s) ="
        f" {b['syncs']} partition syncs in {b['runs']} runs, launched through GraphQL: {b['status']},"
        f" {b['succeeded']} runs succeeded ({b['partitions_done']} partitions; {b['failed']} runs failed,"
        " each retried once by the instance's run retries), target windows of those"
        " equal to the source's row counts:"
        f" {'yes' if result['targets_equal'] else '**no**'}.",
        "",
        "| | value |",
        "|---|---|",
        f"| launch to last successful run finished | {b['seconds']:.0f} s |",
        f"| partitions per minute | {b['partitions_per_minute']:.2f} |",
        f"| partition syncs (table x hour) per minute | {b['syncs_per_minute']:.2f} |",
        f"| run duration (start to end), median / max | {b['run_median_s']:.1f} s / {b['run_max_s']:.1f} s |",
        f"| time queued (created to start), median / max | {b['queued_median_s']:.1f} s"
        f" / {b['queued_max_s']:.1f} s |",
        f"| load average (1 min) at launch / at the end | {b['load_at_launch']:.1f}"
        f" / {b['load_at_end']:.1f} |",
        "",
        "RSS of each long-lived process (the process and its helper children; run workers and step",
        "processes excluded), over the samples taken during the backfill:",
        "",
        "| process | first MiB | median MiB | last MiB | max MiB | growth (last vs second fifth) | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for role, r in result["rss"].items():
        verdict = "flat" if r["flat"] else "**grows**"
        lines.append(
            f"| {role.replace('_', ' ')} | {r['first']} | {r['median']} | {r['last']} | {r['max']} |"
            f" {r['growth_mib']:+.1f} MiB ({r['growth_pct']:+.1f}%) | {verdict} |"
        )
    lines += [
        "",
        *_cpu_lines(result),
        "Verdict rule: flat when the median of the last fifth of the samples is within 8 MiB or 5% of",
        "the median of the second fifth (the first fifth is warm-up).",
        "Peak RSS of the run workers and step processes together:"
        f" {result['run_processes_peak_mib']:.0f} MiB"
        f" ({result['run_processes_peak']} processes at most at once).",
    ]
    if result.get("cli"):
        cli = result["cli"]
        lines += [
            "",
            f"`dagster asset materialize` of one partition of one table, {len(cli['runs'])} runs, median s:",
            "",
            "```bash",
            cli["runs"][0]["command"],
            "```",
            "",
            "| wall | CLI start-up to run start | run start to step start | of which step process start"
            " | step (sync + in_sync check) | step end to run end | run end to exit |",
            "|---|---|---|---|---|---|---|",
            "| " + " | ".join(f"{cli['median'][k]:.2f}" for k in CLI_FIELDS) + " |",
            "",
            "For comparison, a bare interpreter importing Dagster takes"
            f" {cli['imports']['python_import_dagster_s']:.2f} s and one loading `sync_pipeline.definitions`"
            f" {cli['imports']['python_load_definitions_s']:.2f} s (median of 3). Steps of the first run"
            f" (seconds from STEP_START to STEP_SUCCESS): {cli['runs'][0]['steps']}.",
        ]
    lines += [f"\n{note}" for note in result.get("notes", [])]
    return "\n".join(lines) + "\n"


CLI_FIELDS = (
    "wall_s",
    "startup_s",
    "run_start_to_step_start_s",
    "step_worker_start_s",
    "step_s",
    "step_end_to_run_end_s",
    "run_end_to_exit_s",
)


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    tables = list(TABLE_NAMES[: args.tables])
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    hours = args.partitions + args.cli_runs
    start = now - timedelta(hours=hours + 2)
    keys = [partition_key(start + timedelta(hours=h)) for h in range(args.partitions)]
    cli_keys = [partition_key(start + timedelta(hours=args.partitions + i)) for i in range(args.cli_runs)]
    result: dict[str, Any] = {
        "title": args.title,
        "command": command,
        "measured_at": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "tables": tables,
        "rows_per_hour": args.rows_per_hour,
        "interval": args.interval,
        "via": "of the assets, as Catalog > Materialize"
        if args.via == "assets"
        else "of the sync_hourly job",
    }
    import dagster

    result["dagster"] = dagster.__version__
    with tempfile.TemporaryDirectory(prefix="sp_long_lived_") as tmp, databases(args.keep) as dbs:
        work = Path(tmp)
        with dbs.admin.connect() as conn:
            result["postgresql"] = conn.exec_driver_sql("SHOW server_version").scalar()
        seed(dbs.url_text("source"), tables, start, hours, args.rows_per_hour)
        config = sync_config(dbs.url_text("source"), dbs.url_text("target"), tables, start)
        log(f"seeded {len(tables)} table(s) x {hours} hours; starting the deployment in {work}")
        with deployment(work, dbs, config) as deploy:
            if args.cli_runs:
                imports = time_imports(deploy.env, work, 3)
                cli_runs = []
                for key in cli_keys:
                    cli_runs.append(time_cli(deploy.home, deploy.env, work, tables[0], key))
                    log(f"CLI materialize {key}: {cli_runs[-1]['wall_s']} s")
                result["cli"] = {
                    "runs": cli_runs,
                    "imports": imports,
                    "median": {k: statistics.median(r[k] for r in cli_runs) for k in CLI_FIELDS},
                }
            t0 = time.monotonic()
            sampler = Sampler(deploy.services, args.interval, t0)
            sampler.start()
            # A short idle baseline before the backfill, on the sampler's own clock.
            idle_until = time.monotonic() + args.idle_seconds
            wait_for(
                "the idle baseline",
                lambda: True if time.monotonic() >= idle_until else None,
                args.idle_seconds + 5,
                deploy.check,
            )
            params: dict[str, Any] = {"partitionNames": keys}
            if args.via == "assets":
                # As the UI's Catalog > Materialize... does: the assets with every check on them.
                params["assetSelection"] = [{"path": ["sync", t]} for t in tables]
            else:
                # As the UI's Jobs > sync_hourly > Partitions does: the hourly job's selection, the
                # syncs and their in_sync checks (drift and freshness stay with their sensors).
                params["selector"] = {
                    "partitionSetName": "sync_hourly_partition_set",
                    "repositorySelector": {
                        "repositoryName": "__repository__",
                        "repositoryLocationName": "sync_pipeline",
                    },
                }
            launched = deploy.graphql(LAUNCH_BACKFILL, params=params)["launchPartitionBackfill"]
            if launched["__typename"] != "LaunchBackfillSuccess":
                raise RuntimeError(f"backfill not launched: {launched}")
            backfill_id = launched["backfillId"]
            launched_at, launched_t = time.time(), time.monotonic() - t0
            load_at_launch = os.getloadavg()[0]
            log(f"backfill {backfill_id}: {len(keys)} partitions x {len(tables)} table(s)")
            last_report = [time.monotonic()]

            def finished() -> str | None:
                status = deploy.graphql(BACKFILL_STATUS, id=backfill_id)["partitionBackfillOrError"]
                if status["__typename"] != "PartitionBackfill":
                    raise RuntimeError(f"backfill status: {status}")
                if time.monotonic() - last_report[0] > 60:
                    last_report[0] = time.monotonic()
                    s = sampler.samples[-1] if sampler.samples else {}
                    log(
                        f"  {status['status']}; RSS MiB "
                        + ", ".join(f"{r}={s.get(r, 0) / MIB:.0f}" for r in ROLES)
                        + f"; run processes {s.get('run_processes', 0)}"
                    )
                value: str = status["status"]
                return value if value in BACKFILL_DONE else None

            try:
                status = wait_for("the backfill", finished, args.timeout, deploy.check)
            except TimeoutError:
                # Keep what was measured: the samples cover the syncs done so far.
                status = f"INCOMPLETE (stopped after --timeout {args.timeout:.0f} s)"
                deploy.graphql(
                    "mutation($id: String!) { cancelPartitionBackfill(backfillId: $id) { __typename } }",
                    id=backfill_id,
                )
                log(f"backfill {backfill_id} timed out; cancelled, writing what was measured")
            done_t = time.monotonic() - t0
            load_at_end = os.getloadavg()[0]
            # A few samples after the backfill, to see the processes settle.
            settle_until = time.monotonic() + args.idle_seconds
            wait_for(
                "the settle period",
                lambda: True if time.monotonic() >= settle_until else None,
                args.idle_seconds + 5,
                deploy.check,
            )
            sampler.stopped.set()
            sampler.join()
            runs = run_records(deploy.home, backfill_id)
        source = window_counts(dbs.url_text("source"), tables, start, args.partitions)
        target = window_counts(dbs.url_text("target"), tables, start, args.partitions)

    result["backfill"] = {
        "id": backfill_id,
        "status": status,
        "partitions": len(keys),
        "keys": keys,
        "syncs": len(keys) * len(tables),
        "launched_at": launched_at,
        "load_at_launch": load_at_launch,
        "load_at_end": load_at_end,
        "launched_t": round(launched_t, 1),
        "done_t": round(done_t, 1),
        "run_records": runs,
    }
    backfill_stats(result)
    done_hours = [keys.index(k) for k in result["backfill"]["done_keys"]]
    # Only the windows whose run succeeded (all of them, unless the backfill was stopped).
    result["targets_equal"] = bool(done_hours) and all(
        source[t][h] == target[t][h] and source[t][h] > 0 for t in tables for h in done_hours
    )
    result["source_rows"] = {t: sum(v) for t, v in source.items()}
    result["target_rows"] = {t: sum(v) for t, v in target.items()}
    result["samples"] = sampler.samples
    result["cpu"] = cpu_per_sync(sampler.samples, launched_t, len(done_hours) * len(tables))
    result["rss"] = summarize_rss(sampler.samples, launched_t, done_t)
    result["run_processes_peak_mib"] = max(s["run_processes_rss"] for s in sampler.samples) / MIB
    result["run_processes_peak"] = max(s["run_processes"] for s in sampler.samples)
    result["processes"] = {role: max(s[f"{role}_procs"] for s in sampler.samples) for role in ROLES}
    return result


def parser(defaults: dict[str, Any] | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--partitions", type=int, default=200, help="hourly partitions in the backfill")
    p.add_argument("--tables", type=int, default=1, choices=range(1, len(TABLE_NAMES) + 1))
    p.add_argument("--rows-per-hour", type=int, default=100, help="rows in each hourly window")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between RSS samples")
    p.add_argument("--idle-seconds", type=float, default=30.0, help="sampling before and after the backfill")
    p.add_argument("--cli-runs", type=int, default=0, help="time `dagster asset materialize` this many times")
    p.add_argument("--timeout", type=float, default=7200.0, help="seconds the backfill may take")
    p.add_argument(
        "--via",
        choices=("assets", "job"),
        default="assets",
        help="backfill the assets (with all their checks, as Catalog > Materialize) or the sync_hourly job",
    )
    p.add_argument("--name", default="long_lived", help="basename of the result files")
    p.add_argument("--title", default="Long-lived processes across a backfill")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--keep", action="store_true", help="keep the PostgreSQL databases")
    p.add_argument("--render", type=Path, help="only redraw <name>.png and <name>.md from this <name>.json")
    if defaults:
        p.set_defaults(**defaults)
    return p


def main(argv: Sequence[str] | None = None, defaults: dict[str, Any] | None = None, module: str = "") -> None:
    args = parser(defaults).parse_args(argv)
    if args.render:
        # Redraw the chart and the markdown of an earlier run from its JSON.
        result = json.loads(args.render.read_text())
        backfill_stats(result)
        chart(result, args.render.with_suffix(".png"))
        args.render.with_suffix(".md").write_text(markdown(result))
        print(markdown(result))
        return
    shown = list(sys.argv[1:] if argv is None else argv)
    command = shlex.join([".venv/bin/python", "-m", module or "benchmarks.long_lived", *shown])
    result = run(args, command)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    chart(result, args.out / f"{args.name}.png")
    (args.out / f"{args.name}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
