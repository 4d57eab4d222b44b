"""PostgreSQL under ``pgbench`` on the master, with the sync off and on: TPS and WAL a minute.

GitLab's PostgreSQL is the stand-in's (``gitlab-dr/gitlab-standin:local``: Debian's PostgreSQL 15,
run as Omnibus runs it, its data in GITLAB_HOME/data/postgresql/data on the master's filesystem,
the settings of the Compose stack). ``pgbench`` (the same package's) runs in that container
over the socket, TPC-B-like, ``pg_clients`` clients for ``pg_seconds``.

Each run starts just after a ``CHECKPOINT``, so both start with no page yet written in full. WAL
volume is ``pg_current_wal_lsn()`` after the run minus before it. "Sync on" is the daemon
running (change-triggered passes one after another, as pgbench's writes keep the tree
changing), started before the checkpoint and past its first pass. Off and on alternate
``pg_rounds`` times; the figures are medians. The cost: TPS lost and WAL added, as shares of
the sync-off figures (on the fallback, every pass is a base backup whose ``pg_backup_start``
forces a checkpoint, after which every page touched is logged whole again; a snapshot forces
nothing).
"""

from __future__ import annotations

import os
import re
from typing import Any

from testcontainers.core.container import DockerContainer

from bench import stats
from bench.metric import MIB, Metric
from bench.rig import Rig
from ops.rehearsal import standin as gl
from tests.integration.sidecar.sync_pair import SidecarNode

STANDIN_IMAGE = os.environ.get("STANDIN_IMAGE", "gitlab-dr/gitlab-standin:local")
# As the Compose stack sets them (compose/docker-compose.yml).
OMNIBUS_CONFIG = (
    "postgresql['wal_level'] = 'replica'\n"
    "postgresql['max_replication_slots'] = 4\n"
    "postgresql['wal_keep_size'] = 256\n"
)
HOME_PARTS = {"config": "/etc/gitlab", "data": "/var/opt/gitlab", "logs": "/var/log/gitlab"}
AS_PSQL = ["chpst", "-u", "gitlab-psql:gitlab-psql", "-U", "gitlab-psql"]
SOCKET = ["-h", "/var/opt/gitlab/postgresql", "-p", "5432"]
DATABASE = "gitlabhq_production"
TARGET_SHARE = 0.10

_TPS = re.compile(r"^tps = ([\d.]+) \(without initial connection time\)", re.MULTILINE)
_LSN = re.compile(r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")


def tps_of(output: str) -> float:
    """pgbench's TPS (``tps = 812.3 (without initial connection time)``)."""
    match = _TPS.search(output)
    if not match:
        raise ValueError(f"pgbench printed no TPS: {output.strip()[-300:]}")
    return float(match[1])


def lsn_bytes(lsn: str) -> int:
    """``16/B374D848`` as a byte position in the WAL."""
    if not _LSN.match(lsn.strip()):
        raise ValueError(f"not an LSN: {lsn!r}")
    high, low = lsn.strip().split("/")
    return (int(high, 16) << 32) + int(low, 16)


def per_minute(amount: float, seconds: float) -> float:
    return amount * 60.0 / seconds


def cost(off: float, on: float, more_is_better: bool) -> float:
    """What turning the sync on took from (TPS: ``more_is_better``) or added to (WAL) the
    sync-off figure, as a share of it: 0.07 is 7%; below zero, the sync-on run did better."""
    return (off - on) / off if more_is_better else (on - off) / off


class Postgres:
    """The stand-in's PostgreSQL on the master's GITLAB_HOME."""

    def __init__(self, r: Rig):
        for part in HOME_PARTS:
            (r.site.master.home / part).mkdir(exist_ok=True)
        tc = DockerContainer(STANDIN_IMAGE).with_exposed_ports(80)
        tc.with_name(f"gitlab-dr-bench-gitlab-{r.site.fs}-{r.cluster.tag}")
        tc.with_env("GITLAB_OMNIBUS_CONFIG", OMNIBUS_CONFIG)
        for part, inside in HOME_PARTS.items():
            tc.with_volume_mapping(str(r.site.master.home / part), inside, "rw")
        r.cluster.stack.enter_context(tc)
        self.node = SidecarNode("gitlab", tc)
        url = f"http://{tc.get_container_host_ip()}:{tc.get_exposed_port(80)}"
        gl.wait_ready(url, 300)

    def sql(self, query: str) -> str:
        return self.node.run(["gitlab-psql", "-XqtA", "-v", "ON_ERROR_STOP=1", "-c", query])

    def pgbench(self, *args: str) -> str:
        return self.node.run(
            ["sh", "-c", 'cd /tmp && exec "$@"', "-", *AS_PSQL, "pgbench", *SOCKET, *args, DATABASE]
        )

    def lsn(self) -> int:
        return lsn_bytes(self.sql("SELECT pg_current_wal_lsn()"))

    def run(self, seconds: float, clients: int) -> dict[str, float]:
        self.sql("CHECKPOINT")
        before = self.lsn()
        out = self.pgbench("-n", "-T", str(int(seconds)), "-c", str(clients), "-j", "2")
        wal = self.lsn() - before
        return {"tps": tps_of(out), "wal_mib_per_min": per_minute(wal / MIB, seconds)}


def measure(r: Rig) -> None:
    s = r.sizes
    r.say(f"pgbench: PostgreSQL on the master's tree, scale {s.pg_scale}")
    pg = Postgres(r)
    pg.pgbench("-i", "-q", "-s", str(s.pg_scale))
    runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    passes: list[str] = []
    overlapping = 0  # passes that ran during the sync-on runs: ended, or still going at the end
    for round_ in range(s.pg_rounds):
        runs["off"].append(pg.run(s.pg_seconds, s.pg_clients))
        r.start_daemon()
        before = r.logged_ids()
        runs["on"].append(pg.run(s.pg_seconds, s.pg_clients))
        still = 1 if r.master.status().get("in_progress") else 0
        during = r.passes_since(before)
        r.master.sync("stop")
        overlapping += len(during) + still
        passes += [f"{p.trigger} {p.outcome} {p.seconds:.2f} s: {p.note}" for p in during]
        r.say(
            f"pgbench {round_ + 1}/{s.pg_rounds}: off {runs['off'][-1]['tps']:.0f} TPS, "
            f"{runs['off'][-1]['wal_mib_per_min']:.0f} MiB WAL/min; on "
            f"{runs['on'][-1]['tps']:.0f} TPS, {runs['on'][-1]['wal_mib_per_min']:.0f} MiB "
            f"WAL/min, {len(during)} passes ended" + (", one still going" if still else "")
        )
    pg.node.run(["gitlab-ctl", "stop"])  # the restore after this sends a still tree
    median = {
        side: {
            k: stats.percentile([run[k] for run in done], 50) for k in ("tps", "wal_mib_per_min")
        }
        for side, done in runs.items()
    }
    detail: dict[str, Any] = {
        "runs": runs,
        "scale": s.pg_scale,
        "clients": s.pg_clients,
        "seconds": s.pg_seconds,
        "passes_while_on": overlapping,
        "passes": passes[:40],
    }
    label = f"{r.size}; pgbench -s {s.pg_scale} -c {s.pg_clients}, {s.pg_seconds:g} s"
    for key, name, unit, more_is_better in (
        ("tps", "PostgreSQL TPS with the sync on", "TPS", True),
        ("wal_mib_per_min", "PostgreSQL WAL with the sync on", "MiB/min", False),
    ):
        share = cost(median["off"][key], median["on"][key], more_is_better)
        r.add(
            Metric(
                name,
                label,
                median["on"][key],
                unit,
                {},
                {"sync off": median["off"][key], "cost (share of sync off)": share},
                f"costs under {TARGET_SHARE:.0%}",
                share < TARGET_SHARE,
                detail,
            )
        )
