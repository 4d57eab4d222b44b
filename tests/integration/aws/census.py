"""Looking at what a launch left in moto: the project's resources, counted and described."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from tests.integration.aws.factories import CLIENTS, PROJECT

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import InstanceTypeDef, SecurityGroupTypeDef


CLIENT_PORTS = (80, 443, 2424, 5050)
WHOLE_INTERNET = ("0.0.0.0/0", "::/0")


def tags(item: Any) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in item.get("Tags", [])}


def instances(ec2: EC2Client) -> dict[str, InstanceTypeDef]:
    """Live instances of the project by Role tag."""
    found: dict[str, InstanceTypeDef] = {}
    for reservation in ec2.describe_instances(
        Filters=[
            {"Name": "tag:Project", "Values": [PROJECT]},
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopped"]},
        ]
    )["Reservations"]:
        for instance in reservation["Instances"]:
            role = tags(instance)["Role"]
            assert role not in found, f"two instances tagged Role={role}"
            found[role] = instance
    return found


def groups(ec2: EC2Client) -> dict[str, SecurityGroupTypeDef]:
    return {
        g["GroupName"]: g
        for g in ec2.describe_security_groups(
            Filters=[{"Name": "group-name", "Values": ["gitlab-open", "gitlab-slave"]}]
        )["SecurityGroups"]
    }


def ingress(group: SecurityGroupTypeDef, names: dict[str, str]) -> set[tuple[str, int, int, str]]:
    """Every ingress rule as (protocol, from, to, source), groups by name."""
    rules: set[tuple[str, int, int, str]] = set()
    for perm in group.get("IpPermissions", []):
        key = (perm["IpProtocol"], perm.get("FromPort", -1), perm.get("ToPort", -1))
        rules.update((*key, r["CidrIp"]) for r in perm.get("IpRanges", []))
        rules.update((*key, r["CidrIpv6"]) for r in perm.get("Ipv6Ranges", []))
        rules.update(
            (*key, "group:" + names.get(p["GroupId"], p["GroupId"]))
            for p in perm.get("UserIdGroupPairs", [])
        )
    return rules


def data_volumes(ec2: EC2Client) -> list[Any]:
    return ec2.describe_volumes(Filters=[{"Name": "tag-key", "Values": ["DataFor"]}])["Volumes"]


def census(ec2: EC2Client) -> Counter[str]:
    """How many of each resource the project has, rules included."""
    counts: Counter[str] = Counter()
    counts["instances"] = len(instances(ec2))
    counts["volumes"] = len(ec2.describe_volumes()["Volumes"])
    counts["data volumes"] = len(data_volumes(ec2))
    found = groups(ec2)
    names = {g["GroupId"]: n for n, g in found.items()}
    counts["groups"] = len(found)
    for name, group in found.items():
        counts[f"rules on {name}"] = len(ingress(group, names))
    counts["elastic ips"] = len(ec2.describe_addresses()["Addresses"])
    counts["associated elastic ips"] = sum(
        1 for a in ec2.describe_addresses()["Addresses"] if a.get("InstanceId")
    )
    return counts


COMPLETE = Counter(
    {
        "instances": 2,
        "volumes": 4,  # two root volumes, two data volumes
        "data volumes": 2,
        "groups": 2,
        # clients' ports from each client CIDR; admin SSH and /metrics from ADMIN_CIDR
        "rules on gitlab-open": len(CLIENT_PORTS) * len(CLIENTS) + 2,
        # the sync port from gitlab-open; admin SSH and /metrics from ADMIN_CIDR
        "rules on gitlab-slave": 3,
        "elastic ips": 1,
        "associated elastic ips": 1,
    }
)
