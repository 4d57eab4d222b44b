"""The run: every chosen metric, for each filesystem and each tree size, then across sizes.

For each (filesystem, tree) one :class:`bench.rig.Rig` is made: one tree (``probe tree``), synced
by every contender, under the same churn, over the same SSH transport, one after the other on
the same machine, so the ratios hold even where the absolute figures are this machine's. The
restore and pgbench are measured on the smallest tree only (they depend on bytes and on
PostgreSQL, not on the file count). Across sizes: how a change-triggered pass grows with the
tree (:func:`growth`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from bench import lag, passes, pgbench, restore, scrape, stats
from bench.metric import METRICS, Metric, Sizes
from bench.rig import Rig, rig
from ops.progress import Progress

SYNCS = ("first-sync", "full", "changed", "scrape", "lag", "snapshots", "memory")
GROWTH_TARGET = 0.2  # time grows at most as files ** 0.2 (10x the files: 1.6x the time)


class Bench:
    """Runs the chosen metrics; ``results`` fills as they finish."""

    def __init__(self, sizes: Sizes, progress: Progress, only: tuple[str, ...] = METRICS):
        self.sizes, self.progress, self.only = sizes, progress, only
        self.results: list[Metric] = []
        self.lags: dict[str, dict[str, list[list[Any]]]] = {}  # rig key -> contender -> records
        self.configs: dict[str, str] = {}
        self.trees: dict[str, dict[str, Any]] = {}
        self.layouts: dict[str, dict[str, Any]] = {}
        self.verified: dict[str, dict[str, Any]] = {}
        self.figures: dict[str, dict[str, float]] = {}  # rig key -> medians
        self.points: list[dict[str, Any]] = []  # pass times by fs and size, for the plot

    def want(self, *names: str) -> bool:
        return any(name in self.only for name in names)

    def run(self) -> list[Metric]:
        once = ("restore", "pgbench")
        if self.want(*SYNCS, *once):
            for index, tree in enumerate(self.sizes.trees):
                for fs in self.sizes.filesystems:
                    with rig(self.sizes, fs, tree, self.progress) as r:
                        try:
                            self.measure(r, smallest=index == 0)
                        finally:  # kept even when a later step of this rig fails
                            self.keep(r)
            self.growth()
        if self.want("rto"):
            self.rto()
        return self.results

    def measure(self, r: Rig, smallest: bool) -> None:
        if self.want("first-sync", "memory"):
            passes.first_sync(r, self.want("first-sync"), self.want("memory"))
        else:
            r.sidecar_pass()  # the slave needs a first copy for what follows
        if self.want("full", "changed", "lag"):  # the lag's drain scales with the full pass
            passes.full_passes(r, report=self.want("full"))
        if self.want("changed"):
            passes.change_passes(r)
        if self.want("scrape"):
            r.add(scrape.measure(r))
        if self.want("lag", "snapshots"):
            lag.measure(r, contenders=self.want("lag"))
        if self.want("snapshots"):
            lag.snapshot_metric(r)
        if smallest and self.want("pgbench"):
            pgbench.measure(r)
        if smallest and self.want("restore"):
            r.site.replica.empty(r.site.replica.home)  # room for a copy, in memory
            restore.measure(r)

    def keep(self, r: Rig) -> None:
        self.results += r.results
        self.lags[r.key] = r.lags
        self.configs.update(r.configs)
        self.trees[r.key] = r.made
        self.layouts[r.key] = r.layout
        self.verified.update({f"{r.key} {name}": found for name, found in r.verified.items()})
        self.figures[r.key] = dict(r.figures)
        if "full" in r.figures:
            self.points.append(
                {"fs": r.site.fs, "path": r.path, "files": r.made["files"], **r.figures}
            )

    def growth(self) -> None:
        """How the change-triggered and the full pass grow with the tree, per filesystem."""
        for fs in self.sizes.filesystems:
            points = sorted(
                (p for p in self.points if p["fs"] == fs and "change" in p),
                key=lambda p: p["files"],
            )
            if len(points) < 2:
                continue
            small, large = points[0], points[-1]
            k = stats.exponent(small["files"], small["change"], large["files"], large["change"])
            full = stats.exponent(small["files"], small["full"], large["files"], large["full"])
            self.results.append(
                Metric(
                    "change-triggered pass against tree size",
                    f"{small['files']:,} to {large['files']:,} files",
                    k,
                    "exponent",
                    {},
                    {
                        **{f"{p['files']:,} files (s)": p["change"] for p in points},
                        "full pass exponent": full,
                    },
                    f"grows at most as files^{GROWTH_TARGET:g} "
                    f"({10**GROWTH_TARGET:.1f}x the time for 10x the files)",
                    k <= GROWTH_TARGET,
                    {"points": points},
                    small["path"],
                )
            )

    # -- RTO in the sandbox ----------------------------------------------------------------

    def rto(self) -> None:
        from ops.rehearsal import drill

        rtos: list[float] = []
        gitlab: list[float] = []
        steps: list[dict[str, float]] = []
        for run in range(self.sizes.rto_runs):
            with tempfile.TemporaryDirectory(prefix="gitlab-dr-bench-") as folder:
                report = drill.drill(
                    Path(folder) / "sandbox",
                    lambda line: self.progress(f"drill: {line}") if line.startswith("==") else None,
                    load_seconds=8.0,
                    seed=self.sizes.seed + run,
                )
            if not report.ok or report.rto_seconds is None:
                raise RuntimeError(f"drill {run + 1} failed: {report.lines()[0]}")
            promo = {s["name"]: float(s["seconds"]) for s in report.promotion["steps"]}
            start = next(s for s in report.promotion["steps"] if s["name"] == "start-slave-gitlab")
            rtos.append(report.rto_seconds)
            # GitLab's own start: from the SDK's start call to its passing health check
            gitlab.append(float(start.get("gitlab_healthy_seconds", 0.0)))
            steps.append(promo)
            self.progress(f"drill {run + 1}/{self.sizes.rto_runs}: RTO {report.rto_seconds:.1f} s")
        rto = stats.Summary.of(rtos)
        own = stats.Summary.of([r - g for r, g in zip(rtos, gitlab, strict=True)])
        self.results.append(
            Metric(
                "RTO in the sandbox",
                "the drill's stand-in GitLab",
                rto.median,
                "s",
                rto.to_dict(),
                {"orchestration (all but GitLab's start)": own.median},
                "under 30 s",
                rto.median < 30,
                {
                    "gitlab_start_seconds": gitlab,
                    "orchestration": own.to_dict(),
                    "steps_median": {
                        name: stats.percentile([st[name] for st in steps], 50) for name in steps[0]
                    },
                },
                "the sandbox's own",
            )
        )
