"""Cost of starting a step's process: Dagster's multiprocess executor with spawn vs forkserver.

Runs the demo's three sync assets for several hours through ``execute_job`` on a real (non-ephemeral)
instance, once per start method, and reads from the event log, per step, the time between the
executor launching the step's process and the step starting in it. The first step of a run pays for
starting the forkserver itself, so it is reported apart. Each start method runs in a process of its
own: multiprocessing keeps one forkserver per process, started with the preloads of its first use.

    .venv/bin/python -m benchmarks.step_start --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from dagster import (
    DagsterEventType,
    DagsterInstance,
    JobDefinition,
    execute_job,
    multiprocess_executor,
    reconstructable,
)

from sync_pipeline.orchestration.executors import PRELOAD_MODULES


def benchmark_job() -> JobDefinition:
    """The demo's sync job with an executor whose start method the run config chooses."""
    from sync_pipeline.definitions import defs

    return defs.resolve_job_def("sync_hourly").with_executor_def(multiprocess_executor)


@dataclass(frozen=True)
class StartMethod:
    label: str  # in the printed table
    short: str  # under the chart's bars
    config: dict[str, object]  # the multiprocess executor's start_method


# The start methods compared: spawn, forkserver preloading the code location only, and forkserver
# preloading what the project's executor preloads (the code location and the instance's storages).
METHODS: dict[str, StartMethod] = {
    "spawn": StartMethod("spawn", "spawn", {"spawn": {}}),
    "forkserver-code": StartMethod(
        "forkserver, `preload_modules: [sync_pipeline.definitions]`",
        "forkserver\n(code location)",
        {"forkserver": {"preload_modules": ["sync_pipeline.definitions"]}},
    ),
    "forkserver-preloads": StartMethod(
        "forkserver, `preload_modules: PRELOAD_MODULES` (the default)",
        "forkserver\n(PRELOAD_MODULES)",
        {"forkserver": {"preload_modules": PRELOAD_MODULES}},
    ),
}


def _run(method: str, partition_key: str, instance: DagsterInstance) -> tuple[list[float], float]:
    start_method = METHODS[method].config
    with execute_job(
        reconstructable(benchmark_job),
        instance=instance,
        tags={"dagster/partition": partition_key},
        run_config={"execution": {"config": {"max_concurrent": 1, "start_method": start_method}}},
    ) as result:
        assert result.success, method
        records = instance.all_logs(result.run_id)
    launched: dict[str, float] = {}
    started: dict[str, float] = {}
    run_start = None
    for record in records:
        event = record.dagster_event
        if event is None:
            continue
        if event.event_type == DagsterEventType.RUN_START:
            run_start = record.timestamp
        if event.event_type == DagsterEventType.STEP_WORKER_STARTING:
            launched[event.step_key or ""] = record.timestamp
        elif event.event_type == DagsterEventType.STEP_START:
            started[event.step_key or ""] = record.timestamp
    order = sorted(started, key=started.__getitem__)
    delays = [started[k] - launched[k] for k in order if k in launched]
    assert run_start is not None
    return delays, max(started.values()) - run_start


def _measure(method: str, runs: int) -> dict[str, list[float]]:
    """Step start delays of ``runs`` runs with one start method, in this process."""
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SYNC_PIPELINE_DATA_DIR"] = str(Path(tmp) / "data")
        os.environ.pop("SYNC_PIPELINE_CONFIG", None)
        from sync_pipeline.demo.config import demo_start

        start = demo_start(Path(tmp) / "data")
        results: dict[str, list[float]] = defaultdict(list)
        (Path(tmp) / "home").mkdir()
        with DagsterInstance.local_temp(str(Path(tmp) / "home")) as instance:
            for i in range(runs):
                key = (start + timedelta(hours=10 + i)).strftime("%Y-%m-%d-%H:%M")
                delays, _ = _run(method, key, instance)
                results["first"].append(delays[0])
                results["later"].extend(delays[1:])
        return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per start method")
    parser.add_argument("--method", choices=list(METHODS), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help="also write step_start.json and step_start.png here")
    args = parser.parse_args()
    if args.method:
        print(json.dumps(_measure(args.method, args.runs)))
        return
    # Each start method in a process of its own, as each run worker is in a deployment:
    # multiprocessing starts one forkserver per process, with the preloads of its first use.
    results = {}
    for method in METHODS:
        child = subprocess.run(  # noqa: S603 - this module, with this interpreter
            [sys.executable, "-m", "benchmarks.step_start", "--runs", str(args.runs), "--method", method],
            check=True,
            capture_output=True,
            text=True,
        )
        results[method] = json.loads(child.stdout.strip().splitlines()[-1])
    print("| start method | first step of a run (median s) | later steps (median s) | later steps (max s) |")
    print("|---|---|---|---|")
    for method, values in results.items():
        print(
            f"| {METHODS[method].label} | {statistics.median(values['first']):.3f} | "
            f"{statistics.median(values['later']):.3f} | {max(values['later']):.3f} |"
        )
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "step_start.json").write_text(
            json.dumps({"runs": args.runs, "delays": results}, indent=1)
        )
        _chart(results, args.out / "step_start.png")


def _chart(results: dict[str, dict[str, list[float]]], path: Path) -> None:
    """Median start of the first and of later steps, per start method, as grouped bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [METHODS[m].short for m in results]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    width = 0.38
    for offset, which, name in (
        (-width / 2, "first", "first step of a run"),
        (width / 2, "later", "later steps"),
    ):
        medians = [statistics.median(v[which]) for v in results.values()]
        bars = ax.bar([i + offset for i in range(len(results))], medians, width, label=name)
        ax.bar_label(bars, fmt="%.2f s", fontsize=8)
    ax.axhline(0.3, color="grey", linestyle="--", linewidth=1, label="target for later steps (0.3 s)")
    ax.set_xticks(range(len(results)), labels, fontsize=8)
    ax.set_ylabel("step process start, s (median)")
    ax.set_title("Step process start by start method")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
