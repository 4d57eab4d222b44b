"""What a run leaves: a table for people, ``latest.json`` for scripts, a PNG of the lag."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import stats
from bench.metric import Metric, Sizes


def machine() -> dict[str, Any]:
    """The machine the figures are this machine's of."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    docker = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}} {{.Server.Os}}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / (1 << 20), 1),
        "kernel": platform.release(),
        "docker": docker,
    }


def document(
    metrics: Sequence[Metric],
    sizes: Sizes,
    configs: dict[str, str],
    tree: dict[str, Any],
    verified: dict[str, dict[str, Any]],
    seconds: float,
    host: dict[str, Any],
) -> dict[str, Any]:
    return {
        "machine": host,
        "sizes": sizes.to_dict(),
        "tree": tree,
        "contenders": configs,
        "final_copy_checks": verified,
        "bench_seconds": round(seconds, 1),
        "metrics": [m.to_dict() for m in metrics],
    }


def _number(value: float | None, unit: str = "", digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isinf(value)):
        return "never"
    text = f"{value:.{digits}f}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{text} {unit}".rstrip()


def table(metrics: Sequence[Metric]) -> list[str]:
    """A Markdown table: the figure, its spread, the competitors, the target and the verdict."""
    lines = [
        "| Metric | Size | Ours | Compared with | Target | Met |",
        "|---|---|---|---|---|---|",
    ]
    for m in metrics:
        spread = m.spread
        ours = _number(m.value, m.unit)
        if {"low", "high", "runs"} <= spread.keys() and int(spread["runs"]) > 1:
            ours += f" ({_number(spread['low'])}-{_number(spread['high'])}, {spread['runs']} runs)"
        elif "p50" in spread:
            ours = f"p99 {_number(m.value, m.unit)}, p50 {_number(spread['p50'], 's')}"
        others = "; ".join(
            f"{name}: {_number(v, digits=3 if name.startswith('ratio') else 2)}"
            for name, v in m.competitors.items()
        )
        verdict = {True: "yes", False: "**no**", None: "-"}[m.met]
        lines.append(
            f"| {m.name} | {m.size} | {ours} | {others or '-'} | {m.target or '-'} | {verdict} |"
        )
    return lines


def write(doc: dict[str, Any], metrics: Sequence[Metric], folder: Path) -> list[Path]:
    """``latest.json``, ``latest.md`` and, when the lag was measured, ``lag.png``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    target = folder / "latest.json"
    temp = target.with_suffix(".json.tmp")
    temp.write_text(json.dumps(doc, indent=2) + "\n")
    temp.replace(target)
    written.append(target)
    md = folder / "latest.md"
    md.write_text("\n".join(table(metrics)) + "\n")
    written.append(md)
    return written


def plot(lags: dict[str, list[list[Any]]], path: Path) -> Path:
    """Each contender's lag against the time each change was written; never-seen changes at
    the top edge, marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(10, 5.5), dpi=100)
    finite = [r[3] for records in lags.values() for r in records if r[3] is not None]
    top = max(finite) * 1.1 if finite else 1.0
    for name, records in lags.items():
        times = [float(r[2]) for r in records]
        values = [top if r[3] is None else float(r[3]) for r in records]
        lag = stats.Lag.of([r[3] for r in records])
        label = f"{name}: p50 {_number(lag.p50, 's')}, p99 {_number(lag.p99, 's')}"
        axes.plot(times, values, ".", markersize=2, label=label)
    axes.set_xlabel("time the change was written on the master (s)")
    axes.set_ylabel("delay until the slave's newest complete copy has it (s)")
    axes.set_yscale("log")
    axes.set_title("Replication lag under churn")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="upper right", markerscale=6, fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
