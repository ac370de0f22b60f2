"""Cost of verifying an unchanged hour across engines when it has a double or a JSON column.

Across engines every column is compared by its canonical text. A double is printed in SQL on each
side (its IEEE bits, ``engine/db/float_bits.py``); a JSON column across engines is still printed in
Python, which makes the rows travel to the step process. This script builds one PostgreSQL hour of
``--rows`` rows (``events`` with a ``double precision`` score and, with ``--json``, a ``jsonb``
payload), syncs it into a MariaDB or SQLite target, and runs ``verify_partition`` ``--repeat``
times in this process, printing each run's wall seconds and this process's CPU seconds (what the
step process pays) beside the load average. ``--keep`` keeps the databases, ``--urls S T`` reuses
them, so two trees of the code can be run on the same data (``PYTHONPATH`` first).

    .venv/bin/python -m benchmarks.cross_engine_verify --target mariadb --rows 200000 --json --repeat 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime

import sqlalchemy as sa

from benchmarks.drift_check import events_table
from sync_pipeline.engine.diff.window import Window
from sync_pipeline.engine.sync import sync_partition
from sync_pipeline.engine.verify import verify_partition

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
MARIADB = "mysql+pymysql://root@127.0.0.1:3306/mysql"
HOUR = datetime(2026, 11, 30, 8, tzinfo=UTC)

EVENTS = """
CREATE TABLE events (id bigint PRIMARY KEY, account_id int, kind text, amount numeric(12,2),
                     score double precision, {payload} updated_at timestamptz NOT NULL);
INSERT INTO events
SELECT g, mod(g, 1000), 'kind-' || mod(g, 17), mod(g, 100000) / 100.0, sqrt(g) / 7.0 - 3.0,
       {payload_value} timestamptz '2026-11-30 08:00:00+00' + (g * 3599.0 / {rows}) * interval '1 second'
FROM generate_series(1, {rows}) AS g;
CREATE INDEX ON events (updated_at);
ANALYZE events;
"""


def _create(admin_url: str, prefix: str) -> str:
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    return sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def build(rows: int, target: str, json: bool) -> tuple[str, str]:
    """A PostgreSQL source holding the hour and an empty target database; their URLs."""
    source = _create(POSTGRES, "bench_cev")
    engine = sa.create_engine(source)
    payload = "payload jsonb," if json else ""
    document = "jsonb_build_object('n', g, 'x', g / 3.0, 'tags', jsonb_build_array('a', mod(g, 7))),"
    payload_value = document if json else ""
    with engine.begin() as conn:
        for statement in EVENTS.format(rows=rows, payload=payload, payload_value=payload_value).split(";"):
            if statement.strip():
                conn.exec_driver_sql(statement)
    engine.dispose()
    if target == "mariadb":
        return source, _create(MARIADB, "bench_cev")
    path = os.path.join(tempfile.mkdtemp(prefix="bench_cev_"), "target.db")
    return source, f"sqlite:///{path}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--target", choices=["mariadb", "sqlite"], default="mariadb")
    parser.add_argument("--json", action="store_true", help="a jsonb payload column too")
    parser.add_argument("--keep", action="store_true", help="keep the databases (their URLs are printed)")
    parser.add_argument("--urls", nargs=2, metavar=("SOURCE", "TARGET"), help="reuse two kept databases")
    args = parser.parse_args()
    if args.urls:
        source, target = args.urls
    else:
        source, target = build(args.rows, args.target, args.json)
    table = events_table(source, target)
    window = Window.hour_starting(HOUR)
    if not args.urls:
        assert sync_partition(table, source, target, window).inserted == args.rows
    walls, cpus = [], []
    for _ in range(args.repeat):
        load = os.getloadavg()[0]
        cpu, wall = time.process_time(), time.perf_counter()
        verification = verify_partition(table, source, target, window)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        assert verification.in_sync, verification
        print(
            f"wall {walls[-1]:.2f} s, step CPU {cpus[-1]:.2f} s, keys streamed {verification.keys_scanned}, "
            f"load {load:.1f}",
            flush=True,
        )
    print(f"median: wall {statistics.median(walls):.2f} s, step CPU {statistics.median(cpus):.2f} s")
    if args.keep or args.urls:
        print("urls:", source, target)


if __name__ == "__main__":
    main()
