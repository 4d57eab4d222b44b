"""inv launch against a moto server: the pair from scratch, and runs that find part of it."""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING

import pytest

from ops.aws import client as aws
from ops.aws.inventory import describe_pair
from ops.aws.launch import LaunchReport, apply, launch, plan_launch
from ops.settings import Settings
from tests.integration.aws.census import (
    CLIENT_PORTS,
    COMPLETE,
    WHOLE_INTERNET,
    census,
    data_volumes,
    groups,
    ingress,
    instances,
    tags,
)
from tests.integration.aws.factories import (
    ADMIN,
    CLIENTS,
    METRICS_PORT,
    PROJECT,
    REGION,
    SYNC_PORT,
    settings_for,
)
from tests.integration.moto_server import MotoServer

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client


# --- launch from scratch, resource by resource --------------------------------------------


def test_launch_from_scratch_creates_the_whole_pair(launched: LaunchReport, ec2: EC2Client) -> None:
    assert census(ec2) == COMPLETE
    assert launched.plan.found == ()
    lines = launched.lines()
    assert f"done ({len(launched.plan.actions)} steps):" in lines
    assert not any(line.startswith("to do") for line in lines)
    assert lines[-1].startswith("  Elastic IP ") and lines[-1].endswith(" on master")
    assert {d.action.kind for d in launched.done} >= {
        "create-group",
        "authorize",
        "run-instance",
        "create-volume",
        "attach-volume",
        "allocate-eip",
        "associate-eip",
    }


def test_gitlab_open_allows_gitlab_ports_from_client_cidrs_and_ssh_from_admin(
    launched: LaunchReport, ec2: EC2Client
) -> None:
    found = groups(ec2)
    names = {g["GroupId"]: n for n, g in found.items()}
    expected = {("tcp", p, p, cidr) for p in CLIENT_PORTS for cidr in CLIENTS}
    expected.add(("tcp", 22, 22, ADMIN))
    expected.add(("tcp", METRICS_PORT, METRICS_PORT, ADMIN))
    assert ingress(found["gitlab-open"], names) == expected
    assert tags(found["gitlab-open"])["Project"] == PROJECT


def test_gitlab_slave_allows_only_sync_from_gitlab_open_and_ssh_from_admin(
    launched: LaunchReport, ec2: EC2Client
) -> None:
    found = groups(ec2)
    names = {g["GroupId"]: n for n, g in found.items()}
    assert ingress(found["gitlab-slave"], names) == {
        ("tcp", SYNC_PORT, SYNC_PORT, "group:gitlab-open"),
        ("tcp", 22, 22, ADMIN),
        ("tcp", METRICS_PORT, METRICS_PORT, ADMIN),
    }
    assert tags(found["gitlab-slave"])["Project"] == PROJECT


def test_no_rule_opens_admin_ssh_or_the_sync_port_to_the_world(
    launched: LaunchReport, ec2: EC2Client
) -> None:
    found = groups(ec2)
    names = {g["GroupId"]: n for n, g in found.items()}
    for group in found.values():
        for protocol, low, high, source in ingress(group, names):
            guarded = [p for p in (22, SYNC_PORT) if protocol == "-1" or low <= p <= high]
            assert not (guarded and source in WHOLE_INTERNET), (group["GroupName"], low, source)


def test_instances_run_from_the_ami_in_two_zones_with_imdsv2_and_tags(
    launched: LaunchReport, ec2: EC2Client, ami: str
) -> None:
    found = instances(ec2)
    assert set(found) == {"master", "slave"}
    master, slave = found["master"], found["slave"]
    assert master["Placement"]["AvailabilityZone"] == "eu-west-1a"
    assert slave["Placement"]["AvailabilityZone"] == "eu-west-1b"
    for role, instance in found.items():
        assert instance["ImageId"] == ami
        assert instance["InstanceType"] == "m5.large"
        assert instance["MetadataOptions"]["HttpTokens"] == "required"
        assert tags(instance) == {
            "Project": PROJECT,
            "Role": role,
            "Epoch": "1",
            "Name": f"{PROJECT}-{role}",
        }
    assert [g["GroupName"] for g in master["SecurityGroups"]] == ["gitlab-open"]
    assert [g["GroupName"] for g in slave["SecurityGroups"]] == ["gitlab-slave"]


def test_each_data_volume_is_encrypted_attached_in_its_zone_and_outlives_its_instance(
    launched: LaunchReport, ec2: EC2Client
) -> None:
    found = instances(ec2)
    volumes = {tags(v)["DataFor"]: v for v in data_volumes(ec2)}
    assert len(volumes) == 2
    for instance in found.values():
        volume = volumes[instance["InstanceId"]]
        assert volume["AvailabilityZone"] == instance["Placement"]["AvailabilityZone"]
        assert volume["Encrypted"] is True
        assert volume["Size"] == 20
        assert volume["VolumeType"] == "gp3"
        assert volume["State"] == "in-use"
        assert [a["InstanceId"] for a in volume["Attachments"]] == [instance["InstanceId"]]
        assert tags(volume)["Project"] == PROJECT
        mapping = next(
            m for m in instance["BlockDeviceMappings"] if m["Ebs"]["VolumeId"] == volume["VolumeId"]
        )
        assert mapping["DeviceName"] == "/dev/sdf"
        assert mapping["Ebs"]["DeleteOnTermination"] is False


def test_the_elastic_ip_is_tagged_and_associated_with_the_master(
    launched: LaunchReport, ec2: EC2Client
) -> None:
    [address] = ec2.describe_addresses()["Addresses"]
    assert tags(address) == {"Project": PROJECT, "Name": f"{PROJECT}-gitlab"}
    assert address["InstanceId"] == instances(ec2)["master"]["InstanceId"]


def test_describe_pair_reads_roles_zones_addresses_groups_epoch_and_eip_holder(
    launched: LaunchReport, settings: Settings, ec2: EC2Client
) -> None:
    pair = describe_pair(settings, ec2)
    assert pair == launched.pair
    assert pair.problems() == ()
    assert pair.master is not None
    assert pair.slave is not None
    assert (pair.master.zone, pair.slave.zone) == ("eu-west-1a", "eu-west-1b")
    assert pair.master.security_groups == ("gitlab-open",)
    assert pair.slave.security_groups == ("gitlab-slave",)
    assert pair.master.state == pair.slave.state == "running"
    assert pair.master.private_ip and pair.slave.private_ip
    assert pair.slave.public_ip
    assert pair.elastic_ip is not None
    assert pair.master.public_ip == pair.elastic_ip.public_ip
    assert pair.eip_holder == "master"
    assert pair.epoch == 1
    assert pair.master.imdsv2_required and pair.slave.imdsv2_required
    assert json.loads(json.dumps(pair.to_dict()))["eip_holder"] == "master"
    with pytest.raises(dataclasses.FrozenInstanceError):
        pair.project = "other"  # type: ignore[misc]


# --- idempotence and runs cut short --------------------------------------------------------


def test_second_launch_creates_nothing_new(launched: LaunchReport, settings: Settings) -> None:
    ec2 = aws.ec2_client(settings)
    before = census(ec2)
    again = launch(settings)
    assert again.plan.actions == ()
    assert again.done == ()
    assert census(ec2) == before == COMPLETE
    assert again.pair == launched.pair
    assert "nothing to do: the pair is complete" in again.lines()


def test_a_run_cut_short_after_any_step_is_finished_by_the_next_run(
    moto: MotoServer, ami: str
) -> None:
    settings = settings_for(moto, AMI_ID=ami)
    steps = len(plan_launch(settings, moto.ec2(REGION)).actions)
    assert steps > 10
    for cut in range(1, steps):
        moto.reset()
        ec2 = moto.ec2(REGION)
        image = ec2.register_image(
            Name="gitlab-dr-test",
            RootDeviceName="/dev/xvda",
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 8}}],
        )["ImageId"]
        settings = settings_for(moto, AMI_ID=image)
        plan = plan_launch(settings, ec2)
        apply(dataclasses.replace(plan, actions=plan.actions[:cut]), ec2)
        resumed = plan_launch(settings, ec2)
        assert len(resumed.actions) == steps - cut, (cut, [a.text() for a in resumed.actions])
        launch(settings, ec2=ec2)
        assert census(ec2) == COMPLETE, f"cut after step {cut}: {plan.actions[cut - 1].text()}"
        assert plan_launch(settings, ec2).actions == ()


def test_launch_reattaches_a_detached_data_volume_instead_of_making_another(
    launched: LaunchReport, settings: Settings, ec2: EC2Client
) -> None:
    slave = instances(ec2)["slave"]
    volume = next(v for v in data_volumes(ec2) if tags(v)["DataFor"] == slave["InstanceId"])
    ec2.detach_volume(VolumeId=volume["VolumeId"], InstanceId=tags(volume)["DataFor"])
    plan = plan_launch(settings, aws.ec2_client(settings))
    assert [a.text() for a in plan.actions] == [
        f"attach the slave's data volume {volume['VolumeId']} at /dev/sdf: "
        "an earlier run created it but did not attach it"
    ]
    launch(settings)
    assert census(ec2) == COMPLETE


def test_launch_recreates_a_deleted_data_volume_in_the_instance_zone(
    launched: LaunchReport, settings: Settings, ec2: EC2Client
) -> None:
    master = instances(ec2)["master"]
    volume = next(v for v in data_volumes(ec2) if tags(v)["DataFor"] == master["InstanceId"])
    ec2.detach_volume(VolumeId=volume["VolumeId"], InstanceId=tags(volume)["DataFor"])
    ec2.delete_volume(VolumeId=volume["VolumeId"])
    launch(settings)
    assert census(ec2) == COMPLETE
    [new] = [v for v in data_volumes(ec2) if tags(v)["DataFor"] == master["InstanceId"]]
    assert new["AvailabilityZone"] == master["Placement"]["AvailabilityZone"]
    assert new["Encrypted"] is True


def test_launch_associates_an_elastic_ip_left_unassociated(
    launched: LaunchReport, settings: Settings, ec2: EC2Client
) -> None:
    [address] = ec2.describe_addresses()["Addresses"]
    ec2.disassociate_address(AssociationId=address["AssociationId"])
    plan = plan_launch(settings, ec2)
    assert [a.kind for a in plan.actions] == ["associate-eip"]
    launch(settings)
    [address] = ec2.describe_addresses()["Addresses"]
    assert address["InstanceId"] == instances(ec2)["master"]["InstanceId"]
    assert census(ec2) == COMPLETE


def test_launch_restores_a_deleted_rule_and_revokes_a_world_open_admin_rule(
    launched: LaunchReport, settings: Settings, ec2: EC2Client
) -> None:
    found = groups(ec2)
    slave_group = found["gitlab-slave"]["GroupId"]
    open_group = found["gitlab-open"]["GroupId"]
    [sync_rule] = [
        r
        for r in ec2.describe_security_group_rules(
            Filters=[{"Name": "group-id", "Values": [slave_group]}]
        )["SecurityGroupRules"]
        if not r["IsEgress"] and r["FromPort"] == SYNC_PORT
    ]
    ec2.revoke_security_group_ingress(
        GroupId=slave_group, SecurityGroupRuleIds=[sync_rule["SecurityGroupRuleId"]]
    )
    ec2.authorize_security_group_ingress(
        GroupId=open_group,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 22,
                "ToPort": 22,
                "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
            }
        ],
    )
    plan = plan_launch(settings, ec2)
    assert sorted(a.text() for a in plan.actions) == [
        "allow tcp 2222 from security group gitlab-open on gitlab-slave: the rule is missing",
        "revoke tcp 22 from 0.0.0.0/0 on gitlab-open: it is not declared and opens port 22 "
        "to the whole internet",
    ]
    launch(settings)
    assert census(ec2) == COMPLETE
    assert plan_launch(settings, ec2).actions == ()


def test_launch_requires_imdsv2_on_an_instance_that_lost_it(
    launched: LaunchReport, settings: Settings, ec2: EC2Client
) -> None:
    master = instances(ec2)["master"]["InstanceId"]
    ec2.modify_instance_metadata_options(InstanceId=master, HttpTokens="optional")
    plan = plan_launch(settings, ec2)
    assert [a.text() for a in plan.actions] == [
        f"require IMDSv2 on the master instance {master}: its metadata service accepts "
        "requests without a token (IMDSv1)"
    ]
    launch(settings)
    assert instances(ec2)["master"]["MetadataOptions"]["HttpTokens"] == "required"


def test_a_lost_slave_is_relaunched_in_the_other_zone_at_the_pair_epoch(
    launched: LaunchReport, settings: Settings, ec2: EC2Client
) -> None:
    found = instances(ec2)
    ec2.create_tags(
        Resources=[found["master"]["InstanceId"]], Tags=[{"Key": "Epoch", "Value": "3"}]
    )
    ec2.terminate_instances(InstanceIds=[found["slave"]["InstanceId"]])
    report = launch(settings)
    assert report.pair.slave is not None
    assert report.pair.slave.instance_id != found["slave"]["InstanceId"]
    assert report.pair.slave.zone == "eu-west-1b"
    assert report.pair.slave.epoch == 3
    assert any("which is gone; it is kept and may hold GitLab data" in n for n in report.plan.notes)
