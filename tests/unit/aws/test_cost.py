"""The pair's monthly cost: arithmetic on a dated, sourced price table, and what the plan says."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from ops.aws import cost
from ops.aws.dns import DnsView, Record, Zone
from ops.aws.launch.plan import make_plan
from ops.errors import SettingError
from tests.unit.aws.factories import complete, settings, world

TABLE = {
    "as_of": "2025-01-01",
    "currency": "USD",
    "sources": {"instance_hour": "https://aws.amazon.com/ec2/pricing/on-demand/"},
    "hours_per_month": 730,
    "assumptions": {"ami_snapshot_gb": 8, "dns_million_queries": 1, "ami_snapshot": "one AMI"},
    "regions": {
        "eu-west-1": {
            "instance_hour": {"m5.xlarge": 0.214, "m5.large": 0.107},
            "gp3_gb_month": 0.088,
            "snapshot_gb_month": 0.05,
            "public_ipv4_hour": 0.005,
            "route53_zone_month": 0.5,
            "route53_million_queries": 0.4,
        }
    },
}


def table(tmp_path: Path, data: object = TABLE) -> cost.PriceTable:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(data))
    return cost.read_prices(path)


def sizing(**changes: object) -> cost.Sizing:
    base = cost.Sizing(
        region="eu-west-1",
        instance_type="m5.xlarge",
        instances=2,
        data_gb=100,
        root_gb=30,
        public_ipv4=2,
        public_ipv4_why="the Elastic IP, the slave's own",
        dns=False,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]  # test overrides


def test_the_defaults_cost_instances_volumes_snapshot_and_addresses_by_the_month(
    tmp_path: Path,
) -> None:
    bill = cost.estimate(table(tmp_path), sizing())
    assert [(i.what, i.monthly) for i in bill.items] == [
        ("instances", 312.44),  # 2 x 730 h x $0.214
        ("data volumes", 17.60),  # 2 x 100 GB x $0.088
        ("root volumes", 5.28),  # 2 x 30 GB x $0.088
        ("snapshots", 0.40),  # 8 GB x $0.05
        ("public IPv4", 7.30),  # 2 x 730 h x $0.005
    ]
    assert bill.total == 343.02
    assert bill.complete
    assert bill.items[0].text("USD") == "instances: 2 x m5.xlarge x 730 h at $0.214/h = $312.44"


def test_dns_adds_the_zone_and_the_assumed_queries(tmp_path: Path) -> None:
    bill = cost.estimate(table(tmp_path), sizing(dns=True, public_ipv4=0))
    assert bill.items[-1].what == "Route 53"
    assert bill.items[-1].monthly == 0.90
    assert "public IPv4" not in [i.what for i in bill.items]


def test_an_instance_type_without_a_price_makes_the_total_a_lower_bound(tmp_path: Path) -> None:
    bill = cost.estimate(table(tmp_path), sizing(instance_type="m5.enormous"))
    assert bill.items[0].monthly is None
    assert not bill.complete
    assert bill.lines()[0].startswith("monthly cost of the pair in eu-west-1: at least $30.58")
    assert bill.lines()[1].endswith("= no price in the table")


def test_a_region_the_table_lacks_says_so_and_names_the_setting(tmp_path: Path) -> None:
    bill = cost.estimate(table(tmp_path), sizing(region="ap-south-1"))
    assert bill.lines() == [
        f"monthly cost: unknown, {tmp_path / 'prices.json'} has no prices for ap-south-1 (it has "
        "eu-west-1): set PRICE_FILE to a table with that region"
    ]
    assert bill.to_dict()["total_monthly"] is None


def test_the_lines_say_the_date_the_table_and_what_is_assumed_or_left_out(tmp_path: Path) -> None:
    lines = cost.estimate(table(tmp_path), sizing()).lines()
    assert "on-demand list prices as of 2025-01-01 from" in lines[0]
    assert "  assumed: one AMI" in lines
    assert lines[-1].startswith("  not counted: data transfer")


def test_the_repository_table_is_dated_sourced_and_prices_the_default_pair() -> None:
    defaults = settings()
    prices = cost.load_prices(defaults)
    assert prices.path == str(cost.DEFAULT_PRICE_FILE)
    assert prices.as_of and prices.sources
    assert all(page.startswith("https://aws.amazon.com/") for page in prices.sources.values())
    region = prices.regions[defaults.aws_region]
    assert defaults.instance_type in region.instance_hour
    assert region.public_ipv4_hour == 0.005  # AWS's public IPv4 price since 2024-02-01


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("{", "is not valid"),
        ('{"as_of": "2025-01-01", "sources": {"x": "y"}, "hours_per_month": -1}', "at least 0"),
        ('{"hours_per_month": 730}', "as_of (the date of the prices) and sources"),
    ],
)
def test_a_broken_price_file_is_one_line_naming_it(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "mine.json"
    path.write_text(text)
    with pytest.raises(SettingError) as caught:
        cost.load_prices(settings(PRICE_FILE=str(path)))
    assert str(caught.value).startswith(f"the price table {path} is not valid: ")
    assert words in str(caught.value)
    with pytest.raises(SettingError, match=r"^cannot read the price table .*missing\.json"):
        cost.load_prices(settings(PRICE_FILE=str(tmp_path / "missing.json")))


# --- in the plan -------------------------------------------------------------------------------


def test_the_plan_prices_the_pair_in_its_lines_and_its_json(tmp_path: Path) -> None:
    s = settings(INSTANCE_TYPE="m5.large")
    w = dataclasses.replace(world(), prices=table(tmp_path), public_zones=("eu-west-1b",))
    plan = make_plan(s, w)
    assert plan.cost is not None
    lines = plan.lines()
    start = lines.index(plan.cost.lines()[0])
    assert lines[start - 1].startswith(f"  {len(plan.actions)}. ")  # after the steps
    assert "  public IPv4: 2 (the Elastic IP, the slave's own) x 730 h at $0.005/h = $7.30" in lines
    assert plan.to_dict()["cost"]["total_monthly"] == plan.cost.total
    assert plan.cost.lines()[0] not in plan.lines(steps=False)


def test_without_an_elastic_ip_in_private_subnets_no_public_address_is_paid_for(
    tmp_path: Path,
) -> None:
    plan = make_plan(
        settings(USE_ELASTIC_IP="false"), dataclasses.replace(world(), prices=table(tmp_path))
    )
    assert plan.cost is not None
    assert "public IPv4" not in [i.what for i in plan.cost.items]


def test_a_complete_pair_is_priced_before_nothing_to_do(tmp_path: Path) -> None:
    s = settings()
    zone = Zone("Z1", "example.com", False)
    record = Record("gitlab.example.com", ("198.51.100.7",), 60)
    w = dataclasses.replace(complete(s), prices=table(tmp_path), dns=DnsView(zone, record))
    lines = make_plan(s, w).lines()
    assert lines[-1] == "nothing to do: the pair is complete"
    assert any(line.startswith("  Route 53: ") for line in lines)
