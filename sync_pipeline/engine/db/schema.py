"""Reflection, type families, and whether an existing target can hold the source's rows.

A column's *family* (integer, decimal, text, timestamp, JSON, ...) is what survives a trip between
engines. The family decides whether two columns are compatible, how a target column is created from a
source column (:mod:`~sync_pipeline.engine.db.target_table`), how values are converted on the way,
and whether keys can be hashed in the database. An existing target is also refused where its keys
would merge distinct source keys (a case-insensitive or PAD SPACE collation on MySQL/MariaDB).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.engine.reflection import ObjectKind, ObjectScope, _ReflectionInfo

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
    if isinstance(type_, sa.types.TypeDecorator):
        return family_of(type_.impl_instance)
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


class IntegralNumeric(sa.types.TypeDecorator[Any]):
    """A ``NUMERIC(p, 0)`` key read and compared as Python integers, like the other side's integer key.

    PostgreSQL keeps a BIGINT UNSIGNED key as NUMERIC(20, 0). Plain Numeric would read Decimals where
    the other side reads ints, and compare with an int parameter cast to INTEGER (SQLAlchemy types the
    parameter by its value), which overflows above 2**31 - 1.
    """

    impl = sa.Numeric
    cache_ok = True

    def coerce_compared_value(self, op: Any, value: Any) -> sa.types.TypeEngine[Any]:
        return self

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> int | None:
        return None if value is None else int(value)


def read_as_integers(column: sa.Column[Any]) -> None:
    """Make an integral NUMERIC key column of a reflected table read and compare as integers.

    Called by the plan, before any expression is built on the table, for a key whose other side is
    an integer column.
    """
    type_ = column.type
    if isinstance(type_, sa.Numeric) and not isinstance(type_, sa.Float) and type_.scale == 0:
        column.type = IntegralNumeric(type_.precision, 0)


def is_timezone_aware(type_: sa.types.TypeEngine[Any]) -> bool:
    """Whether the column stores instants (timestamptz, MySQL TIMESTAMP) rather than wall times."""
    if isinstance(type_, mysql.TIMESTAMP):
        return True
    return bool(getattr(type_, "timezone", False))


def timestamp_precision(type_: sa.types.TypeEngine[Any], dialect: str) -> int:
    """Fractional-second digits a timestamp or time column keeps (MySQL DATETIME and TIME default to
    0, others to 6)."""
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


def reflect(conn: sa.Connection, name: TableName, *, constraints: bool = True) -> sa.Table | None:
    """The live table, or ``None`` when it does not exist.

    Only what a sync reads of a table is reflected: its columns, primary key, indexes and unique
    constraints, or its columns alone without ``constraints`` (the source: only the target's keys
    are checked). ``Table(autoload_with=)`` would also read foreign keys, check constraints, the
    comment and the table options, which nothing here uses: on PostgreSQL four more catalogue
    queries, about a third of the reflection, paid by both tables of every plan.
    """
    inspector = sa.inspect(conn)
    options: dict[str, Any] = {
        "schema": name.schema,
        "filter_names": [name.table],
        "kind": ObjectKind.ANY,  # what Table(autoload_with=) reflects: views too
        "scope": ObjectScope.ANY,
        "unreflectable": {},
    }
    columns = inspector.get_multi_columns(**options)
    if not columns:
        return None

    def optional(method: Callable[..., dict[Any, Any]]) -> dict[Any, Any]:
        try:
            return method(**options)
        except NotImplementedError:
            return {}

    # SQLAlchemy's own container for reflection already done (what Table(autoload_with=) gathers
    # before building the table), here without the parts left out.
    info = _ReflectionInfo(
        columns=columns,
        pk_constraint=dict(inspector.get_multi_pk_constraint(**options)) if constraints else {},
        foreign_keys={},
        indexes=inspector.get_multi_indexes(**options) if constraints else {},
        unique_constraints=optional(inspector.get_multi_unique_constraints) if constraints else {},
        table_comment={},
        check_constraints={},
        table_options={},
        unreflectable=options["unreflectable"],
    )
    metadata = sa.MetaData()
    sa.event.listen(metadata, "column_reflect", _reflected_column)
    return sa.Table(name.table, metadata, schema=name.schema, autoload_with=conn, _reflect_info=info)


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


def beyond_int64(type_: sa.types.TypeEngine[Any]) -> bool:
    """An integer type whose values may exceed SQLite's signed 64 bits (BIGINT UNSIGNED)."""
    return family_of(type_) is Family.INTEGER and (integer_bits(type_) or 0) > 63


def sqlite_int64_problem(source: sa.Table, names: list[str]) -> str:
    described = ", ".join(f"{n!r} ({source.c[n].type} UNSIGNED)" for n in names)
    return (
        f"column(s) {described} may hold values up to 18446744073709551615, but SQLite integers end "
        "at 9223372036854775807; sync the table to PostgreSQL or MariaDB, or leave those columns out "
        "(columns:)"
    )


def length_check(type_: sa.types.TypeEngine[Any], dialect: str) -> Callable[[Any], str | None] | None:
    """A value check for a text column of declared length on a server (SQLite enforces none).

    A strict session refuses a longer value anyway, but names neither the table nor the sync's
    column clearly; this refuses it while the rows are staged, naming both, before anything applies.
    """
    length = getattr(type_, "length", None)
    if dialect == "sqlite" or family_of(type_) is not Family.TEXT or not length:
        return None

    def check(value: Any) -> str | None:
        if isinstance(value, str) and len(value) > length:
            return f"a value of {len(value)} characters does not fit {type_} (at most {length})"
        return None

    return check


def check_key_collations(
    conn: sa.Connection, source: sa.Table, target: sa.Table, target_name: TableName, primary_key: list[str]
) -> None:
    """Refuse a target whose text key column compares in anything but binary (code point) equality.

    Under a case- or accent-insensitive collation (MySQL's server default ``utf8mb4_general_ci``, a
    PostgreSQL nondeterministic ICU collation, SQLite's ``NOCASE``) or one that ignores trailing
    spaces (MySQL's PAD SPACE ``utf8mb4_bin``, SQLite's ``RTRIM``), the unique index makes "a", "A",
    "é"/"e" or "a"/"a " one row: the upsert would merge distinct source keys, and every later run
    would insert them again. Only text keys are checked: a UUID's canonical text has one case and no
    trailing space. The source needs no check: its keys are unique under its own collation, and
    every adapter reads key streams in binary order (``Adapter.ordered``).
    """
    text_keys = [
        k
        for k in primary_key
        if family_of(source.c[k].type) is Family.TEXT and family_of(target.c[k].type) is Family.TEXT
    ]
    if not text_keys:
        return
    find = _INEXACT_KEYS.get(conn.dialect.name)
    inexact = sorted(set(find(conn, target, text_keys))) if find is not None else []
    if inexact:
        described = ", ".join(f"{name!r} has collation {collation}" for name, collation in inexact)
        raise SchemaError(
            f"{target_name}: key column {described}, which treats distinct keys as one (case, "
            "accents or trailing spaces); the key must compare binary: "
            f"{_COLLATION_FIX[conn.dialect.name]}, or drop the table so the sync creates it"
        )


_COLLATION_FIX = {
    "mysql": "ALTER TABLE ... MODIFY the column ... COLLATE utf8mb4_nopad_bin (MariaDB) or "
    "utf8mb4_0900_bin (MySQL 8), a binary NO PAD collation",
    "mariadb": "ALTER TABLE ... MODIFY the column ... COLLATE utf8mb4_nopad_bin, a binary NO PAD collation",
    "postgresql": 'ALTER TABLE ... ALTER COLUMN ... TYPE text COLLATE "C" (or any deterministic '
    "collation), and recreate its unique index",
    "sqlite": "recreate the table with the key column in the default BINARY collation (no COLLATE "
    "NOCASE or RTRIM on the column or its unique index)",
}


def _mysql_inexact(conn: sa.Connection, target: sa.Table, columns: list[str]) -> list[tuple[str, str]]:
    query = sa.text(
        "SELECT COLUMN_NAME, COLLATION_NAME FROM information_schema.COLUMNS"
        " WHERE TABLE_SCHEMA = :schema AND TABLE_NAME = :table AND COLUMN_NAME IN :columns"
    ).bindparams(sa.bindparam("columns", expanding=True))
    schema = target.schema or conn.dialect.default_schema_name
    rows = conn.execute(query, {"schema": schema, "table": target.name, "columns": columns}).all()
    return [(name, collation) for name, collation in rows if not exact_collation(collation)]


# The key columns' own collations and those of the unique indexes on them: ON CONFLICT infers any
# unique index on the columns, whatever its collation, and a nondeterministic one (ICU's
# 'und-u-ks-level2', case-insensitive) calls different strings equal. Deterministic collations
# ("C", "en_US", ICU without deterministic = false) break ties by bytes: equal means identical.
_PG_NONDETERMINISTIC = sa.text(
    """
    SELECT a.attname, c.collname
      FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation
     WHERE a.attrelid = CAST(:table AS regclass) AND a.attname = ANY(:columns)
       AND NOT c.collisdeterministic
    UNION
    SELECT a.attname, c.collname || ' (unique index ' || CAST(i.indexrelid AS regclass) || ')'
      FROM pg_index i
           CROSS JOIN LATERAL unnest(CAST(i.indkey AS int2[]), CAST(i.indcollation AS oid[]))
                AS k(attnum, coll)
           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
           JOIN pg_collation c ON c.oid = k.coll
     WHERE i.indrelid = CAST(:table AS regclass) AND i.indisunique AND a.attname = ANY(:columns)
       AND NOT c.collisdeterministic
    """
)


def _postgresql_inexact(conn: sa.Connection, target: sa.Table, columns: list[str]) -> list[tuple[str, str]]:
    table = conn.dialect.identifier_preparer.format_table(target)
    rows = conn.execute(_PG_NONDETERMINISTIC, {"table": table, "columns": columns}).all()
    return [(name, collation) for name, collation in rows]


# Pairs of distinct keys that a collation other than BINARY calls equal: NOCASE folds ASCII case,
# RTRIM ignores trailing spaces; an application's own collation is caught if it does either.
_SQLITE_PROBES = (("a", "A"), ("a", "a "), ("é", "e"))


def _sqlite_inexact(conn: sa.Connection, target: sa.Table, columns: list[str]) -> list[tuple[str, str]]:
    preparer = conn.dialect.identifier_preparer
    table = preparer.format_table(target)
    schema = f"{preparer.quote_schema(target.schema)}." if target.schema else ""
    found: list[tuple[str, str]] = []
    # The unique indexes on the key (the primary key's own included) and the collation each compares
    # the key column with: what makes two keys one row.
    for _, index, unique, *_ in conn.exec_driver_sql(f"PRAGMA {schema}index_list({table})").all():
        if not unique:
            continue
        for row in conn.exec_driver_sql(f"PRAGMA {schema}index_xinfo({preparer.quote(index)})").all():
            name, collation, is_key = row[2], str(row[4]), row[5]
            if is_key and name in columns and collation.upper() != "BINARY":
                found.append((name, f"{collation.upper()} (unique index {index})"))
    # The column's declared collation, which every comparison with the column uses (the lookups and
    # deletes by key). SQLite keeps no record of it but the CREATE TABLE text; a compound SELECT's
    # result column takes the collation of its leftmost SELECT's column, so comparing through one
    # tells whether the column calls distinct strings equal.
    create_sql = conn.exec_driver_sql(
        f"SELECT sql FROM {schema}sqlite_master WHERE type = 'table' AND name = ?", (target.name,)
    ).scalar()
    for name in columns:
        rows = f"SELECT {preparer.quote(name)} AS x FROM {table} WHERE 0 UNION ALL SELECT :a"
        probe = sa.text(f"SELECT x = :b FROM ({rows})")
        if any(conn.execute(probe, {"a": a, "b": b}).scalar() for a, b in _SQLITE_PROBES):
            found.append((name, _declared_collation(str(create_sql or ""), name)))
    return found


def _declared_collation(create_sql: str, column: str) -> str:
    """The collation name the CREATE TABLE text gives ``column``, for the message."""
    match = re.search(
        rf"[\"`\[]?{re.escape(column)}[\"`\]]?\s[^,]*?\bCOLLATE\s+[\"'`]?(\w+)", create_sql, re.IGNORECASE
    )
    return match.group(1).upper() if match else "other than BINARY (declared on the column)"


_INEXACT_KEYS: dict[str, Callable[[sa.Connection, sa.Table, list[str]], list[tuple[str, str]]]] = {
    "mysql": _mysql_inexact,
    "mariadb": _mysql_inexact,
    "postgresql": _postgresql_inexact,
    "sqlite": _sqlite_inexact,
}


def exact_collation(collation: str | None) -> bool:
    """Whether a MySQL/MariaDB collation tells every two different strings apart: binary, NO PAD.

    MariaDB names those ``*_nopad_bin``; MySQL 8's ``utf8mb4_0900_bin`` is NO PAD too. ``*_bin``
    alone is PAD SPACE ("a" = "a "), ``*_ci``/``*_ai`` fold case or accents. ``None`` is a binary
    string (VARBINARY), which compares bytes.
    """
    if collation is None or collation == "binary":
        return True
    return collation.endswith("_nopad_bin") or collation.endswith("_0900_bin")


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
        elif "sqlite" not in dialects and (
            narrower := _narrower(source.c[name], target.c[name], want, have, dialects)
        ):
            problems.append(f"column {name!r} {narrower}; widen the target column, then backfill")
    if dialects[1] == "sqlite":
        wide = [c for c in columns if c in target.c and beyond_int64(source.c[c].type)]
        if wide:
            problems.append(sqlite_int64_problem(source, wide))
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


def _narrower(
    source: sa.Column[Any], target: sa.Column[Any], want: Family, have: Family, dialects: tuple[str, str]
) -> str | None:
    """Why the target column holds less than the source's declares, when both say how much.

    Only declared sizes are compared, and never on SQLite, which enforces none: an unbounded source
    (TEXT, NUMERIC) says nothing a check could use, and the database refuses an oversized value
    within the sync's transaction, so nothing is half-written either way. Fewer fraction digits of a
    time of day are the exception: MariaDB's ``TIME`` (fsp 0) and PostgreSQL's ``time(0)`` cut or
    round them without an error, so the check is all that stands between a source time and a silent
    loss (timestamps are compared at the coarser precision of the two instead, see the plan).
    """
    if want is not have:
        return None
    s, t = source.type, target.type
    if want is Family.TIME:
        s_digits, t_digits = timestamp_precision(s, dialects[0]), timestamp_precision(t, dialects[1])
        if t_digits < s_digits:
            return (
                f"keeps {t_digits} fraction digits of a second ({t}) where the source's keeps {s_digits} "
                f"({s}): they would be cut without an error (MariaDB/MySQL: make it TIME({s_digits}))"
            )
    if want is Family.INTEGER:
        s_bits, t_bits = integer_bits(s), integer_bits(t)
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


def integer_bits(type_: sa.types.TypeEngine[Any]) -> int | None:
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
