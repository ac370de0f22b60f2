"""The celery executor end to end: steps run in Celery workers, and a dead worker loses no partition.

A deployment as SPEC 7 describes it, on this machine: PostgreSQL instance storage (the shipped
``deploy/dagster.yaml``), ``dagster-daemon`` and ``dagster-webserver`` on loopback, two Celery worker
processes (``celery -A sync_pipeline.orchestration.celery_worker worker``) on a real broker, and a backfill of
two tables launched through the webserver's GraphQL as the UI does. Each test uses its own queue and
worker names, so runs of the suite in parallel do not take each other's steps.

Slow (three to six minutes per broker on a busy two-core machine): the backfill daemon works on its
own clock, and a Redis broker hands a dead worker's step on only after its visibility timeout.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa
from dagster import (
    AssetKey,
    DagsterEvent,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    RunsFilter,
)

from sync_pipeline.config import CONFIG_ENV_VAR
from sync_pipeline.engine.sync import window_lock_name
from sync_pipeline_tests.conftest import MakeDbUrl
from sync_pipeline_tests.dagster_helpers import (
    H07,
    H08,
    H09,
    START,
    create_source,
    in_hour,
    row,
    rows_in,
    side,
    table_entry,
    write_config,
)
from sync_pipeline_tests.dagster_processes import (
    launch_backfill,
    location_loaded,
    server_info,
    wait_for,
    wait_for_backfill,
)
from sync_pipeline_tests.helpers import Side, free_port

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
PRODUCTION_INSTANCE = ROOT / "deploy" / "dagster.yaml"
BROKERS = {
    "redis": "redis://127.0.0.1:6379/0",
    "rabbitmq": "amqp://guest:guest@127.0.0.1:5672//",
}
RESULT_BACKEND = "redis://127.0.0.1:6379/0"
TABLES = ("orders", "items")
WINDOWS = (H07, H08, H09)
KEYS = [w.partition_key() for w in WINDOWS]
# A Redis broker hands a step whose worker died to another worker once it has been invisible this
# long (kombu checks every 10 s); RabbitMQ does so as soon as the dead worker's connection drops.
REDIS_VISIBILITY_TIMEOUT = 15
IN_WORKER = "in celery worker"  # dagster-celery's engine event when a worker starts a step


def require_broker(url: str) -> None:
    """Fail under CI, skip elsewhere, when the broker does not answer (as conftest does for databases)."""
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=5) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as error:  # noqa: BLE001 - any failure to connect means the same: no broker
        message = f"the broker {url.split('://')[0]} is not reachable: {type(error).__name__}: {error}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message + " (skipped outside CI)")


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
        return f"--- {self.name} ---\n" + "\n".join(text.splitlines()[-lines:])

    def send(self, sig: signal.Signals) -> None:
        """Signal the whole process group: each process runs in a session of its own."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)


def stop_all(processes: list[Process], grace: float = 30.0) -> None:
    """Ask every process to stop at once, wait for them together, then kill what is left of each group.

    Dagster's processes shut down on SIGINT as on Ctrl-C; a Celery worker on SIGTERM (warm
    shutdown: it finishes its current step first).
    """
    for process in processes:
        process.send(signal.SIGTERM if process.name.startswith("worker") else signal.SIGINT)
    deadline = time.monotonic() + grace
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
    for process in processes:  # a leader that hung, or children a leader left behind
        process.send(signal.SIGKILL)
        process.popen.wait(timeout=10)


@dataclass
class Deployment:
    """The processes of one test's deployment, the databases it syncs and its instance."""

    tmp: Path
    env: dict[str, str]
    queue: str
    source: dict[str, Side]
    target: Side
    url: str = ""
    processes: list[Process] = field(default_factory=list)
    workers: dict[str, Process] = field(default_factory=dict)

    def start(self, name: str, args: list[str]) -> Process:
        log = self.tmp / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                args, cwd=self.tmp, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        process = Process(name, popen, log)
        self.processes.append(process)
        return process

    def start_worker(self, name: str) -> None:
        node = f"{self.queue}-{name}"
        self.workers[node] = self.start(
            f"worker-{name}",
            [
                *(str(BIN / "celery"), "-A", "sync_pipeline.orchestration.celery_worker", "worker"),
                *("-Q", self.queue, "-n", f"{node}@%h", "--concurrency", "1", "--loglevel", "INFO"),
                # Other tests' workers share the broker: no gossip or mingle with them.
                *("--without-gossip", "--without-mingle"),
            ],
        )

    def dead(self) -> str | None:
        for process in self.processes:
            code = process.popen.poll()
            if code is not None and process.name in ("webserver", "daemon"):
                return f"{process.name} exited with {code}\n{self.tails()}"
        return None

    def tails(self) -> str:
        return "\n".join(p.tail() for p in self.processes)


def _worker_ready(process: Process) -> bool | None:
    text = process.log.read_text(encoding="utf-8", errors="replace") if process.log.exists() else ""
    return True if " ready." in text else None


@pytest.fixture
def deployment(
    request: pytest.FixtureRequest, tmp_path: Path, make_db_url: MakeDbUrl, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Deployment]:
    """Instance storage, two tables of source rows, two workers, the daemon and the webserver, all up."""
    broker = BROKERS[request.param]
    require_broker(broker)
    require_broker(RESULT_BACKEND)

    storage = sa.make_url(make_db_url("postgresql", "dagster"))
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(PRODUCTION_INSTANCE.read_text(encoding="utf-8"), encoding="utf-8")
    instance_env = {
        "DAGSTER_PG_HOST": storage.host or "127.0.0.1",
        "DAGSTER_PG_PORT": str(storage.port or 5432),
        "DAGSTER_PG_USER": storage.username or "postgres",
        "DAGSTER_PG_PASSWORD": storage.password or "",
        "DAGSTER_PG_DB": storage.database or "",
    }
    for name, value in instance_env.items():  # for this process's own look at the instance
        monkeypatch.setenv(name, value)

    source = {
        "orders": side("postgresql", make_db_url("postgresql", "app")),
        "items": side("sqlite", make_db_url("sqlite", "lake")),
    }
    target = side("postgresql", make_db_url("postgresql", "warehouse"))
    for offset, (table, db) in enumerate(source.items()):
        rows = [
            row(offset * 1000 + hour * 100 + i, in_hour(window, (i * 7) % 60))
            for hour, window in enumerate(WINDOWS)
            for i in range(25)
        ]
        create_source(db, rows, name=table)

    queue = f"sp_test_{uuid.uuid4().hex[:10]}"
    config = write_config(
        tmp_path / "sync.yaml",
        {"app": source["orders"].url, "lake": source["items"].url, "warehouse": target.url},
        [
            table_entry("orders", "app", "warehouse", start=START, lock_timeout_seconds=600),
            table_entry("items", "lake", "warehouse", table="items", start=START),
        ],
        executor={
            "kind": "celery",
            "broker": "${SYNC_TEST_BROKER}",  # read from each process's environment, as a secret would be
            "backend": RESULT_BACKEND,
            "queue": queue,
            "visibility_timeout_seconds": REDIS_VISIBILITY_TIMEOUT,
        },
        # Only the backfill's runs: no hourly ticks or drift runs landing in the middle of the test.
        schedule={"enabled": False},
        drift={"enabled": False},
        freshness={"enabled": False},
        # One run per hour, as before ranged backfill runs: the test follows one partition's step.
        backfill={"max_partitions_per_run": 1},
        catch_up={"enabled": False},  # nor the catch-up's backfill of every hour since START
    )
    env = {k: v for k, v in os.environ.items() if k not in (CONFIG_ENV_VAR, "DAGSTER_HOME")}
    env.update(instance_env)
    env.update({"DAGSTER_HOME": str(home), CONFIG_ENV_VAR: str(config), "SYNC_TEST_BROKER": broker})
    deployment = Deployment(tmp_path, env, queue, source, target)
    try:
        deployment.start_worker("a")
        deployment.start_worker("b")
        deployment.start("daemon", [str(BIN / "dagster-daemon"), "run", "-m", "sync_pipeline.definitions"])
        port = free_port()
        deployment.url = f"http://127.0.0.1:{port}"
        deployment.start(
            "webserver",
            [
                *(str(BIN / "dagster-webserver"), "-m", "sync_pipeline.definitions"),
                *("-h", "127.0.0.1", "-p", str(port)),
            ],
        )
        wait_for("the webserver", lambda: server_info(deployment.url), 180, deployment.dead)
        wait_for("the code location", lambda: location_loaded(deployment.url), 180, deployment.dead)
        for node, worker in deployment.workers.items():
            wait_for(f"worker {node}", lambda w=worker: _worker_ready(w), 120, deployment.dead)  # type: ignore[misc]
        yield deployment
    finally:
        stop_all(deployment.processes)
        target.engine.dispose()
        for db in source.values():
            db.engine.dispose()


@dataclass
class StepTrace:
    """Where one step of one run executed, from the events Dagster recorded for it."""

    run_pid: int
    start_pids: list[int]
    worker_hosts: list[str]


def step_traces(instance: DagsterInstance, run_ids: list[str]) -> dict[tuple[str, str], StepTrace]:
    """(partition, step key) -> the run process's pid, and each STEP_START's pid and Celery worker.

    Every step of the runs: the syncs, and the asset checks a backfill of the assets selects too.
    """
    traces: dict[tuple[str, str], StepTrace] = {}
    for run_id in run_ids:
        run = instance.get_run_by_id(run_id)
        assert run is not None
        partition = run.tags["dagster/partition"]
        events = [e.dagster_event for e in instance.all_logs(run_id) if e.dagster_event is not None]
        [run_pid] = {e.pid for e in events if e.event_type == DagsterEventType.RUN_START}
        assert run_pid is not None
        for step_key in {e.step_key for e in events if e.step_key is not None}:
            step = [e for e in events if e.step_key == step_key]
            pids = [e.pid for e in step if e.event_type == DagsterEventType.STEP_START and e.pid is not None]
            traces[(partition, step_key)] = StepTrace(run_pid, pids, _hosts(step))
    return traces


def _hosts(events: list[DagsterEvent]) -> list[str]:
    """The Celery workers that started these events' step, from dagster-celery's engine events."""
    return [
        str(e.engine_event_data.metadata["Celery worker"].value)
        for e in events
        if e.event_type == DagsterEventType.ENGINE_EVENT and IN_WORKER in (e.message or "")
    ]


def worker_hosts(instance: DagsterInstance, run_id: str, step_key: str) -> list[str]:
    """The Celery workers that have started the run's step so far."""
    events = [e.dagster_event for e in instance.all_logs(run_id) if e.dagster_event is not None]
    return _hosts([e for e in events if e.step_key == step_key])


def assert_targets_equal_sources(deployment: Deployment) -> None:
    for table, db in deployment.source.items():
        for window in WINDOWS:
            expected = rows_in(db, table, window)
            assert len(expected) == 25, "a vacuous check"
            assert rows_in(deployment.target, table, window) == expected, (table, window.partition_key())


def assert_materialized(instance: DagsterInstance) -> None:
    for table in TABLES:
        assert instance.get_materialized_partitions(AssetKey(["sync", table])) >= set(KEYS), table


def worker_group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def process_group(pgid: int) -> set[int]:
    """The live processes of a group: a Celery worker and its pool processes (for the steps they ran)."""
    members: set[int] = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # after the command: state, ppid, pgrp
            members.add(int(stat.parent.name))
    return members


WAITING_ON_A_LOCK = sa.text(
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


@pytest.mark.parametrize("deployment", ["redis", "rabbitmq"], indirect=True)
def test_backfill_steps_run_in_celery_workers_even_when_one_is_killed(deployment: Deployment) -> None:
    """A backfill of three hours of two tables through the UI's GraphQL, one worker SIGKILLed mid-step.

    Every step (syncs and asset checks) starts in a Celery worker's process, never in its run's
    process. The test holds the target's lock of one partition of ``orders``, so that step is
    certainly in the middle of its sync (waiting for the lock) when its worker's whole process
    group is killed. Steps are acknowledged late, so the broker hands the step to the other worker
    (RabbitMQ as soon as the dead worker's connection drops, Redis after the visibility timeout),
    the run process keeps waiting for the step's result, and the backfill succeeds: every
    partition materialized, every target window equal to its source.
    """
    window = H08
    key = window.partition_key()
    lock = sa.func.hashtextextended(window_lock_name(None, "orders", window), 0)
    home = deployment.env["DAGSTER_HOME"]
    with DagsterInstance.from_config(home) as instance, deployment.target.engine.connect() as holder:
        holder.execute(sa.select(sa.func.pg_advisory_lock(lock)))
        holder.commit()
        backfill_id = launch_backfill(deployment.url, TABLES, KEYS)

        def blocked_in_a_worker() -> str | None:
            runs = instance.get_runs(RunsFilter(tags={"dagster/partition": key}))
            if any(run.status == DagsterRunStatus.FAILURE for run in runs):
                pytest.fail(f"the run of {key} failed before its orders step blocked\n{deployment.tails()}")
            hosts = [host for run in runs for host in worker_hosts(instance, run.run_id, "sync__orders")]
            if not hosts:
                return None
            with deployment.target.engine.connect() as conn:
                waiting = conn.execute(WAITING_ON_A_LOCK).scalar()
            return hosts[0] if waiting else None

        host = wait_for(
            f"the orders step of {key} to wait for its lock", blocked_in_a_worker, 300, deployment.dead
        )
        victim = deployment.workers[host.split("@")[0]]
        victim_pids = process_group(victim.popen.pid)
        os.killpg(victim.popen.pid, signal.SIGKILL)
        victim.popen.wait(timeout=10)
        holder.execute(sa.select(sa.func.pg_advisory_unlock(lock)))
        holder.commit()

    backfill = wait_for_backfill(
        deployment.url, backfill_id, KEYS, timeout=420, alive=deployment.dead, logs=deployment.tails
    )

    with DagsterInstance.from_config(home) as instance:
        traces = step_traces(instance, [run["runId"] for run in backfill["runs"]])
        assert_materialized(instance)
    survivors = {p.popen.pid for p in deployment.workers.values() if p is not victim}
    assert {(k, f"sync__{table}") for k in KEYS for table in TABLES} <= set(traces)
    for where, trace in traces.items():
        assert trace.start_pids, where
        assert trace.run_pid not in trace.start_pids, f"{where} ran in its run's process"
        for pid in trace.start_pids:
            assert pid in victim_pids or worker_group(pid) in survivors, f"{where}: pid {pid} is no worker's"
        assert trace.worker_hosts, where
        assert {h.split("@")[0] for h in trace.worker_hosts} <= set(deployment.workers), where
    killed = traces[(key, "sync__orders")]
    assert host in killed.worker_hosts
    assert len(killed.worker_hosts) >= 2, f"the killed step was not run again: {killed}"
    assert worker_group(killed.start_pids[-1]) in survivors, killed
    assert_targets_equal_sources(deployment)
