"""The run's two plots: replication lag over time, and pass time against tree size."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import stats


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _text(value: float) -> str:
    return "never" if value == float("inf") else f"{value:.2f} s"


def lag(lags: dict[str, dict[str, list[list[Any]]]], path: Path) -> Path:
    """One panel per (filesystem, tree): each contender's lag against the time each change was
    written; changes never seen are drawn at the top edge."""
    plt = _pyplot()
    panels = [(key, records) for key, records in lags.items() if records]
    figure, axes = plt.subplots(
        len(panels), 1, figsize=(10, 4.5 * len(panels)), dpi=100, squeeze=False
    )
    for (key, contenders), ax in zip(panels, axes[:, 0], strict=True):
        seen = [r[3] for records in contenders.values() for r in records if r[3] is not None]
        top = max(seen) * 1.1 if seen else 1.0
        for name, records in contenders.items():
            times = [float(r[2]) for r in records]
            values = [top if r[3] is None else float(r[3]) for r in records]
            figures = stats.Lag.of([r[3] for r in records])
            label = f"{name}: p50 {_text(figures.p50)}, p99 {_text(figures.p99)}"
            ax.plot(times, values, ".", markersize=2, label=label)
        ax.set_xlabel("time the change was written on the master (s)")
        ax.set_ylabel("delay until the slave's copy has it (s)")
        ax.set_yscale("log")
        ax.set_title(f"Replication lag under churn: {key} files")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="upper right", markerscale=6, fontsize=8)
    figure.tight_layout()
    return _save(plt, figure, path)


SERIES = (
    ("full", "full pass (ours)", "o-"),
    ("change", "change-triggered pass (ours)", "s-"),
    ("bare", "bare rsync -a --delete", "^--"),
)


def passes(points: Sequence[dict[str, Any]], path: Path) -> Path:
    """Pass time against the tree's file count, one line per (filesystem, kind of pass)."""
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(9, 5.5), dpi=100)
    for index, fs in enumerate(sorted({p["fs"] for p in points})):
        mine = sorted((p for p in points if p["fs"] == fs), key=lambda p: p["files"])
        for key, name, style in SERIES:  # one colour per filesystem, one style per pass
            shown = [p for p in mine if key in p]
            if shown:
                ax.plot(
                    [p["files"] for p in shown],
                    [p[key] for p in shown],
                    style,
                    color=f"C{index}",
                    label=f"{name}, {shown[0]['path']}",
                )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("files in the tree")
    ax.set_ylabel("seconds (median)")
    ax.set_title("Pass time against tree size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    figure.tight_layout()
    return _save(plt, figure, path)


def _save(plt: Any, figure: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
