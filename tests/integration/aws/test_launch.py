"""inv launch against a moto server: real boto3 over HTTP to 127.0.0.1, never AWS."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from invoke.context import Context
from invoke.exceptions import Exit

import tasks
from ops.aws import client as aws
from ops.aws.inventory import describe_pair
from ops.aws.launch import LaunchReport, apply, launch, plan_launch
from ops.errors import AwsError, Refusal, SettingError
from ops.settings import Settings, load
from tests.integration.moto_server import MotoServer, moto, moto_server

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import InstanceTypeDef, SecurityGroupTypeDef

__all__ = ["moto", "moto_server"]  # fixtures, imported for pytest

PROJECT = "gitlab-dr-test"
REGION = "eu-west-1"
ADMIN = "198.51.100.0/24"
CLIENTS = ("203.0.113.0/24", "2001:db8::/32")
CLIENT_PORTS = (80, 443, 2424, 5050)
SYNC_PORT = 2222
WORLD = ("0.0.0.0/0", "::/0")


def settings_for(server: MotoServer, **overrides: str) -> Settings:
    """Settings for the tests, read from an explicit environment (never the real one)."""
    environ = {
        "PROJECT_NAME": PROJECT,
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL": server.url,
        "CLIENT_CIDRS": ",".join(CLIENTS),
        "ADMIN_CIDR": ADMIN,
        "SYNC_PORT": str(SYNC_PORT),
        "INSTANCE_TYPE": "m5.large",
        "DATA_VOLUME_GB": "20",
        "AWS_WAIT_TIMEOUT": "30s",
        **overrides,
    }
    return load(environ=environ, env_file=Path("/nonexistent/gitlab-dr-test.env"))


@pytest.fixture
def ec2(moto: MotoServer) -> EC2Client:
    return moto.ec2(REGION)


@pytest.fixture
def ami(ec2: EC2Client) -> str:
    """An AMI registered in the moto server, as inv build-ami would leave one."""
    return ec2.register_image(
        Name="gitlab-dr-test",
        RootDeviceName="/dev/xvda",
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 8}}],
    )["ImageId"]


@pytest.fixture
def settings(moto: MotoServer, ami: str) -> Settings:
    return settings_for(moto, AMI_ID=ami)


@pytest.fixture
def launched(settings: Settings) -> LaunchReport:
    return launch(settings)


# --- looking at what is there ------------------------------------------------------------


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
        "rules on gitlab-open": len(CLIENT_PORTS) * len(CLIENTS) + 1,
        "rules on gitlab-slave": 2,
        "elastic ips": 1,
        "associated elastic ips": 1,
    }
)


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
            assert not (guarded and source in WORLD), (group["GroupName"], low, source)


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


# --- the task ------------------------------------------------------------------------------


@pytest.fixture
def task_env(moto: MotoServer, ami: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The environment inv launch reads: an env file for the test, nothing from the real one."""
    env_file = tmp_path / "test.env"
    env_file.write_text(
        "\n".join(
            [
                f"PROJECT_NAME={PROJECT}",
                f"AWS_REGION={REGION}",
                f"AMI_ID={ami}",
                f"CLIENT_CIDRS={','.join(CLIENTS)}",
                f"ADMIN_CIDR={ADMIN}",
                "AWS_WAIT_TIMEOUT=30s",
            ]
        )
        + "\n"
    )
    monkeypatch.setenv("ENV_FILE", str(env_file))
    return ami


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
