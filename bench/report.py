"""What a run leaves: a table for people, ``latest.json`` for scripts (the plots: plots.py)."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
    bench: dict[str, Any],
    seconds: float,
    host: dict[str, Any],
) -> dict[str, Any]:
    """``latest.json``: the machine, the sizes, and per (filesystem, tree) what was made,
    the sidecar's method there, the contenders' settings and the final-copy checks."""
    return {
        "machine": host,
        "sizes": sizes.to_dict(),
        "storage": STORAGE_NOTE[sizes.storage],
        "trees": bench.get("trees", {}),
        "layouts": bench.get("layouts", {}),
        "contenders": bench.get("configs", {}),
        "final_copy_checks": bench.get("verified", {}),
        "pass_times": bench.get("points", []),
        "bench_seconds": round(seconds, 1),
        "metrics": [m.to_dict() for m in metrics],
    }


STORAGE_NOTE = {
    "tmpfs": "loop files and tmpfs in memory (/dev/shm): repeatable, no disk credits",
    "disk": "loop files on the machine's disk (/var/tmp)",
}


def _number(value: float | None, unit: str = "", digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isinf(value)):
        return "never"
    text = f"{value:.{digits}f}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{text} {unit}".rstrip()


def table(metrics: Sequence[Metric]) -> list[str]:
    """A Markdown table: the figure, its spread, the competitors, the target and the verdict."""
    lines = [
        "| Metric | Path | Size | Ours | Compared with | Target | Met |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in metrics:
        spread = m.spread
        ours = _number(m.value, m.unit, digits=3 if m.unit == "exponent" else 2)
        if {"low", "high", "runs"} <= spread.keys() and int(spread["runs"]) > 1:
            ours += f" ({_number(spread['low'])}-{_number(spread['high'])}, {spread['runs']} runs)"
        elif "p50" in spread:
            ours = f"p99 {_number(m.value, m.unit)}, p50 {_number(spread['p50'], 's')}"
        others = "; ".join(
            f"{name}: {_number(v, digits=3 if _fine(name) else 2)}"
            for name, v in m.competitors.items()
        )
        verdict = {True: "yes", False: "**no**", None: "-"}[m.met]
        lines.append(
            f"| {m.name} | {m.path or '-'} | {m.size} | {ours} | {others or '-'} "
            f"| {m.target or '-'} | {verdict} |"
        )
    return lines


def _fine(name: str) -> bool:
    """Ratios, shares and exponents get three digits."""
    return name.startswith("ratio") or any(w in name for w in ("share of", "exponent"))


def heading(doc: dict[str, Any]) -> str:
    """One line above the table: where and how long it was measured."""
    host = doc.get("machine", {})
    return (
        f"Measured on {host.get('cores', '?')} cores, {host.get('memory_gib', '?')} GiB "
        f"({host.get('cpu') or 'unknown CPU'}, kernel {host.get('kernel', '?')}); "
        f"{doc.get('storage', '')}; the run took {doc.get('bench_seconds', 0) / 60:.0f} min."
    )


def write(doc: dict[str, Any], metrics: Sequence[Metric], folder: Path) -> list[Path]:
    """``latest.json`` (written whole, then renamed) and ``latest.md``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    target = folder / "latest.json"
    temp = target.with_suffix(".json.tmp")
    temp.write_text(json.dumps(doc, indent=2) + "\n")
    temp.replace(target)
    written.append(target)
    md = folder / "latest.md"
    md.write_text("\n".join([heading(doc), "", *table(metrics)]) + "\n")
    written.append(md)
    return written
