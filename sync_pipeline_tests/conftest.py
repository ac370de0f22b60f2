"""Fixtures that give each test its own real databases.

Every test that asks for a database gets a fresh one: a new SQLite file under ``tmp_path``, a new
PostgreSQL database, or a new MariaDB database (utf8mb4), dropped afterwards. Server URLs come from
``SYNC_PIPELINE_TEST_PG`` / ``SYNC_PIPELINE_TEST_MYSQL`` (defaults: the local servers). When a server
cannot be reached the test fails under CI (``CI`` set, as ``.ci/run`` does) and is skipped elsewhere,
so a laptop without MariaDB can still run the rest.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa

from sync_pipeline_tests.helpers import PAIR_IDS, PAIRS, Pair, open_pair

PG_ADMIN_URL = os.environ.get(
    "SYNC_PIPELINE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
MYSQL_ADMIN_URL = os.environ.get("SYNC_PIPELINE_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1:3306/")

ENGINES = ("sqlite", "postgresql", "mysql")

MakeDbUrl = Callable[[str, str], str]


@dataclass
class _Server:
    """Creates databases on one server and drops them all at teardown."""

    admin_url: str
    what: str
    create: str
    drop: str
    query: dict[str, str] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)
    engine: sa.Engine | None = None

    def new_database(self) -> str:
        if self.engine is None:
            self.engine = _admin_engine(self.admin_url, self.what)
        name = f"sp_test_{uuid.uuid4().hex[:12]}"
        with self.engine.connect() as conn:
            conn.exec_driver_sql(self.create.format(name=name))
        self.created.append(name)
        url = sa.make_url(self.admin_url).set(database=name).update_query_dict(self.query)
        return url.render_as_string(hide_password=False)

    def drop_all(self) -> None:
        if self.engine is None:
            return
        with self.engine.connect() as conn:
            for name in self.created:
                conn.exec_driver_sql(self.drop.format(name=name))
        self.engine.dispose()


def _admin_engine(url: str, what: str) -> sa.Engine:
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with engine.connect():
            pass
    except sa.exc.OperationalError as error:
        message = f"{what} is not reachable: {error}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message + " (skipped outside CI)")
    return engine


@pytest.fixture
def make_db_url(tmp_path: Path) -> Iterator[MakeDbUrl]:
    """``make(engine, name) -> url``: a fresh database of that engine (sqlite, postgresql, mysql).

    One test can ask for several databases of the same or different engines (a source and a target);
    server databases are dropped when the test ends.
    """
    servers = {
        "postgresql": _Server(
            PG_ADMIN_URL,
            "PostgreSQL",
            'CREATE DATABASE "{name}"',
            'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
        ),
        "mysql": _Server(
            MYSQL_ADMIN_URL,
            "MariaDB",
            "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
            "DROP DATABASE IF EXISTS `{name}`",
            {"charset": "utf8mb4"},
        ),
    }

    def make(engine: str, name: str) -> str:
        if engine == "sqlite":
            return f"sqlite:///{tmp_path / name}.db"
        return servers[engine].new_database()

    yield make
    for server in servers.values():
        server.drop_all()


@pytest.fixture
def pg_url(make_db_url: MakeDbUrl) -> str:
    """URL of a fresh PostgreSQL database."""
    return make_db_url("postgresql", "pg")


@pytest.fixture
def mysql_url(make_db_url: MakeDbUrl) -> str:
    """URL of a fresh MariaDB database."""
    return make_db_url("mysql", "mysql")


@pytest.fixture
def sqlite_url(make_db_url: MakeDbUrl) -> str:
    """URL of a fresh SQLite file."""
    return make_db_url("sqlite", "sqlite")


@pytest.fixture(params=PAIRS, ids=PAIR_IDS)
def pair(request: pytest.FixtureRequest, make_db_url: MakeDbUrl) -> Iterator[Pair]:
    """A fresh source and target database of one engine pair: a test asking for it runs on every pair."""
    yield from open_pair(make_db_url, *request.param)


@pytest.fixture(autouse=True, scope="session")
def _demo_data_outside_the_checkout(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Importing the definitions without a config creates the demo's data folder: keep it in a temp dir."""
    os.environ.setdefault("SYNC_PIPELINE_DATA_DIR", str(tmp_path_factory.mktemp("demo-data")))


# --- private servers, for the tests that restart one (test_restart.py) ---------------------------
# Imported here, with the fixtures that use it, so that this section stands on its own.
from sync_pipeline_tests.private_servers import (  # noqa: E402
    PrivateMariaDB,
    PrivatePostgres,
    PrivateServer,
    private_server,
)


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivateServer]:
    """A PostgreSQL cluster of the test module's own on a free port of 127.0.0.1, free to restart."""
    with private_server(PrivatePostgres) as server:
        yield server


@pytest.fixture(scope="module")
def private_mariadb() -> Iterator[PrivateServer]:
    """A MariaDB server of the test module's own on a free port of 127.0.0.1, free to restart."""
    with private_server(PrivateMariaDB) as server:
        yield server
