"""Where sync_pipeline's time goes on the suite's workload: a sampling profile and its SQL timed apart.

Builds the suite's changed window (:mod:`benchmarks.workload`), then:

1. runs the engine in a child under ``py-spy record --idle`` (waiting on the database counts, so the
   profile adds up to wall time) or, with ``--profiler cprofile``, under cProfile, for the changed
   window and again for the unchanged one, and prints the functions holding the most samples;
2. times, one by one, the queries the engine sends (count-and-hash of the window, the bucket
   checksums of the descent, draining the key streams) next to cheaper aggregates a future engine
   could use, so a suggestion comes with its measured gain;
3. (PostgreSQL to PostgreSQL) times a prototype of the key merge done with binary COPY and numpy.

    .venv/bin/pip install -e '.[bench]'      # py-spy
    .venv/bin/python -m benchmarks.profile_engine --rows 1000000 --pair pg-pg
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from benchmarks.suite import PAIRS, ROOT
from benchmarks.workload import WINDOW_END, WINDOW_START, Layout, Servers, apply_changes, build, engine_for

# Functions worth naming in a summary (inclusive time): the engine's phases and the layers under them.
WATCH = (
    "run",
    "plan_sync",
    "_ranges",
    "checksum",
    "bucket_checksums",
    "differing",
    "_diff",
    "merge_keys",
    "diff_chunks",
    "_compare",
    "_walk",
    "check",
    "_take",
    "work",
    "key_stream",
    "_flush",
    "lookup",
    "fetch_rows",
    "stage_rows",
    "copy_rows",
    "apply",
    "partitions",
    "fetchmany",
    "_fetchmany_impl",
    "wait",
    "_allrows",
    "_read_bytes",
    "both",
    "result",
)


def _py_spy() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


def _frames(stack: str) -> list[str]:
    """``function (file:line)`` frames of one collapsed stack, outermost first, without the thread."""
    frames = stack.split(";")
    if frames and frames[0].startswith(("thread ", "process ")):
        frames = frames[1:]
    return frames


def _function(frame: str) -> str:
    name, _, where = frame.partition(" (")
    module = where.split(":")[0].rsplit("/", 1)[-1]
    return f"{name} ({module})"


def summarize_collapsed(path: Path, top: int = 25, root: str = "sync_partition") -> dict[str, Any]:
    """Inclusive and self sample shares per function from py-spy's ``--format raw`` output.

    Only stacks that pass through ``root`` count, so interpreter start, imports and the idle thread
    pool are left out and the shares add up to the sync's own wall time (on its calling thread).
    """
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    total = everything = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        everything += count
        frames = [_function(f) for f in _frames(stack)]
        if not any(f.split(" (")[0].rsplit(".", 1)[-1] == root for f in frames):
            continue
        total += count
        for name in set(frames):
            inclusive[name] += count
        if frames:
            leaf[frames[-1]] += count

    def share(n: int) -> float:
        return round(100 * n / total, 1) if total else 0.0

    def watched(name: str) -> bool:
        return name.split(" (")[0].rsplit(".", 1)[-1] in WATCH

    return {
        "samples_in_sync": total,
        "samples_in_process": everything,
        "inclusive_pct": {k: share(v) for k, v in inclusive.most_common() if watched(k)},
        "self_pct": {k: share(v) for k, v in leaf.most_common(top)},
    }


def profile_child(params: dict[str, Any], profiler: str, out: Path, tag: str) -> dict[str, Any]:
    """Run the engine method in a child under the profiler; return the child's result and a summary."""
    command = [sys.executable, "-m", "benchmarks.methods", "engine"]
    if profiler == "py-spy":
        spy = _py_spy()
        if spy is None:
            raise SystemExit("py-spy is not installed: .venv/bin/pip install -e '.[bench]'")
        raw = out / f"{tag}.collapsed.txt"
        command = [
            spy,
            "record",
            "--idle",
            "--rate",
            "250",
            "--format",
            "raw",
            "-o",
            str(raw),
            "--",
            *command,
        ]
    else:
        stats_path = out / f"{tag}.pstats"
        command = [sys.executable, "-m", "cProfile", "-o", str(stats_path), *command[1:]]
    completed = subprocess.run(  # noqa: S603 - our interpreter (or py-spy) and module
        command, input=json.dumps(params), cwd=ROOT, capture_output=True, text=True, check=True
    )
    result = json.loads(
        next(line for line in reversed(completed.stdout.splitlines()) if line.startswith("{"))
    )
    if profiler == "py-spy":
        return {"result": result, "profile": summarize_collapsed(raw)}
    import pstats

    printed = io.StringIO()
    pstats.Stats(str(stats_path), stream=printed).sort_stats("cumulative").print_stats(30)
    lines = [line for line in printed.getvalue().splitlines() if line.strip()]
    return {"result": result, "profile": {"cprofile_top_cumulative": lines}}


def _timed(action: Callable[[], Any], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return round(sorted(times)[len(times) // 2], 3)


def time_queries(source_url: str, target_url: str, chunk_size: int) -> dict[str, float]:
    """Median seconds of each query the engine sends, and of cheaper alternatives, one side at a time."""
    from sync_pipeline.config import parse_config
    from sync_pipeline.engine.db.engine import open_engine
    from sync_pipeline.engine.diff.segments import KeyRange
    from sync_pipeline.engine.diff.window import Window
    from sync_pipeline.engine.plan import plan_sync

    table = parse_config(
        f"""
connections: {{s: {{url: "{source_url}"}}, t: {{url: "{target_url}"}}}}
tables:
  - {{name: events, source: {{connection: s, table: events}}, target: {{connection: t, table: events}},
     primary_key: [id], updated_at: updated_at, start: "2026-11-01T00:00:00", chunk_size: {chunk_size}}}
"""
    ).tables[0]
    window = Window.hour_starting(WINDOW_START)
    timings: dict[str, float] = {}
    with open_engine(source_url) as source, open_engine(target_url) as target:
        plan = plan_sync(table, source, target, create_target=False)
        assert plan.target is not None
        for label, side, engine in (("source", plan.source, source), ("target", plan.target, target)):
            with engine.connect() as conn:
                _, lo, hi = side.checksum(conn, window)
                assert lo is not None
                assert hi is not None
                whole = KeyRange(lo, hi + 1)
                width, _ = whole.split(32)

                timings[f"{label}: checksum (count + integer mix hash of key, updated_at micros)"] = _timed(
                    partial(side.checksum, conn, window)
                )
                timings[f"{label}: bucket checksums, 32 buckets"] = _timed(
                    partial(side.bucket_checksums, conn, window, whole, width)
                )
                timings[f"{label}: key stream drained in Python (driver tuples, in chunks)"] = _timed(
                    partial(_drain, side.key_stream(conn, window, KeyRange(), chunk_size)), repeat=1
                )
                for name, sql in _alternatives(engine.dialect.name):
                    timings[f"{label}: {name}"] = _timed(partial(_fetch_all, conn, sql))
    return timings


def _drain(stream: Iterator[Any]) -> None:
    for _ in stream:
        pass


def _fetch_all(conn: sa.Connection, sql: str) -> None:
    conn.exec_driver_sql(sql).all()


def _alternatives(dialect: str) -> Iterator[tuple[str, str]]:
    """Aggregates over the same window that would settle or split it more cheaply (for comparison)."""
    if dialect == "postgresql":
        where = f"updated_at >= '{WINDOW_START.isoformat()}' AND updated_at < '{WINDOW_END.isoformat()}'"
        micros = "(extract(epoch FROM updated_at) * 1000000)::bigint"
        yield "count(*) only", f"SELECT count(*) FROM events WHERE {where}"
        yield (
            "count + sum(id) + sum(micros) (no per-row hash)",
            f"SELECT count(*), sum(id), sum({micros}) FROM events WHERE {where}",
        )
        yield (
            "count + sum of a 60-bit integer mix of (id, micros)",
            "SELECT count(*), sum(mod(mod(id, 2147483629) * 1103515245"
            f" + mod({micros}, 2147483629), 2147483629) * (mod(id, 65521) + 1)) FROM events WHERE {where}",
        )
        yield (
            "md5 of the same text, no hex-to-bit cast",
            f"SELECT count(*), sum(length(md5(id::text || '|' || {micros}::text))) FROM events WHERE {where}",
        )
        yield (
            "count + sum(hashtextextended(text, 0)) (PostgreSQL only)",
            f"SELECT count(*), sum(hashtextextended(id::text || '|' || {micros}::text, 0)::numeric)"
            f" FROM events WHERE {where}",
        )
        yield (
            "raw key stream, ordered (server side, no transfer)",
            f"SELECT count(*) FROM (SELECT id, {micros} FROM events WHERE {where} ORDER BY id) AS k",
        )
    else:
        lo = WINDOW_START.replace(tzinfo=None).isoformat(sep=" ")
        hi = WINDOW_END.replace(tzinfo=None).isoformat(sep=" ")
        where = f"updated_at >= '{lo}' AND updated_at < '{hi}'"
        micros = "TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', updated_at)"
        yield "count(*) only", f"SELECT count(*) FROM events WHERE {where}"
        yield (
            "count + sum(id) + sum(micros) (no per-row hash)",
            f"SELECT count(*), sum(id), sum({micros}) FROM events WHERE {where}",
        )
        yield (
            "count + sum of a 60-bit integer mix of (id, micros)",
            "SELECT count(*), sum(MOD(MOD(id, 2147483629) * 1103515245"
            f" + MOD({micros}, 2147483629), 2147483629) * (MOD(id, 65521) + 1)) FROM events WHERE {where}",
        )


def prototype_key_diff(source_url: str, target_url: str) -> dict[str, Any]:
    """The key merge as it could be: binary COPY of ``(id, micros)`` from both sides, compared by numpy.

    PostgreSQL on both sides only. A prototype to size the gain, not an engine: it holds the window's
    keys (16 bytes a row) instead of a chunk; a real version would do the same per key range.
    """
    import threading

    import numpy as np
    import psycopg

    from benchmarks.methods import _pg_conninfo

    micros = "(extract(epoch FROM updated_at) * 1000000)::bigint"
    where = f"updated_at >= '{WINDOW_START.isoformat()}' AND updated_at < '{WINDOW_END.isoformat()}'"
    query = f"COPY (SELECT id, {micros} FROM events WHERE {where} ORDER BY id) TO STDOUT (FORMAT BINARY)"
    row = np.dtype([("fields", ">i2"), ("len1", ">i4"), ("id", ">i8"), ("len2", ">i4"), ("ts", ">i8")])
    keys: dict[str, Any] = {}

    def read(side: str, url: str) -> None:
        with psycopg.connect(_pg_conninfo(url)) as conn, conn.cursor().copy(query) as copy:
            data = b"".join(bytes(block) for block in copy)
        body = np.frombuffer(data[19:-2], dtype=row)  # 19-byte header, 2-byte trailer
        keys[side] = (body["id"].astype(np.int64), body["ts"].astype(np.int64))

    started = time.perf_counter()
    threads = [
        threading.Thread(target=read, args=a) for a in (("source", source_url), ("target", target_url))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    read_seconds = time.perf_counter() - started
    (sid, sts), (tid, tts) = keys["source"], keys["target"]
    common, si, ti = np.intersect1d(sid, tid, assume_unique=True, return_indices=True)
    changed = int((sts[si] != tts[ti]).sum())
    return {
        "seconds": round(time.perf_counter() - started, 3),
        "read_seconds": round(read_seconds, 3),
        "source_only": len(sid) - len(common),
        "target_only": len(tid) - len(common),
        "changed": changed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--pair", choices=list(PAIRS), default="pg-pg")
    parser.add_argument("--profiler", choices=["py-spy", "cprofile"], default="py-spy")
    parser.add_argument("--chunk-size", type=int, default=10_000)
    parser.add_argument("--out", type=Path, help="where to keep the raw profiles (default: a temp dir)")
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--mysql-url", default="mysql+pymysql://root@127.0.0.1:3306/")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="sync_profile_"))
    out.mkdir(parents=True, exist_ok=True)
    servers = Servers(args.pg_url, args.mysql_url)
    layout = Layout(args.rows)
    kinds = PAIRS[args.pair]
    report: dict[str, Any] = {"rows": args.rows, "pair": args.pair, "profiler": args.profiler}
    try:
        source = servers.create(kinds[0], "prof_src")
        target = servers.create(kinds[1], "prof_tgt")
        build(source, layout)
        build(target, layout)
        apply_changes(source, layout)
        with engine_for(target).connect() as conn:  # warm the target like the source (both just built)
            conn.exec_driver_sql("SELECT count(*) FROM events").all()
        params = {"source_url": source, "target_url": target, "chunk_size": args.chunk_size}
        if args.pair == "pg-pg":  # before the sync, while there is a difference to find
            report["prototype_key_diff"] = prototype_key_diff(source, target)
        report["changed"] = profile_child(params, args.profiler, out, "changed")
        report["unchanged"] = profile_child(params, args.profiler, out, "unchanged")
        report["queries"] = time_queries(source, target, args.chunk_size)
    finally:
        servers.drop_all()
    (out / "profile.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print(f"raw profiles in {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
