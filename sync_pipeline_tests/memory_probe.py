"""Child process for the memory tests: sync one window and print the process's peak RSS in KiB.

Run as a script so that the measurement covers a fresh interpreter doing exactly one sync, as a
Dagster step process would. The step process imports the code location (Dagster, the orchestration
layer, the definitions) before it syncs: the probe imports it too, first, so that the peak it reports
includes what Dagster itself weighs (about 40 MB over the engine alone). It does not include the
step's own event logging and storage.

Usage: ``memory_probe.py SOURCE TARGET HOUR CHUNK_SIZE [--table T] [--chunk-bytes N] [--verify]``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from datetime import datetime
from pathlib import Path

from sync_pipeline.config import CONFIG_ENV_VAR, parse_config


def _vm_hwm_kib() -> int:
    """This process's own peak resident set size, from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("source_url")
    parser.add_argument("target_url")
    parser.add_argument("hour")
    parser.add_argument("chunk_size", type=int)
    parser.add_argument("--table", default="events")
    parser.add_argument("--chunk-bytes", type=int, default=None)
    parser.add_argument("--verify", action="store_true", help="verify the window after the sync")
    args = parser.parse_args()

    # What a step process loads before it runs the asset (the demo code location: no config file,
    # its data folder in a temporary directory rather than the working directory).
    os.environ.pop(CONFIG_ENV_VAR, None)
    with tempfile.TemporaryDirectory() as data_dir:
        os.environ.setdefault("SYNC_PIPELINE_DATA_DIR", data_dir)
        import sync_pipeline.definitions  # noqa: F401
    from sync_pipeline.engine.diff.window import Window
    from sync_pipeline.engine.sync import sync_partition
    from sync_pipeline.engine.verify import verify_partition

    chunk_bytes = "" if args.chunk_bytes is None else f"chunk_bytes: {args.chunk_bytes}"
    config = parse_config(
        f"""
connections:
  source: {{url: "{args.source_url}"}}
  target: {{url: "{args.target_url}"}}
tables:
  - name: {args.table}
    source: {{connection: source, table: {args.table}}}
    target: {{connection: target, table: {args.table}}}
    primary_key: [id]
    updated_at: updated_at
    start: "2026-01-01T00:00:00"
    chunk_size: {args.chunk_size}
    {chunk_bytes}
"""
    )
    window = Window.hour_starting(datetime.fromisoformat(args.hour))
    table = config.tables[0]
    stats = sync_partition(table, args.source_url, args.target_url, window)
    in_sync = (
        verify_partition(table, args.source_url, args.target_url, window).in_sync if args.verify else None
    )
    # VmHWM, not ru_maxrss: on Linux ru_maxrss of a fresh child starts at its parent's size (pytest's).
    peak_kib = _vm_hwm_kib()
    print(
        json.dumps(
            {
                "peak_kib": peak_kib,
                "inserted": stats.inserted,
                "updated": stats.updated,
                "source_rows": stats.source_rows,
                "rows_dense": stats.rows_dense,
                "in_sync": in_sync,
            }
        )
    )


if __name__ == "__main__":
    main()
