"""``inv launch``: create or find the pair in AWS, idempotently, by tags.

Three steps, so that ``--dry-run`` and the tests can stop between them:

1. :func:`read_world` checks what must hold before anything is created (the AMI, the zones,
   the default VPC and its subnets, the instance type, the key pair) and reads what exists:
   the two security groups by name, the instances, data volumes and Elastic IP by tags.
2. :func:`make_plan` is pure: from the settings and that snapshot it lists the actions, each
   with the reason it is needed, or refuses with a sentence.
3. :func:`apply` performs the actions in order. Every resource is tagged in the call that
   creates it, so a run cut short leaves only resources the next run finds and finishes:
   an instance without its data volume, a volume tagged ``DataFor=<instance>`` but not
   attached, an Elastic IP tagged with the project but not associated.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, cast

from ops.aws.client import aws_errors, ec2_client, error_code, tag_spec, tags_of, waiter_config
from ops.aws.inventory import (
    OPEN_GROUP,
    ROLES,
    SLAVE_GROUP,
    TAG_DATA_FOR,
    TAG_EPOCH,
    TAG_NAME,
    TAG_PROJECT,
    TAG_ROLE,
    Instance,
    PairState,
    Role,
    describe_pair,
)
from ops.errors import AwsError, Refusal, SettingError
from ops.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.literals import InstanceTypeType
    from mypy_boto3_ec2.type_defs import (
        IpPermissionTypeDef,
        IpRangeTypeDef,
        Ipv6RangeTypeDef,
        PrefixListIdTypeDef,
        SecurityGroupRuleTypeDef,
        UserIdGroupPairTypeDef,
    )

GROUPS = (OPEN_GROUP, SLAVE_GROUP)
GROUP_OF_ROLE: dict[str, str] = {"master": OPEN_GROUP, "slave": SLAVE_GROUP}
GROUP_DESCRIPTIONS = {
    OPEN_GROUP: "gitlab-dr: GitLab open to its clients (the master)",
    SLAVE_GROUP: "gitlab-dr: closed GitLab, sync port from the master only (the slave)",
}
ADMIN_SSH_PORT = 22
DATA_DEVICE = "/dev/sdf"
DATA_VOLUME_TYPE: Final = "gp3"
WORLD = ("0.0.0.0/0", "::/0")

RuleKind = Literal["cidr", "group", "prefix-list"]


@dataclass(frozen=True)
class Rule:
    """One ingress rule: a protocol, a port range and one source.

    ``source`` is a CIDR, a security group (by name when it is one of ours, else by id) or a
    prefix list id. The description is not part of a rule's identity.
    """

    port_from: int
    port_to: int
    source: str
    kind: RuleKind = "cidr"
    protocol: str = "tcp"
    description: str = field(default="", compare=False)
    rule_id: str = field(default="", compare=False)
    """The rule's id in AWS, for a rule read from there."""

    def text(self) -> str:
        """``tcp 22 from 192.0.2.0/24``, ``tcp 2222 from security group gitlab-open``."""
        if self.protocol == "-1":
            what = "all traffic"
        else:
            ports = (
                str(self.port_from)
                if self.port_from == self.port_to
                else f"{self.port_from}-{self.port_to}"
            )
            what = f"{self.protocol} {ports}"
        source = {"cidr": "", "group": "security group ", "prefix-list": "prefix list "}
        return f"{what} from {source[self.kind]}{self.source}"

    def covers(self, port: int) -> bool:
        """Whether the rule lets ``port`` in over TCP."""
        if self.protocol == "-1":
            return True
        return self.protocol in ("tcp", "6") and self.port_from <= port <= self.port_to


@dataclass(frozen=True)
class Group:
    """A security group as found: its name, id, Project tag and ingress rules."""

    name: str
    group_id: str
    project: str
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class Ami:
    """The image the instances start from."""

    image_id: str
    name: str
    state: str


@dataclass(frozen=True)
class World:
    """What AWS holds that the launch depends on, read before anything is created."""

    region: str
    vpc_id: str
    zones: tuple[str, str]
    subnets: tuple[tuple[str, str], ...]
    """(zone, default subnet id) for each of the two zones."""
    ami: Ami
    groups: tuple[Group, ...]
    pair: PairState

    def group(self, name: str) -> Group | None:
        """The security group called ``name`` in the VPC, if it exists."""
        return next((g for g in self.groups if g.name == name), None)

    def subnet(self, zone: str) -> str:
        """The default subnet of ``zone``."""
        return dict(self.subnets)[zone]


ActionKind = Literal[
    "create-group",
    "tag-group",
    "authorize",
    "revoke",
    "run-instance",
    "require-imdsv2",
    "create-volume",
    "attach-volume",
    "keep-volume",
    "allocate-eip",
    "associate-eip",
]

_VERBS: dict[str, str] = {
    "create-group": "create",
    "tag-group": "tag",
    "authorize": "allow",
    "revoke": "revoke",
    "run-instance": "launch",
    "require-imdsv2": "require IMDSv2 on",
    "create-volume": "create",
    "attach-volume": "attach",
    "keep-volume": "keep on termination",
    "allocate-eip": "allocate",
    "associate-eip": "associate",
}


@dataclass(frozen=True)
class Action:
    """One step of a launch: what it does, to what, and why."""

    kind: ActionKind
    target: str
    reason: str
    group: str = ""
    rule: Rule | None = None
    role: Role | None = None
    zone: str = ""
    resource_id: str = ""
    """The existing resource the step acts on, when it exists before the run."""

    def text(self) -> str:
        """``create security group gitlab-open: it does not exist``."""
        return f"{_VERBS[self.kind]} {self.target}: {self.reason}"


@dataclass(frozen=True)
class Found:
    """A resource that exists already and is kept."""

    what: str
    resource_id: str
    detail: str

    def text(self) -> str:
        """``master instance i-0abc: running in eu-west-1a, epoch 1``."""
        return f"{self.what} {self.resource_id}: {self.detail}"


@dataclass(frozen=True)
class LaunchPlan:
    """What a launch would do: the snapshot it was computed from, the steps and the notes."""

    settings: Settings
    world: World
    epoch: int
    zone_of: tuple[tuple[str, str], ...]
    """(role, zone) for the instances to create."""
    found: tuple[Found, ...]
    actions: tuple[Action, ...]
    notes: tuple[str, ...]

    @property
    def complete(self) -> bool:
        """True when there is nothing left to do."""
        return not self.actions

    def lines(self, steps: bool = True) -> list[str]:
        """The plan for a person (``steps=False``: without its list of steps)."""
        w = self.world
        out = [
            f"launch plan for project {self.settings.project_name} in {w.region} "
            f"({w.vpc_id}, zones {w.zones[0]} and {w.zones[1]}, AMI {w.ami.image_id})"
        ]
        if self.found:
            out.append("found:")
            out.extend(f"  {f.text()}" for f in self.found)
        if not self.actions:
            out.append("nothing to do: the pair is complete")
        elif steps:
            out.append(f"to do ({len(self.actions)} steps):")
            out.extend(f"  {n}. {a.text()}" for n, a in enumerate(self.actions, 1))
        out.extend(f"note: {note}" for note in self.notes)
        return out

    def to_dict(self) -> dict[str, Any]:
        """The plan for a machine."""
        w = self.world
        return {
            "project": self.settings.project_name,
            "region": w.region,
            "vpc_id": w.vpc_id,
            "zones": list(w.zones),
            "ami_id": w.ami.image_id,
            "epoch": self.epoch,
            "found": [
                {"what": f.what, "id": f.resource_id, "detail": f.detail} for f in self.found
            ],
            "actions": [
                {"kind": a.kind, "target": a.target, "reason": a.reason, "text": a.text()}
                for a in self.actions
            ],
            "notes": list(self.notes),
        }


# --- the declared rules -------------------------------------------------------------------


def _cidr_rule(port: int, cidr: str, description: str) -> Rule:
    return Rule(port, port, cidr, "cidr", "tcp", description)


def desired_rules(settings: Settings) -> dict[str, tuple[Rule, ...]]:
    """The ingress rules of each group, from the settings.

    ``gitlab-open`` (the master): GitLab's client ports from ``CLIENT_CIDRS`` and admin SSH
    from ``ADMIN_CIDR``. ``gitlab-slave`` (the slave, and a fenced old master): the sync port
    from the ``gitlab-open`` group only (a group-to-group rule: the master's private
    address, whatever it is) and admin SSH from ``ADMIN_CIDR``.
    """
    client_ports = client_port_names(settings)
    for name, _, port in client_ports:
        if port in (ADMIN_SSH_PORT, settings.sync_port):
            which = "admin SSH port" if port == ADMIN_SSH_PORT else "sync port (SYNC_PORT)"
            raise SettingError(
                f"{name} is {port}, the {which}: GitLab's client ports are opened to "
                f"CLIENT_CIDRS, so choose another port"
            )
    admin = _cidr_rule(ADMIN_SSH_PORT, settings.admin_cidr, "gitlab-dr: admin SSH")
    open_rules: list[Rule] = []
    for _, label, port in client_ports:
        for cidr in settings.client_cidrs:
            open_rules.append(_cidr_rule(port, cidr, f"gitlab-dr: {label} from clients"))
    open_rules.append(admin)
    sync = Rule(
        settings.sync_port,
        settings.sync_port,
        OPEN_GROUP,
        "group",
        "tcp",
        "gitlab-dr: sync from the master",
    )
    return {
        OPEN_GROUP: tuple(dict.fromkeys(open_rules)),
        SLAVE_GROUP: (sync, admin),
    }


def client_port_names(settings: Settings) -> tuple[tuple[str, str, int], ...]:
    """GitLab's client-facing ports: (setting, what it serves, port)."""
    return (
        ("GITLAB_HTTP_PORT", "GitLab HTTP", settings.gitlab_http_port),
        ("GITLAB_HTTPS_PORT", "GitLab HTTPS", settings.gitlab_https_port),
        ("GITLAB_SSH_PORT", "git over SSH", settings.gitlab_ssh_port),
        ("GITLAB_REGISTRY_PORT", "container registry", settings.gitlab_registry_port),
    )


def _extra_reason(rule: Rule, settings: Settings) -> str:
    guarded = [p for p in (ADMIN_SSH_PORT, settings.sync_port) if rule.covers(p)]
    if rule.kind == "cidr" and rule.source in WORLD and guarded:
        return f"it is not declared and opens port {guarded[0]} to the whole internet"
    return "it is not declared in the settings"


# --- the plan (pure) ---------------------------------------------------------------------


def pick_zones(wanted: tuple[str, ...], available: tuple[str, ...], region: str) -> tuple[str, str]:
    """The two zones for the pair: ``AVAILABILITY_ZONES`` if set, else the region's first two."""
    if wanted:
        missing = [z for z in wanted if z not in available]
        if missing:
            raise SettingError(
                f"AVAILABILITY_ZONES names {', '.join(missing)}, which "
                f"{'is' if len(missing) == 1 else 'are'} not an available zone of {region} "
                f"(available: {', '.join(available) or 'none'})"
            )
        return wanted[0], wanted[1]
    if len(available) < 2:
        raise AwsError(
            f"{region} has {len(available)} available zone(s) ({', '.join(available) or 'none'}); "
            f"the master and the slave need two different ones"
        )
    return available[0], available[1]


def make_plan(settings: Settings, world: World) -> LaunchPlan:
    """The steps that take what exists to the declared pair, each with its reason."""
    problems = world.pair.problems()
    if problems:
        raise Refusal("; ".join(problems))
    out = _Draft()
    _plan_groups(settings, world, out)
    epoch, zone_of = _plan_instances(settings, world, out)
    _plan_elastic_ip(settings, world.pair, out)
    return LaunchPlan(
        settings=settings,
        world=world,
        epoch=epoch,
        zone_of=tuple(zone_of.items()),
        found=tuple(out.found),
        actions=tuple(out.actions),
        notes=tuple(out.notes),
    )


@dataclass
class _Draft:
    """A plan being written: what was found, the steps, the notes."""

    found: list[Found] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _plan_groups(settings: Settings, world: World, out: _Draft) -> None:
    # Groups before instances: the instances start in them, and gitlab-slave refers to
    # gitlab-open. Extra rules are revoked: the groups hold exactly what the settings say.
    project = settings.project_name
    rules = desired_rules(settings)
    for name in GROUPS:
        group = world.group(name)
        target = f"security group {name}"
        if group is None:
            reason = f"it does not exist in {world.vpc_id}"
            out.actions.append(Action("create-group", target, reason, name))
            continue
        if group.project and group.project != project:
            raise Refusal(
                f"security group {name} ({group.group_id}) in {world.vpc_id} is tagged "
                f"Project={group.project}, not {project}: it belongs to another pair"
            )
        out.found.append(Found(target, group.group_id, f"in {world.vpc_id}"))
        if not group.project:
            reason = f"it exists without a Project tag; it is adopted as {project}'s"
            out.actions.append(
                Action("tag-group", target, reason, name, resource_id=group.group_id)
            )
    for name in GROUPS:
        group = world.group(name)
        existing = group.rules if group else ()
        for rule in rules[name]:
            if rule not in existing:
                why = "the group is new" if group is None else "the rule is missing"
                out.actions.append(Action("authorize", f"{rule.text()} on {name}", why, name, rule))
        for rule in existing:
            if rule not in rules[name]:
                why = _extra_reason(rule, settings)
                out.actions.append(Action("revoke", f"{rule.text()} on {name}", why, name, rule))


def _plan_instances(settings: Settings, world: World, out: _Draft) -> tuple[int, dict[str, str]]:
    # The master before the slave, so that a run cut short never leaves a lone slave.
    project = settings.project_name
    pair = world.pair
    master, slave = pair.master, pair.slave
    if master is None and slave is not None:
        raise Refusal(
            f"the slave {slave.instance_id} exists but no live instance is tagged "
            f"Project={project} Role=master: promote the slave (inv promote-slave) instead of "
            f"launching an empty master next to it"
        )
    epoch = pair.epoch or 1
    master_zone = master.zone if master else world.zones[0]
    slave_zone = slave.zone if slave else next(z for z in world.zones if z != master_zone)
    if master and slave and master.zone == slave.zone:
        out.notes.append(
            f"the master and the slave are both in {master.zone}: one zone outage takes both"
        )
    zone_of = {"master": master_zone, "slave": slave_zone}
    hosts = {"master": master, "slave": slave}
    for role in ROLES:
        host = hosts[role]
        if host is None:
            reason = (
                f"no live instance is tagged Project={project} Role={role}; it starts in "
                f"{zone_of[role]} with {GROUP_OF_ROLE[role]}, epoch {epoch}"
            )
            out.actions.append(
                Action(
                    "run-instance",
                    f"the {role} instance",
                    reason,
                    GROUP_OF_ROLE[role],
                    role=role,
                    zone=zone_of[role],
                )
            )
            continue
        groups = ", ".join(host.security_groups) or "none"
        epoch_text = "untagged" if host.epoch is None else str(host.epoch)
        out.found.append(
            Found(
                f"{role} instance",
                host.instance_id,
                f"{host.state} in {host.zone}, groups {groups}, epoch {epoch_text}",
            )
        )
        if host.state != "running":
            out.notes.append(
                f"the {role} instance {host.instance_id} is {host.state}; launch leaves it so"
            )
        if not host.imdsv2_required:
            out.actions.append(
                Action(
                    "require-imdsv2",
                    f"the {role} instance {host.instance_id}",
                    "its metadata service accepts requests without a token (IMDSv1)",
                    role=role,
                    resource_id=host.instance_id,
                )
            )
    for role in ROLES:
        _plan_volume(role, pair, hosts[role], zone_of[role], out)
    live = {h.instance_id for h in pair.hosts}
    for volume in pair.volumes:
        if volume.data_for not in live and volume.attached_to is None:
            out.notes.append(
                f"data volume {volume.volume_id} ({volume.zone}) belonged to {volume.data_for}, "
                f"which is gone; it is kept and may hold GitLab data"
            )
    return epoch, zone_of


def _plan_volume(
    role: Role, pair: PairState, host: Instance | None, zone: str, out: _Draft
) -> None:
    # A data volume belongs to its instance by the DataFor tag it gets when it is created, so
    # a volume created but not attached by a run cut short is found and attached by the next.
    target = f"the {role}'s data volume"
    attach = Action("attach-volume", f"{target} at {DATA_DEVICE}", "it is new", role=role)
    if host is None:
        out.actions.append(
            Action("create-volume", target, "the instance is new", role=role, zone=zone)
        )
        out.actions.append(attach)
        return
    volumes = pair.data_volumes(host.instance_id)
    attached = [v for v in volumes if v.attached_to == host.instance_id]
    if attached:
        volume = attached[0]
        sealed = "encrypted" if volume.encrypted else "NOT encrypted"
        out.found.append(
            Found(
                f"{role} data volume",
                volume.volume_id,
                f"{volume.size_gb} GB in {volume.zone}, attached to {host.instance_id}, {sealed}",
            )
        )
        if not volume.encrypted:
            out.notes.append(
                f"the {role}'s data volume {volume.volume_id} is not encrypted; launch cannot "
                f"change that (copy it to an encrypted volume)"
            )
        if host.delete_on_termination(volume.volume_id):
            out.actions.append(
                Action(
                    "keep-volume",
                    f"{target} {volume.volume_id}",
                    "it is set to be deleted with the instance; the data must outlive it",
                    role=role,
                    resource_id=volume.volume_id,
                )
            )
        return
    elsewhere = [v for v in volumes if v.attached_to]
    if elsewhere:
        volume = elsewhere[0]
        raise Refusal(
            f"the {role}'s data volume {volume.volume_id} is attached to {volume.attached_to}, "
            f"not to the {role} {host.instance_id}; detach it or fix its {TAG_DATA_FOR} tag"
        )
    ready = [v for v in volumes if v.state in ("creating", "available") and v.zone == host.zone]
    if ready:
        volume = ready[0]
        out.found.append(
            Found(f"{role} data volume", volume.volume_id, f"{volume.state} in {volume.zone}")
        )
        out.actions.append(
            Action(
                "attach-volume",
                f"{target} {volume.volume_id} at {DATA_DEVICE}",
                "an earlier run created it but did not attach it",
                role=role,
                resource_id=volume.volume_id,
            )
        )
        return
    reason = f"{host.instance_id} has none"
    out.actions.append(Action("create-volume", target, reason, role=role, zone=host.zone))
    out.actions.append(attach)


def _plan_elastic_ip(settings: Settings, pair: PairState, out: _Draft) -> None:
    # The address is tagged when it is allocated, so one allocated but not associated by a
    # run cut short is found and associated by the next.
    eip = pair.elastic_ip
    master = pair.master
    if eip is None:
        reason = f"none is tagged Project={settings.project_name}"
        out.actions.append(Action("allocate-eip", "an Elastic IP", reason))
        out.actions.append(Action("associate-eip", "the Elastic IP with the master", "it is new"))
        return
    holder = pair.eip_holder
    where = f"the {holder} ({eip.instance_id})" if holder else "nothing"
    out.found.append(Found("Elastic IP", eip.allocation_id, f"{eip.public_ip} on {where}"))
    if eip.instance_id is None:
        out.actions.append(
            Action(
                "associate-eip",
                f"the Elastic IP {eip.public_ip} with the master",
                "an earlier run allocated it but did not associate it",
                resource_id=eip.allocation_id,
            )
        )
    elif master is None or eip.instance_id != master.instance_id:
        who = f"the {holder}" if holder in ROLES else "an instance outside the pair"
        raise Refusal(
            f"the Elastic IP {eip.public_ip} is associated with {who} {eip.instance_id}, not "
            f"with the master: a promotion may be half done; finish it with inv promote-slave, "
            f"or disassociate the address"
        )


# --- reading what exists -------------------------------------------------------------------


def _rules_of(items: list[SecurityGroupRuleTypeDef], names: dict[str, str]) -> tuple[Rule, ...]:
    """Ingress rules as read from DescribeSecurityGroupRules: one source each, with its id."""
    rules: list[Rule] = []
    for item in items:
        if item.get("IsEgress"):
            continue
        protocol = item.get("IpProtocol", "-1")
        low, high = item.get("FromPort", -1), item.get("ToPort", -1)
        if protocol == "-1":
            low = high = -1
        source: str
        kind: RuleKind
        if "CidrIpv4" in item:
            source, kind = item["CidrIpv4"], "cidr"
        elif "CidrIpv6" in item:
            source, kind = item["CidrIpv6"], "cidr"
        elif "ReferencedGroupInfo" in item:
            gid = item["ReferencedGroupInfo"].get("GroupId", "")
            source, kind = names.get(gid, gid), "group"
        else:
            source, kind = item.get("PrefixListId", ""), "prefix-list"
        rule_id = item.get("SecurityGroupRuleId", "")
        rules.append(Rule(low, high, source, kind, protocol, rule_id=rule_id))
    return tuple(sorted(rules, key=lambda r: (r.port_from, r.source)))


def _instance_type(settings: Settings) -> InstanceTypeType:
    # EC2 checks the name (DescribeInstanceTypes in read_world); the stubs list known ones.
    return cast("InstanceTypeType", settings.instance_type)


def _check_ami(ec2: EC2Client, ami_id: str, region: str) -> Ami:
    try:
        with aws_errors("ec2 DescribeImages", f"AMI {ami_id}"):
            images = ec2.describe_images(ImageIds=[ami_id]).get("Images", [])
    except AwsError as exc:
        if error_code(exc).startswith("InvalidAMIID"):
            raise AwsError(
                f"AMI_ID {ami_id} does not exist in {region} (ec2 DescribeImages: "
                f"{error_code(exc)}): build one with inv build-ami, or set the id of an AMI "
                f"of this region; nothing was created"
            ) from exc.__cause__
        raise
    if not images:
        raise AwsError(
            f"AMI_ID {ami_id} does not exist in {region} or is not visible to this account: "
            f"build one with inv build-ami; nothing was created"
        )
    image = images[0]
    state = image.get("State", "unknown")
    if state != "available":
        raise AwsError(f"AMI_ID {ami_id} is {state}, not available; nothing was created")
    return Ami(image_id=ami_id, name=image.get("Name", ""), state=state)


def read_world(settings: Settings, ec2: EC2Client) -> World:
    """Check the preconditions and read what exists; nothing is created."""
    region = settings.aws_region
    ami_id = str(settings.require("AMI_ID"))
    desired_rules(settings)  # refuses clashing ports before any call
    ami = _check_ami(ec2, ami_id, region)

    with aws_errors("ec2 DescribeAvailabilityZones", f"region {region}"):
        zone_items = ec2.describe_availability_zones().get("AvailabilityZones", [])
    available = tuple(
        sorted(
            z["ZoneName"]
            for z in zone_items
            if z.get("State") == "available"
            and z.get("ZoneType", "availability-zone") == "availability-zone"
            and "ZoneName" in z
        )
    )
    zones = pick_zones(settings.availability_zones, available, region)

    try:
        with aws_errors("ec2 DescribeInstanceTypes", f"instance type {settings.instance_type}"):
            ec2.describe_instance_types(InstanceTypes=[_instance_type(settings)])
    except AwsError as exc:
        if error_code(exc) != "InvalidInstanceType":
            raise
        raise SettingError(
            f"INSTANCE_TYPE {settings.instance_type} is not an EC2 instance type in {region}"
        ) from exc.__cause__
    if settings.key_name:
        try:
            with aws_errors("ec2 DescribeKeyPairs", f"key pair {settings.key_name}"):
                ec2.describe_key_pairs(KeyNames=[settings.key_name])
        except AwsError as exc:
            if error_code(exc) != "InvalidKeyPair.NotFound":
                raise
            raise SettingError(
                f"KEY_NAME {settings.key_name} is not a key pair of {region}: import your "
                f"public key (aws ec2 import-key-pair) or leave KEY_NAME empty"
            ) from exc.__cause__

    with aws_errors("ec2 DescribeVpcs", f"the default VPC of {region}"):
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}]).get(
            "Vpcs", []
        )
    if not vpcs:
        raise AwsError(
            f"{region} has no default VPC: gitlab-dr launches into the default VPC "
            f"(aws ec2 create-default-vpc makes one); nothing was created"
        )
    vpc_id = vpcs[0]["VpcId"]
    with aws_errors("ec2 DescribeSubnets", f"the default subnets of {vpc_id}"):
        subnet_items = ec2.describe_subnets(
            Filters=[
                {"Name": "vpc-id", "Values": [vpc_id]},
                {"Name": "default-for-az", "Values": ["true"]},
            ]
        ).get("Subnets", [])
    by_zone = {s["AvailabilityZone"]: s["SubnetId"] for s in subnet_items}
    for zone in zones:
        if zone not in by_zone:
            raise AwsError(
                f"the default VPC {vpc_id} has no default subnet in {zone} "
                f"(aws ec2 create-default-subnet --availability-zone {zone} makes one); "
                f"nothing was created"
            )

    with aws_errors("ec2 DescribeSecurityGroups", f"{OPEN_GROUP} and {SLAVE_GROUP} in {vpc_id}"):
        group_items = ec2.describe_security_groups(
            Filters=[
                {"Name": "vpc-id", "Values": [vpc_id]},
                {"Name": "group-name", "Values": list(GROUPS)},
            ]
        ).get("SecurityGroups", [])
    group_items = [g for g in group_items if g.get("GroupName") in GROUPS]
    names = {g["GroupId"]: g["GroupName"] for g in group_items}
    rule_items: list[SecurityGroupRuleTypeDef] = []
    if names:
        with aws_errors("ec2 DescribeSecurityGroupRules", f"the rules of {', '.join(names)}"):
            for page in ec2.get_paginator("describe_security_group_rules").paginate(
                Filters=[{"Name": "group-id", "Values": list(names)}]
            ):
                rule_items.extend(page.get("SecurityGroupRules", []))
    groups = tuple(
        Group(
            name=g["GroupName"],
            group_id=g["GroupId"],
            project=tags_of(g).get(TAG_PROJECT, ""),
            rules=_rules_of([r for r in rule_items if r.get("GroupId") == g["GroupId"]], names),
        )
        for g in group_items
    )
    return World(
        region=region,
        vpc_id=vpc_id,
        zones=zones,
        subnets=tuple((z, by_zone[z]) for z in zones),
        ami=ami,
        groups=tuple(sorted(groups, key=lambda g: g.name)),
        pair=describe_pair(settings, ec2),
    )


def plan_launch(settings: Settings, ec2: EC2Client) -> LaunchPlan:
    """Check, read and plan: what :func:`apply` would do, with reasons; nothing is created."""
    return make_plan(settings, read_world(settings, ec2))


# --- applying ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Done:
    """A step performed, and the id of what it created or changed."""

    action: Action
    resource_id: str

    def text(self) -> str:
        """``create security group gitlab-open: sg-0abc``."""
        return f"{_VERBS[self.action.kind]} {self.action.target}: {self.resource_id}"


def _role(action: Action) -> Role:
    if action.role is None:
        raise ValueError(f"{action.kind} needs a role")
    return action.role


def _rule(action: Action) -> Rule:
    if action.rule is None:
        raise ValueError(f"{action.kind} needs a rule")
    return action.rule


class _Apply:
    """The state of one apply: the ids known so far and what still has to be waited for."""

    def __init__(self, plan: LaunchPlan, ec2: EC2Client, wait_timeout: float) -> None:
        self.plan = plan
        self.ec2 = ec2
        self.timeout = wait_timeout
        self.settings = plan.settings
        world = plan.world
        self.group_ids = {g.name: g.group_id for g in world.groups}
        self.instance_ids: dict[str, str] = {}
        self.zones = dict(plan.zone_of)
        self.starting: set[str] = set()
        self.creating: set[str] = set()
        for role in ROLES:
            host = world.pair.host(role)
            if host is not None:
                self.instance_ids[role] = host.instance_id
                self.zones[role] = host.zone
                if host.state == "pending":
                    self.starting.add(host.instance_id)
        self.volume_ids: dict[str, str] = {}
        self.creating.update(v.volume_id for v in world.pair.volumes if v.state == "creating")
        self.allocation_id = world.pair.elastic_ip.allocation_id if world.pair.elastic_ip else ""

    def tags(self, **extra: str) -> dict[str, str]:
        return {TAG_PROJECT: self.settings.project_name, **extra}

    def run(self, action: Action) -> str:
        handler: Callable[[Action], str] = getattr(self, "_" + action.kind.replace("-", "_"))
        return handler(action)

    def _group_id(self, name: str) -> str:
        return self.group_ids.get(name, name)

    def _create_group(self, action: Action) -> str:
        with aws_errors("ec2 CreateSecurityGroup", action.target):
            response = self.ec2.create_security_group(
                GroupName=action.group,
                Description=GROUP_DESCRIPTIONS[action.group],
                VpcId=self.plan.world.vpc_id,
                TagSpecifications=[
                    tag_spec("security-group", self.tags(**{TAG_NAME: action.group}))
                ],
            )
        self.group_ids[action.group] = response["GroupId"]
        return response["GroupId"]

    def _tag_group(self, action: Action) -> str:
        with aws_errors("ec2 CreateTags", action.target):
            self.ec2.create_tags(
                Resources=[action.resource_id],
                Tags=[{"Key": TAG_PROJECT, "Value": self.settings.project_name}],
            )
        return action.resource_id

    def _permission(self, rule: Rule, with_description: bool) -> IpPermissionTypeDef:
        perm: IpPermissionTypeDef = {"IpProtocol": rule.protocol}
        if rule.protocol != "-1":
            perm["FromPort"] = rule.port_from
            perm["ToPort"] = rule.port_to
        # Descriptions go with an authorization only; a revocation matches the rule itself.
        text = rule.description if with_description else ""
        if rule.kind == "cidr":
            if ipaddress.ip_network(rule.source, strict=False).version == 6:
                v6: Ipv6RangeTypeDef = {"CidrIpv6": rule.source}
                if text:
                    v6["Description"] = text
                perm["Ipv6Ranges"] = [v6]
            else:
                v4: IpRangeTypeDef = {"CidrIp": rule.source}
                if text:
                    v4["Description"] = text
                perm["IpRanges"] = [v4]
        elif rule.kind == "group":
            pair: UserIdGroupPairTypeDef = {"GroupId": self._group_id(rule.source)}
            if text:
                pair["Description"] = text
            perm["UserIdGroupPairs"] = [pair]
        else:
            prefix: PrefixListIdTypeDef = {"PrefixListId": rule.source}
            if text:
                prefix["Description"] = text
            perm["PrefixListIds"] = [prefix]
        return perm

    def _authorize(self, action: Action) -> str:
        rule = _rule(action)
        group_id = self._group_id(action.group)
        try:
            with aws_errors("ec2 AuthorizeSecurityGroupIngress", action.target):
                self.ec2.authorize_security_group_ingress(
                    GroupId=group_id, IpPermissions=[self._permission(rule, True)]
                )
        except AwsError as exc:
            if error_code(exc) != "InvalidPermission.Duplicate":
                raise
        return group_id

    def _revoke(self, action: Action) -> str:
        rule = _rule(action)
        group_id = self._group_id(action.group)
        try:
            with aws_errors("ec2 RevokeSecurityGroupIngress", action.target):
                if rule.rule_id:
                    self.ec2.revoke_security_group_ingress(
                        GroupId=group_id, SecurityGroupRuleIds=[rule.rule_id]
                    )
                else:
                    self.ec2.revoke_security_group_ingress(
                        GroupId=group_id, IpPermissions=[self._permission(rule, False)]
                    )
        except AwsError as exc:
            if error_code(exc) != "InvalidPermission.NotFound":
                raise
        return group_id

    def _run_instance(self, action: Action) -> str:
        role = _role(action)
        project = self.settings.project_name
        name = f"{project}-{role}"
        extra: dict[str, Any] = (
            {"KeyName": self.settings.key_name} if self.settings.key_name else {}
        )
        with aws_errors("ec2 RunInstances", action.target):
            response = self.ec2.run_instances(
                ImageId=self.plan.world.ami.image_id,
                InstanceType=_instance_type(self.settings),
                MinCount=1,
                MaxCount=1,
                SubnetId=self.plan.world.subnet(action.zone),
                SecurityGroupIds=[self._group_id(action.group)],
                MetadataOptions={"HttpTokens": "required", "HttpEndpoint": "enabled"},
                TagSpecifications=[
                    tag_spec(
                        "instance",
                        self.tags(
                            **{TAG_ROLE: role, TAG_EPOCH: str(self.plan.epoch), TAG_NAME: name}
                        ),
                    ),
                    tag_spec("volume", self.tags(**{TAG_NAME: f"{name}-root"})),
                ],
                **extra,
            )
        instance = response["Instances"][0]
        instance_id = instance["InstanceId"]
        self.instance_ids[role] = instance_id
        self.zones[role] = instance.get("Placement", {}).get("AvailabilityZone", action.zone)
        self.starting.add(instance_id)
        return instance_id

    def _wait_running(self, role: str) -> str:
        instance_id = self.instance_ids[role]
        if instance_id in self.starting:
            with aws_errors("ec2 wait InstanceRunning", f"the {role} instance {instance_id}"):
                self.ec2.get_waiter("instance_running").wait(
                    InstanceIds=[instance_id], WaiterConfig=waiter_config(self.timeout)
                )
            self.starting.discard(instance_id)
        return instance_id

    def _require_imdsv2(self, action: Action) -> str:
        with aws_errors("ec2 ModifyInstanceMetadataOptions", action.target):
            self.ec2.modify_instance_metadata_options(
                InstanceId=action.resource_id, HttpTokens="required", HttpEndpoint="enabled"
            )
        return action.resource_id

    def _create_volume(self, action: Action) -> str:
        role = _role(action)
        instance_id = self.instance_ids[role]
        zone = self.zones[role]
        with aws_errors("ec2 CreateVolume", f"{action.target} in {zone}"):
            response = self.ec2.create_volume(
                AvailabilityZone=zone,
                Size=self.settings.data_volume_gb,
                VolumeType=DATA_VOLUME_TYPE,
                Encrypted=True,
                TagSpecifications=[
                    tag_spec(
                        "volume",
                        self.tags(
                            **{
                                TAG_DATA_FOR: instance_id,
                                TAG_NAME: f"{self.settings.project_name}-data-{instance_id}",
                            }
                        ),
                    )
                ],
            )
        volume_id = response["VolumeId"]
        self.volume_ids[role] = volume_id
        if response.get("State") != "available":
            self.creating.add(volume_id)
        return volume_id

    def _attach_volume(self, action: Action) -> str:
        role = _role(action)
        volume_id = action.resource_id or self.volume_ids[role]
        instance_id = self._wait_running(role)
        if volume_id in self.creating:
            with aws_errors("ec2 wait VolumeAvailable", f"{action.target} ({volume_id})"):
                self.ec2.get_waiter("volume_available").wait(
                    VolumeIds=[volume_id], WaiterConfig=waiter_config(self.timeout)
                )
            self.creating.discard(volume_id)
        with aws_errors("ec2 AttachVolume", f"{action.target} ({volume_id} to {instance_id})"):
            self.ec2.attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device=DATA_DEVICE)
        with aws_errors("ec2 wait VolumeInUse", f"{action.target} ({volume_id})"):
            self.ec2.get_waiter("volume_in_use").wait(
                VolumeIds=[volume_id], WaiterConfig=waiter_config(self.timeout)
            )
        return volume_id

    def _keep_volume(self, action: Action) -> str:
        role = _role(action)
        instance_id = self.instance_ids[role]
        device = next(
            (d for d in self._devices(instance_id) if d[1] == action.resource_id),
            (DATA_DEVICE, action.resource_id),
        )[0]
        with aws_errors("ec2 ModifyInstanceAttribute", action.target):
            self.ec2.modify_instance_attribute(
                InstanceId=instance_id,
                BlockDeviceMappings=[{"DeviceName": device, "Ebs": {"DeleteOnTermination": False}}],
            )
        return action.resource_id

    def _devices(self, instance_id: str) -> list[tuple[str, str]]:
        with aws_errors("ec2 DescribeInstances", f"the block devices of {instance_id}"):
            response = self.ec2.describe_instances(InstanceIds=[instance_id])
        return [
            (m.get("DeviceName", ""), m.get("Ebs", {}).get("VolumeId", ""))
            for r in response.get("Reservations", [])
            for i in r.get("Instances", [])
            for m in i.get("BlockDeviceMappings", [])
        ]

    def _allocate_eip(self, action: Action) -> str:
        name = f"{self.settings.project_name}-gitlab"
        with aws_errors("ec2 AllocateAddress", action.target):
            response = self.ec2.allocate_address(
                Domain="vpc",
                TagSpecifications=[tag_spec("elastic-ip", self.tags(**{TAG_NAME: name}))],
            )
        self.allocation_id = response["AllocationId"]
        return self.allocation_id

    def _associate_eip(self, action: Action) -> str:
        allocation_id = action.resource_id or self.allocation_id
        instance_id = self._wait_running("master")
        with aws_errors(
            "ec2 AssociateAddress", f"{action.target} ({allocation_id} to {instance_id})"
        ):
            response = self.ec2.associate_address(
                AllocationId=allocation_id, InstanceId=instance_id, AllowReassociation=False
            )
        return response.get("AssociationId", allocation_id)


def apply(plan: LaunchPlan, ec2: EC2Client, wait_timeout: float | None = None) -> tuple[Done, ...]:
    """Perform the plan's steps in order; a failure says how far it got.

    ``wait_timeout`` bounds each wait (an instance running, a volume available or in use);
    it defaults to ``AWS_WAIT_TIMEOUT``.
    """
    state = _Apply(
        plan, ec2, plan.settings.aws_wait_timeout if wait_timeout is None else wait_timeout
    )
    done: list[Done] = []
    for action in plan.actions:
        try:
            done.append(Done(action, state.run(action)))
        except AwsError as exc:
            raise AwsError(
                f"{exc} ({len(done)} of {len(plan.actions)} launch steps were done; "
                f"inv launch finishes the rest when run again)"
            ) from exc.__cause__ or exc
    return tuple(done)


# --- the task's entry point ----------------------------------------------------------------


@dataclass(frozen=True)
class LaunchReport:
    """What ``inv launch`` did (or would do, with ``--dry-run``) and the pair afterwards."""

    plan: LaunchPlan
    done: tuple[Done, ...]
    pair: PairState
    dry_run: bool

    def lines(self) -> list[str]:
        """The report for a person."""
        if self.dry_run:
            return [*self.plan.lines(), "dry run: nothing was changed"]
        out = self.plan.lines(steps=False)
        if self.done:
            out.append(f"done ({len(self.done)} steps):")
            out.extend(f"  {d.text()}" for d in self.done)
        out.append(f"pair (epoch {self.pair.epoch}):")
        for host in self.pair.hosts:
            out.append(
                f"  {host.role:6} {host.instance_id} {host.state} in {host.zone}, "
                f"public {host.public_ip or '-'}, private {host.private_ip or '-'}, "
                f"groups {', '.join(host.security_groups) or '-'}"
            )
        eip = self.pair.elastic_ip
        if eip is not None:
            out.append(
                f"  Elastic IP {eip.public_ip} ({eip.allocation_id}) on "
                f"{self.pair.eip_holder or 'nothing'}"
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        """The report for a machine."""
        return {
            "dry_run": self.dry_run,
            "plan": self.plan.to_dict(),
            "done": [
                {"kind": d.action.kind, "target": d.action.target, "id": d.resource_id}
                for d in self.done
            ],
            "pair": self.pair.to_dict(),
        }


def launch(
    settings: Settings,
    *,
    dry_run: bool = False,
    ec2: EC2Client | None = None,
    wait_timeout: float | None = None,
) -> LaunchReport:
    """Plan the launch and, unless ``dry_run``, apply it; then read the pair back."""
    client = ec2 if ec2 is not None else ec2_client(settings)
    plan = plan_launch(settings, client)
    if dry_run:
        return LaunchReport(plan, (), plan.world.pair, dry_run=True)
    done = apply(plan, client, wait_timeout)
    return LaunchReport(plan, done, describe_pair(settings, client), dry_run=False)
