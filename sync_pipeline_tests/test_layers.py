"""The package's layers hold: the engine runs without Dagster, and loading it opens nothing.

The engine is imported in a fresh interpreter, so that what an earlier test imported cannot hide an
import of Dagster that crept into an engine module.
"""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
import sync_pipeline.engine
from sync_pipeline.engine import sync_partition, verify_partition
loaded = sorted(name for name in sys.modules if name == "dagster" or name.startswith("dagster."))
print(",".join(loaded))
"""


def test_the_engine_imports_no_dagster() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"the engine loaded Dagster modules: {result.stdout.strip()}"


def test_the_probe_would_see_dagster() -> None:
    """The probe is not blind: importing the Dagster layer does load Dagster."""
    probe = PROBE.replace("import sync_pipeline.engine\n", "import sync_pipeline.orchestration.assets\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert "dagster" in result.stdout.split(",")
