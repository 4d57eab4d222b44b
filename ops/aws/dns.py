"""GitLab's name in Route 53: an A record at the master, made by ``inv launch``, moved by a
promotion.

``DNS_ZONE`` names the hosted zone (by id or name; it must exist: gitlab-dr never makes one),
``DNS_NAME`` the record (default ``GITLAB_HOSTNAME``), ``DNS_TTL`` its TTL. The record points at
the Elastic IP when there is one (``USE_ELASTIC_IP``), else at the master's private address (a
private GitLab behind internal DNS). :func:`point_record` looks before it writes, writes through
:class:`~ops.aws.writer.Route53Writer` (an ``UPSERT``), waits until Route 53 has the change
everywhere, and says when clients will see it: :func:`visible_by`, the moment the TTL of the
answers they hold runs out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ops.aws.client import aws_errors, known_refusals
from ops.aws.inventory import PairState
from ops.aws.writer import Route53Writer
from ops.errors import AwsError, SettingError
from ops.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_route53 import Route53Client
    from mypy_boto3_route53.type_defs import HostedZoneTypeDef

RECORD_TYPE = "A"
NOTHING_CREATED = "nothing was created"


@dataclass(frozen=True)
class Zone:
    """A Route 53 hosted zone."""

    zone_id: str
    """The bare id (``Z0123...``, without ``/hostedzone/``)."""
    name: str
    """Without its final dot."""
    private: bool


@dataclass(frozen=True)
class Record:
    """GitLab's A record as Route 53 holds it (``values`` empty when there is none)."""

    name: str
    values: tuple[str, ...]
    ttl: int | None

    def points_at(self, ip: str, ttl: int) -> bool:
        """Whether the record is exactly ``ip`` with ``ttl``."""
        return self.values == (ip,) and self.ttl == ttl

    def text(self) -> str:
        """``A 203.0.113.7, TTL 60 s``, or ``none``."""
        if not self.values:
            return "none"
        ttl = f", TTL {self.ttl} s" if self.ttl is not None else ""
        return f"{RECORD_TYPE} {', '.join(self.values)}{ttl}"


@dataclass(frozen=True)
class DnsView:
    """The zone and the record, as read before a launch."""

    zone: Zone
    record: Record


def record_name(settings: Settings) -> str:
    """The record's name: ``DNS_NAME``, else ``GITLAB_HOSTNAME`` (lower case, no final dot)."""
    return (settings.dns_name or settings.gitlab_hostname).rstrip(".").lower()


def _bare(zone_id: str) -> str:
    return zone_id.rsplit("/", 1)[-1]


def _zone(item: HostedZoneTypeDef) -> Zone:
    private = bool(item.get("Config", {}).get("PrivateZone"))
    return Zone(_bare(item["Id"]), item["Name"].rstrip(".").lower(), private)


def _moment(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def find_zone(settings: Settings, route53: Route53Client) -> Zone:
    """The hosted zone of ``DNS_ZONE``, by id or by name; a :class:`SettingError` sentence when
    Route 53 has none (gitlab-dr never creates one)."""
    wanted = settings.require("DNS_ZONE")
    if "." not in wanted and wanted.upper() == wanted:
        with known_refusals(
            "route53 GetHostedZone",
            f"DNS_ZONE {wanted}",
            ("NoSuchHostedZone", "InvalidInput"),
            lambda code: SettingError(
                f"DNS_ZONE {wanted} is not a hosted zone of this account (route53 "
                f"GetHostedZone: {code}): create it, or name an existing one by id or name; "
                f"{NOTHING_CREATED}"
            ),
        ):
            item = route53.get_hosted_zone(Id=wanted)["HostedZone"]
        return _zone(item)
    with aws_errors("route53 ListHostedZonesByName", f"DNS_ZONE {wanted}"):
        items = route53.list_hosted_zones_by_name(DNSName=wanted, MaxItems="10")["HostedZones"]
    matching = [_zone(z) for z in items if z["Name"].rstrip(".").lower() == wanted]
    if not matching:
        raise SettingError(
            f"DNS_ZONE {wanted} is not a hosted zone of this account: create it, or name an "
            f"existing one by id or name; {NOTHING_CREATED}"
        )
    if len(matching) > 1:
        ids = ", ".join(z.zone_id for z in matching)
        raise SettingError(
            f"DNS_ZONE {wanted} names {len(matching)} hosted zones ({ids}), a public and a "
            f"private one perhaps: set DNS_ZONE to the id of the one for GitLab; {NOTHING_CREATED}"
        )
    return matching[0]


def read_record(route53: Route53Client, zone: Zone, name: str) -> Record:
    """The A record ``name`` of ``zone`` (no values when it does not exist); a
    :class:`SettingError` when another record type holds the name."""
    with aws_errors("route53 ListResourceRecordSets", f"{name} in {zone.name}"):
        items = route53.list_resource_record_sets(
            HostedZoneId=zone.zone_id, StartRecordName=name, MaxItems="10"
        )["ResourceRecordSets"]
    mine = [i for i in items if str(i["Name"]).rstrip(".").lower() == name]
    for item in mine:
        if item["Type"] == "CNAME":
            raise SettingError(
                f"{name} in {zone.name} is a CNAME record: gitlab-dr keeps an A record there; "
                f"remove the CNAME or set DNS_NAME to another name; {NOTHING_CREATED}"
            )
    for item in mine:
        if item["Type"] == RECORD_TYPE:
            values = tuple(r["Value"] for r in item.get("ResourceRecords", []))
            if "AliasTarget" in item:
                values = (f"alias {item['AliasTarget']['DNSName']}",)
            return Record(name, values, item.get("TTL"))
    return Record(name, (), None)


def read_dns(settings: Settings, route53: Route53Client) -> DnsView | None:
    """The zone and the record a launch works with; None when ``DNS_ZONE`` is empty."""
    if not settings.dns_zone:
        return None
    zone = find_zone(settings, route53)
    name = record_name(settings)
    if name != zone.name and not name.endswith(f".{zone.name}"):
        which = "DNS_NAME" if settings.dns_name else "GITLAB_HOSTNAME (DNS_NAME is empty)"
        raise SettingError(
            f"{which} {name} is not in the hosted zone {zone.name} ({zone.zone_id}): set DNS_NAME "
            f"to a name under it; {NOTHING_CREATED}"
        )
    return DnsView(zone, read_record(route53, zone, name))


def target_ip(settings: Settings, pair: PairState) -> str | None:
    """Where the record should point: the Elastic IP with ``USE_ELASTIC_IP``, else the master's
    private address; None while that does not exist yet."""
    if settings.use_elastic_ip:
        eip = pair.elastic_ip
        return eip.public_ip if eip is not None else None
    master = pair.master
    return master.private_ip if master is not None else None


def visible_by(ttl: int, in_sync_at: dt.datetime) -> dt.datetime:
    """When every client sees a change Route 53 had everywhere at ``in_sync_at``: once the
    answers they hold, cached for at most ``ttl`` seconds, have run out."""
    return in_sync_at + dt.timedelta(seconds=ttl)


def point_record(
    settings: Settings,
    route53: Route53Client,
    target_ip: str,
    *,
    wait: bool = True,
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
) -> str:
    """Point GitLab's record at ``target_ip`` (no change if it does already); a sentence that
    says when clients will see it. ``wait``: until Route 53 has the change everywhere."""
    zone = find_zone(settings, route53)
    name = record_name(settings)
    ttl = settings.dns_ttl
    record = read_record(route53, zone, name)
    if record.points_at(target_ip, ttl):
        return f"DNS {name} already points at {target_ip} (TTL {ttl} s)"
    writer = Route53Writer(route53)
    what = f"DNS {name} in {zone.name}"
    change = writer.upsert_address(zone.zone_id, name, target_ip, ttl, what)
    moved = f"DNS {name} -> {target_ip} (was {record.text()})"
    # Clients may hold the old answer for as long as the old TTL said.
    held = max(ttl, record.ttl or 0)
    why = f"TTL {ttl} s" if held == ttl else f"the old TTL, {held} s"
    if not wait:
        return f"{moved}: clients see it at most {held} s after Route 53 has it everywhere ({why})"
    writer.wait_in_sync(change, settings.aws_wait_timeout, what)
    synced = now()
    return (
        f"{moved}: in Route 53 everywhere at {_moment(synced)}; clients that hold the old "
        f"answer see it by {_moment(visible_by(held, synced))} ({why})"
    )


def point_at_master(settings: Settings, route53: Route53Client, pair: PairState) -> str:
    """Point the record where :func:`target_ip` says for ``pair`` (the promotion's call, after
    the Elastic IP moved and the tags swapped); a sentence."""
    target = target_ip(settings, pair)
    if target is None:
        holder = "Elastic IP" if settings.use_elastic_ip else "master with a private address"
        raise AwsError(
            f"the project {settings.project_name} has no {holder} for {record_name(settings)} "
            f"to point at"
        )
    return point_record(settings, route53, target)
