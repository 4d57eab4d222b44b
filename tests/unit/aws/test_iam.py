"""The operator's IAM policy is derived from the AWS calls the code makes: the scan finds them,
each task gets those it can reach, and a call the scan cannot attribute fails a test."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import botocore.session
import pytest
from botocore import xform_name
from invoke.context import Context

import tasks
from ops.aws import calls, iam
from tests.unit.aws.factories import settings

FEATURES = {
    "DNS_ZONE": "Z0123456789ABCDEFGHIJ",
    "DNS_NAME": "gitlab.corp.example",
    "KMS_KEY_ID": "arn:aws:kms:eu-west-1:111122223333:key/0123abcd-0123-4567-89ab-0123456789ab",
}


@pytest.fixture(scope="module")
def found() -> calls.Scan:
    return calls.scan()


def granted(policy: iam.Policy) -> set[str]:
    return {a for s in policy.document()["Statement"] for a in s["Action"]}


# --- the scan ----------------------------------------------------------------------------------


def test_the_scan_maps_client_calls_paginators_and_waiters_to_iam_actions(
    found: calls.Scan,
) -> None:
    actions = {c.action for c in found.every_call()}
    assert {
        "ec2:RunInstances",  # self.ec2.run_instances in the writer
        "ec2:DescribeInstances",  # ec2.get_paginator("describe_instances") in the inventory
        "ec2:DescribeVolumes",  # get_waiter("volume_available")
        "ec2:DescribeNetworkAcls",
        "route53:ChangeResourceRecordSets",
        "route53:GetChange",  # get_waiter("resource_record_sets_changed")
        "kms:DescribeKey",
    } <= actions
    assert all(c.where.startswith("ops/") and ":" in c.where for c in found.every_call())


def test_no_call_named_like_an_aws_operation_escapes_the_scan(found: calls.Scan) -> None:
    # A client under another name (client.run_instances, getattr) would be missing from the
    # policy: name it ec2, route53 or kms.
    assert found.unattributed == ()


def test_every_aws_call_in_the_code_is_reachable_from_a_task(found: calls.Scan) -> None:
    entries = [key for key in found.defs if key.startswith("tasks:")]
    reached = {c for key in entries for c in found.calls_of(key)}
    assert set(found.every_call()) - reached == set()


def test_each_task_gets_the_calls_of_the_code_it_reaches(found: calls.Scan) -> None:
    status = {c.action for c in found.calls_of("tasks:status")}
    launch = {c.action for c in found.calls_of("tasks:launch")}
    promote = {c.action for c in found.calls_of("tasks:promote_slave")}
    assert {"ec2:DescribeInstances", "ec2:DescribeAddresses"} <= status
    assert not {a for a in status if not a.startswith("ec2:Describe")}, "status only reads"
    assert {"ec2:RunInstances", "ec2:CreateVolume", "route53:ChangeResourceRecordSets"} <= launch
    assert {"ec2:AssociateAddress", "ec2:ModifyInstanceAttribute", "ec2:CreateTags"} <= promote
    assert "ec2:RunInstances" not in promote
    # The sandbox's and the drill's calls stay out of the operator's tasks.
    assert not {"ec2:RegisterImage", "ec2:StopInstances"} & (status | launch | promote)


def write(root: Path, name: str, text: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def test_a_call_added_to_the_code_joins_the_policy_of_the_task_that_reaches_it(
    tmp_path: Path,
) -> None:
    write(tmp_path, "ops/__init__.py", "")
    write(
        tmp_path,
        "ops/net.py",
        """
        class Reader:
            def __init__(self, ec2):
                self.ec2 = ec2

            def vpcs(self):
                return self.ec2.describe_vpcs()

        def wait(ec2):
            ec2.get_waiter("instance_running").wait(InstanceIds=[])

        STEPS = (wait,)
        """,
    )
    write(
        tmp_path,
        "tasks.py",
        """
        from ops import net
        from ops.net import Reader

        def look(ec2):
            return Reader(ec2).vpcs()

        def steps(ec2):
            for step in net.STEPS:
                step(ec2)

        def other(client):
            client.run_instances()
        """,
    )
    found = calls.scan(tmp_path)
    assert {c.action for c in found.calls_of("tasks:look")} == {"ec2:DescribeVpcs"}
    assert {c.action for c in found.calls_of("tasks:steps")} == {"ec2:DescribeInstances"}
    assert found.calls_of("tasks:other") == []
    assert found.unattributed == ("tasks.py:13 run_instances",)


# --- the policy --------------------------------------------------------------------------------


def test_every_action_an_operator_task_calls_is_granted(found: calls.Scan) -> None:
    policy = iam.operator_policy(settings(**FEATURES), found)
    for task, function in iam.TASKS.items():
        needed = {c.action for c in found.calls_of(f"tasks:{function}")}
        assert needed <= set(policy.tasks[task]), task
        assert needed <= granted(policy), task


def test_every_granted_action_is_an_operation_of_its_service(found: calls.Scan) -> None:
    session = botocore.session.get_session()
    policy = iam.operator_policy(settings(**FEATURES), found)
    for action in granted(policy):
        service, name = action.split(":")
        names = session.get_service_model(service).operation_names
        assert name in names or (name.endswith("*") and any(n.startswith(name[:-1]) for n in names))
        assert service == "kms" or xform_name(name) in calls.operations(service)


def test_build_ami_gets_what_packer_documents_and_the_ebs_key_actions(found: calls.Scan) -> None:
    policy = iam.operator_policy(settings(**FEATURES), found)
    assert set(iam.PACKER_AMAZON_EBS) <= set(policy.tasks["build-ami"])
    assert set(iam.EBS_WITH_A_KMS_KEY) <= set(policy.tasks["build-ami"])
    assert set(iam.EBS_WITH_A_KMS_KEY) <= set(policy.tasks["launch"])
    assert not set(iam.EBS_WITH_A_KMS_KEY) & set(policy.tasks["status"])


def test_route53_and_kms_are_granted_only_with_dns_zone_and_kms_key_id(
    found: calls.Scan,
) -> None:
    plain = iam.operator_policy(settings(), found)
    assert {a.split(":")[0] for a in granted(plain)} == {"ec2"}
    assert "no Route 53 action: DNS_ZONE is empty" in plain.notes
    full = iam.operator_policy(settings(**FEATURES), found)
    assert {a.split(":")[0] for a in granted(full)} == {"ec2", "route53", "kms"}


def test_the_record_and_the_key_are_the_only_resources_of_their_writes(
    found: calls.Scan,
) -> None:
    document = iam.operator_policy(settings(**FEATURES), found).document()
    by_sid = {s["Sid"]: s for s in document["Statement"]}
    record = by_sid["GitlabDrDnsRecord"]
    assert record["Action"] == ["route53:ChangeResourceRecordSets"]
    assert record["Resource"] == "arn:aws:route53:::hostedzone/Z0123456789ABCDEFGHIJ"
    names = record["Condition"]["ForAllValues:StringEquals"]
    assert names["route53:ChangeResourceRecordSetsNormalizedRecordNames"] == ["gitlab.corp.example"]
    assert names["route53:ChangeResourceRecordSetsActions"] == ["UPSERT"]
    for sid in ("GitlabDrKmsKey", "EbsUsesTheKmsKey", "EbsGrantsOnTheKmsKey"):
        assert by_sid[sid]["Resource"] == FEATURES["KMS_KEY_ID"]
    grant = by_sid["EbsGrantsOnTheKmsKey"]["Condition"]
    assert grant == {"Bool": {"kms:GrantIsForAWSResource": "true"}}
    assert by_sid["EbsUsesTheKmsKey"]["Condition"]["StringEquals"] == {
        "kms:ViaService": "ec2.eu-west-1.amazonaws.com"
    }


def test_a_key_named_by_alias_is_pinned_by_a_condition(found: calls.Scan) -> None:
    document = iam.operator_policy(settings(KMS_KEY_ID="alias/gitlab"), found).document()
    [key] = [s for s in document["Statement"] if s["Sid"] == "GitlabDrKmsKey"]
    assert key["Resource"] == "arn:aws:kms:eu-west-1:*:key/*"
    assert key["Condition"] == {"ForAnyValue:StringEquals": {"kms:ResourceAliases": "alias/gitlab"}}


def test_the_document_fits_a_managed_policy(found: calls.Scan) -> None:
    policy = iam.operator_policy(settings(**FEATURES), found)
    assert 0 < policy.size() <= iam.MANAGED_POLICY_LIMIT
    assert policy.document()["Version"] == "2012-10-17"
    assert all(s["Effect"] == "Allow" and s["Action"] for s in policy.document()["Statement"])


def test_inv_iam_policy_prints_the_tasks_or_the_document(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = tmp_path / "t.env"
    env.write_text("DNS_ZONE=example.com\n")
    monkeypatch.setenv("ENV_FILE", str(env))
    tasks.iam_policy(Context(), json=True)
    document = json.loads(capsys.readouterr().out)
    assert {s["Sid"] for s in document["Statement"]} >= {"GitlabDrEc2", "GitlabDrDnsRecord"}
    tasks.iam_policy(Context())
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("IAM actions the operator needs, by task")
    assert any(line.startswith("  promote-slave: ec2:AssociateAddress") for line in out)
    assert f"note: {iam.NO_INSTANCE_PERMISSIONS}" in out
