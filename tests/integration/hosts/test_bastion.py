"""SSH_BASTION for real: the hosts of a pair in private subnets, reached through a jump host.

The host behind the bastion sits on a Docker network of its own and is named by an alias that
only Docker's DNS on that network resolves: this machine cannot reach it, or even resolve its
name, so every byte of the engine's API that arrives went through the bastion. The bastion is
the same sshd image with forwarding allowed (a host of the pair never forwards), on that network
and on a 127.0.0.1 port; the hop uses the operator's key and known_hosts, as the real path does.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import docker
import pytest

from ops.errors import HostError
from ops.hosts.engine import Engine
from ops.hosts.relay import connect
from ops.hosts.ssh import Host, preflight
from ops.rehearsal.instance import USER, SshdInstance, keygen, public_key
from ops.rehearsal.local import Cleanup
from ops.settings import Settings

if TYPE_CHECKING:
    from tests.integration.sshd_host import SshdHosts

pytestmark = pytest.mark.integration

STACK = Path(__file__).resolve().parent / "hosts-stack" / "docker-compose.yml"
LABEL = "gitlab-dr.test"


@dataclasses.dataclass(frozen=True)
class Private:
    """A host on a private network, the bastion in front of it, and the settings for both."""

    host: Host
    bastion_ip: str  # the bastion's address on the private network
    bastion: SshdInstance
    target: SshdInstance
    settings_direct: Settings
    settings: Settings


@pytest.fixture
def private(sshd_hosts: SshdHosts, tmp_path: Path) -> Iterator[Private]:
    client: docker.DockerClient = sshd_hosts.client
    token = secrets.token_hex(3)
    alias = f"gdr-private-{token}"
    network = client.networks.create(f"gdr-private-{token}", labels={LABEL: "bastion"})
    made: list[SshdInstance] = []
    try:
        host_key = keygen(tmp_path / "target_host", "host-target")
        bastion_key = keygen(tmp_path / "bastion_host", "host-bastion")
        operator = keygen(tmp_path / "id_ed25519", "operator")
        target = SshdInstance(client, sshd_hosts.image).with_label(LABEL, "sshd-host")
        target.with_keys(host_key, operator).start()
        made.append(target)
        network.connect(target.container, aliases=[alias])
        bastion = SshdInstance(client, sshd_hosts.image).with_label(LABEL, "sshd-host")
        bastion.with_keys(bastion_key, operator).as_bastion().start()
        made.append(bastion)
        network.connect(bastion.container)
        bastion.container.reload()
        bastion_ip = bastion.container.attrs["NetworkSettings"]["Networks"][network.name]
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text(bastion.known_hosts_line() + f"{alias} {public_key(host_key)}\n")
        direct = dataclasses.replace(
            sshd_hosts.settings,
            project_name=f"gdrtest-private-{token}",
            ssh_key_file=str(operator),
            ssh_known_hosts=str(known_hosts),
        )
        through = dataclasses.replace(direct, ssh_bastion=f"{USER}@127.0.0.1:{bastion.port}")
        yield Private(
            Host("master", alias, 22, USER),
            bastion_ip["IPAddress"],
            bastion,
            target,
            direct,
            through,
        )
    finally:
        cleanup = Cleanup()
        cleanup.project(client, f"gdrtest-private-{token}")  # the project the settings name
        for instance in reversed(made):
            cleanup.attempt(f"sshd {instance.name or 'instance'}", instance.remove)
        cleanup.attempt(f"network {network.name}", network.remove)
        assert not cleanup.left, cleanup.left


def test_the_engine_behind_a_bastion_answers_through_it_and_not_without_it(
    private: Private,
) -> None:
    settings, direct = private.settings, private.settings_direct
    assert preflight(private.host, settings).startswith("1.")
    client = connect(private.host, settings)
    try:
        # The engine behind the target is this machine's: it lists the target itself.
        names = {c.name for c in client.containers.list(ignore_removed=True)}
        assert private.target.container.name in names
    finally:
        client.close()
    # The bastion carried it: it took the operator's key, and the target saw the connection
    # come from the bastion's address on the private network.
    log = private.bastion.logs()
    assert f"Accepted publickey for {USER}" in log, log
    seen = private.target.logs()
    assert f"Accepted publickey for {USER} from {private.bastion_ip} " in seen, seen
    # Without the bastion the name does not even resolve here: a one-line error naming the host.
    with pytest.raises(HostError) as caught:
        preflight(private.host, direct)
    assert "\n" not in str(caught.value) and str(caught.value).startswith(f"{private.host}")


def test_compose_runs_through_the_bastion_too(private: Private) -> None:
    with Engine.open(private.host, private.settings, STACK) as engine:
        engine.up(["app"])
        assert engine.state("app").state == "running"
