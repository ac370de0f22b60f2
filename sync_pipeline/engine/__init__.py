"""The sync engine: plan, diff, write and verify one hourly partition of one table.

Everything a partition sync needs lives here and nothing here imports Dagster, so the engine runs the
same under a Dagster step, the CLI, a benchmark or a test, and ``import sync_pipeline.engine`` stays
cheap in the long-lived processes that never sync.
"""

from sync_pipeline.engine.sync import Compare, sync_partition
from sync_pipeline.engine.verify import Verification, verify_partition

__all__ = ["Compare", "Verification", "sync_partition", "verify_partition"]
