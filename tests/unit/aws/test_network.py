"""The paths between the two subnets, as pure logic: routes by longest prefix, network ACLs by
rule number; and the plan's DNS record and Elastic IP as the settings choose them."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from ops.aws.dns import DnsView, Record, Zone, record_name, visible_by
from ops.aws.launch.plan import make_plan
from ops.aws.network import acl_of, acl_verdict, route_to, table_of
from tests.unit.aws.factories import complete, settings, world

PEER = "10.0.2.0/24"


def entry(
    number: int, action: str, cidr: str = "10.0.0.0/16", **extra: object
) -> dict[str, object]:
    return {"RuleNumber": number, "RuleAction": action, "CidrBlock": cidr, "Egress": False,
            "Protocol": "-1", **extra}  # fmt: skip


@pytest.mark.parametrize(
    ("entries", "allowed", "rule"),
    [
        ([entry(100, "allow"), entry(32767, "deny", "0.0.0.0/0")], True, 100),
        ([entry(90, "deny", Protocol="6", PortRange={"From": 2222, "To": 2222}),
          entry(100, "allow")], False, 90),
        ([entry(100, "allow", Protocol="6", PortRange={"From": 22, "To": 22})], False, None),
        ([entry(100, "allow", "10.0.2.0/25"), entry(200, "allow", "10.0.2.0/24")], True, 200),
        ([entry(100, "deny", "10.0.2.128/25"), entry(200, "allow")], False, 100),
        ([entry(100, "allow", Protocol="17")], False, None),
        ([], False, None),
    ],
    ids=["allow-all", "deny-first", "other-port", "partial-then-full",
         "deny-part", "udp-only", "no-rules"],
)  # fmt: skip
def test_an_acl_lets_the_sync_port_through_only_when_its_first_matching_rules_allow_all_of_it(
    entries: list[dict[str, object]], allowed: bool, rule: int | None
) -> None:
    verdict = acl_verdict(entries, egress=False, peer=PEER, ports=(2222, 2222))
    assert (verdict.allowed, verdict.rule) == (allowed, rule)


def test_egress_rules_do_not_decide_ingress_and_the_ephemeral_range_must_be_covered() -> None:
    outbound = [{**entry(100, "allow"), "Egress": True}]
    assert not acl_verdict(outbound, egress=False, peer=PEER, ports=(2222, 2222)).allowed
    narrow = [entry(100, "allow", Protocol="6", PortRange={"From": 1024, "To": 40000})]
    assert not acl_verdict(narrow, egress=False, peer=PEER, ports=(32768, 60999)).allowed
    wide = [entry(100, "allow", Protocol="6", PortRange={"From": 1024, "To": 65535})]
    assert acl_verdict(wide, egress=False, peer=PEER, ports=(32768, 60999)).allowed


def test_a_route_is_the_longest_active_prefix_that_covers_the_other_subnet() -> None:
    table = {
        "Routes": [
            {"DestinationCidrBlock": "10.0.0.0/16", "GatewayId": "local", "State": "active"},
            {"DestinationCidrBlock": "10.0.2.0/23", "NetworkInterfaceId": "eni-fw",
             "State": "active"},
            {"DestinationCidrBlock": "10.0.2.0/24", "GatewayId": "vgw-1", "State": "blackhole"},
            {"DestinationCidrBlock": "0.0.0.0/0", "GatewayId": "igw-1", "State": "active"},
        ]
    }  # fmt: skip
    assert route_to(table, PEER) == table["Routes"][1]
    assert route_to(table, "192.0.2.0/24") == table["Routes"][3]
    assert route_to({"Routes": table["Routes"][:1]}, "192.0.2.0/24") is None


def test_a_subnet_without_its_own_table_or_acl_uses_the_vpcs_main_table_and_default_acl() -> None:
    tables = [
        {"RouteTableId": "rtb-main", "Associations": [{"Main": True}]},
        {"RouteTableId": "rtb-a", "Associations": [{"SubnetId": "subnet-a"}]},
    ]
    assert table_of("subnet-a", tables) == tables[1]
    assert table_of("subnet-b", tables) == tables[0]
    acls = [{"NetworkAclId": "acl-default", "IsDefault": True, "Associations": []}]
    assert acl_of("subnet-b", acls) == acls[0]


# --- the plan's Elastic IP and DNS record ------------------------------------------------------

ZONE = Zone("Z1", "example.com", False)


def with_record(*values: str, ttl: int | None = 60) -> DnsView:
    return DnsView(ZONE, Record("gitlab.example.com", values, ttl))


def test_without_an_elastic_ip_the_plan_allocates_none_and_leaves_a_tagged_one() -> None:
    s = settings(USE_ELASTIC_IP="false", DNS_ZONE="example.com")
    kinds = [a.kind for a in make_plan(s, world()).actions]
    assert "allocate-eip" not in kinds
    assert "associate-eip" not in kinds
    plan = make_plan(s, complete(s))
    assert plan.notes == (
        "the Elastic IP 198.51.100.7 (eipalloc-1) is tagged Project=pair but USE_ELASTIC_IP is "
        "false: launch leaves it as it is (release it once nothing uses it)",
    )


def test_the_record_is_pointed_last_at_the_elastic_ip_when_it_does_not_exist() -> None:
    s = settings(DNS_ZONE="example.com")
    plan = make_plan(s, dataclasses.replace(world(), dns=with_record()))
    assert plan.actions[-1].text() == (
        "point the DNS record gitlab.example.com at the Elastic IP: it does not exist in "
        "example.com (Z1)"
    )


def test_a_record_at_the_master_is_found_and_a_stale_one_repointed() -> None:
    s = settings(DNS_ZONE="example.com")
    right = make_plan(s, dataclasses.replace(complete(s), dns=with_record("198.51.100.7")))
    assert right.actions == ()
    assert right.found[-1].text() == (
        "DNS record gitlab.example.com: A 198.51.100.7, TTL 60 s in example.com (Z1)"
    )
    stale = make_plan(s, dataclasses.replace(complete(s), dns=with_record("192.0.2.9", ttl=300)))
    assert [a.text() for a in stale.actions] == [
        "point the DNS record gitlab.example.com at the Elastic IP: it is A 192.0.2.9, TTL "
        "300 s, not 198.51.100.7 with TTL 60 s"
    ]


def test_a_private_gitlabs_record_points_at_the_masters_private_address() -> None:
    s = settings(DNS_ZONE="example.com", USE_ELASTIC_IP="false")
    found = make_plan(s, dataclasses.replace(complete(s), dns=with_record("172.31.0.10")))
    assert [a.kind for a in found.actions] == []
    moved = make_plan(s, dataclasses.replace(complete(s), dns=with_record("198.51.100.7")))
    assert [a.target for a in moved.actions] == [
        "the DNS record gitlab.example.com at the master's private address"
    ]


def test_clients_see_a_moved_record_once_the_answers_they_hold_expire() -> None:
    synced = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
    assert visible_by(60, synced) == dt.datetime(2026, 1, 1, 12, 1, tzinfo=dt.UTC)
    assert record_name(settings()) == "gitlab.example.com"
    assert record_name(settings(DNS_NAME="git.corp.example.")) == "git.corp.example"
