"""The launch plan as pure logic: the declared rules, the steps and refusals, the zones."""

from __future__ import annotations

import dataclasses

import pytest

from ops.aws.inventory import ElasticIp
from ops.aws.launch.model import Rule
from ops.aws.launch.plan import desired_rules, make_plan
from ops.aws.network import pick_zones
from ops.errors import AwsError, Refusal, SettingError
from tests.unit.aws.factories import complete, host, settings, volume, world

# --- the declared rules -------------------------------------------------------------------


def test_gitlab_open_rules_are_client_ports_from_client_cidrs_and_ssh_from_admin() -> None:
    rules = desired_rules(settings(CLIENT_CIDRS="203.0.113.0/24,2001:db8::/32"))
    assert sorted(r.text() for r in rules["gitlab-open"]) == sorted(
        [
            *(
                f"tcp {p} from {c}"
                for p in (80, 443, 2424, 5050)
                for c in ("203.0.113.0/24", "2001:db8::/32")
            ),
            "tcp 22 from 198.51.100.0/24",
            "tcp 9187 from 198.51.100.0/24",
        ]
    )


def test_gitlab_slave_takes_sync_only_from_the_gitlab_open_group() -> None:
    rules = desired_rules(settings(SYNC_PORT="2222"))
    assert [r.text() for r in rules["gitlab-slave"]] == [
        "tcp 2222 from security group gitlab-open",
        "tcp 22 from 198.51.100.0/24",
        "tcp 9187 from 198.51.100.0/24",
    ]


def test_no_declared_rule_opens_ssh_or_sync_to_the_world_even_with_world_clients() -> None:
    s = settings(CLIENT_CIDRS="0.0.0.0/0,::/0")
    for rules in desired_rules(s).values():
        for rule in rules:
            if rule.covers(22) or rule.covers(s.sync_port):
                assert rule.source not in ("0.0.0.0/0", "::/0"), rule.text()


@pytest.mark.parametrize(
    ("name", "port", "which"),
    [
        ("GITLAB_SSH_PORT", "22", "admin SSH port"),
        ("GITLAB_REGISTRY_PORT", "2222", "sync port (SYNC_PORT)"),
        ("GITLAB_HTTPS_PORT", "9187", "metrics port (METRICS_PORT)"),
    ],
)
def test_a_client_port_on_the_admin_sync_or_metrics_port_is_a_setting_error(
    name: str, port: str, which: str
) -> None:
    with pytest.raises(SettingError) as caught:
        desired_rules(settings(**{name: port}))
    assert str(caught.value) == (
        f"{name} is {port}, the {which}: GitLab's client ports are opened to CLIENT_CIDRS, "
        "so choose another port"
    )


def test_rule_identity_ignores_description_and_id() -> None:
    declared = Rule(22, 22, "198.51.100.0/24", description="gitlab-dr: admin SSH")
    read = Rule(22, 22, "198.51.100.0/24", rule_id="sgr-1")
    assert declared == read
    assert Rule(-1, -1, "0.0.0.0/0", protocol="-1").text() == "all traffic from 0.0.0.0/0"
    assert Rule(1000, 2000, "pl-1", "prefix-list").text() == "tcp 1000-2000 from prefix list pl-1"


# --- the plan -----------------------------------------------------------------------------


def test_plan_from_nothing_creates_groups_then_master_then_slave_then_volumes_then_eip() -> None:
    s = settings()
    plan = make_plan(s, world())
    kinds = [a.kind for a in plan.actions]
    assert kinds[:2] == ["create-group", "create-group"]
    assert kinds[2:-8] == ["authorize"] * (4 + 2 + 3)  # + the metrics port from ADMIN_CIDR
    assert kinds[-8:] == [
        "run-instance",
        "run-instance",
        "create-volume",
        "attach-volume",
        "create-volume",
        "attach-volume",
        "allocate-eip",
        "associate-eip",
    ]
    runs = [a for a in plan.actions if a.kind == "run-instance"]
    assert [(a.role, a.zone, a.group) for a in runs] == [
        ("master", "eu-west-1a", "gitlab-open"),
        ("slave", "eu-west-1b", "gitlab-slave"),
    ]
    assert plan.epoch == 1
    assert plan.found == ()


def test_plan_for_a_complete_pair_is_empty() -> None:
    s = settings()
    plan = make_plan(s, complete(s))
    assert plan.actions == ()
    assert plan.complete
    assert [f.what for f in plan.found] == [
        "security group gitlab-open",
        "security group gitlab-slave",
        "master instance",
        "slave instance",
        "master data volume",
        "slave data volume",
        "Elastic IP",
    ]


def test_plan_revokes_an_undeclared_world_open_ssh_rule_and_says_why() -> None:
    s = settings()
    w = complete(s)
    open_group = w.groups[0]
    extra = Rule(0, 65535, "0.0.0.0/0", rule_id="sgr-9")
    w = dataclasses.replace(
        w, groups=(dataclasses.replace(open_group, rules=(*open_group.rules, extra)), w.groups[1])
    )
    [action] = make_plan(s, w).actions
    assert action.text() == (
        "revoke tcp 0-65535 from 0.0.0.0/0 on gitlab-open: it is not declared and opens port "
        "22 to the whole internet"
    )
    assert action.rule is not None
    assert action.rule.rule_id == "sgr-9"


def test_plan_adopts_an_untagged_group_and_refuses_another_projects_group() -> None:
    s = settings()
    w = complete(s)
    untagged = dataclasses.replace(w.groups[0], project="")
    [action] = make_plan(s, dataclasses.replace(w, groups=(untagged, w.groups[1]))).actions
    assert action.text() == (
        "tag security group gitlab-open: it exists without a Project tag; it is adopted as pair's"
    )
    foreign = dataclasses.replace(w.groups[0], project="other")
    with pytest.raises(Refusal) as caught:
        make_plan(s, dataclasses.replace(w, groups=(foreign, w.groups[1])))
    assert str(caught.value) == (
        "security group gitlab-open (sg-open) in vpc-1 is tagged Project=other, not pair: it "
        "belongs to another pair"
    )


def test_plan_attaches_a_volume_an_earlier_run_left_unattached() -> None:
    s = settings()
    w = complete(
        s,
        volumes=(
            volume("i-m", "eu-west-1a"),
            volume("i-s", "eu-west-1b", state="available", attached_to=None),
        ),
    )
    [action] = make_plan(s, w).actions
    assert (action.kind, action.role, action.resource_id) == ("attach-volume", "slave", "vol-i-s")
    assert action.reason == "an earlier run created it but did not attach it"


def test_plan_creates_a_volume_when_the_only_one_is_in_another_zone() -> None:
    s = settings()
    w = complete(
        s,
        volumes=(
            volume("i-m", "eu-west-1a"),
            volume("i-s", "eu-west-1c", state="available", attached_to=None),
        ),
    )
    kinds = [(a.kind, a.role, a.zone) for a in make_plan(s, w).actions]
    assert kinds == [("create-volume", "slave", "eu-west-1b"), ("attach-volume", "slave", "")]


def test_plan_keeps_a_data_volume_set_to_go_with_its_instance() -> None:
    s = settings()
    w = complete(s)
    slave = dataclasses.replace(w.pair.hosts[1], volumes_keep=(("vol-i-s", True),))
    w = dataclasses.replace(w, pair=dataclasses.replace(w.pair, hosts=(w.pair.hosts[0], slave)))
    [action] = make_plan(s, w).actions
    assert action.text() == (
        "keep on termination the slave's data volume vol-i-s: it is set to be deleted with the "
        "instance; the data must outlive it"
    )


def test_plan_refuses_a_data_volume_attached_to_another_instance() -> None:
    s = settings()
    w = complete(
        s, volumes=(volume("i-m", "eu-west-1a"), volume("i-s", "eu-west-1b", attached_to="i-x"))
    )
    with pytest.raises(Refusal, match=r"^the slave's data volume vol-i-s is attached to i-x, not"):
        make_plan(s, w)


def test_plan_refuses_a_lone_slave() -> None:
    s = settings()
    w = complete(s)
    w = dataclasses.replace(w, pair=dataclasses.replace(w.pair, hosts=(w.pair.hosts[1],)))
    with pytest.raises(Refusal) as caught:
        make_plan(s, w)
    assert str(caught.value).startswith("the slave i-s exists but no live instance is tagged")


def test_plan_refuses_two_masters() -> None:
    s = settings()
    w = complete(s)
    twin = host("master", "i-m2", "eu-west-1c")
    w = dataclasses.replace(w, pair=dataclasses.replace(w.pair, hosts=(*w.pair.hosts, twin)))
    with pytest.raises(Refusal) as caught:
        make_plan(s, w)
    assert str(caught.value) == (
        "2 live instances are tagged Project=pair Role=master (i-m, i-m2); terminate or retag "
        "all but one"
    )


def test_plan_refuses_an_elastic_ip_held_by_the_slave() -> None:
    s = settings()
    w = complete(s, elastic_ips=(ElasticIp("eipalloc-1", "198.51.100.7", "i-s"),))
    with pytest.raises(Refusal) as caught:
        make_plan(s, w)
    assert str(caught.value) == (
        "the Elastic IP 198.51.100.7 is associated with the slave i-s, not with the master: a "
        "promotion may be half done; finish it with inv promote-slave, or disassociate the address"
    )


def test_after_a_promotion_a_new_slave_goes_to_the_zone_the_master_is_not_in() -> None:
    s = settings()
    promoted = host("master", "i-s", "eu-west-1b", epoch=2)
    w = complete(
        s,
        hosts=(promoted,),
        volumes=(volume("i-s", "eu-west-1b"),),
        elastic_ips=(ElasticIp("eipalloc-1", "198.51.100.7", "i-s"),),
    )
    plan = make_plan(s, w)
    [run] = [a for a in plan.actions if a.kind == "run-instance"]
    assert (run.role, run.zone) == ("slave", "eu-west-1a")
    assert plan.epoch == 2
    assert "epoch 2" in run.reason


def test_plan_requires_imdsv2_on_an_instance_without_it() -> None:
    s = settings()
    w = complete(s)
    master = dataclasses.replace(w.pair.hosts[0], imdsv2_required=False)
    w = dataclasses.replace(w, pair=dataclasses.replace(w.pair, hosts=(master, w.pair.hosts[1])))
    [action] = make_plan(s, w).actions
    assert (action.kind, action.resource_id) == ("require-imdsv2", "i-m")


def test_plan_notes_what_it_cannot_fix() -> None:
    s = settings()
    w = complete(
        s,
        hosts=(
            host("master", "i-m", "eu-west-1a"),
            host("slave", "i-s", "eu-west-1a", state="stopped"),
        ),
        volumes=(
            volume("i-m", "eu-west-1a", encrypted=False),
            volume("i-s", "eu-west-1a"),
            volume("i-gone", "eu-west-1b", state="available", attached_to=None),
        ),
    )
    assert make_plan(s, w).notes == (
        "the master and the slave are both in eu-west-1a: one zone outage takes both",
        "the slave instance i-s is stopped; launch leaves it so",
        "the master's data volume vol-i-m is not encrypted; launch cannot change that (copy it "
        "to an encrypted volume)",
        "data volume vol-i-gone (eu-west-1b) belonged to i-gone, which is gone; it is kept and "
        "may hold GitLab data",
    )


def test_plan_lines_and_json_say_the_same_steps() -> None:
    plan = make_plan(settings(), world())
    lines = plan.lines()
    data = plan.to_dict()
    assert lines[0] == (
        "launch plan for project pair in eu-west-1 (vpc-1, zones eu-west-1a and eu-west-1b, "
        "AMI ami-0123456789abcdef0)"
    )
    assert [a["text"] for a in data["actions"]] == [
        line.split(". ", 1)[1] for line in lines if line.startswith("  ") and ". " in line
    ]


# --- zones -------------------------------------------------------------------------------


def test_pick_zones_takes_the_first_two_or_the_chosen_ones() -> None:
    available = ("eu-west-1a", "eu-west-1b", "eu-west-1c")
    assert pick_zones((), available, "eu-west-1") == ("eu-west-1a", "eu-west-1b")
    assert pick_zones(("eu-west-1c", "eu-west-1a"), available, "eu-west-1") == (
        "eu-west-1c",
        "eu-west-1a",
    )
    with pytest.raises(AwsError, match=r"^eu-west-1 has 1 available zone\(s\) \(eu-west-1a\)"):
        pick_zones((), ("eu-west-1a",), "eu-west-1")
