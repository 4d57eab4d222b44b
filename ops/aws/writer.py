"""The one writer of the pair's state in EC2: every call that changes AWS goes through here.

Reads come back from :func:`ops.aws.inventory.describe_pair` as an immutable ``PairState``;
changes go through :class:`Ec2Writer` alone: the security groups an instance is in, the
``Role``, ``Epoch`` and ``Name`` tags, and which instance holds the Elastic IP (and, for
``inv launch``, the resources it creates). Each method looks before it writes, so calling it
again changes nothing, and returns a sentence saying what it did.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ops.aws.client import aws_errors, tag_filter
from ops.aws.inventory import TAG_EPOCH, TAG_NAME, TAG_PROJECT, TAG_ROLE
from ops.errors import AwsError
from ops.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client


class Ec2Writer:
    """Writes the pair's shared state in EC2 for one project."""

    def __init__(self, settings: Settings, ec2: EC2Client) -> None:
        self.settings, self.ec2 = settings, ec2
        self.project = settings.project_name

    def group_id(self, name: str) -> str:
        """The id of the project's security group ``name``."""
        with aws_errors("ec2 DescribeSecurityGroups", f"security group {name}"):
            found = self.ec2.describe_security_groups(
                Filters=[
                    {"Name": "group-name", "Values": [name]},
                    tag_filter(TAG_PROJECT, self.project),
                ]
            )["SecurityGroups"]
        if len(found) != 1:
            raise AwsError(
                f"expected one security group {name} of {self.project}, found {len(found)}"
            )
        return found[0]["GroupId"]

    def swap_group(self, instance_id: str, remove: str, add: str) -> str:
        """Put the instance in group ``add`` instead of ``remove`` (no change if already so)."""
        with aws_errors("ec2 DescribeInstances", f"instance {instance_id}"):
            reservations = self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        item = reservations[0]["Instances"][0]
        current = {g["GroupName"]: g["GroupId"] for g in item.get("SecurityGroups", [])}
        if add in current and remove not in current:
            return f"{instance_id} already in {add}"
        wanted = [gid for name, gid in current.items() if name != remove]
        if add not in current:
            wanted.append(self.group_id(add))
        with aws_errors("ec2 ModifyInstanceAttribute", f"the groups of {instance_id}"):
            self.ec2.modify_instance_attribute(InstanceId=instance_id, Groups=wanted)
        return f"{instance_id}: {remove} -> {add}"

    def tag_role(self, instance_id: str, role: str, epoch: int) -> str:
        """Tag the instance ``Role=role``, ``Epoch=epoch`` and its ``Name`` after the role."""
        with aws_errors("ec2 CreateTags", f"instance {instance_id}"):
            self.ec2.create_tags(
                Resources=[instance_id],
                Tags=[
                    {"Key": TAG_ROLE, "Value": role},
                    {"Key": TAG_EPOCH, "Value": str(epoch)},
                    {"Key": TAG_NAME, "Value": f"{self.project}-{role}"},
                ],
            )
        return f"{instance_id} tagged Role={role} Epoch={epoch}"

    def move_address(self, allocation_id: str, public_ip: str, instance_id: str) -> str:
        """Associate the Elastic IP with ``instance_id`` (taking it from whoever holds it)."""
        with aws_errors("ec2 AssociateAddress", f"Elastic IP {public_ip}"):
            self.ec2.associate_address(
                AllocationId=allocation_id, InstanceId=instance_id, AllowReassociation=True
            )
        return f"Elastic IP {public_ip} -> {instance_id}"
