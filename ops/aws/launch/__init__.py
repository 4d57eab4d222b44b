"""``inv launch``: create or find the pair in AWS, idempotently, by tags.

Three steps, so that ``--dry-run`` and the tests can stop between them:

1. :func:`~.read.read_world` checks what must hold before anything is created (the settings
   the rules come from, the AMI, the VPC and its subnets (the default ones, or VPC_ID's
   SUBNET_IDS) and the paths between them, the instance type, the key pair, the KMS key, the
   hosted zone) and reads what exists: the two security groups by name, the instances, data
   volumes and Elastic IP by tags, GitLab's DNS record, the price table.
2. :func:`~.plan.make_plan` is pure: from the settings and that snapshot it lists the actions,
   each with the reason it is needed, or refuses with a sentence; and prices the pair.
3. :func:`~.apply.apply` performs the actions in order, through :mod:`ops.aws.writer`.

The modules: :mod:`.model` (the types), :mod:`.read`, :mod:`.plan`, :mod:`.price`, :mod:`.apply`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ops.aws.client import ec2_client
from ops.aws.inventory import describe_pair
from ops.aws.launch.apply import apply
from ops.aws.launch.model import GROUPS, Done, LaunchPlan, LaunchReport
from ops.aws.launch.plan import make_plan
from ops.aws.launch.read import read_world
from ops.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_kms import KMSClient
    from mypy_boto3_route53 import Route53Client

__all__ = ["GROUPS", "Done", "LaunchPlan", "LaunchReport", "apply", "launch", "plan_launch"]


def plan_launch(
    settings: Settings,
    ec2: EC2Client,
    *,
    kms: KMSClient | None = None,
    route53: Route53Client | None = None,
) -> LaunchPlan:
    """Check, read and plan: what :func:`apply` would do, with reasons; nothing is created."""
    return make_plan(settings, read_world(settings, ec2, kms=kms, route53=route53))


def launch(
    settings: Settings,
    *,
    dry_run: bool = False,
    ec2: EC2Client | None = None,
    wait_timeout: float | None = None,
    kms: KMSClient | None = None,
    route53: Route53Client | None = None,
) -> LaunchReport:
    """Plan the launch and, unless ``dry_run``, apply it; then read the pair back.

    Refuses, before any AWS call, when ``AMI_ID``, ``ADMIN_CIDR`` or ``CLIENT_CIDRS`` is empty.
    The KMS and Route 53 clients are made from the settings when none is given.
    """
    client = ec2 if ec2 is not None else ec2_client(settings)
    plan = plan_launch(settings, client, kms=kms, route53=route53)
    if dry_run:
        return LaunchReport(plan, (), plan.world.pair, dry_run=True)
    done = apply(plan, client, wait_timeout, route53)
    return LaunchReport(plan, done, describe_pair(settings, client), dry_run=False)
