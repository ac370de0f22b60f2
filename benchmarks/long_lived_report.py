"""The long-lived processes benchmark's figures and its report: RSS growth, backfill throughput, CPU
per partition sync, the chart and the markdown of ``benchmarks/long_lived.py`` (and of
``benchmarks/dagster_path.py``, which runs it with other defaults).

Everything here works on the result dictionary the run writes to ``<name>.json``, so that
``--render`` can redraw an earlier run without running it again.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from benchmarks.deployment import ROLES

MIB = 1024 * 1024
ASSETS_VIA = "of the assets, as Catalog > Materialize"


def summarize_rss(samples: list[dict[str, Any]], start: float, end: float) -> dict[str, dict[str, float]]:
    """First/median/last/max RSS of each role over the samples taken during the backfill, and growth.

    Growth compares the median of the last fifth of those samples with the median of the second
    fifth (the first fifth is warm-up: imports done lazily on the first runs, caches filling).
    """
    during = [s for s in samples if start <= s["t"] <= end] or samples
    out: dict[str, dict[str, float]] = {}
    for role in ROLES:
        values = [s[role] / MIB for s in during if s[role]]
        fifth = max(1, len(values) // 5)
        early = statistics.median(values[fifth : 2 * fifth] or values[:fifth])
        late = statistics.median(values[-fifth:])
        growth = late - early
        out[role] = {
            "first": round(values[0], 1),
            "median": round(statistics.median(values), 1),
            "last": round(values[-1], 1),
            "max": round(max(values), 1),
            "early_median": round(early, 1),
            "late_median": round(late, 1),
            "growth_mib": round(growth, 1),
            "growth_pct": round(100 * growth / early, 1),
            "flat": abs(growth) <= max(8.0, 0.05 * early),
            "samples": len(values),
        }
    return out


def backfill_stats(result: dict[str, Any]) -> None:
    """Derive the backfill's figures from its run records (in place), counting only succeeded runs.

    A run that failed and was retried by the instance's run retries counts once, through its retry.
    """
    b = result["backfill"]
    runs = b["run_records"]
    tables = len(result["tables"])
    succeeded = [r for r in runs if r["status"] == "SUCCESS"]
    # A ranged run syncs several partitions; results written before ranged runs name one "partition".
    done = sorted({p for r in succeeded for p in r.get("partitions") or [r["partition"]]})
    ends = [r["end"] for r in succeeded if r["end"]]
    seconds = max(ends) - b["launched_at"] if ends else float("nan")
    durations = [r["end"] - r["start"] for r in succeeded if r["start"] and r["end"]]
    queued = [r["start"] - r["created"] for r in runs if r["start"]]
    b.update(
        {
            "runs": len(runs),
            "succeeded": len(succeeded),
            "failed": sum(r["status"] == "FAILURE" for r in runs),
            "done_keys": done,
            "partitions_done": len(done),
            "seconds": round(seconds, 1),
            "partitions_per_minute": round(len(done) / seconds * 60, 2),
            "syncs_per_minute": round(len(done) * tables / seconds * 60, 2),
            "run_median_s": round(statistics.median(durations), 2) if durations else None,
            "run_max_s": round(max(durations), 2) if durations else None,
            "queued_median_s": round(statistics.median(queued), 2) if queued else None,
            "queued_max_s": round(max(queued), 2) if queued else None,
            "assets_per_run": statistics.median(r.get("assets", 0) for r in runs) if runs else 0,
            "checks_per_run": statistics.median(r.get("checks", 0) for r in runs) if runs else 0,
        }
    )


def cpu_per_sync(samples: list[dict[str, Any]], start: float, syncs: int) -> dict[str, float]:
    """CPU seconds each role spent from the backfill's launch to the last sample, and per partition sync.

    The code server's figure includes every run worker and step process (it starts them and reaps
    them), so it is the Dagster path's whole cost per partition sync, sync work included.
    """
    before = [s for s in samples if s["t"] <= start] or samples[:1]
    first, last = before[-1], samples[-1]
    out: dict[str, float] = {}
    for role in ROLES:
        spent = last[f"{role}_cpu_s"] - first[f"{role}_cpu_s"]
        out[f"{role}_s"] = round(spent, 1)
        out[f"{role}_per_sync_s"] = round(spent / syncs, 2) if syncs else float("nan")
    return out


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    t = [s["t"] / 60 for s in samples]
    b = result["backfill"]
    fig, (ax, runs_ax) = plt.subplots(
        2, 1, figsize=(9, 6.5), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    for role in ROLES:
        ax.plot(t, [s[role] / MIB for s in samples], label=role.replace("_", " "))
    runs_ax.plot(t, [s["run_processes_rss"] / MIB for s in samples], color="grey", linewidth=0.8)
    for axis in (ax, runs_ax):
        axis.axvspan(b["launched_t"] / 60, b["done_t"] / 60, color="tab:green", alpha=0.07)
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
    ax.set_ylabel("RSS, MiB")
    ax.set_title(
        f"Long-lived Dagster processes during a backfill of {b.get('partitions_done', b['partitions'])}"
        f" partitions x {len(result['tables'])} table(s) (shaded)"
    )
    ax.legend(loc="lower right", fontsize=8)
    runs_ax.set_ylabel("MiB")
    runs_ax.set_title("run workers and step processes together (they end with their runs)", fontsize=9)
    runs_ax.set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cpu_lines(result: dict[str, Any]) -> list[str]:
    cpu = result.get("cpu")
    if not cpu:
        return []
    return [
        "CPU seconds spent during the backfill (process trees, reaped children included; the code"
        " server's tree holds every run worker and step process):"
        + "".join(
            f" {role.replace('_', ' ')} {cpu[f'{role}_s']:.0f} s"
            f" ({cpu[f'{role}_per_sync_s']:.2f} s per partition sync);"
            for role in ROLES
        )
        + (f" {cpu['note']}" if cpu.get("note") else ""),
        "",
    ]


def markdown(result: dict[str, Any]) -> str:
    b = result["backfill"]
    lines = [
        f"### {result['title']}",
        "",
        "```bash",
        result["command"],
        "```",
        "",
        f"Measured {result['measured_at']} on {result['machine']}; Dagster {result['dagster']},"
        f" instance `deploy/dagster.yaml` on PostgreSQL ({result['postgresql']}), PostgreSQL source and"
        f" target, {len(result['tables'])} table(s) ({', '.join(result['tables'])}),"
        f" {result['rows_per_hour']} rows per hourly window, RSS sampled every {result['interval']} s.",
        "",
        f"Backfill ({result.get('via', ASSETS_VIA)}) of {b['partitions']} partitions"
        f" x {len(result['tables'])} table(s) ="
        f" {b['syncs']} partition syncs in {b['runs']} runs, launched through GraphQL: {b['status']},"
        f" {b['succeeded']} runs succeeded ({b['partitions_done']} partitions; {b['failed']} runs failed,"
        " each retried once by the instance's run retries), target windows of those"
        " equal to the source's row counts:"
        f" {'yes' if result['targets_equal'] else '**no**'}.",
        "",
        "| | value |",
        "|---|---|",
        f"| launch to last successful run finished | {b['seconds']:.0f} s |",
        f"| partitions per minute | {b['partitions_per_minute']:.2f} |",
        f"| partition syncs (table x hour) per minute | {b['syncs_per_minute']:.2f} |",
        f"| run duration (start to end), median / max | {b['run_median_s']:.1f} s / {b['run_max_s']:.1f} s |",
        f"| time queued (created to start), median / max | {b['queued_median_s']:.1f} s"
        f" / {b['queued_max_s']:.1f} s |",
        f"| load average (1 min) at launch / at the end | {b['load_at_launch']:.1f}"
        f" / {b['load_at_end']:.1f} |",
        "",
        "RSS of each long-lived process (the process and its helper children; run workers and step",
        "processes excluded), over the samples taken during the backfill:",
        "",
        "| process | first MiB | median MiB | last MiB | max MiB | growth (last vs second fifth) | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for role, r in result["rss"].items():
        verdict = "flat" if r["flat"] else "**grows**"
        lines.append(
            f"| {role.replace('_', ' ')} | {r['first']} | {r['median']} | {r['last']} | {r['max']} |"
            f" {r['growth_mib']:+.1f} MiB ({r['growth_pct']:+.1f}%) | {verdict} |"
        )
    lines += [
        "",
        *_cpu_lines(result),
        "Verdict rule: flat when the median of the last fifth of the samples is within 8 MiB or 5% of",
        "the median of the second fifth (the first fifth is warm-up).",
        "Peak RSS of the run workers and step processes together:"
        f" {result['run_processes_peak_mib']:.0f} MiB"
        f" ({result['run_processes_peak']} processes at most at once).",
    ]
    if result.get("cli"):
        cli = result["cli"]
        lines += [
            "",
            f"`dagster asset materialize` of one partition of one table, {len(cli['runs'])} runs, median s:",
            "",
            "```bash",
            cli["runs"][0]["command"],
            "```",
            "",
            "| wall | CLI start-up to run start | run start to step start | of which step process start"
            " | step (sync + in_sync check) | step end to run end | run end to exit |",
            "|---|---|---|---|---|---|---|",
            "| " + " | ".join(f"{cli['median'][k]:.2f}" for k in CLI_FIELDS) + " |",
            "",
            "For comparison, a bare interpreter importing Dagster takes"
            f" {cli['imports']['python_import_dagster_s']:.2f} s and one loading `sync_pipeline.definitions`"
            f" {cli['imports']['python_load_definitions_s']:.2f} s (median of 3). Steps of the first run"
            f" (seconds from STEP_START to STEP_SUCCESS): {cli['runs'][0]['steps']}.",
        ]
    lines += [f"\n{note}" for note in result.get("notes", [])]
    return "\n".join(lines) + "\n"


CLI_FIELDS = (
    "wall_s",
    "startup_s",
    "run_start_to_step_start_s",
    "step_worker_start_s",
    "step_s",
    "step_end_to_run_end_s",
    "run_end_to_exit_s",
)
