"""What a launch is about: ingress rules, the groups and AMI as found, the plan's steps, reports.

Every type here is immutable; :mod:`.read` builds a :class:`World`, :mod:`.plan` turns it into a
:class:`LaunchPlan`, :mod:`.apply` performs it and says what it did as :class:`Done` steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

from ops.aws.cost import Cost, PriceTable
from ops.aws.dns import DnsView
from ops.aws.inventory import OPEN_GROUP, SLAVE_GROUP, PairState, Role
from ops.aws.kms import Key
from ops.settings import Settings

GROUPS = (OPEN_GROUP, SLAVE_GROUP)
GROUP_OF_ROLE: dict[str, str] = {"master": OPEN_GROUP, "slave": SLAVE_GROUP}
GROUP_DESCRIPTIONS = {
    OPEN_GROUP: "gitlab-dr: GitLab open to its clients (the master)",
    SLAVE_GROUP: "gitlab-dr: closed GitLab, sync port from the master only (the slave)",
}
ADMIN_SSH_PORT = 22
DATA_DEVICE = "/dev/sdf"
DATA_VOLUME_TYPE: Final = "gp3"
WHOLE_INTERNET = ("0.0.0.0/0", "::/0")

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
    root_gb: int = 0
    """The size of its root volume, which each instance gets (0: the image does not say)."""


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
    public_zones: tuple[str, ...] = ()
    """Zones whose subnet gives an instance a public IPv4 address at launch."""
    network_notes: tuple[str, ...] = ()
    kms_key: Key | None = None
    """KMS_KEY_ID's key, checked; None: AWS's own EBS key."""
    dns: DnsView | None = None
    """DNS_ZONE's hosted zone and GitLab's record; None without DNS_ZONE."""
    prices: PriceTable | None = None

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
    "point-record",
]

VERBS: dict[ActionKind, str] = {
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
    "point-record": "point",
}
"""The verb each kind of step is written with, in plans and reports."""


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
        return f"{VERBS[self.kind]} {self.target}: {self.reason}"

    def needs_role(self) -> Role:
        """The role the step is for (a step about an instance or its volume has one)."""
        if self.role is None:
            raise ValueError(f"{self.kind} needs a role")
        return self.role

    def needs_rule(self) -> Rule:
        """The rule the step authorizes or revokes."""
        if self.rule is None:
            raise ValueError(f"{self.kind} needs a rule")
        return self.rule


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
    cost: Cost | None = None
    """What the pair costs a month, from the price table."""

    @property
    def complete(self) -> bool:
        """True when there is nothing left to do."""
        return not self.actions

    def lines(self, steps: bool = True) -> list[str]:
        """The plan for a person (``steps=False``: without its list of steps and its cost)."""
        w = self.world
        out = [
            f"launch plan for project {self.settings.project_name} in {w.region} "
            f"({w.vpc_id}, zones {w.zones[0]} and {w.zones[1]}, AMI {w.ami.image_id})"
        ]
        if self.found:
            out.append("found:")
            out.extend(f"  {f.text()}" for f in self.found)
        if self.actions and steps:
            out.append(f"to do ({len(self.actions)} steps):")
            out.extend(f"  {n}. {a.text()}" for n, a in enumerate(self.actions, 1))
        if steps and self.cost is not None:
            out.extend(self.cost.lines())
        if not self.actions:
            out.append("nothing to do: the pair is complete")
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
            "subnets": dict(w.subnets),
            "ami_id": w.ami.image_id,
            "kms_key": w.kms_key.arn if w.kms_key else None,
            "dns": (
                {"zone_id": w.dns.zone.zone_id, "zone": w.dns.zone.name, "name": w.dns.record.name}
                if w.dns
                else None
            ),
            "epoch": self.epoch,
            "found": [
                {"what": f.what, "id": f.resource_id, "detail": f.detail} for f in self.found
            ],
            "actions": [
                {"kind": a.kind, "target": a.target, "reason": a.reason, "text": a.text()}
                for a in self.actions
            ],
            "notes": list(self.notes),
            "cost": self.cost.to_dict() if self.cost else None,
        }


@dataclass(frozen=True)
class Done:
    """A step performed, and the id of what it created or changed."""

    action: Action
    resource_id: str

    def text(self) -> str:
        """``create security group gitlab-open: sg-0abc``."""
        return f"{VERBS[self.action.kind]} {self.action.target}: {self.resource_id}"


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
