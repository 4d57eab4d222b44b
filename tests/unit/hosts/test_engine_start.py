"""Engine.start: a created container started through the SDK when its configuration is the
stack's, made again by ``up`` when it is not, refused when there is none (scripted engine)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from ops.errors import HostError
from ops.hosts.engine import CONFIG_HASH_LABEL, Engine
from ops.hosts.ssh import Host
from ops.settings import Settings


@dataclass
class Created:
    """A service's container as the SDK lists it: its config-hash label and status."""

    config_hash: str
    status: str = "created"
    events: list[str] = field(default_factory=list)

    @property
    def labels(self) -> dict[str, str]:
        return {CONFIG_HASH_LABEL: self.config_hash, "com.docker.compose.service": "gitlab"}

    def start(self) -> None:
        self.events.append("sdk start")
        self.status = "running"


class StackEngine(Engine):
    """An Engine whose Compose runs and containers are scripted: ``hashes`` are what successive
    ``config --hash`` runs print (an exception is raised)."""

    def __init__(
        self, host: Host, settings: Settings, found: Created | None, hashes: list[Any]
    ) -> None:
        super().__init__(host, settings, client=cast(Any, None))
        self.found, self.hashes = found, hashes
        self.events = found.events if found else []
        self.gate = threading.Event()
        self.gate.set()

    def _compose(self, args: Any, timeout: float) -> str:
        self.gate.wait(5)
        self.events.append("compose " + " ".join(args))
        if args[:2] == ["config", "--hash"]:
            said = self.hashes.pop(0)
            if isinstance(said, Exception):
                raise said
            return f"{args[2]} {said}\n"
        return ""

    def container(self, service: str) -> Any:
        if self.found is None:
            raise HostError(f"{self.host}: no container for service {service} ({self.project})")
        return self.found


def test_a_created_container_of_the_stacks_configuration_is_started_by_the_sdk(
    host: Host, settings: Settings
) -> None:
    engine = StackEngine(host, settings, Created("abc"), ["abc"])
    assert engine.start("gitlab") == "gitlab: started"
    assert engine.events == ["compose config --hash gitlab", "sdk start"]


def test_a_running_one_is_left_alone(host: Host, settings: Settings) -> None:
    engine = StackEngine(host, settings, Created("abc", "running"), ["abc"])
    assert engine.start("gitlab") == "gitlab: already running"
    assert engine.events == ["compose config --hash gitlab"]


def test_a_container_made_from_another_configuration_is_made_again_by_up(
    host: Host, settings: Settings
) -> None:
    engine = StackEngine(host, settings, Created("old"), ["new"])
    said = engine.start("gitlab")
    assert said == "gitlab: made again by docker-compose up (its configuration had changed)"
    assert engine.events == ["compose config --hash gitlab", "compose up --detach gitlab"]


def test_a_running_one_of_another_configuration_is_made_again_too(
    host: Host, settings: Settings
) -> None:
    engine = StackEngine(host, settings, Created("old", "running"), ["new"])
    engine.start("gitlab")
    assert engine.events[-1] == "compose up --detach gitlab"


def test_no_container_is_a_one_line_refusal_and_nothing_runs(
    host: Host, settings: Settings
) -> None:
    engine = StackEngine(host, settings, None, ["abc"])
    with pytest.raises(HostError, match=r"^master \(.*\): no container for service gitlab \("):
        engine.start("gitlab")
    assert engine.events == []


def test_expect_reads_the_hash_in_the_background_once(host: Host, settings: Settings) -> None:
    engine = StackEngine(host, settings, Created("abc"), ["abc"])
    engine.gate.clear()  # Compose "runs" until the gate opens: expect() must not wait for it
    engine.expect("gitlab")
    engine.expect("gitlab")  # asked twice: read once
    assert engine.events == []
    engine.gate.set()
    assert engine.start("gitlab") == "gitlab: started"
    assert engine.events == ["compose config --hash gitlab", "sdk start"]


def test_a_background_read_that_failed_is_read_again(host: Host, settings: Settings) -> None:
    failed = HostError(f"{host}: docker-compose config failed: the relay broke")
    engine = StackEngine(host, settings, Created("abc"), [failed, "abc"])
    engine.expect("gitlab")
    assert engine.start("gitlab") == "gitlab: started"
    assert engine.events == ["compose config --hash gitlab"] * 2 + ["sdk start"]


def test_a_hash_compose_did_not_print_is_a_one_line_error(host: Host, settings: Settings) -> None:
    engine = StackEngine(host, settings, Created("abc"), [""])
    with pytest.raises(HostError, match=r"config --hash gave no hash for gitlab$"):
        engine.start("gitlab")
    assert "sdk start" not in engine.events
