"""The processes a ranged backfill step syncs its hours in: the run's planner, and a fork per hour.

The step (:mod:`~sync_pipeline.orchestration.ranged`) starts one planner process per run from a
forkserver, and hands it the hours one by one. The planner plans the table once
(:func:`~sync_pipeline.engine.run_plan.plan_run`: the target created or completed if needed, both
engines kept with no connection open) and, for each hour, forks a process that inherits the plan and
the engines, syncs the hour on fresh connections, sends its stats back and exits. The planner itself
never syncs: all it holds is the plan, so no memory accumulates over the run.

No Dagster here: the forkserver imports only this module, the configuration and the engine, which on
the 2-core reference machine under load starts in about half the time an import of Dagster takes
(3.2-4.9 s against 7.2-7.4 s for a fresh interpreter, load average 10), once per run.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Final, TypeVar, cast

from sync_pipeline.config import SyncConfig, TableConfig, load_config
from sync_pipeline.engine.diff.stats import SyncStats
from sync_pipeline.engine.diff.window import Window
from sync_pipeline.engine.run_plan import RunPlan, plan_run
from sync_pipeline.engine.sync import Compare, sync_partition
from sync_pipeline.engine.verify import Verification, verify_partition
from sync_pipeline.errors import PlanOutdated

__all__ = ["PLANNER_PRELOAD_MODULES", "HourProcessDied", "HourResult", "sync_hour", "verify_hours"]

T = TypeVar("T")

# What the planner needs, imported once by the forkserver so that starting it is a fork of a warm
# interpreter: this module (the configuration, the engine) and the drivers. Not Dagster.
PLANNER_PRELOAD_MODULES: Final = [
    "sync_pipeline.orchestration.hours",
    "psycopg",
    "pymysql",
]


@dataclass(frozen=True)
class HourResult:
    """What an hour's process sends back."""

    stats: SyncStats
    pid: int  # the process that synced the hour (metadata ``sync_pid``)
    planned_seconds: float | None = None  # the run's tables were planned for this hour (first, or again)


class HourProcessDied(Exception):
    """An hour's process ended without an answer (killed, out of memory): its transaction rolled back."""


# In the run's planner process: the plan each hour's process inherits, by configuration and table.
_plans: dict[tuple[str, str], RunPlan] = {}


def active_config(config_path: str) -> SyncConfig:
    """The configuration a code location runs: the file at ``config_path``, or the demo when empty.

    Reading the demo's configuration touches only a small JSON file in its data folder; no database
    is opened.
    """
    if config_path:
        return load_config(config_path)
    from sync_pipeline.demo.config import data_dir, demo_config

    return demo_config(data_dir())


def table_urls(config: SyncConfig, table: TableConfig) -> tuple[str, str]:
    """The source's and the target's URL of ``table``, password included: for engines, never shown."""
    return (
        config.connections[table.source.connection].url.get_secret_value(),
        config.connections[table.target.connection].url.get_secret_value(),
    )


def sync_hour(config_path: str, table: str, window: Window, compare: Compare) -> HourResult:
    """In the run's planner: plan once, then sync ``window`` in a process forked from the planner.

    A table changed since the plan (``PlanOutdated``) is planned again and the hour tried once more,
    as the hour would have planned by itself; a table that changes again fails the hour.
    """
    planned: float | None = None
    for attempt in (1, 2):
        plan = _plans.get((config_path, table))
        if plan is None:
            plan = _plans[config_path, table] = _plan(config_path, table)
            planned = plan.seconds + (planned or 0.0)
        try:
            stats, pid = _in_fork(_sync_planned, window, compare, plan)
        except PlanOutdated:
            del _plans[config_path, table]
            if attempt == 2:
                raise
            continue
        return HourResult(stats, pid, planned)
    raise AssertionError("unreachable")


def verify_hours(config_path: str, table: str, window: Window) -> Verification:
    """In the run's planner: compare every column of the window's rows, in a process forked for it."""
    return _in_fork(_verify, config_path, table, window)


def _plan(config_path: str, table: str) -> RunPlan:
    config = active_config(config_path)
    if not config_path:
        from sync_pipeline.demo.seed import ensure_seeded

        ensure_seeded(config)
    table_config = config.table(table)
    return plan_run(table_config, *table_urls(config, table_config))


def _sync_planned(window: Window, compare: Compare, plan: RunPlan) -> tuple[SyncStats, int]:
    """The body of an hour's process: sync the window with the run's plan (and its configuration)."""
    config = plan.plan.config
    stats = sync_partition(config, plan.source.url, plan.target.url, window, compare=compare, plan=plan)
    return stats, os.getpid()


def _verify(config_path: str, table: str, window: Window) -> Verification:
    config = active_config(config_path)
    table_config = config.table(table)
    return verify_partition(table_config, *table_urls(config, table_config), window)


def _in_fork(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a process forked from this one, which exits once it has answered.

    The planner is single-threaded (a process pool's worker) and holds no open connection, so its
    fork is safe; the child inherits what the planner prepared, and its memory goes when it ends.
    """
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_answer, args=(send, fn, *args), name="sync-hour")
    child.start()
    send.close()
    try:
        ok, value = receive.recv()
    except EOFError:
        child.join()
        raise HourProcessDied(f"exit code {child.exitcode}") from None
    finally:
        receive.close()
    child.join()
    if ok:
        return cast(T, value)
    raise value


def _answer(send: Connection, fn: Callable[..., Any], *args: Any) -> None:
    """The forked child's body: send ``(True, result)`` or ``(False, error)`` back."""
    try:
        answer: tuple[bool, Any] = (True, fn(*args))
    except BaseException as error:  # noqa: BLE001 - handed to the planner, which raises it
        answer = (False, error)
    try:
        send.send(answer)
    except Exception as error:  # noqa: BLE001 - an answer that does not pickle still fails the hour
        send.send((False, RuntimeError(f"{answer[1]!r} (not picklable: {error})")))
    finally:
        send.close()
