"""The embedded demo: a SQLite source and target, seeded with synthetic rows and kept changing.

Used when ``SYNC_PIPELINE_CONFIG`` is unset, so a new user sees the pipeline work with no database
server. Nothing here imports Dagster; the Dagster layer calls these functions.

- :func:`demo_config` builds the config (and fixes the demo's first partition) without opening a database;
- :func:`ensure_seeded` creates and fills the source tables on first use;
- :func:`simulate_activity` applies one round of application-like changes to the source.
"""

from __future__ import annotations

from sync_pipeline.demo.config import DATA_DIR_ENV, data_dir, demo_config
from sync_pipeline.demo.seed import ensure_seeded
from sync_pipeline.demo.simulator import ActivityStats, TableActivity, simulate_activity

__all__ = [
    "DATA_DIR_ENV",
    "ActivityStats",
    "TableActivity",
    "data_dir",
    "demo_config",
    "ensure_seeded",
    "simulate_activity",
]
