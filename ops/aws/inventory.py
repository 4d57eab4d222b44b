"""What AWS holds for the pair, read by tags into frozen snapshots.

Roles live in AWS: the instances carry ``Project``, ``Role`` (master or slave) and ``Epoch``
tags, each data volume carries ``DataFor=<instance id>``, and the Elastic IP carries
``Project``. :func:`describe_pair` reads all of it in three calls, so ``inv launch``,
``inv status`` and the promotion decide from one immutable :class:`PairState`, even when a
host is dead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from ops.aws.client import aws_errors, tag_filter, tags_of
from ops.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import InstanceTypeDef

Role = Literal["master", "slave"]
ROLES: tuple[Role, Role] = ("master", "slave")

TAG_PROJECT = "Project"
TAG_ROLE = "Role"
TAG_EPOCH = "Epoch"
TAG_NAME = "Name"
TAG_DATA_FOR = "DataFor"
"""On a data volume: the id of the instance it belongs to (set when the volume is created)."""

OPEN_GROUP = "gitlab-open"
"""The security group clients reach GitLab through: the master's."""
SLAVE_GROUP = "gitlab-slave"
"""The slave's (and a fenced instance's): only the master's sidecar reaches the receiver."""
FENCED = "fenced"
"""The Role of an old master after a promotion."""

LIVE_STATES = ("pending", "running", "stopping", "stopped")
"""Instance states that count as present; shutting-down and terminated ones are gone."""


@dataclass(frozen=True)
class Instance:
    """One instance of the project, as AWS describes it."""

    instance_id: str
    role: str
    state: str
    zone: str
    public_ip: str | None
    private_ip: str | None
    security_groups: tuple[str, ...]
    epoch: int | None
    name: str
    imdsv2_required: bool
    volumes_keep: tuple[tuple[str, bool], ...]
    """Attached EBS volumes as (volume id, DeleteOnTermination)."""
    vpc_id: str = ""

    def delete_on_termination(self, volume_id: str) -> bool | None:
        """Whether ``volume_id`` goes with the instance, or None if it is not attached."""
        return next((keep for vid, keep in self.volumes_keep if vid == volume_id), None)


@dataclass(frozen=True)
class DataVolume:
    """An EBS volume tagged as a host's data volume."""

    volume_id: str
    data_for: str
    zone: str
    state: str
    encrypted: bool
    size_gb: int
    attached_to: str | None


@dataclass(frozen=True)
class ElasticIp:
    """The project's Elastic IP and what holds it."""

    allocation_id: str
    public_ip: str
    instance_id: str | None


@dataclass(frozen=True)
class PairState:
    """A snapshot of the pair in AWS: instances by role, data volumes, the Elastic IP."""

    project: str
    region: str
    hosts: tuple[Instance, ...]
    volumes: tuple[DataVolume, ...]
    elastic_ips: tuple[ElasticIp, ...]

    def with_role(self, role: str) -> tuple[Instance, ...]:
        """Live instances tagged with ``role``."""
        return tuple(h for h in self.hosts if h.role == role)

    def host(self, role: str) -> Instance | None:
        """The one instance with ``role``, or None when there is none or more than one."""
        found = self.with_role(role)
        return found[0] if len(found) == 1 else None

    @property
    def master(self) -> Instance | None:
        """The master instance, if exactly one is tagged so."""
        return self.host("master")

    @property
    def slave(self) -> Instance | None:
        """The slave instance, if exactly one is tagged so."""
        return self.host("slave")

    @property
    def epoch(self) -> int:
        """The pair's promotion epoch: the highest Epoch tag of its instances (0 if none)."""
        return max((h.epoch for h in self.hosts if h.epoch is not None), default=0)

    @property
    def elastic_ip(self) -> ElasticIp | None:
        """The project's Elastic IP, if exactly one is tagged so."""
        return self.elastic_ips[0] if len(self.elastic_ips) == 1 else None

    @property
    def eip_holder(self) -> str | None:
        """The role of the instance holding the Elastic IP (``"other"`` if not one of ours)."""
        eip = self.elastic_ip
        if eip is None or eip.instance_id is None:
            return None
        holder = next((h for h in self.hosts if h.instance_id == eip.instance_id), None)
        return holder.role if holder else "other"

    def data_volumes(self, instance_id: str) -> tuple[DataVolume, ...]:
        """Data volumes tagged for ``instance_id``."""
        return tuple(v for v in self.volumes if v.data_for == instance_id)

    def problems(self) -> tuple[str, ...]:
        """What makes the tags ambiguous, as sentences (empty when the state is clear)."""
        out: list[str] = []
        for role in ROLES:
            found = self.with_role(role)
            if len(found) > 1:
                ids = ", ".join(h.instance_id for h in found)
                out.append(
                    f"{len(found)} live instances are tagged Project={self.project} Role={role} "
                    f"({ids}); terminate or retag all but one"
                )
        if len(self.elastic_ips) > 1:
            ids = ", ".join(e.allocation_id for e in self.elastic_ips)
            out.append(
                f"{len(self.elastic_ips)} Elastic IPs are tagged Project={self.project} ({ids}); "
                f"release or retag all but one"
            )
        return tuple(out)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, with the derived fields (epoch, Elastic IP holder) added."""
        data = asdict(self)
        data["epoch"] = self.epoch
        data["eip_holder"] = self.eip_holder
        return data


def _host(item: InstanceTypeDef) -> Instance:
    tags = tags_of(item)
    epoch_text = tags.get(TAG_EPOCH, "")
    keep = tuple(
        (m["Ebs"]["VolumeId"], bool(m["Ebs"].get("DeleteOnTermination")))
        for m in item.get("BlockDeviceMappings", [])
        if "Ebs" in m and "VolumeId" in m["Ebs"]
    )
    return Instance(
        instance_id=item["InstanceId"],
        role=tags.get(TAG_ROLE, ""),
        state=item.get("State", {}).get("Name", "unknown"),
        zone=item.get("Placement", {}).get("AvailabilityZone", ""),
        public_ip=item.get("PublicIpAddress") or None,
        private_ip=item.get("PrivateIpAddress") or None,
        security_groups=tuple(
            sorted(g.get("GroupName", "") for g in item.get("SecurityGroups", []))
        ),
        epoch=int(epoch_text) if epoch_text.isdigit() else None,
        name=tags.get(TAG_NAME, ""),
        imdsv2_required=item.get("MetadataOptions", {}).get("HttpTokens") == "required",
        volumes_keep=keep,
        vpc_id=item.get("VpcId", ""),
    )


_ROLE_ORDER = {"master": 0, "slave": 1}


def describe_pair(settings: Settings, ec2: EC2Client) -> PairState:
    """Read the pair from AWS: instances, data volumes and Elastic IP tagged with the project."""
    project = settings.project_name
    what = f"project {project} in {settings.aws_region}"
    hosts: list[Instance] = []
    with aws_errors("ec2 DescribeInstances", f"the instances of {what}"):
        pages = ec2.get_paginator("describe_instances").paginate(
            Filters=[
                tag_filter(TAG_PROJECT, project),
                {"Name": "instance-state-name", "Values": list(LIVE_STATES)},
            ]
        )
        for page in pages:
            for reservation in page.get("Reservations", []):
                hosts.extend(_host(i) for i in reservation.get("Instances", []))
    hosts.sort(key=lambda h: (_ROLE_ORDER.get(h.role, 2), h.instance_id))

    volumes: list[DataVolume] = []
    with aws_errors("ec2 DescribeVolumes", f"the data volumes of {what}"):
        vol_pages = ec2.get_paginator("describe_volumes").paginate(
            Filters=[
                tag_filter(TAG_PROJECT, project),
                {"Name": "tag-key", "Values": [TAG_DATA_FOR]},
            ]
        )
        for vol_page in vol_pages:
            for vol in vol_page.get("Volumes", []):
                attached = [
                    a["InstanceId"]
                    for a in vol.get("Attachments", [])
                    if a.get("State") in ("attaching", "attached") and "InstanceId" in a
                ]
                volumes.append(
                    DataVolume(
                        volume_id=vol["VolumeId"],
                        data_for=tags_of(vol).get(TAG_DATA_FOR, ""),
                        zone=vol.get("AvailabilityZone", ""),
                        state=vol.get("State", "unknown"),
                        encrypted=bool(vol.get("Encrypted")),
                        size_gb=int(vol.get("Size", 0)),
                        attached_to=attached[0] if attached else None,
                    )
                )
    volumes.sort(key=lambda v: (v.data_for, v.volume_id))

    with aws_errors("ec2 DescribeAddresses", f"the Elastic IP of {what}"):
        addresses = ec2.describe_addresses(Filters=[tag_filter(TAG_PROJECT, project)])
    eips = tuple(
        ElasticIp(
            allocation_id=a.get("AllocationId", ""),
            public_ip=a.get("PublicIp", ""),
            instance_id=a.get("InstanceId") or None,
        )
        for a in addresses.get("Addresses", [])
    )
    return PairState(
        project=project,
        region=settings.aws_region,
        hosts=tuple(hosts),
        volumes=tuple(volumes),
        elastic_ips=tuple(sorted(eips, key=lambda e: e.allocation_id)),
    )
