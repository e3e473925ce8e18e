"""PNGs of a session: one per sweep, the latency CDFs, throughput by variant."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.options import VARIANTS

SWEEP_PLOTS = (  # sweep, x axis label, file, log x axis
    ("batch", "batch size (XREADGROUP COUNT)", "throughput_vs_batch.png", True),
    ("processes", "consumer processes", "scaling_vs_processes.png", False),
    ("users", "distinct users", "throughput_vs_users.png", True),
    ("hit", "distinct keys per template", "throughput_vs_keys.png", True),
)


def write_plots(out: dict[str, Any], directory: Path) -> list[Path]:
    """The PNGs `out` has data for, written to `directory`; none without matplotlib."""
    try:
        # matplotlib is a bench tool (seconds to import), needed only when plots are asked for
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots (pip install -e '.[dev]')")
        return []
    written: list[Path] = []
    sweeps = out.get("sweeps", {})
    for sweep, xlabel, fname, logx in SWEEP_PLOTS:
        if sweeps.get(sweep):
            fig = _sweep_figure(plt, out, sweep, xlabel, logx)
            written.append(_save(plt, fig, directory / fname))
    if out.get("latency"):
        fig = _latency_figure(plt, out["latency"])
        written.append(_save(plt, fig, directory / "latency_cdf.png"))
    if out.get("summary"):
        fig = _variants_figure(plt, out["summary"])
        written.append(_save(plt, fig, directory / "throughput_by_variant.png"))
    return written


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _sweep_figure(plt: Any, out: dict[str, Any], sweep: str, xlabel: str, logx: bool) -> Any:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    by_v: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in out["sweeps"][sweep]:
        by_v[r["variant"]].append((r["extra"]["sweep"]["value"], r["events_per_s"]))
    for v, pts in sorted(by_v.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{v} {VARIANTS[v][0]}")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("events/s")
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title(f"pomocore benchmarks: {sweep} sweep ({out['machine']['nproc']} CPUs)")
    return fig


def _latency_figure(plt: Any, latency: dict[str, dict[str, Any]]) -> Any:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for v, lr in sorted(latency.items()):
        if lr["cdf"]:
            ax.plot(
                [p[0] for p in lr["cdf"]],
                [p[1] for p in lr["cdf"]],
                label=f"{v} {VARIANTS[v][0]} @ {lr['rate']:,.0f}/s",
            )
    ax.set_xscale("log")
    ax.set_xlabel("end-to-end latency, ms (stream entry → acknowledgement)")
    ax.set_ylabel("fraction of events")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("latency CDF at half of each variant's max throughput")
    return fig


def _variants_figure(plt: Any, summary: dict[str, dict[str, Any]]) -> Any:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    vs = list(summary)
    ax.bar(
        [f"{v}\n{summary[v]['name']}" for v in vs],
        [summary[v]["events_per_s_median"] for v in vs],
    )
    ax.set_yscale("log")
    ax.set_ylabel("events/s (median)")
    ax.set_title("throughput by variant")
    return fig
