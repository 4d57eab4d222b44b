"""What the planned pair costs a month: its sizing from the settings and the world, priced by
:func:`ops.aws.cost.estimate` at the world's price table."""

from __future__ import annotations

from ops.aws import cost
from ops.aws.inventory import ROLES
from ops.aws.launch.model import World
from ops.settings import Settings


def public_addresses(settings: Settings, world: World, zone_of: dict[str, str]) -> list[str]:
    """Who holds a public IPv4 address once the pair is complete (each is charged by the hour):
    the Elastic IP, and an instance its subnet gives one at launch, unless the Elastic IP
    replaces it (on the master)."""
    held = ["the Elastic IP"] if settings.use_elastic_ip else []
    for role in ROLES:
        if settings.use_elastic_ip and role == "master":
            continue
        host = world.pair.host(role)
        public = host.public_ip is not None if host else zone_of[role] in world.public_zones
        if public:
            held.append(f"the {role}'s own")
    return held


def monthly_cost(settings: Settings, world: World, zone_of: dict[str, str]) -> cost.Cost | None:
    """What the complete pair costs a month at the world's price table (None without one)."""
    if world.prices is None:
        return None
    held = public_addresses(settings, world, zone_of)
    sizing = cost.Sizing(
        region=world.region,
        instance_type=settings.instance_type,
        instances=len(ROLES),
        data_gb=settings.data_volume_gb,
        root_gb=world.ami.root_gb,
        public_ipv4=len(held),
        public_ipv4_why=", ".join(held),
        dns=world.dns is not None,
    )
    return cost.estimate(world.prices, sizing)
