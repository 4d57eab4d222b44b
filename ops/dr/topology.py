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

import dataclasses
from dataclasses import dataclass

from ops.aws import client as aws
from ops.aws import inventory
from ops.aws.inventory import PairState, Role
from ops.errors import SettingError
from ops.hosts.ssh import Host, host_for, parse_host
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


def ssh_address(settings: Settings, public_ip: str | None, private_ip: str | None) -> str | None:
    """Where an instance's SSH is reached from the operator's machine: its public address, or,
    through SSH_BASTION or with none (private subnets, reached over a VPN), its private one."""
    if public_ip and not settings.ssh_bastion:
        return public_ip
    return private_ip or public_ip


def instance_side(
    role: Role,
    settings: Settings,
    instance_id: str,
    public_ip: str | None,
    private_ip: str | None = None,
) -> Side:
    """The side for instance ``instance_id`` in ``role``: its address from INSTANCE_HOSTS (else
    :func:`ssh_address`, port 22) and the settings with the role's then the instance's
    overrides."""
    mine = settings.for_role(role).for_instance(instance_id)
    if not mine.metrics_bind and private_ip:
        # /metrics on the instance's private address: reachable by ADMIN_CIDR's Prometheus
        # through the security group, never published on a public address.
        mine = dataclasses.replace(mine, metrics_bind=private_ip)
    text = settings.instance_address(instance_id)
    address = ssh_address(settings, public_ip, private_ip)
    if text:
        host = parse_host(role, text, mine.ssh_user, f"INSTANCE_HOSTS: {instance_id}")
    elif address:
        host = Host(role, address, 22, mine.ssh_user)
    else:
        raise SettingError(_no_address(role, instance_id))
    return Side(role, host, mine, instance_id)


def _no_address(role: Role, instance_id: str) -> str:
    return f"the {role} instance {instance_id} has no address and INSTANCE_HOSTS does not name it"


@dataclass(frozen=True)
class Absent:
    """A role no reachable host fills, and why (a sentence)."""

    role: Role
    reason: str


def locate(role: Role, settings: Settings, state: PairState | None) -> Side | Absent:
    """The side in ``role``: from ``MASTER_HOST`` / ``SLAVE_HOST``, else the instance AWS tags
    so; Absent when there is none, or when the instance cannot be reached from here."""
    mine = settings.for_role(role)
    if getattr(mine, f"{role}_host"):
        return Side(role, host_for(role, mine), mine)
    instance = state.host(role) if state else None
    if instance is None:
        where = "AWS has no running instance tagged Role=" + role if state else "USE_AWS is false"
        return Absent(role, f"{role.upper()}_HOST is not set and {where}")
    address = ssh_address(settings, instance.public_ip, instance.private_ip)
    if not address and not settings.instance_address(instance.instance_id):
        return Absent(role, _no_address(role, instance.instance_id))
    return instance_side(
        role, settings, instance.instance_id, instance.public_ip, instance.private_ip
    )


def _side(role: Role, settings: Settings, state: PairState | None) -> Side:
    found = locate(role, settings, state)
    if isinstance(found, Absent):
        raise SettingError(found.reason)
    return found


def resolve(settings: Settings, state: PairState | None) -> Topology:
    """The pair's topology from the settings and, when given, AWS's view of it.

    Both sides must be there (``inv pair``); :func:`survey` is for any state of the pair.
    """
    master = _side("master", settings, state)
    slave = _side("slave", settings, state)
    # The slave side's own value: INSTANCE_OVERRIDES may say where each instance's receiver is.
    sync = slave.settings.slave_sync_address
    if not sync:
        instance = state.host("slave") if state else None
        if instance is None or not instance.private_ip:
            raise SettingError("SLAVE_SYNC_ADDRESS is not set and AWS has no slave private address")
        sync = f"{instance.private_ip}:{slave.settings.sync_port}"
    return Topology(master, slave, sync, epoch_of(state), state)


def epoch_of(state: PairState | None) -> int:
    """The pair's epoch: AWS's, or 1 before any (or without AWS)."""
    return state.epoch if state and state.epoch else 1


@dataclass(frozen=True)
class Survey:
    """The pair in whatever state it is: each role's side, or why there is none to reach.

    A side is Absent when no host has the role (no slave yet after a promotion; a master
    missing) or when AWS says its instance is not running (stopped, pending).
    """

    master: Side | Absent
    slave: Side | Absent
    epoch: int
    aws: PairState | None

    @property
    def sides(self) -> tuple[Side | Absent, Side | Absent]:
        return (self.master, self.slave)


def _reachable(role: Role, settings: Settings, state: PairState | None) -> Side | Absent:
    found = locate(role, settings, state)
    instance = state.host(role) if state else None
    from_aws = isinstance(found, Absent) or found.instance_id is not None
    if instance and instance.state != "running" and from_aws:
        return Absent(role, f"instance {instance.instance_id} is {instance.state}")
    return found


def survey(settings: Settings, state: PairState | None) -> Survey:
    """Both roles as far as they can be found: never raises for a missing or stopped host."""
    return Survey(
        _reachable("master", settings, state),
        _reachable("slave", settings, state),
        epoch_of(state),
        state,
    )
