"""The measurements: each one a function of the sizes, returning :class:`Metric` records.

One tree is made once (``probe tree``) and every contender syncs that same tree, under the
same churn, over the same SSH transport, one after the other on the same machine, so the
ratios hold even where the absolute figures are this machine's.
"""

from __future__ import annotations

import datetime as dt
import shlex
import tempfile
from pathlib import Path
from typing import Any

from bench import scrape, stats
from bench.cluster import Box, Cluster, cluster, start_rss
from bench.contenders import bare_rsync, logged_passes, lsyncd_config, ours_config, passed_since
from bench.metric import GIB, METRICS, MIB, Metric, Sizes, finite, tree_size
from ops.progress import Progress
from tests.integration.sidecar.sync_pair import wait_for, wait_idle


class Bench:
    """Runs the chosen metrics in one cluster; ``results`` fills as they finish."""

    def __init__(self, sizes: Sizes, progress: Progress, only: tuple[str, ...] = METRICS):
        self.sizes, self.progress, self.only = sizes, progress, only
        self.results: list[Metric] = []
        self.lags: dict[str, list[list[Any]]] = {}
        self.configs: dict[str, str] = {}
        self.tree: dict[str, Any] = {}
        self.verified: dict[str, dict[str, Any]] = {}

    def want(self, *names: str) -> bool:
        return any(name in self.only for name in names)

    def run(self) -> list[Metric]:
        syncs = ("first-sync", "no-change", "changed", "scrape", "lag", "snapshots", "memory")
        if self.want(*syncs):
            with cluster(self.sizes.storage) as c:
                self.sync_metrics(c)
        if self.want("memory"):
            for files in self.sizes.memory_files:
                if files != self.sizes.files:
                    with cluster(self.sizes.storage) as c:
                        self.memory_only(c, files)
        if self.want("rto"):
            self.rto()
        return self.results

    # -- the tree and the pairs ------------------------------------------------------------

    def make_tree(self, c: Cluster, volume: str, files: int, size: int, small_max: int) -> Box:
        writer = c.box(f"writer-{files}", [(volume, "/source", "rw")])
        self.progress(f"making a tree of {files:,} files, {size / GIB:.2f} GiB")
        tree: dict[str, Any] = writer.probe(
            "tree", "/source", str(files), str(size), str(self.sizes.seed), str(small_max)
        )
        self.progress(
            f"tree: {tree['files']:,} files, {tree['bytes'] / GIB:.2f} GiB, "
            f"{tree['packs']} packs, in {tree['seconds']:.1f} s"
        )
        if files == self.sizes.files:
            self.tree = tree
        return writer

    def sync_metrics(self, c: Cluster) -> None:
        s = self.sizes
        source = c.volume("source")
        ours_sync = c.volume("ours-sync")
        replica = c.volume("replica")
        writer = self.make_tree(c, source, s.files, s.bytes, 16 << 10)
        master, slave = c.our_pair(source, ours_sync, {}, prefix="ours")
        plain, plain_slave = c.plain_pair(source, replica)
        self.configs["ours"] = ours_config(master)
        self.configs["rsync"] = shlex.join(bare_rsync())

        self.first_sync(master, slave, plain, plain_slave)
        if self.want("no-change", "changed"):
            self.passes(writer, master, plain)
        if self.want("scrape"):
            self.add(scrape.measure(master, writer, s))
        if self.want("lag", "snapshots"):
            probe = c.box("probe-ours", [(source, "/source", "rw"), (ours_sync, "/sync", "ro")])
            self.ours_lag(master, slave, probe)
            plain_probe = c.box(
                "probe-plain", [(source, "/source", "rw"), (replica, "/replica", "ro")]
            )
            if self.want("lag"):
                for delay in (1, 15):
                    self.lsyncd_lag(plain, plain_probe, delay)
                self.loop_lag(plain, plain_probe)
                self.lag_metric()

    # -- 4 and 7: the first full sync, and the sidecar's memory on it -----------------------

    def first_sync(self, master: Box, slave: Box, plain: Box, plain_slave: Box) -> None:
        s = self.sizes
        ours: list[float] = []
        bare: list[float] = []
        peaks: dict[str, int] = {"master": 0, "slave": 0}
        for run in range(s.runs):
            slave.sh("rm -rf /sync/snapshots /sync/current /sync/.incoming /sync/.incoming.json")
            samplers = {"master": start_rss(master), "slave": start_rss(slave)}
            ours.append(master.timed(["gitlab-sync", "pass"]))
            for side, sampler in samplers.items():
                peaks[side] = max(peaks[side], int(sampler.stop()["peak_kib"]))
            plain_slave.sh("rm -rf /replica/* /replica/.[!.]*", check=False)
            samplers = {"bare master": start_rss(plain), "bare slave": start_rss(plain_slave)}
            bare.append(plain.timed(bare_rsync()))
            for side, sampler in samplers.items():
                peaks[side] = max(peaks.get(side, 0), int(sampler.stop()["peak_kib"]))
            self.progress(
                f"first full sync {run + 1}/{s.runs}: ours {ours[-1]:.2f} s, "
                f"bare rsync {bare[-1]:.2f} s"
            )
        size = self.tree.get("bytes", s.bytes)
        ours_mbs = [size / MIB / t for t in ours]
        bare_mbs = [size / MIB / t for t in bare]
        mine, theirs = stats.Summary.of(ours_mbs), stats.Summary.of(bare_mbs)
        share = mine.median / theirs.median
        self.add(
            Metric(
                "first full sync throughput",
                tree_size(s),
                mine.median,
                "MiB/s",
                mine.to_dict(),
                {"bare rsync -a --delete": theirs.median, "ratio to bare rsync": share},
                "at least 0.9x bare rsync",
                share >= 0.9,
                {
                    "ours_seconds": ours,
                    "bare_seconds": bare,
                    "bare_spread": theirs.to_dict(),
                },
            )
        )
        if self.want("memory"):
            self.memory_metric(s.files, peaks)

    def memory_metric(self, files: int, peaks: dict[str, int]) -> None:
        """Peak memory (PSS summed over a container's processes) during a first full pass."""
        self.add(
            Metric(
                "sidecar peak memory, first full pass",
                f"{files:,} files",
                peaks["master"] / 1024,
                "MiB (master)",
                {},
                {f"{side} (MiB)": kib / 1024 for side, kib in peaks.items() if side != "master"},
                "",
                None,
                {f"{side.replace(' ', '_')}_kib": kib for side, kib in peaks.items()},
            )
        )

    def memory_only(self, c: Cluster, files: int) -> None:
        source = c.volume(f"source-{files}")
        sync = c.volume(f"sync-{files}")
        self.make_tree(c, source, files, files * 200, 256)
        master, slave = c.our_pair(source, sync, {}, prefix=f"mem{files}")
        samplers = {"master": start_rss(master), "slave": start_rss(slave)}
        took = master.timed(["gitlab-sync", "pass"])
        peaks = {side: int(sampler.stop()["peak_kib"]) for side, sampler in samplers.items()}
        self.progress(f"memory at {files:,} files: first pass {took:.1f} s, peaks {peaks} KiB")
        self.memory_metric(files, peaks)

    # -- 2 and 3: a pass with nothing changed, and one after a few changes -------------------

    def passes(self, writer: Box, master: Box, plain: Box) -> None:
        s = self.sizes
        ours: list[float] = []
        bare: list[float] = []
        changed: list[float] = []
        for run in range(s.runs + 1):  # the first warms the caches and the connections
            took_ours = master.timed(["gitlab-sync", "pass"])
            took_bare = plain.timed(bare_rsync())
            writer.probe("touch", "/source", str(s.changed), str(s.seed + run))
            took_changed = master.timed(["gitlab-sync", "pass"])
            plain.timed(bare_rsync())  # the plain replica takes the same changes
            if run >= 1:
                ours.append(took_ours)
                bare.append(took_bare)
                changed.append(took_changed)
                self.progress(
                    f"passes {run}/{s.runs}: nothing changed: ours {took_ours:.2f} s, bare "
                    f"rsync {took_bare:.2f} s; {s.changed} changed: ours {took_changed:.2f} s"
                )
        mine, theirs, after = (stats.Summary.of(v) for v in (ours, bare, changed))
        if self.want("no-change"):
            share = mine.median / theirs.median
            self.add(
                Metric(
                    "pass with nothing changed",
                    tree_size(s),
                    mine.median,
                    "s",
                    mine.to_dict(),
                    {"bare rsync -a --delete": theirs.median, "ratio to bare rsync": share},
                    "at most 1.1x bare rsync",
                    share <= 1.1,
                    {"bare_spread": theirs.to_dict()},
                )
            )
        if self.want("changed"):
            share = after.median / mine.median
            self.add(
                Metric(
                    f"pass after {s.changed} changed files",
                    tree_size(s),
                    after.median,
                    "s",
                    after.to_dict(),
                    {"full pass (ours)": mine.median, "ratio to the full pass": share},
                    "at most 0.1x the full pass",
                    share <= 0.1,
                )
            )

    # -- 1 and 5: replication lag under churn, and what the snapshots cost --------------------

    def churn(self, probe: Box, observed: str, name: str) -> dict[str, Any]:
        s = self.sizes
        self.progress(
            f"{name}: {s.rate:g} changes/s for {s.seconds:g} s, then up to {s.drain:g} s to drain"
        )
        result: dict[str, Any] = probe.probe(
            "churn",
            "/source",
            observed,
            str(s.rate),
            str(s.seconds),
            str(s.drain),
            str(s.seed),
        )
        self.lags[name] = result["records"]
        lag = stats.Lag.of([r[3] for r in result["records"]])
        self.progress(
            f"{name}: p50 {lag.p50:.2f} s, p99 {lag.p99:.2f} s, max {lag.max:.2f} s, "
            f"{result['never_seen']} never seen"
        )
        return result

    def verify(self, probe: Box, observed: str, name: str) -> dict[str, Any]:
        """The slave's copy against the master's tree, once the churn has stopped."""
        found: dict[str, Any] = probe.probe("compare", "/source", observed)
        self.progress(
            f"{name}: final copy {'equals' if not found['differences'] else 'DIFFERS FROM'} "
            f"the master's tree ({found['entries']:,} entries, {found['differences']} differ)"
        )
        return found

    def ours_lag(self, master: Box, slave: Box, probe: Box) -> None:
        since = dt.datetime.now(dt.UTC)
        master.sync("start")
        wait_for(lambda: passed_since(master, since), 600, "the sidecar's first pass", every=0.5)
        self.churn(probe, "/sync/current", "ours")
        # The churn's last events may start one more pass: stopped, it would be cut short.
        wait_idle(master, timeout=120)
        master.sync("stop")
        passes = logged_passes(master.container.logs(since=since).decode(errors="replace"))
        found = self.verify(probe, "/sync/current", "ours")
        self.verified["ours"] = found
        if self.want("snapshots"):
            self.snapshot_metric(slave, passes)

    def snapshot_metric(self, slave: Box, passes: list[tuple[str, str, float]]) -> None:
        kept = int(slave.sh("ls /sync/snapshots | grep -vc '\\.json$'").strip() or 0)
        all_kib = int(slave.sh("du -sk /sync/snapshots").split()[0])
        one_kib = int(slave.sh("du -sk /sync/current/").split()[0])
        # Hard links cost no data blocks, but every snapshot has its own directories: on ext4
        # each takes at least one 4 KiB block, which a tmpfs du does not show.
        dirs = int(slave.sh("find /sync/current/ -type d | wc -l").strip())
        entries = kept * int(slave.sh("find /sync/current/ | wc -l").strip())
        ok = [seconds for _id, outcome, seconds in passes if outcome == "ok"]
        failed = sum(1 for _id, outcome, _s in passes if outcome != "ok")
        took = stats.Summary.of(ok) if ok else stats.Summary(0.0, 0.0, 0.0, 0)
        self.add(
            Metric(
                "snapshot cost",
                f"{kept} snapshots of {tree_size(self.sizes)}",
                (all_kib - one_kib) / 1024,
                "MiB beyond one copy",
                {},
                {
                    "median pass under churn (s)": took.median,
                    "one copy (MiB)": one_kib / 1024,
                    "directory blocks on ext4, estimated (MiB)": max(0, kept - 1) * dirs * 4 / 1024,
                },
                "",
                None,
                {
                    "snapshots_kept": kept,
                    "disk_all_kib": all_kib,
                    "disk_one_kib": one_kib,
                    "directory_entries": entries,
                    "directories_per_snapshot": dirs,
                    "ext4_directory_blocks_kib_estimate": max(0, kept - 1) * dirs * 4,
                    "storage": self.sizes.storage,
                    "passes_during_churn": len(passes),
                    "passes_failed": failed,
                    "pass_seconds": took.to_dict(),
                },
            )
        )

    def lsyncd_lag(self, plain: Box, probe: Box, delay: int) -> None:
        name = f"lsyncd delay={delay}"
        config = lsyncd_config(delay)
        self.configs[name] = config
        plain.write("/etc/bench/lsyncd.conf.lua", config)
        plain.sh("rm -f /tmp/lsyncd.log")
        plain.background("lsyncd /etc/bench/lsyncd.conf.lua >/tmp/lsyncd.out 2>&1")
        wait_for(
            lambda: "finished" in plain.sh("cat /tmp/lsyncd.log 2>/dev/null", check=False),
            900,
            "lsyncd's start-up sync",
            every=0.5,
        )
        self.churn(probe, "/replica", name)
        plain.sh("pkill lsyncd; sleep 0.5; pkill rsync", check=False)
        self.verified[name] = self.verify(probe, "/replica", name)

    def loop_lag(self, plain: Box, probe: Box) -> None:
        name = "rsync loop (seed)"
        rsync = shlex.join(bare_rsync())
        script = f"n=0; while :; do {rsync}; n=$((n+1)); echo $n >/tmp/loops; sleep 1; done"
        self.configs[name] = script
        plain.sh("rm -f /tmp/loops")
        plain.background(script)
        wait_for(
            lambda: plain.succeeds(["test", "-s", "/tmp/loops"]), 900, "the loop's first rsync"
        )
        self.churn(probe, "/replica", name)
        plain.sh("pkill -f 'while :'; pkill rsync", check=False)
        plain.timed(bare_rsync())  # whatever the killed run left half done
        self.verified[name] = self.verify(probe, "/replica", name)

    def lag_metric(self) -> None:
        s = self.sizes
        lags = {name: stats.Lag.of([r[3] for r in records]) for name, records in self.lags.items()}
        ours = lags.pop("ours")
        quicker = lags.get("lsyncd delay=1")
        met = ours.p99 < 2.0 and (quicker is None or ours.p99 < quicker.p99)
        competitors: dict[str, float] = {}
        for name, lag in lags.items():
            competitors.update({f"{name} p50": lag.p50, f"{name} p99": lag.p99})
        self.add(
            Metric(
                "replication lag (p99)",
                f"{tree_size(s)}; {s.rate:g} changes/s for {s.seconds:g} s",
                ours.p99,
                "s",
                {"p50": finite(ours.p50), "p99": finite(ours.p99), "max": finite(ours.max)},
                competitors,
                "p99 under 2 s and under lsyncd's at delay=1",
                met,
                {
                    name: {
                        "p50": finite(lag.p50),
                        "p99": finite(lag.p99),
                        "max": finite(lag.max),
                        "changes": lag.changes,
                        "never_seen": lag.changes - lag.seen,
                    }
                    for name, lag in {"ours": ours, **lags}.items()
                },
            )
        )

    # -- 6: RTO in the sandbox ----------------------------------------------------------------

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
            gitlab.append(float(start.get("gitlab_healthy_seconds", 0.0)))
            steps.append(promo)
            self.progress(f"drill {run + 1}/{self.sizes.rto_runs}: RTO {report.rto_seconds:.1f} s")
        rto = stats.Summary.of(rtos)
        own = stats.Summary.of([r - g for r, g in zip(rtos, gitlab, strict=True)])
        self.add(
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
            )
        )

    def add(self, metric: Metric) -> None:
        self.results.append(metric)
        flag = {True: "met", False: "MISSED", None: ""}[metric.met]
        self.progress(f"result: {metric.name}: {metric.value:.2f} {metric.unit} {flag}".rstrip())
