"""Pair states and sandbox-like settings for the unit tests (no AWS, no Docker)."""

from __future__ import annotations

from pathlib import Path

from ops import settings as settings_mod
from ops.aws.inventory import ElasticIp, Instance, PairState
from ops.settings import Settings

A, B = "i-0aaaaaaaaaaaaaaaa", "i-0bbbbbbbbbbbbbbbb"


def settings_of(**values: str) -> Settings:
    return settings_mod.load(values, env_file=Path("/nonexistent/gitlab-dr-test.env"))


def _host(instance_id: str, role: str, groups: tuple[str, ...] = ()) -> Instance:
    return Instance(
        instance_id=instance_id,
        role=role,
        state="running",
        zone="eu-west-1a",
        public_ip="203.0.113." + ("1" if instance_id == A else "2"),
        private_ip="10.0.0." + ("1" if instance_id == A else "2"),
        security_groups=groups,
        epoch=1,
        name=f"gitlab-dr-{role}",
        imdsv2_required=True,
        volumes_keep=(),
    )


def pair(master: str, slave: str, holder: str | None = None) -> PairState:
    return PairState(
        project="gitlab-dr",
        region="eu-west-1",
        hosts=(_host(master, "master", ("gitlab-open",)), _host(slave, "slave", ("gitlab-slave",))),
        volumes=(),
        elastic_ips=(ElasticIp("eipalloc-1", "198.51.100.7", holder),),
    )


SANDBOX = {
    "INSTANCE_HOSTS": f"{A}=127.0.0.1:32001 {B}=127.0.0.1:32002",
    "INSTANCE_OVERRIDES": (
        f"{A}:PROJECT_NAME=sb-a {A}:SYNC_PORT=40001 {A}:SLAVE_SYNC_ADDRESS=172.17.0.1:40001 "
        f"{B}:PROJECT_NAME=sb-b {B}:SYNC_PORT=40002 {B}:SLAVE_SYNC_ADDRESS=172.17.0.1:40002"
    ),
}
