"""The production-shaped deployment the Dagster-path benchmarks run against, and its databases.

``deploy/dagster.yaml`` (run, event and schedule storage in a fresh PostgreSQL database, the queued
run coordinator with its limits, one step per table pool), ``dagster code-server start``,
``dagster-webserver`` and ``dagster-daemon run``, all four pointing at the same workspace, with a sync
config naming fresh PostgreSQL source and target databases seeded with rows in hourly windows.

The processes are started one by one rather than with ``dagster dev``: ``dagster dev`` runs the code
server as a child of the webserver, so their memory could not be told apart, and production runs them
separately. Starting, waiting and stopping them goes through the helpers the end-to-end tests use
(:mod:`sync_pipeline_tests.dagster_processes`); the benchmarks themselves only measure and report.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from sync_pipeline_tests.dagster_processes import (
    BIN,
    DAGSTER,
    graphql,
    grpc_serving,
    location_loaded,
    server_info,
    start_logged,
    stop_group,
    wait_for,
)
from sync_pipeline_tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION_INSTANCE = ROOT / "deploy" / "dagster.yaml"
PG_ADMIN_URL = os.environ.get(
    "SYNC_PIPELINE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
LOCATION = "sync_pipeline"
ROLES = ("webserver", "daemon", "code_server")  # the long-lived processes, as Deployment.services names them


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
    """One long-lived Dagster process, leading its process group, its output in ``log_path``."""

    role: str
    argv: list[str]
    process: subprocess.Popen[bytes]
    log_path: Path

    def dead(self) -> str | None:
        """``None`` while it runs; once it has exited, its exit code and the last lines it wrote."""
        code = self.process.poll()
        if code is None:
            return None
        tail = self.log_path.read_text(errors="replace").splitlines()[-40:]
        return f"{self.role} exited with {code}:\n" + "\n".join(tail)


@dataclass
class Deployment:
    home: Path
    env: dict[str, str]
    webserver_url: str
    services: dict[str, Service]

    def dead(self) -> str | None:
        """The first of the processes that has died, described; ``None`` while all run."""
        return next((d for s in self.services.values() if (d := s.dead()) is not None), None)

    def check(self) -> None:
        """Raise if a process has died (for waits that take a raising check)."""
        if (dead := self.dead()) is not None:
            raise RuntimeError(dead)

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        return graphql(self.webserver_url, query, **variables)


def _start(role: str, argv: list[str], env: dict[str, str], cwd: Path) -> Service:
    log_path = cwd / f"{role}.log"
    with log_path.open("wb") as log_file:
        process = start_logged(argv, env, cwd, log_file)
    return Service(role, argv, process, log_path)


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
    subprocess.run(  # noqa: S603 - the dagster program next to this interpreter
        [str(DAGSTER), "instance", "migrate"], env=env, cwd=work, check=True, capture_output=True
    )
    grpc_port, web_port = free_port(), free_port()
    (work / "workspace.yaml").write_text(
        f"load_from:\n  - grpc_server: {{host: 127.0.0.1, port: {grpc_port}, location_name: {LOCATION}}}\n"
    )
    services: dict[str, Service] = {}
    deploy = Deployment(home, env, f"http://127.0.0.1:{web_port}", services)
    try:
        services["code_server"] = _start(
            "code_server",
            [
                *(str(DAGSTER), "code-server", "start", "-m", "sync_pipeline.definitions"),
                *("-h", "127.0.0.1", "-p", str(grpc_port)),
            ],
            env,
            work,
        )
        wait_for("the code server", lambda: grpc_serving(grpc_port, env, work), 240, deploy.dead)
        services["webserver"] = _start(
            "webserver",
            [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(web_port)],
            env,
            work,
        )
        services["daemon"] = _start(
            "daemon", [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], env, work
        )
        wait_for("the webserver", lambda: server_info(deploy.webserver_url), 180, deploy.dead)
        wait_for("the code location", lambda: location_loaded(deploy.webserver_url), 240, deploy.dead)
        yield deploy
    finally:
        for role in ("daemon", "webserver", "code_server"):
            if role in services:
                stop_group(services[role].process)
