"""Peers: dlt and Sling, configured as their users would for this job, on the suite's change set.

Each peer is a method of :mod:`benchmarks.methods` (a fresh child process, the same JSON result), and
writes into its own copy of the target, which the suite then compares with the source column by column.

* ``dlt``: dlt's ``sql_database`` source on ``events`` with ``dlt.sources.incremental("updated_at")``,
  ``primary_key="id"``, ``write_disposition="merge"`` (dlt's default ``delete-insert`` strategy), into
  PostgreSQL with ``dataset_name="public"``, so the ``events`` it merges into is the one the suite
  compares (dlt adds ``_dlt_load_id``/``_dlt_id`` to it and its ``_dlt_*`` tables beside it; the
  comparison reads only the workload's columns). The default ``sqlalchemy`` backend.
* ``dlt_pyarrow``: the same with ``backend="pyarrow"``, to see what that backend does to the values.
* ``sling``: Sling's CLI, ``sling run -r replication.yaml`` with ``mode: incremental``,
  ``primary_key: [id]``, ``update_key: updated_at``.

State. An incremental peer is only as good as the state its previous run left, so each peer gets the
state it would have in production after the previous hourly run, made by the peer itself: the suite
empties a copy of the prepared target (:func:`empty_target`, keeping its table definition), runs the
peer once against the *unchanged* source into it (runs ``dlt_initial`` / ``sling_initial``, checked
equal to the source), and only then changes the source; every measured run gets a copy of that seeded
target. dlt keeps its cursor in the destination (``_dlt_pipeline_state``) and each child starts with an
empty pipelines directory, so the cursor is restored from there, as on a fresh worker. Sling keeps no
state for a database target: its checkpoint is ``max(updated_at)`` of the target table, read at the
start of each run. Either way the cursor is the pre-change source's largest ``updated_at``.

The peer's tools are the optional ``peers`` extra (``pip install -e '.[bench,peers]'``). The ``sling``
PyPI package fetches its binary from GitHub on first import, which this machine cannot reach; the
``sling-linux-amd64`` wheel carries the binary itself, and that is what runs here (:func:`missing`
says why a peer cannot run).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from benchmarks.workload import WINDOW_END, Layout, engine_for

Result = dict[str, Any]

PIPELINE_NAME = "bench_events"
SLING_WHEEL = "sling_linux_amd64"
PACKAGES = ("dlt", "pyarrow", "sling-linux-amd64")
# The suite's pairs each peer runs on. dlt from MariaDB reflects the JSON column as text, and its merge
# from the staging table into the target's jsonb column fails (no cast); making it work takes a type
# hint and a parsing step of the user's, which would no longer be dlt as configured out of the box.
PAIRS = {"dlt": ("pg-pg",), "dlt_pyarrow": ("pg-pg",), "sling": ("pg-pg", "mariadb-pg")}
POLL_SECONDS = 0.01

SLING_REPLICATION = """\
source: BENCH_SOURCE
target: BENCH_TARGET
defaults:
  mode: incremental
  primary_key: [id]
  update_key: updated_at
streams:
  {source_table}:
    object: public.events
"""


# -- the suite's side --------------------------------------------------------------------------------
def missing(method: str) -> str | None:
    """Why ``method`` cannot run on this machine, or None when it can."""
    needs = {"dlt": ("dlt",), "dlt_pyarrow": ("dlt", "pyarrow"), "sling": (SLING_WHEEL,)}[method]
    absent = [name for name in needs if importlib.util.find_spec(name) is None]
    if absent:
        return f"{', '.join(absent)} not installed (pip install -e '.[bench,peers]')"
    if method == "sling" and not Path(_sling_binary()).is_file():
        return "the sling-linux-amd64 wheel has no binary for this platform"
    return None


def versions() -> dict[str, str]:
    """The installed peers' package versions (absent ones left out)."""
    found = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def empty_target(url: str) -> None:
    """Empty ``events`` in a copy of the prepared target, keeping its definition (key, index).

    Neither peer adopts a filled table it did not load: dlt cannot add its NOT NULL ``_dlt_*`` columns
    to one, and a peer's state must be its own. So a peer's target starts as production's did, empty,
    and the peer's initial run fills it.
    """
    engine = engine_for(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("TRUNCATE events")
    finally:
        engine.dispose()


def change_coverage(target_url: str, layout: Layout) -> dict[str, dict[str, int]]:
    """How many of each kind of the workload's changes reached the target (a PostgreSQL database).

    By the workload's id layout (:mod:`benchmarks.workload`): an update applied has ``kind =
    'kind-updated'``, an insert applied exists, a delete applied is gone, a move applied has its
    ``updated_at`` in the next hour.
    """
    p = layout.change_params()
    m = p["m"]
    _, first, last = layout.insert_block()
    changed = f"id BETWEEN {m} + {p['lo']} AND {m} + {p['hi']}"
    query = f"""
        SELECT count(*) FILTER (WHERE {changed} AND mod(id - {m}, {p["update_mod"]}) = 1
                                AND kind = 'kind-updated'),
               count(*) FILTER (WHERE id BETWEEN {first} AND {last}),
               count(*) FILTER (WHERE {changed} AND mod(id - {m}, {p["delete_mod"]}) = 2),
               count(*) FILTER (WHERE {changed} AND mod(id - {m}, {p["move_mod"]}) = 3
                                AND updated_at >= :end)
        FROM events
    """
    engine = engine_for(target_url)
    try:
        with engine.connect() as conn:
            updated, inserted, still_there, moved = conn.execute(sa.text(query), {"end": WINDOW_END}).one()
    finally:
        engine.dispose()
    return {
        "updated": {"expected": layout.updated, "applied": updated},
        "inserted": {"expected": layout.inserted, "applied": inserted},
        "deleted": {"expected": layout.deleted, "applied": layout.deleted - still_there},
        "moved": {"expected": layout.moved, "applied": moved},
    }


def json_not_objects(target_url: str) -> int:
    """Rows of the target's ``events`` whose ``payload`` is not a JSON object (every source one is).

    The suite's comparison parses a JSON string it reads (MariaDB returns JSON as text), so a loader
    that stored the JSON *text* as a jsonb string scalar would pass it; this count catches that.
    """
    engine = engine_for(target_url)
    try:
        with engine.connect() as conn:
            query = "SELECT count(*) FROM events WHERE jsonb_typeof(payload) <> 'object'"
            return int(conn.exec_driver_sql(query).scalar_one())
    finally:
        engine.dispose()


# -- dlt ---------------------------------------------------------------------------------------------
def _dlt_destination_url(url: str) -> str:
    """dlt's PostgreSQL credentials (psycopg2) for a suite URL.

    dlt requires a password; the local server trusts every local connection, so a placeholder stands
    in when the URL has none.
    """
    parsed = sa.make_url(url)
    return parsed.set(drivername="postgresql", password=parsed.password or "unused").render_as_string(
        hide_password=False
    )


def _dlt_cursor(pipeline: Any) -> str | None:
    """The ``updated_at`` cursor in the pipeline's state, as text (None before the first run)."""
    resources = pipeline.state.get("sources", {}).get("sql_database", {}).get("resources", {})
    value = resources.get("events", {}).get("incremental", {}).get("updated_at", {}).get("last_value")
    return None if value is None else str(value)


def _run_dlt(source_url: str, target_url: str, backend: str) -> Result:
    """One run of the pipeline, state restored from the destination as on a fresh worker."""
    import dlt
    from dlt.sources.sql_database import sql_database

    with tempfile.TemporaryDirectory(prefix="bench_dlt_") as pipelines_dir:
        source = sql_database(source_url, table_names=["events"], backend=backend)  # type: ignore[arg-type]
        source.events.apply_hints(
            incremental=dlt.sources.incremental("updated_at"),
            primary_key="id",
            write_disposition="merge",
        )
        pipeline = dlt.pipeline(
            pipeline_name=PIPELINE_NAME,
            destination=dlt.destinations.postgres(_dlt_destination_url(target_url)),
            dataset_name="public",
            pipelines_dir=pipelines_dir,
        )
        pipeline.sync_destination()  # what run() does first; done here to record the cursor it starts from
        cursor_before = _dlt_cursor(pipeline)
        pipeline.run(source)
        trace = pipeline.last_trace
        normalized = None if trace is None else trace.last_normalize_info
        rows = 0 if normalized is None else normalized.row_counts.get("events", 0)
        return {
            "rows_read": rows,
            "rows_written": rows,
            "detail": {
                "backend": backend,
                "cursor_before": cursor_before,
                "cursor_after": _dlt_cursor(pipeline),
                "row_counts": {} if normalized is None else dict(normalized.row_counts),
            },
        }


def run_dlt(source_url: str, target_url: str, **_: Any) -> Result:
    """dlt ``sql_database``, incremental merge on ``updated_at``, the default (sqlalchemy) backend."""
    return _run_dlt(source_url, target_url, "sqlalchemy")


def run_dlt_pyarrow(source_url: str, target_url: str, **_: Any) -> Result:
    """The same pipeline with ``backend="pyarrow"``."""
    return _run_dlt(source_url, target_url, "pyarrow")


# -- Sling -------------------------------------------------------------------------------------------
def _sling_binary() -> str:
    spec = importlib.util.find_spec(SLING_WHEEL)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"{SLING_WHEEL} is not installed (pip install -e '.[bench,peers]')")
    return str(Path(spec.origin).parent / "bin" / "sling-linux-amd64")


def _sling_connection(url: str) -> tuple[str, str]:
    """Sling's connection URL for a suite URL, and the schema that holds ``events`` there."""
    parsed = sa.make_url(url)
    auth = parsed.username or ""
    if parsed.password:
        auth += f":{parsed.password}"
    if parsed.get_backend_name() == "postgresql":
        address = f"{parsed.host or '127.0.0.1'}:{parsed.port or 5432}"
        return f"postgresql://{auth}@{address}/{parsed.database}?sslmode=disable", "public"
    address = f"{parsed.host or '127.0.0.1'}:{parsed.port or 3306}"
    return f"mysql://{auth}@{address}/{parsed.database}", str(parsed.database)


def _watch(command: list[str], env: dict[str, str], cwd: str) -> tuple[int, str, int]:
    """Run ``command`` and return its exit code, output, and its own peak RSS (``VmHWM``) in KiB.

    The work happens in the Go binary, not in this Python process, so its peak is read from its
    ``/proc/PID/status`` while it runs (not ``RUSAGE_CHILDREN``, which starts from this process's RSS:
    see :func:`benchmarks.methods.peak_rss_kib`).
    """
    peak = 0
    with tempfile.TemporaryFile(mode="w+") as log:
        process = subprocess.Popen(  # noqa: S603 - the wheel's binary, arguments we built
            command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd
        )
        status = Path(f"/proc/{process.pid}/status")
        while process.poll() is None:
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
            except (OSError, ValueError):
                pass  # exiting between poll() and the read
            time.sleep(POLL_SECONDS)
        log.seek(0)
        return process.returncode, log.read(), peak


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run_sling(source_url: str, target_url: str, **_: Any) -> Result:
    """``sling run -r replication.yaml``: incremental, primary key ``id``, update key ``updated_at``.

    Run with ``-d`` so the log shows the checkpoint query and the source query Sling built from it.
    """
    source_connection, schema = _sling_connection(source_url)
    target_connection = _sling_connection(target_url)[0]
    with tempfile.TemporaryDirectory(prefix="bench_sling_") as home:
        replication = Path(home, "replication.yaml")
        replication.write_text(SLING_REPLICATION.format(source_table=f"{schema}.events"))
        env = {
            **os.environ,
            "SLING_HOME_DIR": home,
            "SLING_DISABLE_TELEMETRY": "true",
            "BENCH_SOURCE": source_connection,
            "BENCH_TARGET": target_connection,
        }
        code, output, peak = _watch([_sling_binary(), "run", "-d", "-r", str(replication)], env, home)
    output = _ANSI.sub("", output)
    if code != 0:
        raise RuntimeError(f"sling failed ({code}):\n{output[-4000:]}")
    rows = sum(int(n.replace(",", "")) for n in re.findall(r"inserted ([\d,]+) rows into", output))
    return {
        "rows_read": rows,
        "rows_written": rows,
        "peak_rss_kib": peak,
        "detail": {"binary_peak_rss_kib": peak, "source_query": _sling_source_query(output)},
    }


def _sling_source_query(log: str) -> str | None:
    """The query Sling ran on the source (from its debug log): where its checkpoint went."""
    for line in log.splitlines():
        if "select * from" in line:
            return line.split(" DBG ", 1)[-1]
    return None


def preload(method: str) -> None:
    """Import what the method runs before the suite's baseline RSS is taken."""
    if method.startswith("dlt"):
        os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
        import dlt
        import dlt.destinations
        import dlt.sources.sql_database  # noqa: F401

        if method == "dlt_pyarrow":
            importlib.import_module("pyarrow")


METHODS: dict[str, Callable[..., Result]] = {
    "dlt": run_dlt,
    "dlt_pyarrow": run_dlt_pyarrow,
    "sling": run_sling,
}
