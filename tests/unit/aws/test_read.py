"""Reading what a launch depends on: rules as AWS lists them, and nothing read without the
settings the rules come from."""

from __future__ import annotations

import pytest

from ops.aws.launch import launch
from ops.aws.launch.model import Rule
from ops.aws.launch.read import rules_of
from ops.errors import SettingError
from tests.unit.aws.factories import settings


def test_rules_are_read_one_source_each_with_their_ids_and_groups_by_name() -> None:
    items = [
        {"SecurityGroupRuleId": "sgr-out", "IsEgress": True, "IpProtocol": "-1",
         "CidrIpv4": "0.0.0.0/0"},
        {"SecurityGroupRuleId": "sgr-1", "IsEgress": False, "IpProtocol": "tcp", "FromPort": 22,
         "ToPort": 22, "CidrIpv4": "198.51.100.0/24"},
        {"SecurityGroupRuleId": "sgr-2", "IsEgress": False, "IpProtocol": "tcp", "FromPort": 80,
         "ToPort": 80, "CidrIpv6": "2001:db8::/32"},
        {"SecurityGroupRuleId": "sgr-3", "IsEgress": False, "IpProtocol": "tcp",
         "FromPort": 2222, "ToPort": 2222, "ReferencedGroupInfo": {"GroupId": "sg-open"}},
        {"SecurityGroupRuleId": "sgr-4", "IsEgress": False, "IpProtocol": "-1", "FromPort": -1,
         "ToPort": -1, "PrefixListId": "pl-1"},
    ]  # fmt: skip
    rules = rules_of(items, {"sg-open": "gitlab-open"})  # type: ignore[arg-type]  # literal items
    assert [(r.text(), r.rule_id) for r in rules] == [
        ("all traffic from prefix list pl-1", "sgr-4"),
        ("tcp 22 from 198.51.100.0/24", "sgr-1"),
        ("tcp 80 from 2001:db8::/32", "sgr-2"),
        ("tcp 2222 from security group gitlab-open", "sgr-3"),
    ]
    assert rules[3] == Rule(2222, 2222, "gitlab-open", "group")


class NoAws:
    """An EC2 client that fails the test at any call."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"launch called ec2 {name} before refusing")


@pytest.mark.parametrize("dry_run", [False, True])
@pytest.mark.parametrize(
    ("admin", "clients", "said"),
    [
        ("", "", "ADMIN_CIDR and CLIENT_CIDRS are not set (inv launch needs them)"),
        ("", "203.0.113.0/24", "ADMIN_CIDR is not set (inv launch needs them)"),
        ("198.51.100.0/24", "", "CLIENT_CIDRS is not set (inv launch needs them)"),
    ],
)
def test_launch_refuses_without_admin_cidr_or_client_cidrs_before_any_aws_call(
    admin: str, clients: str, said: str, dry_run: bool
) -> None:
    empty = settings(ADMIN_CIDR=admin, CLIENT_CIDRS=clients)
    with pytest.raises(SettingError) as caught:
        launch(empty, dry_run=dry_run, ec2=NoAws())  # type: ignore[arg-type]  # a client double
    message = str(caught.value)
    assert message.startswith(said + " (")
    assert "\n" not in message
    for name in ("ADMIN_CIDR", "CLIENT_CIDRS"):
        assert (name in message) == (name in said)


def test_an_empty_ami_id_is_named_with_the_networks_in_one_line() -> None:
    empty = settings(AMI_ID="", ADMIN_CIDR="", CLIENT_CIDRS="")
    with pytest.raises(SettingError) as caught:
        launch(empty, ec2=NoAws())  # type: ignore[arg-type]  # a client double
    assert str(caught.value).startswith(
        "AMI_ID, ADMIN_CIDR, CLIENT_CIDRS are not set (inv launch needs them) ("
    )
