"""One plan for many windows of one table (a ranged backfill), and how an hour knows it still holds.

Planning reflects and checks both tables: in a fresh process that is most of a small hour's sync
(compiling the reflection queries, the drivers' first connections). A run of 48 hours plans once:
:func:`plan_run` plans, records each table's columns and primary key as the databases describe them,
and keeps both engines (their dialects initialised, their statement caches warm, no connection open),
so a process forked from the planner for each hour inherits them all.

A plan is only as good as the schema it was made from. Each window synced with it first reads both
tables' columns again (one catalog query a side, already compiled) and refuses to go on if anything
changed (:class:`~sync_pipeline.errors.PlanOutdated`): a column added, dropped or retyped, the
primary key, a table dropped. Reused blindly, a stale plan could do worse than fail: a binary COPY
reads a ``timestamptz`` the source turned into a ``timestamp`` as the same eight bytes. The check
runs where the per-window plan ran, before the window's lock, so it sees what a fresh plan would.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from time import perf_counter

import sqlalchemy as sa
from sqlalchemy.engine import URL

from sync_pipeline.engine.db.engine import create_engine, translated_errors
from sync_pipeline.engine.db.schema import TableName
from sync_pipeline.engine.plan import SyncPlan, plan_sync
from sync_pipeline.engine.settings import TableConfig
from sync_pipeline.errors import PlanOutdated

__all__ = ["RunPlan", "plan_run"]

# A table as a plan saw it: (name, type, nullable) of each column and the primary key's columns;
# None for a table that does not exist.
Shape = tuple[tuple[tuple[str, str, bool], ...], tuple[str, ...]] | None

# Planning that creates the target, or adds columns to it, changes what it plans from: it plans again
# on the result. More attempts than that means someone else keeps altering the tables.
_ATTEMPTS = 3


@dataclass(frozen=True)
class RunPlan:
    """A plan made once for a run of windows, the engines it was made with, and the shapes it saw."""

    plan: SyncPlan
    source: sa.Engine
    target: sa.Engine
    shapes: tuple[Shape, Shape]
    seconds: float  # how long planning took, once for the run

    def require_current(self) -> None:
        """Fail with :class:`PlanOutdated` unless both tables still have the shape the plan saw."""
        now = _shapes(self.plan.config, self.source, self.target)
        for name, then, live in zip(_names(self.plan.config), self.shapes, now, strict=True):
            if then != live:
                raise PlanOutdated(f"{name} changed since this run planned it: {_change(then, live)}")

    def forget_inherited_connections(self) -> None:
        """In a forked process: leave the parent's pooled connections alone, open fresh ones.

        SQLAlchemy's advice for engines and ``os.fork()``: the child disposes the pool without closing
        what it holds. The planner disposed its pools before forking, so this is a safeguard.
        """
        self.source.dispose(close=False)
        self.target.dispose(close=False)

    def release(self) -> None:
        """Close the connections the last window opened; the engines stay usable for the next one."""
        self.source.dispose()
        self.target.dispose()


def plan_run(config: TableConfig, source_url: str | URL, target_url: str | URL) -> RunPlan:
    """Plan ``config``'s tables once for many windows, creating or completing the target if needed.

    The plan is kept only once the tables' shapes are the same just before and just after it: the
    plan that created the target (or added columns to it) is made again on the table as it now is,
    keeping the columns it added, whose rows every window of the run then compares whole.
    """
    started = perf_counter()
    bound = config.lock_timeout_seconds
    source = create_engine(source_url, lock_timeout_seconds=bound)
    target = create_engine(target_url, lock_timeout_seconds=bound)
    try:
        with translated_errors(f"plan of {config.name}"):
            added: list[str] = []
            for _ in range(_ATTEMPTS):
                before = _shapes(config, source, target)
                plan = plan_sync(config, source, target, create_target=True)
                added += [c for c in plan.added_columns if c not in added]
                after = _shapes(config, source, target)
                if before == after:
                    break
            else:
                raise PlanOutdated(f"{config.name}: its tables kept changing while being planned")
    finally:
        # No connection stays open in the planner: the processes forked from it open their own.
        source.dispose()
        target.dispose()
    if added != plan.added_columns:
        plan = replace(plan, added_columns=added)
    return RunPlan(plan, source, target, after, perf_counter() - started)


def _names(config: TableConfig) -> tuple[TableName, TableName]:
    return (
        TableName(config.source.table, config.source.schema_, "source", config.source.connection),
        TableName(config.target.table, config.target.schema_, "target", config.target.connection),
    )


def _shapes(config: TableConfig, source: sa.Engine, target: sa.Engine) -> tuple[Shape, Shape]:
    source_name, target_name = _names(config)
    return _shape(source, source_name, key=False), _shape(target, target_name, key=True)


def _shape(engine: sa.Engine, name: TableName, *, key: bool) -> Shape:
    """The table's columns, and the target's primary key: without it an upsert into MySQL would
    insert a second row instead of updating (the source's duplicate keys the sync finds itself)."""
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        try:
            columns = inspector.get_columns(name.table, schema=name.schema)
            primary = inspector.get_pk_constraint(name.table, schema=name.schema) if key else None
        except sa.exc.NoSuchTableError:
            return None
    # repr of a reflected type carries what the plan depends on: length, precision, time zone, collation.
    described = tuple((str(c["name"]), repr(c["type"]), bool(c["nullable"])) for c in columns)
    return described, tuple(primary["constrained_columns"] or ()) if primary else ()


def _change(then: Shape, live: Shape) -> str:
    """What differs between two shapes of one table, in words."""
    if live is None:
        return "it no longer exists"
    if then is None:
        return "it was created"
    before = {n: (t, z) for n, t, z in then[0]}
    after = {n: (t, z) for n, t, z in live[0]}
    parts = [f"column {n!r} added" for n in after if n not in before]
    parts += [f"column {n!r} dropped" for n in before if n not in after]
    parts += [
        f"column {n!r} was {_column(before[n])}, now {_column(after[n])}"
        for n in before
        if n in after and before[n] != after[n]
    ]
    if then[1] != live[1]:
        parts.append(f"primary key was {list(then[1])}, now {list(live[1])}")
    return "; ".join(parts) or "its columns were reordered"


def _column(described: tuple[str, bool]) -> str:
    type_, nullable = described
    return f"{type_}{'' if nullable else ' NOT NULL'}"
