"""ops.hosts.engine against scripted engines: health waits, one-off containers, exec refusals."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import docker.errors
import pytest
import requests

from ops.errors import HostError
from ops.hosts.engine import ContainerNotRunning, Engine, ServiceState
from ops.hosts.ssh import Host
from ops.settings import Settings
from tests.fakes import FakeClock


class ScriptedEngine(Engine):
    """An Engine whose service states come from a script instead of a host."""

    def __init__(self, host: Host, settings: Settings, healths: list[str | None]) -> None:
        super().__init__(host, settings, client=cast(Any, None))
        self.healths = healths

    def state(self, service: str) -> ServiceState:
        health = self.healths.pop(0) if len(self.healths) > 1 else self.healths[0]
        return ServiceState(service, f"x_{service}_1", "id", "running", health, "image")


def test_wait_healthy_polls_until_healthy(host: Host, settings: Settings) -> None:
    clock = FakeClock()
    engine = ScriptedEngine(host, settings, ["starting", "starting", "healthy"])
    state = engine.wait_healthy("app", timeout=10, interval=2, clock=clock, sleep=clock.sleep)
    assert state.health == "healthy"
    assert clock.now == 4


def test_wait_healthy_gives_up_at_its_deadline_saying_the_last_state(
    host: Host, settings: Settings
) -> None:
    clock = FakeClock()
    engine = ScriptedEngine(host, settings, ["starting"])
    with pytest.raises(HostError, match=r"app not healthy after 5s \(running, starting\)$"):
        engine.wait_healthy("app", timeout=5, interval=1, clock=clock, sleep=clock.sleep)
    assert clock.now == 5


def test_wait_healthy_of_a_missing_container_fails_at_once(host: Host, settings: Settings) -> None:
    class Missing(ScriptedEngine):
        def state(self, service: str) -> ServiceState:
            raise HostError(f"{self.host}: no container for service {service} ({self.project})")

    clock = FakeClock()
    with pytest.raises(HostError, match="no container for service app"):
        Missing(host, settings, [None]).wait_healthy(
            "app", timeout=600, clock=clock, sleep=clock.sleep
        )
    assert clock.now == 0


# --- one-off containers --------------------------------------------------------------------------


@dataclass
class FakeContainer:
    """A container as the SDK gives it, running a scripted command."""

    name: str
    labels: dict[str, str]
    exit_code: int = 0
    stdout: bytes = b""
    stderr: bytes = b""
    wait_raises: BaseException | None = None
    events: list[str] = field(default_factory=list)
    id: str = "0123abcd"

    def start(self) -> None:
        self.events.append(f"start {self.name}")

    def wait(self) -> dict[str, Any]:
        if self.wait_raises is not None:
            raise self.wait_raises
        return {"StatusCode": self.exit_code, "Error": None}

    def logs(self, *, stdout: bool, stderr: bool) -> bytes:
        return (self.stdout if stdout else b"") + (self.stderr if stderr else b"")

    def remove(self, *, force: bool = False, v: bool = False) -> None:
        self.events.append(f"remove {self.name} force={force} v={v}")


class FakeContainers:
    """``client.containers``: named containers, and the next one ``create`` makes."""

    def __init__(self, events: list[str], made: FakeContainer) -> None:
        self.events = events
        self.made = made
        self.by_name: dict[str, FakeContainer] = {}
        self.created: dict[str, Any] = {}

    def get(self, name: str) -> FakeContainer:
        if name not in self.by_name:
            raise docker.errors.NotFound(f"No such container: {name}")
        return self.by_name[name]

    def create(self, image: str, command: list[str], **options: Any) -> FakeContainer:
        self.events.append(f"create {options['name']}")
        self.created = {"image": image, "command": command, **options}
        self.made.name, self.made.labels = options["name"], options["labels"]
        return self.made

    def list(self, **_: Any) -> list[FakeContainer]:
        return [self.made]


@dataclass
class FakeClient:
    containers: FakeContainers
    api: Any = None

    def ssh_error(self, settings: Settings) -> str | None:
        return None


def engine_with(host: Host, settings: Settings, made: FakeContainer) -> tuple[Engine, FakeClient]:
    client = FakeClient(FakeContainers(made.events, made))
    return Engine(host, settings, client=cast(Any, client)), client


def test_a_one_off_is_named_and_labelled_for_its_stack_and_removed_with_its_volumes(
    host: Host, settings: Settings
) -> None:
    engine, client = engine_with(host, settings, FakeContainer("", {}, stdout=b'{"ok": 1}\n'))
    out = engine.run_once("restore", "sync:1", ["restore", "/target"], {"/srv/sync": "/sync"})
    assert out == '{"ok": 1}\n'
    name = f"{engine.project}-restore"
    assert client.containers.created == {
        "image": "sync:1",
        "command": ["restore", "/target"],
        "name": name,
        "labels": {"com.docker.compose.project": engine.project, "gitlab-dr.one-off": "restore"},
        "volumes": {"/srv/sync": {"bind": "/sync", "mode": "rw"}},
        "network_mode": "none",
    }
    assert client.containers.events == [
        f"create {name}",
        f"start {name}",
        f"remove {name} force=True v=True",
    ]


def test_a_one_off_left_by_a_run_cut_short_is_removed_before_the_next_starts(
    host: Host, settings: Settings
) -> None:
    engine, client = engine_with(host, settings, FakeContainer("", {}))
    name = f"{engine.project}-restore"
    labels = {"com.docker.compose.project": engine.project, "gitlab-dr.one-off": "restore"}
    client.containers.by_name[name] = FakeContainer(name, labels, events=client.containers.events)
    engine.run_once("restore", "sync:1", ["restore"], {})
    assert client.containers.events[:2] == [f"remove {name} force=True v=True", f"create {name}"]


def test_a_container_in_the_way_that_is_not_the_stacks_one_off_is_left_alone(
    host: Host, settings: Settings
) -> None:
    engine, client = engine_with(host, settings, FakeContainer("", {}))
    name = f"{engine.project}-restore"
    stranger = {"com.docker.compose.project": "someone-else", "gitlab-dr.one-off": "restore"}
    client.containers.by_name[name] = FakeContainer(name, stranger, events=client.containers.events)
    with pytest.raises(HostError, match=f"a container named {name} is in the way"):
        engine.run_once("restore", "sync:1", ["restore"], {})
    assert client.containers.events == []


def test_a_one_off_that_fails_says_its_last_stderr_line_and_is_removed(
    host: Host, settings: Settings
) -> None:
    failing = FakeContainer("", {}, exit_code=3, stderr=b"reading\nno complete snapshot\n")
    engine, client = engine_with(host, settings, failing)
    with pytest.raises(HostError) as caught:
        engine.run_once("restore", "sync:1", ["restore"], {})
    assert str(caught.value) == f"{host}: sync:1 restore exited 3: no complete snapshot"
    assert client.containers.events[-1].endswith("force=True v=True")


def test_a_one_off_whose_run_is_interrupted_is_still_removed(
    host: Host, settings: Settings
) -> None:
    engine, client = engine_with(host, settings, FakeContainer("", {}))
    client.containers.made.wait_raises = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        engine.run_once("restore", "sync:1", ["restore"], {})
    assert client.containers.events[-1] == f"remove {engine.project}-restore force=True v=True"


@pytest.mark.parametrize("name", ["", "Restore", "a b", "-x", "x/y"])
def test_a_one_off_name_docker_would_refuse_is_refused(
    host: Host, settings: Settings, name: str
) -> None:
    engine, _ = engine_with(host, settings, FakeContainer("", {}))
    with pytest.raises(ValueError, match="one-off's name"):
        engine.run_once(name, "sync:1", ["restore"], {})


# --- exec ----------------------------------------------------------------------------------------


class RefusingApi:
    """``client.api`` whose exec_create gets an HTTP error from the engine."""

    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message

    def exec_create(self, *_: Any, **__: Any) -> dict[str, str]:
        response = requests.Response()
        response.status_code = self.status
        raise docker.errors.APIError("exec", response=response, explanation=self.message)


@pytest.mark.parametrize(
    "message",
    [
        "Container 0123abcd is not running",
        "Container 0123abcd is restarting, wait until the container is running",
    ],
)
def test_exec_in_a_container_not_running_yet_says_so_by_its_type(
    host: Host, settings: Settings, message: str
) -> None:
    engine, client = engine_with(host, settings, FakeContainer("x_app_1", {}))
    client.api = RefusingApi(409, message)
    with pytest.raises(
        ContainerNotRunning, match=f"exec true in app failed: {re.escape(message)}$"
    ):
        engine.exec("app", ["true"])


@pytest.mark.parametrize(
    ("status", "message"),
    [(409, "Container 0123abcd is paused, unpause the container before exec"), (500, "boom")],
)
def test_other_exec_refusals_are_plain_host_errors(
    host: Host, settings: Settings, status: int, message: str
) -> None:
    engine, client = engine_with(host, settings, FakeContainer("x_app_1", {}))
    client.api = RefusingApi(status, message)
    with pytest.raises(
        HostError, match=f"exec true in app failed: {re.escape(message)}$"
    ) as caught:
        engine.exec("app", ["true"])
    assert not isinstance(caught.value, ContainerNotRunning)


def test_the_local_engine_is_named_by_its_socket_not_by_an_ssh_target(
    settings: Settings, tmp_path: Path
) -> None:
    socket = f"unix://{tmp_path}/no-engine.sock"
    with pytest.raises(HostError) as caught:
        Engine.local(settings, socket)
    assert str(caught.value).startswith(
        f"this host ({socket}): the Docker engine at {socket} does not answer"
    ), caught.value
    assert "admin@" not in str(caught.value)
