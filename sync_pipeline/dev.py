"""``sync-pipeline dev``: the Dagster UI, daemon and code server on this machine, with a persistent home.

``dagster dev`` without ``DAGSTER_HOME`` keeps its runs in a temporary folder that vanishes on exit,
and would not apply this project's instance settings (run queue, one step per table). This wrapper
points ``DAGSTER_HOME`` at ``.dagster_home`` (or the existing ``DAGSTER_HOME``), puts the packaged
``dagster.yaml`` there on first start, and hands over to ``dagster dev``.
"""

from __future__ import annotations

import os
import shutil
import sys
from importlib import resources
from pathlib import Path

INSTANCE_TEMPLATE = "instance/dagster.yaml"


def prepare_home(home: Path) -> Path:
    """Create the Dagster home with this project's instance settings, keeping an existing file."""
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if not target.exists():
        template = resources.files("sync_pipeline").joinpath(INSTANCE_TEMPLATE)
        with resources.as_file(template) as source:
            shutil.copyfile(source, target)
    return home


def dev_command(host: str, port: int) -> tuple[list[str], dict[str, str]]:
    """The ``dagster dev`` command line and environment that ``sync-pipeline dev`` runs."""
    home = prepare_home(Path(os.environ.get("DAGSTER_HOME") or ".dagster_home").resolve())
    dagster = Path(sys.executable).with_name("dagster")
    argv = [str(dagster), "dev", "-m", "sync_pipeline.definitions", "-h", host, "-p", str(port)]
    return argv, {**os.environ, "DAGSTER_HOME": str(home)}


def run_dev(host: str = "127.0.0.1", port: int = 3000) -> None:
    """Replace this process with ``dagster dev`` (signals then reach Dagster directly)."""
    argv, env = dev_command(host, port)
    os.execve(argv[0], argv, env)  # noqa: S606 - a fixed program path next to this interpreter
