"""inv launch into a company's own VPC against a moto server: private subnets, public ones, and
every wrong choice refused in one sentence before anything is created."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Literal

import pytest
from invoke.context import Context

import tasks
from ops.aws.launch import launch, plan_launch
from ops.errors import Refusal, SettingError
from tests.integration.aws.census import census, groups, instances
from tests.integration.aws.factories import REGION, SYNC_PORT, company_vpc, settings_for
from tests.integration.moto_server import MotoServer

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import PortRangeTypeDef


def nothing_created(ec2: EC2Client) -> bool:
    counts = census(ec2)
    return counts["groups"] == counts["instances"] == counts["elastic ips"] == 0


def test_a_private_pair_runs_in_the_company_subnets_without_any_public_address(
    moto: MotoServer, ami: str, ec2: EC2Client
) -> None:
    net = company_vpc(ec2)
    settings = settings_for(moto, AMI_ID=ami, USE_ELASTIC_IP="false", **net.env())
    report = launch(settings)
    found = instances(ec2)
    for role, subnet in zip(("master", "slave"), net.subnets, strict=True):
        assert found[role]["SubnetId"] == subnet
        assert found[role]["VpcId"] == net.vpc_id
        assert "PublicIpAddress" not in found[role]
    assert found["master"]["Placement"]["AvailabilityZone"] == "eu-west-1b"
    assert found["slave"]["Placement"]["AvailabilityZone"] == "eu-west-1c"
    assert {g["VpcId"] for g in groups(ec2).values()} == {net.vpc_id}
    counts = census(ec2)
    assert (counts["instances"], counts["data volumes"], counts["elastic ips"]) == (2, 2, 0)
    assert report.plan.world.subnets == (
        ("eu-west-1b", net.subnets[0]),
        ("eu-west-1c", net.subnets[1]),
    )
    assert "USE_ELASTIC_IP is false and DNS_ZONE is empty" in report.plan.notes[0]
    again = plan_launch(settings, ec2)
    assert again.actions == ()
    assert again.cost is not None
    assert "public IPv4" not in [item.what for item in again.cost.items]


def test_public_company_subnets_get_the_elastic_ip_on_the_master(
    moto: MotoServer, ami: str, ec2: EC2Client
) -> None:
    net = company_vpc(ec2, public=True)
    report = launch(settings_for(moto, AMI_ID=ami, **net.env()))
    assert report.pair.eip_holder == "master"
    assert instances(ec2)["master"]["SubnetId"] == net.subnets[0]


def test_a_pair_in_another_vpc_is_refused_rather_than_split_across_two(
    moto: MotoServer, ami: str, ec2: EC2Client
) -> None:
    launch(settings_for(moto, AMI_ID=ami))
    master = instances(ec2)["master"]
    net = company_vpc(ec2)
    before = census(ec2)
    with pytest.raises(Refusal) as caught:
        launch(settings_for(moto, AMI_ID=ami, USE_ELASTIC_IP="false", **net.env()))
    assert str(caught.value) == (
        f"the master {master['InstanceId']} runs in {master['VpcId']}, not in {net.vpc_id}: a "
        "pair lives in one VPC; set VPC_ID and SUBNET_IDS to where it runs"
    )
    assert census(ec2) == before


def test_inv_launch_dry_run_shows_the_monthly_cost_in_text_and_json(
    task_env: str, moto: MotoServer, capsys: pytest.CaptureFixture[str]
) -> None:
    tasks.launch(Context(), dry_run=True)
    out = capsys.readouterr().out.splitlines()
    [head] = [line for line in out if line.startswith("monthly cost of the pair in eu-west-1: ")]
    assert "as of 2025-01-01 from ops/aws/prices.json" in head
    assert "  instances: 2 x m5.xlarge x 730 h at $0.214/h = $312.44" in out
    assert any(
        line.startswith("  public IPv4: 2 (the Elastic IP, the slave's own)") for line in out
    )
    tasks.launch(Context(), dry_run=True, json=True)
    bill = json.loads(capsys.readouterr().out)["plan"]["cost"]
    assert bill["total_monthly"] > 312.44
    assert bill["complete"] is True
    assert nothing_created(moto.ec2(REGION))


# --- refusals ----------------------------------------------------------------------------------


def test_a_subnet_outside_the_vpc_is_refused(moto: MotoServer, ami: str, ec2: EC2Client) -> None:
    mine = company_vpc(ec2)
    other = company_vpc(ec2, cidr="10.50.0.0/16")
    env = {"VPC_ID": mine.vpc_id, "SUBNET_IDS": f"{mine.subnets[0]},{other.subnets[1]}"}
    with pytest.raises(SettingError) as caught:
        launch(settings_for(moto, AMI_ID=ami, USE_ELASTIC_IP="false", **env))
    assert str(caught.value) == (
        f"SUBNET_IDS names {other.subnets[1]}, which is in {other.vpc_id}, not in VPC_ID "
        f"{mine.vpc_id}; nothing was created"
    )
    assert nothing_created(ec2)


def test_two_subnets_in_one_zone_are_refused(moto: MotoServer, ami: str, ec2: EC2Client) -> None:
    net = company_vpc(ec2)
    third = ec2.create_subnet(
        VpcId=net.vpc_id, CidrBlock="10.40.3.0/24", AvailabilityZone="eu-west-1b"
    )
    env = {"VPC_ID": net.vpc_id, "SUBNET_IDS": f"{net.subnets[0]},{third['Subnet']['SubnetId']}"}
    with pytest.raises(SettingError) as caught:
        launch(settings_for(moto, AMI_ID=ami, USE_ELASTIC_IP="false", **env))
    assert str(caught.value) == (
        f"SUBNET_IDS names two subnets in eu-west-1b ({net.subnets[0]}, "
        f"{third['Subnet']['SubnetId']}): the master and the slave need two different zones; "
        "nothing was created"
    )
    assert nothing_created(ec2)


@pytest.mark.parametrize("which", ["subnet", "vpc", "vpc-alone", "zones"])
def test_a_vpc_or_subnet_that_is_not_there_or_disagrees_is_refused(
    moto: MotoServer, ami: str, ec2: EC2Client, which: str
) -> None:
    net = company_vpc(ec2)
    env, said = {
        "subnet": (
            {**net.env(), "SUBNET_IDS": f"{net.subnets[0]},subnet-0123456789abcdef0"},
            "SUBNET_IDS names subnet-0123456789abcdef0, which is not a subnet of eu-west-1; "
            "nothing was created",
        ),
        "vpc": (
            {**net.env(), "VPC_ID": "vpc-0123456789abcdef0"},
            "VPC_ID vpc-0123456789abcdef0 is not a VPC of eu-west-1; nothing was created",
        ),
        "vpc-alone": (
            {"VPC_ID": net.vpc_id},
            "VPC_ID is set but SUBNET_IDS is not: a chosen VPC needs both (VPC_ID, and one of its "
            "subnets in each of two zones in SUBNET_IDS); nothing was created",
        ),
        "zones": (
            {**net.env(), "AVAILABILITY_ZONES": "eu-west-1a,eu-west-1b"},
            "AVAILABILITY_ZONES (eu-west-1a, eu-west-1b) disagrees with the zones of SUBNET_IDS "
            "(eu-west-1b, eu-west-1c): leave it empty, the subnets say the zones; nothing was "
            "created",
        ),
    }[which]
    with pytest.raises(SettingError) as caught:
        launch(settings_for(moto, AMI_ID=ami, USE_ELASTIC_IP="false", **env))
    assert str(caught.value) == said
    assert nothing_created(ec2)


def test_private_subnets_with_an_elastic_ip_are_refused(
    moto: MotoServer, ami: str, ec2: EC2Client
) -> None:
    net = company_vpc(ec2)
    with pytest.raises(SettingError) as caught:
        launch(settings_for(moto, AMI_ID=ami, **net.env()))
    assert str(caught.value).startswith(
        f"USE_ELASTIC_IP is true but {net.subnets[0]} (eu-west-1b) has no route to an internet "
        "gateway, so the Elastic IP would not reach GitLab there: choose public subnets, or set "
        "USE_ELASTIC_IP=false"
    )
    assert nothing_created(ec2)


def test_a_network_acl_that_blocks_the_sync_port_is_refused_naming_its_rule(
    moto: MotoServer, ami: str, ec2: EC2Client
) -> None:
    net = company_vpc(ec2)
    acl = ec2.create_network_acl(VpcId=net.vpc_id)["NetworkAcl"]["NetworkAclId"]
    rules: list[tuple[int, Literal["allow", "deny"], bool, PortRangeTypeDef]] = [
        (90, "deny", False, {"From": SYNC_PORT, "To": SYNC_PORT}),
        (100, "allow", False, {"From": 0, "To": 65535}),
        (100, "allow", True, {"From": 0, "To": 65535}),
    ]
    for number, action, egress, ports in rules:
        ec2.create_network_acl_entry(
            NetworkAclId=acl, RuleNumber=number, Protocol="6", RuleAction=action,
            Egress=egress, CidrBlock="10.40.0.0/16", PortRange=ports,
        )  # fmt: skip
    [current] = ec2.describe_network_acls(
        Filters=[{"Name": "association.subnet-id", "Values": [net.subnets[1]]}]
    )["NetworkAcls"]
    [association] = [a for a in current["Associations"] if a["SubnetId"] == net.subnets[1]]
    ec2.replace_network_acl_association(
        AssociationId=association["NetworkAclAssociationId"], NetworkAclId=acl
    )
    with pytest.raises(SettingError) as caught:
        launch(settings_for(moto, AMI_ID=ami, USE_ELASTIC_IP="false", **net.env()))
    assert str(caught.value) == (
        f"the network ACL {acl} of {net.subnets[1]} blocks tcp {SYNC_PORT} (the sync port) in "
        f"from {net.subnets[0]} ({net.cidrs[0]}): rule 90 denies it, so the sidecars could not "
        "sync; nothing was created"
    )
    assert nothing_created(ec2)
