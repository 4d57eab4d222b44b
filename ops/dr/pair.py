"""``inv pair``: the hand-written "set up rsync between master and slave", automated.

On both hosts the sidecar is deployed and asked for the host's layout: ``inv pair`` refuses,
before anything is paired, when btrfs is set up wrongly on either, and says which host runs the
fallback. Then, while the slave's GitLab is created (not started), the sidecars' public keys
are exchanged (the slave accepts the master's client key; the master pins the slave's host key)
and GitLab is started on the master and its health check awaited (so the first snapshot holds
an initialised GitLab: its secrets, its database); sync is started on the master, and the first
complete pass is awaited. The two hosts' deploys run at once (one Compose run each). Every
step looks before it acts, so running it again repairs what is missing and changes nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from gitlab_sync.layout import Layout
from gitlab_sync.status import SidecarStatus
from gitlab_sync.waits import wait_until
from ops.dr import layouts, sidecar, topology
from ops.dr.topology import Topology
from ops.errors import Refusal, SidecarError
from ops.hosts.engine import Engine
from ops.progress import Progress
from ops.settings import Settings


@dataclass
class PairResult:
    """What ``pair`` did (``changed``) and the sidecars' status when it ended."""

    topology: Topology
    changed: list[str] = field(default_factory=list)
    master_status: SidecarStatus = field(default_factory=SidecarStatus)
    slave_status: SidecarStatus = field(default_factory=SidecarStatus)
    master_layout: Layout | None = None
    slave_layout: Layout | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "changed": self.changed,
            "epoch": self.topology.epoch,
            "sync_address": self.topology.sync_address,
            "master": {
                "host": str(self.topology.master.host),
                "sync": self.master_status.to_json(),
                "layout": self.master_layout.to_json() if self.master_layout else None,
            },
            "slave": {
                "host": str(self.topology.slave.host),
                "sync": self.slave_status.to_json(),
                "layout": self.slave_layout.to_json() if self.slave_layout else None,
            },
            "notes": layouts.notes(self.master_layout, self.slave_layout)
            if self.master_layout and self.slave_layout
            else [],
        }


def needs_pairing(
    current: dict[str, Any] | None, role: str, peer: str, key: str, epoch: int
) -> bool:
    """Whether the sidecar's pairing (``gitlab-sync ls``) differs from the one wanted."""
    if not current:
        return True
    return not (
        current.get("role") == role
        and current.get("peer") == peer
        and current.get("epoch") == epoch
        and sidecar.same_key(str(current.get("peer_key", "")), key)
    )


def host_layout(engine: Engine, progress: Progress) -> Layout:
    """The host's layout as its sidecar sees it. Wrong, the sidecar is restarted and asked
    again: a running container keeps the folders it mounted when it started, so a GITLAB_HOME
    since made a subvolume in the old folder's place would otherwise stay unseen."""
    found = sidecar.layout(engine)
    if found.problems:
        progress(
            f"{engine.host}: its sidecar sees btrfs set up wrongly; restarting it to look again"
        )
        sidecar.restart(engine)
        found = sidecar.layout(engine)
    return found


def check_layouts(master: Engine, slave: Engine, progress: Progress) -> tuple[Layout, Layout]:
    """Both hosts' layouts, said; a Refusal, before anything is paired or started, when btrfs
    is set up wrongly on either (its operator meant snapshots from one instant)."""
    found = {"master": host_layout(master, progress), "slave": host_layout(slave, progress)}
    refused = layouts.refusal({str(master.host): found["master"], str(slave.host): found["slave"]})
    if refused:
        raise Refusal(refused)
    for role, layout in found.items():
        progress(layouts.line(role, layout))
    for note in layouts.notes(found["master"], found["slave"]):
        progress(note)
    return found["master"], found["slave"]


def _peer(address: str, default_port: int) -> str:
    """``host:port`` as gitlab-sync stores peers."""
    host, _, port = address.rpartition(":") if address.count(":") == 1 else (address, "", "")
    return f"{host}:{port}" if port else f"{address}:{default_port}"


def pair(
    settings: Settings,
    progress: Progress,
    timeout: float = 600.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> PairResult:
    """Pair master and slave and wait for the first complete pass (at most ``timeout`` s)."""
    topo = topology.resolve(settings, topology.read_aws(settings))
    result = PairResult(topo)
    progress(f"master {topo.master.host}, slave {topo.slave.host}, epoch {topo.epoch}")
    with (
        Engine.open(topo.slave.host, topo.slave.settings) as slave,
        Engine.open(topo.master.host, topo.master.settings) as master,
        ThreadPoolExecutor(2, thread_name_prefix="gitlab-dr-pair") as pool,
    ):
        progress("deploying gitlab-rsync and gitlab-verify on both hosts")
        services = [sidecar.SERVICE, sidecar.VERIFIER]
        _together(pool, lambda: slave.up(services), lambda: master.up(services))
        result.master_layout, result.slave_layout = check_layouts(master, slave, progress)
        progress("slave: deploying GitLab (created, not started)")
        created = pool.submit(slave.create, [sidecar.GITLAB])  # while the master's GitLab starts
        _exchange_keys(topo, master, slave, result)
        if not any(s.service == sidecar.GITLAB and s.state == "running" for s in master.ps()):
            master.up([sidecar.GITLAB])
            result.changed.append("master: GitLab started")
        # The first snapshot must be of a GitLab that has made its data (secrets, database).
        progress("master: waiting for GitLab's health check")
        sidecar.wait_gitlab_healthy(master, timeout, clock, sleep)
        created.result()
        if not_started := sidecar.stop_slave_gitlab(slave):
            result.changed.append(not_started)
        current = sidecar.run_json(master, "ls")
        if not current or not current.get("running"):
            sidecar.run(master, "start")
            result.changed.append("master: sync started")
        for line in result.changed:
            progress(line)
        if not result.changed:
            progress("nothing to change: already paired")
        result.master_status = _wait_first_pass(master, progress, timeout, clock, sleep)
        result.slave_status = sidecar.status(slave)
    return result


def _together(pool: ThreadPoolExecutor, *calls: Callable[[], object]) -> None:
    """Run ``calls`` at once (one per host: each drives its own engine), wait for all of them,
    then raise the first one's error, if any: nothing is left running on either host."""
    futures = [pool.submit(call) for call in calls]
    wait(futures)
    for future in futures:
        future.result()


def _exchange_keys(topo: Topology, master: Engine, slave: Engine, result: PairResult) -> None:
    """The slave accepts the master's client key, the master pins the slave's host key: each
    pairing written only when it differs from the one wanted."""
    master_peer = _peer(topo.master.host.address, topo.master.settings.sync_port)
    slave_peer = _peer(topo.sync_address, topo.slave.settings.sync_port)
    master_key = sidecar.run_json(master, "key")["client"]
    slave_key = sidecar.run_json(slave, "key")["host"]
    wanted = (
        (slave, "slave", master_peer, master_key, "slave: accepts the master's key"),
        (
            master,
            "master",
            slave_peer,
            slave_key,
            f"master: sends to {slave_peer}, pinning the slave's host key",
        ),
    )
    for engine, role, peer, key, change in wanted:
        if needs_pairing(sidecar.run_json(engine, "ls"), role, peer, key, topo.epoch):
            sidecar.add(engine, peer, role, key, topo.epoch)
            result.changed.append(change)


def _wait_first_pass(
    master: Engine,
    progress: Progress,
    timeout: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> SidecarStatus:
    shown: list[str] = []
    seen: list[SidecarStatus] = []

    def complete() -> bool:
        seen.append(sidecar.status(master))
        if seen[-1].last_complete:
            return True
        line = _waiting(seen[-1])
        if line not in shown[-1:]:
            progress(line)
            shown.append(line)
        return False

    wait_until(
        complete,
        timeout=timeout,
        what="the first complete pass",
        interval=1.0,
        error=lambda _: SidecarError(f"no complete pass after {timeout:g} s: {shown[-1]}"),
        clock=clock,
        sleep=sleep,
    )
    last = seen[-1].last_complete
    if last:  # always, once complete() said so
        progress(
            f"complete pass {last.snapshot}: {last.files} files, "
            f"{last.bytes} bytes in {last.duration_s} s"
        )
    return seen[-1]


def _waiting(status: SidecarStatus) -> str:
    """What the first pass is doing, in a line."""
    now = status.in_progress
    line = f"first pass in progress since {now.started_at}" if now else "waiting for the first pass"
    if status.last_error:
        line += f" (last error: {status.last_error.message})"
    return line
