"""Where the pair runs: the VPC, one subnet in each of two zones, and the paths between them.

Nothing set: the region's default VPC and its default subnets in the first two zones (or
``AVAILABILITY_ZONES``). ``VPC_ID`` and ``SUBNET_IDS``: a VPC of the company's, with one subnet
per zone, the master's first; private subnets work. :func:`read_network` checks every choice
before anything is created, and refuses with one sentence: the subnets exist, lie in the VPC and
in two zones; each subnet's route table has a route to the other (the VPC's local route); the
network ACLs let the sync port through both ways, with the replies on the hosts' ephemeral
ports (the roles swap at a promotion); and, with ``USE_ELASTIC_IP`` in a chosen VPC, both
subnets route to an internet gateway.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ops.aws.client import aws_errors
from ops.errors import AwsError, SettingError
from ops.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import NetworkAclTypeDef, RouteTableTypeDef, SubnetTypeDef

NOTHING_CREATED = "nothing was created"
EPHEMERAL_PORTS = (32768, 60999)
"""Where the replies of a TCP connection go: Linux's default local port range (Debian's)."""
ROUTE_TARGETS = (
    "GatewayId",
    "NatGatewayId",
    "TransitGatewayId",
    "NetworkInterfaceId",
    "VpcPeeringConnectionId",
    "InstanceId",
    "LocalGatewayId",
    "CoreNetworkArn",
)


@dataclass(frozen=True)
class Subnet:
    """A subnet the pair uses."""

    subnet_id: str
    zone: str
    vpc_id: str
    cidr: str
    public_ip_on_launch: bool
    """Whether an instance started there gets a public IPv4 address (charged by the hour)."""


@dataclass(frozen=True)
class Network:
    """The VPC and the two subnets, the master's zone first, as checked."""

    vpc_id: str
    default: bool
    """The region's default VPC (VPC_ID and SUBNET_IDS are empty)."""
    subnets: tuple[Subnet, Subnet]
    notes: tuple[str, ...] = ()

    @property
    def zones(self) -> tuple[str, str]:
        """The two zones, the master's first."""
        return self.subnets[0].zone, self.subnets[1].zone


# --- zones and subnets -------------------------------------------------------------------------


def pick_zones(wanted: tuple[str, ...], available: tuple[str, ...], region: str) -> tuple[str, str]:
    """The two zones for the pair: ``AVAILABILITY_ZONES`` if set, else the region's first two."""
    if wanted:
        missing = [z for z in wanted if z not in available]
        if missing:
            raise SettingError(
                f"AVAILABILITY_ZONES names {', '.join(missing)}, which "
                f"{'is' if len(missing) == 1 else 'are'} not an available zone of {region} "
                f"(available: {', '.join(available) or 'none'})"
            )
        return wanted[0], wanted[1]
    if len(available) < 2:
        raise AwsError(
            f"{region} has {len(available)} available zone(s) ({', '.join(available) or 'none'}); "
            f"the master and the slave need two different ones"
        )
    return available[0], available[1]


def read_network(settings: Settings, ec2: EC2Client) -> Network:
    """The VPC and subnets the pair runs in, every choice checked; nothing is created."""
    if settings.vpc_id or settings.subnet_ids:
        vpc_id, subnets = _chosen(settings, ec2)
        default = False
    else:
        vpc_id, subnets = _default(settings, ec2)
        default = True
    tables = _route_tables(ec2, vpc_id)
    notes = _check_routes(subnets, tables)
    _check_acls(settings, subnets, _acls(ec2, vpc_id))
    if settings.use_elastic_ip and not default:
        # The default VPC's default subnets are public by construction (AWS makes the VPC with
        # an internet gateway and a route to it); a chosen VPC's may be private.
        _check_internet(subnets, tables)
    return Network(vpc_id, default, subnets, notes)


def _subnet(item: SubnetTypeDef) -> Subnet:
    return Subnet(
        subnet_id=item["SubnetId"],
        zone=item["AvailabilityZone"],
        vpc_id=item["VpcId"],
        cidr=item["CidrBlock"],
        public_ip_on_launch=bool(item.get("MapPublicIpOnLaunch")),
    )


def _chosen(settings: Settings, ec2: EC2Client) -> tuple[str, tuple[Subnet, Subnet]]:
    region = settings.aws_region
    vpc_id, ids = settings.vpc_id, settings.subnet_ids
    if not vpc_id or not ids:
        given, missing = ("VPC_ID", "SUBNET_IDS") if vpc_id else ("SUBNET_IDS", "VPC_ID")
        raise SettingError(
            f"{given} is set but {missing} is not: a chosen VPC needs both (VPC_ID, and one of "
            f"its subnets in each of two zones in SUBNET_IDS); {NOTHING_CREATED}"
        )
    with aws_errors("ec2 DescribeVpcs", f"VPC_ID {vpc_id}"):
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}]).get("Vpcs", [])
    if not vpcs:
        raise SettingError(f"VPC_ID {vpc_id} is not a VPC of {region}; {NOTHING_CREATED}")
    with aws_errors("ec2 DescribeSubnets", f"SUBNET_IDS {','.join(ids)}"):
        items = ec2.describe_subnets(Filters=[{"Name": "subnet-id", "Values": list(ids)}]).get(
            "Subnets", []
        )
    found = {s["SubnetId"]: _subnet(s) for s in items}
    missing_ids = [i for i in ids if i not in found]
    if missing_ids:
        raise SettingError(
            f"SUBNET_IDS names {', '.join(missing_ids)}, which "
            f"{'is not a subnet' if len(missing_ids) == 1 else 'are not subnets'} of {region}; "
            f"{NOTHING_CREATED}"
        )
    master, slave = found[ids[0]], found[ids[1]]
    for subnet in (master, slave):
        if subnet.vpc_id != vpc_id:
            raise SettingError(
                f"SUBNET_IDS names {subnet.subnet_id}, which is in {subnet.vpc_id}, not in VPC_ID "
                f"{vpc_id}; {NOTHING_CREATED}"
            )
    if master.zone == slave.zone:
        raise SettingError(
            f"SUBNET_IDS names two subnets in {master.zone} ({master.subnet_id}, "
            f"{slave.subnet_id}): the master and the slave need two different zones; "
            f"{NOTHING_CREATED}"
        )
    wanted = settings.availability_zones
    if wanted and set(wanted) != {master.zone, slave.zone}:
        raise SettingError(
            f"AVAILABILITY_ZONES ({', '.join(wanted)}) disagrees with the zones of SUBNET_IDS "
            f"({master.zone}, {slave.zone}): leave it empty, the subnets say the zones; "
            f"{NOTHING_CREATED}"
        )
    return vpc_id, (master, slave)


def _default(settings: Settings, ec2: EC2Client) -> tuple[str, tuple[Subnet, Subnet]]:
    """The default VPC's id and its default subnet in each of the two zones."""
    region = settings.aws_region
    with aws_errors("ec2 DescribeAvailabilityZones", f"region {region}"):
        zone_items = ec2.describe_availability_zones().get("AvailabilityZones", [])
    available = tuple(
        sorted(
            z["ZoneName"]
            for z in zone_items
            if z.get("State") == "available"
            and z.get("ZoneType", "availability-zone") == "availability-zone"
            and "ZoneName" in z
        )
    )
    zones = pick_zones(settings.availability_zones, available, region)
    with aws_errors("ec2 DescribeVpcs", f"the default VPC of {region}"):
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}]).get(
            "Vpcs", []
        )
    if not vpcs:
        raise AwsError(
            f"{region} has no default VPC: gitlab-dr launches into the default VPC unless VPC_ID "
            f"and SUBNET_IDS name another (aws ec2 create-default-vpc makes one); "
            f"{NOTHING_CREATED}"
        )
    vpc_id = vpcs[0]["VpcId"]
    with aws_errors("ec2 DescribeSubnets", f"the default subnets of {vpc_id}"):
        subnet_items = ec2.describe_subnets(
            Filters=[
                {"Name": "vpc-id", "Values": [vpc_id]},
                {"Name": "default-for-az", "Values": ["true"]},
            ]
        ).get("Subnets", [])
    by_zone = {s["AvailabilityZone"]: _subnet(s) for s in subnet_items}
    for zone in zones:
        if zone not in by_zone:
            raise AwsError(
                f"the default VPC {vpc_id} has no default subnet in {zone} "
                f"(aws ec2 create-default-subnet --availability-zone {zone} makes one); "
                f"{NOTHING_CREATED}"
            )
    return vpc_id, (by_zone[zones[0]], by_zone[zones[1]])


# --- routes -------------------------------------------------------------------------------------


def _route_tables(ec2: EC2Client, vpc_id: str) -> list[RouteTableTypeDef]:
    with aws_errors("ec2 DescribeRouteTables", f"the route tables of {vpc_id}"):
        return ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}]).get(
            "RouteTables", []
        )


def table_of(subnet_id: str, tables: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The route table of ``subnet_id``: the one associated with it, else the VPC's main one."""
    for table in tables:
        if any(a.get("SubnetId") == subnet_id for a in table.get("Associations", [])):
            return table
    return next((t for t in tables if any(a.get("Main") for a in t.get("Associations", []))), None)


def _target(route: Mapping[str, Any]) -> str:
    return next((str(route[k]) for k in ROUTE_TARGETS if route.get(k)), "nothing")


def route_to(table: Mapping[str, Any], cidr: str) -> Mapping[str, Any] | None:
    """The active route ``table`` sends ``cidr`` by: the longest prefix that covers all of it."""
    peer = ipaddress.ip_network(cidr)
    best: tuple[int, Mapping[str, Any]] | None = None
    for route in table.get("Routes", []):
        destination = route.get("DestinationCidrBlock")
        if not destination or route.get("State", "active") != "active":
            continue
        net = ipaddress.ip_network(destination)
        covers = net.version == peer.version and peer.subnet_of(net)  # type: ignore[arg-type]  # same version, checked
        if covers and (best is None or net.prefixlen > best[0]):
            best = (net.prefixlen, route)
    return best[1] if best else None


def _check_routes(
    subnets: tuple[Subnet, Subnet], tables: Sequence[Mapping[str, Any]]
) -> tuple[str, ...]:
    notes: list[str] = []
    for here, there in (subnets, subnets[::-1]):
        table = table_of(here.subnet_id, tables)
        route = route_to(table, there.cidr) if table else None
        if table is None or route is None:
            which = table["RouteTableId"] if table else "no route table"
            raise SettingError(
                f"the route table of {here.subnet_id} ({which}) has no route to "
                f"{there.subnet_id} ({there.cidr}): the sidecars could not reach each other; "
                f"{NOTHING_CREATED}"
            )
        target = _target(route)
        if target != "local":
            notes.append(
                f"traffic from {here.subnet_id} to {there.subnet_id} ({there.cidr}) goes through "
                f"{target}, not the VPC's local route: make sure it lets the sync port through"
            )
    return tuple(notes)


def _check_internet(subnets: tuple[Subnet, Subnet], tables: Sequence[Mapping[str, Any]]) -> None:
    for subnet in subnets:
        table = table_of(subnet.subnet_id, tables)
        route = route_to(table, "0.0.0.0/0") if table else None
        if route is None or not str(route.get("GatewayId", "")).startswith("igw-"):
            raise SettingError(
                f"USE_ELASTIC_IP is true but {subnet.subnet_id} ({subnet.zone}) has no route to "
                f"an internet gateway, so the Elastic IP would not reach GitLab there: choose "
                f"public subnets, or set USE_ELASTIC_IP=false for a private GitLab (DNS_ZONE "
                f"names it); {NOTHING_CREATED}"
            )


# --- network ACLs -------------------------------------------------------------------------------


def _acls(ec2: EC2Client, vpc_id: str) -> list[NetworkAclTypeDef]:
    with aws_errors("ec2 DescribeNetworkAcls", f"the network ACLs of {vpc_id}"):
        return ec2.describe_network_acls(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}]).get(
            "NetworkAcls", []
        )


def acl_of(subnet_id: str, acls: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The network ACL of ``subnet_id``: the one associated with it, else the VPC's default."""
    for acl in acls:
        if any(a.get("SubnetId") == subnet_id for a in acl.get("Associations", [])):
            return acl
    return next((a for a in acls if a.get("IsDefault")), None)


@dataclass(frozen=True)
class Verdict:
    """Whether an ACL lets all of some TCP traffic through, and the rule that decided."""

    allowed: bool
    rule: int | None
    """The deciding rule's number; None: no rule matched (the final implicit deny)."""


def acl_verdict(
    entries: Sequence[Mapping[str, Any]], *, egress: bool, peer: str, ports: tuple[int, int]
) -> Verdict:
    """How the ACL's ``entries`` treat TCP ``ports`` to (egress) or from ``peer``, all of it.

    Rules are read in order of their numbers, the first that matches deciding, as AWS does. A
    deny that touches any of the traffic blocks it; an allow decides only when it covers all of
    it (else the rest falls to the next rules).
    """
    network = ipaddress.ip_network(peer)
    low, high = ports
    rules = sorted(
        (e for e in entries if bool(e.get("Egress")) == egress and e.get("CidrBlock")),
        key=lambda e: int(e.get("RuleNumber", 32767)),
    )
    for entry in rules:
        protocol = str(entry.get("Protocol", "-1"))
        if protocol not in ("-1", "6"):
            continue
        block = ipaddress.ip_network(str(entry["CidrBlock"]))
        if block.version != network.version or not block.overlaps(network):
            continue
        span = entry.get("PortRange") if protocol == "6" else None
        first, last = (int(span["From"]), int(span["To"])) if span else (0, 65535)
        if last < low or first > high:
            continue
        number = int(entry.get("RuleNumber", 32767))
        if entry.get("RuleAction") != "allow":
            return Verdict(False, number)
        if network.subnet_of(block) and first <= low and high <= last:  # type: ignore[arg-type]  # same version, checked
            return Verdict(True, number)
    return Verdict(False, None)


def _check_acls(
    settings: Settings, subnets: tuple[Subnet, Subnet], acls: Sequence[Mapping[str, Any]]
) -> None:
    port = settings.sync_port
    ephemeral = EPHEMERAL_PORTS
    for sender, receiver in (subnets, subnets[::-1]):
        # The sender's sidecar connects to the receiver's SYNC_PORT; the replies come back.
        legs = (
            (sender, True, receiver, (port, port), "out to"),
            (receiver, False, sender, (port, port), "in from"),
            (receiver, True, sender, ephemeral, "out to"),
            (sender, False, receiver, ephemeral, "in from"),
        )
        for here, egress, there, ports, way in legs:
            acl = acl_of(here.subnet_id, acls)
            if acl is None:
                continue
            entries = acl.get("Entries", [])
            verdict = acl_verdict(entries, egress=egress, peer=there.cidr, ports=ports)
            if verdict.allowed:
                continue
            span = str(ports[0]) if ports[0] == ports[1] else f"{ports[0]}-{ports[1]}"
            what = "the sync port" if ports[0] == port else "the sync port's replies"
            why = (
                f"rule {verdict.rule} denies it"
                if verdict.rule is not None
                else "no rule allows all of it"
            )
            raise SettingError(
                f"the network ACL {acl.get('NetworkAclId', '?')} of {here.subnet_id} blocks "
                f"tcp {span} ({what}) {way} {there.subnet_id} ({there.cidr}): {why}, so the "
                f"sidecars could not sync; {NOTHING_CREATED}"
            )
