"""Bad configurations and bad databases fail before anything is written, naming the culprit.

SPEC section 3-4 and the issue: a missing key, an unknown connection, a missing table or column and
an incompatible target fail with messages naming the culprit, and write nothing; a password in a URL
never appears in any message. Each test calls :func:`sync_pipeline.engine.sync.sync_partition` (or the
config parser) directly on real databases, checks the error type and its message, and then checks
that the target is exactly as it was: no table created, the same rows.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql

from sync_pipeline.cli.validate import validate_table
from sync_pipeline.config import TableConfig, parse_config
from sync_pipeline.engine.db.engine import is_driver_error, translate_error
from sync_pipeline.engine.diff.window import Window
from sync_pipeline.engine.sync import sync_partition
from sync_pipeline.errors import ConfigError, DatabaseUnavailable, SchemaError, SyncPipelineError
from sync_pipeline_tests.conftest import ENGINES, MakeDbUrl

PASSWORD = "hunter2-secret"  # noqa: S105 -- a marker searched for in messages, not a credential
WINDOW = Window.from_partition_key("2026-11-30-08:00")
IN_WINDOW = datetime(2026, 11, 30, 8, 15, tzinfo=UTC)

ColumnFactory = Callable[[], list[sa.Column[Any]]]


def orders_columns() -> list[sa.Column[Any]]:
    """The well-formed ``orders`` table: integer key, a text column, an aware timestamp."""
    return [
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("note", sa.Text),
        sa.Column("updated_at", sa.DateTime(timezone=True)),
    ]


def create_table(
    url: str, columns: list[sa.Column[Any]], rows: list[dict[str, Any]], name: str = "orders"
) -> None:
    """Create ``name`` from SQLAlchemy columns (rendered by the URL's dialect) and insert ``rows``."""
    engine = sa.create_engine(url)
    try:
        table = sa.Table(name, sa.MetaData(), *columns)
        with engine.begin() as conn:
            table.create(conn)
            if rows:
                conn.execute(table.insert(), rows)
    finally:
        engine.dispose()


def seed_source(url: str, columns: list[sa.Column[Any]] | None = None) -> None:
    """A source ``orders`` table with two rows in the window and one outside it."""
    create_table(
        url,
        columns if columns is not None else orders_columns(),
        [
            {"id": 1, "note": "one", "updated_at": IN_WINDOW},
            {"id": 2, "note": "two", "updated_at": IN_WINDOW},
            {"id": 3, "note": "three", "updated_at": datetime(2026, 11, 30, 10, tzinfo=UTC)},
        ],
    )


def snapshot(url: str, name: str = "orders") -> list[tuple[Any, ...]] | None:
    """Every row of ``name`` in a stable order, or None when the table does not exist."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(name):
                return None
            table = sa.Table(name, sa.MetaData(), autoload_with=conn)
            return [tuple(row) for row in conn.execute(sa.select(table).order_by(*table.columns))]
    finally:
        engine.dispose()


def table_config(**overrides: Any) -> TableConfig:
    """The ``orders`` table config the tests break one field at a time."""
    fields: dict[str, Any] = {
        "name": "orders",
        "source": {"connection": "app", "table": "orders"},
        "target": {"connection": "warehouse", "table": "orders"},
        "primary_key": ["id"],
        "updated_at": "updated_at",
        "start": "2026-11-01T00:00:00",
    }
    fields.update(overrides)
    return TableConfig.model_validate(fields)


def schema_error(table: TableConfig, source_url: str, target_url: str) -> str:
    """Run a sync that must be refused before writing and return the SchemaError message."""
    with pytest.raises(SchemaError) as info:
        sync_partition(table, source_url, target_url, WINDOW)
    return str(info.value)


# --------------------------------------------------------------------------------------------------
# The source does not match the config


def refused_by_source(
    make_db_url: MakeDbUrl, table: TableConfig, source_engine: str, target_engine: str
) -> str:
    """Sync a seeded source that ``table`` does not match into an empty database of ``target_engine``.

    The sync must be refused before writing: no target table is created. Returns the SchemaError
    message, for the test to check what it names.
    """
    source, target = make_db_url(source_engine, "source"), make_db_url(target_engine, "target")
    seed_source(source)
    message = schema_error(table, source, target)
    assert snapshot(target) is None
    return message


@pytest.mark.parametrize("target_engine", ENGINES)
def test_missing_source_table_names_it_and_creates_no_target(
    make_db_url: MakeDbUrl, target_engine: str
) -> None:
    """A source table that does not exist is named, with its connection, and no target is created."""
    source, target = make_db_url("sqlite", "source"), make_db_url(target_engine, "target")
    create_table(source, orders_columns(), [], name="other")
    message = schema_error(table_config(), source, target)
    assert "source table 'orders'" in message
    assert "'app'" in message
    assert "does not exist" in message
    assert snapshot(target) is None


def test_missing_source_table_in_dry_run_too(make_db_url: MakeDbUrl) -> None:
    """A dry run checks the source as strictly as a real run."""
    source, target = make_db_url("sqlite", "source"), make_db_url("postgresql", "target")
    create_table(source, orders_columns(), [], name="other")
    with pytest.raises(SchemaError, match="source table 'orders'"):
        sync_partition(table_config(), source, target, WINDOW, dry_run=True)
    assert snapshot(target) is None


@pytest.mark.parametrize("target_engine", ["mysql", "sqlite"])
def test_missing_primary_key_column_names_it(make_db_url: MakeDbUrl, target_engine: str) -> None:
    """A primary_key column the source lacks is named, with the columns the table does have."""
    message = refused_by_source(make_db_url, table_config(primary_key=["order_id"]), "sqlite", target_engine)
    assert "primary_key" in message
    assert "'order_id'" in message
    assert "id, note, updated_at" in message  # what the table has, to spot the typo


def test_missing_primary_key_column_of_a_composite_key(make_db_url: MakeDbUrl) -> None:
    """In a composite key only the missing column is named."""
    message = refused_by_source(
        make_db_url, table_config(primary_key=["id", "tenant"]), "postgresql", "sqlite"
    )
    assert "'tenant'" in message
    assert "'id'" not in message.split("not found")[0]


@pytest.mark.parametrize("target_engine", ["postgresql", "sqlite"])
def test_missing_updated_at_column_names_it(make_db_url: MakeDbUrl, target_engine: str) -> None:
    """An updated_at column the source lacks is named."""
    message = refused_by_source(make_db_url, table_config(updated_at="modified_at"), "sqlite", target_engine)
    assert "updated_at" in message
    assert "'modified_at'" in message


def test_missing_listed_column_names_it(make_db_url: MakeDbUrl) -> None:
    """A column listed under ``columns`` that the source lacks is named."""
    message = refused_by_source(
        make_db_url, table_config(columns=["id", "amount", "updated_at"]), "sqlite", "sqlite"
    )
    assert "'amount'" in message


@pytest.mark.parametrize("source_engine", ENGINES)
def test_updated_at_that_is_not_a_timestamp_names_it(make_db_url: MakeDbUrl, source_engine: str) -> None:
    """An updated_at column of integer type is refused, naming the column and its type."""
    source, target = make_db_url(source_engine, "source"), make_db_url("sqlite", "target")
    create_table(
        source,
        [
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("version", sa.Integer),
        ],
        [{"id": 1, "version": 7}],
    )
    message = schema_error(table_config(updated_at="version"), source, target)
    assert "'version'" in message
    assert "not a timestamp" in message
    assert snapshot(target) is None


# --------------------------------------------------------------------------------------------------
# An existing target cannot receive the source's rows

TARGET_ROWS = [{"id": 1, "note": "old", "updated_at": datetime(2026, 11, 1, tzinfo=UTC)}]


def refused_by_target(
    make_db_url: MakeDbUrl,
    target_engine: str,
    columns: list[sa.Column[Any]],
    rows: list[dict[str, Any]],
    table: TableConfig | None = None,
) -> str:
    """Sync the seeded SQLite source into an existing ``orders`` target of ``columns`` holding ``rows``.

    The sync must be refused before writing: the target is checked to hold exactly what it held.
    Returns the SchemaError message, for the test to check what it names.
    """
    source, target = make_db_url("sqlite", "source"), make_db_url(target_engine, "target")
    seed_source(source)
    create_table(target, columns, rows)
    before = snapshot(target)
    message = schema_error(table or table_config(), source, target)
    assert snapshot(target) == before
    return message


@pytest.mark.parametrize("target_engine", ENGINES)
def test_target_missing_a_column_names_it_and_keeps_its_rows(
    make_db_url: MakeDbUrl, target_engine: str
) -> None:
    """With ``add_missing_columns: false``, an existing target without a synced column is refused,
    naming the column and the setting that would add it; its rows stay. (The default adds it:
    test_schema_changes.py.)
    """
    message = refused_by_target(
        make_db_url,
        target_engine,
        [
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("updated_at", sa.DateTime(timezone=True)),
        ],
        [{"id": 1, "updated_at": datetime(2026, 11, 1, tzinfo=UTC)}],
        table_config(add_missing_columns=False),
    )
    assert "target table 'orders'" in message
    assert "missing column(s) 'note'" in message
    assert "add_missing_columns: true" in message


@pytest.mark.parametrize("target_engine", ENGINES)
def test_target_with_incompatible_type_names_the_column(make_db_url: MakeDbUrl, target_engine: str) -> None:
    """A text source column cannot land in an integer target column: the column and both types are named."""
    message = refused_by_target(
        make_db_url,
        target_engine,
        [
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("note", sa.Integer),
            sa.Column("updated_at", sa.DateTime(timezone=True)),
        ],
        [{"id": 1, "note": 5, "updated_at": datetime(2026, 11, 1, tzinfo=UTC)}],
    )
    assert "column 'note'" in message
    assert "(integer)" in message
    assert "(text)" in message


@pytest.mark.parametrize("target_engine", ENGINES)
def test_target_without_unique_key_is_refused(make_db_url: MakeDbUrl, target_engine: str) -> None:
    """A target with no primary key or unique index on the key columns cannot be upserted into."""
    message = refused_by_target(
        make_db_url,
        target_engine,
        [
            sa.Column("id", sa.Integer),
            sa.Column("note", sa.Text),
            sa.Column("updated_at", sa.DateTime(timezone=True)),
        ],
        TARGET_ROWS,
    )
    assert "no primary key or unique index on exactly (id)" in message


def test_target_keyed_on_other_columns_is_refused(make_db_url: MakeDbUrl) -> None:
    """A primary key on (id, note) is not a unique index on exactly (id): the upsert could duplicate."""
    message = refused_by_target(
        make_db_url,
        "postgresql",
        [
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("note", sa.String(50), primary_key=True),
            sa.Column("updated_at", sa.DateTime(timezone=True)),
        ],
        TARGET_ROWS,
    )
    assert "exactly (id)" in message


def test_target_with_key_of_another_type_is_refused(make_db_url: MakeDbUrl) -> None:
    """Keys are merged in order on both sides, so an integer source key and a text target key clash."""
    message = refused_by_target(
        make_db_url,
        "mysql",
        [
            sa.Column("id", sa.String(20), primary_key=True),
            sa.Column("note", sa.Text),
            sa.Column("updated_at", sa.DateTime(timezone=True)),
        ],
        [{"id": "1", "note": "old", "updated_at": datetime(2026, 11, 1)}],
    )
    assert "key column 'id'" in message


def test_target_updated_at_that_is_not_a_timestamp(make_db_url: MakeDbUrl) -> None:
    """A target whose updated_at is text (outside SQLite) cannot be compared by time: refused."""
    message = refused_by_target(
        make_db_url,
        "postgresql",
        [
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("note", sa.Text),
            sa.Column("updated_at", sa.Text),
        ],
        [{"id": 1, "note": "old", "updated_at": "yesterday"}],
    )
    assert "updated_at" in message


def _time_tables(
    make_db_url: MakeDbUrl, target_time: sa.types.TypeEngine[Any], target_kind: str = "mysql"
) -> tuple[str, str]:
    """A PostgreSQL source whose ``at`` is ``time`` (microseconds), and an existing target whose
    ``at`` is ``target_time``, empty.
    """
    source, target = make_db_url("postgresql", "source"), make_db_url(target_kind, "target")
    columns = orders_columns()
    create_table(
        source,
        [*columns, sa.Column("at", sa.Time)],
        [{"id": 1, "note": "one", "updated_at": IN_WINDOW, "at": time(8, 5, 0, 7)}],
    )
    create_table(target, [*orders_columns(), sa.Column("at", target_time)], [])
    return source, target


@pytest.mark.parametrize(
    ("target_kind", "target_time"), [("mysql", mysql.TIME()), ("postgresql", postgresql.TIME(precision=0))]
)
def test_time_target_without_fraction_digits_is_refused(
    make_db_url: MakeDbUrl, target_kind: str, target_time: sa.types.TypeEngine[Any]
) -> None:
    """An existing target whose time column keeps whole seconds (MariaDB ``TIME``, fsp 0; PostgreSQL
    ``time(0)``) would store 08:05:00.000007 as 08:05:00 without an error, and every verification would
    then differ: the sync (and ``validate``, the same plan) refuses it before writing, naming the
    table, the column and the fix.
    """
    source, target = _time_tables(make_db_url, target_time, target_kind)
    message = schema_error(table_config(), source, target)
    assert snapshot(target) == []
    assert "orders" in message
    assert "column 'at' keeps 0 fraction digits of a second (TIME" in message
    assert "where the source's keeps 6" in message
    assert "TIME(6)" in message
    # ``validate`` plans the same way, writing nothing: it reports the same problem.
    config = parse_config(CONFIG.replace("sqlite:///app.db", source).replace(WAREHOUSE, target))
    assert validate_table(config, config.table("orders")) == (message, False)


def test_mariadb_time_6_target_keeps_the_microseconds(make_db_url: MakeDbUrl) -> None:
    """A MariaDB ``TIME(6)`` target (what the sync creates for a time column) holds every value."""
    source, target = _time_tables(make_db_url, mysql.TIME(fsp=6))
    stats = sync_partition(table_config(), source, target, WINDOW)
    assert stats.inserted == 1
    [(at,)] = [r[-1:] for r in snapshot(target) or []]
    assert at in (time(8, 5, 0, 7), timedelta(hours=8, minutes=5, microseconds=7))


# --------------------------------------------------------------------------------------------------
# The configuration is wrong

WAREHOUSE = "postgresql+psycopg://sync:hunter2-secret@localhost:5432/warehouse"
CONFIG = """\
connections:
  app: {url: "sqlite:///app.db"}
  warehouse: {url: "postgresql+psycopg://sync:hunter2-secret@localhost:5432/warehouse"}
tables:
  - name: orders
    source: {connection: app, table: orders}
    target: {connection: warehouse, table: orders}
    primary_key: [id]
    updated_at: updated_at
    start: "2026-11-01T00:00:00"
"""


def test_unknown_connection_is_named() -> None:
    """A table referring to a connection that is not defined names it, the table, the field."""
    text = CONFIG.replace("{connection: warehouse, table: orders}", "{connection: dwh, table: orders}")
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="sync.yaml")
    message = str(info.value)
    assert "sync.yaml" in message
    assert "table 'orders'" in message
    assert "target.connection" in message
    assert "unknown connection 'dwh'" in message
    assert "'app', 'warehouse'" in message  # the ones that exist
    assert PASSWORD not in message


@pytest.mark.parametrize("missing", ["primary_key", "updated_at", "start"])
def test_missing_key_is_named(missing: str) -> None:
    """A required table key left out is named with the table."""
    lines = [line for line in CONFIG.splitlines() if not line.strip().startswith(f"{missing}:")]
    with pytest.raises(ConfigError) as info:
        parse_config("\n".join(lines), source="sync.yaml")
    message = str(info.value)
    assert f"table 'orders': field '{missing}': required key is missing" in message
    assert PASSWORD not in message


def test_config_errors_never_show_the_password() -> None:
    """Even an error in the field holding the URL does not echo it."""
    text = CONFIG.replace("postgresql+psycopg://", "oracle://")
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="sync.yaml")
    assert "unsupported backend 'oracle'" in str(info.value)
    assert PASSWORD not in "".join(traceback.format_exception(info.value))


# --------------------------------------------------------------------------------------------------
# An unreachable database

UNREACHABLE = {
    "postgresql": f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:1/db",
    "mysql": f"mysql+pymysql://root:{PASSWORD}@127.0.0.1:1/db",
}


def _whole_chain(error: BaseException) -> str:
    """Everything an exception can show: its formatted traceback, and str/repr of every link of its chain."""
    parts = ["".join(traceback.format_exception(error))]
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        parts += [str(link), repr(link), repr(link.args)]
        orig = getattr(link, "orig", None)
        if orig is not None:
            parts += [str(orig), repr(orig)]
        link = link.__cause__ or link.__context__
    return "\n".join(parts)


@pytest.mark.parametrize("backend", sorted(UNREACHABLE))
@pytest.mark.parametrize("side", ["source", "target"])
def test_unreachable_database_is_transient_and_hides_the_password(
    make_db_url: MakeDbUrl, backend: str, side: str
) -> None:
    """A refused connection raises DatabaseUnavailable (retried by Dagster) with no password anywhere."""
    reachable = make_db_url("sqlite", "reachable")
    if side == "source":
        source, target = UNREACHABLE[backend], reachable
    else:
        seed_source(reachable)
        source, target = reachable, UNREACHABLE[backend]
    with pytest.raises(DatabaseUnavailable) as info:
        sync_partition(table_config(), source, target, WINDOW)
    assert "orders" in str(info.value)  # says which sync failed
    assert PASSWORD not in _whole_chain(info.value)
    if side == "target":
        assert snapshot(reachable) is not None  # the source is only read


def test_connection_lost_under_the_driver_is_transient(pg_url: str) -> None:
    """An error raised by psycopg itself (as during a COPY, which runs on the raw connection), not
    wrapped by SQLAlchemy, is still recognised: a killed backend becomes DatabaseUnavailable.
    """
    import psycopg

    url = sa.make_url(pg_url)
    with psycopg.connect(host=url.host, port=url.port, user=url.username, dbname=url.database) as conn:
        admin = sa.create_engine(pg_url)
        try:
            with admin.begin() as killer:
                killer.execute(sa.select(sa.func.pg_terminate_backend(conn.info.backend_pid)))
        finally:
            admin.dispose()
        with pytest.raises(psycopg.OperationalError) as caught:
            conn.execute("SELECT 1")
    assert is_driver_error(caught.value)
    assert not is_driver_error(ValueError("not from a driver"))
    translated = translate_error(caught.value, where="sync of orders")
    assert isinstance(translated, DatabaseUnavailable)
    assert str(translated).startswith("sync of orders: ")


def test_every_validation_error_is_a_sync_pipeline_error(make_db_url: MakeDbUrl) -> None:
    """Callers (Dagster's retry policy, the CLI) can catch one base class for all of the above."""
    assert issubclass(SchemaError, SyncPipelineError)
    assert issubclass(ConfigError, SyncPipelineError)
    assert issubclass(DatabaseUnavailable, SyncPipelineError)
    source, target = make_db_url("sqlite", "source"), make_db_url("sqlite", "target")
    with pytest.raises(SyncPipelineError):
        sync_partition(table_config(), source, target, WINDOW)
