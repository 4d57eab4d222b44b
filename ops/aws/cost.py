"""What the pair costs a month, from a price table kept in the repository.

The table (``ops/aws/prices.json``, or ``PRICE_FILE``) is dated and names the AWS price page of
each figure; :func:`estimate` is pure arithmetic on it: the two instances by the hour, the data
and root volumes (gp3) by the GB-month, the AMI's snapshot, each public IPv4 address by the hour
(charged since February 2024, the Elastic IP's too), and the Route 53 zone and queries when
``DNS_ZONE`` is set. What the table assumes (the snapshot's size, the queries) is said with the
figure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ops.errors import SettingError
from ops.settings import Settings

DEFAULT_PRICE_FILE = Path(__file__).resolve().parent / "prices.json"
NOT_COUNTED = (
    "data transfer (the sync between the two zones, $0.01/GB each way, and GitLab's traffic "
    "to the internet) and taxes"
)


@dataclass(frozen=True)
class RegionPrices:
    """The prices of one region (instances by type)."""

    instance_hour: Mapping[str, float]
    gp3_gb_month: float
    snapshot_gb_month: float
    public_ipv4_hour: float
    route53_zone_month: float
    route53_million_queries: float


@dataclass(frozen=True)
class PriceTable:
    """A price table: where it comes from, when, what it assumes, and each region's prices."""

    path: str
    as_of: str
    currency: str
    hours_per_month: float
    sources: Mapping[str, str]
    ami_snapshot_gb: float
    dns_million_queries: float
    assumptions: Mapping[str, str]
    regions: Mapping[str, RegionPrices]


def _number(data: Mapping[str, Any], key: str, where: str) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{where}{key} must be a number of at least 0")
    return float(value)


def read_prices(path: Path) -> PriceTable:
    """The price table in ``path``; a :class:`SettingError` naming what is wrong with it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("the file must hold a JSON object")
        regions: dict[str, RegionPrices] = {}
        for name, raw in dict(data.get("regions") or {}).items():
            where = f"regions.{name}."
            types = dict(raw.get("instance_hour") or {})
            regions[name] = RegionPrices(
                instance_hour={t: _number(types, t, f"{where}instance_hour.") for t in types},
                **{
                    key: _number(raw, key, where)
                    for key in (
                        "gp3_gb_month",
                        "snapshot_gb_month",
                        "public_ipv4_hour",
                        "route53_zone_month",
                        "route53_million_queries",
                    )
                },
            )
        assumptions = dict(data.get("assumptions") or {})
        as_of = str(data.get("as_of") or "")
        if not as_of or not data.get("sources"):
            raise ValueError("as_of (the date of the prices) and sources (their pages) are needed")
        return PriceTable(
            path=str(path),
            as_of=as_of,
            currency=str(data.get("currency") or "USD"),
            hours_per_month=_number(data, "hours_per_month", ""),
            sources=dict(data["sources"]),
            ami_snapshot_gb=_number(assumptions, "ami_snapshot_gb", "assumptions."),
            dns_million_queries=_number(assumptions, "dns_million_queries", "assumptions."),
            assumptions={k: str(v) for k, v in assumptions.items() if isinstance(v, str)},
            regions=regions,
        )
    except OSError as exc:
        raise SettingError(f"cannot read the price table {path}: {exc.strerror}") from exc
    except (ValueError, AttributeError, TypeError) as exc:
        raise SettingError(f"the price table {path} is not valid: {exc}") from exc


def load_prices(settings: Settings) -> PriceTable:
    """The table of ``PRICE_FILE``, else the repository's."""
    return read_prices(Path(settings.price_file) if settings.price_file else DEFAULT_PRICE_FILE)


@dataclass(frozen=True)
class Sizing:
    """What the pair is made of, for its price."""

    region: str
    instance_type: str
    instances: int
    data_gb: int
    root_gb: int
    """Each instance's root volume (the AMI's); 0 when unknown."""
    public_ipv4: int
    """Public IPv4 addresses held: the Elastic IP and any address given at launch."""
    public_ipv4_why: str
    dns: bool


@dataclass(frozen=True)
class Item:
    """One line of the bill: what, how it is counted, and its monthly figure (None: no price)."""

    what: str
    detail: str
    monthly: float | None

    def text(self, currency: str) -> str:
        """``instances: 2 x m5.xlarge x 730 h at $0.214/h = $312.44``."""
        figure = "no price in the table" if self.monthly is None else money(self.monthly, currency)
        return f"{self.what}: {self.detail} = {figure}"


@dataclass(frozen=True)
class Cost:
    """The pair's monthly cost, item by item, with where the prices come from."""

    region: str
    currency: str
    as_of: str
    table: str
    items: tuple[Item, ...]
    assumptions: tuple[str, ...] = field(default=())
    problem: str = ""
    """Why there is no figure (the region is not in the table); empty when there is one."""

    @property
    def total(self) -> float:
        """The sum of the items that have a price."""
        return round(sum(i.monthly for i in self.items if i.monthly is not None), 2)

    @property
    def complete(self) -> bool:
        """Whether every item has a price."""
        return not self.problem and all(i.monthly is not None for i in self.items)

    def lines(self) -> list[str]:
        """The cost for a person."""
        if self.problem:
            return [f"monthly cost: unknown, {self.problem}"]
        about = "about" if self.complete else "at least"
        out = [
            f"monthly cost of the pair in {self.region}: {about} "
            f"{money(self.total, self.currency)} (on-demand list prices as of {self.as_of} "
            f"from {self.table}: check them on the AWS price pages it names)"
        ]
        out.extend(f"  {item.text(self.currency)}" for item in self.items)
        out.extend(f"  assumed: {a}" for a in self.assumptions)
        out.append(f"  not counted: {NOT_COUNTED}")
        return out

    def to_dict(self) -> dict[str, Any]:
        """The cost for a machine."""
        return {
            "region": self.region,
            "currency": self.currency,
            "as_of": self.as_of,
            "table": self.table,
            "total_monthly": None if self.problem else self.total,
            "complete": self.complete,
            "items": [
                {"what": i.what, "detail": i.detail, "monthly": i.monthly} for i in self.items
            ],
            "assumptions": list(self.assumptions),
            "not_counted": NOT_COUNTED,
            "problem": self.problem,
        }


def money(amount: float, currency: str = "USD") -> str:
    """``$312.44`` (or ``312.44 EUR``)."""
    return f"${amount:,.2f}" if currency == "USD" else f"{amount:,.2f} {currency}"


def _rate(value: float) -> str:
    """A unit price with its cents and no trailing zeros past them: ``$0.50``, ``$0.0912``."""
    whole, _, cents = f"{value:.4f}".partition(".")
    return f"${whole}.{cents.rstrip('0').ljust(2, '0')}"


def estimate(table: PriceTable, sizing: Sizing) -> Cost:
    """The monthly cost of ``sizing`` at ``table``'s prices (pure arithmetic)."""
    shown = _shown(table.path)
    prices = table.regions.get(sizing.region)
    if prices is None:
        known = ", ".join(sorted(table.regions)) or "none"
        return Cost(
            sizing.region,
            table.currency,
            table.as_of,
            shown,
            (),
            problem=(
                f"{shown} has no prices for {sizing.region} (it has {known}): set PRICE_FILE to "
                f"a table with that region"
            ),
        )
    hours = table.hours_per_month
    n = sizing.instances
    hourly = prices.instance_hour.get(sizing.instance_type)
    items = [
        Item(
            "instances",
            f"{n} x {sizing.instance_type} x {hours:g} h at "
            + (f"{_rate(hourly)}/h" if hourly is not None else "?"),
            None if hourly is None else round(n * hours * hourly, 2),
        ),
        Item(
            "data volumes",
            f"{n} x {sizing.data_gb} GB gp3 at {_rate(prices.gp3_gb_month)}/GB-month",
            round(n * sizing.data_gb * prices.gp3_gb_month, 2),
        ),
    ]
    if sizing.root_gb:
        items.append(
            Item(
                "root volumes",
                f"{n} x {sizing.root_gb} GB gp3 (the AMI's) at "
                f"{_rate(prices.gp3_gb_month)}/GB-month",
                round(n * sizing.root_gb * prices.gp3_gb_month, 2),
            )
        )
    items.append(
        Item(
            "snapshots",
            f"the AMI's, ~{table.ami_snapshot_gb:g} GB at "
            f"{_rate(prices.snapshot_gb_month)}/GB-month",
            round(table.ami_snapshot_gb * prices.snapshot_gb_month, 2),
        )
    )
    assumptions = [table.assumptions["ami_snapshot"]] if "ami_snapshot" in table.assumptions else []
    if sizing.public_ipv4:
        items.append(
            Item(
                "public IPv4",
                f"{sizing.public_ipv4} ({sizing.public_ipv4_why}) x {hours:g} h at "
                f"{_rate(prices.public_ipv4_hour)}/h",
                round(sizing.public_ipv4 * hours * prices.public_ipv4_hour, 2),
            )
        )
    if sizing.dns:
        queries = table.dns_million_queries
        items.append(
            Item(
                "Route 53",
                f"the hosted zone at {_rate(prices.route53_zone_month)}/month (shared with its "
                f"other records) + ~{queries:g} M queries at "
                f"{_rate(prices.route53_million_queries)}/M",
                round(prices.route53_zone_month + queries * prices.route53_million_queries, 2),
            )
        )
        if "dns_queries" in table.assumptions:
            assumptions.append(table.assumptions["dns_queries"])
    return Cost(sizing.region, table.currency, table.as_of, shown, tuple(items), tuple(assumptions))


def _shown(path: str) -> str:
    repo = DEFAULT_PRICE_FILE.parents[2]
    try:
        return str(Path(path).resolve().relative_to(repo))
    except ValueError:
        return path
