"""One tree on one kind of filesystem, with everything that syncs it: what each measurement uses.

A :class:`Rig` is made per (filesystem, tree size): three hosts (:mod:`bench.storage`), the
writer that plays GitLab on the master's tree, our paired sidecars, and the contenders' plain
master and sshd slave. Every measurement module takes one and adds its :class:`Metric` records.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from bench.cluster import Box, Cluster, cluster
from bench.contenders import Pass, bare_rsync, logged_passes, ours_config, passed_since
from bench.metric import GIB, Metric, Sizes, Tree
from bench.storage import Site, site
from ops.progress import Progress
from tests.integration.sidecar.sync_pair import wait_for


@dataclass
class Rig:
    """One (filesystem, tree) and everything that syncs it; ``results`` fills as steps end."""

    sizes: Sizes
    tree: Tree
    site: Site
    cluster: Cluster
    writer: Box
    master: Box
    slave: Box
    plain: Box
    plain_slave: Box
    made: dict[str, Any]  # what ``probe tree`` made
    layout: dict[str, Any]  # the master sidecar's word on its method (gitlab-sync layout)
    progress: Progress
    results: list[Metric] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)  # medians other steps reuse
    configs: dict[str, str] = field(default_factory=dict)
    verified: dict[str, dict[str, Any]] = field(default_factory=dict)
    lags: dict[str, list[list[Any]]] = field(default_factory=dict)

    @property
    def method(self) -> str:
        return str(self.layout.get("method", "fallback"))

    @property
    def path(self) -> str:
        """The sidecar's method and where the data lives, as the table's "Path" column says."""
        method = "snapshots" if self.method == "snapshots" else "fallback"
        return f"{method}: {self.site.describe()}"

    @property
    def size(self) -> str:
        return self.tree.label()

    @property
    def key(self) -> str:
        """``btrfs 100,000`` (the plots' and the lag records' name for this rig)."""
        return f"{self.site.fs} {self.tree.files:,}"

    def add(self, metric: Metric) -> None:
        metric.path = metric.path or self.path
        self.results.append(metric)
        flag = {True: "met", False: "MISSED", None: ""}[metric.met]
        self.progress(f"result: {metric.name}: {metric.value:.3g} {metric.unit} {flag}".rstrip())

    def say(self, line: str) -> None:
        self.progress(f"[{self.key}] {line}")

    def passes_since(self, before: set[str]) -> list[Pass]:
        """The master's passes logged that are not in ``before`` (ids), in order."""
        log = self.master.container.logs().decode(errors="replace")
        return [p for p in logged_passes(log) if p.id not in before]

    def logged_ids(self) -> set[str]:
        log = self.master.container.logs().decode(errors="replace")
        return {p.id for p in logged_passes(log)}

    def start_daemon(self) -> None:
        """``gitlab-sync start`` on the master, and wait until the daemon's first pass ended."""
        since = dt.datetime.now(dt.UTC)
        self.master.sync("start")
        wait_for(lambda: passed_since(self.master, since), 1800, "the first pass", every=0.5)

    def sidecar_pass(self) -> tuple[float, dict[str, Any]]:
        """A ``gitlab-sync pass`` now (the daemon stopped): its seconds, timed in the
        container, and its record (``duration_s``, ``kind`` from the new sidecar on)."""
        seconds, out = self.master.timed_output(["gitlab-sync", "pass", "--json"])
        record: dict[str, Any] = json.loads(out)
        return seconds, record


def space_for(tree: Tree, restore_gib: tuple[float, ...]) -> int:
    """GiB each host's filesystem may grow to (sparse: only what is written takes room): the
    tree, a restored copy of it, the snapshots' churn, the restore's sparse ballast."""
    return int(3 * tree.bytes / GIB + max(restore_gib, default=0.0) + 16)


@contextlib.contextmanager
def rig(sizes: Sizes, fs: str, tree: Tree, progress: Progress) -> Iterator[Rig]:
    """The hosts, the tree and both pairs; everything removed after the ``with`` block."""
    with site(fs, sizes.storage, space_for(tree, sizes.restore_gib)) as hosts, cluster() as c:
        key = f"{fs} {tree.files:,}"
        writer = c.box(f"writer-{fs}", [(str(hosts.master.home), "/source", "rw")])
        progress(f"[{key}] making a tree of {tree.label()} on {hosts.describe()}")
        made: dict[str, Any] = writer.probe(
            "tree",
            "/source",
            str(tree.files),
            str(tree.bytes),
            str(sizes.seed),
            str(tree.small_max),
        )
        progress(
            f"[{key}] tree: {made['files']:,} files, {made['bytes'] / GIB:.2f} GiB, "
            f"{made['packs']} packs, in {made['seconds']:.1f} s"
        )
        master, slave = c.our_pair(hosts, {})
        plain, plain_slave = c.plain_pair(hosts)
        layout = master.layout()
        progress(f"[{key}] the sidecar's method here: {layout['method']} ({layout['why']})")
        r = Rig(
            sizes, tree, hosts, c, writer, master, slave, plain, plain_slave, made, layout, progress
        )
        r.configs["ours"] = ours_config(master)
        r.configs["rsync"] = shlex.join(bare_rsync())
        yield r
