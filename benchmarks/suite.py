"""The benchmark suite: sync_pipeline's engine against the limit and against the job it replaces.

For each window size N and engine pair (PostgreSQL to PostgreSQL, MariaDB to PostgreSQL) it builds one
hourly window of N ``events`` rows in a source and an exact copy in a target, changes the source (1% of
the window updated, 0.5% inserted, 0.2% deleted, 0.1% moved into the next hour; see
:mod:`benchmarks.workload`), then measures, each in a fresh child process (:mod:`benchmarks.methods`):

* ``limit_copy`` / ``limit_keys``: streaming the whole window once, and reading its keys from both
  sides: what any sync must at least pay, with no Python work per row;
* ``naive``: the count-compare, delete-and-reinsert job of SPEC section 1, via ``pandas.read_sql``;
* ``engine_changed``: ``sync_partition`` on the changed window; ``engine_unchanged``: the same again,
  the hourly steady state (nothing changed since);
* once per size, on a target whose window has the source's row count but 1% stale rows:
  ``naive_counts_equal`` (the count check sees nothing) and ``engine_counts_equal``;
* only when asked for (``--methods ...,dlt,dlt_pyarrow,sling``), the peers of :mod:`benchmarks.peers`:
  each first loads the unchanged source into an emptied copy of the target (``<peer>_initial``, which
  leaves the state its previous hourly run would have), then runs incrementally on the changed source.

Every method that writes gets its own copy of the prepared target (``CREATE DATABASE ... TEMPLATE``),
and after it the target's window is compared with the source's, every column, by reading both in key
order (:func:`benchmarks.workload.compare_window`, independent of the engine's own hashing).

Wall seconds are the method's own (measured in the child, connections included, interpreter start
not), median of ``--repeat`` runs; peak RSS is the child's own ``VmHWM`` (see
:func:`benchmarks.methods.peak_rss_kib`). Results go to
``--out`` (default ``benchmarks/results``): ``results.md`` (the tables), ``results.json`` (every run),
``time.png`` and ``rss.png``.

    .venv/bin/python -m benchmarks.suite --sizes 200000,1000000 --repeat 3
    .venv/bin/python -m benchmarks.suite --quick        # N=20000, one run: under a minute
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from benchmarks import peers, report
from benchmarks.workload import (
    SPREADS,
    Layout,
    Servers,
    apply_changes,
    build,
    compare_window,
    make_target_stale,
)

ROOT = Path(__file__).resolve().parents[1]
PAIRS = {"pg-pg": ("postgresql", "postgresql"), "mariadb-pg": ("mysql", "postgresql")}
METHODS = ("limit_copy", "limit_keys", "naive", "engine")
KNOWN_METHODS = (*METHODS, *peers.METHODS)  # the peers run only when named
QUICK_SIZE = 20_000
CHILD_TIMEOUT = 3600

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_child(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """Run one method in a fresh interpreter and return its JSON result, plus the process's wall time."""
    started = time.perf_counter()
    completed = subprocess.run(  # noqa: S603 - our own interpreter and module, arguments we built
        [sys.executable, "-m", "benchmarks.methods", method],
        input=json.dumps(params),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{method} failed ({completed.returncode}):\n{completed.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    result["process_seconds"] = round(time.perf_counter() - started, 4)
    return result


def _database(url: str) -> str:
    name = sa.make_url(url).database
    assert name is not None
    return name


class SizeRun:
    """Everything measured for one engine pair and one window size, on databases it builds and drops."""

    def __init__(
        self,
        servers: Servers,
        pair: str,
        layout: Layout,
        methods: Sequence[str],
        chunk_size: int,
        log: Log,
    ) -> None:
        self.servers = servers
        self.pair = pair
        self.layout = layout
        rows = layout.rows
        self.methods = methods
        self.chunk_size = chunk_size
        self.log = log
        self.label = f"{pair.replace('-', '')}_{rows}"
        self.runs: list[dict[str, Any]] = []

    def expected(self) -> dict[str, int]:
        """What a correct sync of the changed window does (see :mod:`benchmarks.workload`)."""
        layout = self.layout
        return {
            "inserted": layout.inserted,
            "updated": layout.updated + layout.moved,  # moved_out rows get their current version
            "deleted": layout.deleted,
            "moved_out": layout.moved,
            "source_rows": layout.source_rows_after,
            "stale": layout.stale,
        }

    def _record(
        self, name: str, repeat: int, result: dict[str, Any], source: str, target: str | None
    ) -> None:
        if target is not None:
            comparison = compare_window(source, target)
            result.update(
                equal=comparison.equal,
                differing=comparison.differing,
                source_window_rows=comparison.source_rows,
                target_window_rows=comparison.target_rows,
            )
        else:
            result.update(equal=None, differing=None)
        result.update(pair=self.pair, rows=self.layout.rows, name=name, repeat=repeat)
        self.runs.append(result)
        equal = {True: "equal", False: "DIFFERENT", None: "-"}[result["equal"]]
        self.log(
            f"  {self.pair} N={self.layout.rows:,} #{repeat} {name}: {result['seconds']:.3f}s, "
            f"peak {result['peak_rss_kib'] / 1024:.1f} MiB, {result['rows_written']:,} rows written, {equal}"
        )

    def run(self, repeat: int) -> dict[str, Any]:
        servers, kinds = self.servers, PAIRS[self.pair]
        self.log(f"{self.pair} N={self.layout.rows:,}: building source and target")
        started = time.perf_counter()
        source = servers.create(kinds[0], f"{self.label}_src")
        template = servers.create(kinds[1], f"{self.label}_tgt")
        scratch = servers.create(kinds[1], f"{self.label}_scratch")
        seeds: dict[str, str] = {}
        try:
            build(source, self.layout)
            build(template, self.layout)
            baseline = compare_window(source, template)
            if not baseline.equal:
                raise RuntimeError(f"the generated target differs from the source: {baseline}")
            seeding = time.perf_counter()
            self._seed_peers(source, template, seeds)
            seed_seconds = time.perf_counter() - seeding
            apply_changes(source, self.layout)
            build_seconds = time.perf_counter() - started - seed_seconds
            self.log(f"  built and checked in {build_seconds:.1f}s")
            for r in range(repeat):
                self._repeat(r, source, template, scratch)
                self._repeat_peers(r, source, seeds)
        finally:
            for url in (source, template, scratch, *seeds.values()):
                servers.drop(url)
        return {
            "pair": self.pair,
            "rows": self.layout.rows,
            "baseline_equal": baseline.equal,
            "expected": self.expected(),
            "build_seconds": round(build_seconds, 1),  # both databases built and compared
            "peers_seed_seconds": round(seed_seconds, 1),  # the peers' initial loads, copies included
            "total_seconds": round(time.perf_counter() - started, 1),  # with every measurement
        }

    def _clone(self, template: str, tag: str) -> str:
        return self.servers.create("postgresql", f"{self.label}_{tag}", template=_database(template))

    def _peers(self) -> list[str]:
        chosen = [m for m in self.methods if m in peers.METHODS]
        for peer in chosen:
            if self.pair not in peers.PAIRS[peer]:
                self.log(f"  {peer} runs on {', '.join(peers.PAIRS[peer])} only: skipped for {self.pair}")
        return [m for m in chosen if self.pair in peers.PAIRS[m]]

    def _seed_peers(self, source: str, template: str, seeds: dict[str, str]) -> None:
        """Before the changes: each peer loads the source into an emptied target copy (its state).

        The target then is what the peer's previous hourly run left, cursor included; it is checked
        equal to the unchanged source (run ``<peer>_initial``) and cloned for every measured run.
        """
        for peer in self._peers():
            seeds[peer] = self._clone(template, f"{peer}_seed")
            peers.empty_target(seeds[peer])
            params = {"source_url": source, "target_url": seeds[peer], "chunk_size": self.chunk_size}
            result = run_child(peer, params)
            result["json_not_objects"] = peers.json_not_objects(seeds[peer])
            self._record(f"{peer}_initial", 0, result, source, seeds[peer])

    def _repeat_peers(self, r: int, source: str, seeds: dict[str, str]) -> None:
        """Each peer once on the changed source, in a copy of its seeded target."""
        for peer, seed in seeds.items():
            target = self._clone(seed, f"{peer}{r}")
            try:
                params = {"source_url": source, "target_url": target, "chunk_size": self.chunk_size}
                result = run_child(peer, params)
                result["changes_applied"] = peers.change_coverage(target, self.layout)
                result["json_not_objects"] = peers.json_not_objects(target)
                self._record(peer, r, result, source, target)
            finally:
                self.servers.drop(target)

    def _repeat(self, r: int, source: str, template: str, scratch: str) -> None:
        params = {"source_url": source, "chunk_size": self.chunk_size}
        if "limit_copy" in self.methods:
            self._record(
                "limit_copy", r, run_child("limit_copy", {**params, "target_url": scratch}), source, None
            )
        if "limit_keys" in self.methods:
            self._record(
                "limit_keys", r, run_child("limit_keys", {**params, "target_url": template}), source, None
            )
        if "naive" in self.methods:
            target = self._clone(template, f"naive{r}")
            try:
                self._record("naive", r, run_child("naive", {**params, "target_url": target}), source, target)
            finally:
                self.servers.drop(target)
        if "engine" in self.methods:
            target = self._clone(template, f"engine{r}")
            try:
                run = {**params, "target_url": target}
                self._record("engine_changed", r, run_child("engine", run), source, target)
                self._record("engine_unchanged", r, run_child("engine", run), source, target)
                if r == 0:
                    # The target now equals the source; age 1% of its rows without changing the count.
                    make_target_stale(target, self.layout)
                    if "naive" in self.methods:
                        self._record("naive_counts_equal", r, run_child("naive", run), source, target)
                    self._record("engine_counts_equal", r, run_child("engine", run), source, target)
            finally:
                self.servers.drop(target)


def environment(servers: Servers) -> dict[str, Any]:
    """Versions and machine, as BENCHMARKS.md states them."""
    from importlib.metadata import PackageNotFoundError, version

    packages = {}
    for name in ("sqlalchemy", "psycopg", "pymysql", "pandas", "matplotlib", "dagster"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = "not installed"
    packages.update(peers.versions())
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_gib, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "packages": packages,
        "servers": servers.versions(),
    }


def available_methods(requested: Sequence[str], log: Log) -> list[str]:
    """The requested methods whose packages are installed (pandas for the naive job, the peers')."""
    methods = list(requested)
    if "naive" in methods and importlib.util.find_spec("pandas") is None:
        log("pandas is not installed (pip install -e '.[bench]'): skipping the naive job")
        methods.remove("naive")
    for peer in [m for m in methods if m in peers.METHODS]:
        reason = peers.missing(peer)
        if reason is not None:
            log(f"{reason}: skipping {peer}")
            methods.remove(peer)
    return methods


def run_suite(
    *,
    sizes: Sequence[int],
    repeat: int,
    pairs: Sequence[str],
    out: Path,
    methods: Sequence[str] = METHODS,
    chunk_size: int = 10_000,
    spread: str = "uniform",
    pg_admin: str = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
    mysql_admin: str = "mysql+pymysql://root@127.0.0.1:3306/",
    command: str = "",
    charts: bool = True,
    log: Log = _stderr,
) -> dict[str, Any]:
    """Run every size and pair, write ``results.json``, ``results.md`` and the charts into ``out``."""
    servers = Servers(pg_admin, mysql_admin)
    methods = available_methods(methods, log)
    results: dict[str, Any] = {
        "command": command,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": {
            "sizes": list(sizes),
            "repeat": repeat,
            "pairs": list(pairs),
            "chunk_size": chunk_size,
            "spread": spread,
        },
        "environment": environment(servers),
        "workloads": [],
        "runs": [],
    }
    try:
        for rows in sizes:
            for pair in pairs:
                size_run = SizeRun(servers, pair, Layout(rows, spread), methods, chunk_size, log)
                try:
                    results["workloads"].append(size_run.run(repeat))
                finally:
                    results["runs"].extend(size_run.runs)
    finally:
        servers.drop_all()
    results["environment"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["summary"] = report.summarize(results["runs"])
    results["ratios"] = report.ratios(results["summary"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    markdown = report.markdown(results)
    (out / "results.md").write_text(markdown)
    if charts:
        if importlib.util.find_spec("matplotlib") is None:
            log("matplotlib is not installed (pip install -e '.[bench]'): no charts")
        else:
            report.charts(results["summary"], out)
    print(markdown)
    return results


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """``--pg-url`` and ``--mysql-url``: the admin URLs the benchmark databases are created under
    (the tests' ``SYNC_PIPELINE_TEST_PG``/``_MYSQL`` when set); one definition for every script."""
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "SYNC_PIPELINE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument(
        "--mysql-url",
        default=os.environ.get("SYNC_PIPELINE_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1:3306/"),
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help=f"N={QUICK_SIZE:,}, one run (a smoke test)")
    parser.add_argument("--sizes", help="comma-separated window sizes (default 200000,1000000)")
    parser.add_argument("--repeat", type=int, help="runs per method; the median is reported (default 3)")
    parser.add_argument("--pairs", default=",".join(PAIRS), help=f"comma-separated, of {', '.join(PAIRS)}")
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated, of {', '.join(KNOWN_METHODS)} (the peers only when named)",
    )
    parser.add_argument("--chunk-size", type=int, default=10_000, help="the engine's chunk_size")
    parser.add_argument(
        "--spread",
        choices=sorted(SPREADS),
        default="uniform",
        help="where the changes fall: over every key, in the newest tenth, or a quarter of every key "
        "(dense) (benchmarks.workload)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--no-charts", action="store_true")
    add_server_arguments(parser)
    args = parser.parse_args(argv)
    sizes = (
        [int(s) for s in args.sizes.split(",")]
        if args.sizes
        else ([QUICK_SIZE] if args.quick else [200_000, 1_000_000])
    )
    repeat = args.repeat or (1 if args.quick else 3)
    pairs = [p for p in args.pairs.split(",") if p]
    methods = [m for m in args.methods.split(",") if m]
    for name, chosen, known in (("pair", pairs, PAIRS), ("method", methods, KNOWN_METHODS)):
        unknown = set(chosen) - set(known)
        if unknown:
            parser.error(f"unknown {name}: {', '.join(sorted(unknown))}")
    command = ".venv/bin/python -m benchmarks.suite " + " ".join(
        shlex.quote(a) for a in (argv or sys.argv[1:])
    )
    run_suite(
        sizes=sizes,
        repeat=repeat,
        pairs=pairs,
        out=args.out,
        methods=methods,
        chunk_size=args.chunk_size,
        spread=args.spread,
        pg_admin=args.pg_url,
        mysql_admin=args.mysql_url,
        command=command.strip(),
        charts=not args.no_charts,
    )


if __name__ == "__main__":
    main()
