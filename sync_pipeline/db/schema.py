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


def target_type(column: sa.Column[Any], target_dialect: str, *, is_key: bool) -> sa.types.TypeEngine[Any]:
    """The type a target column gets when sync_pipeline creates the table from the source's column."""
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
            if is_key or (length and length <= 16383):
                return mysql.VARCHAR(length or 255, charset="utf8mb4", collation="utf8mb4_bin")
            return mysql.LONGTEXT(charset="utf8mb4", collation="utf8mb4_bin")
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
) -> sa.Table:
    """The target table definition derived from the source's reflected columns."""
    cols: list[sa.Column[Any]] = [
        sa.Column(
            name,
            target_type(source.c[name], target_dialect, is_key=name in primary_key),
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
) -> None:
    """Fail before writing if the existing target cannot hold the source's rows.

    Every synced column must exist with a family that receives the source's without loss, and the key
    columns must be unique in the target (primary key or unique index) so upserts have a conflict target.
    """
    problems: list[str] = []
    missing = [c for c in columns if c not in target.c]
    if missing:
        problems.append(f"missing column(s) {', '.join(map(repr, missing))}")
    for name in columns:
        if name not in target.c:
            continue
        have, want = family_of(target.c[name].type), family_of(source.c[name].type)
        if have not in _ACCEPTS[want]:
            problems.append(
                f"column {name!r} is {target.c[name].type} ({have}) but the source's is "
                f"{source.c[name].type} ({want})"
            )
    if not _has_unique(target, primary_key):
        problems.append(
            f"no primary key or unique index on exactly ({', '.join(primary_key)}); "
            "sync_pipeline needs one to upsert"
        )
    if problems:
        raise SchemaError(f"{target_name} is incompatible with the source: " + "; ".join(problems))


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
