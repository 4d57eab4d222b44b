"""The IAM policy the operator needs for every task, derived from the AWS calls the code makes.

Each task's actions are those of the calls :func:`ops.aws.calls.scan` finds in the code the task
can reach. Nothing here lists an action by hand except what cannot be scanned, each with its
source: what Packer calls (:data:`PACKER_AMAZON_EBS`) and what EBS asks of KMS on the caller's
behalf when a customer-managed key encrypts its volumes (:data:`EBS_WITH_A_KMS_KEY`). Route 53
actions are in the policy only with ``DNS_ZONE``, scoped to that zone and to an ``UPSERT`` of
GitLab's A record; KMS actions only with ``KMS_KEY_ID``, scoped to that key.

The instances themselves get no AWS permissions: ``inv launch`` starts them without an
instance profile, and nothing on them calls AWS.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ops.aws.calls import Scan, scan
from ops.aws.dns import record_name
from ops.settings import Settings

TASKS: Mapping[str, str] = {
    "build-ami": "build_ami",
    "launch": "launch",
    "pair": "pair",
    "status": "status",
    "snapshots": "snapshots",
    "verify-slave": "verify_slave",
    "promote-slave": "promote_slave",
    "rebuild-slave": "rebuild_slave",
}
"""The tasks the operator runs against AWS, and their functions in tasks.py."""

# What Packer's amazon-ebs builder calls in inv build-ami. Packer is not Python, so this cannot
# be scanned: it is the minimal policy of the Amazon plugin's documentation, "IAM Task or
# Instance Role" (https://developer.hashicorp.com/packer/integrations/hashicorp/amazon).
PACKER_AMAZON_EBS = (
    "ec2:AttachVolume",
    "ec2:AuthorizeSecurityGroupIngress",
    "ec2:CopyImage",
    "ec2:CreateImage",
    "ec2:CreateKeyPair",
    "ec2:CreateSecurityGroup",
    "ec2:CreateSnapshot",
    "ec2:CreateTags",
    "ec2:CreateVolume",
    "ec2:DeleteKeyPair",
    "ec2:DeleteSecurityGroup",
    "ec2:DeleteSnapshot",
    "ec2:DeleteVolume",
    "ec2:DeregisterImage",
    "ec2:DescribeImageAttribute",
    "ec2:DescribeImages",
    "ec2:DescribeInstanceStatus",
    "ec2:DescribeInstances",
    "ec2:DescribeRegions",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSnapshots",
    "ec2:DescribeSubnets",
    "ec2:DescribeTags",
    "ec2:DescribeVolumes",
    "ec2:DetachVolume",
    "ec2:GetPasswordData",
    "ec2:ModifyImageAttribute",
    "ec2:ModifyInstanceAttribute",
    "ec2:ModifySnapshotAttribute",
    "ec2:RegisterImage",
    "ec2:RunInstances",
    "ec2:StopInstances",
    "ec2:TerminateInstances",
)

# What EBS asks of KMS on the caller's behalf when a customer-managed key encrypts a volume (a
# data volume, the AMI's root volume, an instance's root from that AMI): "Requirements for
# Amazon EBS encryption", Permissions for users
# (https://docs.aws.amazon.com/ebs/latest/userguide/ebs-encryption-requirements.html), with
# CreateGrant only for grants EBS makes (kms:GrantIsForAWSResource), as that page advises.
EBS_WITH_A_KMS_KEY = (
    "kms:CreateGrant",
    "kms:Decrypt",
    "kms:DescribeKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:ReEncrypt*",
)
EBS_KEY_TASKS = ("build-ami", "launch", "rebuild-slave")
"""The tasks that make volumes or start instances from the (encrypted) AMI."""

ROUTE53_ZONE_ACTIONS = frozenset(
    {"route53:ChangeResourceRecordSets", "route53:GetHostedZone", "route53:ListResourceRecordSets"}
)
"""Route 53 actions on a hosted zone; the others (ListHostedZonesByName, GetChange) take none."""
MANAGED_POLICY_LIMIT = 6144
"""IAM's limit on a managed policy's size, in characters without whitespace."""
NO_INSTANCE_PERMISSIONS = (
    "the instances get no AWS permissions: inv launch starts them without an instance profile, "
    "and nothing on them calls AWS"
)


@dataclass(frozen=True)
class Policy:
    """The operator's policy: the actions of each task, and the statements that grant them."""

    tasks: Mapping[str, tuple[str, ...]]
    statements: tuple[dict[str, Any], ...]
    notes: tuple[str, ...]

    def document(self) -> dict[str, Any]:
        """The IAM policy document (``aws iam create-policy --policy-document``)."""
        return {"Version": "2012-10-17", "Statement": list(self.statements)}

    def size(self) -> int:
        """The document's size as IAM counts it (without whitespace)."""
        return len(re.sub(r"\s", "", json.dumps(self.document())))

    def lines(self) -> list[str]:
        """The policy for a person: each task's actions, then the notes."""
        out = ["IAM actions the operator needs, by task (from the AWS calls the code makes):"]
        for task, actions in self.tasks.items():
            out.append(f"  {task}: {', '.join(actions) or 'none'}")
        out.extend(f"note: {note}" for note in self.notes)
        out.append("the policy document: inv iam-policy --json")
        return out


def _key_resource(settings: Settings) -> tuple[str, dict[str, Any]]:
    """The ARN (pattern) of ``KMS_KEY_ID``'s key, and the condition that pins an alias."""
    key, region = settings.kms_key_id, settings.aws_region
    if key.startswith("arn:") and ":key/" in key:
        return key, {}
    if key.startswith("arn:"):  # an alias ARN: arn:aws:kms:REGION:ACCOUNT:alias/NAME
        prefix, _, alias = key.partition(":alias/")
        return f"{prefix}:key/*", {
            "ForAnyValue:StringEquals": {"kms:ResourceAliases": f"alias/{alias}"}
        }
    if key.startswith("alias/"):
        condition = {"ForAnyValue:StringEquals": {"kms:ResourceAliases": key}}
        return f"arn:aws:kms:{region}:*:key/*", condition
    return f"arn:aws:kms:{region}:*:key/{key}", {}


def _zone_resource(settings: Settings) -> str:
    zone = settings.dns_zone
    is_id = "." not in zone and zone.upper() == zone
    return f"arn:aws:route53:::hostedzone/{zone if is_id else '*'}"


def _statement(sid: str, actions: list[str], resource: str, **condition: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "Sid": sid,
        "Effect": "Allow",
        "Action": sorted(set(actions)),
        "Resource": resource,
    }
    merged: dict[str, dict[str, Any]] = {}
    for block in condition.values():
        for operator, keys in block.items():
            merged.setdefault(operator, {}).update(keys)
    if merged:
        out["Condition"] = merged
    return out


def operator_policy(settings: Settings, found: Scan | None = None) -> Policy:
    """The operator's policy for ``settings`` (its region, DNS_ZONE and KMS_KEY_ID)."""
    found = scan() if found is None else found
    dns, key = bool(settings.dns_zone), bool(settings.kms_key_id)
    notes = [NO_INSTANCE_PERMISSIONS]
    if not dns:
        notes.append("no Route 53 action: DNS_ZONE is empty")
    if not key:
        notes.append("no KMS action: KMS_KEY_ID is empty (AWS's own EBS key needs none)")
    wanted = {"ec2"} | ({"route53"} if dns else set()) | ({"kms"} if key else set())
    tasks: dict[str, tuple[str, ...]] = {}
    for task, function in TASKS.items():
        actions = {c.action for c in found.calls_of(f"tasks:{function}")}
        actions = {a for a in actions if a.split(":")[0] in wanted}
        if task == "build-ami":
            actions.update(PACKER_AMAZON_EBS)
        if key and task in EBS_KEY_TASKS:
            actions.update(EBS_WITH_A_KMS_KEY)
        tasks[task] = tuple(sorted(actions))
    every = {a for actions in tasks.values() for a in actions}
    scanned = {c.action for t in TASKS.values() for c in found.calls_of(f"tasks:{t}")}
    statements = [
        _statement(
            "GitlabDrEc2",
            sorted(a for a in every if a.startswith("ec2:") and a in scanned),
            "*",
        ),
        _statement("PackerAmazonEbsBuildAmi", list(PACKER_AMAZON_EBS), "*"),
    ]
    if dns:
        route53 = sorted(a for a in every if a.startswith("route53:"))
        zone = _zone_resource(settings)
        change = "route53:ChangeResourceRecordSets"
        statements.append(
            _statement(
                "GitlabDrDnsRecord",
                [change],
                zone,
                names={
                    "ForAllValues:StringEquals": {
                        "route53:ChangeResourceRecordSetsNormalizedRecordNames": [
                            record_name(settings)
                        ],
                        "route53:ChangeResourceRecordSetsRecordTypes": ["A"],
                        "route53:ChangeResourceRecordSetsActions": ["UPSERT"],
                    }
                },
            )
        )
        reads = [a for a in route53 if a in ROUTE53_ZONE_ACTIONS and a != change]
        statements.append(_statement("GitlabDrDnsZone", reads, zone))
        others = [a for a in route53 if a not in ROUTE53_ZONE_ACTIONS]
        statements.append(_statement("GitlabDrDnsLookups", others, "*"))
    if key:
        resource, alias = _key_resource(settings)
        mine = sorted(a for a in every if a.startswith("kms:") and a in scanned)
        statements.append(_statement("GitlabDrKmsKey", mine, resource, alias=alias))
        uses = [a for a in EBS_WITH_A_KMS_KEY if a != "kms:CreateGrant"]
        via = {"StringEquals": {"kms:ViaService": f"ec2.{settings.aws_region}.amazonaws.com"}}
        statements.append(_statement("EbsUsesTheKmsKey", uses, resource, via=via, alias=alias))
        grant = {"Bool": {"kms:GrantIsForAWSResource": "true"}}
        statements.append(
            _statement(
                "EbsGrantsOnTheKmsKey", ["kms:CreateGrant"], resource, grant=grant, alias=alias
            )
        )
    policy = Policy(tasks, tuple(s for s in statements if s["Action"]), tuple(notes))
    if policy.size() > MANAGED_POLICY_LIMIT:
        notes.append(
            f"the document is {policy.size()} characters, over IAM's {MANAGED_POLICY_LIMIT} for a "
            f"managed policy: split it, by its statements, into two"
        )
        policy = Policy(tasks, policy.statements, tuple(notes))
    return policy
