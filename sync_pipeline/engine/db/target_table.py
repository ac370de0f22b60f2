"""The target table sync_pipeline creates from the source's columns, and the columns it adds later.

Each engine gets a type that holds every value of the source's: MySQL's unsigned integers keep their
range (NUMERIC(20, 0) for a BIGINT UNSIGNED on PostgreSQL; refused on SQLite, whose integers are
signed 64-bit), text keys on MySQL/MariaDB get a binary NO PAD collation and a length an index can
hold, long text becomes LONGTEXT. What cannot be created so is refused before anything is written.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql

from sync_pipeline.engine.db.schema import (
    Family,
    TableName,
    beyond_int64,
    family_of,
    integer_bits,
    is_timezone_aware,
    sqlite_int64_problem,
)
from sync_pipeline.errors import LockTimeout, SchemaError

# InnoDB's largest index key (DYNAMIC rows, the default since MariaDB 10.2 and MySQL 5.7): 3072 bytes,
# 768 characters of utf8mb4 (4 bytes each).
MYSQL_KEY_BYTES = 3072
MYSQL_KEY_CHARS = MYSQL_KEY_BYTES // 4
_MYSQL_VARCHAR_MAX = 255  # longer declared text becomes LONGTEXT: wide VARCHARs fill the row limit
# Bytes a key part that is not text may take in the index (UUIDs are created as VARCHAR(36)).
_MYSQL_OTHER_KEY_BYTES = {Family.UUID: 36 * 4}


def target_type(
    column: sa.Column[Any],
    target_dialect: str,
    *,
    is_key: bool,
    mariadb: bool = True,
    key_length: int = MYSQL_KEY_CHARS,
) -> sa.types.TypeEngine[Any]:
    """The type a target column gets when sync_pipeline creates it from the source's column.

    ``mariadb`` tells MariaDB from MySQL 8 when the target dialect is ``mysql``: their binary NO PAD
    collations have different names. ``key_length`` is the length of a MySQL text key column whose
    source declares none (see :func:`mysql_key_lengths`).
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
            if is_key:
                # As long as the source declares, or the longest an index holds (key_length).
                return mysql.VARCHAR(length or key_length, charset="utf8mb4", collation=collation)
            if length and length <= _MYSQL_VARCHAR_MAX:
                return mysql.VARCHAR(length, charset="utf8mb4", collation=collation)
            # Unbounded or long: LONGTEXT holds any PostgreSQL text (1 GB), and keeps the row under
            # MariaDB's 65535-byte limit, which a few wide VARCHARs would exceed.
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
        if getattr(source_type, "unsigned", False):
            return _unsigned_target_type(source_type, target_dialect)
        if isinstance(source_type, sa.BigInteger) or target_dialect == "sqlite":
            return sa.BigInteger() if target_dialect != "sqlite" else sa.Integer()
        return sa.Integer() if not isinstance(source_type, sa.SmallInteger) else sa.SmallInteger()
    if family is Family.BOOLEAN:
        return sa.Boolean()
    if family is Family.INTERVAL:
        return sa.Interval() if target_dialect == "postgresql" else sa.Text()
    if family is Family.TIME and mysql_target:
        # TIME alone keeps whole seconds: the microseconds of a source time would be cut off.
        return mysql.TIME(fsp=6)
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
    """The target table definition derived from the source's reflected columns.

    Refused, naming the column, when a column cannot be created to hold every value the source's
    type allows: a BIGINT UNSIGNED in SQLite, a text key longer than a MySQL index holds.
    """
    if target_dialect == "sqlite":
        wide = [c for c in columns if beyond_int64(source.c[c].type)]
        if wide:
            raise SchemaError(f"{target}: {sqlite_int64_problem(source, wide)}")
    key_lengths: dict[str, int] = {}
    if target_dialect in ("mysql", "mariadb"):
        key_lengths = mysql_key_lengths(source, target, primary_key)
    cols: list[sa.Column[Any]] = [
        sa.Column(
            name,
            target_type(
                source.c[name],
                target_dialect,
                is_key=name in primary_key,
                mariadb=mariadb,
                key_length=key_lengths.get(name, MYSQL_KEY_CHARS),
            ),
            primary_key=name in primary_key,
            nullable=name not in primary_key,
            autoincrement=False,
        )
        for name in columns
    ]
    return sa.Table(target.table, sa.MetaData(), *cols, *extra, schema=target.schema)


def mysql_key_lengths(source: sa.Table, target: TableName, primary_key: list[str]) -> dict[str, int]:
    """Lengths for the text key columns of a MySQL/MariaDB target, within what one index holds.

    A source column that declares a length keeps it; the undeclared ones (PostgreSQL ``text``) share
    what is left equally, so a single ``text`` key gets 768 characters. Longer values are refused by
    the (strict) session, naming the column; a declared length that cannot be indexed is refused
    here, before the target is created.
    """
    text_keys = [k for k in primary_key if family_of(source.c[k].type) is Family.TEXT]
    budget = MYSQL_KEY_BYTES - sum(
        _MYSQL_OTHER_KEY_BYTES.get(family_of(source.c[k].type), 16) for k in primary_key if k not in text_keys
    )
    declared = {k: n for k in text_keys if (n := getattr(source.c[k].type, "length", None))}
    left = budget - 4 * sum(declared.values())
    undeclared = [k for k in text_keys if k not in declared]
    share = left // 4 // len(undeclared) if undeclared else 0
    if left < 0 or (undeclared and share < 1):
        described = ", ".join(f"{k!r} ({source.c[k].type})" for k in text_keys)
        raise SchemaError(
            f"{target}: the key column(s) {described} need more than the {MYSQL_KEY_BYTES} bytes a "
            f"MySQL/MariaDB index holds ({MYSQL_KEY_CHARS} characters of utf8mb4 for a single text "
            "key); shorten the source column(s), or sync this table to PostgreSQL or SQLite"
        )
    return {**declared, **dict.fromkeys(undeclared, share)}


def _unsigned_target_type(
    source_type: sa.types.TypeEngine[Any], target_dialect: str
) -> sa.types.TypeEngine[Any]:
    """A type holding every value of a MySQL unsigned integer: the same unsigned type on MySQL, the
    next wider signed one on PostgreSQL (NUMERIC(20, 0) for BIGINT UNSIGNED), INTEGER on SQLite
    (BIGINT UNSIGNED is refused there before this is asked)."""
    bits = integer_bits(source_type) or 64
    if target_dialect in ("mysql", "mariadb"):
        if bits <= 8:
            return mysql.TINYINT(unsigned=True)
        if bits <= 16:
            return mysql.SMALLINT(unsigned=True)
        if bits <= 24:
            return mysql.MEDIUMINT(unsigned=True)
        if bits <= 32:
            return mysql.INTEGER(unsigned=True)
        return mysql.BIGINT(unsigned=True)
    if target_dialect == "postgresql":
        if bits <= 15:
            return sa.SmallInteger()
        if bits <= 31:
            return sa.Integer()
        if bits <= 63:
            return sa.BigInteger()
        return sa.Numeric(20, 0)
    return sa.Integer()


# A lock waited for longer than the session allows: MySQL/MariaDB's ER_LOCK_WAIT_TIMEOUT (metadata
# locks included), PostgreSQL's lock_not_available.
_LOCK_WAIT_CODES = {1205}
_LOCK_WAIT_SQLSTATES = {"55P03"}


def add_column(conn: sa.Connection, table: sa.Table, column: sa.Column[Any]) -> None:
    """``ALTER TABLE … ADD COLUMN``, committed: the DDL SQLAlchemy's metadata cannot express.

    The ALTER waits for every open transaction that used the table (another sync's, a reader's), and
    every new reader waits behind it; the session bounds that wait by the table's lock timeout (see
    ``Adapter.set_write_lock_wait``), after which this raises :class:`LockTimeout`, which is retried.
    """
    spec = sa.schema.CreateColumn(column).compile(dialect=conn.dialect)
    table_sql = conn.dialect.identifier_preparer.format_table(table)
    try:
        conn.exec_driver_sql(f"ALTER TABLE {table_sql} ADD COLUMN {spec}")
    except sa.exc.DBAPIError as error:
        args = getattr(error.orig, "args", ())
        if (args and args[0] in _LOCK_WAIT_CODES) or getattr(
            error.orig, "sqlstate", None
        ) in _LOCK_WAIT_SQLSTATES:
            conn.rollback()
            raise LockTimeout(
                f"target table {table.name!r}: adding column {column.name!r} waited longer than "
                "lock_timeout_seconds for other sessions using the table; a retry adds it once they end"
            ) from error
        raise
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
