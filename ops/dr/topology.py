"""Which host is master, which is slave, how to reach them, and the pair's epoch.

Read from AWS (instance tags and addresses) unless ``USE_AWS=false``; ``MASTER_HOST``,
``SLAVE_HOST`` and ``SLAVE_SYNC_ADDRESS`` override the addresses, and ``*_OVERRIDES`` the
settings of one host.

In AWS the roles move between instances at each promotion, so what belongs to a machine is
keyed by its instance id, not by its role: ``INSTANCE_HOSTS`` says where an instance's SSH is
when it is not at its public address, and ``INSTANCE_OVERRIDES`` which settings differ on it
(the sandbox runs both "instances" on one engine, with their own project names, folders and
ports). After the Role tags swap, :func:`resolve` still reaches the right engine with the right
settings. The settings of a side are, in order: the file, the role's overrides, the instance's.
"""

from __future__ import annotations

from dataclasses import dataclass

from ops.aws import client as aws
from ops.aws import inventory
from ops.aws.inventory import PairState, Role
from ops.errors import SettingError
from ops.hosts.engine import Host, host_for, parse_host
from ops.settings import Settings


@dataclass(frozen=True)
class Side:
    """One host of the pair: its role, how to reach its engine, and its settings."""

    role: Role
    host: Host
    settings: Settings
    instance_id: str | None = None
    """The instance in this role, when AWS said which (None with MASTER_HOST / SLAVE_HOST)."""


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


def instance_side(role: Role, settings: Settings, instance_id: str, public_ip: str | None) -> Side:
    """The side for instance ``instance_id`` in ``role``: its address from INSTANCE_HOSTS (else
    its public address, port 22) and the settings with the role's then the instance's
    overrides."""
    mine = settings.for_role(role).for_instance(instance_id)
    text = settings.instance_address(instance_id)
    if text:
        host = parse_host(role, text, mine.ssh_user, f"INSTANCE_HOSTS: {instance_id}")
    elif public_ip:
        host = Host(role, public_ip, 22, mine.ssh_user)
    else:
        raise SettingError(
            f"the {role} instance {instance_id} has no public address and INSTANCE_HOSTS "
            "does not name it"
        )
    return Side(role, host, mine, instance_id)


def _side(role: Role, settings: Settings, state: PairState | None) -> Side:
    mine = settings.for_role(role)
    if getattr(mine, f"{role}_host"):
        return Side(role, host_for(role, mine), mine)
    instance = state.host(role) if state else None
    if instance is None:
        where = "AWS has no running instance tagged Role=" + role if state else "USE_AWS is false"
        raise SettingError(f"{role.upper()}_HOST is not set and {where}")
    return instance_side(role, settings, instance.instance_id, instance.public_ip)


def resolve(settings: Settings, state: PairState | None) -> Topology:
    """The pair's topology from the settings and, when given, AWS's view of it."""
    master = _side("master", settings, state)
    slave = _side("slave", settings, state)
    # The slave side's own value: INSTANCE_OVERRIDES may say where each instance's receiver is.
    sync = slave.settings.slave_sync_address
    if not sync:
        instance = state.host("slave") if state else None
        if instance is None or not instance.private_ip:
            raise SettingError("SLAVE_SYNC_ADDRESS is not set and AWS has no slave private address")
        sync = f"{instance.private_ip}:{slave.settings.sync_port}"
    epoch = state.epoch if state and state.epoch else 1
    return Topology(master, slave, sync, epoch, state)
