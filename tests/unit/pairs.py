"""Pair states, host views and sandbox-like settings for the unit tests (no AWS, no Docker).

Small factories, as patroni's ``tests/test_ha.py`` builds cluster views: each gives a healthy
default and takes only what a test changes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

from gitlab_sync.config import iso
from gitlab_sync.status import PassSummary, SidecarStatus
from ops import settings as settings_mod
from ops.aws.inventory import ElasticIp, Instance, PairState
from ops.dr.hostview import HostView
from ops.dr.promotion_view import View
from ops.hosts.engine import ServiceState
from ops.settings import Settings

A, B = "i-0aaaaaaaaaaaaaaaa", "i-0bbbbbbbbbbbbbbbb"
NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
IMAGE = "gitlab/gitlab-ce:17.8.1-ce.0"


def settings_of(**values: str) -> Settings:
    return settings_mod.load(values, env_file=Path("/nonexistent/gitlab-dr-test.env"))


def instance(
    instance_id: str,
    role: str,
    groups: tuple[str, ...] = (),
    state: str = "running",
    epoch: int = 1,
) -> Instance:
    """An instance of the project, with addresses that tell A from B."""
    return Instance(
        instance_id=instance_id,
        role=role,
        state=state,
        zone="eu-west-1a",
        public_ip="203.0.113." + ("1" if instance_id == A else "2"),
        private_ip="10.0.0." + ("1" if instance_id == A else "2"),
        security_groups=groups,
        epoch=epoch,
        name=f"gitlab-dr-{role}",
        imdsv2_required=True,
        volumes_keep=(),
    )


def state_of(*hosts: Instance, holder: str | None = None) -> PairState:
    """A pair state with these instances and the Elastic IP on ``holder``."""
    return PairState(
        project="gitlab-dr",
        region="eu-west-1",
        hosts=hosts,
        volumes=(),
        elastic_ips=(ElasticIp("eipalloc-1", "198.51.100.7", holder),),
    )


def pair(master: str, slave: str, holder: str | None = None) -> PairState:
    """A master in gitlab-open and a slave in gitlab-slave, both running."""
    return state_of(
        instance(master, "master", ("gitlab-open",)),
        instance(slave, "slave", ("gitlab-slave",)),
        holder=holder,
    )


def promoted(master: str, fenced: str, fenced_state: str = "stopped") -> PairState:
    """After a promotion, before rebuild-slave: a master at epoch 2 and the old one fenced."""
    return state_of(
        instance(master, "master", ("gitlab-open",), epoch=2),
        instance(fenced, "fenced", ("gitlab-slave",), state=fenced_state, epoch=2),
        holder=master,
    )


def passed(started: dt.datetime, snapshot: str = "S") -> PassSummary:
    """A complete pass that began at ``started``."""
    return PassSummary(snapshot=snapshot, started_at=iso(started), outcome="ok")


def sidecar(role: str | None, started: dt.datetime | None = None, **fields: Any) -> SidecarStatus:
    """A running, paired sidecar at epoch 1 whose last complete pass began at ``started``
    (two minutes before NOW by default)."""
    values: dict[str, Any] = {
        "role": role,
        "peer": "m:2222" if role else None,
        "epoch": 1 if role else None,
        "running": role is not None,
        "daemon_alive": True,
        "last_complete": passed(started or NOW - dt.timedelta(minutes=2)),
        "snapshots": 3,
        "current": "S",
    }
    if role == "slave":
        values |= {"secrets_present": True, "last_contact": iso(NOW - dt.timedelta(seconds=12))}
    return SidecarStatus(**(values | fields))


def service(name: str, state: str, health: str | None = None, image: str = IMAGE) -> ServiceState:
    return ServiceState(name, f"gitlab-dr-{name}-1", "id-" + name, state, health, image)


def master_view(**changes: Any) -> HostView:
    """A reachable master: GitLab running and healthy, sending."""
    view = HostView(
        "master",
        "admin@m:22",
        "",
        (service("gitlab", "running", "healthy"), service("gitlab-rsync", "running", "healthy")),
        sidecar("master"),
    )
    return dataclasses.replace(view, **changes)


def slave_view(**changes: Any) -> HostView:
    """A reachable slave: GitLab created, not started; receiving."""
    view = HostView(
        "slave",
        "admin@s:22",
        "",
        (service("gitlab", "created"), service("gitlab-rsync", "running", "healthy")),
        sidecar("slave"),
    )
    return dataclasses.replace(view, **changes)


def unreachable(role: str, why: str = "unreachable: connection refused") -> HostView:
    return HostView(role, f"admin@{role[0]}:22", f"{role} (admin@{role[0]}:22): {why}")


def missing(role: str, why: str) -> HostView:
    """A role no host fills (``inv status`` shows why)."""
    return HostView(role, "", why)


def promotion_view(
    master: HostView | None = None,
    slave: HostView | None = None,
    snapshot_age: float | None = 30,
    **changes: Any,
) -> View:
    """A promotion's view: the master dead (its instance stopped), a healthy fresh slave."""
    if slave is None:
        status = sidecar("slave", NOW - dt.timedelta(seconds=snapshot_age or 0))
        if snapshot_age is None:
            status = dataclasses.replace(status, last_complete=None, current=None)
        slave = slave_view(sync=status)
    view = View(
        epoch=3,
        master_id="i-master",
        slave_id="i-slave",
        master=master or missing("master", "instance i-master is stopped"),
        slave=slave,
        wanted_image=IMAGE,
        now=NOW,
    )
    return dataclasses.replace(view, **changes)


SANDBOX = {
    "INSTANCE_HOSTS": f"{A}=127.0.0.1:32001 {B}=127.0.0.1:32002",
    "INSTANCE_OVERRIDES": (
        f"{A}:PROJECT_NAME=sb-a {A}:SYNC_PORT=40001 {A}:SLAVE_SYNC_ADDRESS=172.17.0.1:40001 "
        f"{B}:PROJECT_NAME=sb-b {B}:SYNC_PORT=40002 {B}:SLAVE_SYNC_ADDRESS=172.17.0.1:40002"
    ),
}
