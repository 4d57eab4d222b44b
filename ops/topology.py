"""Which host is master, which is slave, how to reach them, and the pair's epoch.

Read from AWS (instance tags and addresses) unless ``USE_AWS=false``; ``MASTER_HOST``,
``SLAVE_HOST`` and ``SLAVE_SYNC_ADDRESS`` override the addresses, and ``*_OVERRIDES`` the
settings of one host (the sandbox runs both stacks on one engine).
"""

from __future__ import annotations

from dataclasses import dataclass

from ops import aws, inventory
from ops.errors import SettingError
from ops.hosts import Host, host_for
from ops.inventory import PairState, Role
from ops.settings import Settings


@dataclass(frozen=True)
class Side:
    """One host of the pair: its role, how to reach its engine, and its settings."""

    role: Role
    host: Host
    settings: Settings


@dataclass(frozen=True)
class Topology:
    master: Side
    slave: Side
    sync_address: str  # where the master's sidecar sends: host:port of the slave's receiver
    epoch: int
    aws: PairState | None

    @property
    def sides(self) -> tuple[Side, Side]:
        return (self.master, self.slave)


def read_aws(settings: Settings) -> PairState | None:
    """The pair as AWS holds it, or None when ``USE_AWS`` is false."""
    if not settings.use_aws:
        return None
    return inventory.describe_pair(settings, aws.ec2_client(settings))


def _side(role: Role, settings: Settings, state: PairState | None) -> Side:
    mine = settings.for_role(role)
    if getattr(mine, f"{role}_host"):
        return Side(role, host_for(role, mine), mine)
    instance = state.host(role) if state else None
    if instance is None or not instance.public_ip:
        where = "AWS has no running instance tagged Role=" + role if state else "USE_AWS is false"
        raise SettingError(f"{role.upper()}_HOST is not set and {where}")
    return Side(role, Host(role, instance.public_ip, 22, mine.ssh_user), mine)


def resolve(settings: Settings, state: PairState | None) -> Topology:
    """The pair's topology from the settings and, when given, AWS's view of it."""
    master = _side("master", settings, state)
    slave = _side("slave", settings, state)
    sync = settings.slave_sync_address
    if not sync:
        instance = state.host("slave") if state else None
        if instance is None or not instance.private_ip:
            raise SettingError("SLAVE_SYNC_ADDRESS is not set and AWS has no slave private address")
        sync = f"{instance.private_ip}:{slave.settings.sync_port}"
    epoch = state.epoch if state and state.epoch else 1
    return Topology(master, slave, sync, epoch, state)
