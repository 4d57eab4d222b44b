"""The cost of a pass: the first full sync, a full pass with nothing changed, a change-triggered
pass, each against bare ``rsync -a --delete`` of the same tree over the same transport.

- **First full sync**: the slave's area emptied (its snapshots
  deleted, subvolumes too), then ``gitlab-sync pass``; the replica emptied, then bare rsync.
  Throughput is the tree's bytes over the time, so the two compare directly. The sidecars'
  memory is sampled meanwhile.
- **Full pass**: ``gitlab-sync pass`` with the daemon stopped (no change list: the sidecar walks
  the whole tree), timed in the container, against bare rsync with nothing to send.
- **Change-triggered pass**: the daemon running, ``changed`` small files rewritten at once on
  the master; what the daemon then runs is read from its log (every pass that the burst
  started, summed: a burst split in two passes costs both). Its ratio is to the full pass's own
  ``duration_s`` (the same clock: the sidecar's record of its pass, without the CLI's start-up).

Each figure is the median of :meth:`Sizes.runs_at` runs (the passes' after one warm-up run:
caches, SSH connections).
"""

from __future__ import annotations

import time
from typing import Any

from bench import stats
from bench.cluster import start_rss
from bench.contenders import bare_rsync
from bench.metric import MIB, Metric
from bench.rig import Rig
from tests.integration.sidecar.sync_pair import wait_idle


def first_sync(r: Rig, throughput: bool, memory: bool) -> None:
    ours: list[float] = []
    bare: list[float] = []
    peaks: dict[str, int] = {"master": 0, "slave": 0}
    runs = r.sizes.runs_at(r.tree.files)
    for run in range(runs):
        r.site.slave.empty(r.site.slave.sync)
        samplers = {"master": start_rss(r.master), "slave": start_rss(r.slave)}
        seconds, record = r.sidecar_pass()
        ours.append(seconds)
        for side, sampler in samplers.items():
            peaks[side] = max(peaks[side], int(sampler.stop()["peak_kib"]))
        r.site.replica.empty(r.site.replica.home)
        samplers = {"bare master": start_rss(r.plain), "bare slave": start_rss(r.plain_slave)}
        bare.append(r.plain.timed(bare_rsync()))
        for side, sampler in samplers.items():
            peaks[side] = max(peaks.get(side, 0), int(sampler.stop()["peak_kib"]))
        r.say(
            f"first full sync {run + 1}/{runs}: ours {ours[-1]:.2f} s "
            f"({record.get('kind', 'kind not reported')}), bare rsync {bare[-1]:.2f} s"
        )
    size = int(r.made["bytes"])
    mine = stats.Summary.of([size / MIB / t for t in ours])
    theirs = stats.Summary.of([size / MIB / t for t in bare])
    share = mine.median / theirs.median
    if throughput:
        r.add(
            Metric(
                "first full sync throughput",
                r.size,
                mine.median,
                "MiB/s",
                mine.to_dict(),
                {"bare rsync -a --delete": theirs.median, "ratio to bare rsync": share},
                "at least 0.9x bare rsync",
                share >= 0.9,
                {"ours_seconds": ours, "bare_seconds": bare, "bare_spread": theirs.to_dict()},
            )
        )
    if memory:
        r.add(
            Metric(
                "sidecar peak memory, first full pass",
                f"{r.tree.files:,} files",
                peaks["master"] / 1024,
                "MiB (master)",
                {},
                {f"{side} (MiB)": kib / 1024 for side, kib in peaks.items() if side != "master"},
                "",
                None,
                {f"{side.replace(' ', '_')}_kib": kib for side, kib in peaks.items()},
            )
        )


def full_passes(r: Rig, report: bool) -> None:
    """Full passes with nothing changed, against bare rsync with nothing to send; their
    medians are kept for what compares with them even when not ``report``-ed."""
    s = r.sizes
    runs = s.runs_at(r.tree.files)
    wall: list[float] = []
    own: list[float] = []
    bare: list[float] = []
    kinds: list[str] = []
    for run in range(runs + 1):  # the first warms the caches and the connections
        seconds, record = r.sidecar_pass()
        took_bare = r.plain.timed(bare_rsync())
        if run == 0:
            continue
        wall.append(seconds)
        own.append(float(record.get("duration_s") or seconds))
        bare.append(took_bare)
        kinds.append(str(record.get("kind", "")))
        r.say(f"full pass {run}/{runs}: ours {seconds:.2f} s, bare rsync {took_bare:.2f} s")
    mine, theirs = stats.Summary.of(wall), stats.Summary.of(bare)
    r.figures.update(full=mine.median, full_own=stats.Summary.of(own).median, bare=theirs.median)
    share = mine.median / theirs.median
    if not report:
        return
    r.add(
        Metric(
            "full pass, nothing changed",
            r.size,
            mine.median,
            "s",
            mine.to_dict(),
            {"bare rsync -a --delete": theirs.median, "ratio to bare rsync": share},
            "at most 1.0x bare rsync",
            share <= 1.0,
            {
                "bare_spread": theirs.to_dict(),
                "duration_s": own,
                "kinds": kinds,
            },
        )
    )


def change_passes(r: Rig) -> None:
    """Passes the daemon runs after ``changed`` files are rewritten at once."""
    s = r.sizes
    r.start_daemon()
    wait_idle(r.master, timeout=1800)
    repeats = s.runs_at(r.tree.files)
    took: list[float] = []
    runs: list[dict[str, Any]] = []
    for run in range(repeats + 1):
        before = r.logged_ids()
        wrote = time.time()
        r.writer.probe("touch", "/source", str(s.changed), str(s.seed + run))
        status = wait_idle(r.master, since=wrote, timeout=1800)
        passes = r.passes_since(before)  # what the burst started (a timer pass would show)
        if not passes:
            raise RuntimeError(f"no pass after {s.changed} rewrites: {status}")
        seconds = sum(p.seconds for p in passes)
        last = status.get("last_pass") or {}
        runs.append(
            {
                "passes": len(passes),
                "triggers": [p.trigger for p in passes],
                "kinds": [p.kind for p in passes],
                "seconds": seconds,
                "sent": last.get("files_transferred"),
                "log": [p.note for p in passes],
            }
        )
        if run >= 1:
            took.append(seconds)
        r.say(
            f"change-triggered {run}/{repeats}: {seconds:.3f} s in {len(passes)} pass(es)"
            + (" (warm-up)" if run == 0 else "")
        )
    r.master.sync("stop")
    after = stats.Summary.of(took)
    r.figures["change"] = after.median
    full = r.figures["full_own"]  # full_passes ran first
    share = after.median / full
    r.add(
        Metric(
            f"change-triggered pass, {s.changed} files changed",
            r.size,
            after.median,
            "s",
            after.to_dict(),
            {"full pass (ours, duration_s)": full, "ratio to the full pass": share},
            "at most 0.02x the full pass",
            share <= 0.02,
            {"runs": runs[1:], "warm_up": runs[0]},
        )
    )
