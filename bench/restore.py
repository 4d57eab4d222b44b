"""Promotion's restore, timed for real: ``gitlab-sync restore`` of the slave's newest snapshot
into GITLAB_HOME, at each of ``restore_gib`` (5 and 50 GiB by default).

The snapshot is the tree as it stands, plus sparse ballast where the size asks for more (1 GiB
files of registry blobs, 64 KiB of data each): a pass carries the ballast to the slave first.
The restore runs as promotion runs it, in a one-off container of the sidecar's image with the
slave's SYNC_HOME at /sync and the parent of GITLAB_HOME at /homes, given
``restore /homes/gitlab --json``; GITLAB_HOME starts as a new host has it (an empty subvolume on
btrfs, an empty folder elsewhere). The figure is the command's time in the container; the JSON's
own ``seconds`` and the disk the restore took are beside it.

A copy costs what the snapshot holds, holes aside: a sparse 50 GiB copies as fast as its data.
Where the sidecar copies (``method`` not ``snapshot``), the table also gives what 50 GiB of real
data would take at the rate measured on the tree (the first, non-sparse size): an estimate,
said so.
"""

from __future__ import annotations

import json
from typing import Any

from bench.metric import GIB, Metric
from bench.probe import BALLAST
from bench.rig import Rig
from tests.integration.sidecar.sync_pair import SYNC_IMAGE

TARGET_S = 1.0


def measure(r: Rig) -> None:
    box = r.cluster.box(
        f"restore-{r.site.fs}",
        [(str(r.site.slave.sync), "/sync", "rw"), (str(r.site.slave.root), "/homes", "rw")],
        image=SYNC_IMAGE,
    )
    tree_bytes = int(r.made["bytes"])
    rate: float | None = None  # seconds per GiB of data, from the first (real) size
    ballast = 0
    for gib in r.sizes.restore_gib:
        want = int(gib * GIB) - tree_bytes
        if want > ballast:
            made = r.writer.probe("ballast", "/source", str(want))
            ballast = int(made["bytes"])
            seconds, record = r.sidecar_pass()
            r.say(
                f"restore: {ballast / GIB:.1f} GiB of sparse ballast sent to the slave in "
                f"{seconds:.1f} s ({record.get('outcome')})"
            )
        r.site.slave.fresh_home()
        before = r.site.slave.used()
        seconds, out = box.timed_output(["gitlab-sync", "restore", "/homes/gitlab", "--json"])
        answer: dict[str, Any] = json.loads(out)
        extra = r.site.slave.used() - before
        method = str(answer.get("method", "copy"))
        total = tree_bytes + ballast
        if rate is None and not ballast:
            rate = seconds / (total / GIB)
        r.say(
            f"restore of {total / GIB:.2f} GiB ({method}): {seconds:.3f} s, {extra / GIB:.2f} GiB"
        )
        competitors = {
            "seconds (restore's JSON)": float(answer.get("seconds", 0.0)),
            "disk it took (GiB)": extra / GIB,
        }
        if method != "snapshot" and ballast and rate is not None:
            competitors["estimate for real data at the measured rate (s)"] = rate * total / GIB
        r.add(
            Metric(
                f"restore for promotion, {gib:g} GiB",
                f"{r.tree.files:,} files + {ballast / GIB:.1f} GiB sparse" if ballast else r.size,
                seconds,
                "s",
                {},
                competitors,
                f"under {TARGET_S:g} s",
                seconds < TARGET_S,
                {
                    "method": method,
                    "answer": answer,
                    "bytes": total,
                    "sparse_bytes": ballast,
                    "disk_bytes": extra,
                },
            )
        )
    if ballast:
        r.writer.sh(f"rm -rf /source/{BALLAST}")
    r.site.slave.fresh_home()
