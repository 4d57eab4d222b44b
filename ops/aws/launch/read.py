"""Reading what a launch depends on, before anything is created: :func:`read_world`.

It checks the preconditions (the AMI, the VPC, its subnets and the paths between them
(:func:`~ops.aws.network.read_network`), the instance type, the key pair, the KMS key, the
hosted zone) and reads what exists: the two security groups by name and their rules, the pair's
instances, data volumes and Elastic IP by tags (:func:`describe_pair`), GitLab's DNS record, and
the price table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from ops.aws.client import (
    aws_errors,
    kms_client,
    known_refusals,
    route53_client,
    tags_of,
)
from ops.aws.cost import load_prices
from ops.aws.dns import read_dns
from ops.aws.inventory import OPEN_GROUP, SLAVE_GROUP, TAG_PROJECT, describe_pair
from ops.aws.kms import check_key
from ops.aws.launch.model import GROUPS, Ami, Group, Rule, RuleKind, World
from ops.aws.launch.plan import NEEDED_BY, NETWORKS, desired_rules
from ops.aws.network import read_network
from ops.errors import AwsError, SettingError
from ops.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.literals import InstanceTypeType
    from mypy_boto3_ec2.type_defs import ImageTypeDef, SecurityGroupRuleTypeDef
    from mypy_boto3_kms import KMSClient
    from mypy_boto3_route53 import Route53Client


def rules_of(items: list[SecurityGroupRuleTypeDef], names: dict[str, str]) -> tuple[Rule, ...]:
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


def instance_type(settings: Settings) -> InstanceTypeType:
    """``INSTANCE_TYPE`` as boto3's stubs type it (EC2 itself checks the name, in read_world)."""
    return cast("InstanceTypeType", settings.instance_type)


def check_ami(ec2: EC2Client, ami_id: str, region: str) -> Ami:
    """The AMI ``ami_id``, which must exist in ``region`` and be available."""
    with known_refusals(
        "ec2 DescribeImages",
        f"AMI {ami_id}",
        ("InvalidAMIID*",),
        lambda code: AwsError(
            f"AMI_ID {ami_id} does not exist in {region} (ec2 DescribeImages: {code}): build "
            "one with inv build-ami, or set the id of an AMI of this region; nothing was created"
        ),
    ):
        images = ec2.describe_images(ImageIds=[ami_id]).get("Images", [])
    if not images:
        raise AwsError(
            f"AMI_ID {ami_id} does not exist in {region} or is not visible to this account: "
            f"build one with inv build-ami; nothing was created"
        )
    image = images[0]
    state = image.get("State", "unknown")
    if state != "available":
        raise AwsError(f"AMI_ID {ami_id} is {state}, not available; nothing was created")
    return Ami(image_id=ami_id, name=image.get("Name", ""), state=state, root_gb=_root_gb(image))


def _root_gb(image: ImageTypeDef) -> int:
    root = image.get("RootDeviceName", "")
    mappings = image.get("BlockDeviceMappings", [])
    sizes = [m.get("Ebs", {}).get("VolumeSize", 0) for m in mappings if m.get("DeviceName") == root]
    return int(sizes[0]) if sizes else 0


def read_world(
    settings: Settings,
    ec2: EC2Client,
    *,
    kms: KMSClient | None = None,
    route53: Route53Client | None = None,
) -> World:
    """Check the preconditions and read what exists; nothing is created. The KMS and Route 53
    clients are made from the settings when ``KMS_KEY_ID`` or ``DNS_ZONE`` needs one."""
    region = settings.aws_region
    settings.require_all("AMI_ID", *NETWORKS, why=NEEDED_BY)
    desired_rules(settings)  # refuses clashing ports before any call
    ami = check_ami(ec2, settings.ami_id, region)
    network = read_network(settings, ec2)
    _check_instance_type(settings, ec2)
    _check_key_pair(settings, ec2)
    key = check_key(settings, kms or kms_client(settings)) if settings.kms_key_id else None
    dns = read_dns(settings, route53 or route53_client(settings)) if settings.dns_zone else None
    prices = load_prices(settings)
    return World(
        region=region,
        vpc_id=network.vpc_id,
        zones=network.zones,
        subnets=tuple((s.zone, s.subnet_id) for s in network.subnets),
        ami=ami,
        groups=_groups(ec2, network.vpc_id),
        pair=describe_pair(settings, ec2),
        public_zones=tuple(s.zone for s in network.subnets if s.public_ip_on_launch),
        network_notes=network.notes,
        kms_key=key,
        dns=dns,
        prices=prices,
    )


def _check_instance_type(settings: Settings, ec2: EC2Client) -> None:
    with known_refusals(
        "ec2 DescribeInstanceTypes",
        f"instance type {settings.instance_type}",
        ("InvalidInstanceType",),
        lambda _: SettingError(
            f"INSTANCE_TYPE {settings.instance_type} is not an EC2 instance type in "
            f"{settings.aws_region}"
        ),
    ):
        ec2.describe_instance_types(InstanceTypes=[instance_type(settings)])


def _check_key_pair(settings: Settings, ec2: EC2Client) -> None:
    if not settings.key_name:
        return
    with known_refusals(
        "ec2 DescribeKeyPairs",
        f"key pair {settings.key_name}",
        ("InvalidKeyPair.NotFound",),
        lambda _: SettingError(
            f"KEY_NAME {settings.key_name} is not a key pair of {settings.aws_region}: import "
            "your public key (aws ec2 import-key-pair) or leave KEY_NAME empty"
        ),
    ):
        ec2.describe_key_pairs(KeyNames=[settings.key_name])


def _groups(ec2: EC2Client, vpc_id: str) -> tuple[Group, ...]:
    """The two security groups in the VPC, by name, with their ingress rules."""
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
    groups = (
        Group(
            name=g["GroupName"],
            group_id=g["GroupId"],
            project=tags_of(g).get(TAG_PROJECT, ""),
            rules=rules_of([r for r in rule_items if r.get("GroupId") == g["GroupId"]], names),
        )
        for g in group_items
    )
    return tuple(sorted(groups, key=lambda g: g.name))
