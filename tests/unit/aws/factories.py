"""Small factories for the launch's pure tests: settings, instances, volumes, worlds."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ops.aws.inventory import DataVolume, ElasticIp, Instance, PairState
from ops.aws.launch.model import Ami, Group, World
from ops.aws.launch.plan import desired_rules
from ops.settings import Settings, load

ZONES = ("eu-west-1a", "eu-west-1b")


def settings(**overrides: str) -> Settings:
    """Settings from an explicit environment, with both networks set."""
    environ = {
        "PROJECT_NAME": "pair",
        "AMI_ID": "ami-0123456789abcdef0",
        "CLIENT_CIDRS": "0.0.0.0/0",
        "ADMIN_CIDR": "198.51.100.0/24",
        **overrides,
    }
    return load(environ=environ, env_file=Path("/nonexistent/unit.env"))


def host(role: str, instance_id: str, zone: str, **changes: object) -> Instance:
    base = Instance(
        instance_id=instance_id,
        role=role,
        state="running",
        zone=zone,
        public_ip="203.0.113.10",
        private_ip="172.31.0.10",
        security_groups=("gitlab-open" if role == "master" else "gitlab-slave",),
        epoch=1,
        name=f"pair-{role}",
        imdsv2_required=True,
        volumes_keep=((f"vol-{instance_id}", False),),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]  # test overrides


def volume(instance_id: str, zone: str, **changes: object) -> DataVolume:
    base = DataVolume(
        volume_id=f"vol-{instance_id}",
        data_for=instance_id,
        zone=zone,
        state="in-use",
        encrypted=True,
        size_gb=100,
        attached_to=instance_id,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]  # test overrides


def groups_for(s: Settings) -> tuple[Group, ...]:
    """Both groups as the settings declare them."""
    rules = desired_rules(s)
    return (
        Group("gitlab-open", "sg-open", "pair", rules["gitlab-open"]),
        Group("gitlab-slave", "sg-slave", "pair", rules["gitlab-slave"]),
    )


def world(pair: PairState | None = None, groups: tuple[Group, ...] = ()) -> World:
    """A region with its two zones and the AMI, holding ``groups`` and ``pair``."""
    return World(
        region="eu-west-1",
        vpc_id="vpc-1",
        zones=ZONES,
        subnets=(("eu-west-1a", "subnet-a"), ("eu-west-1b", "subnet-b")),
        ami=Ami("ami-0123456789abcdef0", "gitlab-dr", "available"),
        groups=groups,
        pair=pair or PairState("pair", "eu-west-1", (), (), ()),
    )


def complete(s: Settings, **pair_changes: object) -> World:
    """The whole pair as launch leaves it (``pair_changes`` replace parts of it)."""
    pair = PairState(
        "pair",
        "eu-west-1",
        (host("master", "i-m", "eu-west-1a"), host("slave", "i-s", "eu-west-1b")),
        (volume("i-m", "eu-west-1a"), volume("i-s", "eu-west-1b")),
        (ElasticIp("eipalloc-1", "198.51.100.7", "i-m"),),
    )
    changed = dataclasses.replace(pair, **pair_changes)  # type: ignore[arg-type]  # test overrides
    return world(changed, groups_for(s))
