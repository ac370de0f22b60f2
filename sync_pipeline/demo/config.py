"""The embedded demo's configuration: two SQLite files under a data folder, three tables synced hourly.

Dagster loads the definitions in several processes (webserver, daemon, code server, every step), at
different times. They must all see the same partitions, so the demo's first partition cannot be
derived from the clock each time: the first process to ask writes it to ``demo.json`` in the data
folder and everyone after reads it. Building the config touches only that small file, never a
database, because loading definitions must open no connection (SPEC section 5).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from sqlalchemy.engine import URL

from sync_pipeline.config import SyncConfig, parse_config
from sync_pipeline.errors import ConfigError

__all__ = [
    "DATA_DIR_ENV",
    "HISTORY",
    "SOURCE_CONNECTION",
    "STATE_FILE",
    "TARGET_CONNECTION",
    "data_dir",
    "demo_config",
    "demo_start",
    "utc_now",
]

DATA_DIR_ENV: Final = "SYNC_PIPELINE_DATA_DIR"
"""Environment variable naming the folder of the demo's databases and state; default ``./data``."""

SOURCE_CONNECTION: Final = "demo_source"
TARGET_CONNECTION: Final = "demo_target"
STATE_FILE: Final = "demo.json"
SOURCE_FILE: Final = "demo_source.db"
TARGET_FILE: Final = "demo_target.db"

HISTORY: Final = timedelta(hours=48)
"""How far back the seeded data, and so the first partition, reaches when the demo starts."""

# The demo is written the way a user would write their own file, so it doubles as an example. Values
# that depend on the machine come in through parse_config's own ${VAR} interpolation.
_TEMPLATE: Final = """\
partition_timezone: UTC
# A new demo has 48 hours of history and syncs only the last one at first start: the catch-up
# requests the 47 others at its first evaluation; they are synced about two minutes after start.
catch_up: {interval_seconds: 30}
freshness: {interval_seconds: 60}
connections:
  demo_source: {url: "${DEMO_SOURCE_URL}"}
  demo_target: {url: "${DEMO_TARGET_URL}"}
defaults:
  source: {connection: demo_source}
  target: {connection: demo_target}
  primary_key: [id]
  updated_at: updated_at
  start: "${DEMO_START}"
tables:
  - name: orders
    description: >-
      Shop orders: status moves pending -> paid -> shipped (or cancelled), amounts are exact
      decimals and the line items a JSON list. Deleted orders are deleted in the target.
    source: {table: orders}
    target: {table: orders}
  - name: customers
    description: >-
      Customer accounts. A customer erased in the source is kept in the target and marked
      deleted (delete_mode soft), as a warehouse keeping history would.
    source: {table: customers}
    target: {table: customers}
    delete_mode: soft
  - name: events
    description: >-
      A high-volume activity log with JSON payloads. A few rows have no updated_at: they belong
      to no hourly partition and are counted in every sync's metadata instead of being lost.
    source: {table: events}
    target: {table: events}
"""


def utc_now(now: datetime | None = None) -> datetime:
    """``now`` as an aware UTC datetime, the clock if ``None``; a naive value is refused as ambiguous."""
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError(f"now must be timezone-aware, got naive {now.isoformat()}")
    return now.astimezone(UTC)


def data_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """The demo's data folder: ``$SYNC_PIPELINE_DATA_DIR``, else ``./data``, made absolute.

    Absolute because every process builds the SQLite URLs from it and they may not share a cwd.
    """
    return Path(environ.get(DATA_DIR_ENV) or "data").expanduser().resolve()


def demo_start(data_dir: Path, now: datetime | None = None) -> datetime:
    """The demo's first hourly partition (UTC), fixed by the first call and read by every later one."""
    path = data_dir / STATE_FILE
    if not path.exists():
        first_hour = utc_now(now).replace(minute=0, second=0, microsecond=0) - HISTORY
        _create_once(path, json.dumps({"start": first_hour.isoformat()}, indent=2) + "\n")
    return _read_start(path)


def demo_config(data_dir: Path, now: datetime | None = None) -> SyncConfig:
    """The demo's :class:`SyncConfig`, with its databases in ``data_dir``; opens no database.

    ``now`` only matters on the very first call, when it fixes the first partition to its hour
    minus :data:`HISTORY`.
    """
    folder = data_dir.expanduser().resolve()
    environ = {
        "DEMO_SOURCE_URL": _sqlite_url(folder / SOURCE_FILE),
        "DEMO_TARGET_URL": _sqlite_url(folder / TARGET_FILE),
        "DEMO_START": demo_start(folder, now).isoformat(),
    }
    return parse_config(_TEMPLATE, source="<embedded demo config>", environ=environ)


def _sqlite_url(path: Path) -> str:
    # URL.create escapes what make_url would otherwise misread (a '%' or '?' in the folder name).
    return URL.create("sqlite", database=str(path)).render_as_string(hide_password=False)


def _create_once(path: Path, text: str) -> None:
    """Create ``path`` with ``text`` unless it exists; never leave it half-written.

    Two processes starting together may straddle an hour and compute different starts. Hard-linking
    a complete temporary file into place fails if the name exists, so the first writer wins and the
    others then read its value. Where hard links are not supported, ``os.replace`` is still atomic
    but the last writer wins; it is the next best thing.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temp, path)
        except FileExistsError:
            pass
        except OSError:
            os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _read_start(path: Path) -> datetime:
    """The start stored in ``path``, checked, so a hand-edited file fails here and not in Dagster."""
    fix = f"delete {path} (and the demo databases beside it) to start the demo afresh"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        start = datetime.fromisoformat(state["start"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"{path}: unreadable demo state ({type(error).__name__}); {fix}") from None
    if start.tzinfo is None or (start.minute, start.second, start.microsecond) != (0, 0, 0):
        raise ConfigError(f"{path}: start {start.isoformat()} is not an aware time on the hour; {fix}")
    return start.astimezone(UTC)
