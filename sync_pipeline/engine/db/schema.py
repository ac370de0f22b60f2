"""Reflection, type families and target-table creation across engines.

A column's *family* (integer, decimal, text, timestamp, JSON, ...) is what survives a trip between
engines. The family decides whether two columns are compatible, how a target column is created from a
source column, how values are converted on the way, and whether keys can be hashed in the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql

from sync_pipeline.errors import SchemaError


class Family(StrEnum):
    INTEGER = "integer"
    DECIMAL = "decimal"
    FLOAT = "float"
    TEXT = "text"
    BOOLEAN = "boolean"
    TIMESTAMP = "timestamp"
    DATE = "date"
    TIME = "time"
    INTERVAL = "interval"
    JSON = "json"
    BINARY = "binary"
    UUID = "uuid"
    OTHER = "other"


# Which target families may receive which source family without losing data.
_ACCEPTS: dict[Family, set[Family]] = {
    Family.INTEGER: {Family.INTEGER, Family.DECIMAL, Family.FLOAT, Family.TEXT},
    Family.DECIMAL: {Family.DECIMAL, Family.TEXT},
    Family.FLOAT: {Family.FLOAT, Family.TEXT},
    Family.TEXT: {Family.TEXT, Family.JSON},
    Family.BOOLEAN: {Family.BOOLEAN, Family.INTEGER},
    Family.TIMESTAMP: {Family.TIMESTAMP},
    Family.DATE: {Family.DATE, Family.TIMESTAMP},
    Family.TIME: {Family.TIME, Family.TEXT},
    Family.INTERVAL: {Family.INTERVAL, Family.TEXT},
    Family.JSON: {Family.JSON, Family.TEXT},
    Family.BINARY: {Family.BINARY},
    Family.UUID: {Family.UUID, Family.TEXT},
    Family.OTHER: {Family.OTHER, Family.TEXT},
}


def family_of(type_: sa.types.TypeEngine[Any]) -> Family:
    """The family of a reflected column type (dialect types included)."""
    checks: list[tuple[type[sa.types.TypeEngine[Any]], Family]] = [
        (sa.Boolean, Family.BOOLEAN),
        (sa.Integer, Family.INTEGER),
        (sa.Float, Family.FLOAT),  # before Numeric: Float subclasses it
        (sa.Numeric, Family.DECIMAL),
        (sa.DateTime, Family.TIMESTAMP),
        (sa.Date, Family.DATE),
        (sa.Time, Family.TIME),
        (sa.Interval, Family.INTERVAL),
        (sa.JSON, Family.JSON),
        (sa.Uuid, Family.UUID),
        (sa.LargeBinary, Family.BINARY),
        (sa.types._Binary, Family.BINARY),
        (sa.String, Family.TEXT),
    ]
    if isinstance(type_, mysql.TINYINT) and getattr(type_, "display_width", None) == 1:
        return Family.BOOLEAN
    if isinstance(type_, postgresql.INTERVAL):
        return Family.INTERVAL
    for klass, family in checks:
        if isinstance(type_, klass):
            return family
    return Family.OTHER


def is_timezone_aware(type_: sa.types.TypeEngine[Any]) -> bool:
    """Whether the column stores instants (timestamptz, MySQL TIMESTAMP) rather than wall times."""
    if isinstance(type_, mysql.TIMESTAMP):
        return True
    return bool(getattr(type_, "timezone", False))


def timestamp_precision(type_: sa.types.TypeEngine[Any], dialect: str) -> int:
    """Fractional-second digits a timestamp column keeps (MySQL DATETIME defaults to 0, others to 6)."""
    if dialect in ("mysql", "mariadb"):
        fsp = getattr(type_, "fsp", None)
        return int(fsp) if fsp is not None else 0
    precision = getattr(type_, "precision", None)
    return int(precision) if precision is not None else 6


@dataclass(frozen=True)
class TableName:
    """A table as the user named it, for reflection and for messages."""

    table: str
    schema: str | None
    side: str  # "source" or "target"
    connection: str

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}" if self.schema else self.table

    def __str__(self) -> str:
        return f"{self.side} table {self.qualified!r} (connection {self.connection!r})"


def reflect(conn: sa.Connection, name: TableName) -> sa.Table | None:
    """The live table, or ``None`` when it does not exist."""
    if not sa.inspect(conn).has_table(name.table, schema=name.schema):
        return None
    metadata = sa.MetaData()
    sa.event.listen(metadata, "column_reflect", _reflected_column)
    return sa.Table(name.table, metadata, schema=name.schema, autoload_with=conn)


def _reflected_column(inspector: sa.Inspector, _table: sa.Table, column: dict[str, Any]) -> None:
    """Correct two things SQLAlchemy's MySQL reflection gets wrong for a sync."""
    type_ = column["type"]
    # A reflected FLOAT/DOUBLE defaults to asdecimal=True, which renders every value read with 10
    # decimal places (3.141592653589793 -> 3.1415926536): floats must travel as floats.
    if isinstance(type_, sa.Float) and type_.asdecimal:
        type_.asdecimal = False
    # SHOW CREATE TABLE is parsed without unescaping: a column `a``b` comes back named "a``b"
    # instead of "a`b". Keys and indexes still find it by that raw name.
    if inspector.dialect.name in ("mysql", "mariadb"):
        column["name"] = column["name"].replace("``", "`")


def require_columns(table: sa.Table, name: TableName, columns: list[str], role: str) -> None:
    """Fail naming the columns that the config mentions but the live table lacks."""
    missing = [c for c in columns if c not in table.c]
    if missing:
        available = ", ".join(sorted(table.c.keys()))
        raise SchemaError(
            f"{name}: {role} column(s) {', '.join(map(repr, missing))} not found; the table has: {available}"
        )


def target_type(
    column: sa.Column[Any], target_dialect: str, *, is_key: bool, mariadb: bool = True
) -> sa.types.TypeEngine[Any]:
    """The type a target column gets when sync_pipeline creates it from the source's column.

    ``mariadb`` tells MariaDB from MySQL 8 when the target dialect is ``mysql``: their binary NO PAD
    collations have different names.
    """
    source_type = column.type
    family = family_of(source_type)
    mysql_target = target_dialect in ("mysql", "mariadb")
    if family is Family.TIMESTAMP:
        aware = is_timezone_aware(source_type)
        if target_dialect == "postgresql":
            return postgresql.TIMESTAMP(timezone=aware, precision=6)
        if mysql_target:
            return mysql.DATETIME(fsp=6)
        return sa.DateTime(timezone=aware)
    if family is Family.JSON:
        if target_dialect == "postgresql":
            return postgresql.JSONB(none_as_null=True)
        return sa.JSON(none_as_null=True)
    if family is Family.UUID:
        return sa.Uuid() if target_dialect == "postgresql" else sa.String(36)
    if family is Family.BINARY:
        if mysql_target:
            return mysql.LONGBLOB()
        return sa.LargeBinary()
    if family is Family.TEXT:
        length = getattr(source_type, "length", None)
        if mysql_target:
            # A binary NO PAD collation: 'a' and 'a ' are two keys, as in PostgreSQL and SQLite. Under
            # utf8mb4_bin (PAD SPACE) the unique index would make them one row.
            collation = "utf8mb4_nopad_bin" if mariadb else "utf8mb4_0900_bin"
            if is_key or (length and length <= 16383):
                return mysql.VARCHAR(length or 255, charset="utf8mb4", collation=collation)
            return mysql.LONGTEXT(charset="utf8mb4", collation=collation)
        if target_dialect == "postgresql" and length:
            return sa.String(length)
        return sa.Text()
    if family is Family.DECIMAL:
        precision = getattr(source_type, "precision", None)
        scale = getattr(source_type, "scale", None)
        if mysql_target and precision is None:
            return mysql.DECIMAL(65, 30)
        return sa.Numeric(precision, scale)
    if family is Family.FLOAT:
        return sa.Double() if target_dialect != "postgresql" else postgresql.DOUBLE_PRECISION()
    if family is Family.INTEGER:
        if isinstance(source_type, sa.BigInteger) or target_dialect == "sqlite":
            return sa.BigInteger() if target_dialect != "sqlite" else sa.Integer()
        return sa.Integer() if not isinstance(source_type, sa.SmallInteger) else sa.SmallInteger()
    if family is Family.BOOLEAN:
        return sa.Boolean()
    if family is Family.INTERVAL:
        return sa.Interval() if target_dialect == "postgresql" else sa.Text()
    try:
        generic = source_type.as_generic()
    except NotImplementedError:
        return sa.Text()
    return generic


def build_target_table(
    source: sa.Table,
    target: TableName,
    target_dialect: str,
    columns: list[str],
    primary_key: list[str],
    extra: list[sa.Column[Any]],
    *,
    mariadb: bool = True,
) -> sa.Table:
    """The target table definition derived from the source's reflected columns."""
    cols: list[sa.Column[Any]] = [
        sa.Column(
            name,
            target_type(source.c[name], target_dialect, is_key=name in primary_key, mariadb=mariadb),
            primary_key=name in primary_key,
            nullable=name not in primary_key,
            autoincrement=False,
        )
        for name in columns
    ]
    return sa.Table(target.table, sa.MetaData(), *cols, *extra, schema=target.schema)


def check_compatible(
    source: sa.Table,
    target: sa.Table,
    target_name: TableName,
    columns: list[str],
    primary_key: list[str],
    *,
    dialects: tuple[str, str] = ("", ""),
) -> None:
    """Fail before writing if the existing target cannot hold the source's rows.

    Every synced column must exist with a family that receives the source's without loss and is not
    narrower (fewer integer bits, a shorter declared length, fewer decimal digits); the key columns
    must be unique in the target (primary key or unique index) so upserts have a conflict target; a
    target column the sync does not write must accept rows without it (nullable or with a default).
    Each problem says how to fix it: a sync never drops, narrows or rewrites a column by itself.
    """
    problems: list[str] = []
    missing = [c for c in columns if c not in target.c]
    if missing:
        problems.append(
            f"missing column(s) {', '.join(map(repr, missing))} (add them to the target, or set "
            "add_missing_columns: true to let the sync add them as nullable columns)"
        )
    for name in columns:
        if name not in target.c:
            continue
        have, want = family_of(target.c[name].type), family_of(source.c[name].type)
        if have not in _ACCEPTS[want]:
            problems.append(
                f"column {name!r} is {target.c[name].type} ({have}) but the source's is "
                f"{source.c[name].type} ({want}); alter the target column to a {want} type, or drop the "
                "target table so the sync recreates it, then backfill"
            )
        elif "sqlite" not in dialects and (narrower := _narrower(source.c[name], target.c[name], want, have)):
            problems.append(f"column {name!r} {narrower}; widen the target column, then backfill")
    for column in target.columns:
        if column.name in columns or column.nullable or column.server_default is not None:
            continue
        if column.autoincrement is True or (column.primary_key and len(target.primary_key.columns) == 1):
            continue  # an identity the database fills in
        problems.append(
            f"column {column.name!r} is NOT NULL without a default but is not synced (dropped from the "
            "source, or not in columns): make it nullable or give it a default, or drop it"
        )
    if not _has_unique(target, primary_key):
        problems.append(
            f"no primary key or unique index on exactly ({', '.join(primary_key)}); "
            "sync_pipeline needs one to upsert"
        )
    if problems:
        raise SchemaError(f"{target_name} is incompatible with the source: " + "; ".join(problems))


def _narrower(source: sa.Column[Any], target: sa.Column[Any], want: Family, have: Family) -> str | None:
    """Why the target column holds less than the source's declares, when both say how much.

    Only declared sizes are compared, and never on SQLite, which enforces none: an unbounded source
    (TEXT, NUMERIC) says nothing a check could use, and the database refuses an oversized value
    within the sync's transaction, so nothing is half-written either way.
    """
    if want is not have:
        return None
    s, t = source.type, target.type
    if want is Family.INTEGER:
        s_bits, t_bits = _integer_bits(s), _integer_bits(t)
        if s_bits and t_bits and t_bits < s_bits:
            return f"is {t} ({t_bits} bits) but the source's is {s} ({s_bits} bits)"
    if want is Family.TEXT:
        s_len, t_len = getattr(s, "length", None), getattr(t, "length", None)
        if s_len and t_len and t_len < s_len:
            return f"is {t} but the source's is {s}: longer values would be refused"
    if want is Family.DECIMAL:
        s_p, s_s = getattr(s, "precision", None), getattr(s, "scale", None)
        t_p, t_s = getattr(t, "precision", None), getattr(t, "scale", None)
        if None not in (s_p, s_s, t_p, t_s) and (t_s < s_s or t_p - t_s < s_p - s_s):  # type: ignore[operator]
            return f"is {t} but the source's is {s}: values would be rounded or refused"
    return None


def _integer_bits(type_: sa.types.TypeEngine[Any]) -> int | None:
    """Magnitude bits an integer column holds (sign excluded)."""
    sizes: list[tuple[type[sa.types.TypeEngine[Any]], int]] = [
        (mysql.TINYINT, 8),
        (sa.SmallInteger, 16),
        (mysql.MEDIUMINT, 24),
        (sa.BigInteger, 64),
        (sa.Integer, 32),
    ]
    for klass, bits in sizes:
        if isinstance(type_, klass):
            return bits if getattr(type_, "unsigned", False) else bits - 1
    return None


def add_column(conn: sa.Connection, table: sa.Table, column: sa.Column[Any]) -> None:
    """``ALTER TABLE … ADD COLUMN``, committed: the DDL SQLAlchemy's metadata cannot express."""
    spec = sa.schema.CreateColumn(column).compile(dialect=conn.dialect)
    table_sql = conn.dialect.identifier_preparer.format_table(table)
    conn.exec_driver_sql(f"ALTER TABLE {table_sql} ADD COLUMN {spec}")
    conn.commit()


def add_missing_columns(
    conn: sa.Connection, source: sa.Table, target: sa.Table, columns: list[str], *, mariadb: bool
) -> list[str]:
    """Add the synced columns the target lacks, nullable, typed as a created target would be.

    Rows already in the target get NULL: the caller must compare whole rows to fill them in. Another
    sync adding the same column at the same moment is not an error: its column is used.
    """
    added = []
    for name in (c for c in columns if c not in target.c):
        column_type = target_type(source.c[name], conn.dialect.name, is_key=False, mariadb=mariadb)
        try:
            add_column(conn, target, sa.Column(name, column_type, nullable=True))
        except sa.exc.DBAPIError:
            conn.rollback()
            if not sa.inspect(conn).has_table(target.name, schema=target.schema) or name not in {
                c["name"] for c in sa.inspect(conn).get_columns(target.name, schema=target.schema)
            }:
                raise
            continue
        added.append(name)
    return added


def _has_unique(table: sa.Table, key: list[str]) -> bool:
    wanted = set(key)
    if {c.name for c in table.primary_key.columns} == wanted:
        return True
    for index in table.indexes:
        if index.unique and {c.name for c in index.columns} == wanted:
            return True
    for constraint in table.constraints:
        if isinstance(constraint, sa.UniqueConstraint) and {c.name for c in constraint.columns} == wanted:
            return True
    return False
