"""What the benchmark measures at (:class:`Sizes`, :class:`Tree`) and records (:class:`Metric`)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

GIB = 1 << 30
MIB = 1 << 20

FILESYSTEMS = ("btrfs", "tmpfs", "ext4")
"""Where the trees live: btrfs (the sidecar takes its snapshot path), or plain folders on tmpfs
or ext4 (no cheap snapshots: the sidecar takes its fallback)."""

STORAGE = ("tmpfs", "disk")
"""Where the filesystems' bytes live: loop files in memory (/dev/shm) or on the machine's disk."""


@dataclass(frozen=True)
class Tree:
    """One tree shaped like GitLab's data: ``files`` files, ``bytes`` in all.

    The shape is the same at every size (repositories of loose objects, uploads, refs, large
    packs taking the rest); only the largest loose object shrinks as the count grows, so that
    a million files stays a few GiB: it is the count that a pass walks.
    """

    files: int
    bytes: int

    @property
    def small_max(self) -> int:
        """The largest loose object: 16 KiB up to 100,000 files, halved for every doubling
        beyond (1,000,000 files: 1 KiB), never under 256 B."""
        size = 16 << 10
        while size > 256 and self.files > 100_000 * (16 << 10) // size:
            size //= 2
        return size

    def label(self) -> str:
        return f"{self.files:,} files, {self.bytes / GIB:.2f} GiB"

    def to_dict(self) -> dict[str, int]:
        return {"files": self.files, "bytes": self.bytes, "small_max": self.small_max}


def default_bytes(files: int) -> int:
    """The issue's 5 GiB at 100,000 files, in proportion below; 2 GiB beyond, to keep three
    copies of a 1,000,000-file tree (master, slave, the contenders' replica) in memory."""
    return max(MIB, 5 * GIB * files // 100_000) if files <= 100_000 else 2 * GIB


_COUNT = re.compile(r"^(\d+(?:\.\d+)?)([kKmM]?)$")


def parse_count(text: str) -> int:
    """``100k``, ``1M``, ``1.5M`` or ``4000`` as a number of files."""
    match = _COUNT.match(text.strip())
    if not match:
        raise ValueError(f"not a file count: {text!r} (say 4000, 100k or 1M)")
    scale = {"": 1, "k": 1000, "m": 1_000_000}[match[2].lower()]
    count = round(float(match[1]) * scale)
    if count <= 0:
        raise ValueError(f"a tree needs files, got {text!r}")
    return count


def parse_trees(text: str) -> tuple[Tree, ...]:
    """``100k,1M`` or ``100k:5,1M:2`` (GiB after the colon) as trees, smallest first."""
    trees = []
    for item in text.split(","):
        count, _, gib = item.partition(":")
        files = parse_count(count)
        try:
            size = int(float(gib) * GIB) if gib else default_bytes(files)
        except ValueError:
            raise ValueError(f"not a size in GiB: {gib!r}") from None
        if size <= 0:
            raise ValueError(f"a tree needs bytes, got {item!r}")
        trees.append(Tree(files, size))
    return tuple(sorted(trees, key=lambda t: t.files))


@dataclass(frozen=True)
class Sizes:
    """What the benchmark measures at; the defaults are the issue's, ``QUICK`` a smoke run."""

    trees: tuple[Tree, ...] = (Tree(100_000, 5 * GIB),)
    filesystems: tuple[str, ...] = ("btrfs", "tmpfs")
    storage: str = "tmpfs"  # where the filesystems' bytes live (STORAGE)
    rate: float = 50.0  # file changes a second during the churn
    seconds: float = 120.0  # how long the churn lasts
    drain: float = 60.0  # at least this long after the churn for the last changes to arrive
    runs: int = 3  # repeats of each timed pass
    changed: int = 100  # files changed before a change-triggered pass
    restore_gib: tuple[float, ...] = (5.0, 50.0)  # snapshot sizes restored (sparse beyond the tree)
    pg_seconds: float = 60.0  # each pgbench run, with the sync off and on
    pg_rounds: int = 2  # off/on pairs
    pg_scale: int = 20  # pgbench -s (about 300 MB of tables)
    pg_clients: int = 4
    rto_runs: int = 3
    seed: int = 1

    def runs_at(self, files: int) -> int:
        """Repeats of each timed step for a tree of ``files``: ``runs`` up to 100,000 files,
        one beyond (each run there is minutes long, and its spread small beside it)."""
        return self.runs if files <= 100_000 else 1

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data.update(
            trees=[t.to_dict() for t in self.trees],
            filesystems=list(self.filesystems),
            restore_gib=list(self.restore_gib),
        )
        return data


QUICK = Sizes(
    trees=(Tree(4_000, 64 * MIB),),
    rate=20.0,
    seconds=10.0,
    drain=30.0,
    runs=2,
    changed=20,
    restore_gib=(0.0625, 2.0),
    pg_seconds=10.0,
    pg_rounds=1,
    pg_scale=2,
    pg_clients=2,
    rto_runs=1,
)

METRICS = (
    "first-sync",
    "full",
    "changed",
    "scrape",
    "lag",
    "snapshots",
    "memory",
    "restore",
    "pgbench",
    "rto",
)


@dataclass
class Metric:
    """One figure with its competitors' from the same run, and whether it meets its target.

    ``path`` names the sidecar's method and where the data lived (``btrfs snapshots, loop file
    on tmpfs``); empty for what does not depend on it (the drill's RTO).
    """

    name: str
    size: str
    value: float
    unit: str
    spread: dict[str, Any] = field(default_factory=dict)
    competitors: dict[str, float] = field(default_factory=dict)
    target: str = ""
    met: bool | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    path: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
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
        data.get("path", ""),
    )


def finite(value: float) -> float | None:
    """JSON has no infinity: a change never seen is ``null``."""
    return None if math.isinf(value) else round(value, 4)
