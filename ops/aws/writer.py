"""The one writer of AWS: every call that changes EC2 or Route 53 goes through here.

Reads come back from :func:`ops.aws.inventory.describe_pair` as an immutable ``PairState``;
changes go through :class:`Ec2Writer` alone: the security groups an instance is in, the
``Role``, ``Epoch`` and ``Name`` tags, and which instance holds the Elastic IP (each looks before
it writes, so calling it again changes nothing, and returns a sentence saying what it did); and
the resources ``inv launch`` creates, each tagged in the call that creates it, each method
returning the id of what it made or changed (and ``what`` naming it in an error); and the
drill's stop and start of an instance. :class:`Route53Writer` upserts GitLab's A record. gitlab-dr
writes nothing in KMS (it only describes a key). A unit test (tests/unit/aws/test_writer.py) keeps
every other module from calling an EC2, Route 53 or KMS write.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ops.aws.client import aws_errors, error_code, tag_filter, tag_spec, waiter_config
from ops.aws.inventory import TAG_DATA_FOR, TAG_EPOCH, TAG_NAME, TAG_PROJECT, TAG_ROLE
from ops.errors import AwsError
from ops.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.literals import InstanceTypeType, VolumeTypeType
    from mypy_boto3_ec2.type_defs import (
        InstanceTypeDef,
        IpPermissionTypeDef,
        VolumeResponseTypeDef,
    )
    from mypy_boto3_route53 import Route53Client


class Ec2Writer:
    """Writes the pair's shared state in EC2 for one project."""

    def __init__(self, settings: Settings, ec2: EC2Client) -> None:
        self.settings, self.ec2 = settings, ec2
        self.project = settings.project_name

    def name_tag(self, role: str) -> str:
        """The ``Name`` tag of the project's instance in ``role``: ``gitlab-dr-master``."""
        return f"{self.project}-{role}"

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
                    {"Key": TAG_NAME, "Value": self.name_tag(role)},
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

    def stop_instance(self, instance_id: str) -> str:
        """Stop the instance (the drill's dead master, as AWS sees it); a sentence."""
        with aws_errors("ec2 StopInstances", f"instance {instance_id}"):
            self.ec2.stop_instances(InstanceIds=[instance_id])
        return f"{instance_id} stopping"

    def start_instance(self, instance_id: str) -> str:
        """Start the stopped instance again; a sentence."""
        with aws_errors("ec2 StartInstances", f"instance {instance_id}"):
            self.ec2.start_instances(InstanceIds=[instance_id])
        return f"{instance_id} starting"

    # --- what inv launch creates: each resource tagged Project=<project> as it is made ---------

    def _tags(self, **extra: str) -> dict[str, str]:
        return {TAG_PROJECT: self.project, **extra}

    def create_group(self, name: str, description: str, vpc_id: str) -> str:
        """Create the project's security group ``name`` in ``vpc_id``; its id."""
        with aws_errors("ec2 CreateSecurityGroup", f"security group {name}"):
            response = self.ec2.create_security_group(
                GroupName=name,
                Description=description,
                VpcId=vpc_id,
                TagSpecifications=[tag_spec("security-group", self._tags(**{TAG_NAME: name}))],
            )
        return response["GroupId"]

    def tag_project(self, resource_id: str, what: str) -> str:
        """Tag ``resource_id`` as the project's (``Project=<project>``); its id."""
        with aws_errors("ec2 CreateTags", what):
            self.ec2.create_tags(
                Resources=[resource_id], Tags=[{"Key": TAG_PROJECT, "Value": self.project}]
            )
        return resource_id

    def authorize_ingress(self, group_id: str, permission: IpPermissionTypeDef, what: str) -> str:
        """Let ``permission`` into group ``group_id`` (no change if it is there); the group id."""
        try:
            with aws_errors("ec2 AuthorizeSecurityGroupIngress", what):
                self.ec2.authorize_security_group_ingress(
                    GroupId=group_id, IpPermissions=[permission]
                )
        except AwsError as exc:
            if error_code(exc) != "InvalidPermission.Duplicate":
                raise
        return group_id

    def revoke_ingress(
        self,
        group_id: str,
        what: str,
        *,
        rule_id: str = "",
        permission: IpPermissionTypeDef | None = None,
    ) -> str:
        """Revoke an ingress rule of ``group_id``, by its id or else by its permission (no change
        if it is gone); the group id."""
        try:
            with aws_errors("ec2 RevokeSecurityGroupIngress", what):
                if rule_id:
                    self.ec2.revoke_security_group_ingress(
                        GroupId=group_id, SecurityGroupRuleIds=[rule_id]
                    )
                elif permission is not None:
                    self.ec2.revoke_security_group_ingress(
                        GroupId=group_id, IpPermissions=[permission]
                    )
                else:
                    raise ValueError("revoke_ingress needs a rule id or a permission")
        except AwsError as exc:
            if error_code(exc) != "InvalidPermission.NotFound":
                raise
        return group_id

    def run_instance(
        self,
        *,
        role: str,
        epoch: int,
        image_id: str,
        instance_type: InstanceTypeType,
        subnet_id: str,
        group_id: str,
        key_name: str,
        what: str,
    ) -> InstanceTypeDef:
        """Start the project's ``role`` instance, IMDSv2 only, tagged with its role and epoch
        (its root volume too); the instance as EC2 describes it."""
        name = self.name_tag(role)
        extra: dict[str, Any] = {"KeyName": key_name} if key_name else {}
        with aws_errors("ec2 RunInstances", what):
            response = self.ec2.run_instances(
                ImageId=image_id,
                InstanceType=instance_type,
                MinCount=1,
                MaxCount=1,
                SubnetId=subnet_id,
                SecurityGroupIds=[group_id],
                MetadataOptions={"HttpTokens": "required", "HttpEndpoint": "enabled"},
                TagSpecifications=[
                    tag_spec(
                        "instance",
                        self._tags(**{TAG_ROLE: role, TAG_EPOCH: str(epoch), TAG_NAME: name}),
                    ),
                    tag_spec("volume", self._tags(**{TAG_NAME: f"{name}-root"})),
                ],
                **extra,
            )
        return response["Instances"][0]

    def wait_running(self, instance_id: str, timeout: float, what: str) -> None:
        """Wait until the instance is running (``timeout`` seconds at most)."""
        with aws_errors("ec2 wait InstanceRunning", what):
            self.ec2.get_waiter("instance_running").wait(
                InstanceIds=[instance_id], WaiterConfig=waiter_config(timeout)
            )

    def require_imdsv2(self, instance_id: str, what: str) -> str:
        """Make the instance's metadata service answer only requests with a token; its id."""
        with aws_errors("ec2 ModifyInstanceMetadataOptions", what):
            self.ec2.modify_instance_metadata_options(
                InstanceId=instance_id, HttpTokens="required", HttpEndpoint="enabled"
            )
        return instance_id

    def create_data_volume(
        self,
        instance_id: str,
        zone: str,
        size_gb: int,
        volume_type: VolumeTypeType,
        what: str,
        kms_key_arn: str = "",
    ) -> VolumeResponseTypeDef:
        """Create an encrypted volume in ``zone`` tagged ``DataFor=<instance_id>``, with the KMS
        key ``kms_key_arn`` (empty: AWS's own EBS key); the volume as EC2 describes it."""
        tags = self._tags(
            **{TAG_DATA_FOR: instance_id, TAG_NAME: f"{self.project}-data-{instance_id}"}
        )
        key: dict[str, Any] = {"KmsKeyId": kms_key_arn} if kms_key_arn else {}
        with aws_errors("ec2 CreateVolume", f"{what} in {zone}"):
            return self.ec2.create_volume(
                AvailabilityZone=zone,
                Size=size_gb,
                VolumeType=volume_type,
                Encrypted=True,
                TagSpecifications=[tag_spec("volume", tags)],
                **key,
            )

    def wait_volume_available(self, volume_id: str, timeout: float, what: str) -> None:
        """Wait until the volume is created and free to attach (``timeout`` seconds at most)."""
        with aws_errors("ec2 wait VolumeAvailable", f"{what} ({volume_id})"):
            self.ec2.get_waiter("volume_available").wait(
                VolumeIds=[volume_id], WaiterConfig=waiter_config(timeout)
            )

    def attach_data_volume(
        self, volume_id: str, instance_id: str, device: str, timeout: float, what: str
    ) -> str:
        """Attach the volume to the instance at ``device`` and wait until it is in use; its id."""
        with aws_errors("ec2 AttachVolume", f"{what} ({volume_id} to {instance_id})"):
            self.ec2.attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device=device)
        with aws_errors("ec2 wait VolumeInUse", f"{what} ({volume_id})"):
            self.ec2.get_waiter("volume_in_use").wait(
                VolumeIds=[volume_id], WaiterConfig=waiter_config(timeout)
            )
        return volume_id

    def keep_on_termination(self, instance_id: str, volume_id: str, device: str, what: str) -> str:
        """Keep the volume when its instance is terminated; ``device`` is where it is attached
        when the instance does not say. The volume id."""
        with aws_errors("ec2 DescribeInstances", f"the block devices of {instance_id}"):
            response = self.ec2.describe_instances(InstanceIds=[instance_id])
        mappings = [
            (m.get("DeviceName", ""), m.get("Ebs", {}).get("VolumeId", ""))
            for r in response.get("Reservations", [])
            for i in r.get("Instances", [])
            for m in i.get("BlockDeviceMappings", [])
        ]
        device = next((name for name, vid in mappings if vid == volume_id), device)
        with aws_errors("ec2 ModifyInstanceAttribute", what):
            self.ec2.modify_instance_attribute(
                InstanceId=instance_id,
                BlockDeviceMappings=[{"DeviceName": device, "Ebs": {"DeleteOnTermination": False}}],
            )
        return volume_id

    def allocate_elastic_ip(self, what: str) -> str:
        """Allocate the project's Elastic IP (``Name=<project>-gitlab``); its allocation id."""
        name = f"{self.project}-gitlab"
        with aws_errors("ec2 AllocateAddress", what):
            response = self.ec2.allocate_address(
                Domain="vpc",
                TagSpecifications=[tag_spec("elastic-ip", self._tags(**{TAG_NAME: name}))],
            )
        return response["AllocationId"]

    def associate_elastic_ip(self, allocation_id: str, instance_id: str, what: str) -> str:
        """Associate a free Elastic IP with the instance (never taking it from another, unlike
        :meth:`move_address`); the association id."""
        with aws_errors("ec2 AssociateAddress", f"{what} ({allocation_id} to {instance_id})"):
            response = self.ec2.associate_address(
                AllocationId=allocation_id, InstanceId=instance_id, AllowReassociation=False
            )
        return response.get("AssociationId", allocation_id)

    def register_ami(
        self, name: str, what: str, root_device: str = "/dev/xvda", root_size_gb: int = 8
    ) -> str:
        """Register an AMI ``name`` with one root volume (the sandbox's, in moto); its id."""
        with aws_errors("ec2 RegisterImage", what):
            return self.ec2.register_image(
                Name=name,
                RootDeviceName=root_device,
                BlockDeviceMappings=[
                    {"DeviceName": root_device, "Ebs": {"VolumeSize": root_size_gb}}
                ],
            )["ImageId"]


class Route53Writer:
    """Writes GitLab's A record in Route 53."""

    def __init__(self, route53: Route53Client) -> None:
        self.route53 = route53

    def create_zone(self, name: str, reference: str) -> str:
        """Make the hosted zone ``name`` (the sandbox's stand-in for a company's own zone: no
        task makes one); its id. ``reference`` makes a second call with it a no-op."""
        with aws_errors("route53 CreateHostedZone", name):
            response = self.route53.create_hosted_zone(Name=name, CallerReference=reference)
        return response["HostedZone"]["Id"]

    def upsert_address(self, zone_id: str, name: str, ip: str, ttl: int, what: str) -> str:
        """Make ``name`` an A record of ``ip`` with ``ttl`` (created or replaced); the change id."""
        with aws_errors("route53 ChangeResourceRecordSets", what):
            response = self.route53.change_resource_record_sets(
                HostedZoneId=zone_id,
                ChangeBatch={
                    "Comment": "gitlab-dr: GitLab's address",
                    "Changes": [
                        {
                            "Action": "UPSERT",
                            "ResourceRecordSet": {
                                "Name": name,
                                "Type": "A",
                                "TTL": ttl,
                                "ResourceRecords": [{"Value": ip}],
                            },
                        }
                    ],
                },
            )
        return response["ChangeInfo"]["Id"]

    def wait_in_sync(self, change_id: str, timeout: float, what: str) -> None:
        """Wait until every Route 53 server answers with the change (``timeout`` at most)."""
        with aws_errors("route53 wait ResourceRecordSetsChanged", what):
            self.route53.get_waiter("resource_record_sets_changed").wait(
                Id=change_id, WaiterConfig=waiter_config(timeout, max_delay=10.0)
            )
