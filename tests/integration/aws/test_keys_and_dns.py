"""A customer-managed KMS key and GitLab's Route 53 record, against a moto server: the volumes
encrypted with the key, the record made by inv launch and moved as a promotion moves it, the
refusals before anything is created; and every AWS call a launch makes is in its IAM policy."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest
from botocore.client import BaseClient

from ops.aws import dns, iam
from ops.aws.inventory import describe_pair
from ops.aws.launch import launch
from ops.aws.writer import Ec2Writer, Route53Writer
from ops.errors import SettingError
from tests.integration.aws.census import census, data_volumes, instances
from tests.integration.aws.factories import company_vpc, settings_for
from tests.integration.moto_server import MotoServer

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_kms import KMSClient
    from mypy_boto3_route53 import Route53Client


def zone(route53: Route53Client, name: str = "example.com", vpc: str = "") -> str:
    """A hosted zone in moto (private to ``vpc`` when given); its bare id."""
    extra: dict[str, Any] = {}
    if vpc:
        extra = {"VPC": {"VPCRegion": "eu-west-1", "VPCId": vpc},
                 "HostedZoneConfig": {"PrivateZone": True, "Comment": "corp"}}  # fmt: skip
    made = route53.create_hosted_zone(Name=name, CallerReference=name, **extra)
    return made["HostedZone"]["Id"].rsplit("/", 1)[-1]


def a_record(route53: Route53Client, zone_id: str, name: str) -> tuple[list[str], int | None]:
    for item in route53.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]:
        if item["Name"].rstrip(".") == name and item["Type"] == "A":
            return [r["Value"] for r in item.get("ResourceRecords", [])], item.get("TTL")
    return [], None


def nothing_created(ec2: EC2Client) -> bool:
    counts = census(ec2)
    return counts["groups"] == counts["instances"] == counts["volumes"] == 0


@contextmanager
def recorded() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """Every AWS operation made in the block, as (``service:Operation``, its parameters)."""
    made: list[tuple[str, dict[str, Any]]] = []
    original = vars(BaseClient)["_make_api_call"]  # where every call of every client goes

    def record(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        made.append((f"{client.meta.service_model.signing_name}:{operation}", params))
        return original(client, operation, params)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(BaseClient, "_make_api_call", record)
        yield made


# --- the KMS key -------------------------------------------------------------------------------


@pytest.mark.parametrize("by", ["id", "alias"])
def test_data_volumes_are_encrypted_with_the_customer_managed_key(
    moto: MotoServer, ami: str, ec2: EC2Client, kms: KMSClient, by: str
) -> None:
    key = kms.create_key(Description="gitlab-dr data")["KeyMetadata"]
    kms.create_alias(AliasName="alias/gitlab-dr", TargetKeyId=key["KeyId"])
    wanted = key["KeyId"] if by == "id" else "alias/gitlab-dr"
    report = launch(settings_for(moto, AMI_ID=ami, KMS_KEY_ID=wanted))
    volumes = data_volumes(ec2)
    assert len(volumes) == 2
    assert {(v["Encrypted"], v.get("KmsKeyId")) for v in volumes} == {(True, key["Arn"])}
    assert report.plan.world.kms_key is not None
    assert report.plan.world.kms_key.arn == key["Arn"]


def test_without_a_key_the_volumes_use_awss_own_and_kms_is_not_asked(
    moto: MotoServer, ami: str, ec2: EC2Client
) -> None:
    with recorded() as made:
        launch(settings_for(moto, AMI_ID=ami))
    creates = [params for action, params in made if action == "ec2:CreateVolume"]
    assert len(creates) == 2
    assert all(p["Encrypted"] is True and "KmsKeyId" not in p for p in creates)
    assert not [action for action, _ in made if action.startswith("kms:")]
    assert all(v["Encrypted"] for v in data_volumes(ec2))


def test_an_unknown_key_is_refused_before_anything_is_created(
    moto: MotoServer, ami: str, ec2: EC2Client
) -> None:
    with pytest.raises(SettingError) as caught:
        launch(settings_for(moto, AMI_ID=ami, KMS_KEY_ID="alias/nope"))
    assert str(caught.value) == (
        "KMS_KEY_ID alias/nope is not a KMS key of eu-west-1 (kms DescribeKey: "
        "NotFoundException): create one (aws kms create-key) or leave KMS_KEY_ID empty for "
        "AWS's own EBS key; nothing was created"
    )
    assert nothing_created(ec2)


def test_a_disabled_key_is_refused_before_anything_is_created(
    moto: MotoServer, ami: str, ec2: EC2Client, kms: KMSClient
) -> None:
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.disable_key(KeyId=key)
    with pytest.raises(SettingError, match=rf"^KMS_KEY_ID {key} is Disabled, not Enabled: "):
        launch(settings_for(moto, AMI_ID=ami, KMS_KEY_ID=key))
    assert nothing_created(ec2)


# --- the DNS record ----------------------------------------------------------------------------


def test_launch_points_the_record_at_the_elastic_ip_once(
    moto: MotoServer, ami: str, route53: Route53Client
) -> None:
    zone_id = zone(route53)
    settings = settings_for(moto, AMI_ID=ami, DNS_ZONE="example.com")
    report = launch(settings)
    assert report.pair.elastic_ip is not None
    ip = report.pair.elastic_ip.public_ip
    assert a_record(route53, zone_id, "gitlab.example.com") == ([ip], 60)
    assert [d.resource_id for d in report.done if d.action.kind == "point-record"] == [ip]
    again = launch(settings)
    assert again.done == ()
    assert again.plan.found[-1].text() == (
        f"DNS record gitlab.example.com: A {ip}, TTL 60 s in example.com ({zone_id})"
    )


def test_a_private_gitlab_behind_internal_dns_moves_its_record_at_promotion(
    moto: MotoServer, ami: str, ec2: EC2Client, route53: Route53Client
) -> None:
    net = company_vpc(ec2)
    zone_id = zone(route53, "corp.internal", vpc=net.vpc_id)
    settings = settings_for(
        moto, AMI_ID=ami, USE_ELASTIC_IP="false", DNS_ZONE=zone_id,
        DNS_NAME="gitlab.corp.internal", DNS_TTL="30", **net.env(),
    )  # fmt: skip
    launch(settings)
    found = instances(ec2)
    master, slave = found["master"], found["slave"]
    name = "gitlab.corp.internal"
    assert a_record(route53, zone_id, name) == ([master["PrivateIpAddress"]], 30)
    # The promotion's move-address-and-tags step: the tags swap, then the record follows.
    writer = Ec2Writer(settings, ec2)
    writer.tag_role(slave["InstanceId"], "master", 2)
    writer.tag_role(master["InstanceId"], "fenced", 2)
    said = dns.point_at_master(settings, route53, describe_pair(settings, ec2))
    assert a_record(route53, zone_id, name) == ([slave["PrivateIpAddress"]], 30)
    assert said.startswith(
        f"DNS {name} -> {slave['PrivateIpAddress']} (was A {master['PrivateIpAddress']}, TTL "
        "30 s): in Route 53 everywhere at "
    )
    assert said.endswith(" (TTL 30 s)") and "clients that hold the old answer see it by" in said
    assert dns.point_at_master(settings, route53, describe_pair(settings, ec2)) == (
        f"DNS {name} already points at {slave['PrivateIpAddress']} (TTL 30 s)"
    )


def test_a_move_says_clients_may_keep_the_old_answer_for_the_old_ttl(
    moto: MotoServer, route53: Route53Client
) -> None:
    zone_id = zone(route53)
    settings = settings_for(moto, DNS_ZONE=zone_id)
    Route53Writer(route53).upsert_address(zone_id, "gitlab.example.com", "192.0.2.1", 300, "t")
    said = dns.point_record(settings, route53, "192.0.2.2")
    assert said.startswith("DNS gitlab.example.com -> 192.0.2.2 (was A 192.0.2.1, TTL 300 s)")
    assert said.endswith("(the old TTL, 300 s)")
    assert a_record(route53, zone_id, "gitlab.example.com") == (["192.0.2.2"], 60)


@pytest.mark.parametrize(
    ("dns_zone", "said"),
    [
        ("nowhere.example", "DNS_ZONE nowhere.example is not a hosted zone of this account: "),
        (
            "Z0000000000000NOPE",
            "DNS_ZONE Z0000000000000NOPE is not a hosted zone of this account (route53 "
            "GetHostedZone: NoSuchHostedZone): ",
        ),
    ],
)
def test_a_hosted_zone_that_does_not_exist_is_refused_before_anything_is_created(
    moto: MotoServer, ami: str, ec2: EC2Client, dns_zone: str, said: str
) -> None:
    with pytest.raises(SettingError) as caught:
        launch(settings_for(moto, AMI_ID=ami, DNS_ZONE=dns_zone))
    assert str(caught.value).startswith(said)
    assert str(caught.value).endswith(
        "create it, or name an existing one by id or name; nothing was created"
    )
    assert nothing_created(ec2)


def test_a_record_name_outside_the_zone_is_refused(
    moto: MotoServer, ami: str, ec2: EC2Client, route53: Route53Client
) -> None:
    zone_id = zone(route53, "corp.example")
    with pytest.raises(SettingError) as caught:
        launch(settings_for(moto, AMI_ID=ami, DNS_ZONE="corp.example"))
    assert str(caught.value) == (
        f"GITLAB_HOSTNAME (DNS_NAME is empty) gitlab.example.com is not in the hosted zone "
        f"corp.example ({zone_id}): set DNS_NAME to a name under it; nothing was created"
    )
    assert nothing_created(ec2)


# --- least privilege ---------------------------------------------------------------------------


def test_every_call_a_launch_makes_is_in_the_launch_policy(
    moto: MotoServer, ami: str, kms: KMSClient, route53: Route53Client
) -> None:
    zone(route53)
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    settings = settings_for(moto, AMI_ID=ami, DNS_ZONE="example.com", KMS_KEY_ID=key)
    with recorded() as made:
        launch(settings)
        launch(settings, dry_run=True)
    actions = {action for action, _ in made}
    assert {"ec2:RunInstances", "kms:DescribeKey", "route53:ChangeResourceRecordSets"} <= actions
    allowed = set(iam.operator_policy(settings).tasks["launch"])
    assert actions - allowed == set(), "calls the launch makes that its IAM policy lacks"
