"""The ``sync-pipeline`` command: validate, diff, sync and dev."""

from sync_pipeline.cli.main import cli, main

__all__ = ["cli", "main"]
