"""Checking a table's config against the live databases, before anything is written.

The plan reflects both tables, proves that the configured key and ``updated_at`` columns exist and
match, that the target can receive the source's columns, and decides how the two sides are compared
(precision of timestamps, whether keys can be hashed in the database). The sync runs it first; the
``sync-pipeline validate`` command runs it alone. It creates the target table when it is missing and
the caller allows it, and adds synced columns the target lacks (``add_missing_columns``), and
nothing else: it never drops, narrows or retypes a column.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, timedelta
from typing import Any

import sqlalchemy as sa

from sync_pipeline.engine.db.canonical import in_database, python_text, sql_text
from sync_pipeline.engine.db.dialects import adapter_for, micros_divisor
from sync_pipeline.engine.db.dialects.sqlite import BEGIN_OPTION
from sync_pipeline.engine.db.row_hash import has_native_row_hash, native_hash, native_part, stored_value
from sync_pipeline.engine.db.schema import (
    Family,
    TableName,
    check_compatible,
    check_key_collations,
    family_of,
    length_check,
    read_as_integers,
    reflect,
    require_columns,
    timestamp_precision,
)
from sync_pipeline.engine.db.side import TableSide
from sync_pipeline.engine.db.target_table import add_column, add_missing_columns, build_target_table
from sync_pipeline.engine.db.values import converter, guarded, row_converter, unstorable_check
from sync_pipeline.engine.diff.window import clocks_go_back
from sync_pipeline.engine.settings import DeleteMode, TableConfig
from sync_pipeline.errors import LockTimeout, SchemaError

log = logging.getLogger(__name__)

_HASHABLE_KEYS = {Family.INTEGER, Family.TEXT}


@dataclass(frozen=True)
class SyncPlan:
    """Both live tables and how to compare and copy between them.

    Frozen once built: a variant (the whole-row comparison) is a new plan with new sides, so a plan
    handed to a sync, a verification or a benchmark means the same thing wherever it goes.
    """

    config: TableConfig
    source: TableSide
    target: TableSide | None  # None only when the target is missing and may not be created
    columns: list[str]
    convert: Callable[[tuple[Any, ...]], tuple[Any, ...]]
    hash_compare: bool
    created_target: bool
    # Columns this plan added to the target: its rows hold NULL there until compared whole.
    added_columns: list[str] = field(default_factory=list)

    @property
    def soft_delete_column(self) -> str | None:
        return self.config.soft_delete_column if self.config.delete_mode is DeleteMode.SOFT else None


def plan_sync(config: TableConfig, source: sa.Engine, target: sa.Engine, *, create_target: bool) -> SyncPlan:
    """Reflect and check both tables; create the target from the source's columns if allowed.

    Three steps, each refusing what it cannot accept before anything is written: the source table
    and the columns to sync; the target table (found, or created and completed when allowed, then
    checked against the source); the two sides and the row converter that copies between them.
    """
    source_name = TableName(config.source.table, config.source.schema_, "source", config.source.connection)
    target_name = TableName(config.target.table, config.target.schema_, "target", config.target.connection)
    source_table, columns = _source_table(config, source, source_name)
    target_table, created, added = _target_table(
        config, source, target, source_table, target_name, columns, create_target=create_target
    )

    source_adapter = adapter_for(source.dialect.name)
    precision = timestamp_precision(source_table.c[config.updated_at].type, source.dialect.name)
    if target_table is not None:
        precision = min(
            precision, timestamp_precision(target_table.c[config.updated_at].type, target.dialect.name)
        )
    divisor = micros_divisor(precision)
    source_side = TableSide(
        source_name,
        source_table,
        source_adapter,
        config.primary_key,
        config.updated_at,
        config.naive_timezone,
        divisor,
    )
    if target_table is None:
        return SyncPlan(config, source_side, None, columns, lambda row: row, False, False)

    soft = _soft_column(config)
    live = None
    if soft is not None:
        flag = target_table.c[soft]
        live = sa.or_(flag.is_(None), flag == sa.false())
    target_side = TableSide(
        target_name,
        target_table,
        adapter_for(target.dialect.name),
        config.primary_key,
        config.updated_at,
        config.naive_timezone,
        divisor,
        live,
    )
    _check_keys(source_side, target_side)
    _align_key_types(source_side, target_side)
    _use_native_hash(source_side, target_side)
    hashable = all(f in _HASHABLE_KEYS for f in source_side.key_families() + target_side.key_families())
    convert = _row_converter(config, source_side, target_side, columns, target.dialect.name)
    return SyncPlan(config, source_side, target_side, columns, convert, hashable, created, added)


def _soft_column(config: TableConfig) -> str | None:
    return config.soft_delete_column if config.delete_mode is DeleteMode.SOFT else None


def _source_table(config: TableConfig, source: sa.Engine, name: TableName) -> tuple[sa.Table, list[str]]:
    """The source table and the columns to sync, or a ``SchemaError`` naming what is missing."""
    with source.connect() as conn:
        table = reflect(conn, name, constraints=False)  # the target's keys are checked, not these
    if table is None:
        raise SchemaError(f"{name} does not exist")
    require_columns(table, name, config.primary_key, "primary_key")
    require_columns(table, name, [config.updated_at], "updated_at")
    columns = list(config.columns) if config.columns else [c.name for c in table.columns]
    require_columns(table, name, columns, "columns")
    _require_timestamp(table, name, config.updated_at, source.dialect.name)
    soft = _soft_column(config)
    if soft is not None and soft in columns:
        columns.remove(soft)
    if any(adapter_for(source.dialect.name).is_naive(table.c[c].type) for c in _timestamps(table, columns)):
        with source.connect() as conn:
            _require_zone(conn, name, config.naive_timezone)
    return table, columns


def _timestamps(table: sa.Table, columns: list[str]) -> list[str]:
    return [c for c in columns if family_of(table.c[c].type) is Family.TIMESTAMP]


def _target_table(
    config: TableConfig,
    source: sa.Engine,
    target: sa.Engine,
    source_table: sa.Table,
    target_name: TableName,
    columns: list[str],
    *,
    create_target: bool,
) -> tuple[sa.Table | None, bool, list[str]]:
    """The target table, created and completed if allowed, checked against the source.

    Returns the table (``None`` when it is missing and may not be created), whether this plan
    created it, and the columns it added.
    """
    soft = _soft_column(config)
    timestamps = _timestamps(source_table, columns)
    zone = config.naive_timezone
    created = False
    with target.connect() as conn:
        mariadb = bool(getattr(conn.dialect, "is_mariadb", False))  # known once connected
        if create_target:
            # SQLite: look and create under the write lock, so two first syncs into one file wait
            # for each other instead of failing at once on a read lock that cannot be upgraded;
            # as long as the sync's own lock would wait, and then as the same LockTimeout.
            adapter_for(target.dialect.name).set_write_lock_wait(conn, config.lock_timeout_seconds)
            conn.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
        try:
            target_table = reflect(conn, target_name)
        except sa.exc.OperationalError as error:
            if create_target and "database is locked" in str(error.orig):
                raise LockTimeout(
                    f"another writer held the write lock of {target_name} for more than "
                    f"{config.lock_timeout_seconds:g}s"
                ) from error
            raise
        if target_table is not None:
            check_key_collations(conn, source_table, target_table, target_name, config.primary_key)
        if target_table is None:
            # Built (and refused if it cannot hold the source's values) by validate too.
            extra = [] if soft is None else [_soft_delete_column(soft)]
            definition = build_target_table(
                source_table,
                target_name,
                target.dialect.name,
                columns,
                config.primary_key,
                extra,
                mariadb=mariadb,
            )
        if target_table is None and create_target:
            sa.Index(f"ix_{target_name.table}_{config.updated_at}"[:60], definition.c[config.updated_at])
            _require_zone_for_naive(conn, definition, target_name, timestamps, zone)
            _require_unambiguous_wall_times(config, (source_table, source), (definition, target), target_name)
            try:
                definition.create(conn)
                conn.commit()
                created = True
            except sa.exc.DBAPIError:
                # Another sync of this table (two runs of one partition, or two partitions) created it
                # between our check and our CREATE: use theirs, as a later run would.
                conn.rollback()
                if reflect(conn, target_name) is None:
                    raise
            target_table = reflect(conn, target_name)
        added: list[str] = []
        if target_table is not None and create_target and config.add_missing_columns:
            added = add_missing_columns(conn, source_table, target_table, columns, mariadb=mariadb)
            if added:
                log.warning("%s: added column(s) %s from the source", target_name, ", ".join(added))
                target_table = reflect(conn, target_name)
                assert target_table is not None
        if target_table is not None:
            _require_zone_for_naive(conn, target_table, target_name, timestamps, zone)
            _require_unambiguous_wall_times(
                config, (source_table, source), (target_table, target), target_name
            )
            check_compatible(
                source_table,
                target_table,
                target_name,
                columns,
                config.primary_key,
                dialects=(source.dialect.name, target.dialect.name),
            )
            _require_timestamp(target_table, target_name, config.updated_at, target.dialect.name)
            if soft is not None and soft not in target_table.c and create_target:
                add_column(conn, target_table, _soft_delete_column(soft))
                target_table = reflect(conn, target_name)
                assert target_table is not None
            if soft is not None and soft not in target_table.c:
                raise SchemaError(f"{target_name}: soft_delete_column {soft!r} does not exist")
    return target_table, created, added


def _row_converter(
    config: TableConfig,
    source_side: TableSide,
    target_side: TableSide,
    columns: list[str],
    target_dialect: str,
) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """What turns a source row into the values the target stores exactly, or fails naming the column.

    ``target_dialect`` is SQLAlchemy's name of the target's dialect (``mariadb`` and ``mysql`` apart).
    """
    source_table, target_table = source_side.table, target_side.table
    source_adapter, target_adapter = source_side.adapter, target_side.adapter
    target_name = target_side.name
    converters = [
        converter(
            family_of(source_table.c[name].type),
            family_of(target_table.c[name].type),
            target_naive=target_adapter.is_naive(target_table.c[name].type),
            # A naive value read from an instant column (MySQL TIMESTAMP, shown in the session's
            # UTC) is UTC; only wall-time columns are read in naive_timezone.
            source_zone=(
                config.naive_timezone if source_adapter.is_naive(source_table.c[name].type) else "UTC"
            ),
            target_zone=config.naive_timezone,
            micros_divisor=micros_divisor(timestamp_precision(target_table.c[name].type, target_dialect)),
            native_uuid=target_dialect == "postgresql",
        )
        for name in columns
    ]
    # A value one engine holds and the other cannot (NUL in text, NaN, a 38-digit decimal in SQLite,
    # year 9999 as a wall time east of UTC) fails the sync naming the column, instead of being
    # refused obscurely or stored as something else.
    different_engines = source_adapter.name != target_adapter.name
    converters = [
        guarded(
            convert,
            _either(
                unstorable_check(
                    target_dialect,
                    family_of(target_table.c[name].type),
                    scale=getattr(target_table.c[name].type, "scale", None),
                )
                if different_engines
                else None,
                length_check(target_table.c[name].type, target_dialect),
            ),
            f"{target_name}: column {name!r}",
        )
        for convert, name in zip(converters, columns, strict=True)
    ]
    return row_converter(converters)


def _use_native_hash(source: TableSide, target: TableSide) -> None:
    """Let two sides on the same engine compare ranges by that engine's own hash of the stored rows.

    Only where the stored ``updated_at`` values mean the same on both sides: the same engine, both
    columns instants or both wall times (read in the one ``naive_timezone``), and no precision to
    floor away (``micros_divisor`` 1). Anywhere else the exact micros and the cross-engine mix stay.
    """
    if (
        source.adapter.name == target.adapter.name
        and source.micros_divisor == target.micros_divisor == 1
        and source.naive == target.naive
        and source.adapter.has_native_row_hash
    ):
        source.native_hash = target.native_hash = True


def _require_timestamp(table: sa.Table, name: TableName, column: str, dialect: str) -> None:
    family = family_of(table.c[column].type)
    if family is Family.TIMESTAMP or (dialect == "sqlite" and family is Family.TEXT):
        return
    raise SchemaError(f"{name}: updated_at column {column!r} is {table.c[column].type}, not a timestamp")


def _require_zone_for_naive(
    conn: sa.Connection, table: sa.Table, name: TableName, timestamps: list[str], zone: str
) -> None:
    """Probe the zone only where the target holds wall times (MySQL DATETIME, a created one too):
    a table of instants (timestamptz, MySQL TIMESTAMP) never converts, whatever the server knows.
    """
    adapter = adapter_for(conn.dialect.name)
    if any(adapter.is_naive(table.c[c].type) for c in timestamps if c in table.c):
        _require_zone(conn, name, zone)


def _require_unambiguous_wall_times(
    config: TableConfig,
    source_side: tuple[sa.Table, sa.Engine],
    target_side: tuple[sa.Table, sa.Engine],
    name: TableName,
) -> None:
    """Refuse to turn instants into wall times of a zone whose clocks go back (the end of summer time).

    Two instants an hour apart would be stored as one wall time: the sync rewrites both every run and
    verification never passes. Wall times copied from wall times (a DATETIME source) keep whatever
    the source meant, and instants into instants are unambiguous; only aware into naive is refused.
    """
    zone = config.naive_timezone
    (source, source_engine), (target, target_engine) = source_side, target_side
    source_adapter = adapter_for(source_engine.dialect.name)
    target_adapter = adapter_for(target_engine.dialect.name)
    for column in source.columns:
        if column.name not in target.c or family_of(column.type) is not Family.TIMESTAMP:
            continue
        if source_adapter.is_naive(column.type) or not target_adapter.is_naive(target.c[column.name].type):
            continue
        # A day early: start is in the partition zone, at most a day from UTC.
        when = clocks_go_back(zone, config.start.replace(tzinfo=UTC) - timedelta(days=1))
        if when is not None:
            raise SchemaError(
                f"{name}: column {column.name!r} stores naive timestamps, and naive_timezone {zone!r} has "
                f"repeated wall times (clocks go back at {when:%Y-%m-%d %H:%M} UTC); targets storing "
                "naive timestamps cannot hold them unambiguously: use UTC"
            )


def _require_zone(conn: sa.Connection, name: TableName, zone: str) -> None:
    problem = adapter_for(conn.dialect.name).zone_problem(conn, zone)
    if problem is not None:
        raise SchemaError(f"{name}: naive timestamps are read in naive_timezone {zone!r}, but {problem}")


def _align_key_types(source: TableSide, target: TableSide) -> None:
    """Make both sides yield each key column as one Python type, or refuse the key before writing.

    A uuid key stored as text on the other side is read as text (see
    :func:`~sync_pipeline.engine.db.canonical.key_value`). A timestamp key between two engines is
    refused: one engine returns instants, the other wall times, at other precisions, so equal keys
    would not compare equal and the merge would insert and delete the same rows on every run.
    """
    for name, s, t in zip(source.key_columns, source.key_families(), target.key_families(), strict=True):
        if {s, t} == {Family.UUID, Family.TEXT}:
            side = source if s is Family.UUID else target
            side.text_keys = side.text_keys | {name}
        if Family.TIMESTAMP in (s, t) and source.adapter.name != target.adapter.name:
            raise SchemaError(
                f"{target.name}: key column {name!r} is a timestamp; timestamp keys are compared only "
                f"between two tables of one engine, not {source.adapter.name} to {target.adapter.name}: "
                "use an integer, text or uuid key"
            )


def _either(
    first: Callable[[Any], str | None] | None, second: Callable[[Any], str | None] | None
) -> Callable[[Any], str | None] | None:
    """One value check out of two optional ones: the first problem either finds."""
    if first is None or second is None:
        return first or second
    return lambda value: first(value) or second(value)


def _integral(column: sa.Column[Any]) -> bool:
    """An integer, or a decimal without fraction (PostgreSQL's NUMERIC(20, 0) for BIGINT UNSIGNED)."""
    family = family_of(column.type)
    return family is Family.INTEGER or (family is Family.DECIMAL and getattr(column.type, "scale", None) == 0)


def _check_keys(source: TableSide, target: TableSide) -> None:
    for name, s, t in zip(source.key_columns, source.key_families(), target.key_families(), strict=True):
        integral = _integral(source.table.c[name]) and _integral(target.table.c[name])
        if integral and s is not t:
            read_as_integers(source.table.c[name])
            read_as_integers(target.table.c[name])
        elif s is not t and not {s, t} <= {Family.TEXT, Family.UUID}:
            raise SchemaError(
                f"{target.name}: key column {name!r} is {t} but the source's is {s}; "
                "keys must have the same type on both sides"
            )


def _soft_delete_column(name: str) -> sa.Column[bool]:
    return sa.Column(name, sa.Boolean(), nullable=False, server_default=sa.false())


def with_row_comparison(plan: SyncPlan) -> SyncPlan:
    """The same plan comparing whole rows (every synced column) instead of ``updated_at``.

    Used to verify a sync and to find drift: a value changed in the target without touching
    ``updated_at``, which the ``updated_at`` comparison cannot see. Two tables of one engine compare
    rows by that engine's own hash of the stored values (see :mod:`~sync_pipeline.engine.db.row_hash`);
    two engines by the canonical text of every column, computed in the databases where both can
    print it identically. A column neither can (JSON across engines) is printed in Python
    from streamed rows, the others' text still computed in SQL; the range checksums are then not used.
    """
    source, target = plan.source, plan.target
    if target is None:
        return plan
    source_dialect = source.adapter.name
    target_dialect = target.adapter.name
    zone = plan.config.naive_timezone
    divisors = {
        c: micros_divisor(
            min(
                timestamp_precision(source.table.c[c].type, source_dialect),
                timestamp_precision(target.table.c[c].type, target_dialect),
            )
        )
        for c in plan.columns
    }

    def canonical(side: TableSide, column: str) -> Any:
        return sql_text(
            side.adapter,
            side.table.c[column],
            naive=side.adapter.is_naive(side.table.c[column].type),
            zone=zone,
            divisor=divisors[column],
        )

    in_python = [
        c
        for c in plan.columns
        if not in_database(source.table.c[c], source_dialect, target.table.c[c], target_dialect)
    ]
    if in_python:
        # Both sides read through one family, so a JSON column stored as text on either side (MariaDB
        # reflects its JSON as LONGTEXT) is parsed and printed the same way as the other side's JSON.
        texts = [
            python_text(
                _shared_family(source.table.c[c].type, target.table.c[c].type), zone=zone, divisor=divisors[c]
            )
            for c in in_python
        ]
        source, target = (
            replace(
                side,
                row_parts=[canonical(side, c) for c in plan.columns if c not in in_python],
                row_columns=in_python,
                row_texts=texts,
            )
            for side in (source, target)
        )
        return replace(plan, source=source, target=target, hash_compare=False)
    source, target = (
        replace(side, row_parts=[canonical(side, c) for c in plan.columns]) for side in (source, target)
    )
    if source_dialect == target_dialect and has_native_row_hash(source_dialect):
        fingerprinted = []
        for side in (source, target):
            parts = [
                stored_value(source_dialect, side.table.c[c])
                if native_part(source_dialect, source.table.c[c], target.table.c[c])
                else canonical(side, c)
                for c in plan.columns
            ]
            keys = [
                stored_value(source_dialect, side.table.c[k])
                if native_part(source_dialect, source.table.c[k], target.table.c[k])
                else side.adapter.key_text(side.table.c[k])
                for k in side.key_columns
                if k not in plan.columns  # a synced key column is hashed among the parts already
            ]
            fingerprinted.append(replace(side, row_fingerprint=native_hash(source_dialect, keys + parts)))
        source, target = fingerprinted
    return replace(plan, source=source, target=target)


def _shared_family(source_type: sa.types.TypeEngine[Any], target_type: sa.types.TypeEngine[Any]) -> Family:
    """The family both sides' values of a column are printed in when compared in Python.

    JSON wins over text: a document held as text on one side (MariaDB's JSON is a LONGTEXT alias) and
    as JSON on the other is the same document whatever its key order or spacing.
    """
    families = {family_of(source_type), family_of(target_type)}
    return Family.JSON if Family.JSON in families else family_of(source_type)
