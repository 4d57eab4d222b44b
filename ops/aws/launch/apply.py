"""Performing a launch plan: each step through the one EC2 writer, in the plan's order.

Every resource is tagged in the call that creates it, so a run cut short leaves only resources
the next run finds and finishes: an instance without its data volume, a volume tagged
``DataFor=<instance>`` but not attached, an Elastic IP tagged with the project but not
associated. :data:`HANDLERS` says which method performs each kind of step.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from ops.aws import dns
from ops.aws.client import route53_client
from ops.aws.inventory import ROLES, describe_pair
from ops.aws.launch.model import (
    DATA_DEVICE,
    DATA_VOLUME_TYPE,
    GROUP_DESCRIPTIONS,
    Action,
    ActionKind,
    Done,
    LaunchPlan,
    Rule,
)
from ops.aws.launch.read import instance_type
from ops.aws.writer import Ec2Writer
from ops.errors import AwsError

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import (
        IpPermissionTypeDef,
        IpRangeTypeDef,
        Ipv6RangeTypeDef,
        PrefixListIdTypeDef,
        UserIdGroupPairTypeDef,
    )
    from mypy_boto3_route53 import Route53Client


def apply(
    plan: LaunchPlan,
    ec2: EC2Client,
    wait_timeout: float | None = None,
    route53: Route53Client | None = None,
) -> tuple[Done, ...]:
    """Perform the plan's steps in order; a failure says how far it got.

    ``wait_timeout`` bounds each wait (an instance running, a volume available or in use);
    it defaults to ``AWS_WAIT_TIMEOUT``. ``route53`` is made from the settings when a step
    needs it and none is given.
    """
    timeout = plan.settings.aws_wait_timeout if wait_timeout is None else wait_timeout
    state = _Apply(plan, Ec2Writer(plan.settings, ec2), timeout, route53)
    done: list[Done] = []
    for action in plan.actions:
        try:
            done.append(Done(action, HANDLERS[action.kind](state, action)))
        except AwsError as exc:
            raise AwsError(
                f"{exc} ({len(done)} of {len(plan.actions)} launch steps were done; "
                f"inv launch finishes the rest when run again)"
            ) from exc.__cause__ or exc
    return tuple(done)


class _Apply:
    """The state of one apply: the ids known so far and what still has to be waited for."""

    def __init__(
        self,
        plan: LaunchPlan,
        writer: Ec2Writer,
        wait_timeout: float,
        route53: Route53Client | None = None,
    ) -> None:
        self.plan = plan
        self.writer = writer
        self.route53 = route53
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

    def _group_id(self, name: str) -> str:
        return self.group_ids.get(name, name)

    def _create_group(self, action: Action) -> str:
        group_id = self.writer.create_group(
            action.group, GROUP_DESCRIPTIONS[action.group], self.plan.world.vpc_id
        )
        self.group_ids[action.group] = group_id
        return group_id

    def _tag_group(self, action: Action) -> str:
        return self.writer.tag_project(action.resource_id, action.target)

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
        permission = self._permission(action.needs_rule(), True)
        return self.writer.authorize_ingress(
            self._group_id(action.group), permission, action.target
        )

    def _revoke(self, action: Action) -> str:
        rule = action.needs_rule()
        group_id = self._group_id(action.group)
        if rule.rule_id:
            return self.writer.revoke_ingress(group_id, action.target, rule_id=rule.rule_id)
        permission = self._permission(rule, False)
        return self.writer.revoke_ingress(group_id, action.target, permission=permission)

    def _run_instance(self, action: Action) -> str:
        role = action.needs_role()
        instance = self.writer.run_instance(
            role=role,
            epoch=self.plan.epoch,
            image_id=self.plan.world.ami.image_id,
            instance_type=instance_type(self.settings),
            subnet_id=self.plan.world.subnet(action.zone),
            group_id=self._group_id(action.group),
            key_name=self.settings.key_name,
            what=action.target,
        )
        instance_id = instance["InstanceId"]
        self.instance_ids[role] = instance_id
        self.zones[role] = instance.get("Placement", {}).get("AvailabilityZone", action.zone)
        self.starting.add(instance_id)
        return instance_id

    def _running(self, role: str) -> str:
        """The id of the ``role`` instance, once it runs (waiting for one this run started)."""
        instance_id = self.instance_ids[role]
        if instance_id in self.starting:
            what = f"the {role} instance {instance_id}"
            self.writer.wait_running(instance_id, self.timeout, what)
            self.starting.discard(instance_id)
        return instance_id

    def _require_imdsv2(self, action: Action) -> str:
        return self.writer.require_imdsv2(action.resource_id, action.target)

    def _create_volume(self, action: Action) -> str:
        role = action.needs_role()
        response = self.writer.create_data_volume(
            self.instance_ids[role],
            self.zones[role],
            self.settings.data_volume_gb,
            DATA_VOLUME_TYPE,
            action.target,
            self.plan.world.kms_key.arn if self.plan.world.kms_key else "",
        )
        volume_id = response["VolumeId"]
        self.volume_ids[role] = volume_id
        if response.get("State") != "available":
            self.creating.add(volume_id)
        return volume_id

    def _attach_volume(self, action: Action) -> str:
        role = action.needs_role()
        volume_id = action.resource_id or self.volume_ids[role]
        instance_id = self._running(role)
        if volume_id in self.creating:
            self.writer.wait_volume_available(volume_id, self.timeout, action.target)
            self.creating.discard(volume_id)
        return self.writer.attach_data_volume(
            volume_id, instance_id, DATA_DEVICE, self.timeout, action.target
        )

    def _keep_volume(self, action: Action) -> str:
        instance_id = self.instance_ids[action.needs_role()]
        return self.writer.keep_on_termination(
            instance_id, action.resource_id, DATA_DEVICE, action.target
        )

    def _allocate_eip(self, action: Action) -> str:
        self.allocation_id = self.writer.allocate_elastic_ip(action.target)
        return self.allocation_id

    def _associate_eip(self, action: Action) -> str:
        allocation_id = action.resource_id or self.allocation_id
        instance_id = self._running("master")
        return self.writer.associate_elastic_ip(allocation_id, instance_id, action.target)

    def _point_record(self, action: Action) -> str:
        # The pair as it is now: the Elastic IP this run allocated, or the master it started.
        pair = describe_pair(self.settings, self.writer.ec2)
        target = dns.target_ip(self.settings, pair)
        if target is None:
            raise AwsError(f"{action.target}: the pair has no address for it yet")
        if self.route53 is None:
            self.route53 = route53_client(self.settings)
        dns.point_record(self.settings, self.route53, target, wait=False)
        return target


HANDLERS: Mapping[ActionKind, Callable[[_Apply, Action], str]] = {
    "create-group": _Apply._create_group,
    "tag-group": _Apply._tag_group,
    "authorize": _Apply._authorize,
    "revoke": _Apply._revoke,
    "run-instance": _Apply._run_instance,
    "require-imdsv2": _Apply._require_imdsv2,
    "create-volume": _Apply._create_volume,
    "attach-volume": _Apply._attach_volume,
    "keep-volume": _Apply._keep_volume,
    "allocate-eip": _Apply._allocate_eip,
    "associate-eip": _Apply._associate_eip,
    "point-record": _Apply._point_record,
}
"""The method that performs each kind of step (a unit test checks that every kind has one)."""
