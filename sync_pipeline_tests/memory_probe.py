"""Child process for the memory test: sync one window and print the process's peak RSS in KiB.

Run as a script so that the measurement covers a fresh interpreter doing exactly one sync, as a
Dagster step process would.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

from sync_pipeline.config import parse_config
from sync_pipeline.engine.diff.window import Window
from sync_pipeline.engine.sync import sync_partition


def _vm_hwm_kib() -> int:
    """This process's own peak resident set size, from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def main() -> None:
    source_url, target_url, hour, chunk_size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    config = parse_config(
        f"""
connections:
  source: {{url: "{source_url}"}}
  target: {{url: "{target_url}"}}
tables:
  - name: events
    source: {{connection: source, table: events}}
    target: {{connection: target, table: events}}
    primary_key: [id]
    updated_at: updated_at
    start: "2026-01-01T00:00:00"
    chunk_size: {chunk_size}
"""
    )
    stats = sync_partition(
        config.tables[0], source_url, target_url, Window.hour_starting(datetime.fromisoformat(hour))
    )
    # VmHWM, not ru_maxrss: on Linux ru_maxrss of a fresh child starts at its parent's size (pytest's).
    peak_kib = _vm_hwm_kib()
    print(json.dumps({"peak_kib": peak_kib, "inserted": stats.inserted, "source_rows": stats.source_rows}))


if __name__ == "__main__":
    main()
