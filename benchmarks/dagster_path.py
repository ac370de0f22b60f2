"""The Dagster path of issue 5 item 5: one partition through ``dagster asset materialize``, timed from a
shell, and a backfill of 48 partitions x 3 tables through the daemon and its run queue.

The same deployment and measurements as :mod:`benchmarks.long_lived` (which see), with these defaults:

    .venv/bin/python -m benchmarks.dagster_path
"""

from __future__ import annotations

from benchmarks.long_lived import main

DEFAULTS = {
    "partitions": 48,
    "tables": 3,
    "cli_runs": 3,
    "interval": 5.0,
    "name": "dagster_path",
    "title": "The Dagster path: one partition from the CLI, and a backfill of 48 partitions x 3 tables",
}

if __name__ == "__main__":
    main(defaults=DEFAULTS, module="benchmarks.dagster_path")
