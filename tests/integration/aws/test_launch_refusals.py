"""inv launch against a moto server: refusals, errors as sentences, and the task's output."""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING

import pytest
from invoke.context import Context
from invoke.exceptions import Exit

import tasks
from ops.aws import client as aws
from ops.aws.launch import LaunchReport, apply, launch, plan_launch
from ops.errors import AwsError, Refusal, SettingError
from ops.settings import Settings
from tests.integration.aws.census import census, instances
from tests.integration.aws.factories import PROJECT, REGION, settings_for
from tests.integration.moto_server import MotoServer

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client


# --- refusals and errors ------------------------------------------------------------------


def test_missing_ami_is_one_clear_error_and_nothing_is_created(moto: MotoServer) -> None:
    settings = settings_for(moto, AMI_ID="ami-0123456789abcdef0")
    ec2 = moto.ec2(REGION)
    before = census(ec2)
    with pytest.raises(AwsError) as caught:
        launch(settings)
    assert str(caught.value) == (
        "AMI_ID ami-0123456789abcdef0 does not exist in eu-west-1 (ec2 DescribeImages: "
        "InvalidAMIID.NotFound): build one with inv build-ami, or set the id of an AMI of "
        "this region; nothing was created"
    )
    assert census(ec2) == before
    assert before["groups"] == before["instances"] == 0


def test_empty_ami_id_is_a_setting_error_before_any_call(moto: MotoServer) -> None:
    with pytest.raises(SettingError, match=r"^AMI_ID is not set \("):
        launch(settings_for(moto))


def test_a_zone_the_region_does_not_have_is_refused_before_anything_is_created(
    moto: MotoServer, ami: str
) -> None:
    settings = settings_for(moto, AMI_ID=ami, AVAILABILITY_ZONES="eu-west-1a,eu-west-1z")
    with pytest.raises(SettingError) as caught:
        launch(settings)
    assert str(caught.value) == (
        "AVAILABILITY_ZONES names eu-west-1z, which is not an available zone of eu-west-1 "
        "(available: eu-west-1a, eu-west-1b, eu-west-1c)"
    )
    assert census(moto.ec2(REGION))["groups"] == 0


def test_chosen_zones_are_used(moto: MotoServer, ami: str) -> None:
    report = launch(settings_for(moto, AMI_ID=ami, AVAILABILITY_ZONES="eu-west-1c,eu-west-1a"))
    assert report.pair.master is not None
    assert report.pair.slave is not None
    assert (report.pair.master.zone, report.pair.slave.zone) == ("eu-west-1c", "eu-west-1a")


def test_a_region_aws_does_not_have_is_a_setting_error(moto: MotoServer) -> None:
    settings = settings_for(moto, AMI_ID="ami-0123456789abcdef0", AWS_REGION="xx-nowhere-1")
    with pytest.raises(SettingError, match=r"^AWS_REGION xx-nowhere-1 is not an AWS region"):
        launch(settings)


def test_an_unknown_instance_type_is_a_setting_error(moto: MotoServer, ami: str) -> None:
    settings = settings_for(moto, AMI_ID=ami, INSTANCE_TYPE="m5.enormous")
    with pytest.raises(SettingError) as caught:
        launch(settings)
    assert str(caught.value) == "INSTANCE_TYPE m5.enormous is not an EC2 instance type in eu-west-1"


def test_a_missing_key_pair_is_a_setting_error(moto: MotoServer, ami: str) -> None:
    settings = settings_for(moto, AMI_ID=ami, KEY_NAME="operator")
    with pytest.raises(SettingError, match=r"^KEY_NAME operator is not a key pair of eu-west-1"):
        launch(settings)
    moto.ec2(REGION).create_key_pair(KeyName="operator")
    report = launch(settings)
    assert report.pair.master is not None
    assert instances(moto.ec2(REGION))["master"]["KeyName"] == "operator"


def test_dry_run_lists_every_step_and_changes_nothing(moto: MotoServer, ami: str) -> None:
    settings = settings_for(moto, AMI_ID=ami)
    ec2 = moto.ec2(REGION)
    before = census(ec2)
    report = launch(settings, dry_run=True)
    assert census(ec2) == before
    assert report.done == ()
    text = report.lines()
    assert text[-1] == "dry run: nothing was changed"
    assert "  1. create security group gitlab-open: it does not exist in " in text[2]
    assert any(
        line.endswith(
            "launch the master instance: no live instance is tagged Project=gitlab-dr-test "
            "Role=master; it starts in eu-west-1a with gitlab-open, epoch 1"
        )
        for line in text
    )
    launch(settings)
    assert launch(settings, dry_run=True).lines()[-2] == "nothing to do: the pair is complete"


def test_launch_refuses_to_start_an_empty_master_beside_a_surviving_slave(
    launched: LaunchReport, settings: Settings, ec2: EC2Client
) -> None:
    found = instances(ec2)
    ec2.terminate_instances(InstanceIds=[found["master"]["InstanceId"]])
    before = census(ec2)
    with pytest.raises(Refusal) as caught:
        launch(settings)
    assert str(caught.value) == (
        f"the slave {found['slave']['InstanceId']} exists but no live instance is tagged "
        f"Project={PROJECT} Role=master: promote the slave (inv promote-slave) instead of "
        f"launching an empty master next to it"
    )
    assert census(ec2) == before


def test_launch_refuses_when_the_elastic_ip_is_on_the_slave(
    launched: LaunchReport, settings: Settings, ec2: EC2Client
) -> None:
    [address] = ec2.describe_addresses()["Addresses"]
    slave = instances(ec2)["slave"]["InstanceId"]
    ec2.associate_address(
        AllocationId=address["AllocationId"], InstanceId=slave, AllowReassociation=True
    )
    with pytest.raises(Refusal) as caught:
        launch(settings)
    assert str(caught.value) == (
        f"the Elastic IP {address['PublicIp']} is associated with the slave {slave}, not with "
        "the master: a promotion may be half done; finish it with inv promote-slave, or "
        "disassociate the address"
    )


def test_a_failure_midway_names_the_call_the_resource_and_how_far_it_got(
    moto: MotoServer, ami: str
) -> None:
    settings = settings_for(moto, AMI_ID=ami)
    ec2 = moto.ec2(REGION)
    plan = plan_launch(settings, ec2)
    first_run = plan.actions.index(next(a for a in plan.actions if a.kind == "run-instance"))
    apply(dataclasses.replace(plan, actions=plan.actions[:first_run]), ec2)
    resumed = plan_launch(settings, ec2)
    ec2.delete_security_group(GroupName="gitlab-slave")
    with pytest.raises(AwsError) as caught:
        apply(resumed, ec2)
    message = str(caught.value)
    assert message.startswith(
        "ec2 RunInstances for the slave instance failed: InvalidGroup.NotFound"
    )
    assert message.endswith(
        "(1 of 8 launch steps were done; inv launch finishes the rest when run again)"
    )


def test_an_unreachable_endpoint_is_one_sentence(moto: MotoServer, ami: str) -> None:
    settings = settings_for(moto, AMI_ID=ami, AWS_ENDPOINT_URL="http://127.0.0.1:9")
    with pytest.raises(AwsError) as caught:
        plan_launch(settings, aws.ec2_client(settings, max_attempts=1))
    assert str(caught.value) == (
        f"ec2 DescribeImages for AMI {ami} failed: could not reach the endpoint http://127.0.0.1:9/"
    )


def test_missing_credentials_are_one_sentence(
    moto: MotoServer, ami: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    with pytest.raises(AwsError) as caught:
        launch(settings_for(moto, AMI_ID=ami))
    assert str(caught.value) == (
        f"ec2 DescribeImages for AMI {ami} failed: no AWS credentials were found (set "
        "AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run on a host with an "
        "instance role)"
    )


def test_inv_launch_dry_run_prints_the_plan(
    task_env: str, moto: MotoServer, capsys: pytest.CaptureFixture[str]
) -> None:
    tasks.launch(Context(), dry_run=True)
    out = capsys.readouterr().out
    assert out.startswith(f"launch plan for project {PROJECT} in {REGION} (vpc-")
    assert "dry run: nothing was changed" in out
    assert census(moto.ec2(REGION))["groups"] == 0


def test_inv_launch_json_reports_what_it_created_and_the_pair(
    task_env: str, moto: MotoServer, capsys: pytest.CaptureFixture[str]
) -> None:
    tasks.launch(Context(), json=True)
    report = json.loads(capsys.readouterr().out)
    assert report["dry_run"] is False
    assert len(report["done"]) == len(report["plan"]["actions"])
    assert report["pair"]["eip_holder"] == "master"
    assert [h["role"] for h in report["pair"]["hosts"]] == ["master", "slave"]
    tasks.launch(Context(), json=True)
    again = json.loads(capsys.readouterr().out)
    assert again["done"] == []
    assert again["plan"]["actions"] == []


def test_inv_launch_turns_a_missing_ami_into_a_one_line_error(
    task_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMI_ID", "ami-0123456789abcdef0")
    with pytest.raises(Exit) as caught:
        tasks.launch(Context())
    assert caught.value.code == 1
    assert str(caught.value.message).startswith(
        "error: AMI_ID ami-0123456789abcdef0 does not exist"
    )


def test_inv_launch_without_admin_and_client_cidrs_is_one_line_and_changes_nothing(
    task_env: str, moto: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADMIN_CIDR", "")
    monkeypatch.setenv("CLIENT_CIDRS", "")
    for dry_run in (True, False):
        with pytest.raises(Exit) as caught:
            tasks.launch(Context(), dry_run=dry_run)
        assert caught.value.code == 1
        message = str(caught.value.message)
        assert message.startswith("error: ADMIN_CIDR and CLIENT_CIDRS are not set (")
        assert "\n" not in message
    assert census(moto.ec2(REGION))["groups"] == 0
