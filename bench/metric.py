"""What the benchmark measures at (:class:`Sizes`) and what it records (:class:`Metric`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

GIB = 1 << 30
MIB = 1 << 20


@dataclass(frozen=True)
class Sizes:
    """What the benchmark measures at; the defaults are the issue's, ``QUICK`` a smoke run."""

    files: int = 100_000
    bytes: int = 5 * GIB
    rate: float = 50.0  # file changes a second during the churn
    seconds: float = 120.0  # how long the churn lasts
    drain: float = 60.0  # how long to wait after the churn for the last changes to arrive
    runs: int = 3  # repeats of each timed pass
    changed: int = 100  # files changed before a change-triggered pass
    memory_files: tuple[int, ...] = (100_000, 1_000_000)
    rto_runs: int = 3
    seed: int = 1
    storage: str = "tmpfs"  # where the trees live: tmpfs, or disk (Docker volumes)

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "memory_files": list(self.memory_files)}


QUICK = Sizes(
    files=4_000,
    bytes=64 * MIB,
    rate=20.0,
    seconds=10.0,
    drain=30.0,
    runs=2,
    changed=20,
    memory_files=(4_000,),
    rto_runs=1,
)

METRICS = ("first-sync", "no-change", "changed", "scrape", "lag", "snapshots", "memory", "rto")


@dataclass
class Metric:
    """One figure with its competitors' from the same run, and whether it meets its target."""

    name: str
    size: str
    value: float
    unit: str
    spread: dict[str, Any] = field(default_factory=dict)
    competitors: dict[str, float] = field(default_factory=dict)
    target: str = ""
    met: bool | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": self.size,
            "value": finite(self.value),
            "unit": self.unit,
            "spread": self.spread,
            "competitors": {k: finite(v) for k, v in self.competitors.items()},
            "target": self.target,
            "met": self.met,
            "detail": self.detail,
        }


def metric_from_dict(data: dict[str, Any]) -> Metric:
    """A metric read back from ``latest.json`` (``null`` values are changes never seen)."""
    inf = float("inf")
    return Metric(
        data["name"],
        data["size"],
        inf if data["value"] is None else float(data["value"]),
        data["unit"],
        data.get("spread", {}),
        {k: inf if v is None else float(v) for k, v in data.get("competitors", {}).items()},
        data.get("target", ""),
        data.get("met"),
        data.get("detail", {}),
    )


def finite(value: float) -> float | None:
    """JSON has no infinity: a change never seen is ``null``."""
    return None if value in (float("inf"), float("-inf")) else round(value, 4)


def tree_size(sizes: Sizes) -> str:
    return f"{sizes.files:,} files, {sizes.bytes / GIB:.2f} GiB"
