"""Topology: per-instance addresses and settings follow the instance when the roles swap."""

from __future__ import annotations

import pytest

from ops.aws.inventory import Instance, PairState
from ops.dr.topology import resolve
from ops.errors import SettingError
from tests.unit.pairs import SANDBOX, A, B, pair, settings_of


def test_instance_hosts_and_overrides_follow_the_instance_when_roles_swap() -> None:
    settings = settings_of(**SANDBOX)
    before = resolve(settings, pair(master=A, slave=B))
    after = resolve(settings, pair(master=B, slave=A))

    assert (before.master.instance_id, before.master.host.port) == (A, 32001)
    assert before.master.settings.project_name == "sb-a"
    assert before.sync_address == "172.17.0.1:40002"

    assert (after.master.instance_id, after.master.host.port) == (B, 32002)
    assert after.master.settings.project_name == "sb-b"
    assert (after.slave.instance_id, after.slave.host.port) == (A, 32001)
    assert after.slave.settings.project_name == "sb-a"
    assert after.sync_address == "172.17.0.1:40001"
    assert after.master.host.name == "master"


def test_without_instance_hosts_the_public_address_and_private_sync_address_are_used() -> None:
    topo = resolve(settings_of(SYNC_PORT="2222"), pair(master=A, slave=B))
    assert (topo.master.host.address, topo.master.host.port) == ("203.0.113.1", 22)
    assert topo.sync_address == "10.0.0.2:2222"


def test_role_overrides_apply_before_instance_overrides() -> None:
    settings = settings_of(SLAVE_OVERRIDES="SYNC_PORT=2300 SNAPSHOT_KEEP_MAX=3", **SANDBOX)
    slave = resolve(settings, pair(master=A, slave=B)).slave.settings
    assert (slave.sync_port, slave.snapshot_keep_max) == (40002, 3)


def test_master_host_still_wins_and_keeps_role_overrides() -> None:
    settings = settings_of(
        USE_AWS="false",
        MASTER_HOST="127.0.0.1:2201",
        SLAVE_HOST="127.0.0.1:2202",
        SLAVE_SYNC_ADDRESS="172.17.0.1:2222",
        MASTER_OVERRIDES="PROJECT_NAME=m",
        SLAVE_OVERRIDES="PROJECT_NAME=s",
    )
    topo = resolve(settings, None)
    assert (topo.master.host.port, topo.master.settings.project_name) == (2201, "m")
    assert (topo.slave.host.port, topo.slave.settings.project_name) == (2202, "s")
    assert topo.master.instance_id is None
    assert topo.sync_address == "172.17.0.1:2222"


def _without(state: PairState, instance_id: str, **blank: None) -> PairState:
    hosts = tuple(
        Instance(**{**h.__dict__, **blank}) if h.instance_id == instance_id else h
        for h in state.hosts
    )
    return PairState(state.project, state.region, hosts, (), ())


def test_an_instance_with_no_address_is_one_sentence() -> None:
    bare = _without(pair(master=A, slave=B), A, public_ip=None, private_ip=None)
    with pytest.raises(SettingError, match=f"the master instance {A} has no address"):
        resolve(settings_of(), bare)


def test_an_instance_in_a_private_subnet_is_reached_at_its_private_address() -> None:
    private = _without(pair(master=A, slave=B), A, public_ip=None)
    assert resolve(settings_of(), private).master.host.address == "10.0.0.1"


def test_through_a_bastion_every_instance_is_reached_at_its_private_address() -> None:
    topo = resolve(settings_of(SSH_BASTION="admin@bastion.example"), pair(master=A, slave=B))
    assert (topo.master.host.address, topo.slave.host.address) == ("10.0.0.1", "10.0.0.2")
    assert resolve(settings_of(), pair(master=A, slave=B)).master.host.address == "203.0.113.1"


def test_a_bad_instance_override_names_the_instance_and_the_setting() -> None:
    settings = settings_of(INSTANCE_OVERRIDES=f"{B}:SYNC_PORT=99999")
    with pytest.raises(SettingError) as caught:
        resolve(settings, pair(master=A, slave=B))
    assert str(caught.value) == (
        f"INSTANCE_OVERRIDES: {B}: SYNC_PORT: expected a port number from 1 to 65535, got '99999'"
    )


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("INSTANCE_HOSTS", "127.0.0.1:32001", "INSTANCE_HOSTS: expected INSTANCE_ID=host[:port]"),
        ("INSTANCE_HOSTS", "i-xyz=127.0.0.1", "INSTANCE_HOSTS: expected an instance id like"),
        ("INSTANCE_HOSTS", f"{A}=h1 {A}=h2", "one address per instance"),
        ("INSTANCE_OVERRIDES", "SYNC_PORT=1", "INSTANCE_OVERRIDES: expected INSTANCE_ID:KEY=VALUE"),
        ("INSTANCE_OVERRIDES", f"{A}:USE_AWS=false", "settings of one host, not USE_AWS"),
        ("INSTANCE_OVERRIDES", f"{A}:MASTER_OVERRIDES=X=1", "settings of one host"),
    ],
)
def test_malformed_instance_settings_are_one_line(name: str, value: str, words: str) -> None:
    with pytest.raises(SettingError) as caught:
        settings_of(**{name: value})
    assert words in str(caught.value)
    assert "\n" not in str(caught.value)


def test_metrics_are_published_on_an_instances_private_address_unless_set() -> None:
    topo = resolve(settings_of(), pair(master=A, slave=B))
    assert (topo.master.settings.metrics_bind, topo.slave.settings.metrics_bind) == (
        "10.0.0.1",
        "10.0.0.2",
    )
    chosen = resolve(settings_of(METRICS_BIND="127.0.0.1"), pair(master=A, slave=B))
    assert chosen.master.settings.metrics_bind == "127.0.0.1"
