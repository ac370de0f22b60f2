"""Private database servers that a test may stop and restart: a PostgreSQL cluster and a MariaDB.

The shared servers on 127.0.0.1:5432 and :3306 serve every test run on the machine, so a test that
takes a server away while a sync is running gets its own: a fresh data directory under a temporary
folder, listening on 127.0.0.1 only at a free port, its socket in that folder, trusting local
connections (nothing else can reach it). ``start()``, ``stop()`` and ``restart()`` return only once the
server has answered a query (or has stopped), polling against a deadline.

PostgreSQL refuses to run as root: when the tests run as root, its binaries run as the ``postgres``
OS user (``runuser``), which then owns the folder. MariaDB runs as the user running the tests, as a
child process of this one; stopping it is a SIGTERM (a clean shutdown) to that child.

A server that cannot be started (binaries missing, no ``postgres`` user) fails the test under CI
(``CI`` set) and skips it elsewhere, like the shared servers in ``conftest.py``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import psycopg
import pymysql
import pytest
import sqlalchemy as sa

from sync_pipeline_tests.helpers import free_port

START_SECONDS = 60.0  # a server that has not answered by then has failed to start
STOP_SECONDS = 60.0
POLL_SECONDS = 0.05  # the interval between two probes while waiting for a server


class ServerUnavailable(RuntimeError):
    """A private server could not be set up on this machine (binaries missing, no user to run it)."""


def _run(command: list[str], what: str, timeout: float) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}): {done.stdout}{done.stderr}")


class PrivateServer(ABC):
    """One server of the test's own, in ``root``; ``admin_url`` connects as its superuser."""

    kind: ClassVar[str]  # the engine kind the test helpers use: "postgresql" or "mysql"
    name: ClassVar[str]

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.databases: list[str] = []

    @property
    @abstractmethod
    def admin_url(self) -> str: ...

    @abstractmethod
    def initialize(self) -> None:
        """Create the data directory (once)."""

    @abstractmethod
    def _launch(self) -> None:
        """Start the server process; it may not accept connections yet."""

    @abstractmethod
    def _halt(self) -> None:
        """Stop the server cleanly and return once it has exited."""

    @abstractmethod
    def _probe(self) -> None:
        """Connect and run a query; raises if the server does not answer."""

    @abstractmethod
    def log_tail(self) -> str:
        """The end of the server's log, for the message of a failure."""

    @abstractmethod
    def running(self) -> bool:
        """Whether the server process is up (it may not answer yet)."""

    def start(self) -> None:
        self._launch()
        self.wait_until_answering()

    def stop(self) -> None:
        self._halt()

    def restart(self) -> None:
        """Stop the server (sessions are ended, open transactions roll back), start it, wait for it."""
        self.stop()
        self.start()

    def answers(self) -> bool:
        try:
            self._probe()
        except (psycopg.Error, pymysql.MySQLError, OSError):
            return False
        return True

    def wait_until_answering(self, timeout: float = START_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while not self.answers():
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"private {self.name} on port {self.port} did not answer within {timeout:g}s:\n"
                    f"{self.log_tail()}"
                )
            self._check_alive()
            time.sleep(POLL_SECONDS)

    def _check_alive(self) -> None:  # noqa: B027 (optional hook: only a server run as a child can tell)
        """Raise at once if the server process has already exited."""

    def url(self, database: str) -> str:
        return sa.make_url(self.admin_url).set(database=database).render_as_string(hide_password=False)

    @abstractmethod
    def create_database_sql(self, name: str) -> str: ...

    @abstractmethod
    def drop_database_sql(self, name: str) -> str: ...

    def new_database(self) -> str:
        """A fresh database on this server; returns its URL."""
        name = f"sp_private_{uuid.uuid4().hex[:12]}"
        self._admin(self.create_database_sql(name))
        self.databases.append(name)
        return self.url(name)

    def drop_databases(self) -> None:
        for name in self.databases:
            self._admin(self.drop_database_sql(name))
        self.databases.clear()

    def _admin(self, sql: str) -> None:
        engine = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(sql)
        finally:
            engine.dispose()


def _postgres_bin_dir() -> Path:
    override = os.environ.get("SYNC_PIPELINE_TEST_PG_BIN")
    if override:
        return Path(override)
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).parent
    # Debian keeps one folder per major version, off the PATH: take the newest.
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise ServerUnavailable("no PostgreSQL binaries (pg_ctl) found; set SYNC_PIPELINE_TEST_PG_BIN")
    return Path(found[-1]).parent


class PrivatePostgres(PrivateServer):
    """A PostgreSQL cluster initialised in ``root/data``, managed with ``pg_ctl``."""

    kind = "postgresql"
    name = "PostgreSQL"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.bin = _postgres_bin_dir()
        self.data = root / "data"
        self.socket_dir = root / "socket"
        self.log = root / "postgresql.log"
        # PostgreSQL refuses to run as root: run it as the postgres user, who then owns the folder.
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            if runuser is None:
                raise ServerUnavailable(
                    "running as root, and runuser is missing to run PostgreSQL as postgres"
                )
            try:
                shutil.chown(root, "postgres", "postgres")
            except LookupError as error:
                raise ServerUnavailable(f"running as root, and there is no postgres user: {error}") from error
            self.as_user = [runuser, "-u", "postgres", "--"]

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _command(self, program: str, *args: str) -> list[str]:
        return [*self.as_user, str(self.bin / program), *args]

    def initialize(self) -> None:
        self.socket_dir.mkdir()
        if self.as_user:
            shutil.chown(self.socket_dir, "postgres", "postgres")
        _run(
            self._command(
                "initdb",
                "--pgdata",
                str(self.data),
                "--username",
                "postgres",
                "--auth",
                "trust",  # loopback only, on a port of its own, for the life of one test module
                "--encoding",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ),
            "initdb",
            timeout=START_SECONDS,
        )

    def _launch(self) -> None:
        options = " ".join(
            (
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.socket_dir}",
                "-c fsync=off",  # a throwaway cluster: durability across an OS crash is not tested
                "-c max_connections=50",
                "-c shared_buffers=32MB",
            )
        )
        # pg_ctl -W returns once the postmaster is launched; wait_until_answering then polls it.
        _run(
            self._command("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-W", "start"),
            "pg_ctl start",
            timeout=START_SECONDS,
        )

    def _halt(self) -> None:
        # Fast shutdown: every session is terminated (SQLSTATE 57P01), open transactions roll back.
        _run(
            self._command(
                "pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", f"{STOP_SECONDS:.0f}", "stop"
            ),
            "pg_ctl stop",
            timeout=STOP_SECONDS + 10,
        )

    def running(self) -> bool:
        status = subprocess.run(
            self._command("pg_ctl", "-D", str(self.data), "status"), capture_output=True, check=False
        )
        return status.returncode == 0

    def _probe(self) -> None:
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", connect_timeout=2
        ) as conn:
            conn.execute("SELECT 1")

    def log_tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        except OSError as error:
            return f"(no log: {error})"

    def create_database_sql(self, name: str) -> str:
        return f'CREATE DATABASE "{name}"'

    def drop_database_sql(self, name: str) -> str:
        return f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'


def _mariadb_binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name) or next(
            (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
        )
        if found:
            return found
    raise ServerUnavailable(f"none of {', '.join(names)} found")


class PrivateMariaDB(PrivateServer):
    """A MariaDB server whose data directory is ``root/data``, run as a child process of the tests."""

    kind = "mysql"
    name = "MariaDB"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.server = _mariadb_binary("mariadbd", "mysqld")
        self.install = _mariadb_binary("mariadb-install-db", "mysql_install_db")
        self.data = root / "data"
        self.socket = root / "mysqld.sock"
        self.log = root / "mariadb.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def admin_url(self) -> str:
        return f"mysql+pymysql://root@127.0.0.1:{self.port}/?charset=utf8mb4"

    def initialize(self) -> None:
        _run(
            [
                self.install,
                "--no-defaults",  # the machine's my.cnf names the shared server's paths
                f"--datadir={self.data}",
                f"--user={_user_name()}",
                "--auth-root-authentication-method=normal",  # root without a password, over TCP too
                "--skip-test-db",
            ],
            "mariadb-install-db",
            timeout=START_SECONDS,
        )

    def _launch(self) -> None:
        assert self.process is None, "already running"
        self.process = subprocess.Popen(
            [
                self.server,
                "--no-defaults",
                f"--datadir={self.data}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--socket={self.socket}",
                f"--pid-file={self.root / 'mariadbd.pid'}",
                f"--log-error={self.log}",
                f"--user={_user_name()}",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=64M",
                "--innodb-buffer-pool-dump-at-shutdown=0",
                "--innodb-buffer-pool-load-at-startup=0",
                "--innodb-flush-log-at-trx-commit=2",
                "--max-connections=50",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            code = self.process.returncode
            self.process = None
            raise RuntimeError(f"private MariaDB exited with {code} while starting:\n{self.log_tail()}")

    def _halt(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()  # SIGTERM: a clean shutdown; sessions are ended, transactions roll back
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_SECONDS)
            raise RuntimeError(f"private MariaDB did not shut down in {STOP_SECONDS:g}s; killed it") from None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _probe(self) -> None:
        conn = pymysql.connect(host="127.0.0.1", port=self.port, user="root", connect_timeout=2)
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1")
        finally:
            conn.close()

    def log_tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        except OSError as error:
            return f"(no log: {error})"

    def create_database_sql(self, name: str) -> str:
        return f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"

    def drop_database_sql(self, name: str) -> str:
        return f"DROP DATABASE IF EXISTS `{name}`"


def _user_name() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


@contextmanager
def private_server(server_class: type[PrivateServer]) -> Iterator[PrivateServer]:
    """A running private server of ``server_class``, stopped and deleted on exit whatever happens.

    When the server cannot be set up the test fails under CI and is skipped elsewhere.
    """
    # Not under pytest's tmp_path: its parents are private to root, and postgres must reach the folder.
    root = Path(tempfile.mkdtemp(prefix=f"sync-pipeline-private-{server_class.kind}-"))
    server: PrivateServer | None = None
    try:
        try:
            server = server_class(root)
            server.initialize()
            server.start()
        except (ServerUnavailable, RuntimeError, OSError, subprocess.TimeoutExpired) as error:
            message = f"a private {server_class.name} server could not be started: {error}"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message + " (skipped outside CI)")
        yield server
    finally:
        try:
            if server is not None and server.running():
                server.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)
