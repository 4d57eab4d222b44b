"""Replication lag under churn, for our sidecar and each contender, and what the snapshots cost.

The probe writes ``rate`` changes a second for ``seconds`` on the master's tree (new objects,
rewrites, deletions) and, for each, measures the delay until the slave's newest complete copy
shows it, through a read-only mount on the same kernel clock. Each contender gets the same
churn (same seed) on the same tree, one after the other: our daemon, lsyncd at delay 1 and 15
(its rsync-over-SSH mode), and the seed's rsync loop. The drain after the churn is at least
``drain`` and three full passes of ours, so a slow contender shows as late, not as never.
After each, the slave's copy is compared with the master's tree, entry by entry.
"""

from __future__ import annotations

import shlex
from typing import Any

from bench import stats
from bench.cluster import Box
from bench.contenders import bare_rsync, lsyncd_config
from bench.metric import MIB, Metric, finite
from bench.rig import Rig
from tests.integration.sidecar.sync_pair import wait_for, wait_idle

TARGET_S = 1.0


def measure(r: Rig, contenders: bool) -> None:
    """Our lag, then (``contenders``) lsyncd's and the rsync loop's, then the metric."""
    probe = r.cluster.box(
        f"probe-ours-{r.site.fs}",
        [(str(r.site.master.home), "/source", "rw"), (str(r.site.slave.sync), "/sync", "ro")],
    )
    ours_lag(r, probe)
    if not contenders:
        return
    plain_probe = r.cluster.box(
        f"probe-plain-{r.site.fs}",
        [(str(r.site.master.home), "/source", "rw"), (str(r.site.replica.home), "/replica", "ro")],
    )
    for delay in (1, 15):
        lsyncd_lag(r, plain_probe, delay)
    loop_lag(r, plain_probe)
    lag_metric(r)


def drain(r: Rig) -> float:
    return max(r.sizes.drain, 3 * r.figures.get("full", 0.0))


def churn(r: Rig, probe: Box, observed: str, name: str) -> dict[str, Any]:
    s = r.sizes
    wait = drain(r)
    r.say(f"{name}: {s.rate:g} changes/s for {s.seconds:g} s, then up to {wait:.0f} s to drain")
    result: dict[str, Any] = probe.probe(
        "churn", "/source", observed, str(s.rate), str(s.seconds), str(wait), str(s.seed)
    )
    r.lags[name] = result["records"]
    lag = stats.Lag.of([row[3] for row in result["records"]])
    r.say(
        f"{name}: p50 {lag.p50:.2f} s, p99 {lag.p99:.2f} s, max {lag.max:.2f} s, "
        f"{result['never_seen']} never seen"
    )
    return result


def verify(r: Rig, probe: Box, observed: str, name: str) -> None:
    """The slave's copy against the master's tree, once the churn has stopped."""
    found: dict[str, Any] = probe.probe("compare", "/source", observed)
    r.say(
        f"{name}: final copy {'equals' if not found['differences'] else 'DIFFERS FROM'} "
        f"the master's tree ({found['entries']:,} entries, {found['differences']} differ)"
    )
    r.verified[name] = found


def ours_lag(r: Rig, probe: Box) -> None:
    before = r.logged_ids()
    r.start_daemon()
    churn(r, probe, "/sync/current", "ours")
    # The churn's last events may start one more pass: stopped, it would be cut short.
    wait_idle(r.master, timeout=max(120.0, drain(r)))
    r.master.sync("stop")
    r.figures["passes_during_churn"] = len(r.passes_since(before))
    verify(r, probe, "/sync/current", "ours")


def lsyncd_lag(r: Rig, probe: Box, delay: int) -> None:
    name = f"lsyncd delay={delay}"
    config = lsyncd_config(delay)
    r.configs[name] = config
    r.plain.write("/etc/bench/lsyncd.conf.lua", config)
    r.plain.sh("rm -f /tmp/lsyncd.log")
    r.plain.background("lsyncd /etc/bench/lsyncd.conf.lua >/tmp/lsyncd.out 2>&1")
    wait_for(
        lambda: "finished" in r.plain.sh("cat /tmp/lsyncd.log 2>/dev/null", check=False),
        1800,
        "lsyncd's start-up sync",
        every=0.5,
    )
    churn(r, probe, "/replica", name)
    r.plain.sh("pkill lsyncd; sleep 0.5; pkill rsync", check=False)
    verify(r, probe, "/replica", name)


def loop_lag(r: Rig, probe: Box) -> None:
    name = "rsync loop (seed)"
    rsync = shlex.join(bare_rsync())
    script = f"n=0; while :; do {rsync}; n=$((n+1)); echo $n >/tmp/loops; sleep 1; done"
    r.configs[name] = script
    r.plain.sh("rm -f /tmp/loops")
    r.plain.background(script)
    wait_for(lambda: r.plain.succeeds(["test", "-s", "/tmp/loops"]), 1800, "the loop's first rsync")
    churn(r, probe, "/replica", name)
    r.plain.sh("pkill -f 'while :'; pkill rsync", check=False)
    r.plain.timed(bare_rsync())  # whatever the killed run left half done
    verify(r, probe, "/replica", name)


def lag_metric(r: Rig) -> None:
    s = r.sizes
    lags = {name: stats.Lag.of([row[3] for row in records]) for name, records in r.lags.items()}
    ours = lags.pop("ours")
    quicker = lags.get("lsyncd delay=1")
    met = ours.p99 < TARGET_S and (quicker is None or ours.p99 < quicker.p99)
    competitors: dict[str, float] = {}
    for name, lag in lags.items():
        competitors.update({f"{name} p50": lag.p50, f"{name} p99": lag.p99})
    r.add(
        Metric(
            "replication lag (p99)",
            f"{r.size}; {s.rate:g} changes/s for {s.seconds:g} s",
            ours.p99,
            "s",
            {"p50": finite(ours.p50), "p99": finite(ours.p99), "max": finite(ours.max)},
            competitors,
            f"p99 under {TARGET_S:g} s and under lsyncd's at delay=1",
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


def snapshot_metric(r: Rig) -> None:
    """What the slave's snapshots cost beyond one copy: the slave's filesystem in use against
    the replica's, which holds one plain copy of the same tree on the same kind of filesystem
    (both brought level with the master first: one pass of ours, one bare rsync)."""
    r.sidecar_pass()
    r.plain.timed(bare_rsync())
    kept = int(r.slave.sh("ls /sync/snapshots | grep -vc '\\.json$'", check=False).strip() or 0)
    slave, replica = r.site.slave.used(settle=True), r.site.replica.used(settle=True)
    dirs = int(r.slave.sh("find /sync/current/ -type d | wc -l").strip())
    passes = r.figures.get("passes_during_churn", 0.0)
    detail: dict[str, Any] = {
        "snapshots_kept": kept,
        "slave_used_bytes": slave,
        "replica_used_bytes": replica,
        "directories_per_snapshot": dirs,
        "passes_during_churn": int(passes),
    }
    competitors = {"one copy (MiB)": replica / MIB}
    if r.site.fs == "tmpfs":
        # tmpfs gives directories no blocks; on ext4 each takes at least one 4 KiB block, and
        # every hard-linked snapshot has all of the tree's directories anew.
        estimate = max(0, kept - 1) * dirs * 4 / 1024
        competitors["directory blocks on ext4, estimated (MiB)"] = estimate
        detail["ext4_directory_blocks_mib_estimate"] = estimate
    r.add(
        Metric(
            "snapshot cost",
            f"{kept} snapshots of {r.size}",
            (slave - replica) / MIB,
            "MiB beyond one copy",
            {},
            competitors,
            "",
            None,
            detail,
        )
    )
