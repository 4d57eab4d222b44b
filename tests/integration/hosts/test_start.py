"""Engine.start over ssh:// for real: a container ``create`` made is started by one SDK call on
the open relay when its configuration is the stack's, made again by ``up`` when the stack
changed since, and refused in one line when there is none."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ops.errors import HostError
from ops.hosts.engine import CONFIG_HASH_LABEL, Engine

if TYPE_CHECKING:  # the module is loaded as a plugin, so pytest can rewrite its asserts
    from tests.integration.sshd_host import SshdHosts

pytestmark = pytest.mark.integration

STACK = Path(__file__).resolve().parent / "hosts-stack" / "docker-compose.yml"


@pytest.fixture
def slave(sshd_hosts: SshdHosts) -> Iterator[Engine]:
    """The test stack on a host like a slave: ``idle`` created, not started."""
    host = sshd_hosts.start("slave")
    with Engine.open(host.host, host.settings, STACK) as opened:
        opened.create(["idle"])
        yield opened


def test_a_created_container_is_started_by_the_sdk_as_it_was_made(slave: Engine) -> None:
    made = slave.container("idle")
    assert made.status == "created"
    slave.expect("idle")  # read in the background, as promotion does
    assert slave.start("idle") == "idle: started"
    started = slave.container("idle")
    assert started.id == made.id  # the very container, not one made again
    assert started.status == "running"
    assert started.labels[CONFIG_HASH_LABEL] == slave.config_hash("idle")
    assert slave.exec("idle", ["true"]).exit_code == 0
    assert slave.start("idle") == "idle: already running"  # a resumed promotion's second run
    assert slave.container("idle").id == made.id


def test_a_container_the_stack_has_changed_since_is_made_again_by_up(
    slave: Engine, tmp_path: Path
) -> None:
    made = slave.container("idle")
    changed = tmp_path / "docker-compose.yml"
    changed.write_text(STACK.read_text().replace('["sleep", "infinity"]', '["sleep", "86400"]'))
    with Engine.open(slave.host, slave.settings, changed) as later:
        assert later.config_hash("idle") != made.labels[CONFIG_HASH_LABEL]
        said = later.start("idle")
        assert said == "idle: made again by docker-compose up (its configuration had changed)"
        again = later.container("idle")
        assert again.id != made.id
        assert again.status == "running"
        assert again.attrs["Config"]["Cmd"] == ["sleep", "86400"]


def test_a_service_never_created_is_a_one_line_refusal(sshd_hosts: SshdHosts) -> None:
    host = sshd_hosts.start("master")
    with Engine.open(host.host, host.settings, STACK) as bare:
        with pytest.raises(HostError) as caught:
            bare.start("idle")
        assert bare.ps() == []  # nothing was made
    message = str(caught.value)
    assert "\n" not in message
    assert message == f"{host.host}: no container for service idle ({bare.project})"
