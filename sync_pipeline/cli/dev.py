"""``sync-pipeline dev``: the Dagster UI, daemon and code server on this machine, with a persistent home.

``dagster dev`` without ``DAGSTER_HOME`` keeps its runs in a temporary folder that vanishes on exit,
and would not apply this project's instance settings (run queue, one step per table). This wrapper
points ``DAGSTER_HOME`` at ``.dagster_home`` (or the existing ``DAGSTER_HOME``), puts the packaged
``dagster.yaml`` there on first start, and hands over to ``dagster dev``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

INSTANCE_TEMPLATE = Path(__file__).with_name("instance") / "dagster.yaml"


def prepare_home(home: Path) -> Path:
    """Create the Dagster home with this project's instance settings, keeping an existing file."""
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if not target.exists():
        shutil.copyfile(INSTANCE_TEMPLATE, target)
    return home


def dev_command(host: str, port: int) -> tuple[list[str], dict[str, str]]:
    """The ``dagster dev`` command line and environment that ``sync-pipeline dev`` runs."""
    home = prepare_home(Path(os.environ.get("DAGSTER_HOME") or ".dagster_home").resolve())
    dagster = Path(sys.executable).with_name("dagster")
    argv = [str(dagster), "dev", "-m", "sync_pipeline.definitions", "-h", host, "-p", str(port)]
    return argv, {**os.environ, "DAGSTER_HOME": str(home)}


def sync_last_hour(env: dict[str, str], now: datetime | None = None) -> list[list[str]]:
    """Run the hourly job for the last completed hour now, as the schedule would at its next tick.

    A new user then sees a synced partition at once instead of waiting for the schedule. Runs
    ``dagster job execute`` of each hourly job (one per group of tables sharing a partitions
    definition) against the same instance the UI uses; returns the commands it ran.
    """
    from dagster import partition_loading_context

    from sync_pipeline.config import CONFIG_ENV_VAR
    from sync_pipeline.orchestration.resources import active_config
    from sync_pipeline.orchestration.schedules import PARTITION_TAG, build_jobs

    config = active_config(env.get(CONFIG_ENV_VAR, ""))
    commands = []
    for job, partitions in build_jobs(config):
        # Dagster's own last complete partition, as the schedule asks for: wall-clock arithmetic
        # is wrong across DST changes, and a repeated hour has its own key (02:00+0100).
        with partition_loading_context(effective_dt=now or datetime.now(UTC)):
            key = partitions.get_last_partition_key()
        if key is None:
            continue
        commands.append(
            [
                str(Path(sys.executable).with_name("dagster")),
                *("job", "execute", "-m", "sync_pipeline.definitions", "-j", job.name),
                *("--tags", json.dumps({PARTITION_TAG: key})),
            ]
        )
    for command in commands:
        subprocess.run(command, env=env, check=False)  # noqa: S603 - fixed program, arguments from config
    return commands


def run_dev(host: str = "127.0.0.1", port: int = 3000, *, sync_first: bool = False) -> None:
    """Replace this process with ``dagster dev`` (signals then reach Dagster directly)."""
    argv, env = dev_command(host, port)
    if sync_first:
        sync_last_hour(env)
    os.execve(argv[0], argv, env)  # noqa: S606 - a fixed program path next to this interpreter
